//! Bearer-token authentication: validates our own access JWTs, then checks that the
//! session is live and the user still exists and is enabled (so logout and disabling
//! take effect at the manager at once; gateways rely on the short token lifetime).
//! Accounts with a one-time password may only call [`PASSWORD_PATH`].

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::extract::SourceIp;
use crate::error::{ApiError, ErrorCode};
use crate::jwt::{Claims, MAX_TOKEN_LEN};
use crate::manager::Manager;
use crate::metrics::inc;
use crate::store::audit::NewAudit;
use crate::store::users::UserRow;

/// Audits a refused access token (bounded per source, see [`crate::audit_limit`]) and
/// answers `401 invalid_token`.
async fn refused(
    m: &Manager,
    ip: std::net::IpAddr,
    claims: Option<&Claims>,
    reason: &str,
) -> Result<AuthUser, ApiError> {
    inc(&m.metrics.token_rejected);
    m.audit_denial(
        ip,
        NewAudit {
            action: "access_token",
            actor_id: claims.map(|c| c.sub.clone()),
            actor_email: claims.map(|c| c.email.clone()),
            target: claims.map(|c| c.sid.clone()),
            detail: Some(reason.to_owned()),
            ..NewAudit::default()
        },
    )
    .await?;
    Err(ApiError::invalid_token())
}

/// The one endpoint an account with a one-time password may use.
pub const PASSWORD_PATH: &str = "/api/v1/auth/password";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// Verified claims.
    pub claims: Claims,
    /// The user as stored now.
    pub user: UserRow,
    /// Peer address.
    pub source_ip: String,
}

impl FromRequestParts<Arc<Manager>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, m: &Arc<Manager>) -> Result<Self, ApiError> {
        let SourceIp(ip) = SourceIp::from_request_parts(parts, m).await?;
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "bearer token required",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "bearer token required"))?;
        if token.len() > MAX_TOKEN_LEN {
            return refused(m, ip, None, "token too large").await;
        }
        let claims = match m
            .keys
            .verify(token, &m.config.issuer, &m.config.audience)
            .await?
        {
            Ok(c) => c,
            Err(reason) => {
                tracing::debug!(%reason, source_ip = %ip, "access token refused");
                // The reasons are fixed strings ("token expired", "bad signature"...).
                return refused(m, ip, None, &reason.to_string()).await;
            }
        };
        let now = m.clock.now();
        if !m.store.session_live(&claims.sid, now).await? {
            return refused(m, ip, Some(&claims), "session ended").await;
        }
        let user = m.store.user_by_id(&claims.sub).await?;
        let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
            return refused(m, ip, Some(&claims), "user disabled or deleted").await;
        };
        if user.password_must_change && parts.uri.path() != PASSWORD_PATH {
            // The path is a URI path (ASCII, no spaces or controls); capped.
            let path: String = parts.uri.path().chars().take(128).collect();
            m.audit_denial(
                ip,
                NewAudit {
                    action: "password_change_required",
                    actor_id: Some(user.id.clone()),
                    actor_email: Some(user.email.clone()),
                    target: Some(claims.sid.clone()),
                    detail: Some(format!("{} {path}", parts.method)),
                    ..NewAudit::default()
                },
            )
            .await?;
            return Err(ApiError::new(
                ErrorCode::PasswordChangeRequired,
                "this account has a one-time password: change it first (POST /api/v1/auth/password)",
            ));
        }
        Ok(AuthUser {
            claims,
            user,
            source_ip: ip.to_string(),
        })
    }
}
