//! The `tenants` table.

use outband_api::tenants::Tenant;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, conflict_or};

/// What [`Store::delete_tenant`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantDeletion {
    /// Deleted, with its unused join tokens and its agents (an agent that reconnects
    /// is pending again).
    Deleted {
        /// Agents released.
        agents: u64,
        /// Join tokens deleted.
        join_tokens: u64,
    },
    /// Not deleted: it still has users or servers.
    NotEmpty {
        /// Users.
        users: i64,
        /// Servers.
        servers: i64,
    },
    /// No such tenant.
    Missing,
}

fn from_row(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Inserts a tenant; [`StoreError::Conflict`] if the name is taken.
    pub async fn insert_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.created_at)
            .execute(self.pool())
            .await
            .map_err(conflict_or)?;
        Ok(())
    }

    /// The tenant with this id.
    pub async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Tenants by name; only `only` when given (the filter is in the query).
    pub async fn list_tenants(&self, only: Option<&str>) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM tenants \
             WHERE ($1 IS NULL OR id = $1) ORDER BY name",
        )
        .bind(only)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes a tenant that has no users and no servers (one transaction; a user or
    /// server added concurrently makes the foreign key refuse the delete, answered as
    /// [`TenantDeletion::NotEmpty`]).
    pub async fn delete_tenant(&self, id: &str) -> Result<TenantDeletion, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users WHERE tenant_id = $1) AS users, \
                    (SELECT COUNT(*) FROM servers WHERE tenant_id = $1) AS servers",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let (users, servers): (i64, i64) = (row.try_get("users")?, row.try_get("servers")?);
        if users > 0 || servers > 0 {
            return Ok(TenantDeletion::NotEmpty { users, servers });
        }
        let join_tokens = sqlx::query("DELETE FROM join_tokens WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let agents = sqlx::query("DELETE FROM agents WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await;
        let deleted = match deleted {
            Ok(r) => r.rows_affected(),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Ok(TenantDeletion::NotEmpty {
                    users: 0,
                    servers: 0,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if deleted == 0 {
            return Ok(TenantDeletion::Missing);
        }
        match tx.commit().await {
            Ok(()) => Ok(TenantDeletion::Deleted {
                agents,
                join_tokens,
            }),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Ok(TenantDeletion::NotEmpty {
                    users: 0,
                    servers: 0,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
