//! The HTTP accept loop. `axum::serve` sets no timer, so a client that never finishes
//! its request headers holds a connection forever; here hyper gets a header-read
//! timeout (which also closes idle keep-alive connections) and the number of open
//! connections is capped. HTTP/1.1 only.
//!
//! With TLS ([`crate::tls`]) the handshake runs in the connection's own task, under
//! [`Limits::handshake_timeout`] (waiting for a slot included) and at most
//! [`Limits::max_handshakes`] at once: a client that stalls its handshake costs one
//! slot for a while, never the accept loop; one address may have at most
//! [`Limits::max_handshakes_per_ip`] in progress (more are closed at once), so one
//! address cannot take every slot. Every request carries a [`Transport`]
//! extension saying whether it came over TLS.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How a request reached this listener (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Over our TLS listener.
    pub tls: bool,
}

/// Connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time allowed for a request's headers (and for an idle connection's next request).
    pub header_read_timeout: Duration,
    /// Time open requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Time a TLS client gets for its handshake (waiting for a slot included).
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at most.
    pub max_handshakes: usize,
    /// TLS handshakes in progress (or waiting for a slot) from one address (IPv6: one
    /// /64) at most; further connections from it are closed at once, so one address
    /// cannot take every slot.
    pub max_handshakes_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
            max_handshakes_per_ip: 8,
        }
    }
}

/// Serves `app` on `listener` (TLS when `tls` is set) until `shutdown` completes,
/// then lets open requests finish (up to the grace period).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<crate::tls::TlsReloader>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    let pending = Arc::new(Pending::default());
    let graceful = GracefulShutdown::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        // Taken before the handshake: shutdown waits for (or cancels) it too.
        let watcher = graceful.watcher();
        let Some(acceptor) = tls.as_ref().map(|t| TlsAcceptor::from(t.config())) else {
            tokio::spawn(async move {
                let _permit = permit;
                serve_connection(socket, peer, false, app, limits, watcher).await;
            });
            continue;
        };
        let Some(pending_guard) = pending.admit(peer.ip(), limits.max_handshakes_per_ip) else {
            tracing::debug!(%peer, "too many TLS handshakes from this address; closed");
            continue;
        };
        let handshakes = handshakes.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = async {
                let _slot = handshakes.acquire().await.expect("semaphore never closed");
                acceptor.accept(socket).await
            };
            let stream = tokio::select! {
                r = tokio::time::timeout(limits.handshake_timeout, handshake) => match r {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.cancelled() => return,
            };
            drop(pending_guard);
            serve_connection(stream, peer, true, app, limits, watcher).await;
        });
    }
    drop(listener);
    stop.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
        }
    }
}

/// TLS handshakes in progress per source address (IPv6 by /64).
#[derive(Debug, Default)]
struct Pending(Mutex<HashMap<IpAddr, usize>>);

/// One pending handshake; gives its place back on drop.
struct PendingGuard {
    pending: Arc<Pending>,
    key: IpAddr,
}

impl Pending {
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            v4 => v4,
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PendingGuard> {
        let key = Pending::key(ip);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_default();
        if *n >= limit.max(1) {
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            pending: self.clone(),
            key,
        })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut map = self.pending.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    app: Router,
    limits: Limits,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        req.extensions_mut().insert(Transport { tls });
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
