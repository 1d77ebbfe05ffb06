//! Unary BMC requests from the gateway: power status and actions, BMC identity, boot
//! device. `ipmi://` endpoints go to IPMI 2.0 RMCP+ ([`outband_ipmi`]), `https://`
//! (and, only by explicit `http://`, plain HTTP) to Redfish ([`outband_redfish`]).
//!
//! Every request carries its own credentials; they live as long as the request. Every
//! failure becomes an `ErrorReply` with a stable code (`bmc_auth_failed`, ...), never a
//! hang: each protocol bounds its own steps and the whole request has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use outband_proto::pb::{self, reply, request};

use crate::relay::RelayContext;
use crate::target::{Scheme, Target};

/// The longest a whole BMC request may take (the gateway waits a little longer).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(40);

/// A failed request as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Failure {
    /// A failure with a stable `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The reply body.
    pub fn into_reply(self) -> reply::Body {
        reply::Body::Error(pb::ErrorReply {
            code: self.code.to_owned(),
            message: self.message,
        })
    }
}

impl From<outband_ipmi::Error> for Failure {
    fn from(e: outband_ipmi::Error) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

impl From<outband_redfish::Error> for Failure {
    fn from(e: outband_redfish::Error) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// Checks an endpoint against the allow-list: the agent talks only to BMCs it was
/// told about.
pub fn allowed_endpoint(endpoint: &str, ctx: &RelayContext) -> Result<Target, Failure> {
    let target = Target::parse(endpoint)
        .map_err(|e| Failure::new("bad_request", format!("endpoint {endpoint:?}: {e}")))?;
    if !ctx.allow.permits(&target) {
        return Err(Failure::new(
            "forbidden",
            format!("{target} is not on this agent's allow-list"),
        ));
    }
    Ok(target)
}

/// Answers one BMC request (power, bmc_info, boot_device).
pub async fn answer(body: request::Body, ctx: &RelayContext) -> reply::Body {
    let work = async {
        match body {
            request::Body::Power(p) => power(p, ctx).await,
            request::Body::BmcInfo(i) => info(i, ctx).await,
            request::Body::BootDevice(b) => boot(b, ctx).await,
            request::Body::AgentInfo(_)
            | request::Body::SerialBreak(_)
            | request::Body::JoinResult(_) => Err(Failure::new("bad_request", "not a BMC request")),
        }
    };
    let deadline = async {
        smol::Timer::after(REQUEST_DEADLINE).await;
        Err(Failure::new(
            "bmc_timeout",
            format!(
                "the BMC request took longer than {}s",
                REQUEST_DEADLINE.as_secs()
            ),
        ))
    };
    match futures_lite::future::or(work, deadline).await {
        Ok(body) => body,
        Err(f) => {
            tracing::warn!("BMC request failed ({}): {}", f.code, f.message);
            f.into_reply()
        }
    }
}

/// What a request names: its endpoint, parsed and allowed, and its credentials.
struct Call {
    target: Target,
    auth: Box<pb::BmcAuth>,
}

/// Longest BMC user name accepted (IPMI allows 16 bytes, Redfish services a few dozen).
pub const MAX_USERNAME: usize = 64;
/// Longest BMC password accepted (IPMI 2.0 allows 20 bytes).
pub const MAX_PASSWORD: usize = 256;
/// Most IPMI cipher suites a request may list.
pub const MAX_SUITES: usize = 8;

/// Checks the shape of credentials before anything uses them: bounded sizes, a pin
/// that is a SHA-256 or nothing.
pub fn check_auth(auth: &pb::BmcAuth) -> Result<(), Failure> {
    if auth.username.len() > MAX_USERNAME {
        return Err(Failure::new(
            "bad_request",
            format!("BMC user name longer than {MAX_USERNAME} bytes"),
        ));
    }
    if auth.password.len() > MAX_PASSWORD {
        return Err(Failure::new(
            "bad_request",
            format!("BMC password longer than {MAX_PASSWORD} bytes"),
        ));
    }
    if !matches!(auth.cert_sha256.len(), 0 | 32) {
        return Err(Failure::new(
            "bad_request",
            format!(
                "cert_sha256 has {} bytes; a SHA-256 fingerprint has 32",
                auth.cert_sha256.len()
            ),
        ));
    }
    if auth.ipmi_cipher_suites.len() > MAX_SUITES
        || auth.ipmi_cipher_suites.iter().any(|&s| s > 255)
    {
        return Err(Failure::new(
            "bad_request",
            format!("ipmi_cipher_suites must list at most {MAX_SUITES} suite ids (0..=255)"),
        ));
    }
    Ok(())
}

fn call(
    endpoint: &str,
    auth: Option<Box<pb::BmcAuth>>,
    ctx: &RelayContext,
) -> Result<Call, Failure> {
    let target = allowed_endpoint(endpoint, ctx)?;
    let auth = auth.unwrap_or_default();
    check_auth(&auth)?;
    if auth.username.is_empty() {
        return Err(Failure::new(
            "bad_request",
            "a BMC user name is required (anonymous and null users are refused)",
        ));
    }
    Ok(Call { target, auth })
}

async fn power(p: pb::PowerRequest, ctx: &RelayContext) -> Result<reply::Body, Failure> {
    let action = pb::PowerAction::try_from(p.action).unwrap_or(pb::PowerAction::Unspecified);
    if action == pb::PowerAction::Unspecified {
        return Err(Failure::new("bad_request", "no power action given"));
    }
    let c = call(&p.endpoint, p.auth, ctx)?;
    let state = match c.target.scheme {
        Scheme::Ipmi => ipmi_power(&c, action, ctx).await?,
        Scheme::Https | Scheme::Http => {
            let (target, auth) = (c.target, c.auth);
            let timeout = ctx.connect_timeout;
            smol::unblock(move || redfish_power(&target, &auth, action, timeout)).await?
        }
        other => return Err(wrong_scheme(other)),
    };
    tracing::info!(
        "power {} on {}: now {}",
        action.as_str_name(),
        p.endpoint,
        state.as_str_name()
    );
    Ok(reply::Body::Power(pb::PowerReply {
        state: state as i32,
    }))
}

async fn info(i: pb::BmcInfoRequest, ctx: &RelayContext) -> Result<reply::Body, Failure> {
    let c = call(&i.endpoint, i.auth, ctx)?;
    let answer = match c.target.scheme {
        Scheme::Ipmi => {
            let mut s = ipmi_session(&c, ctx).await?;
            let suite = s.cipher_suite();
            let res = s.device_id().await;
            close_ipmi(s).await;
            let d = res?;
            pb::BmcInfoReply {
                protocol: "ipmi".into(),
                manufacturer: d.manufacturer_id.to_string(),
                model: d.product_id.to_string(),
                firmware_version: format!("{}.{:02x}", d.firmware_major, d.firmware_minor),
                ipmi_cipher_suite: u32::from(suite),
            }
        }
        Scheme::Https | Scheme::Http => {
            let (target, auth) = (c.target, c.auth);
            let timeout = ctx.connect_timeout;
            smol::unblock(move || redfish_info(&target, &auth, timeout)).await?
        }
        other => return Err(wrong_scheme(other)),
    };
    Ok(reply::Body::BmcInfo(Box::new(answer)))
}

async fn boot(b: pb::BootDeviceRequest, ctx: &RelayContext) -> Result<reply::Body, Failure> {
    let device = pb::BootDevice::try_from(b.device).unwrap_or(pb::BootDevice::Unspecified);
    let persistent = b.persistent;
    let c = call(&b.endpoint, b.auth, ctx)?;
    let (device, persistent) = match c.target.scheme {
        Scheme::Ipmi => {
            let mut s = ipmi_session(&c, ctx).await?;
            let res = async {
                if device != pb::BootDevice::Unspecified {
                    s.set_boot_device(to_ipmi_boot(device), persistent).await?;
                }
                s.boot_device().await
            }
            .await;
            close_ipmi(s).await;
            let (d, p) = res?;
            (from_ipmi_boot(d), p)
        }
        Scheme::Https | Scheme::Http => {
            let (target, auth) = (c.target, c.auth);
            let timeout = ctx.connect_timeout;
            smol::unblock(move || redfish_boot(&target, &auth, device, persistent, timeout)).await?
        }
        other => return Err(wrong_scheme(other)),
    };
    Ok(reply::Body::BootDevice(pb::BootDeviceReply {
        device: device as i32,
        persistent,
    }))
}

fn wrong_scheme(s: Scheme) -> Failure {
    Failure::new(
        "bad_request",
        format!(
            "{}endpoints cannot take BMC requests; use ipmi:// or https://",
            match s.prefix() {
                "" => "plain host:port ",
                p => p,
            }
        ),
    )
}

// ---- IPMI ----

async fn ipmi_session(c: &Call, ctx: &RelayContext) -> Result<outband_ipmi::Session, Failure> {
    open_ipmi(&c.target, &c.auth, ctx.connect_timeout).await
}

/// Opens an IPMI session to `target` with the request's credentials, cipher suite
/// preference and IPMI 1.5 opt-in.
pub async fn open_ipmi(
    target: &Target,
    auth: &pb::BmcAuth,
    timeout: Duration,
) -> Result<outband_ipmi::Session, Failure> {
    let addr = resolve(target, timeout).await?;
    let creds = outband_ipmi::Credentials::new(auth.username.clone(), auth.password.clone());
    let mut opts = outband_ipmi::Options {
        allow_ipmi15: auth.allow_ipmi15,
        ..Default::default()
    };
    if !auth.ipmi_cipher_suites.is_empty() {
        opts.cipher_suites = auth
            .ipmi_cipher_suites
            .iter()
            .filter_map(|&s| u8::try_from(s).ok())
            .collect();
    }
    Ok(outband_ipmi::Session::open(addr, &creds, &opts).await?)
}

/// Closes a session; a failure to close is logged, not reported (the answer the
/// caller waits for is already known).
async fn close_ipmi(s: outband_ipmi::Session) {
    if let Err(e) = s.close().await {
        tracing::warn!("closing the IPMI session: {e}");
    }
}

async fn ipmi_power(
    c: &Call,
    action: pb::PowerAction,
    ctx: &RelayContext,
) -> Result<pb::PowerState, Failure> {
    use outband_ipmi::ChassisAction as A;
    let mut s = ipmi_session(c, ctx).await?;
    let res = async {
        let a = match action {
            pb::PowerAction::On => Some(A::PowerOn),
            pb::PowerAction::Off => Some(A::PowerOff),
            pb::PowerAction::Cycle => Some(A::PowerCycle),
            pb::PowerAction::Reset => Some(A::HardReset),
            pb::PowerAction::SoftOff => Some(A::SoftShutdown),
            pb::PowerAction::Status | pb::PowerAction::Unspecified => None,
        };
        if let Some(a) = a {
            s.chassis_control(a).await?;
        }
        s.chassis_status().await
    }
    .await;
    close_ipmi(s).await;
    Ok(if res?.power_on {
        pb::PowerState::On
    } else {
        pb::PowerState::Off
    })
}

fn to_ipmi_boot(d: pb::BootDevice) -> outband_ipmi::BootDevice {
    use outband_ipmi::BootDevice as B;
    match d {
        pb::BootDevice::Pxe => B::Pxe,
        pb::BootDevice::Disk => B::Disk,
        pb::BootDevice::BiosSetup => B::BiosSetup,
        pb::BootDevice::Cdrom => B::Cdrom,
        pb::BootDevice::None | pb::BootDevice::Unspecified => B::NoOverride,
    }
}

fn from_ipmi_boot(d: outband_ipmi::BootDevice) -> pb::BootDevice {
    use outband_ipmi::BootDevice as B;
    match d {
        B::NoOverride => pb::BootDevice::None,
        B::Pxe => pb::BootDevice::Pxe,
        B::Disk | B::DiskSafe | B::RemoteDisk => pb::BootDevice::Disk,
        B::BiosSetup => pb::BootDevice::BiosSetup,
        B::Cdrom | B::RemoteCdrom => pb::BootDevice::Cdrom,
        _ => pb::BootDevice::Unspecified,
    }
}

/// Resolves a target to one socket address within `timeout`.
pub async fn resolve(target: &Target, timeout: Duration) -> Result<SocketAddr, Failure> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let lookup = smol::net::resolve((target.host.as_str(), target.port));
    let timed_out = async {
        smol::Timer::after(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "name lookup timed out",
        ))
    };
    let addrs = futures_lite::future::or(lookup, timed_out)
        .await
        .map_err(|e| Failure::new("bmc_unreachable", format!("resolving {}: {e}", target.host)))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new("bmc_unreachable", format!("{} has no address", target.host)))
}

// ---- Redfish (blocking; run on smol's blocking pool) ----

fn redfish_client(
    target: &Target,
    auth: &pb::BmcAuth,
    timeout: Duration,
) -> Result<outband_redfish::Client, Failure> {
    use outband_redfish::{Fingerprint, TlsPolicy};
    let tls = match target.scheme {
        Scheme::Http => TlsPolicy::PlainHttp,
        _ => match <[u8; 32]>::try_from(auth.cert_sha256.as_ref()) {
            Ok(fp) => TlsPolicy::Pinned(Fingerprint(fp)),
            Err(_) => {
                return Err(Failure::new(
                    "bmc_tls_unpinned",
                    format!(
                        "{target} needs the SHA-256 fingerprint of the BMC's certificate \
                         (auth.cert_sha256); the agent does not trust BMC certificates blindly"
                    ),
                ));
            }
        },
    };
    let creds = outband_redfish::Credentials::new(auth.username.clone(), auth.password.clone());
    let timeouts = outband_redfish::Timeouts {
        connect: timeout,
        ..outband_redfish::Timeouts::default()
    };
    let origin = format!("{}{}", target.scheme.prefix(), target.key());
    Ok(outband_redfish::Client::connect(
        &origin, &creds, tls, timeouts,
    )?)
}

/// Runs `f` with a logged-in client and closes it on every path (a close error only
/// matters if `f` succeeded).
fn with_redfish<T>(
    target: &Target,
    auth: &pb::BmcAuth,
    timeout: Duration,
    f: impl FnOnce(&outband_redfish::Client) -> Result<T, outband_redfish::Error>,
) -> Result<T, Failure> {
    let client = redfish_client(target, auth, timeout)?;
    let res = f(&client);
    let closed = client.close();
    let value = res?;
    if let Err(e) = closed {
        tracing::warn!("closing the Redfish session: {e}");
    }
    Ok(value)
}

fn redfish_power(
    target: &Target,
    auth: &pb::BmcAuth,
    action: pb::PowerAction,
    timeout: Duration,
) -> Result<pb::PowerState, Failure> {
    use outband_redfish::{PowerState as P, ResetType as R};
    with_redfish(target, auth, timeout, |c| {
        let sys = c.default_system()?;
        let reset = match action {
            pb::PowerAction::On => Some(R::On),
            pb::PowerAction::Off => Some(R::ForceOff),
            pb::PowerAction::Cycle => {
                // PowerCycle where the BMC offers it, else a forced restart.
                match c.allowed_resets(&sys)? {
                    Some(allowed) if !allowed.contains(&R::PowerCycle) => Some(R::ForceRestart),
                    _ => Some(R::PowerCycle),
                }
            }
            pb::PowerAction::Reset => Some(R::ForceRestart),
            pb::PowerAction::SoftOff => Some(R::GracefulShutdown),
            pb::PowerAction::Status | pb::PowerAction::Unspecified => None,
        };
        if let Some(r) = reset {
            c.reset(&sys, r)?;
        }
        Ok(match c.power_state(&sys)? {
            P::On | P::PoweringOff => pb::PowerState::On,
            P::Off | P::PoweringOn => pb::PowerState::Off,
            _ => pb::PowerState::Unknown,
        })
    })
}

fn redfish_info(
    target: &Target,
    auth: &pb::BmcAuth,
    timeout: Duration,
) -> Result<pb::BmcInfoReply, Failure> {
    with_redfish(target, auth, timeout, |c| {
        let sys = c.default_system()?;
        let s = c.system(&sys)?;
        Ok(pb::BmcInfoReply {
            protocol: "redfish".into(),
            manufacturer: s.manufacturer.clone().unwrap_or_default(),
            model: s.model.clone().unwrap_or_default(),
            firmware_version: c.service_root().redfish_version.clone().unwrap_or_default(),
            ipmi_cipher_suite: 0,
        })
    })
}

fn redfish_boot(
    target: &Target,
    auth: &pb::BmcAuth,
    device: pb::BootDevice,
    persistent: bool,
    timeout: Duration,
) -> Result<(pb::BootDevice, bool), Failure> {
    use outband_redfish::{BootOverride, BootTarget};
    let wanted = match device {
        pb::BootDevice::Unspecified => None,
        pb::BootDevice::None => Some(BootTarget::None),
        pb::BootDevice::Pxe => Some(BootTarget::Pxe),
        pb::BootDevice::Disk => Some(BootTarget::Hdd),
        pb::BootDevice::BiosSetup => Some(BootTarget::BiosSetup),
        pb::BootDevice::Cdrom => {
            return Err(Failure::new(
                "bmc_unsupported",
                "CD boot override is not supported over Redfish yet",
            ));
        }
    };
    with_redfish(target, auth, timeout, |c| {
        let sys = c.default_system()?;
        if let Some(t) = wanted {
            let mode = if persistent {
                BootOverride::Continuous
            } else {
                BootOverride::Once
            };
            c.set_boot_override(&sys, t, mode)?;
        }
        let (target, enabled) = c.boot_override(&sys)?;
        let device = match target.as_deref() {
            Some("Pxe") => pb::BootDevice::Pxe,
            Some("Hdd") => pb::BootDevice::Disk,
            Some("BiosSetup") => pb::BootDevice::BiosSetup,
            Some("Cd") => pb::BootDevice::Cdrom,
            Some("None") | None => pb::BootDevice::None,
            Some(_) => pb::BootDevice::Unspecified,
        };
        let device = if enabled.as_deref() == Some("Disabled") {
            pb::BootDevice::None
        } else {
            device
        };
        Ok((device, enabled.as_deref() == Some("Continuous")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::AllowList;

    fn ctx() -> RelayContext {
        RelayContext::new(
            AllowList::new(vec![Target::parse("ipmi://10.0.0.5").unwrap()]),
            Duration::from_millis(100),
        )
    }

    fn auth() -> pb::BmcAuth {
        pb::BmcAuth {
            username: "admin".into(),
            password: "password".into(),
            cert_sha256: Default::default(),
            ipmi_cipher_suites: vec![3],
            allow_ipmi15: false,
        }
    }

    #[test]
    fn hostile_credentials_are_refused_before_any_use() {
        assert!(check_auth(&auth()).is_ok());
        let mut a = auth();
        a.password = "x".repeat(MAX_PASSWORD + 1);
        assert_eq!(check_auth(&a).unwrap_err().code, "bad_request");
        let mut a = auth();
        a.username = "u".repeat(100_000);
        assert_eq!(check_auth(&a).unwrap_err().code, "bad_request");
        let mut a = auth();
        a.cert_sha256 = vec![1; 31].into();
        assert_eq!(check_auth(&a).unwrap_err().code, "bad_request");
        let mut a = auth();
        a.ipmi_cipher_suites = vec![3; 9];
        assert_eq!(check_auth(&a).unwrap_err().code, "bad_request");
        let mut a = auth();
        a.ipmi_cipher_suites = vec![1000];
        assert_eq!(check_auth(&a).unwrap_err().code, "bad_request");
    }

    #[test]
    fn requests_are_checked_against_the_allow_list_and_scheme() {
        let c = ctx();
        let status = |endpoint: &str, auth: Option<pb::BmcAuth>| {
            request::Body::Power(pb::PowerRequest {
                endpoint: endpoint.into(),
                auth: auth.map(Box::new),
                action: pb::PowerAction::Status as i32,
            })
        };
        let code = |body| match smol::block_on(answer(body, &c)) {
            reply::Body::Error(e) => e.code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(status("ipmi://10.0.0.6", Some(auth()))), "forbidden");
        assert_eq!(code(status("ssh://10.0.0.5", Some(auth()))), "bad_request");
        assert_eq!(code(status("ipmi://10.0.0.5", None)), "bad_request");
        let no_action = request::Body::Power(pb::PowerRequest {
            endpoint: "ipmi://10.0.0.5".into(),
            auth: Some(Box::new(auth())),
            action: 0,
        });
        assert_eq!(code(no_action), "bad_request");
        // A plain TCP endpoint on the allow-list is allowed, but it names no protocol.
        let c2 = RelayContext::new(
            AllowList::new(vec![Target::parse("10.0.0.5:623").unwrap()]),
            Duration::from_millis(100),
        );
        let body = status("10.0.0.5:623", Some(auth()));
        match smol::block_on(answer(body, &c2)) {
            reply::Body::Error(e) => {
                assert_eq!(e.code, "bad_request");
                assert!(e.message.contains("ipmi://"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
}
