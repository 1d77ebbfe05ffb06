//! Session authorization: before the gateway acts on a server for a user, it asks the
//! manager (`POST /api/v1/gateway/session-authz`) whether that user may use that kind
//! of session on that server, and gets the target (agent, endpoint, BMC credentials)
//! only if allowed. The gateway verified the access token itself, so it passes the
//! token's `sub` and `sid`, never the token.

use axum::http::Method;
use outband_api::gateways::{SessionAuthzRequest, SessionAuthzResponse, SessionKind};

use super::ManagerLink;
use super::client::ClientError;

/// Why the manager could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// The gateway holds no gateway token (not registered yet, or refused).
    #[error("the gateway is not registered with the manager")]
    NotRegistered,
    /// The call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ManagerLink {
    /// Asks whether user `user_id` in login session `session_id` may use `kind` on
    /// `server_id`. Refusals are `Ok` with `allowed: false` and a reason.
    pub async fn session_authz(
        &self,
        user_id: &str,
        session_id: &str,
        server_id: &str,
        kind: SessionKind,
    ) -> Result<SessionAuthzResponse, AuthzError> {
        let token = self.gateway_token().ok_or(AuthzError::NotRegistered)?;
        let body = SessionAuthzRequest {
            access_token: None,
            user_id: Some(user_id.to_owned()),
            session_id: Some(session_id.to_owned()),
            server_id: server_id.to_owned(),
            kind,
        };
        Ok(self
            .client
            .call(
                Method::POST,
                "/api/v1/gateway/session-authz",
                Some(&token),
                Some(&body),
            )
            .await?)
    }
}
