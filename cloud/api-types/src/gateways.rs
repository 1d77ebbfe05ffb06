//! Gateways: administration (`/api/v1/gateways`, global admins) and the calls a
//! registered gateway makes to the manager (`/api/v1/gateway/*`, gateway token).
//!
//! The gateway links only this crate. Flow: an admin creates a gateway and hands its
//! one-time registration credential to the gateway's operator; the gateway calls
//! [`RegisterRequest`] once and keeps the returned gateway token; then it sends
//! [`HeartbeatRequest`]s (with its connected agents), asks [`SessionAuthzRequest`]
//! before opening a BMC session for a user, and polls the revocation feed
//! ([`RevocationQuery`]) to end sessions of logged-out users.

use serde::{Deserialize, Serialize};

use crate::servers::BmcCredentials;

/// `POST /api/v1/gateways`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGatewayRequest {
    /// Display name, unique (1-100 bytes).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// Base URL of the gateway's operator API, shown to users (`https://...`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub url: Option<String>,
}

/// A gateway as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Gateway {
    /// Opaque id (`gw_...`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Operator API base URL.
    pub url: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When the gateway registered (unix seconds), if it has.
    pub registered_at: Option<i64>,
    /// Last heartbeat (unix seconds).
    pub last_seen_at: Option<i64>,
    /// The gateway's version from its registration.
    pub version: Option<String>,
}

/// `POST /api/v1/gateways` and `POST /api/v1/gateways/{id}/credential` response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayCredential {
    /// The gateway.
    pub gateway: Gateway,
    /// One-time registration credential (`obgr_...`), shown only here; stored hashed.
    pub registration_credential: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

impl std::fmt::Debug for GatewayCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCredential")
            .field("gateway", &self.gateway)
            .field("registration_credential", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `GET /api/v1/gateways`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayList {
    /// Gateways by name.
    pub gateways: Vec<Gateway>,
}

/// `POST /api/v1/gateway/register` (no bearer: the credential authenticates).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The registration credential from the admin.
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub registration_credential: String,
    /// The gateway's version.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub version: Option<String>,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("registration_credential", &"***")
            .field("version", &self.version)
            .finish()
    }
}

/// `POST /api/v1/gateway/register` response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// This gateway's id.
    pub gateway_id: String,
    /// Bearer token (`obg_...`) for `/api/v1/gateway/*`; keep it secret. Registering
    /// again with a new credential replaces it.
    pub gateway_token: String,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("gateway_id", &self.gateway_id)
            .field("gateway_token", &"***")
            .finish()
    }
}

/// An agent connected to the reporting gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportedAgent {
    /// Agent id (derived from its key).
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub agent_id: String,
    /// Pairing code shown on the appliance.
    #[cfg_attr(feature = "openapi", schema(max_length = 32))]
    pub pairing_code: String,
    /// BMC endpoints the agent sees (URLs).
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// `POST /api/v1/gateway/heartbeat`: liveness plus the agents connected now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Connected agents (at most 1024).
    #[serde(default)]
    pub agents: Vec<ReportedAgent>,
}

/// `POST /api/v1/gateway/heartbeat` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Manager time, unix seconds (a start for the revocation feed).
    pub now: i64,
}

/// What a user wants to do on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Read power state.
    PowerStatus,
    /// Power on/off/cycle/reset.
    PowerControl,
    /// Serial console.
    Serial,
    /// Graphical console (view-only for viewers: see [`SessionTarget::view_only`]).
    Graphical,
}

/// `POST /api/v1/gateway/session-authz`: may this user open this session? Identify the
/// user by `access_token` (verified by the manager), or by `user_id` + `session_id`
/// (after the gateway verified the token itself against the JWKS).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionAuthzRequest {
    /// The user's access token.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 8192))]
    pub access_token: Option<String>,
    /// The user id (`sub`), with `session_id`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub user_id: Option<String>,
    /// The token's `sid`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub session_id: Option<String>,
    /// The server.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub server_id: String,
    /// What the session does.
    pub kind: SessionKind,
}

impl std::fmt::Debug for SessionAuthzRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuthzRequest")
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("server_id", &self.server_id)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Where and how to open an allowed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionTarget {
    /// The agent that reaches the BMC.
    pub agent_id: String,
    /// The BMC endpoint for this kind of session.
    pub endpoint_url: String,
    /// BMC credentials, decrypted for this session only (`***` in Debug).
    pub credentials: Option<BmcCredentials>,
    /// Expected SHA-256 of the BMC's certificate (lower-case hex).
    pub cert_sha256: Option<String>,
    /// Graphical sessions only: the user may watch but not type or click.
    pub view_only: bool,
}

/// `POST /api/v1/gateway/session-authz` response (200 for both answers; each is
/// audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionAuthzResponse {
    /// Allowed.
    pub allowed: bool,
    /// Why not: `invalid_token`, `session_ended`, `not_found` (no such server or not
    /// the user's tenant), `forbidden` (role), `wrong_gateway`, `no_agent`,
    /// `agent_not_adopted` (the agent is not adopted into the server's tenant),
    /// `no_endpoint`.
    pub reason: Option<String>,
    /// The user, when identified.
    pub user_id: Option<String>,
    /// The login session; end the BMC session when the revocation feed lists it.
    pub session_id: Option<String>,
    /// Set when allowed.
    pub target: Option<SessionTarget>,
}

/// `GET /api/v1/gateway/revocations` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct RevocationQuery {
    /// Sessions ended at or after this unix time (seconds). Pass the previous
    /// response's `next_since`.
    pub since: i64,
    /// Strict cursor: with it, only sessions after (`since`, `after`) in (ended at,
    /// session id) order. Pass the previous response's `next_after` when it has one.
    /// Without it the whole second `since` is listed again (up to 4000 sessions) before
    /// later ones, so a client that knows only `since` still moves on.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(max_length = 128))]
    pub after: Option<String>,
}

/// A login session that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedSession {
    /// Session id (the access token's `sid`).
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// Unix seconds.
    pub revoked_at: i64,
}

/// `GET /api/v1/gateway/revocations` response, oldest first (at most 1000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationList {
    /// Ended sessions.
    pub sessions: Vec<RevokedSession>,
    /// `since` for the next poll (entries of that second may repeat: dedupe by id).
    pub next_since: i64,
}

/// `GET /api/v1/gateway/revocations` response as the manager sends it: a
/// [`RevocationList`] (clients that know only that ignore the rest) plus the strict
/// cursor for the next `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationPage {
    /// The sessions and `next_since`.
    #[serde(flatten)]
    pub list: RevocationList,
    /// `after` for the next poll, with `since` = `next_since`. Absent when the cursor
    /// is at the start of `next_since`'s second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Most events in one [`GatewayEventsRequest`]; more is `400 bad_request`.
pub const MAX_GATEWAY_EVENTS: usize = 100;

/// The actions a gateway reports in a [`GatewayEvent`] (audited as `gateway_<action>`).
pub const GATEWAY_EVENT_ACTIONS: &[&str] = &[
    "power_status",
    "power_on",
    "power_off",
    "power_cycle",
    "power_reset",
    "power_soft",
    "boot_device",
    "bmc_info",
    "serial_open",
    "serial_close",
    "graphical_open",
    "graphical_close",
];

/// `POST /api/v1/gateway/events` (gateway token): what the gateway did for users, for
/// the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GatewayEventsRequest {
    /// At most [`MAX_GATEWAY_EVENTS`] (100) events, else 400.
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub events: Vec<GatewayEvent>,
}

/// One thing a gateway did for a user on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GatewayEvent {
    /// One of `power_status`, `power_on`, `power_off`, `power_cycle`, `power_reset`,
    /// `power_soft`, `boot_device`, `bmc_info`, `serial_open`, `serial_close`,
    /// `graphical_open`, `graphical_close` ([`GATEWAY_EVENT_ACTIONS`]).
    #[cfg_attr(feature = "openapi", schema(max_length = 32))]
    pub action: String,
    /// `success` or `failure`.
    #[cfg_attr(feature = "openapi", schema(max_length = 16))]
    pub outcome: String,
    /// The user the gateway acted for.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub user_id: String,
    /// The user's login session (the access token's `sid`), if known.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub session_id: Option<String>,
    /// The server.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub server_id: String,
    /// When it happened, unix seconds, gateway clock.
    pub at: i64,
    /// More about it, e.g. an error code.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub detail: Option<String>,
}

/// `POST /api/v1/gateway/events` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GatewayEventsResponse {
    /// Events written to the audit log as reported; the others were refused (a
    /// server not bound to this gateway, a bad field) and audited as denials.
    pub accepted: u32,
}
