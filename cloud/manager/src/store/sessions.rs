//! The `sessions` (refresh-token families) and `refresh_tokens` tables.

use sqlx::Row;

use super::{Store, StoreError};

/// What a presented refresh token hash maps to.
#[derive(Debug, Clone)]
pub struct RefreshLookup {
    /// Session (family) id.
    pub session_id: String,
    /// Owner.
    pub user_id: String,
    /// Token expiry (unix seconds).
    pub expires_at: i64,
    /// Set once the token was exchanged: presenting it again is reuse.
    pub used_at: Option<i64>,
    /// Absolute session expiry.
    pub session_expires_at: i64,
    /// Set when the session was revoked.
    pub session_revoked_at: Option<i64>,
}

/// Outcome of marking a token used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The token was unused and live; the replacement is stored.
    Rotated,
    /// Someone exchanged it first (concurrent reuse).
    AlreadyUsed,
}

/// A session to create with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Owner.
    pub user_id: &'a str,
    /// Where the login came from.
    pub source_ip: Option<&'a str>,
    /// Hash of the first refresh token.
    pub token_hash: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Expiry of the first refresh token.
    pub token_expires_at: i64,
    /// Absolute end of the session.
    pub session_expires_at: i64,
}

impl Store {
    /// Creates a session and its first refresh token.
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        let NewSession {
            session_id,
            user_id,
            source_ip,
            token_hash,
            now,
            token_expires_at,
            session_expires_at,
        } = *s;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, source_ip) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .bind(session_expires_at)
        .bind(source_ip)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(session_id)
        .bind(now)
        .bind(token_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Looks a refresh token up by its hash.
    pub async fn find_refresh(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshLookup>, StoreError> {
        let row = sqlx::query(
            "SELECT r.session_id, s.user_id, r.expires_at, r.used_at, \
                    s.expires_at AS session_expires_at, s.revoked_at \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshLookup {
            session_id: row.try_get("session_id")?,
            user_id: row.try_get("user_id")?,
            expires_at: row.try_get("expires_at")?,
            used_at: row.try_get("used_at")?,
            session_expires_at: row.try_get("session_expires_at")?,
            session_revoked_at: row.try_get("revoked_at")?,
        }))
    }

    /// Marks `old_hash` used and stores `new_hash` in the same session, atomically. The
    /// conditional update makes exactly one of two concurrent exchanges win.
    pub async fn exchange_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        session_id: &str,
        now: i64,
        new_expires_at: i64,
    ) -> Result<Exchange, StoreError> {
        let mut tx = self.pool().begin().await?;
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Exchange::AlreadyUsed);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(new_hash)
        .bind(session_id)
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Exchange::Rotated)
    }

    /// Revokes a session (all its refresh tokens). Returns whether it was live.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the session exists, is not revoked and not past its end.
    pub async fn session_live(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions \
             WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(session_id)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? == 1)
    }

    /// The user of a live session (not revoked, not expired).
    pub async fn session_user(
        &self,
        session_id: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM sessions \
             WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(session_id)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }

    /// Sessions ended after the cursor, in (ended at, id) order: with `after`, strictly
    /// after (`since`, `after`), at most `limit`; without, every session of second
    /// `since` (at most `same_second`) and then at most `limit` later ones.
    pub async fn revoked_since(
        &self,
        since: i64,
        after: Option<&str>,
        limit: i64,
        same_second: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut rows = match after {
            Some(after) => {
                sqlx::query(
                    "SELECT id, user_id, revoked_at FROM sessions \
                     WHERE revoked_at > $1 OR (revoked_at = $1 AND id > $2) \
                     ORDER BY revoked_at, id LIMIT $3",
                )
                .bind(since)
                .bind(after)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, user_id, revoked_at FROM sessions WHERE revoked_at = $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(since)
                .bind(same_second)
                .fetch_all(self.pool())
                .await?
            }
        };
        if after.is_none() {
            rows.extend(
                sqlx::query(
                    "SELECT id, user_id, revoked_at FROM sessions WHERE revoked_at > $1 \
                     ORDER BY revoked_at, id LIMIT $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
            );
        }
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("user_id")?,
                    r.try_get("revoked_at")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
