//! BMC operations carried out by an agent: power status and actions, BMC identity, boot
//! device. Each call is one unary request over the agent's connection; the agent talks
//! IPMI or Redfish to the BMC and answers with a result or a stable error code.
//!
//! - `POST /api/v1/agents/{id}/power` `{endpoint, auth, action}` → `{state}`
//! - `POST /api/v1/agents/{id}/bmc-info` `{endpoint, auth}` → identity
//! - `POST /api/v1/agents/{id}/boot-device` `{endpoint, auth, device?, persistent}`
//!
//! `auth` is `{username, password, cert_sha256?, ipmi_cipher_suites?}`. It is passed to
//! the agent with the request and kept nowhere.

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outband_proto::pb::{self, reply, request};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, agent_not_found};
use crate::registry::Registry;

/// How long a BMC request may take end to end. IPMI retransmits and Redfish TLS
/// handshakes can take seconds; the agent bounds each step itself, this is the backstop.
pub const BMC_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

const MAX_USERNAME: usize = 64;
const MAX_PASSWORD: usize = 256;
const MAX_SUITES: usize = 8;
const MAX_ENDPOINT: usize = 1024;

/// BMC credentials and trust as the API takes them.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthBody {
    /// BMC user name.
    pub username: String,
    /// BMC password.
    #[serde(default)]
    pub password: String,
    /// SHA-256 of the BMC's TLS certificate, hex (colons allowed).
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// IPMI cipher suites to try, in order.
    #[serde(default)]
    pub ipmi_cipher_suites: Vec<u32>,
    /// Allow IPMI 1.5 (no encryption) with a BMC that does not speak IPMI 2.0.
    #[serde(default)]
    pub allow_ipmi15: bool,
}

impl fmt::Debug for AuthBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthBody")
            .field("username", &self.username)
            .field("password", &"***")
            .field("cert_sha256", &self.cert_sha256)
            .field("ipmi_cipher_suites", &self.ipmi_cipher_suites)
            .field("allow_ipmi15", &self.allow_ipmi15)
            .finish()
    }
}

impl AuthBody {
    /// Validates and converts to the wire form.
    pub fn into_pb(self) -> Result<pb::BmcAuth, ApiError> {
        if self.username.len() > MAX_USERNAME {
            return Err(ApiError::bad_request(format!(
                "auth.username is longer than {MAX_USERNAME} bytes"
            )));
        }
        if self.password.len() > MAX_PASSWORD {
            return Err(ApiError::bad_request(format!(
                "auth.password is longer than {MAX_PASSWORD} bytes"
            )));
        }
        if self.ipmi_cipher_suites.len() > MAX_SUITES {
            return Err(ApiError::bad_request(format!(
                "auth.ipmi_cipher_suites lists more than {MAX_SUITES} suites"
            )));
        }
        if let Some(s) = self.ipmi_cipher_suites.iter().find(|&&s| s > 255) {
            return Err(ApiError::bad_request(format!(
                "auth.ipmi_cipher_suites: {s} is not a cipher suite id (0..=255)"
            )));
        }
        let cert_sha256 = match &self.cert_sha256 {
            None => Vec::new(),
            Some(hex) => parse_fingerprint(hex).ok_or_else(|| {
                ApiError::bad_request(
                    "auth.cert_sha256 must be 64 hex digits (SHA-256), colons allowed",
                )
            })?,
        };
        Ok(pb::BmcAuth {
            username: self.username.clone(),
            password: self.password.clone(),
            cert_sha256: cert_sha256.into(),
            ipmi_cipher_suites: self.ipmi_cipher_suites.clone(),
            allow_ipmi15: self.allow_ipmi15,
        })
    }
}

/// `ab:cd:...` or `abcd...` → 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<Vec<u8>> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn check_endpoint(endpoint: &str) -> Result<(), ApiError> {
    if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT {
        return Err(ApiError::bad_request(format!(
            "endpoint must be 1..={MAX_ENDPOINT} bytes"
        )));
    }
    Ok(())
}

/// Body of `POST /api/v1/agents/{id}/power`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerBody {
    /// `ipmi://host[:port]` or `https://host[:port]`.
    pub endpoint: String,
    /// BMC credentials.
    pub auth: AuthBody,
    /// What to do.
    pub action: PowerActionName,
}

/// Power actions by API name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PowerActionName {
    /// Read the state only.
    Status,
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Power cycle.
    Cycle,
    /// Hard reset.
    Reset,
    /// Soft shutdown (ACPI).
    SoftOff,
}

impl From<PowerActionName> for pb::PowerAction {
    fn from(a: PowerActionName) -> Self {
        match a {
            PowerActionName::Status => pb::PowerAction::Status,
            PowerActionName::On => pb::PowerAction::On,
            PowerActionName::Off => pb::PowerAction::Off,
            PowerActionName::Cycle => pb::PowerAction::Cycle,
            PowerActionName::Reset => pb::PowerAction::Reset,
            PowerActionName::SoftOff => pb::PowerAction::SoftOff,
        }
    }
}

/// Answer of the power call.
#[derive(Debug, Serialize)]
pub struct PowerAnswer {
    /// `on`, `off` or `unknown`: what the BMC reported after the action was accepted.
    pub state: &'static str,
}

fn power_state_name(s: pb::PowerState) -> &'static str {
    match s {
        pb::PowerState::On => "on",
        pb::PowerState::Off => "off",
        pb::PowerState::Unknown => "unknown",
    }
}

pub(super) async fn power(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PowerBody>, JsonRejection>,
) -> Result<Json<PowerAnswer>, ApiError> {
    let Json(req) = body?;
    let auth = req.auth.into_pb()?;
    let state = power_request(&s.registry, &id, &req.endpoint, auth, req.action).await?;
    Ok(Json(PowerAnswer { state }))
}

/// Has agent `agent_id` carry out `action` on the BMC at `endpoint`; the power state
/// read back after it (`on`, `off`, `unknown`). Shared by the operator and user APIs.
pub async fn power_request(
    registry: &Registry,
    agent_id: &str,
    endpoint: &str,
    auth: pb::BmcAuth,
    action: PowerActionName,
) -> Result<&'static str, ApiError> {
    check_endpoint(endpoint)?;
    let body = request::Body::Power(pb::PowerRequest {
        endpoint: endpoint.to_owned(),
        auth: Some(Box::new(auth)),
        action: pb::PowerAction::from(action) as i32,
    });
    match call(registry, agent_id, body).await? {
        reply::Body::Power(p) => {
            let state = pb::PowerState::try_from(p.state).unwrap_or(pb::PowerState::Unknown);
            tracing::info!(agent_id = %agent_id, endpoint = %endpoint, action = ?action, state = power_state_name(state), "power request done");
            Ok(power_state_name(state))
        }
        other => Err(unexpected(&other)),
    }
}

/// Body of `POST /api/v1/agents/{id}/bmc-info`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoBody {
    /// `ipmi://host[:port]` or `https://host[:port]`.
    pub endpoint: String,
    /// BMC credentials.
    pub auth: AuthBody,
}

/// Answer of the BMC identity call.
#[derive(Debug, Serialize)]
pub struct InfoAnswer {
    /// `ipmi` or `redfish`.
    pub protocol: String,
    /// Manufacturer name or IANA id.
    pub manufacturer: String,
    /// Model or product id.
    pub model: String,
    /// Firmware version.
    pub firmware_version: String,
    /// IPMI cipher suite the session used (0 for Redfish).
    pub ipmi_cipher_suite: u32,
}

pub(super) async fn bmc_info(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<InfoBody>, JsonRejection>,
) -> Result<Json<InfoAnswer>, ApiError> {
    let Json(req) = body?;
    let auth = req.auth.into_pb()?;
    Ok(Json(
        bmc_info_request(&s.registry, &id, &req.endpoint, auth).await?,
    ))
}

/// Has agent `agent_id` read the identity of the BMC at `endpoint`. Shared by the
/// operator and user APIs.
pub async fn bmc_info_request(
    registry: &Registry,
    agent_id: &str,
    endpoint: &str,
    auth: pb::BmcAuth,
) -> Result<InfoAnswer, ApiError> {
    check_endpoint(endpoint)?;
    let body = request::Body::BmcInfo(pb::BmcInfoRequest {
        endpoint: endpoint.to_owned(),
        auth: Some(Box::new(auth)),
    });
    match call(registry, agent_id, body).await? {
        reply::Body::BmcInfo(i) => Ok(InfoAnswer {
            protocol: i.protocol,
            manufacturer: i.manufacturer,
            model: i.model,
            firmware_version: i.firmware_version,
            ipmi_cipher_suite: i.ipmi_cipher_suite,
        }),
        other => Err(unexpected(&other)),
    }
}

/// Boot devices by API name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BootDeviceName {
    /// No override.
    None,
    /// Network boot.
    Pxe,
    /// Local disk.
    Disk,
    /// BIOS/UEFI setup.
    BiosSetup,
    /// CD/DVD.
    Cdrom,
    /// Reported by a BMC that says something else.
    Unknown,
}

fn boot_to_pb(d: BootDeviceName) -> pb::BootDevice {
    match d {
        BootDeviceName::None => pb::BootDevice::None,
        BootDeviceName::Pxe => pb::BootDevice::Pxe,
        BootDeviceName::Disk => pb::BootDevice::Disk,
        BootDeviceName::BiosSetup => pb::BootDevice::BiosSetup,
        BootDeviceName::Cdrom => pb::BootDevice::Cdrom,
        BootDeviceName::Unknown => pb::BootDevice::Unspecified,
    }
}

fn boot_from_pb(d: pb::BootDevice) -> BootDeviceName {
    match d {
        pb::BootDevice::None => BootDeviceName::None,
        pb::BootDevice::Pxe => BootDeviceName::Pxe,
        pb::BootDevice::Disk => BootDeviceName::Disk,
        pb::BootDevice::BiosSetup => BootDeviceName::BiosSetup,
        pb::BootDevice::Cdrom => BootDeviceName::Cdrom,
        pb::BootDevice::Unspecified => BootDeviceName::Unknown,
    }
}

/// Body of `POST /api/v1/agents/{id}/boot-device`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootBody {
    /// `ipmi://host[:port]` or `https://host[:port]`.
    pub endpoint: String,
    /// BMC credentials.
    pub auth: AuthBody,
    /// The device to set; absent to only read the current override.
    #[serde(default)]
    pub device: Option<BootDeviceName>,
    /// Every boot (true) or the next boot only (false).
    #[serde(default)]
    pub persistent: bool,
}

/// Answer of the boot device call: the override the BMC reports.
#[derive(Debug, Serialize)]
pub struct BootAnswer {
    /// The boot device override.
    pub device: BootDeviceName,
    /// Whether it applies to every boot.
    pub persistent: bool,
}

pub(super) async fn boot_device(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<BootBody>, JsonRejection>,
) -> Result<Json<BootAnswer>, ApiError> {
    let Json(req) = body?;
    check_endpoint(&req.endpoint)?;
    if req.device == Some(BootDeviceName::Unknown) {
        return Err(ApiError::bad_request(
            "device: \"unknown\" can be reported but not set",
        ));
    }
    let body = request::Body::BootDevice(pb::BootDeviceRequest {
        endpoint: req.endpoint,
        auth: Some(Box::new(req.auth.into_pb()?)),
        device: req.device.map_or(pb::BootDevice::Unspecified, boot_to_pb) as i32,
        persistent: req.persistent,
    });
    match call(&s.registry, &id, body).await? {
        reply::Body::BootDevice(b) => Ok(Json(BootAnswer {
            device: boot_from_pb(
                pb::BootDevice::try_from(b.device).unwrap_or(pb::BootDevice::Unspecified),
            ),
            persistent: b.persistent,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Sends `body` to the agent and maps its error replies to HTTP.
async fn call(
    registry: &Registry,
    agent_id: &str,
    body: request::Body,
) -> Result<reply::Body, ApiError> {
    let tunnel = registry
        .tunnel(agent_id)
        .ok_or_else(|| agent_not_found(agent_id))?;
    let reply = match tokio::time::timeout(BMC_REQUEST_TIMEOUT, tunnel.request(body)).await {
        Err(_) => {
            return Err(ApiError::refused(
                StatusCode::GATEWAY_TIMEOUT,
                "agent_timeout",
                format!(
                    "agent {agent_id} did not answer within {}s",
                    BMC_REQUEST_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(ApiError::refused(
                StatusCode::BAD_GATEWAY,
                "agent_disconnected",
                format!("agent {agent_id}'s connection ended before it answered: {e}"),
            ));
        }
        Ok(Ok(r)) => r,
    };
    match reply.body {
        Some(reply::Body::Error(e)) => Err(agent_error(&e)),
        Some(b) => Ok(b),
        None => Err(ApiError::refused(
            StatusCode::BAD_GATEWAY,
            "agent_protocol",
            "the agent sent an empty reply",
        )),
    }
}

/// An agent's error reply as an HTTP error: the agent's stable code is kept when it is
/// one we know (so clients can rely on the list), the message is passed on.
pub fn agent_error(e: &pb::ErrorReply) -> ApiError {
    const KNOWN: &[(&str, StatusCode)] = &[
        ("bad_request", StatusCode::BAD_REQUEST),
        ("forbidden", StatusCode::FORBIDDEN),
        ("unsupported", StatusCode::NOT_IMPLEMENTED),
        ("agent_busy", StatusCode::SERVICE_UNAVAILABLE),
        ("bmc_unreachable", StatusCode::BAD_GATEWAY),
        ("bmc_timeout", StatusCode::GATEWAY_TIMEOUT),
        ("bmc_auth_failed", StatusCode::BAD_GATEWAY),
        ("bmc_cipher_refused", StatusCode::BAD_GATEWAY),
        ("bmc_tls_pin_mismatch", StatusCode::BAD_GATEWAY),
        ("bmc_tls_unpinned", StatusCode::BAD_GATEWAY),
        ("bmc_tls_failed", StatusCode::BAD_GATEWAY),
        ("bmc_bad_target", StatusCode::BAD_REQUEST),
        ("bmc_refused", StatusCode::BAD_GATEWAY),
        ("bmc_unsupported", StatusCode::BAD_GATEWAY),
        ("bmc_error", StatusCode::BAD_GATEWAY),
        ("bmc_protocol", StatusCode::BAD_GATEWAY),
    ];
    let (code, status) = KNOWN
        .iter()
        .find(|(c, _)| *c == e.code)
        .copied()
        .unwrap_or(("bmc_error", StatusCode::BAD_GATEWAY));
    let mut message: String = e.message.chars().take(1024).collect();
    if code != e.code {
        message = format!("{} (agent code {:?})", message, truncate(&e.code));
    }
    ApiError::refused(status, code, message)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn unexpected(b: &reply::Body) -> ApiError {
    let kind = match b {
        reply::Body::Error(_) => "error",
        reply::Body::AgentInfo(_) => "agent_info",
        reply::Body::Power(_) => "power",
        reply::Body::BmcInfo(_) => "bmc_info",
        reply::Body::BootDevice(_) => "boot_device",
        reply::Body::SerialBreak(_) => "serial_break",
        reply::Body::JoinResult(_) => "join_result",
    };
    ApiError::refused(
        StatusCode::BAD_GATEWAY,
        "agent_protocol",
        format!("the agent answered with a {kind} reply to a different request"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), vec![0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), vec![0xab; 32]);
        assert!(parse_fingerprint("ab").is_none());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_none());
        // Multi-byte characters must not panic the slicing.
        assert!(parse_fingerprint(&"é".repeat(32)).is_none());
    }

    #[test]
    fn auth_validation_and_redaction() {
        let a = AuthBody {
            username: "admin".into(),
            password: "canary-secret".into(),
            cert_sha256: None,
            ipmi_cipher_suites: vec![17, 3],
            allow_ipmi15: false,
        };
        assert!(!format!("{a:?}").contains("canary"));
        let pb = a.clone().into_pb().unwrap();
        assert_eq!(pb.password, "canary-secret");
        let bad = AuthBody {
            ipmi_cipher_suites: vec![300],
            ..a.clone()
        };
        assert_eq!(bad.into_pb().unwrap_err().status, StatusCode::BAD_REQUEST);
        let bad = AuthBody {
            password: "x".repeat(MAX_PASSWORD + 1),
            ..a.clone()
        };
        assert_eq!(bad.into_pb().unwrap_err().status, StatusCode::BAD_REQUEST);
        let bad = AuthBody {
            cert_sha256: Some("12".into()),
            ..a
        };
        assert_eq!(bad.into_pb().unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn agent_errors_map_to_stable_codes() {
        let e = agent_error(&pb::ErrorReply {
            code: "bmc_auth_failed".into(),
            message: "RAKP 2: wrong password".into(),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_GATEWAY, "bmc_auth_failed")
        );
        let e = agent_error(&pb::ErrorReply {
            code: "bmc_timeout".into(),
            message: "no answer".into(),
        });
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        let e = agent_error(&pb::ErrorReply {
            code: "x".repeat(10_000),
            message: "y".repeat(10_000),
        });
        assert_eq!(e.code, "bmc_error");
        assert!(e.message.len() < 1200, "{}", e.message.len());
    }
}
