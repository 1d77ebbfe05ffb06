//! One HTTP exchange with the BMC: ureq underneath, with redirects handled here
//! (same origin only), bounded headers and bodies, deadlines, and ureq's errors mapped
//! to this crate's codes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector as _, TcpConnector};
use zeroize::Zeroizing;

use crate::connector::PinnedTlsConnector;
use crate::error::{Error, Result};
use crate::origin::{Origin, Redirect, redirect};
use crate::tls::{Fingerprint, PinVerifier, Seen, TlsPolicy, client_config};

/// Largest response body read (bytes); a larger one is a protocol error.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Largest response header block (bytes).
pub const MAX_HEADER: usize = 32 * 1024;
/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 4;

/// Deadlines for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (and resolve).
    pub connect: Duration,
    /// Everything for one request: connect, TLS, send, headers and body.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// A response, read whole (bounded).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) etag: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) token: Option<Zeroizing<String>>,
    pub(crate) body: Vec<u8>,
    /// The path that answered (after redirects).
    pub(crate) path: String,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error for a non-2xx reply: 401/403 are auth failures, others carry the
    /// Redfish message.
    pub(crate) fn error(&self) -> Error {
        match self.status {
            401 | 403 => Error::AuthFailed {
                status: self.status,
            },
            s => Error::Http {
                status: s,
                message: crate::model::error_message(&self.body),
            },
        }
    }
}

/// The HTTP side of a client: agent, origin and what the TLS verifier saw.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
    origin: Origin,
    seen: Option<Arc<Mutex<Seen>>>,
}

impl Http {
    pub(crate) fn new(origin: Origin, tls: TlsPolicy, timeouts: Timeouts) -> Result<Self> {
        let (pin, plain) = match tls {
            TlsPolicy::Pinned(fp) => (Some(fp), false),
            TlsPolicy::TrustOnFirstUse => (None, false),
            TlsPolicy::PlainHttp => (None, true),
        };
        if plain == origin.is_https() {
            return Err(Error::Config(if plain {
                "plain HTTP policy with an https:// URL".into()
            } else {
                "http:// URL without the explicit plain HTTP opt-in".into()
            }));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .https_only(!plain)
            .max_response_header_size(MAX_HEADER)
            .max_idle_connections_per_host(2)
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.total))
            .user_agent(concat!("outband-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        let (connector, seen) = if plain {
            (PinnedTlsConnector::none(), None)
        } else {
            let verifier = Arc::new(PinVerifier::new(&crate::tls::provider(), pin));
            let seen = verifier.shared();
            let cfg = client_config(verifier).map_err(|e| Error::Config(e.to_string()))?;
            (PinnedTlsConnector::new(Arc::new(cfg)), Some(seen))
        };
        let connector = ().chain(TcpConnector::default()).chain(connector);
        let agent = ureq::Agent::with_parts(config, connector, DefaultResolver::default());
        Ok(Self {
            agent,
            origin,
            seen,
        })
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The trusted certificate fingerprint (pinned or learnt), for HTTPS.
    pub(crate) fn fingerprint(&self) -> Option<Fingerprint> {
        let seen = self.seen.as_ref()?;
        seen.lock().unwrap_or_else(PoisonError::into_inner).trusted
    }

    /// Sends `method path` with an optional `Authorization` or `X-Auth-Token` header
    /// and JSON body; follows same-origin redirects; reads the whole (bounded) body.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&Auth<'_>>,
        body: Option<&[u8]>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let mut method = method.to_owned();
        let mut path = path.to_owned();
        let mut body = body;
        for _ in 0..=MAX_REDIRECTS {
            let reply = self.send_once(&method, &path, auth, body, if_match)?;
            match redirect(
                &self.origin,
                &method,
                reply.status,
                &path,
                reply.location.as_deref(),
            )? {
                Redirect::No => return Ok(reply),
                Redirect::Same(p) => path = p,
                Redirect::AsGet(p) => {
                    path = p;
                    method = "GET".into();
                    body = None;
                }
            }
        }
        Err(Error::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects from {path}"
        )))
    }

    fn send_once(
        &self,
        method: &str,
        path: &str,
        auth: Option<&Auth<'_>>,
        body: Option<&[u8]>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(self.origin.url(path))
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        match auth {
            Some(Auth::Basic(v)) => req = req.header("Authorization", *v),
            Some(Auth::Token(t)) => req = req.header("X-Auth-Token", *t),
            None => {}
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        let req = req
            .body(body.unwrap_or_default())
            .map_err(|e| Error::Config(format!("request {method} {path}: {e}")))?;
        let mut resp = self.agent.run(req).map_err(|e| self.map_err(e))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, location) = (header("ETag"), header("Location"));
        let token = header("X-Auth-Token").map(Zeroizing::new);
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.map_err(e))?;
        Ok(Reply {
            status,
            etag,
            location,
            token,
            body,
            path: path.to_owned(),
        })
    }

    fn map_err(&self, e: ureq::Error) -> Error {
        if let Some(seen) = &self.seen {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Some(observed), Some(expected)) = (seen.mismatch.take(), seen.trusted) {
                return Error::TlsPinMismatch { expected, observed };
            }
        }
        map_ureq(e)
    }
}

/// How a request authenticates.
#[derive(Debug)]
pub(crate) enum Auth<'a> {
    /// `Authorization: Basic …`.
    Basic(&'a str),
    /// `X-Auth-Token: …` of a session.
    Token(&'a str),
}

fn map_ureq(e: ureq::Error) -> Error {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(t) => Error::Timeout(t.to_string()),
        ureq::Error::HostNotFound => Error::Unreachable("host not found".into()),
        ureq::Error::ConnectionFailed => Error::Unreachable("connection failed".into()),
        ureq::Error::BodyExceedsLimit(n) => {
            Error::Protocol(format!("response body over {n} bytes"))
        }
        ureq::Error::LargeResponseHeader(_, max) => {
            Error::Protocol(format!("response header over {max} bytes"))
        }
        ureq::Error::Io(io) => match io.kind() {
            K::TimedOut | K::WouldBlock => Error::Timeout(io.to_string()),
            K::InvalidData | K::InvalidInput | K::Other => {
                Error::Protocol(format!("TLS or transport: {io}"))
            }
            _ => Error::Unreachable(io.to_string()),
        },
        other => Error::Protocol(other.to_string()),
    }
}
