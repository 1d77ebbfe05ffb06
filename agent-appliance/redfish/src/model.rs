//! The few Redfish resources the agent reads, parsed leniently (unknown fields are
//! ignored, as the schema evolves) but with every link checked before it is followed.

use serde::Deserialize;

use crate::error::{Error, Result};

/// At most this many systems are listed from one collection.
pub const MAX_MEMBERS: usize = 256;
/// A Redfish error message is cut to this many characters.
pub const MAX_MESSAGE: usize = 512;

/// `{"@odata.id": "/redfish/v1/…"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Link {
    #[serde(rename = "@odata.id")]
    pub(crate) id: String,
}

/// The service root, `/redfish/v1/`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceRoot {
    /// `RedfishVersion`, e.g. `1.16.0`.
    #[serde(rename = "RedfishVersion")]
    pub redfish_version: Option<String>,
    /// `UUID` of the service.
    #[serde(rename = "UUID")]
    pub uuid: Option<String>,
    #[serde(rename = "Systems")]
    pub(crate) systems: Option<Link>,
    #[serde(rename = "SessionService")]
    pub(crate) session_service: Option<Link>,
    #[serde(rename = "Links", default)]
    pub(crate) links: RootLinks,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootLinks {
    #[serde(rename = "Sessions")]
    pub(crate) sessions: Option<Link>,
}

impl ServiceRoot {
    /// Where sessions are created, if the service has a SessionService.
    pub(crate) fn sessions_path(&self) -> Option<String> {
        if let Some(l) = &self.links.sessions {
            return Some(l.id.clone());
        }
        self.session_service
            .as_ref()
            .map(|s| format!("{}/Sessions", s.id.trim_end_matches('/')))
    }
}

/// A resource collection (first page).
#[derive(Debug, Deserialize)]
pub(crate) struct Collection {
    #[serde(rename = "Members", default)]
    pub(crate) members: Vec<Link>,
    #[serde(rename = "Members@odata.count")]
    pub(crate) count: Option<u64>,
    #[serde(rename = "Members@odata.nextLink")]
    pub(crate) next_link: Option<String>,
}

/// A ComputerSystem as far as the agent cares.
#[derive(Debug, Clone, Deserialize)]
pub struct ComputerSystem {
    /// `@odata.id`.
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    /// `Id`.
    #[serde(rename = "Id")]
    pub id: Option<String>,
    /// `PowerState`.
    #[serde(rename = "PowerState")]
    pub power_state: Option<PowerState>,
    /// `Manufacturer`.
    #[serde(rename = "Manufacturer")]
    pub manufacturer: Option<String>,
    /// `Model`.
    #[serde(rename = "Model")]
    pub model: Option<String>,
    #[serde(rename = "Actions", default)]
    pub(crate) actions: Actions,
    #[serde(rename = "Boot")]
    pub(crate) boot: Option<Boot>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Actions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub(crate) reset: Option<ResetAction>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ResetAction {
    pub(crate) target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub(crate) allowable: Option<Vec<String>>,
    #[serde(rename = "@Redfish.ActionInfo")]
    pub(crate) action_info: Option<String>,
}

/// `ActionInfo`: the parameters of an action with their allowable values.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionInfo {
    #[serde(rename = "Parameters", default)]
    pub(crate) parameters: Vec<ActionParameter>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActionParameter {
    #[serde(rename = "Name")]
    pub(crate) name: String,
    #[serde(rename = "AllowableValues")]
    pub(crate) allowable: Option<Vec<String>>,
}

impl ActionInfo {
    pub(crate) fn reset_types(&self) -> Option<&[String]> {
        self.parameters
            .iter()
            .find(|p| p.name == "ResetType")
            .and_then(|p| p.allowable.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Boot {
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues")]
    pub(crate) allowable_targets: Option<Vec<String>>,
    #[serde(rename = "BootSourceOverrideTarget")]
    pub(crate) target: Option<String>,
    #[serde(rename = "BootSourceOverrideEnabled")]
    pub(crate) enabled: Option<String>,
}

/// `ComputerSystem.PowerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PowerState {
    /// On.
    On,
    /// Off.
    Off,
    /// Powering on.
    PoweringOn,
    /// Powering off.
    PoweringOff,
    /// Paused.
    Paused,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

impl PowerState {
    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
            PowerState::PoweringOn => "PoweringOn",
            PowerState::PoweringOff => "PoweringOff",
            PowerState::Paused => "Paused",
            PowerState::Unknown => "Unknown",
        }
    }
}

/// `ComputerSystem.Reset` types the agent offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetType {
    /// Power on.
    On,
    /// Immediate power off.
    ForceOff,
    /// Immediate restart.
    ForceRestart,
    /// Orderly OS shutdown.
    GracefulShutdown,
    /// Orderly OS restart.
    GracefulRestart,
    /// Power off, then on.
    PowerCycle,
    /// Non-maskable interrupt.
    Nmi,
}

impl ResetType {
    /// Every type, in a stable order.
    pub const ALL: [ResetType; 7] = [
        ResetType::On,
        ResetType::ForceOff,
        ResetType::ForceRestart,
        ResetType::GracefulShutdown,
        ResetType::GracefulRestart,
        ResetType::PowerCycle,
        ResetType::Nmi,
    ];

    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetType::On => "On",
            ResetType::ForceOff => "ForceOff",
            ResetType::ForceRestart => "ForceRestart",
            ResetType::GracefulShutdown => "GracefulShutdown",
            ResetType::GracefulRestart => "GracefulRestart",
            ResetType::PowerCycle => "PowerCycle",
            ResetType::Nmi => "Nmi",
        }
    }

    /// Parses the Redfish spelling (exact, as the schema's enum).
    pub fn from_redfish(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `Boot.BootSourceOverrideTarget` values the agent offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// No override.
    None,
    /// Network boot.
    Pxe,
    /// Local disk.
    Hdd,
    /// Firmware setup.
    BiosSetup,
}

impl BootTarget {
    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BootTarget::None => "None",
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
            BootTarget::BiosSetup => "BiosSetup",
        }
    }
}

/// `Boot.BootSourceOverrideEnabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOverride {
    /// For the next boot only.
    Once,
    /// Until cleared.
    Continuous,
}

impl BootOverride {
    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BootOverride::Once => "Once",
            BootOverride::Continuous => "Continuous",
        }
    }
}

/// Parses a JSON body into `T`; a bad body is a protocol error naming `what`.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("{what}: bad JSON: {e}")))
}

/// The member links of a collection, at most [`MAX_MEMBERS`].
pub(crate) fn members(c: &Collection) -> Result<Vec<String>> {
    if let Some(n) = c.count
        && n > MAX_MEMBERS as u64
    {
        return Err(Error::Protocol(format!(
            "collection claims {n} members, more than {MAX_MEMBERS}"
        )));
    }
    if c.members.len() > MAX_MEMBERS {
        return Err(Error::Protocol(format!(
            "collection lists {} members, more than {MAX_MEMBERS}",
            c.members.len()
        )));
    }
    Ok(c.members.iter().map(|l| l.id.clone()).collect())
}

/// The Redfish error message of an error body: the `Message`s of
/// `error.@Message.ExtendedInfo`, else `error.message`; bounded to [`MAX_MESSAGE`]
/// characters. `None` for a body that is not a Redfish error.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        #[serde(rename = "@Message.ExtendedInfo", default)]
        extended: Vec<Info>,
    }
    #[derive(Deserialize)]
    struct Info {
        #[serde(rename = "Message")]
        message: Option<String>,
    }
    let err = serde_json::from_slice::<Body>(body).ok()?.error;
    let mut parts: Vec<String> = err.extended.into_iter().filter_map(|i| i.message).collect();
    if parts.is_empty() {
        parts.extend(err.message);
    }
    if parts.is_empty() {
        return None;
    }
    let joined = parts.join("; ");
    let bounded: String = joined
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE)
        .collect();
    Some(bounded)
}

#[cfg(test)]
mod tests;
