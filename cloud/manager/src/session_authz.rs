//! Session authorization for gateways: may this user open this kind of session on
//! this server, and if so, where (agent, endpoint) and with which BMC credentials.
//!
//! The user is identified by an access token (verified here) or by user id + session
//! id (the gateway verified the token against the JWKS); either way the session must
//! be live now, so a logout or a revoked session stops new BMC sessions at once. The
//! decision is [`crate::authz`]'s, like every other endpoint's; the server must also
//! be served by the asking gateway (a gateway cannot obtain the credentials of
//! servers behind another gateway). Every answer is audited (`session_authz`).

use outband_api::gateways::{
    Gateway, SessionAuthzRequest, SessionAuthzResponse, SessionKind, SessionTarget,
};
use outband_api::servers::BmcCredentials;

use crate::authz::{Action, On, authorize_user, decide};
use crate::error::{ApiError, ErrorCode};
use crate::http::extract::MAX_ID_LEN;
use crate::jwt::MAX_TOKEN_LEN;
use crate::manager::Manager;
use crate::store::audit::NewAudit;
use crate::store::users::UserRow;

impl Manager {
    async fn session_authz_audit(
        &self,
        outcome: &'static str,
        user: Option<&UserRow>,
        gateway: &Gateway,
        source_ip: &str,
        server_id: &str,
        detail: String,
    ) -> Result<(), ApiError> {
        self.audit(NewAudit {
            action: "session_authz",
            outcome,
            actor_id: user.map(|u| u.id.clone()),
            actor_email: user.map(|u| u.email.clone()),
            source_ip: Some(source_ip.to_owned()),
            target: Some(server_id.to_owned()),
            detail: Some(format!("{detail} via {}", gateway.id)),
            ..NewAudit::default()
        })
        .await?;
        Ok(())
    }
}

fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::PowerStatus => "power_status",
        SessionKind::PowerControl => "power_control",
        SessionKind::Serial => "serial",
        SessionKind::Graphical => "graphical",
    }
}

fn deny(reason: &str, user: Option<&UserRow>, session: Option<&str>) -> SessionAuthzResponse {
    SessionAuthzResponse {
        allowed: false,
        reason: Some(reason.to_owned()),
        user_id: user.map(|u| u.id.clone()),
        session_id: session.map(str::to_owned),
        target: None,
    }
}

/// Identifies the user and checks the session is live: `Ok(Err(reason))` when not.
async fn identify(
    m: &Manager,
    req: &SessionAuthzRequest,
) -> Result<Result<(UserRow, String), &'static str>, ApiError> {
    let now = m.clock.now();
    let (user_id, session_id) = match (&req.access_token, &req.user_id, &req.session_id) {
        (Some(token), None, None) => {
            if token.len() > MAX_TOKEN_LEN {
                return Ok(Err("invalid_token"));
            }
            match m
                .keys
                .verify(token, &m.config.issuer, &m.config.audience)
                .await?
            {
                Ok(c) => (c.sub, c.sid),
                Err(_) => return Ok(Err("invalid_token")),
            }
        }
        (None, Some(u), Some(s)) => {
            if u.len() > MAX_ID_LEN || s.len() > MAX_ID_LEN {
                return Ok(Err("invalid_token"));
            }
            (u.clone(), s.clone())
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give access_token, or user_id and session_id",
            ));
        }
    };
    if m.store.session_user(&session_id, now).await?.as_deref() != Some(user_id.as_str()) {
        return Ok(Err("session_ended"));
    }
    match m.store.user_by_id(&user_id).await? {
        Some(u) if u.disabled_at.is_none() && !u.password_must_change => Ok(Ok((u, session_id))),
        _ => Ok(Err("session_ended")),
    }
}

/// Whether the agent is adopted into `tenant` (a server can only be reached through an
/// agent of its own tenant, whatever agent id its admin typed).
async fn agent_adopted_in(
    m: &Manager,
    agent: Option<&str>,
    tenant: &str,
) -> Result<bool, ApiError> {
    let Some(agent) = agent else {
        return Ok(false);
    };
    Ok(m.store.agent_by_id(agent).await?.is_some_and(|a| {
        a.agent.status == outband_api::agents::AgentStatus::Adopted
            && a.agent.tenant_id.as_deref() == Some(tenant)
    }))
}

/// Decides a gateway's session-authorization request (see the module docs).
pub async fn session_authz(
    m: &Manager,
    gateway: &Gateway,
    source_ip: &str,
    req: SessionAuthzRequest,
) -> Result<SessionAuthzResponse, ApiError> {
    let kind = kind_name(req.kind);
    let (user, session_id) = match identify(m, &req).await? {
        Ok(found) => found,
        Err(reason) => {
            m.session_authz_audit(
                "denied",
                None,
                gateway,
                source_ip,
                &req.server_id,
                format!("{kind} {reason}"),
            )
            .await?;
            return Ok(deny(reason, None, None));
        }
    };
    let server = if req.server_id.len() <= MAX_ID_LEN {
        m.store.server_by_id(&req.server_id).await?
    } else {
        None
    };
    let on = On::Object {
        id: &req.server_id,
        tenant: server.as_ref().map(|s| s.tenant_id.as_str()),
    };
    let (action, view_only) = match req.kind {
        SessionKind::PowerStatus => (Action::PowerStatus, false),
        SessionKind::PowerControl => (Action::PowerControl, false),
        SessionKind::Serial => (Action::SerialConsole, false),
        SessionKind::Graphical if decide(&user, Action::GraphicalInteractive, on).is_ok() => {
            (Action::GraphicalInteractive, false)
        }
        SessionKind::Graphical => (Action::GraphicalView, true),
    };
    if let Err(e) = authorize_user(m, &user, source_ip, Some(&gateway.id), action, on).await {
        let reason = match e.code {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            _ => return Err(e),
        };
        return Ok(deny(reason, Some(&user), Some(&session_id)));
    }
    let Some(server) = server else {
        return Ok(deny("not_found", Some(&user), Some(&session_id)));
    };
    let endpoint = match req.kind {
        SessionKind::PowerStatus | SessionKind::PowerControl => server.power_url.clone(),
        SessionKind::Serial => server.serial_url.clone(),
        SessionKind::Graphical => server.graphical_url.clone(),
    };
    let refusal = if server.gateway_id.as_deref() != Some(gateway.id.as_str()) {
        Some("wrong_gateway")
    } else if server.agent_id.is_none() {
        Some("no_agent")
    } else if !agent_adopted_in(m, server.agent_id.as_deref(), &server.tenant_id).await? {
        Some("agent_not_adopted")
    } else if endpoint.is_none() {
        Some("no_endpoint")
    } else {
        None
    };
    if let Some(reason) = refusal {
        m.session_authz_audit(
            "denied",
            Some(&user),
            gateway,
            source_ip,
            &server.id,
            format!("{kind} {reason}"),
        )
        .await?;
        return Ok(deny(reason, Some(&user), Some(&session_id)));
    }
    let credentials = match &server.credentials {
        Some((kid, sealed)) => {
            let c = m
                .credential_keys
                .open(&server.id, kid, sealed)
                .map_err(|e| ApiError::internal(&e))?;
            Some(BmcCredentials {
                username: c.username.as_str().to_owned(),
                password: c.password.as_str().to_owned(),
            })
        }
        None => None,
    };
    m.session_authz_audit(
        "success",
        Some(&user),
        gateway,
        source_ip,
        &server.id,
        format!("{kind}{}", if view_only { " view_only" } else { "" }),
    )
    .await?;
    Ok(SessionAuthzResponse {
        allowed: true,
        reason: None,
        user_id: Some(user.id.clone()),
        session_id: Some(session_id),
        target: Some(SessionTarget {
            agent_id: server.agent_id.unwrap_or_default(),
            endpoint_url: endpoint.unwrap_or_default(),
            credentials,
            cert_sha256: server.cert_sha256,
            view_only,
        }),
    })
}
