//! Persistence: one [`Store`] over SQLite or PostgreSQL.
//!
//! Decision: **one code path, two schemas.** Queries go through sqlx's `Any` driver with
//! SQL both databases accept (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer
//! unix times, text ids), so every rule is written once and the same test suite
//! exercises it on both. The schemas differ where the databases do (`BIGINT` identity vs
//! `AUTOINCREMENT`, `BYTEA` vs `BLOB`, trigger syntax), so each backend has its own
//! migrations directory (`migrations/sqlite`, `migrations/postgres`), embedded in the
//! binary with `include_str!` (see [`migrations`]); no `DATABASE_URL` at build time and
//! no sqlx macros. The price is the `Any` type set (integers, text, bytes): times are
//! stored as unix seconds (`_ms` columns: milliseconds), booleans as 0/1.
//!
//! Several manager replicas may share one PostgreSQL: nothing here caches state that a
//! peer could change, except the signing-key cache in [`crate::keys`], which expires.
//! Conditional updates (`... WHERE used_at IS NULL`) and `ON CONFLICT` upserts keep
//! concurrent replicas correct without application locks; migrations take PostgreSQL's
//! advisory lock.

pub mod agents;
pub mod audit;
pub mod gateways;
pub mod housekeeping;
pub mod keys;
pub mod migrations;
pub mod servers;
pub mod sessions;
pub mod tenants;
pub mod throttle;
pub mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (the zero-set-up default).
    Sqlite,
    /// PostgreSQL server (production, several replicas).
    Postgres,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no supported backend (or the path is not UTF-8).
    #[error("unsupported database URL (expected sqlite: or postgres://, UTF-8 paths)")]
    UnsupportedUrl,
    /// Opening the database failed.
    #[error("connecting to the database")]
    Connect(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("applying database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query")]
    Query(#[from] sqlx::Error),
    /// A row violated a uniqueness rule (e.g. a second user with the same email).
    #[error("already exists")]
    Conflict,
}

/// A connection pool plus the backend it talks to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the SQLite database file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let path = path.to_str().ok_or(StoreError::UnsupportedUrl)?;
        // sqlx percent-decodes the path: escape what would end it early.
        let path = path
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let url = format!("sqlite://{path}?mode=rwc");
        Store::connect(&url).await
    }

    /// Connects to `url` (`sqlite:...` or `postgres://...`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url).map_err(StoreError::Connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; busy_timeout
                        // makes a second writer wait instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let store = Store { pool, backend };
        migrations::run(&store).await?;
        Ok(store)
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Query(e),
    }
}
