//! The Redfish client: connect (service root, then a session or Basic auth), list
//! systems, read power state, reset, boot override, close.

use std::fmt;

use zeroize::Zeroizing;

use crate::creds::Credentials;
use crate::error::{Error, Result};
use crate::http::{Auth, Http, Reply, Timeouts};
use crate::model::{
    self, ActionInfo, BootOverride, BootTarget, Collection, ComputerSystem, PowerState, ResetType,
    ServiceRoot,
};
use crate::origin::Origin;
use crate::session::{Login, Session};
use crate::tls::{Fingerprint, TlsPolicy};

/// The service root's path.
pub const ROOT: &str = "/redfish/v1/";
/// Pages of a collection followed at most.
const MAX_PAGES: usize = 16;

/// A ComputerSystem, by its path on the BMC (`/redfish/v1/Systems/…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemId(String);

impl SystemId {
    /// A system by path, e.g. `/redfish/v1/Systems/1`. It is checked against the
    /// BMC's origin when used.
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(serde::Serialize)]
struct ResetBody {
    #[serde(rename = "ResetType")]
    reset_type: &'static str,
}

#[derive(serde::Serialize)]
struct BootPatch {
    #[serde(rename = "Boot")]
    boot: BootBody,
}

#[derive(serde::Serialize)]
struct BootBody {
    #[serde(rename = "BootSourceOverrideTarget")]
    target: &'static str,
    #[serde(rename = "BootSourceOverrideEnabled")]
    enabled: &'static str,
}

enum Authn {
    Basic(Zeroizing<String>),
    Session(Session),
}

/// A connection to one BMC's Redfish service. Blocking; run it on a thread pool
/// (`smol::unblock`). Dropping it deletes its session; [`Client::close`] does the
/// same and reports whether the BMC confirmed.
pub struct Client {
    http: Http,
    authn: Authn,
    root: ServiceRoot,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("origin", self.http.origin())
            .field(
                "auth",
                &match self.authn {
                    Authn::Basic(_) => "basic",
                    Authn::Session(_) => "session",
                },
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` (`https://host[:port]`): reads the service root without
    /// credentials (so the TLS pin is checked before any credential is sent), then
    /// logs in with a session if the service has a SessionService, else checks the
    /// credentials with Basic auth on the Systems collection.
    pub fn connect(
        url: &str,
        creds: &Credentials,
        tls: TlsPolicy,
        timeouts: Timeouts,
    ) -> Result<Self> {
        let origin = Origin::parse(url)?;
        let http = Http::new(origin, tls, timeouts)?;
        let basic = creds.basic_header();
        // The service root is readable without credentials per the specification;
        // some services (sushy-tools with an htpasswd) want Basic auth even there.
        let mut reply = http.send("GET", ROOT, None, None, None)?;
        if reply.status == 401 {
            reply = http.send("GET", ROOT, Some(&Auth::Basic(&basic)), None, None)?;
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        let root: ServiceRoot = model::parse("service root", &reply.body)?;
        if let Some(sessions) = root.sessions_path() {
            let sessions = http.origin().resolve(ROOT, &sessions)?;
            if let Login::Ok(session) = Session::login(&http, &sessions, creds)? {
                return Ok(Self {
                    http,
                    authn: Authn::Session(session),
                    root,
                });
            }
        }
        let client = Self {
            http,
            authn: Authn::Basic(basic),
            root,
        };
        // Check the credentials now rather than on the first real request.
        let probe = client.root.systems.as_ref().map_or(ROOT, |l| l.id.as_str());
        let probe = client.http.origin().resolve(ROOT, probe)?;
        let reply = client.get(&probe)?;
        if !reply.ok() {
            return Err(reply.error());
        }
        Ok(client)
    }

    /// The BMC certificate's fingerprint (the pin, or the one learnt on first use);
    /// `None` over plain HTTP.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.http.fingerprint()
    }

    /// Whether the client logged in with a session (else Basic auth).
    pub fn uses_session(&self) -> bool {
        matches!(self.authn, Authn::Session(_))
    }

    /// The service root as read at connect.
    pub fn service_root(&self) -> &ServiceRoot {
        &self.root
    }

    /// Ends the session (DELETE) and reports whether the BMC confirmed it.
    pub fn close(self) -> Result<()> {
        match self.authn {
            Authn::Session(s) => s.close(),
            Authn::Basic(_) => Ok(()),
        }
    }

    fn auth(&self) -> Auth<'_> {
        match &self.authn {
            Authn::Basic(b) => Auth::Basic(b),
            Authn::Session(s) => Auth::Token(s.token()),
        }
    }

    fn get(&self, path: &str) -> Result<Reply> {
        self.http.send("GET", path, Some(&self.auth()), None, None)
    }

    fn get_ok(&self, path: &str) -> Result<Reply> {
        let reply = self.get(path)?;
        if reply.ok() {
            Ok(reply)
        } else {
            Err(reply.error())
        }
    }

    fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &impl serde::Serialize,
        if_match: Option<&str>,
    ) -> Result<()> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?;
        let reply = self
            .http
            .send(method, path, Some(&self.auth()), Some(&body), if_match)?;
        if reply.ok() {
            Ok(())
        } else {
            Err(reply.error())
        }
    }

    /// The systems of the service (the members of the Systems collection, on this
    /// origin only, at most [`model::MAX_MEMBERS`]).
    pub fn systems(&self) -> Result<Vec<SystemId>> {
        let Some(link) = &self.root.systems else {
            return Err(Error::Unsupported("the service has no Systems".into()));
        };
        let mut page = self.http.origin().resolve(ROOT, &link.id)?;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.get_ok(&page)?;
            let c: Collection = model::parse("Systems collection", &reply.body)?;
            for m in model::members(&c)? {
                out.push(SystemId(self.http.origin().resolve(&reply.path, &m)?));
            }
            if out.len() > model::MAX_MEMBERS {
                return Err(Error::Protocol("too many systems".into()));
            }
            match &c.next_link {
                Some(next) => page = self.http.origin().resolve(&reply.path, next)?,
                None => return Ok(out),
            }
        }
        Err(Error::Protocol(format!(
            "Systems has over {MAX_PAGES} pages"
        )))
    }

    /// The first system: what "power on this BMC" means on a one-system BMC.
    pub fn default_system(&self) -> Result<SystemId> {
        self.systems()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unsupported("the service lists no systems".into()))
    }

    /// Reads a ComputerSystem (and its ETag).
    pub fn system(&self, system: &SystemId) -> Result<ComputerSystem> {
        Ok(self.system_with_etag(system)?.0)
    }

    fn system_with_etag(&self, system: &SystemId) -> Result<(ComputerSystem, Option<String>)> {
        let path = self.http.origin().resolve(ROOT, system.path())?;
        let reply = self.get_ok(&path)?;
        Ok((model::parse("ComputerSystem", &reply.body)?, reply.etag))
    }

    /// The system's power state.
    pub fn power_state(&self, system: &SystemId) -> Result<PowerState> {
        self.system(system)?
            .power_state
            .ok_or_else(|| Error::Protocol("ComputerSystem without PowerState".into()))
    }

    /// The reset types the BMC advertises for the system (those this client knows),
    /// from `ResetType@Redfish.AllowableValues` or the action's ActionInfo. `None`:
    /// the BMC advertises no list (then any type is tried).
    pub fn allowed_resets(&self, system: &SystemId) -> Result<Option<Vec<ResetType>>> {
        let (_, allowed) = self.reset_action(system)?;
        Ok(allowed)
    }

    fn reset_action(&self, system: &SystemId) -> Result<(String, Option<Vec<ResetType>>)> {
        let sys = self.system(system)?;
        let Some(action) = sys.actions.reset else {
            return Err(Error::Unsupported(format!(
                "{system} has no ComputerSystem.Reset"
            )));
        };
        let base = self.http.origin().resolve(ROOT, system.path())?;
        let default_target = format!(
            "{}/Actions/ComputerSystem.Reset",
            base.trim_end_matches('/')
        );
        let target = action.target.as_deref().unwrap_or(&default_target);
        let target = self.http.origin().resolve(&base, target)?;
        let names = match (action.allowable, action.action_info) {
            (Some(list), _) => Some(list),
            (None, Some(info)) => {
                let path = self.http.origin().resolve(&base, &info)?;
                let info: ActionInfo = model::parse("ActionInfo", &self.get_ok(&path)?.body)?;
                info.reset_types().map(<[String]>::to_vec)
            }
            (None, None) => None,
        };
        let allowed = names.map(|n| {
            n.iter()
                .filter_map(|s| ResetType::from_redfish(s))
                .collect()
        });
        Ok((target, allowed))
    }

    /// Resets the system with `kind`, if the BMC advertises it (else
    /// [`Error::Unsupported`] without sending the action).
    pub fn reset(&self, system: &SystemId, kind: ResetType) -> Result<()> {
        let (target, allowed) = self.reset_action(system)?;
        if let Some(allowed) = &allowed
            && !allowed.contains(&kind)
        {
            let offered: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
            return Err(Error::Unsupported(format!(
                "reset type {} is not offered by the BMC (offered: {})",
                kind.as_str(),
                offered.join(", ")
            )));
        }
        self.send_json(
            "POST",
            &target,
            &ResetBody {
                reset_type: kind.as_str(),
            },
            None,
        )
    }

    /// The boot override as the BMC reports it: (`BootSourceOverrideTarget`,
    /// `BootSourceOverrideEnabled`).
    pub fn boot_override(&self, system: &SystemId) -> Result<(Option<String>, Option<String>)> {
        let sys = self.system(system)?;
        let boot = sys
            .boot
            .ok_or_else(|| Error::Unsupported(format!("{system} has no Boot settings")))?;
        Ok((boot.target, boot.enabled))
    }

    /// Sets the next boot source (`Pxe`, `Hdd`, `BiosSetup`; `None` clears) for the
    /// next boot or until cleared. Refused if the system has no Boot object or does
    /// not advertise the target.
    pub fn set_boot_override(
        &self,
        system: &SystemId,
        target: BootTarget,
        mode: BootOverride,
    ) -> Result<()> {
        let (sys, etag) = self.system_with_etag(system)?;
        let Some(boot) = sys.boot else {
            return Err(Error::Unsupported(format!("{system} has no Boot settings")));
        };
        if let Some(allowed) = &boot.allowable_targets
            && !allowed.iter().any(|t| t == target.as_str())
        {
            return Err(Error::Unsupported(format!(
                "boot target {} is not offered by the BMC (offered: {})",
                target.as_str(),
                allowed.join(", ")
            )));
        }
        let path = self.http.origin().resolve(ROOT, system.path())?;
        self.send_json(
            "PATCH",
            &path,
            &BootPatch {
                boot: BootBody {
                    target: target.as_str(),
                    enabled: mode.as_str(),
                },
            },
            etag.as_deref(),
        )
    }
}
