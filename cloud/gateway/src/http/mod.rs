//! The operator HTTP API.
//!
//! Security note: this API has NO authentication yet. It is an internal/operator
//! endpoint and must only listen on loopback (the default); authentication arrives
//! with the manager integration.
//!
//! - `GET /` (operator page)
//! - `GET /health`
//! - `GET /metrics` (Prometheus text)
//! - `GET /api/v1/manager` (the manager link's state; never the token)
//! - `GET /api/v1/agents`, `GET /api/v1/agents/{id}`
//! - `GET /api/v1/relays`, `POST /api/v1/relays`, `DELETE /api/v1/relays/{id}`
//! - `POST /api/v1/agents/{id}/power`, `.../bmc-info`, `.../boot-device` (see [`bmc`])
//!
//! The user API (bearer tokens from the manager) is a separate router on its own
//! listener: [`user`], served by [`listen`].

pub mod bmc;
mod error;
pub mod listen;
pub mod user;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub use error::ApiError;

use crate::manager::ManagerLink;
use crate::metrics::Metrics;
use crate::registry::{AgentView, Registry};
use crate::relay::{RelayInfo, RelaySpec, Relays};
use outband_proto::pb::StreamKind;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most relays open at once (each holds a listening socket).
pub const MAX_RELAYS: usize = 256;
/// Longest relay target accepted.
pub const MAX_TARGET_LEN: usize = 1024;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Connected agents.
    pub registry: Arc<Registry>,
    /// Relays.
    pub relays: Arc<Relays>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The manager link; `None` when standalone.
    pub manager: Option<Arc<ManagerLink>>,
    /// The user API, when `--user-listen` is set (its counters go into `/metrics`).
    pub user: Option<Arc<user::UserApi>>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/manager", get(manager_status))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{id}", get(get_agent))
        .route("/api/v1/agents/{id}/power", post(bmc::power))
        .route("/api/v1/agents/{id}/bmc-info", post(bmc::bmc_info))
        .route("/api/v1/agents/{id}/boot-device", post(bmc::boot_device))
        .route("/api/v1/relays", get(list_relays).post(create_relay))
        .route("/api/v1/relays/{id}", delete(delete_relay))
        .route("/api/v1/relays/{id}/break", post(relay_break))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .layer(axum::middleware::from_fn(loopback_host_only))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Refuses requests whose `Host` is not a loopback name. The API has no
/// authentication yet and listens on loopback; without this check a web page could
/// rebind its own DNS name to 127.0.0.1 and drive the API from the operator's browser
/// (DNS rebinding).
async fn loopback_host_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // A browser always sends Host; a request without one is not a rebinding attack.
    let Some(host) = req.headers().get(header::HOST) else {
        return next.run(req).await;
    };
    let host = host.to_str().unwrap_or("");
    if is_loopback_host(host) {
        next.run(req).await
    } else {
        ApiError::refused(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            format!("Host {host:?} is not a loopback name; use localhost or 127.0.0.1"),
        )
        .into_response()
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, _)) => inside,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The operator page: agents and relays, refreshed from the JSON API.
async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("index.html"),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /api/v1/manager`: `{"mode":"standalone"}`, or `{"mode":"managed", ...}` with
/// [`crate::manager::ManagerStatus`].
async fn manager_status(State(s): State<AppState>) -> Json<serde_json::Value> {
    match &s.manager {
        None => Json(json!({ "mode": "standalone" })),
        Some(link) => {
            let mut v = serde_json::to_value(link.status()).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("mode".into(), "managed".into());
            }
            Json(v)
        }
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut gauges = s.registry.gauges();
    gauges.relays = s.relays.len() as u64;
    let mut text = s.metrics.render(gauges);
    if let Some(u) = &s.user {
        u.metrics.render(&mut text);
        u.jwks.render(&mut text);
        u.events.render(&mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn list_agents(State(s): State<AppState>) -> Json<Vec<AgentView>> {
    Json(s.registry.list())
}

async fn get_agent(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    s.registry
        .get(&id)
        .map(Json)
        .ok_or_else(|| agent_not_found(&id))
}

pub(crate) fn agent_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "agent_not_found",
        format!("agent {id:?} is not connected to this gateway"),
    )
}

async fn list_relays(State(s): State<AppState>) -> Json<Vec<RelayInfo>> {
    Json(s.relays.list())
}

/// Body of `POST /api/v1/relays`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRelay {
    /// The agent to relay through.
    pub agent_id: String,
    /// The endpoint the agent connects to, e.g. `vnc://127.0.0.1:5901`.
    pub target: String,
    /// `tcp` (default: raw relay), `vnc` (the agent logs in to the BMC's VNC server
    /// with `auth` and offers the client security type None) or `serial` (IPMI SOL or
    /// WebSocket serial).
    #[serde(default)]
    pub kind: RelayKind,
    /// BMC credentials for `vnc` and `serial`.
    #[serde(default)]
    pub auth: Option<bmc::AuthBody>,
}

/// Relay stream kinds by API name.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayKind {
    /// Raw TCP.
    #[default]
    Tcp,
    /// VNC with the BMC login done by the agent.
    Vnc,
    /// Serial console.
    Serial,
}

async fn create_relay(
    State(s): State<AppState>,
    body: Result<Json<CreateRelay>, JsonRejection>,
) -> Result<(StatusCode, Json<RelayInfo>), ApiError> {
    let Json(req) = body?;
    if req.target.is_empty() || req.target.len() > MAX_TARGET_LEN {
        return Err(ApiError::bad_request(format!(
            "target must be 1..={MAX_TARGET_LEN} bytes"
        )));
    }
    if s.registry.get(&req.agent_id).is_none() {
        return Err(agent_not_found(&req.agent_id));
    }
    if s.relays.len() >= MAX_RELAYS {
        return Err(ApiError::refused(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_relays",
            format!("at most {MAX_RELAYS} relays may be open; delete one first"),
        ));
    }
    let kind = match req.kind {
        RelayKind::Tcp => StreamKind::Tcp,
        RelayKind::Vnc => StreamKind::Vnc,
        RelayKind::Serial => StreamKind::Serial,
    };
    let auth = req.auth.map(bmc::AuthBody::into_pb).transpose()?;
    let info = s
        .relays
        .create(RelaySpec {
            agent_id: req.agent_id,
            kind,
            target: req.target,
            auth,
        })
        .await
        .map_err(|e| ApiError::internal(format!("binding relay listener: {e}")))?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /api/v1/relays/{id}/break`: a serial break on the relay's open consoles.
async fn relay_break(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::relay::BreakError;
    let relay_id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("relay id {id:?} is not a number")))?;
    match s.relays.send_break(relay_id).await {
        Ok(n) => Ok(Json(json!({ "streams": n }))),
        Err(e @ BreakError::NoRelay) => Err(ApiError::not_found("relay_not_found", e.to_string())),
        Err(e @ (BreakError::NotSerial | BreakError::NoStreams)) => Err(ApiError::refused(
            StatusCode::CONFLICT,
            "no_serial_console",
            e.to_string(),
        )),
        Err(e @ BreakError::Agent(_)) => Err(ApiError::refused(
            StatusCode::BAD_GATEWAY,
            "agent_error",
            e.to_string(),
        )),
    }
}

async fn delete_relay(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let relay_id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("relay id {id:?} is not a number")))?;
    if s.relays.remove(relay_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "relay_not_found",
            format!("no relay {relay_id}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "[::1",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
