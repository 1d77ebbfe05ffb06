//! A small HTTP/1.1 client for the manager's gateway API (`/api/v1/gateway/*`).
//!
//! One connection per call (a call every few seconds does not need a pool), plain TCP
//! for `http://`, rustls (ring) for `https://`. Every call has one deadline covering
//! connect, TLS, request and the whole response; response bodies are capped at
//! [`MAX_RESPONSE`] bytes; errors name the call.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use outband_api::ErrorBody;
use outband_api::gateways::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse, RevocationPage,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::secret::Secret;

/// Largest response body read from the manager (a full revocation page is ~150 KiB).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// Where the system CA bundle is read from for `https://` without `--manager-ca-file`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a call to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL cannot be used.
    #[error("manager URL {0:?} is not usable")]
    BadUrl(String),
    /// The CA file for `https://` could not be loaded.
    #[error("loading manager CA file {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The call did not finish in time.
    #[error("{call}: no answer within {timeout:?}")]
    Timeout {
        /// e.g. `POST /api/v1/gateway/heartbeat`.
        call: String,
        /// The deadline.
        timeout: Duration,
    },
    /// TCP, TLS or HTTP failed.
    #[error("{call}: {message}")]
    Transport {
        /// The call.
        call: String,
        /// What went wrong.
        message: String,
    },
    /// The manager answered with an error status.
    #[error("{call}: manager answered {status} {code}: {message}")]
    Status {
        /// The call.
        call: String,
        /// HTTP status.
        status: StatusCode,
        /// The manager's error code (`invalid_token`, ...), or empty.
        code: String,
        /// The manager's message, or a (truncated) body.
        message: String,
    },
    /// The body was too large or not the expected JSON.
    #[error("{call}: bad response body: {message}")]
    Body {
        /// The call.
        call: String,
        /// What went wrong.
        message: String,
    },
}

impl ClientError {
    /// Whether the manager refused our credential or token (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }
}

/// The manager's base URL and how to reach it.
#[derive(Clone)]
pub struct ManagerClient {
    base: String,
    base_path: String,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl std::fmt::Debug for ManagerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerClient")
            .field("base", &self.base)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ManagerClient {
    /// A client for `base` (validated by the config: `http(s)://host[:port][/path]`).
    /// For `https`, trusts the PEM certificates in `ca_file` (default: the system
    /// bundle).
    pub fn new(
        base: &str,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(base.to_owned());
        let uri: Uri = base.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let path = ca_file.unwrap_or(std::path::Path::new(SYSTEM_CA_BUNDLE));
            let ca_err = |message: String| ClientError::Ca {
                path: path.display().to_string(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificates".into()));
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| ca_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            host,
            port,
            tls,
            timeout,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/gateway/register` with the registration credential.
    pub async fn register(
        &self,
        credential: &Secret,
        version: &str,
    ) -> Result<RegisterResponse, ClientError> {
        let body = RegisterRequest {
            registration_credential: credential.expose().to_owned(),
            version: Some(version.to_owned()),
        };
        self.call(Method::POST, "/api/v1/gateway/register", None, Some(&body))
            .await
    }

    /// `POST /api/v1/gateway/heartbeat`.
    pub async fn heartbeat(
        &self,
        token: &Secret,
        report: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(token),
            Some(report),
        )
        .await
    }

    /// `GET /api/v1/gateway/revocations?since=`.
    pub async fn revocations(
        &self,
        token: &Secret,
        since: i64,
        after: Option<&str>,
    ) -> Result<RevocationPage, ClientError> {
        let mut path = format!("/api/v1/gateway/revocations?since={since}");
        if let Some(after) = after {
            path.push_str("&after=");
            percent_encode(after, &mut path);
        }
        self.call::<(), _>(Method::GET, &path, Some(token), None)
            .await
    }

    /// One call with a JSON body (or none) and a JSON answer, within the deadline.
    pub(crate) async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let bytes = self.call_raw(method, path, token, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Body {
            call,
            message: e.to_string(),
        })
    }

    /// Like [`ManagerClient::call`], the successful answer's body as bytes (at most
    /// [`MAX_RESPONSE`]).
    pub(crate) async fn call_raw<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&B>,
    ) -> Result<Bytes, ClientError> {
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let fut = self.call_inner(&call, method, path, token, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                call,
                timeout: self.timeout,
            }),
        }
    }

    async fn call_inner<B: Serialize>(
        &self,
        call: &str,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&B>,
    ) -> Result<Bytes, ClientError> {
        let transport = |message: String| ClientError::Transport {
            call: call.to_owned(),
            message,
        };
        let body_err = |message: String| ClientError::Body {
            call: call.to_owned(),
            message,
        };
        // Origin form on the request line; the host goes in the Host header.
        let uri = format!("{}{path}", self.base_path);
        let host_header = match (self.tls.is_some(), self.port) {
            (true, 443) | (false, 80) => self.host_for_header(),
            (_, port) => format!("{}:{port}", self.host_for_header()),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host_header)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("outband-gateway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = token {
            let mut value = header::HeaderValue::try_from(format!("Bearer {}", t.expose()))
                .map_err(|_| transport("the gateway token is not a valid header value".into()))?;
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| transport(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| transport(format!("building the request: {e}")))?;

        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| transport(format!("connecting to {}:{}: {e}", self.host, self.port)))?;
        let _ = tcp.set_nodelay(true);
        let resp = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| transport(format!("TLS: {e}")))?;
                send(TokioIo::new(tls), req, self.timeout).await
            }
            None => send(TokioIo::new(tcp), req, self.timeout).await,
        }
        .map_err(transport)?;

        let status = resp.status();
        let collected = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| body_err(format!("reading (at most {MAX_RESPONSE} bytes): {e}")))?
            .to_bytes();
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&collected) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    String::new(),
                    String::from_utf8_lossy(&collected[..collected.len().min(200)]).into_owned(),
                ),
            };
            return Err(ClientError::Status {
                call: call.to_owned(),
                status,
                code,
                message,
            });
        }
        Ok(collected)
    }

    fn host_for_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

async fn send<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection task ends when the response is read and the sender dropped; a
    // stalled manager cannot keep it past the call's deadline.
    tokio::spawn(async move {
        if let Ok(Err(e)) = tokio::time::timeout(timeout, conn).await {
            tracing::debug!(error = %e, "manager connection ended");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}

/// Appends `s` percent-encoded for a query value (everything but RFC 3986's
/// unreserved characters).
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}
