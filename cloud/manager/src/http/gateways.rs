//! Gateways: administration (`/api/v1/gateways`, global admins) and the gateway-facing
//! calls (`/api/v1/gateway/*`, authenticated by the gateway token).
//!
//! Transport: everything here that carries a gateway secret or BMC credentials is
//! refused (`403 insecure_transport`) unless the client's own connection was
//! encrypted ([`ClientInfo`]): it came over the manager's TLS listener, from a
//! loopback peer (a TLS-terminating proxy on the same host), or from a trusted proxy
//! that says `X-Forwarded-Proto: https`. So session authorization never hands BMC
//! credentials to a plain-HTTP request.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use outband_api::ErrorBody;
use outband_api::gateways::{
    CreateGatewayRequest, Gateway, GatewayCredential, GatewayList, HeartbeatRequest,
    HeartbeatResponse, RegisterRequest, RegisterResponse, RevocationList, RevocationPage,
    RevocationQuery, RevokedSession, SessionAuthzRequest, SessionAuthzResponse,
};

use super::bearer::AuthUser;
use super::extract::{ApiJson, ApiQuery, ClientInfo, PathId};
use super::tenants::check_name;
use crate::authz::{Action, On, authorize};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::inventory;
use crate::manager::Manager;
use crate::store::StoreError;
use crate::store::audit::NewAudit;
use crate::store::gateways::GatewayDeletion;

/// Prefix of registration credentials.
pub const REGISTRATION_PREFIX: &str = "obgr_";
/// Prefix of gateway tokens.
pub const GATEWAY_TOKEN_PREFIX: &str = "obg_";
/// How long a registration credential stays usable.
pub const REGISTRATION_TTL_SECS: i64 = 7 * 24 * 3600;
/// Most agents in one heartbeat.
pub const MAX_REPORTED_AGENTS: usize = 1024;
/// Most endpoints per reported agent.
pub const MAX_REPORTED_ENDPOINTS: usize = 64;
/// Longest secret accepted (credential or token) before hashing.
const MAX_SECRET_LEN: usize = 128;
/// Largest page of the revocation feed.
pub const MAX_REVOCATIONS: i64 = 1000;
/// Without `after`, the sessions of second `since` listed again before later ones (a
/// page stays well under the gateway's 1 MiB response limit).
pub const MAX_REVOCATIONS_SAME_SECOND: i64 = 4000;
/// Sessions ended this recently may still be joined by ones committed late (another
/// transaction, another replica's clock) that sort before them, so the cursor never
/// moves past them: they are listed again until they are this old.
pub const REVOCATION_SETTLE_SECS: i64 = 10;

fn insecure() -> ApiError {
    ApiError::new(
        ErrorCode::InsecureTransport,
        "gateway credentials and BMC credentials need TLS: use the manager's https listener \
         (or a TLS proxy on loopback or trusted with X-Forwarded-Proto: https)",
    )
}

fn invalid(msg: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

/// A registered gateway, authenticated by its token.
#[derive(Debug, Clone)]
pub struct AuthGateway {
    /// The gateway.
    pub gateway: Gateway,
    /// Peer address.
    pub source_ip: String,
}

impl FromRequestParts<Arc<Manager>> for AuthGateway {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, m: &Arc<Manager>) -> Result<Self, ApiError> {
        let ClientInfo(client) = ClientInfo::from_request_parts(parts, m).await?;
        let path: String = parts.uri.path().chars().take(128).collect();
        let denied = |detail: String| NewAudit {
            action: "gateway_auth",
            detail: Some(detail),
            ..NewAudit::default()
        };
        if !client.secure {
            m.audit_denial(client.ip, denied(format!("insecure_transport {path}")))
                .await?;
            return Err(insecure());
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "gateway token required"))?;
        let gateway = if token.starts_with(GATEWAY_TOKEN_PREFIX) && token.len() <= MAX_SECRET_LEN {
            m.store.gateway_by_token(&ids::hash_token(token)).await?
        } else {
            None
        };
        match gateway {
            Some(gateway) => Ok(AuthGateway {
                gateway,
                source_ip: client.ip.to_string(),
            }),
            None => {
                m.audit_denial(client.ip, denied(format!("invalid_token {path}")))
                    .await?;
                Err(ApiError::invalid_token())
            }
        }
    }
}

/// Audits an admin's gateway call refused for plain HTTP (bounded like every denial a
/// caller can repeat) and returns the `insecure_transport` error.
async fn insecure_audited(
    m: &Manager,
    user: &AuthUser,
    ip: std::net::IpAddr,
    action: &'static str,
    target: Option<&str>,
) -> Result<ApiError, ApiError> {
    let entry = NewAudit {
        action,
        actor_id: Some(user.user.id.clone()),
        actor_email: Some(user.user.email.clone()),
        target: target.map(str::to_owned),
        detail: Some("insecure_transport".into()),
        ..NewAudit::default()
    };
    m.audit_denial(ip, entry).await?;
    Ok(insecure())
}

fn check_url(url: &str) -> Result<String, ApiError> {
    let ok = url.len() <= inventory::MAX_URL_LEN
        && (url.starts_with("https://") || url.starts_with("http://"))
        && url.bytes().all(|b| b > b' ' && b < 0x7f)
        && !url.contains('@');
    if !ok {
        return Err(invalid(
            "url must be an http(s) URL of at most 512 bytes without user info",
        ));
    }
    Ok(url.to_owned())
}

fn new_credential(now: i64) -> (String, String, i64) {
    let secret = format!("{REGISTRATION_PREFIX}{}", ids::random_token(32));
    let hash = ids::hash_token(&secret);
    (secret, hash, now + REGISTRATION_TTL_SECS)
}

#[utoipa::path(
    post,
    path = "/api/v1/gateways",
    tag = "gateways",
    request_body = CreateGatewayRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the registration credential is shown only here", body = GatewayCredential),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins) / insecure_transport", body = ErrorBody),
        (status = 409, description = "conflict: the name is taken", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateways` (global admins).
pub async fn create_gateway(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ClientInfo(client): ClientInfo,
    ApiJson(req): ApiJson<CreateGatewayRequest>,
) -> Result<(StatusCode, Json<GatewayCredential>), ApiError> {
    authorize(&m, &user, Action::ManageGateways, On::Global).await?;
    if !client.secure {
        return Err(insecure_audited(&m, &user, client.ip, "gateway_create", None).await?);
    }
    let now = m.clock.now();
    let gateway = Gateway {
        id: ids::new_id("gw"),
        name: check_name(&req.name)?,
        url: req.url.as_deref().map(check_url).transpose()?,
        created_at: now,
        registered_at: None,
        last_seen_at: None,
        version: None,
    };
    let (secret, hash, expires_at) = new_credential(now);
    match m.store.insert_gateway(&gateway, &hash, expires_at).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a gateway with this name exists",
            ));
        }
        other => other?,
    }
    m.audit(user.audit("gateway_create", &gateway.id, &gateway.name))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(GatewayCredential {
            gateway,
            registration_credential: secret,
            expires_at,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/gateways",
    tag = "gateways",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every gateway", body = GatewayList),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins)", body = ErrorBody)
    )
)]
/// `GET /api/v1/gateways` (global admins).
pub async fn list_gateways(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
) -> Result<Json<GatewayList>, ApiError> {
    authorize(&m, &user, Action::ManageGateways, On::Global).await?;
    Ok(Json(GatewayList {
        gateways: m.store.list_gateways().await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/gateways/{gateway_id}/credential",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A new registration credential (the old one, if unused, is void)", body = GatewayCredential),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins) / insecure_transport", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateways/{gateway_id}/credential`: a new one-time registration
/// credential, e.g. for a reinstalled gateway (registering replaces its token).
pub async fn new_gateway_credential(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ClientInfo(client): ClientInfo,
    PathId(id): PathId,
) -> Result<Json<GatewayCredential>, ApiError> {
    authorize(&m, &user, Action::ManageGateways, On::Global).await?;
    if !client.secure {
        return Err(insecure_audited(&m, &user, client.ip, "gateway_credential", Some(&id)).await?);
    }
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such object");
    let gateway = m.store.gateway_by_id(&id).await?.ok_or_else(not_found)?;
    let (secret, hash, expires_at) = new_credential(m.clock.now());
    if !m
        .store
        .set_gateway_registration(&id, &hash, expires_at)
        .await?
    {
        return Err(not_found());
    }
    m.audit(user.audit("gateway_credential", &gateway.id, &gateway.name))
        .await?;
    Ok(Json(GatewayCredential {
        gateway,
        registration_credential: secret,
        expires_at,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/gateways/{gateway_id}",
    tag = "gateways",
    params(("gateway_id" = String, Path, description = "Gateway id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted: its token stops working at once"),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "gateway_in_use: servers are bound to it; re-point them first", body = ErrorBody)
    )
)]
/// `DELETE /api/v1/gateways/{gateway_id}` (global admins). Servers bound to the
/// gateway are not unbound behind their tenants' backs: while any names it, the answer
/// is `409 gateway_in_use`.
pub async fn delete_gateway(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    authorize(&m, &user, Action::ManageGateways, On::Global).await?;
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such object");
    let gateway = m.store.gateway_by_id(&id).await?.ok_or_else(not_found)?;
    match m.store.delete_gateway(&gateway.id).await? {
        GatewayDeletion::Deleted => {
            m.audit(user.audit("gateway_delete", &gateway.id, &gateway.name))
                .await?;
            Ok(StatusCode::NO_CONTENT)
        }
        GatewayDeletion::InUse { servers } => Err(ApiError::new(
            ErrorCode::GatewayInUse,
            format!("{servers} servers are bound to this gateway: re-point or delete them first"),
        )),
        GatewayDeletion::Missing => Err(not_found()),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/gateway/register",
    tag = "gateway",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered: keep the gateway token", body = RegisterResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_credentials: unknown, used or expired credential", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateway/register`: spends a registration credential, returns the
/// gateway token.
pub async fn register(
    State(m): State<Arc<Manager>>,
    ClientInfo(client): ClientInfo,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let ip = client.ip;
    if !client.secure {
        let entry = NewAudit {
            action: "gateway_register",
            detail: Some("insecure_transport".into()),
            ..NewAudit::default()
        };
        m.audit_denial(ip, entry).await?;
        return Err(insecure());
    }
    if req
        .version
        .as_ref()
        .is_some_and(|v| v.len() > 64 || v.chars().any(char::is_control))
    {
        return Err(invalid("version: at most 64 bytes"));
    }
    let now = m.clock.now();
    let presented = &req.registration_credential;
    let id = if presented.starts_with(REGISTRATION_PREFIX) && presented.len() <= MAX_SECRET_LEN {
        let token = format!("{GATEWAY_TOKEN_PREFIX}{}", ids::random_token(32));
        m.store
            .register_gateway(
                &ids::hash_token(presented),
                &ids::hash_token(&token),
                req.version.as_deref(),
                now,
            )
            .await?
            .map(|id| (id, token))
    } else {
        None
    };
    let audit = |outcome, target: Option<String>| NewAudit {
        action: "gateway_register",
        outcome,
        source_ip: Some(ip.to_string()),
        target,
        ..NewAudit::default()
    };
    match id {
        Some((gateway_id, token)) => {
            m.audit(audit("success", Some(gateway_id.clone()))).await?;
            Ok(Json(RegisterResponse {
                gateway_id,
                gateway_token: token,
            }))
        }
        None => {
            m.audit(audit("failure", None)).await?;
            Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the registration credential is unknown, used or expired",
            ))
        }
    }
}

fn check_report(req: &HeartbeatRequest) -> Result<Vec<(String, String, Vec<String>)>, ApiError> {
    if req.agents.len() > MAX_REPORTED_AGENTS {
        return Err(invalid("at most 1024 agents per heartbeat"));
    }
    let printable = |s: &str| s.bytes().all(|b| b > b' ' && b < 0x7f);
    req.agents
        .iter()
        .map(|a| {
            let id = inventory::check_ref("agent_id", &a.agent_id).map_err(invalid)?;
            if a.pairing_code.is_empty() || a.pairing_code.len() > 32 || !printable(&a.pairing_code)
            {
                return Err(invalid("pairing_code: 1-32 printable bytes"));
            }
            if a.endpoints.len() > MAX_REPORTED_ENDPOINTS
                || a.endpoints
                    .iter()
                    .any(|e| e.len() > inventory::MAX_URL_LEN || !printable(e))
            {
                return Err(invalid(
                    "endpoints: at most 64 printable URLs of at most 512 bytes",
                ));
            }
            Ok((id, a.pairing_code.clone(), a.endpoints.clone()))
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/api/v1/gateway/heartbeat",
    tag = "gateway",
    request_body = HeartbeatRequest,
    security(("gateway" = [])),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateway/heartbeat`: liveness and the connected agents.
pub async fn heartbeat(
    State(m): State<Arc<Manager>>,
    gw: AuthGateway,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let agents = check_report(&req)?;
    let now = m.clock.now();
    m.store
        .gateway_heartbeat(&gw.gateway.id, &agents, now)
        .await?;
    Ok(Json(HeartbeatResponse { now }))
}

#[utoipa::path(
    post,
    path = "/api/v1/gateway/session-authz",
    tag = "gateway",
    request_body = SessionAuthzRequest,
    security(("gateway" = [])),
    responses(
        (status = 200, description = "The decision (allowed or not, with the reason); audited", body = SessionAuthzResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token (the gateway's)", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateway/session-authz`.
pub async fn session_authz(
    State(m): State<Arc<Manager>>,
    gw: AuthGateway,
    ApiJson(req): ApiJson<SessionAuthzRequest>,
) -> Result<Json<SessionAuthzResponse>, ApiError> {
    crate::session_authz::session_authz(&m, &gw.gateway, &gw.source_ip, req)
        .await
        .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/gateway/revocations",
    tag = "gateway",
    params(RevocationQuery),
    security(("gateway" = [])),
    responses(
        (status = 200, description = "Sessions ended since `since`, oldest first", body = RevocationPage),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token (the gateway's)", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody)
    )
)]
/// `GET /api/v1/gateway/revocations?since=`: login sessions that ended (logout, reuse
/// detection, password change), so gateways end the BMC sessions opened under them.
/// Ended sessions are kept a day (housekeeping), so poll more often than that.
pub async fn revocations(
    State(m): State<Arc<Manager>>,
    _gw: AuthGateway,
    ApiQuery(q): ApiQuery<RevocationQuery>,
) -> Result<Json<RevocationPage>, ApiError> {
    if let Some(after) = &q.after
        && (after.is_empty() || after.len() > 128 || !after.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "after must be 1-128 printable bytes (a previous next_after)",
        ));
    }
    let rows = m
        .store
        .revoked_since(
            q.since,
            q.after.as_deref(),
            MAX_REVOCATIONS,
            MAX_REVOCATIONS_SAME_SECOND,
        )
        .await?;
    if q.after.is_none()
        && rows.iter().filter(|r| r.2 == q.since).count() as i64 >= MAX_REVOCATIONS_SAME_SECOND
    {
        tracing::warn!(
            since = q.since,
            "more sessions ended in one second than a revocation page without `after` lists"
        );
    }
    // The cursor moves to the last settled row (rows are in cursor order, so settled
    // ones come first); unsettled ones are listed again next time (clients dedupe).
    let settled_before = m.clock.now() - REVOCATION_SETTLE_SECS;
    let (next_since, next_after) = rows
        .iter()
        .rev()
        .find(|r| r.2 < settled_before)
        .map_or((q.since, q.after.clone()), |r| (r.2, Some(r.0.clone())));
    Ok(Json(RevocationPage {
        list: RevocationList {
            sessions: rows
                .into_iter()
                .map(|(session_id, user_id, revoked_at)| RevokedSession {
                    session_id,
                    user_id,
                    revoked_at,
                })
                .collect(),
            next_since,
        },
        next_after,
    }))
}
