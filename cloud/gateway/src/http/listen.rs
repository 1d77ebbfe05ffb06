//! The user API's accept loop: plain HTTP (loopback only, checked by the config) or
//! TLS (tokio-rustls, ring), HTTP/1.1, with bounds `axum::serve` does not set: the
//! time for the TLS handshake and for the request headers (which also ends idle
//! keep-alive connections), the header size and count, and the number of open
//! connections (beyond it new connections are closed at once).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Bounds of the user listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time for a request's headers (and an idle connection's next request).
    pub header_read_timeout: Duration,
    /// Read buffer, so the most header bytes a request may send (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// Time open requests get at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // An 8 KiB token plus the usual headers.
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A rustls server configuration for users: the gateway's certificate, no client
/// certificates, TLS 1.2 and 1.3, HTTP/1.1.
pub fn user_tls_config(
    identity: crate::pki::ServerIdentity,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(identity.cert_chain, identity.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `cancel`, over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ListenLimits,
    cancel: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    loop {
        let (socket, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "user API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "user API: too many open connections; closing a new one");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let http = http.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                None => {
                    let conn = http.serve_connection(TokioIo::new(socket), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        acceptor.accept(socket),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "user API: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "user API: TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "user API: connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("user API: shutdown grace period over; dropping open connections");
        }
    }
}
