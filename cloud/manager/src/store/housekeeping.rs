//! Deleting rows nobody needs any more. Idempotent, so every replica may run it.

use super::{Store, StoreError};

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Sessions (with their refresh tokens).
    pub sessions: u64,
    /// Throttle counters.
    pub throttle: u64,
    /// Tombstones of deleted users (their sessions ended with the deletion).
    pub users: u64,
}

impl Store {
    /// Removes sessions that ended (expired or revoked) before `ended_before`, their
    /// refresh tokens, and throttle counters that are neither locked nor counting at
    /// `now` (`window`: the counting window in seconds). Spent refresh tokens of live
    /// sessions are kept: they are what reuse detection matches.
    pub async fn purge(
        &self,
        now: i64,
        ended_before: i64,
        window: i64,
    ) -> Result<Purged, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM refresh_tokens WHERE session_id IN \
             (SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1)",
        )
        .bind(ended_before)
        .execute(&mut *tx)
        .await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(ended_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let throttle = sqlx::query(
            "DELETE FROM login_throttle WHERE locked_until <= $1 AND window_start <= $2",
        )
        .bind(now)
        .bind(now - window)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Deleted before `ended_before`: their sessions ended then and are gone now.
        let users = sqlx::query("DELETE FROM users WHERE deleted_at < $1")
            .bind(ended_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Purged {
            sessions,
            throttle,
            users,
        })
    }
}
