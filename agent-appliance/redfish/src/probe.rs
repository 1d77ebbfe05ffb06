//! Presence probe for discovery: is there a Redfish service at this address, and
//! which certificate does it present? Never sends credentials.

use crate::client::ROOT;
use crate::error::{Error, Result};
use crate::http::{Http, Timeouts};
use crate::model::{self, ServiceRoot};
use crate::origin::Origin;
use crate::tls::{Fingerprint, TlsPolicy};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The certificate fingerprint the service presented (HTTPS).
    pub fingerprint: Option<Fingerprint>,
    /// `RedfishVersion` from the service root, when it was readable without
    /// credentials.
    pub redfish_version: Option<String>,
}

/// GETs `/redfish/v1/` at `url` without credentials, accepting any certificate
/// (recording its fingerprint; handshake signatures are still checked). A JSON
/// service root, or a 401 on it, counts as a Redfish service; anything else is an
/// error.
pub fn probe(url: &str, timeouts: Timeouts) -> Result<Probe> {
    let origin = Origin::parse(url)?;
    let tls = if origin.is_https() {
        TlsPolicy::TrustOnFirstUse
    } else {
        TlsPolicy::PlainHttp
    };
    let http = Http::new(origin, tls, timeouts)?;
    let reply = http.send("GET", ROOT, None, None, None)?;
    let fingerprint = http.fingerprint();
    match reply.status {
        401 => Ok(Probe {
            fingerprint,
            redfish_version: None,
        }),
        200 => {
            let root: ServiceRoot = model::parse("service root", &reply.body)?;
            if root.redfish_version.is_none() && root.systems.is_none() {
                return Err(Error::Protocol("not a Redfish service root".into()));
            }
            Ok(Probe {
                fingerprint,
                redfish_version: root.redfish_version,
            })
        }
        _ => Err(reply.error()),
    }
}
