//! Agent adoption (`/api/v1/agents/*`) and join tokens (`/api/v1/join-tokens`,
//! `/api/v1/gateway/join`).
//!
//! An agent reported by a gateway is `pending`. A tenant admin reads the pairing code
//! off the appliance, looks it up, and adopts the agent by pairing code AND full agent
//! id (the code has only 40 bits: the id confirms it is the right agent). Or a gateway
//! presents a join token on the agent's behalf.

use serde::{Deserialize, Serialize};

/// Adoption state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Reported, not decided.
    Pending,
    /// In a tenant.
    Adopted,
    /// Refused by an admin.
    Rejected,
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    /// Agent id (derived from its key).
    pub id: String,
    /// Pairing code shown on the appliance.
    pub pairing_code: String,
    /// The gateway that last reported it.
    pub gateway_id: Option<String>,
    /// Adoption state.
    pub status: AgentStatus,
    /// Tenant, once adopted.
    pub tenant_id: Option<String>,
    /// BMC endpoints the agent reported (pending agents, from the last heartbeat).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Unix seconds.
    pub first_seen_at: i64,
    /// Unix seconds of the adoption or rejection.
    pub decided_at: Option<i64>,
}

/// Longest [`AgentEntry::site`] label (characters).
pub const MAX_SITE_LEN: usize = 64;

/// An agent as the manager lists it: an [`Agent`] (clients that know only that ignore
/// the rest) and the site it was adopted into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentEntry {
    /// The agent.
    #[serde(flatten)]
    pub agent: Agent,
    /// Site label within the tenant (rack, room, data centre), once adopted with one:
    /// 1-64 printable characters, no surrounding spaces.
    #[serde(default)]
    pub site: Option<String>,
}

/// `GET /api/v1/agents` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct AgentListQuery {
    /// Only agents adopted into this site.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(max_length = 64))]
    pub site: Option<String>,
}

/// `POST /api/v1/agents/lookup`: pending agents showing this pairing code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentLookupRequest {
    /// Pairing code as shown on the appliance.
    #[cfg_attr(feature = "openapi", schema(max_length = 32))]
    pub pairing_code: String,
}

/// `POST /api/v1/agents/adopt` and `/reject`: both the code and the full id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentDecisionRequest {
    /// Pairing code as shown on the appliance.
    #[cfg_attr(feature = "openapi", schema(max_length = 32))]
    pub pairing_code: String,
    /// The full agent id (from the lookup, checked against the appliance).
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub agent_id: String,
    /// Adopt into this tenant (global admins must give it; tenant admins: their own).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Adopt into this site of the tenant (adopt only; see [`AgentEntry::site`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub site: Option<String>,
}

/// A list of agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentList {
    /// Agents.
    pub agents: Vec<AgentEntry>,
}

/// `POST /api/v1/join-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// Tenant the joining agents go to (tenant admins: omit for their own).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Usable once (default); false: any number of agents until it expires.
    #[serde(default)]
    pub one_time: Option<bool>,
    /// Site the joining agents are adopted into (see [`AgentEntry::site`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub site: Option<String>,
}

/// `POST /api/v1/join-tokens` response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinToken {
    /// Token id (for audit).
    pub id: String,
    /// The secret (`objt_...`), shown only here; stored hashed.
    pub token: String,
    /// Tenant.
    pub tenant_id: String,
    /// Usable once.
    pub one_time: bool,
    /// Unix seconds.
    pub expires_at: i64,
    /// Site the joining agents are adopted into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("token", &"***")
            .field("tenant_id", &self.tenant_id)
            .field("one_time", &self.one_time)
            .field("expires_at", &self.expires_at)
            .field("site", &self.site)
            .finish()
    }
}

/// `POST /api/v1/gateway/join`: a gateway presents a join token for an agent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The join token the agent was configured with.
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub join_token: String,
    /// Agent id.
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub agent_id: String,
    /// Its pairing code.
    #[cfg_attr(feature = "openapi", schema(max_length = 32))]
    pub pairing_code: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("join_token", &"***")
            .field("agent_id", &self.agent_id)
            .field("pairing_code", &self.pairing_code)
            .finish()
    }
}
