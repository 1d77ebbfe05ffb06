//! Inventory: servers and their BMC endpoints (`/api/v1/servers/*`).
//!
//! BMC credentials are write-only: requests may carry them, no response ever does
//! (responses say `has_credentials`).

use serde::{Deserialize, Serialize};

/// BMC endpoints of a server, by role. See the manager's README for the schemes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BmcEndpoints {
    /// Power: `ipmi://host[:port]` (IPMI over LAN) or `https://host[:port][/path]`
    /// (Redfish).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub power: Option<String>,
    /// Serial console: `ipmi://host[:port]` (SOL) or `wss://host[:port][/path]`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub serial: Option<String>,
    /// Graphical console: `vnc://host[:port]`, `ws://...` or `wss://...`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub graphical: Option<String>,
}

/// BMC endpoints as responses show them (like [`BmcEndpoints`], but tolerating
/// fields a newer manager may add).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerEndpoints {
    /// Power endpoint URL.
    pub power: Option<String>,
    /// Serial console endpoint URL.
    pub serial: Option<String>,
    /// Graphical console endpoint URL.
    pub graphical: Option<String>,
}

/// BMC credentials (write-only; `***` in Debug output).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BmcCredentials {
    /// BMC user name (at most 256 bytes).
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub username: String,
    /// BMC password (at most 256 bytes).
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub password: String,
}

impl std::fmt::Debug for BmcCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BmcCredentials { username: ***, password: *** }")
    }
}

/// `POST /api/v1/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateServerRequest {
    /// Display name, unique in the tenant (1-100 bytes).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// Owning tenant; tenant admins may omit it (their own), global admins must give it.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The gateway that serves the server.
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// The agent (behind that gateway) that reaches the BMC.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// BMC endpoints.
    #[serde(default)]
    pub endpoints: BmcEndpoints,
    /// SHA-256 fingerprint of the BMC's TLS certificate (64 hex digits, `:` optional).
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// BMC credentials (write-only).
    #[serde(default)]
    pub credentials: Option<BmcCredentials>,
}

/// `PUT /api/v1/servers/{server_id}`: replaces every field but the tenant.
/// Credentials: absent keeps the stored ones, given replaces them,
/// `clear_credentials: true` deletes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateServerRequest {
    /// Display name, unique in the tenant.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// The gateway that serves the server.
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// The agent that reaches the BMC.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// BMC endpoints.
    #[serde(default)]
    pub endpoints: BmcEndpoints,
    /// SHA-256 fingerprint of the BMC's TLS certificate.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// New BMC credentials (write-only); absent: keep.
    #[serde(default)]
    pub credentials: Option<BmcCredentials>,
    /// Delete the stored credentials.
    #[serde(default)]
    pub clear_credentials: bool,
}

/// A server as the API shows it (never its credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Server {
    /// Opaque id (`srv_...`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The gateway that serves it.
    pub gateway_id: Option<String>,
    /// The agent that reaches its BMC.
    pub agent_id: Option<String>,
    /// BMC endpoints (normalized: explicit port, lower-case scheme and host).
    pub endpoints: ServerEndpoints,
    /// SHA-256 fingerprint of the BMC's certificate (lower-case hex).
    pub cert_sha256: Option<String>,
    /// Credentials are stored (they are never returned).
    pub has_credentials: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// `GET /api/v1/servers` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct ServerQuery {
    /// Only servers with an id above this (paging: pass the last id seen).
    pub after: Option<String>,
    /// At most this many (default 100, maximum 1000).
    pub limit: Option<i64>,
}

/// `GET /api/v1/servers`: the caller's tenant's servers (global admins: all), by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerList {
    /// Servers ordered by id.
    pub servers: Vec<Server>,
}
