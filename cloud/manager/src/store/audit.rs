//! The append-only `audit_log` table (triggers in the schema refuse UPDATE and DELETE).

use outband_api::audit::{AuditEntry, AuditQuery};
use sqlx::Row;

use super::{Store, StoreError};

/// An entry to append (the id is assigned by the database).
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Action name.
    pub action: &'static str,
    /// `success`, `failure` or `denied`.
    pub outcome: &'static str,
    /// Actor user id.
    pub actor_id: Option<String>,
    /// Actor email.
    pub actor_email: Option<String>,
    /// Source address.
    pub source_ip: Option<String>,
    /// Object acted upon.
    pub target: Option<String>,
    /// Short reason.
    pub detail: Option<String>,
}

/// Maximum page size of [`Store::audit_query`].
pub const MAX_AUDIT_PAGE: i64 = 1000;

impl Store {
    /// Appends an entry.
    pub async fn audit_append(&self, e: &NewAudit) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, action, outcome, actor_id, actor_email, source_ip, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at_ms)
        .bind(e.action)
        .bind(e.outcome)
        .bind(e.actor_id.as_deref())
        .bind(e.actor_email.as_deref())
        .bind(e.source_ip.as_deref())
        .bind(e.target.as_deref())
        .bind(e.detail.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Entries matching `q`, newest first.
    pub async fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
        let rows = sqlx::query(
            "SELECT id, at_ms, action, outcome, actor_id, actor_email, source_ip, target, detail \
             FROM audit_log \
             WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR at_ms < $2) \
               AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR action = $4) \
               AND ($5 IS NULL OR id < $5) AND ($7 IS NULL OR target = $7) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(q.actor_id.as_deref())
        .bind(q.action.as_deref())
        .bind(q.before_id)
        .bind(limit)
        .bind(q.target.as_deref())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    action: row.try_get("action")?,
                    outcome: row.try_get("outcome")?,
                    actor_id: row.try_get("actor_id")?,
                    actor_email: row.try_get("actor_email")?,
                    source_ip: row.try_get("source_ip")?,
                    target: row.try_get("target")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
