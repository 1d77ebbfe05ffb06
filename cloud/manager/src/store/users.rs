//! The `users` table.

use outband_api::tenants::Role;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, conflict_or};

/// A user as stored.
#[derive(Clone)]
pub struct UserRow {
    /// Opaque id (`usr_...`), the JWT `sub`.
    pub id: String,
    /// Lower-cased email.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// May administer everything.
    pub is_global_admin: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Set when the account is disabled.
    pub disabled_at: Option<i64>,
    /// The password is a one-time password: only changing it is allowed.
    pub password_must_change: bool,
    /// The user's tenant (global admins may have none).
    pub tenant_id: Option<String>,
    /// Role in the tenant (set exactly when `tenant_id` is; an unknown stored value
    /// reads as no role: no rights).
    pub role: Option<Role>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("is_global_admin", &self.is_global_admin)
            .field("disabled_at", &self.disabled_at)
            .field("password_must_change", &self.password_must_change)
            .field("tenant_id", &self.tenant_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, email, password_hash, is_global_admin, created_at, disabled_at, \
     password_must_change, tenant_id, role";

fn from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        is_global_admin: row.try_get::<i64, _>("is_global_admin")? != 0,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
        password_must_change: row.try_get::<i64, _>("password_must_change")? != 0,
        tenant_id: row.try_get("tenant_id")?,
        role: row
            .try_get::<Option<String>, _>("role")?
            .as_deref()
            .and_then(Role::parse),
    })
}

impl Store {
    /// The user with this (already lower-cased) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The user with this id (deleted users are gone).
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Inserts a user; [`StoreError::Conflict`] if the email is taken.
    pub async fn insert_user(&self, user: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, is_global_admin, created_at, \
             disabled_at, password_must_change, tenant_id, role) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(i64::from(user.is_global_admin))
        .bind(user.created_at)
        .bind(user.disabled_at)
        .bind(i64::from(user.password_must_change))
        .bind(user.tenant_id.as_deref())
        .bind(user.role.map(Role::as_str))
        .execute(self.pool())
        .await
        .map_err(conflict_or)?;
        Ok(())
    }

    /// Replaces a user's password (clearing the must-change flag) and revokes every
    /// other live session of the user. Returns the number of sessions revoked.
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_must_change = 0 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'password_change' \
             WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(keep_session)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revoked.rows_affected())
    }

    /// The users of a tenant, by email.
    pub async fn users_of_tenant(&self, tenant_id: &str) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY email"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Sets a user's role and disabled state; disabling revokes every live session of
    /// the user (reason `user_disabled`). Returns the sessions revoked, or `None` if
    /// the user is gone.
    pub async fn update_membership(
        &self,
        user_id: &str,
        role: Role,
        disabled: bool,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query(
            "UPDATE users SET role = $1, disabled_at = CASE WHEN $2 = 0 THEN NULL \
             ELSE COALESCE(disabled_at, $3) END WHERE id = $4 AND deleted_at IS NULL",
        )
        .bind(role.as_str())
        .bind(i64::from(disabled))
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(None);
        }
        let mut revoked = 0;
        if disabled {
            revoked = revoke_all(&mut tx, user_id, "user_disabled", now).await?;
        }
        tx.commit().await?;
        Ok(Some(revoked))
    }

    /// Sets a one-time password (the user must change it at the next login) and ends
    /// every live session of the user (reason `password_reset`). Returns the sessions
    /// revoked, or `None` if the user is gone.
    pub async fn reset_password(
        &self,
        user_id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let update = sqlx::query(
            "UPDATE users SET password_hash = $1, password_must_change = 1 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(password_hash)
        .bind(user_id);
        self.change_and_end_sessions(update, user_id, "password_reset", now)
            .await
    }

    /// Deletes a user: the row stays as a tombstone (email rewritten so it can be used
    /// again, no tenant or role, no password, disabled) until housekeeping purges it
    /// with its ended sessions; every live session ends now (reason `user_deleted`), so
    /// it appears in the revocation feed. Returns the sessions revoked, or `None` if
    /// the user is gone.
    pub async fn delete_user(&self, user_id: &str, now: i64) -> Result<Option<u64>, StoreError> {
        let update = sqlx::query(
            "UPDATE users SET deleted_at = $1, disabled_at = COALESCE(disabled_at, $1), \
             email = 'deleted.' || id || '@deleted.invalid', password_hash = '', \
             tenant_id = NULL, role = NULL, is_global_admin = 0 \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(user_id);
        self.change_and_end_sessions(update, user_id, "user_deleted", now)
            .await
    }

    /// Runs `update` (one user row) and, if it changed the row, ends every live
    /// session of the user, in one transaction. `None`: no such (live) user.
    async fn change_and_end_sessions<'q>(
        &self,
        update: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        if update.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(None);
        }
        let revoked = revoke_all(&mut tx, user_id, reason, now).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    /// Number of users.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}

/// Ends every live session of a user (they appear in the revocation feed).
async fn revoke_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    reason: &str,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
