//! The user API (`--user-listen`): what a user's CLI or browser asks the gateway to do
//! on a server, authenticated by the access JWT the manager issued.
//!
//! - `GET /api/v1/servers/{server_id}/power` → `{"server_id","state"}` (session kind
//!   `power_status`)
//! - `POST /api/v1/servers/{server_id}/power` `{"action":"on|off|cycle|reset|soft"}` →
//!   `{"server_id","action","state"}` (`power_control`)
//! - `GET /api/v1/servers/{server_id}/bmc-info` → the BMC's identity (`power_status`)
//! - `GET /health` (no token)
//!
//! Per request: `Authorization: Bearer <token>`, verified locally against the cached
//! JWKS ([`JwksCache`]); a login session the revocation feed listed is refused (401
//! `session_ended`) before anything else; then the manager's session authorization
//! for (user, session, server, kind) decides and returns the agent, endpoint and BMC
//! credentials; the agent carries out the request ([`super::bmc`]); the outcome is
//! queued for the manager's audit log ([`EventQueue`]), never delaying the answer.
//!
//! Errors are `{"error":{"code","message"}}`. A server that does not exist, belongs to
//! another tenant, or has an id that cannot exist all get the same 404 body. 401s carry
//! `WWW-Authenticate: Bearer` (RFC 6750; with `error="invalid_token"` when a token was
//! presented).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use outband_api::gateways::{GatewayEvent, SessionKind, SessionTarget};
use outband_jwt::{Claims, MAX_TOKEN_LEN, TokenError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiError;
use super::bmc::{self, AuthBody, InfoAnswer, PowerActionName};
use crate::manager::ManagerLink;
use crate::manager::events::EventQueue;
use crate::manager::jwks::{JwksCache, is_unavailable};
use crate::manager::session::AuthzError;
use crate::registry::Registry;

/// Largest request body (`{"action":"cycle"}` is 18 bytes).
pub const MAX_USER_BODY: usize = 1024;
/// Longest server id that can exist (the manager's id limit).
pub const MAX_SERVER_ID: usize = 64;

/// What the user API needs.
#[derive(Debug)]
pub struct UserApi {
    /// Connected agents.
    pub registry: Arc<Registry>,
    /// The manager link (session authorization, revocations, gateway token).
    pub manager: Arc<ManagerLink>,
    /// The manager's signing keys.
    pub jwks: Arc<JwksCache>,
    /// Audit events on their way to the manager.
    pub events: Arc<EventQueue>,
    /// Counters.
    pub metrics: UserMetrics,
}

/// Token validation and session authorization outcomes.
#[derive(Debug, Default)]
pub struct UserMetrics {
    validations: Mutex<BTreeMap<&'static str, u64>>,
    authz: Mutex<BTreeMap<&'static str, u64>>,
    manager_errors: AtomicU64,
}

/// Labels of `outband_gateway_token_validations_total{result}` besides the
/// [`TokenError`] names.
const VALIDATION_RESULTS: [&str; 4] = ["ok", "missing", "not_bearer", "revoked"];
/// Reasons the manager gives (anything else is counted as `other`).
const AUTHZ_RESULTS: [&str; 10] = [
    "allowed",
    "invalid_token",
    "session_ended",
    "not_found",
    "forbidden",
    "wrong_gateway",
    "no_agent",
    "agent_not_adopted",
    "no_endpoint",
    "other",
];

fn bump(m: &Mutex<BTreeMap<&'static str, u64>>, label: &'static str) {
    *m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(label)
        .or_default() += 1;
}

impl UserMetrics {
    fn validation(&self, result: &'static str) {
        bump(&self.validations, result);
    }

    fn authz(&self, reason: &str) {
        let label = AUTHZ_RESULTS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("other");
        bump(&self.authz, label);
    }

    /// Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let v = self.validations.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP outband_gateway_token_validations_total User API access tokens by result.\n\
             # TYPE outband_gateway_token_validations_total counter"
        );
        let token_errors = TokenError::ALL.map(|e| e.as_str());
        for r in VALIDATION_RESULTS.iter().chain(token_errors.iter()) {
            let n = v.get(r).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "outband_gateway_token_validations_total{{result=\"{r}\"}} {n}"
            );
        }
        drop(v);
        let a = self.authz.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP outband_gateway_session_authz_total Session authorization answers from the manager by reason.\n\
             # TYPE outband_gateway_session_authz_total counter"
        );
        for r in AUTHZ_RESULTS {
            let n = a.get(r).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "outband_gateway_session_authz_total{{result=\"{r}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP outband_gateway_session_authz_errors_total Session authorizations that could not be asked (manager unreachable or failing).\n\
             # TYPE outband_gateway_session_authz_errors_total counter\n\
             outband_gateway_session_authz_errors_total {}",
            self.manager_errors.load(Ordering::Relaxed)
        );
    }
}

/// The user API's router.
pub fn router(api: Arc<UserApi>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/api/v1/servers/{server_id}/power",
            get(power_status).post(power_control),
        )
        .route("/api/v1/servers/{server_id}/bmc-info", get(bmc_info))
        .fallback(|| async { UserError(ApiError::not_found("not_found", "no such endpoint")) })
        .layer(DefaultBodyLimit::max(MAX_USER_BODY))
        .with_state(api)
}

/// An [`ApiError`] answered to a user: 401s get `WWW-Authenticate`.
#[derive(Debug)]
pub struct UserError(pub ApiError);

impl From<ApiError> for UserError {
    fn from(e: ApiError) -> Self {
        UserError(e)
    }
}

impl IntoResponse for UserError {
    fn into_response(self) -> Response {
        let challenge = (self.0.status == StatusCode::UNAUTHORIZED).then(|| {
            if self.0.code == "missing_token" {
                HeaderValue::from_static("Bearer realm=\"outband\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"outband\", error=\"invalid_token\"")
            }
        });
        let mut resp = self.0.into_response();
        if let Some(c) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

fn unauthorized(code: &'static str, message: &str) -> UserError {
    UserError(ApiError::refused(StatusCode::UNAUTHORIZED, code, message))
}

/// The one answer for a server the user cannot see: missing, another tenant's, or an
/// id that cannot exist.
fn no_such_server() -> UserError {
    UserError(ApiError::not_found("not_found", "no such server"))
}

/// Ids the manager issues: 1..=64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_server_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SERVER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The bearer token of `Authorization`, or why there is none.
pub fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("missing");
    };
    let value = value.to_str().map_err(|_| "not_bearer")?;
    let (scheme, token) = value.split_once(' ').ok_or("not_bearer")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not_bearer");
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err("not_bearer");
    }
    Ok(token)
}

impl UserApi {
    /// Verifies the bearer token and checks its login session has not ended.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Claims, UserError> {
        let token = match bearer(headers) {
            Ok(t) => t,
            Err(why) => {
                self.metrics.validation(why);
                return Err(if why == "missing" {
                    unauthorized(
                        "missing_token",
                        "an access token is required (Authorization: Bearer)",
                    )
                } else {
                    unauthorized(
                        "invalid_token",
                        "the Authorization header is not a bearer token",
                    )
                });
            }
        };
        // Bounded before any decoding (the verifier checks again).
        if token.len() > MAX_TOKEN_LEN {
            self.metrics.validation(TokenError::TooLarge.as_str());
            return Err(unauthorized(
                "invalid_token",
                "the access token is not valid",
            ));
        }
        let claims = match self.jwks.verify(token).await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.validation(e.as_str());
                tracing::debug!(reason = %e, "access token refused");
                let message = if e == TokenError::Expired {
                    "the access token has expired"
                } else {
                    "the access token is not valid"
                };
                return Err(unauthorized("invalid_token", message));
            }
        };
        if self.manager.revocations.is_revoked(&claims.sid) {
            self.metrics.validation("revoked");
            return Err(unauthorized(
                "session_ended",
                "the login session of this token has ended (logout or revocation)",
            ));
        }
        self.metrics.validation("ok");
        Ok(claims)
    }

    /// Asks the manager whether the authenticated user may use `kind` on
    /// `server_id`; the target when allowed.
    pub async fn authorize(
        &self,
        claims: &Claims,
        server_id: &str,
        kind: SessionKind,
    ) -> Result<SessionTarget, UserError> {
        if !valid_server_id(server_id) {
            return Err(no_such_server());
        }
        let answer = match self
            .manager
            .session_authz(&claims.sub, &claims.sid, server_id, kind)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.metrics.manager_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, server_id, "session authorization failed");
                return Err(manager_failure(&e));
            }
        };
        match (answer.allowed, answer.target) {
            (true, Some(target)) => {
                self.metrics.authz("allowed");
                Ok(target)
            }
            (true, None) => {
                self.metrics.authz("other");
                Err(UserError(ApiError::refused(
                    StatusCode::BAD_GATEWAY,
                    "manager_error",
                    "the manager allowed the session but named no target",
                )))
            }
            (false, _) => {
                let reason = answer.reason.unwrap_or_default();
                self.metrics.authz(&reason);
                tracing::info!(user_id = %claims.sub, server_id, kind = ?kind, reason = %reason, "session refused by the manager");
                Err(refusal(&reason))
            }
        }
    }

    /// Queues an audit event for the manager.
    fn report(
        &self,
        claims: &Claims,
        server_id: &str,
        action: &str,
        result: Result<String, &ApiError>,
    ) {
        let (outcome, detail) = match result {
            Ok(d) => ("success", d),
            Err(e) => ("failure", e.code.to_owned()),
        };
        self.events.push(GatewayEvent {
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            user_id: claims.sub.clone(),
            session_id: Some(claims.sid.clone()),
            server_id: server_id.to_owned(),
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            detail: Some(detail),
        });
    }
}

/// The manager's refusal as an HTTP answer.
pub fn refusal(reason: &str) -> UserError {
    let conflict = |code: &'static str, message: &str| {
        UserError(ApiError::refused(StatusCode::CONFLICT, code, message))
    };
    match reason {
        "not_found" => no_such_server(),
        "forbidden" => UserError(ApiError::refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role does not allow this on this server",
        )),
        "invalid_token" => unauthorized("invalid_token", "the access token is not valid"),
        "session_ended" => unauthorized(
            "session_ended",
            "the login session of this token has ended (logout or revocation)",
        ),
        "wrong_gateway" => conflict(
            "wrong_gateway",
            "this server is served by another gateway; use the gateway the manager lists for it",
        ),
        "no_agent" => conflict("no_agent", "no agent is assigned to this server"),
        "agent_not_adopted" => conflict(
            "agent_not_adopted",
            "the server's agent is not adopted into the server's tenant",
        ),
        "no_endpoint" => conflict(
            "no_endpoint",
            "the server has no BMC endpoint for this kind of session",
        ),
        _ => UserError(ApiError::refused(
            StatusCode::BAD_GATEWAY,
            "manager_error",
            "the manager refused the session for an unknown reason",
        )),
    }
}

fn manager_failure(e: &AuthzError) -> UserError {
    let unavailable = match e {
        AuthzError::NotRegistered => true,
        AuthzError::Client(c) => is_unavailable(c),
    };
    if unavailable {
        UserError(ApiError::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "manager_unavailable",
            "the manager cannot be reached to authorize this session; try again shortly",
        ))
    } else {
        UserError(ApiError::refused(
            StatusCode::BAD_GATEWAY,
            "manager_error",
            "the manager's session authorization failed",
        ))
    }
}

/// BMC credentials and pin from the manager's answer, in the agent's form.
fn target_auth(target: &SessionTarget) -> Result<outband_proto::pb::BmcAuth, ApiError> {
    let (username, password) = target
        .credentials
        .as_ref()
        .map(|c| (c.username.clone(), c.password.clone()))
        .unwrap_or_default();
    AuthBody {
        username,
        password,
        cert_sha256: target.cert_sha256.clone(),
        ipmi_cipher_suites: Vec::new(),
        allow_ipmi15: false,
    }
    .into_pb()
    .map_err(|e| {
        ApiError::refused(
            StatusCode::BAD_GATEWAY,
            "bad_target",
            format!(
                "the manager's target for this server is unusable: {}",
                e.message
            ),
        )
    })
}

/// Runs one BMC operation for the user against the target: agent offline → 503.
async fn on_agent<T, F>(api: &UserApi, target: &SessionTarget, op: F) -> Result<T, ApiError>
where
    F: AsyncFnOnce(&Registry, outband_proto::pb::BmcAuth) -> Result<T, ApiError>,
{
    let offline = || {
        ApiError::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_offline",
            "the server's agent is not connected to this gateway",
        )
    };
    if api.registry.get(&target.agent_id).is_none() {
        return Err(offline());
    }
    let auth = target_auth(target)?;
    match op(&api.registry, auth).await {
        Err(e) if e.code == "agent_not_found" => Err(offline()),
        other => other,
    }
}

/// `GET .../power` answer.
#[derive(Debug, Serialize)]
pub struct PowerStatus {
    /// The server.
    pub server_id: String,
    /// `on`, `off` or `unknown`.
    pub state: &'static str,
}

/// `POST .../power` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerControl {
    /// What to do.
    pub action: UserPowerAction,
}

/// Power actions a user may ask for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserPowerAction {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Power cycle.
    Cycle,
    /// Hard reset.
    Reset,
    /// Soft shutdown (ACPI).
    Soft,
}

impl UserPowerAction {
    fn agent_action(self) -> PowerActionName {
        match self {
            Self::On => PowerActionName::On,
            Self::Off => PowerActionName::Off,
            Self::Cycle => PowerActionName::Cycle,
            Self::Reset => PowerActionName::Reset,
            Self::Soft => PowerActionName::SoftOff,
        }
    }

    /// The audit event action.
    pub fn event(self) -> &'static str {
        match self {
            Self::On => "power_on",
            Self::Off => "power_off",
            Self::Cycle => "power_cycle",
            Self::Reset => "power_reset",
            Self::Soft => "power_soft",
        }
    }
}

/// `POST .../power` answer.
#[derive(Debug, Serialize)]
pub struct PowerResult {
    /// The server.
    pub server_id: String,
    /// What was done.
    pub action: UserPowerAction,
    /// The state read back after it.
    pub state: &'static str,
}

async fn power_status(
    State(api): State<Arc<UserApi>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PowerStatus>, UserError> {
    let claims = api.authenticate(&headers).await?;
    let target = api
        .authorize(&claims, &server_id, SessionKind::PowerStatus)
        .await?;
    let result = on_agent(&api, &target, async |reg: &Registry, auth| {
        bmc::power_request(
            reg,
            &target.agent_id,
            &target.endpoint_url,
            auth,
            PowerActionName::Status,
        )
        .await
    })
    .await;
    api.report(
        &claims,
        &server_id,
        "power_status",
        result.as_ref().map(|s| format!("state {s}")),
    );
    Ok(Json(PowerStatus {
        server_id,
        state: result?,
    }))
}

async fn power_control(
    State(api): State<Arc<UserApi>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<PowerControl>, JsonRejection>,
) -> Result<Json<PowerResult>, UserError> {
    // Who asks first, then what: an unauthenticated client learns nothing from the body.
    let claims = api.authenticate(&headers).await?;
    let Json(req) = body.map_err(ApiError::from)?;
    let target = api
        .authorize(&claims, &server_id, SessionKind::PowerControl)
        .await?;
    let action = req.action;
    let result = on_agent(&api, &target, async |reg: &Registry, auth| {
        bmc::power_request(
            reg,
            &target.agent_id,
            &target.endpoint_url,
            auth,
            action.agent_action(),
        )
        .await
    })
    .await;
    api.report(
        &claims,
        &server_id,
        action.event(),
        result.as_ref().map(|s| format!("state {s}")),
    );
    Ok(Json(PowerResult {
        server_id,
        action,
        state: result?,
    }))
}

async fn bmc_info(
    State(api): State<Arc<UserApi>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InfoAnswer>, UserError> {
    let claims = api.authenticate(&headers).await?;
    let target = api
        .authorize(&claims, &server_id, SessionKind::PowerStatus)
        .await?;
    let result = on_agent(&api, &target, async |reg: &Registry, auth| {
        bmc::bmc_info_request(reg, &target.agent_id, &target.endpoint_url, auth).await
    })
    .await;
    api.report(
        &claims,
        &server_id,
        "bmc_info",
        result
            .as_ref()
            .map(|i| format!("{} {}", i.protocol, i.model)),
    );
    Ok(Json(result?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&HeaderMap::new()), Err("missing"));
        assert_eq!(bearer(&h("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(&h("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(&h("Basic dXNlcjpwdw==")), Err("not_bearer"));
        assert_eq!(bearer(&h("Bearer")), Err("not_bearer"));
        assert_eq!(bearer(&h("Bearer ")), Err("not_bearer"));
        assert_eq!(bearer(&h("abc.def.ghi")), Err("not_bearer"));
        let mut m = HeaderMap::new();
        m.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_eq!(bearer(&m), Err("not_bearer"));
    }

    #[test]
    fn server_ids() {
        for ok in ["srv_01HXYZ", "a", &"x".repeat(MAX_SERVER_ID), "a.b:c-d"] {
            assert!(valid_server_id(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(MAX_SERVER_ID + 1),
            "a/b",
            "a b",
            "é",
            "..%2f",
        ] {
            assert!(!valid_server_id(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_map_to_http() {
        let r = |reason: &str| {
            let e = refusal(reason).0;
            (e.status.as_u16(), e.code)
        };
        assert_eq!(r("not_found"), (404, "not_found"));
        assert_eq!(
            refusal("not_found").0,
            no_such_server().0,
            "same body as a missing server"
        );
        assert_eq!(r("forbidden"), (403, "forbidden"));
        assert_eq!(r("session_ended"), (401, "session_ended"));
        assert_eq!(r("invalid_token"), (401, "invalid_token"));
        for c in [
            "wrong_gateway",
            "no_agent",
            "agent_not_adopted",
            "no_endpoint",
        ] {
            assert_eq!(r(c), (409, c));
        }
        assert_eq!(r("something new"), (502, "manager_error"));
    }

    #[test]
    fn unauthorized_carries_the_challenge() {
        let resp = unauthorized("invalid_token", "x").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"outband\", error=\"invalid_token\""
        );
        let resp = unauthorized("missing_token", "x").into_response();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"outband\""
        );
        let resp = no_such_server().into_response();
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
