//! Refresh-token rotation and logout.
//!
//! A refresh token is single use: exchanging it marks it used and issues a new one in
//! the same session (family). Presenting a used token again means it was copied: the
//! whole session is revoked and the event audited as `refresh_reuse`. Two concurrent
//! exchanges of one token are the same thing; the conditional update lets exactly one
//! win.

use std::net::IpAddr;

use outband_api::auth::TokenResponse;

use super::tokens;
use crate::error::ApiError;
use crate::ids::{self, REFRESH_PREFIX, new_refresh_token};
use crate::manager::Manager;
use crate::metrics::inc;
use crate::store::audit::NewAudit;
use crate::store::sessions::{Exchange, RefreshLookup};

/// Longest refresh token looked up (ours are 47 bytes).
const MAX_REFRESH_LEN: usize = 128;

/// Exchanges a refresh token for new tokens.
pub async fn refresh(m: &Manager, token: &str, ip: IpAddr) -> Result<TokenResponse, ApiError> {
    let ip_text = ip.to_string();
    let now = m.clock.now();
    let fail = |actor: Option<&RefreshLookup>, detail: &str| NewAudit {
        action: "refresh",
        outcome: "failure",
        actor_id: actor.map(|f| f.user_id.clone()),
        source_ip: Some(ip_text.clone()),
        target: actor.map(|f| f.session_id.clone()),
        detail: Some(detail.into()),
        ..NewAudit::default()
    };
    let found = if token.len() <= MAX_REFRESH_LEN && token.starts_with(REFRESH_PREFIX) {
        m.store.find_refresh(&ids::hash_token(token)).await?
    } else {
        None
    };
    let Some(found) = found else {
        inc(&m.metrics.refresh_failure);
        m.audit(fail(None, "unknown")).await?;
        return Err(ApiError::invalid_refresh_token());
    };
    if found.session_revoked_at.is_some() {
        inc(&m.metrics.refresh_failure);
        m.audit(fail(Some(&found), "revoked")).await?;
        return Err(ApiError::invalid_refresh_token());
    }
    if found.used_at.is_some() {
        return Err(reuse(m, &found, &ip_text).await);
    }
    if found.expires_at <= now || found.session_expires_at <= now {
        inc(&m.metrics.refresh_failure);
        m.audit(fail(Some(&found), "expired")).await?;
        return Err(ApiError::invalid_refresh_token());
    }
    let user = m.store.user_by_id(&found.user_id).await?;
    let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
        m.store
            .revoke_session(&found.session_id, "user_disabled", now)
            .await?;
        inc(&m.metrics.refresh_failure);
        m.audit(fail(Some(&found), "user_disabled")).await?;
        return Err(ApiError::invalid_refresh_token());
    };

    let next = new_refresh_token();
    let next_end = (now + m.config.refresh_ttl.as_secs() as i64).min(found.session_expires_at);
    let exchanged = m
        .store
        .exchange_refresh(
            &ids::hash_token(token),
            &ids::hash_token(&next),
            &found.session_id,
            now,
            next_end,
        )
        .await?;
    if exchanged == Exchange::AlreadyUsed {
        return Err(reuse(m, &found, &ip_text).await);
    }
    let claims = tokens::access_claims(m, &user, &found.session_id, now);
    let access = m.keys.sign(&claims).await?;
    inc(&m.metrics.refresh_success);
    m.audit(NewAudit {
        action: "refresh",
        outcome: "success",
        actor_id: Some(user.id.clone()),
        actor_email: Some(user.email.clone()),
        source_ip: Some(ip_text),
        target: Some(found.session_id.clone()),
        ..NewAudit::default()
    })
    .await?;
    tokens::response(m, &user, access, next, next_end - now).await
}

/// Reuse of a rotated token: revoke the family, audit, refuse.
async fn reuse(m: &Manager, found: &RefreshLookup, ip: &str) -> ApiError {
    inc(&m.metrics.refresh_reuse);
    tracing::warn!(session = %found.session_id, user = %found.user_id, source_ip = %ip,
        "refresh token reuse: revoking the session");
    let now = m.clock.now();
    if let Err(e) = m
        .store
        .revoke_session(&found.session_id, "reuse", now)
        .await
    {
        return e.into();
    }
    let entry = NewAudit {
        action: "refresh_reuse",
        outcome: "denied",
        actor_id: Some(found.user_id.clone()),
        source_ip: Some(ip.into()),
        target: Some(found.session_id.clone()),
        detail: Some("session revoked".into()),
        ..NewAudit::default()
    };
    if let Err(e) = m.audit(entry).await {
        return e.into();
    }
    ApiError::invalid_refresh_token()
}

/// Ends the session a refresh token belongs to. Unknown tokens are ignored (logout is
/// idempotent and reveals nothing).
pub async fn logout(m: &Manager, token: &str, ip: IpAddr) -> Result<(), ApiError> {
    if token.len() > MAX_REFRESH_LEN || !token.starts_with(REFRESH_PREFIX) {
        return Ok(());
    }
    let Some(found) = m.store.find_refresh(&ids::hash_token(token)).await? else {
        return Ok(());
    };
    if m.store
        .revoke_session(&found.session_id, "logout", m.clock.now())
        .await?
    {
        inc(&m.metrics.logout);
        m.audit(NewAudit {
            action: "logout",
            outcome: "success",
            actor_id: Some(found.user_id.clone()),
            source_ip: Some(ip.to_string()),
            target: Some(found.session_id.clone()),
            ..NewAudit::default()
        })
        .await?;
    }
    Ok(())
}
