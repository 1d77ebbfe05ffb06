//! The `agents` (adoption state) and `join_tokens` tables.

use outband_api::agents::{Agent, AgentEntry, AgentStatus};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

const COLUMNS: &str = "a.id, a.pairing_code, a.gateway_id, a.status, a.tenant_id, \
     a.first_seen_at, a.decided_at, a.site, ga.endpoints";
const FROM: &str = "agents a LEFT JOIN gateway_agents ga \
     ON ga.agent_id = a.id AND ga.gateway_id = a.gateway_id";

fn status(s: &str) -> AgentStatus {
    match s {
        "adopted" => AgentStatus::Adopted,
        "rejected" => AgentStatus::Rejected,
        _ => AgentStatus::Pending,
    }
}

fn from_row(row: &AnyRow) -> Result<AgentEntry, sqlx::Error> {
    let endpoints: Option<String> = row.try_get("endpoints")?;
    let agent = Agent {
        id: row.try_get("id")?,
        pairing_code: row.try_get("pairing_code")?,
        gateway_id: row.try_get("gateway_id")?,
        status: status(&row.try_get::<String, _>("status")?),
        tenant_id: row.try_get("tenant_id")?,
        endpoints: endpoints
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        first_seen_at: row.try_get("first_seen_at")?,
        decided_at: row.try_get("decided_at")?,
    };
    Ok(AgentEntry {
        agent,
        site: row.try_get("site")?,
    })
}

/// A stored join token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJoinToken<'a> {
    /// `jt_...`.
    pub id: &'a str,
    /// SHA-256 of the secret.
    pub token_hash: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Usable once.
    pub one_time: bool,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// User id.
    pub created_by: &'a str,
    /// Site the joining agents go to.
    pub site: Option<&'a str>,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    /// Unknown, used or expired token.
    Token,
    /// The agent is already adopted or rejected (or shows another pairing code).
    Agent,
}

impl Store {
    /// Records reported agents as pending (known agents keep their state).
    pub(crate) async fn note_agents(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        gateway_id: &str,
        agents: &[(String, String, Vec<String>)],
        now: i64,
    ) -> Result<(), StoreError> {
        for (agent_id, code, _) in agents {
            sqlx::query(
                "INSERT INTO agents (id, pairing_code, gateway_id, status, first_seen_at) \
                 VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (id) DO UPDATE SET \
                 gateway_id = excluded.gateway_id, pairing_code = excluded.pairing_code",
            )
            .bind(agent_id)
            .bind(code)
            .bind(gateway_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Pending agents showing `pairing_code`.
    pub async fn pending_agents_by_code(&self, code: &str) -> Result<Vec<AgentEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE a.pairing_code = $1 AND a.status = 'pending' \
             ORDER BY a.id LIMIT 100"
        ))
        .bind(code)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The agent with this id.
    pub async fn agent_by_id(&self, id: &str) -> Result<Option<AgentEntry>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Agents by id: of `tenant` when given (filter in the query), else all; only of
    /// `site` when given; at most 1000.
    pub async fn list_agents(
        &self,
        tenant: Option<&str>,
        site: Option<&str>,
    ) -> Result<Vec<AgentEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE ($1 IS NULL OR a.tenant_id = $1) \
             AND ($2 IS NULL OR a.site = $2) ORDER BY a.id LIMIT 1000"
        ))
        .bind(tenant)
        .bind(site)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Adopts (into `tenant` and `site`) or rejects (`tenant` = None) a pending agent
    /// whose id and pairing code both match; false if there is none.
    pub async fn decide_agent(
        &self,
        agent_id: &str,
        pairing_code: &str,
        tenant: Option<&str>,
        site: Option<&str>,
        now: i64,
        by: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE agents SET status = $1, tenant_id = $2, decided_at = $3, decided_by = $4, \
             site = $7 WHERE id = $5 AND pairing_code = $6 AND status = 'pending'",
        )
        .bind(if tenant.is_some() {
            "adopted"
        } else {
            "rejected"
        })
        .bind(tenant)
        .bind(now)
        .bind(by)
        .bind(agent_id)
        .bind(pairing_code)
        .bind(site)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Stores a join token.
    pub async fn insert_join_token(&self, t: &NewJoinToken<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_tokens (id, token_hash, tenant_id, one_time, uses, expires_at, \
             created_at, created_by, site) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)",
        )
        .bind(t.id)
        .bind(t.token_hash)
        .bind(t.tenant_id)
        .bind(i64::from(t.one_time))
        .bind(t.expires_at)
        .bind(t.created_at)
        .bind(t.created_by)
        .bind(t.site)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Spends a join token on an agent, in one transaction: the token must be live
    /// (and unused if one-time); the agent must be new or pending with the same
    /// pairing code. Returns `(token id, tenant id, site)`.
    pub async fn join_agent(
        &self,
        token_hash: &str,
        agent_id: &str,
        pairing_code: &str,
        gateway_id: &str,
        now: i64,
    ) -> Result<Result<(String, String, Option<String>), JoinRefused>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE join_tokens SET uses = uses + 1 WHERE token_hash = $1 AND expires_at > $2 \
             AND (one_time = 0 OR uses = 0) RETURNING id, tenant_id, site",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(JoinRefused::Token));
        };
        let token_id: String = row.try_get("id")?;
        let tenant_id: String = row.try_get("tenant_id")?;
        let site: Option<String> = row.try_get("site")?;
        let r = sqlx::query(
            "INSERT INTO agents (id, pairing_code, gateway_id, status, tenant_id, \
             first_seen_at, decided_at, decided_by, site) \
             VALUES ($1, $2, $3, 'adopted', $4, $5, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
             status = 'adopted', tenant_id = excluded.tenant_id, gateway_id = excluded.gateway_id, \
             decided_at = excluded.decided_at, decided_by = excluded.decided_by, \
             site = excluded.site \
             WHERE agents.status = 'pending' AND agents.pairing_code = excluded.pairing_code",
        )
        .bind(agent_id)
        .bind(pairing_code)
        .bind(gateway_id)
        .bind(&tenant_id)
        .bind(now)
        .bind(format!("join:{token_id}"))
        .bind(site.as_deref())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Err(JoinRefused::Agent));
        }
        tx.commit().await?;
        Ok(Ok((token_id, tenant_id, site)))
    }
}
