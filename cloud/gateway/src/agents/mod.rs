//! The agent listener: TLS with client certificates, the hello exchange, and one
//! task per connected agent.
//!
//! - [`verifier`]: which client certificates are accepted.
//! - [`handshake`]: TLS accept and hello for one connection, with rejection reasons.
//! - [`connection`]: a connected agent's tunnel until it ends.

pub mod connection;
pub mod handshake;
pub mod read_ahead;
pub mod verifier;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::manager::join::Joiner;
use crate::metrics::{HandshakeResult, Metrics};
use crate::pki::ServerIdentity;
use crate::registry::Registry;

/// `outband_tunnel::Timer` on tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl outband_tunnel::Timer for TokioTimer {
    fn sleep_until(
        &self,
        deadline: Instant,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// Settings for agent connections.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Heartbeat interval announced in the HelloAck and used by our multiplexer.
    pub heartbeat_interval: Duration,
    /// Deadline for TLS plus hello (including waiting for a handshake slot).
    pub handshake_timeout: Duration,
    /// Per-stream receive window the gateway grants.
    pub window: u32,
    /// Unacknowledged bytes per stream while streams share the connection.
    pub shared_window: u32,
    /// The largest a stream's receive window grows to.
    pub max_window: u32,
}

/// Most connections from one address that may be in their handshake (waiting for a
/// slot or in TLS and hello) at once: one address cannot take every slot.
pub const MAX_PENDING_PER_IP: usize = 32;
/// Most connections waiting for or in a handshake, as a multiple of the slots: beyond
/// that new connections are closed at once instead of each holding a task and a file
/// descriptor until the timeout.
pub const PENDING_PER_SLOT: usize = 4;

/// Connections accepted but not yet through their handshake, per source address.
#[derive(Debug, Default)]
struct Pending {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Holds one pending-handshake place; gives it back on drop.
struct PendingGuard {
    pending: Arc<Mutex<Pending>>,
    ip: IpAddr,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total -= 1;
        if let Some(n) = p.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                p.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Everything the agent listener needs.
pub struct AgentServer {
    acceptor: TlsAcceptor,
    handshakes: Arc<Semaphore>,
    max_pending: usize,
    pending: Arc<Mutex<Pending>>,
    settings: AgentSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    joiner: Arc<Joiner>,
}

/// Builds the TLS 1.3 server configuration that requires agent client certificates.
pub fn tls_config(identity: ServerIdentity) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier::AgentCertVerifier::new(&provider);
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain, identity.key)
}

impl std::fmt::Debug for AgentServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentServer")
            .field("settings", &self.settings)
            .field("handshake_slots", &self.handshakes.available_permits())
            .finish_non_exhaustive()
    }
}

impl AgentServer {
    /// A listener context; `max_handshakes` caps TLS handshakes in progress;
    /// `joiner` spends the join tokens agents present.
    pub fn new(
        tls: rustls::ServerConfig,
        max_handshakes: usize,
        settings: AgentSettings,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        joiner: Arc<Joiner>,
    ) -> Arc<Self> {
        Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            max_pending: max_handshakes.saturating_mul(PENDING_PER_SLOT),
            pending: Arc::default(),
            settings,
            registry,
            metrics,
            joiner,
        })
    }

    /// Accepts agent connections until `shutdown` is cancelled, then closes every
    /// agent connection and waits (briefly) for them to end.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                res = listener.accept() => match res {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting agent connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let guard = match self.admit(peer.ip()) {
                Ok(g) => g,
                Err(reason) => {
                    // Closed at once: a flood from one address (or a flood beyond
                    // the backlog) must not hold tasks, descriptors or every slot.
                    self.metrics.handshake(HandshakeResult::Overloaded);
                    tracing::warn!(peer = %peer, reason = ?reason, "agent connection rejected");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            outband_tunnel::tune_tunnel_socket(socket2::SockRef::from(&tcp));
            let this = self.clone();
            tasks.spawn(async move { this.handle(tcp, peer, guard).await });
        }
        drop(listener);
        tasks.close();
        self.registry.close_all("gateway shutting down");
        if tokio::time::timeout(Duration::from_secs(3), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("agent connections did not close within 3 s");
        }
    }

    /// Takes a pending-handshake place for a connection from `ip`, or says why not.
    fn admit(&self, ip: IpAddr) -> Result<PendingGuard, String> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.total >= self.max_pending {
            return Err(format!(
                "handshake backlog full ({} connections waiting or in handshake)",
                p.total
            ));
        }
        let n = p.per_ip.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_IP {
            return Err(format!(
                "too many handshakes in progress from {ip} (at most {MAX_PENDING_PER_IP})"
            ));
        }
        *n += 1;
        p.total += 1;
        Ok(PendingGuard {
            pending: self.pending.clone(),
            ip,
        })
    }

    async fn handle(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        pending: PendingGuard,
    ) {
        // Boxed: the handshake's state (a whole TLS stream mid-handshake) is freed when
        // it completes instead of sizing this task for the connection's lifetime.
        let attempt =
            Box::pin(async {
                // Waiting for a slot counts against the deadline, so a flood of stalled
                // peers cannot hold anyone else off for longer than the timeout.
                let _permit =
                    self.handshakes.clone().acquire_owned().await.map_err(|_| {
                        handshake::Rejection::tls("handshake limiter closed".into())
                    })?;
                handshake::accept(&self.acceptor, tcp, peer, &self.settings).await
            });
        let outcome = tokio::time::timeout(self.settings.handshake_timeout, attempt).await;
        drop(pending);
        let established = match outcome {
            Err(_) => {
                self.metrics.handshake(HandshakeResult::Timeout);
                tracing::warn!(
                    peer = %peer,
                    reason = ?"handshake timeout",
                    "agent connection rejected"
                );
                return;
            }
            Ok(Err(rej)) => {
                self.metrics.handshake(rej.kind);
                tracing::warn!(peer = %peer, reason = ?rej.reason, "agent connection rejected");
                return;
            }
            Ok(Ok(est)) => est,
        };
        self.metrics.handshake(HandshakeResult::Ok);
        connection::run(
            established,
            &self.settings,
            self.registry.clone(),
            self.metrics.clone(),
            self.joiner.clone(),
        )
        .await;
    }
}
