//! The `login_throttle` table: failed-login counters in the database, so every replica
//! sees the same counts.
//!
//! A key (`acct:<email>` or `ip:<address>`) collects failures in a fixed window; when it
//! reaches its limit it is locked for the lockout period and the count restarts. Keys
//! are built from what the client sent, never from whether the account exists, so the
//! throttle reveals nothing about which accounts exist.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Reserves one attempt for `key` before the expensive check, in one statement, so
    /// concurrent requests (on any replica) cannot all pass a "not locked yet" check:
    /// the attempt counts as a failure until [`Store::throttle_refund`] or
    /// [`Store::throttle_reset`] gives it back. At most `limit` attempts per `window`
    /// are granted; the next one locks `key` until `now + lockout` (and restarts the
    /// count). Returns the unix second until which `key` is locked, or 0 when this
    /// attempt is granted.
    pub async fn throttle_reserve(
        &self,
        key: &str,
        now: i64,
        window: i64,
        limit: i64,
        lockout: i64,
    ) -> Result<i64, StoreError> {
        // Every SET expression reads the row as it was before this statement, so the
        // three CASEs decide on the same old values. A locked key is left as it is.
        let row = sqlx::query(
            "INSERT INTO login_throttle (key, failures, window_start, locked_until) \
             VALUES ($1, 1, $2, 0) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE \
                 WHEN login_throttle.locked_until > $2 THEN login_throttle.failures \
                 WHEN login_throttle.window_start <= $3 THEN 1 \
                 WHEN login_throttle.failures + 1 > $4 THEN 0 \
                 ELSE login_throttle.failures + 1 END, \
               window_start = CASE \
                 WHEN login_throttle.locked_until > $2 THEN login_throttle.window_start \
                 WHEN login_throttle.window_start <= $3 THEN $2 \
                 WHEN login_throttle.failures + 1 > $4 THEN $2 \
                 ELSE login_throttle.window_start END, \
               locked_until = CASE \
                 WHEN login_throttle.locked_until > $2 THEN login_throttle.locked_until \
                 WHEN login_throttle.window_start <= $3 THEN 0 \
                 WHEN login_throttle.failures + 1 > $4 THEN $5 \
                 ELSE login_throttle.locked_until END \
             RETURNING locked_until",
        )
        .bind(key)
        .bind(now)
        .bind(now - window)
        .bind(limit)
        .bind(now + lockout)
        .fetch_one(self.pool())
        .await?;
        let locked_until: i64 = row.try_get("locked_until")?;
        Ok(if locked_until > now { locked_until } else { 0 })
    }

    /// Gives back one attempt reserved with [`Store::throttle_reserve`] that turned out
    /// not to be a failure. A lock already set stays.
    pub async fn throttle_refund(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_throttle SET failures = failures - 1 \
             WHERE key = $1 AND failures > 0",
        )
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the failures of `key` (after a successful login).
    pub async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_throttle WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
