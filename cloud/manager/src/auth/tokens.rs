//! Issuing an access token and a refresh token for a session.

use outband_api::auth::TokenResponse;

use crate::error::ApiError;
use crate::ids::{self, new_refresh_token};
use crate::jwt::{Claims, TOKEN_TYP};
use crate::manager::Manager;
use crate::store::sessions::NewSession;
use crate::store::users::UserRow;

/// Claims of a fresh access token for `user` in `session_id`.
pub fn access_claims(m: &Manager, user: &UserRow, session_id: &str, now: i64) -> Claims {
    Claims {
        iss: m.config.issuer.clone(),
        aud: m.config.audience.clone(),
        sub: user.id.clone(),
        exp: now + m.config.access_ttl.as_secs() as i64,
        iat: now,
        nbf: now,
        jti: ids::random_token(16),
        typ: TOKEN_TYP.into(),
        sid: session_id.into(),
        email: user.email.clone(),
        adm: user.is_global_admin,
    }
}

/// Starts a session for `user`: stores the first refresh token, signs an access token.
pub(super) async fn start_session(
    m: &Manager,
    user: &UserRow,
    source_ip: &str,
) -> Result<(String, TokenResponse), ApiError> {
    let now = m.clock.now();
    let session_id = ids::new_id("ses");
    let refresh = new_refresh_token();
    let session_end = now + m.config.session_ttl.as_secs() as i64;
    let refresh_end = (now + m.config.refresh_ttl.as_secs() as i64).min(session_end);
    m.store
        .create_session(&NewSession {
            session_id: &session_id,
            user_id: &user.id,
            source_ip: Some(source_ip),
            token_hash: &ids::hash_token(&refresh),
            now,
            token_expires_at: refresh_end,
            session_expires_at: session_end,
        })
        .await?;
    let access = m
        .keys
        .sign(&access_claims(m, user, &session_id, now))
        .await?;
    let resp = response(m, user, access, refresh, refresh_end - now).await?;
    Ok((session_id, resp))
}

/// The token response, with the gateways the user may use: those with a URL serving
/// servers of the user's tenant (global admins: every gateway with a URL).
pub(super) async fn response(
    m: &Manager,
    user: &UserRow,
    access: String,
    refresh: String,
    refresh_in: i64,
) -> Result<TokenResponse, ApiError> {
    let gateways = if user.is_global_admin {
        m.store.gateways_for_tenant(None).await?
    } else if let Some(t) = &user.tenant_id {
        m.store.gateways_for_tenant(Some(t)).await?
    } else {
        Vec::new()
    };
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer".into(),
        expires_in: m.config.access_ttl.as_secs(),
        refresh_token: refresh,
        refresh_expires_in: refresh_in.max(0) as u64,
        gateways,
        password_change_required: user.password_must_change,
    })
}
