//! Password change (also how a one-time password is replaced).
//!
//! Requires the current password (a stolen access token alone cannot take over the
//! account); wrong answers count against the account and address throttle like failed
//! logins. Success revokes every other session of the user.

use outband_api::auth::ChangePasswordRequest;

use crate::error::{ApiError, ErrorCode};
use crate::http::bearer::AuthUser;
use crate::manager::Manager;
use crate::password::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};
use crate::store::audit::NewAudit;

/// Changes the caller's password.
pub async fn change_password(
    m: &Manager,
    caller: &AuthUser,
    req: ChangePasswordRequest,
) -> Result<(), ApiError> {
    let user = &caller.user;
    if req.new_password.len() < MIN_PASSWORD_LEN || req.new_password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the new password must be 12 to 1024 bytes",
        ));
    }
    if req.current_password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "current password too long",
        ));
    }
    let now = m.clock.now();
    let t = &m.config.throttle;
    let acct_key = format!("acct:{}", user.email);
    let audit = |outcome: &'static str, detail: String| NewAudit {
        action: "password_change",
        outcome,
        actor_id: Some(user.id.clone()),
        actor_email: Some(user.email.clone()),
        source_ip: Some(caller.source_ip.clone()),
        detail: Some(detail),
        ..NewAudit::default()
    };
    // Reserved before hashing, like a login attempt (see `login.rs`).
    let window = t.window.as_secs() as i64;
    let lockout = t.lockout.as_secs() as i64;
    let locked_until = m
        .store
        .throttle_reserve(&acct_key, now, window, t.account_limit, lockout)
        .await?;
    if locked_until > now {
        m.audit(audit("failure", "throttled".into())).await?;
        return Err(ApiError {
            retry_after: Some((locked_until - now) as u64),
            ..ApiError::new(
                ErrorCode::TooManyAttempts,
                "too many failed attempts; try again later",
            )
        });
    }
    let same = req.new_password == req.current_password;
    let ok = match m
        .hasher
        .verify(req.current_password, Some(user.password_hash.clone()))
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            m.store.throttle_refund(&acct_key).await?;
            return Err(e.into());
        }
    };
    if !ok {
        m.audit(audit("failure", "wrong_password".into())).await?;
        return Err(ApiError::new(
            ErrorCode::WrongPassword,
            "the current password is wrong",
        ));
    }
    // The current password is right: its reservation and earlier failures go.
    m.store.throttle_reset(&acct_key).await?;
    if same {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the new password must differ from the current one",
        ));
    }
    let hash = m.hasher.hash(req.new_password).await?;
    let revoked = m
        .store
        .set_password(&user.id, &hash, &caller.claims.sid, now)
        .await?;
    m.audit(audit(
        "success",
        format!("revoked {revoked} other sessions"),
    ))
    .await?;
    Ok(())
}
