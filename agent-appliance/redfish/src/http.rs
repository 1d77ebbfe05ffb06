//! One HTTP exchange with the BMC over the crate's own HTTP/1.1 client: redirects handled here
//! (same origin only), bounded headers and bodies, deadlines, and wire errors mapped
//! to this crate's codes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::origin::{Origin, Redirect, redirect};
use crate::tls::{Fingerprint, PinVerifier, Seen, TlsPolicy, client_config};
use crate::wire::{Conn, Limits, Response, WireError};

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

/// The HTTP side of a client: origin, TLS config, what the verifier saw, and one
/// kept-alive connection.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    origin: Origin,
    tls: Option<Arc<ClientConfig>>,
    seen: Option<Arc<Mutex<Seen>>>,
    limits: Limits,
    conn: Arc<Mutex<Option<Conn>>>,
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
        let (tls, seen) = if plain {
            (None, None)
        } else {
            let verifier = Arc::new(PinVerifier::new(&crate::tls::provider(), pin));
            let seen = verifier.shared();
            let cfg = client_config(verifier).map_err(|e| Error::Config(e.to_string()))?;
            (Some(Arc::new(cfg)), Some(seen))
        };
        Ok(Self {
            origin,
            tls,
            seen,
            limits: Limits {
                max_header: MAX_HEADER,
                max_body: MAX_BODY as usize,
                connect: timeouts.connect,
                total: timeouts.total,
            },
            conn: Arc::default(),
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
        let head = self.head(method, path, auth, body, if_match)?;
        let body = body.unwrap_or_default();
        let deadline = Instant::now() + self.limits.total;
        // Only idempotent requests ride on a kept-alive connection: one that the BMC
        // closed meanwhile is retried once on a fresh connection.
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE");
        let cached = lock(&self.conn).take().filter(|_| idempotent);
        let (resp, reusable, conn) = match cached {
            Some(mut c) => match c.exchange(&head, body, &self.limits, deadline) {
                Ok((r, reuse)) => (r, reuse, c),
                Err(WireError::Timeout(w)) => return Err(self.map_err(WireError::Timeout(w))),
                Err(_) => self.fresh(&head, body, deadline)?,
            },
            None => self.fresh(&head, body, deadline)?,
        };
        if reusable {
            *lock(&self.conn) = Some(conn);
        }
        let header = |name: &str| resp.header(name).map(str::to_owned);
        let (etag, location) = (header("etag"), header("location"));
        let token = header("x-auth-token").map(Zeroizing::new);
        Ok(Reply {
            status: resp.status,
            etag,
            location,
            token,
            body: resp.body,
            path: path.to_owned(),
        })
    }

    fn fresh(&self, head: &[u8], body: &[u8], deadline: Instant) -> Result<(Response, bool, Conn)> {
        let mut c = Conn::open(
            self.origin.host(),
            self.origin.port(),
            self.tls.as_ref(),
            &self.limits,
            deadline,
        )
        .map_err(|e| self.map_err(e))?;
        let (r, reuse) = c
            .exchange(head, body, &self.limits, deadline)
            .map_err(|e| self.map_err(e))?;
        Ok((r, reuse, c))
    }

    fn head(
        &self,
        method: &str,
        path: &str,
        auth: Option<&Auth<'_>>,
        body: Option<&[u8]>,
        if_match: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        // Values that came from the BMC (token, ETag) must not smuggle header lines.
        let clean = |v: &str| !v.bytes().any(|b| b.is_ascii_control());
        if !path.starts_with('/') || !clean(path) || path.contains(' ') {
            return Err(Error::Config(format!("bad request path {path:?}")));
        }
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: outband-agent/{}\r\n\
             Accept: application/json\r\nOData-Version: 4.0\r\n",
            self.origin.host(),
            self.origin.port(),
            env!("CARGO_PKG_VERSION"),
        );
        let mut out = Zeroizing::new(Vec::with_capacity(h.len() + 256));
        let mut extra: Vec<(&str, &str)> = Vec::new();
        match auth {
            Some(Auth::Basic(v)) => extra.push(("Authorization", v)),
            Some(Auth::Token(t)) => extra.push(("X-Auth-Token", t)),
            None => {}
        }
        if let Some(tag) = if_match {
            extra.push(("If-Match", tag));
        }
        if body.is_some() {
            extra.push(("Content-Type", "application/json"));
        }
        if extra.iter().any(|(_, v)| !clean(v)) {
            return Err(Error::Protocol(
                "a header value from the BMC has control characters".into(),
            ));
        }
        if body.is_some() || matches!(method, "POST" | "PATCH" | "PUT") {
            h.push_str(&format!(
                "Content-Length: {}\r\n",
                body.map_or(0, <[u8]>::len)
            ));
        }
        out.extend_from_slice(h.as_bytes());
        for (k, v) in extra {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(out)
    }

    fn map_err(&self, e: WireError) -> Error {
        if let Some(seen) = &self.seen {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Some(observed), Some(expected)) = (seen.mismatch.take(), seen.trusted) {
                return Error::TlsPinMismatch { expected, observed };
            }
        }
        match e {
            WireError::Resolve(m) => Error::Unreachable(format!("resolve: {m}")),
            WireError::Connect(io) => Error::Unreachable(io.to_string()),
            WireError::Timeout(what) => Error::Timeout(format!("{what} deadline passed")),
            WireError::Tls(io) => Error::Protocol(format!("TLS handshake: {io}")),
            WireError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                Error::Protocol(format!("TLS: {io}"))
            }
            WireError::Io(io) => Error::Unreachable(io.to_string()),
            WireError::Protocol(m) => Error::Protocol(m),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a request authenticates.
#[derive(Debug)]
pub(crate) enum Auth<'a> {
    /// `Authorization: Basic …`.
    Basic(&'a str),
    /// `X-Auth-Token: …` of a session.
    Token(&'a str),
}
