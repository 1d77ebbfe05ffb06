//! The audit log (`GET /api/v1/audit`, global admins only).

use serde::{Deserialize, Serialize};

/// Query parameters of `GET /api/v1/audit`. Entries come newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries at or after this unix time in milliseconds.
    pub since_ms: Option<i64>,
    /// Only entries before this unix time in milliseconds.
    pub until_ms: Option<i64>,
    /// Only entries whose actor is this user id.
    pub actor_id: Option<String>,
    /// Only entries with this action (e.g. `login`).
    pub action: Option<String>,
    /// Only entries about this object (a server, user, session, gateway id...).
    pub target: Option<String>,
    /// Only entries with an id below this (paging: pass the last id seen).
    pub before_id: Option<i64>,
    /// At most this many entries (default 100, maximum 1000).
    pub limit: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Monotonic id.
    pub id: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// What happened: `login`, `refresh`, `refresh_reuse`, `logout`, `key_rotate`,
    /// `authz`, `user_create`, `session_authz`, `gateway_<action>` (reported by a
    /// gateway), ...
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// User id of the actor, when known.
    pub actor_id: Option<String>,
    /// Email the actor presented or owns, when known.
    pub actor_email: Option<String>,
    /// Source address of the request, when it came over HTTP.
    pub source_ip: Option<String>,
    /// Object acted upon (session id, key id, path, ...).
    pub target: Option<String>,
    /// Short machine-readable reason or detail.
    pub detail: Option<String>,
}

/// `GET /api/v1/audit` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
}
