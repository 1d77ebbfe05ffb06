//! Agent adoption (`/api/v1/agents/*`), join tokens (`/api/v1/join-tokens`) and the
//! gateway's join call (`/api/v1/gateway/join`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::ErrorBody;
use outband_api::agents::{
    AgentDecisionRequest, AgentEntry, AgentList, AgentListQuery, AgentLookupRequest,
    CreateJoinTokenRequest, JoinRequest, JoinToken, MAX_SITE_LEN,
};

use super::bearer::AuthUser;
use super::extract::{ApiJson, ApiQuery, MAX_ID_LEN};
use super::gateways::AuthGateway;
use crate::authz::{Action, On, authorize};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::inventory;
use crate::manager::Manager;
use crate::store::agents::{JoinRefused, NewJoinToken};
use crate::store::audit::NewAudit;

/// Prefix of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "objt_";
/// Default join-token lifetime.
pub const DEFAULT_JOIN_TTL_SECS: i64 = 3600;
/// Longest join-token lifetime.
pub const MAX_JOIN_TTL_SECS: i64 = 7 * 24 * 3600;
/// Pairing-code lookups that find nothing, per user per window, before a lockout (a
/// code has 40 bits: this keeps a tenant admin from enumerating pending agents).
pub const LOOKUP_MISS_LIMIT: i64 = 20;
/// Window and lockout of [`LOOKUP_MISS_LIMIT`], seconds.
pub const LOOKUP_WINDOW_SECS: i64 = 15 * 60;

fn invalid(msg: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such object")
}

fn check_code(code: &str) -> Result<(), ApiError> {
    if code.is_empty() || code.len() > 32 || !code.bytes().all(|b| b > b' ' && b < 0x7f) {
        return Err(invalid("pairing_code: 1-32 printable bytes"));
    }
    Ok(())
}

/// Checks an optional site label: 1-64 characters, none a control character, no
/// leading or trailing whitespace (`400 invalid_site`).
pub fn check_site(site: Option<&str>) -> Result<(), ApiError> {
    let Some(s) = site else { return Ok(()) };
    if s.is_empty()
        || s.chars().count() > MAX_SITE_LEN
        || s.chars().any(char::is_control)
        || s.trim() != s
    {
        return Err(ApiError::new(
            ErrorCode::InvalidSite,
            "site: 1-64 printable characters without leading or trailing spaces",
        ));
    }
    Ok(())
}

/// The tenant an adoption or token targets: the given one, else the caller's own;
/// authorized for [`Action::AdoptAgents`] (foreign or missing: 404).
async fn target_tenant(
    m: &Manager,
    user: &AuthUser,
    given: Option<&str>,
) -> Result<String, ApiError> {
    let id = given
        .map(str::to_owned)
        .or_else(|| user.user.tenant_id.clone())
        .ok_or_else(|| invalid("tenant_id is required"))?;
    let tenant = if id.len() <= MAX_ID_LEN {
        m.store.tenant_by_id(&id).await?
    } else {
        None
    };
    let on = On::Object {
        id: &id,
        tenant: tenant.as_ref().map(|t| t.id.as_str()),
    };
    authorize(m, user, Action::AdoptAgents, on).await?;
    tenant.map(|t| t.id).ok_or_else(not_found)
}

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    params(AgentListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Global admins: every agent; others: their tenant's adopted agents", body = AgentList),
        (status = 400, description = "invalid_site", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (no tenant)", body = ErrorBody)
    )
)]
/// `GET /api/v1/agents`.
pub async fn list_agents(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<AgentListQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let scope = authorize(&m, &user, Action::ViewServer, On::List).await?;
    check_site(q.site.as_deref())?;
    Ok(Json(AgentList {
        agents: m
            .store
            .list_agents(scope.tenant(), q.site.as_deref())
            .await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/lookup",
    tag = "agents",
    request_body = AgentLookupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Pending agents showing this code (compare the id with the appliance's)", body = AgentList),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 429, description = "too_many_attempts: 20 lookups found nothing within 15 min", body = ErrorBody)
    )
)]
/// `POST /api/v1/agents/lookup` (audited; 20 misses per user in 15 minutes lock the
/// user's lookups for 15 minutes: codes are short).
pub async fn lookup(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<AgentLookupRequest>,
) -> Result<Json<AgentList>, ApiError> {
    authorize(&m, &user, Action::AdoptAgents, On::List).await?;
    check_code(&req.pairing_code)?;
    let now = m.clock.now();
    let key = format!("lookup:{}", user.user.id);
    // Reserved before the lookup (as logins are), so concurrent lookups cannot all
    // pass a "not locked yet" check; a lookup that finds something gives it back.
    let locked_until = m
        .store
        .throttle_reserve(
            &key,
            now,
            LOOKUP_WINDOW_SECS,
            LOOKUP_MISS_LIMIT,
            LOOKUP_WINDOW_SECS,
        )
        .await?;
    if locked_until > now {
        m.audit(NewAudit {
            outcome: "failure",
            ..user.audit("agent_lookup", &req.pairing_code, "throttled")
        })
        .await?;
        return Err(ApiError {
            retry_after: Some((locked_until - now) as u64),
            ..ApiError::new(
                ErrorCode::TooManyAttempts,
                "too many pairing-code lookups that found nothing; try again later",
            )
        });
    }
    let agents = m.store.pending_agents_by_code(&req.pairing_code).await?;
    if !agents.is_empty() {
        m.store.throttle_refund(&key).await?;
    }
    m.audit(user.audit(
        "agent_lookup",
        &req.pairing_code,
        &format!("{} found", agents.len()),
    ))
    .await?;
    Ok(Json(AgentList { agents }))
}

async fn decide(
    m: &Manager,
    user: &AuthUser,
    req: &AgentDecisionRequest,
    tenant: Option<String>,
) -> Result<Json<AgentEntry>, ApiError> {
    check_code(&req.pairing_code)?;
    inventory::check_ref("agent_id", &req.agent_id).map_err(invalid)?;
    let ok = m
        .store
        .decide_agent(
            &req.agent_id,
            &req.pairing_code,
            tenant.as_deref(),
            req.site.as_deref(),
            m.clock.now(),
            &user.user.id,
        )
        .await?;
    let action = if tenant.is_some() {
        "agent_adopt"
    } else {
        "agent_reject"
    };
    if !ok {
        m.audit(NewAudit {
            outcome: "failure",
            ..user.audit(action, &req.agent_id, "not pending or code mismatch")
        })
        .await?;
        return Err(not_found());
    }
    let detail = match (&tenant, &req.site) {
        (Some(t), Some(site)) => format!("{t} site={site}"),
        (Some(t), None) => t.clone(),
        (None, _) => "-".into(),
    };
    m.audit(user.audit(action, &req.agent_id, &detail)).await?;
    let agent = m
        .store
        .agent_by_id(&req.agent_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(agent))
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/adopt",
    tag = "agents",
    request_body = AgentDecisionRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Adopted", body = AgentEntry),
        (status = 400, description = "invalid_request / invalid_site", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found: no pending agent with this code and id (or no such tenant)", body = ErrorBody)
    )
)]
/// `POST /api/v1/agents/adopt`: by pairing code and full agent id, into a tenant.
pub async fn adopt(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<AgentDecisionRequest>,
) -> Result<Json<AgentEntry>, ApiError> {
    let tenant = target_tenant(&m, &user, req.tenant_id.as_deref()).await?;
    check_site(req.site.as_deref())?;
    decide(&m, &user, &req, Some(tenant)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/reject",
    tag = "agents",
    request_body = AgentDecisionRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rejected", body = AgentEntry),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins only: a pending agent belongs to no tenant)", body = ErrorBody),
        (status = 404, description = "not_found: no pending agent with this code and id", body = ErrorBody)
    )
)]
/// `POST /api/v1/agents/reject`: by pairing code and full agent id; global admins
/// only (a pending agent belongs to no tenant, and a rejection holds for every tenant,
/// so a tenant admin who learnt another's code and id must not decide it; a tenant
/// admin simply does not adopt an agent that is not theirs).
pub async fn reject(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<AgentDecisionRequest>,
) -> Result<Json<AgentEntry>, ApiError> {
    authorize(&m, &user, Action::RejectAgents, On::Global).await?;
    if req.tenant_id.is_some() || req.site.is_some() {
        return Err(invalid("tenant_id and site are for adopt only"));
    }
    decide(&m, &user, &req, None).await
}

#[utoipa::path(
    post,
    path = "/api/v1/join-tokens",
    tag = "agents",
    request_body = CreateJoinTokenRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only here", body = JoinToken),
        (status = 400, description = "invalid_request / invalid_site", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found: no such tenant", body = ErrorBody)
    )
)]
/// `POST /api/v1/join-tokens`: a token a gateway presents on an agent's behalf to adopt
/// it into the tenant (one-time by default, 1 h by default, at most 7 days).
pub async fn create_join_token(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateJoinTokenRequest>,
) -> Result<(StatusCode, Json<JoinToken>), ApiError> {
    let tenant = target_tenant(&m, &user, req.tenant_id.as_deref()).await?;
    check_site(req.site.as_deref())?;
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_JOIN_TTL_SECS);
    if !(1..=MAX_JOIN_TTL_SECS).contains(&ttl) {
        return Err(invalid("ttl_secs: 1 to 604800"));
    }
    let one_time = req.one_time.unwrap_or(true);
    let now = m.clock.now();
    let token = format!("{JOIN_TOKEN_PREFIX}{}", ids::random_token(32));
    let id = ids::new_id("jt");
    let hash = ids::hash_token(&token);
    m.store
        .insert_join_token(&NewJoinToken {
            id: &id,
            token_hash: &hash,
            tenant_id: &tenant,
            one_time,
            expires_at: now + ttl,
            created_at: now,
            created_by: &user.user.id,
            site: req.site.as_deref(),
        })
        .await?;
    let site = req
        .site
        .as_ref()
        .map(|s| format!(" site={s}"))
        .unwrap_or_default();
    m.audit(user.audit(
        "join_token_create",
        &id,
        &format!(
            "{tenant} {}{site}",
            if one_time { "one_time" } else { "multi" }
        ),
    ))
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinToken {
            id,
            token,
            tenant_id: tenant,
            one_time,
            expires_at: now + ttl,
            site: req.site,
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/gateway/join",
    tag = "gateway",
    request_body = JoinRequest,
    security(("gateway" = [])),
    responses(
        (status = 200, description = "The agent is adopted into the token's tenant (and site)", body = AgentEntry),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token (the gateway's) / invalid_credentials (unknown, used or expired join token)", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody),
        (status = 409, description = "conflict: the agent is already adopted or rejected", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateway/join`: a gateway presents an agent's join token.
pub async fn join(
    State(m): State<Arc<Manager>>,
    gw: AuthGateway,
    ApiJson(req): ApiJson<JoinRequest>,
) -> Result<Json<AgentEntry>, ApiError> {
    check_code(&req.pairing_code)?;
    inventory::check_ref("agent_id", &req.agent_id).map_err(invalid)?;
    let audit = |outcome, detail: String| NewAudit {
        action: "agent_join",
        outcome,
        source_ip: Some(gw.source_ip.clone()),
        target: Some(req.agent_id.clone()),
        detail: Some(format!("{detail} via {}", gw.gateway.id)),
        ..NewAudit::default()
    };
    let token_ok = req.join_token.starts_with(JOIN_TOKEN_PREFIX) && req.join_token.len() <= 128;
    let outcome = if token_ok {
        m.store
            .join_agent(
                &ids::hash_token(&req.join_token),
                &req.agent_id,
                &req.pairing_code,
                &gw.gateway.id,
                m.clock.now(),
            )
            .await?
    } else {
        Err(JoinRefused::Token)
    };
    match outcome {
        Ok((token_id, tenant, site)) => {
            let site = site.map(|s| format!(" site={s}")).unwrap_or_default();
            m.audit(audit("success", format!("{tenant} {token_id}{site}")))
                .await?;
            let agent = m
                .store
                .agent_by_id(&req.agent_id)
                .await?
                .ok_or_else(not_found)?;
            Ok(Json(agent))
        }
        Err(JoinRefused::Token) => {
            m.audit(audit("failure", "token".into())).await?;
            Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the join token is unknown, used or expired",
            ))
        }
        Err(JoinRefused::Agent) => {
            m.audit(audit("failure", "agent".into())).await?;
            Err(ApiError::new(
                ErrorCode::Conflict,
                "the agent is already adopted or rejected",
            ))
        }
    }
}
