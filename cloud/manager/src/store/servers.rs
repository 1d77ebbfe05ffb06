//! The `servers` table (inventory). Credentials are stored sealed (see
//! [`crate::secrets`]); this layer never sees them in plain text.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, conflict_or};

/// A server as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerRow {
    /// `srv_...`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display name (unique per tenant).
    pub name: String,
    /// Serving gateway.
    pub gateway_id: Option<String>,
    /// Agent reaching the BMC.
    pub agent_id: Option<String>,
    /// Normalized power endpoint URL.
    pub power_url: Option<String>,
    /// Normalized serial endpoint URL.
    pub serial_url: Option<String>,
    /// Normalized graphical endpoint URL.
    pub graphical_url: Option<String>,
    /// BMC certificate SHA-256, lower-case hex.
    pub cert_sha256: Option<String>,
    /// Sealed credentials: key id and `nonce || ciphertext || tag`.
    pub credentials: Option<(String, Vec<u8>)>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for ServerRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRow")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("has_credentials", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, tenant_id, name, gateway_id, agent_id, power_url, serial_url, \
     graphical_url, cert_sha256, cred_key_id, cred_blob, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ServerRow, sqlx::Error> {
    let key: Option<String> = row.try_get("cred_key_id")?;
    let blob: Option<Vec<u8>> = row.try_get("cred_blob")?;
    Ok(ServerRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        gateway_id: row.try_get("gateway_id")?,
        agent_id: row.try_get("agent_id")?,
        power_url: row.try_get("power_url")?,
        serial_url: row.try_get("serial_url")?,
        graphical_url: row.try_get("graphical_url")?,
        cert_sha256: row.try_get("cert_sha256")?,
        credentials: key.zip(blob),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Largest page of [`Store::list_servers`].
pub const MAX_SERVER_PAGE: i64 = 1000;

impl Store {
    /// Inserts a server; [`StoreError::Conflict`] if the name is taken in its tenant.
    pub async fn insert_server(&self, s: &ServerRow) -> Result<(), StoreError> {
        let (key, blob) = s.credentials.clone().unzip();
        sqlx::query(&format!(
            "INSERT INTO servers ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.name)
        .bind(s.gateway_id.as_deref())
        .bind(s.agent_id.as_deref())
        .bind(s.power_url.as_deref())
        .bind(s.serial_url.as_deref())
        .bind(s.graphical_url.as_deref())
        .bind(s.cert_sha256.as_deref())
        .bind(key)
        .bind(blob)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(self.pool())
        .await
        .map_err(conflict_or)?;
        Ok(())
    }

    /// Replaces every column but the id, tenant and creation time; false if the row
    /// is gone.
    pub async fn update_server(&self, s: &ServerRow) -> Result<bool, StoreError> {
        let (key, blob) = s.credentials.clone().unzip();
        let r = sqlx::query(
            "UPDATE servers SET name = $1, gateway_id = $2, agent_id = $3, power_url = $4, \
             serial_url = $5, graphical_url = $6, cert_sha256 = $7, cred_key_id = $8, \
             cred_blob = $9, updated_at = $10 WHERE id = $11",
        )
        .bind(&s.name)
        .bind(s.gateway_id.as_deref())
        .bind(s.agent_id.as_deref())
        .bind(s.power_url.as_deref())
        .bind(s.serial_url.as_deref())
        .bind(s.graphical_url.as_deref())
        .bind(s.cert_sha256.as_deref())
        .bind(key)
        .bind(blob)
        .bind(s.updated_at)
        .bind(&s.id)
        .execute(self.pool())
        .await
        .map_err(conflict_or)?;
        Ok(r.rows_affected() == 1)
    }

    /// The server with this id (no tenant filter: callers pass it to `authorize`).
    pub async fn server_by_id(&self, id: &str) -> Result<Option<ServerRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM servers WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Deletes a server; false if it was gone.
    pub async fn delete_server(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Servers by id, of `tenant` only when given, after `after`, at most `limit`
    /// (clamped to 1..=[`MAX_SERVER_PAGE`]).
    pub async fn list_servers(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ServerRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM servers \
             WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(limit.clamp(1, MAX_SERVER_PAGE))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Distinct key ids under which stored credentials are sealed.
    pub async fn credential_key_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT cred_key_id FROM servers WHERE cred_key_id IS NOT NULL")
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("cred_key_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Sealed credentials not under `key_id`: `(server id, key id, sealed)`, at most
    /// `limit`.
    pub async fn credentials_not_under(
        &self,
        key_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, cred_key_id, cred_blob FROM servers \
             WHERE cred_key_id IS NOT NULL AND cred_key_id <> $1 ORDER BY id LIMIT $2",
        )
        .bind(key_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("cred_key_id")?,
                    r.try_get("cred_blob")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Replaces a server's sealed credentials if they are still sealed under
    /// `old_key_id` (a concurrent update wins); true if replaced.
    pub async fn reseal_credentials(
        &self,
        id: &str,
        old_key_id: &str,
        new: &(String, Vec<u8>),
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE servers SET cred_key_id = $1, cred_blob = $2 \
             WHERE id = $3 AND cred_key_id = $4",
        )
        .bind(&new.0)
        .bind(&new.1)
        .bind(id)
        .bind(old_key_id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
