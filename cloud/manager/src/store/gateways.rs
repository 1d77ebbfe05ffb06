//! The `gateways` and `gateway_agents` tables. Secrets (registration credentials,
//! gateway tokens) are stored as SHA-256 only.

use outband_api::auth::GatewayInfo;
use outband_api::gateways::Gateway;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, conflict_or};

const COLUMNS: &str = "id, name, url, created_at, registered_at, last_seen_at, version";

fn from_row(row: &AnyRow) -> Result<Gateway, sqlx::Error> {
    Ok(Gateway {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        created_at: row.try_get("created_at")?,
        registered_at: row.try_get("registered_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        version: row.try_get("version")?,
    })
}

/// An agent as a gateway reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// Reporting gateway.
    pub gateway_id: String,
    /// Agent id.
    pub agent_id: String,
    /// Pairing code.
    pub pairing_code: String,
    /// Endpoint URLs the agent sees.
    pub endpoints: Vec<String>,
    /// Unix seconds.
    pub first_seen_at: i64,
    /// Unix seconds.
    pub last_seen_at: i64,
}

impl Store {
    /// Inserts a gateway with a registration credential hash.
    pub async fn insert_gateway(
        &self,
        g: &Gateway,
        registration_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateways (id, name, url, registration_hash, registration_expires_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(g.url.as_deref())
        .bind(registration_hash)
        .bind(expires_at)
        .bind(g.created_at)
        .execute(self.pool())
        .await
        .map_err(conflict_or)?;
        Ok(())
    }

    /// Sets a new registration credential hash; false if the gateway is gone.
    pub async fn set_gateway_registration(
        &self,
        id: &str,
        registration_hash: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE gateways SET registration_hash = $1, registration_expires_at = $2 \
             WHERE id = $3",
        )
        .bind(registration_hash)
        .bind(expires_at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Spends a registration credential: if `registration_hash` is live, clears it and
    /// stores `token_hash` in one conditional update (two concurrent uses: one wins).
    /// Returns the gateway id.
    pub async fn register_gateway(
        &self,
        registration_hash: &str,
        token_hash: &str,
        version: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "UPDATE gateways SET registration_hash = NULL, registration_expires_at = NULL, \
             token_hash = $1, registered_at = $2, last_seen_at = $2, version = $3 \
             WHERE registration_hash = $4 AND registration_expires_at > $2 RETURNING id",
        )
        .bind(token_hash)
        .bind(now)
        .bind(version)
        .bind(registration_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// The gateway holding this token hash.
    pub async fn gateway_by_token(&self, token_hash: &str) -> Result<Option<Gateway>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM gateways WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The gateway with this id.
    pub async fn gateway_by_id(&self, id: &str) -> Result<Option<Gateway>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM gateways WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every gateway, by name.
    pub async fn list_gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM gateways ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Records a heartbeat and upserts the reported agents, in one transaction.
    pub async fn gateway_heartbeat(
        &self,
        gateway_id: &str,
        agents: &[(String, String, Vec<String>)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE gateways SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(gateway_id)
            .execute(&mut *tx)
            .await?;
        Store::note_agents(&mut tx, gateway_id, agents, now).await?;
        for (agent_id, code, endpoints) in agents {
            let endpoints = serde_json::to_string(endpoints).expect("strings serialize");
            sqlx::query(
                "INSERT INTO gateway_agents (gateway_id, agent_id, pairing_code, endpoints, \
                 first_seen_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (gateway_id, agent_id) DO UPDATE SET \
                 pairing_code = excluded.pairing_code, endpoints = excluded.endpoints, \
                 last_seen_at = excluded.last_seen_at",
            )
            .bind(gateway_id)
            .bind(agent_id)
            .bind(code)
            .bind(endpoints)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Agents reported by gateways, newest report first; `pairing_code` filters.
    pub async fn agent_reports(
        &self,
        pairing_code: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT gateway_id, agent_id, pairing_code, endpoints, first_seen_at, last_seen_at \
             FROM gateway_agents WHERE ($1 IS NULL OR pairing_code = $1) \
             AND ($2 IS NULL OR agent_id = $2) ORDER BY last_seen_at DESC, agent_id LIMIT 1000",
        )
        .bind(pairing_code)
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let endpoints: String = r.try_get("endpoints")?;
                Ok(AgentReport {
                    gateway_id: r.try_get("gateway_id")?,
                    agent_id: r.try_get("agent_id")?,
                    pairing_code: r.try_get("pairing_code")?,
                    endpoints: serde_json::from_str(&endpoints).unwrap_or_default(),
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Gateways with a URL: all (`None`), or those serving servers of `tenant`.
    pub async fn gateways_for_tenant(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<GatewayInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, url FROM gateways g WHERE url IS NOT NULL AND ($1 IS NULL OR \
             EXISTS (SELECT 1 FROM servers s WHERE s.gateway_id = g.id AND s.tenant_id = $1)) \
             ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GatewayInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    url: r.try_get("url")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes a gateway (its token stops working at once) with its agent reports,
    /// unless servers are still bound to it (they are not unbound behind their
    /// tenants' backs: re-point them first).
    pub async fn delete_gateway(&self, id: &str) -> Result<GatewayDeletion, StoreError> {
        let mut tx = self.pool().begin().await?;
        let bound: i64 = sqlx::query("SELECT COUNT(*) AS n FROM servers WHERE gateway_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if bound > 0 {
            return Ok(GatewayDeletion::InUse { servers: bound });
        }
        sqlx::query("DELETE FROM gateway_agents WHERE gateway_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(if n == 0 {
            GatewayDeletion::Missing
        } else {
            GatewayDeletion::Deleted
        })
    }
}

/// What [`Store::delete_gateway`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayDeletion {
    /// Deleted with its agent reports.
    Deleted,
    /// Not deleted: servers are bound to it.
    InUse {
        /// How many.
        servers: i64,
    },
    /// No such gateway.
    Missing,
}
