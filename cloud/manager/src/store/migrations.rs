//! Embedded migrations, one list per backend (`cloud/manager/migrations/<backend>/`).
//!
//! Built by hand instead of with `sqlx::migrate!` so the crate needs no sqlx macros
//! (they compile every driver a second time). Add a migration by appending to both
//! lists with the next version number; never edit an applied one (sqlx checks the
//! checksum and refuses to start).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Backend, Store, StoreError};

/// `(version, description, sqlite sql, postgres sql)`.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "identity",
        include_str!("../../migrations/sqlite/0001_identity.sql"),
        include_str!("../../migrations/postgres/0001_identity.sql"),
    ),
    (
        2,
        "password must change",
        include_str!("../../migrations/sqlite/0002_password_must_change.sql"),
        include_str!("../../migrations/postgres/0002_password_must_change.sql"),
    ),
    (
        3,
        "tenants",
        include_str!("../../migrations/sqlite/0003_tenants.sql"),
        include_str!("../../migrations/postgres/0003_tenants.sql"),
    ),
    (
        4,
        "servers",
        include_str!("../../migrations/sqlite/0004_servers.sql"),
        include_str!("../../migrations/postgres/0004_servers.sql"),
    ),
    (
        5,
        "gateways",
        include_str!("../../migrations/sqlite/0005_gateways.sql"),
        include_str!("../../migrations/postgres/0005_gateways.sql"),
    ),
    (
        6,
        "agents",
        include_str!("../../migrations/sqlite/0006_agents.sql"),
        include_str!("../../migrations/postgres/0006_agents.sql"),
    ),
    (
        7,
        "sealed signing keys",
        include_str!("../../migrations/sqlite/0007_sealed_signing_keys.sql"),
        include_str!("../../migrations/postgres/0007_sealed_signing_keys.sql"),
    ),
    (
        8,
        "user deletion",
        include_str!("../../migrations/sqlite/0008_user_deletion.sql"),
        include_str!("../../migrations/postgres/0008_user_deletion.sql"),
    ),
    (
        9,
        "agent site",
        include_str!("../../migrations/sqlite/0009_agent_site.sql"),
        include_str!("../../migrations/postgres/0009_agent_site.sql"),
    ),
    (
        10,
        "audit no truncate",
        include_str!("../../migrations/sqlite/0010_audit_no_truncate.sql"),
        include_str!("../../migrations/postgres/0010_audit_no_truncate.sql"),
    ),
];

/// The migrator for `backend`.
pub fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, postgres)| {
            let sql = match backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *postgres,
            };
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Applies pending migrations (PostgreSQL: under an advisory lock, so replicas
/// starting together do not race).
pub async fn run(store: &Store) -> Result<(), StoreError> {
    migrator(store.backend())
        .run(store.pool())
        .await
        .map_err(StoreError::Migrate)
}
