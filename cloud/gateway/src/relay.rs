//! TCP relays: a loopback listener whose every connection becomes a stream to one
//! agent and target, with bytes copied both ways and half-closes passed on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use outband_proto::pb::{self, BmcAuth, StreamKind};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::registry::Registry;

/// Copy buffer per relay direction: large enough that bulk transfers are not
/// syscall-bound.
const RELAY_BUF: usize = 64 * 1024;

/// A relay as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayInfo {
    /// Relay id (for DELETE).
    pub relay_id: u64,
    /// The agent streams go through.
    pub agent_id: String,
    /// What the agent does with each stream: `tcp` (raw relay), `vnc` (the agent logs
    /// in to the BMC's VNC server and offers security type None) or `serial`.
    pub kind: &'static str,
    /// The endpoint the agent connects to.
    pub target: String,
    /// Whether BMC credentials are attached (they are never shown).
    pub has_auth: bool,
    /// Where TCP clients connect (`127.0.0.1:PORT`).
    pub listen: String,
}

/// How long the agent has to confirm a serial break.
const BREAK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a break was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakError {
    /// No relay with that id.
    #[error("no such relay")]
    NoRelay,
    /// The relay is not a serial console.
    #[error("breaks go to serial relays only")]
    NotSerial,
    /// Nobody is connected to the relay.
    #[error("the relay has no open console connection")]
    NoStreams,
    /// The agent refused or did not answer.
    #[error("the agent did not send the break: {0}")]
    Agent(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// What a relay opens for each client connection.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// The agent streams go through.
    pub agent_id: String,
    /// Stream kind.
    pub kind: StreamKind,
    /// The endpoint the agent connects to.
    pub target: String,
    /// BMC credentials sent with each stream open (held in memory only).
    pub auth: Option<BmcAuth>,
}

/// The API name of a stream kind.
pub fn kind_name(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Unspecified => "unspecified",
        StreamKind::Tcp => "tcp",
        StreamKind::Vnc => "vnc",
        StreamKind::Serial => "serial",
    }
}

#[derive(Debug)]
struct Relay {
    info: RelayInfo,
    cancel: CancellationToken,
    streams: Arc<Mutex<HashSet<u32>>>,
}

#[derive(Debug)]
struct Conn {
    relay_id: u64,
    spec: Arc<RelaySpec>,
    /// Ids of this relay's open streams.
    streams: Arc<Mutex<HashSet<u32>>>,
}

/// All relays.
#[derive(Debug)]
pub struct Relays {
    relays: Mutex<HashMap<u64, Relay>>,
    next_id: AtomicU64,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Relays {
    /// No relays yet; all of them stop when `shutdown` is cancelled.
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            relays: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            registry,
            metrics,
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Relay>> {
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds `127.0.0.1:0` and opens a stream as `spec` says for each connection.
    pub async fn create(&self, spec: RelaySpec) -> std::io::Result<RelayInfo> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let listen = listener.local_addr()?;
        let relay_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = RelayInfo {
            relay_id,
            agent_id: spec.agent_id.clone(),
            kind: kind_name(spec.kind),
            target: spec.target.clone(),
            has_auth: spec.auth.is_some(),
            listen: listen.to_string(),
        };
        let cancel = self.shutdown.child_token();
        let streams = Arc::new(Mutex::new(HashSet::new()));
        self.lock().insert(
            relay_id,
            Relay {
                info: info.clone(),
                cancel: cancel.clone(),
                streams: streams.clone(),
            },
        );
        tracing::info!(relay_id, agent_id = %spec.agent_id, kind = info.kind, target = %spec.target, listen = %listen, "relay created");
        tokio::spawn(accept_loop(
            listener,
            Conn {
                relay_id,
                spec: Arc::new(spec),
                streams,
            },
            cancel,
            self.registry.clone(),
            self.metrics.clone(),
        ));
        Ok(info)
    }

    /// Sends a serial break on every open stream of a `serial` relay; returns how many
    /// streams got one.
    pub async fn send_break(&self, relay_id: u64) -> Result<usize, BreakError> {
        let (agent_id, ids) = {
            let relays = self.lock();
            let r = relays.get(&relay_id).ok_or(BreakError::NoRelay)?;
            if r.info.kind != kind_name(StreamKind::Serial) {
                return Err(BreakError::NotSerial);
            }
            let ids: Vec<u32> = lock(&r.streams).iter().copied().collect();
            (r.info.agent_id.clone(), ids)
        };
        if ids.is_empty() {
            return Err(BreakError::NoStreams);
        }
        let tunnel = self
            .registry
            .tunnel(&agent_id)
            .ok_or(BreakError::Agent("the agent is not connected".into()))?;
        let mut sent = 0;
        for stream_id in ids {
            let req = pb::request::Body::SerialBreak(pb::SerialBreakRequest { stream_id });
            match tokio::time::timeout(BREAK_TIMEOUT, tunnel.request(req)).await {
                Ok(Ok(pb::Reply {
                    body: Some(pb::reply::Body::SerialBreak(_)),
                    ..
                })) => sent += 1,
                Ok(Ok(other)) => {
                    let why = match other.body {
                        Some(pb::reply::Body::Error(e)) => format!("{}: {}", e.code, e.message),
                        _ => "an unexpected reply".into(),
                    };
                    return Err(BreakError::Agent(why));
                }
                Ok(Err(e)) => return Err(BreakError::Agent(e.to_string())),
                Err(_) => return Err(BreakError::Agent("no answer within 5 s".into())),
            }
        }
        Ok(sent)
    }

    /// Stops a relay and its connections. False if there is no such relay.
    pub fn remove(&self, relay_id: u64) -> bool {
        match self.lock().remove(&relay_id) {
            Some(r) => {
                r.cancel.cancel();
                tracing::info!(relay_id, "relay removed");
                true
            }
            None => false,
        }
    }

    /// All relays, by id.
    pub fn list(&self) -> Vec<RelayInfo> {
        let mut out: Vec<_> = self.lock().values().map(|r| r.info.clone()).collect();
        out.sort_by_key(|r| r.relay_id);
        out
    }

    /// Number of relays.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no relays.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn accept_loop(
    listener: TcpListener,
    info: Conn,
    cancel: CancellationToken,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) {
    loop {
        let (tcp, client) = tokio::select! {
            _ = cancel.cancelled() => return,
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(relay_id = info.relay_id, error = %e, "relay accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(relay_connection(
            tcp,
            client,
            Conn {
                relay_id: info.relay_id,
                spec: info.spec.clone(),
                streams: info.streams.clone(),
            },
            cancel.clone(),
            registry.clone(),
            metrics.clone(),
        ));
    }
}

async fn relay_connection(
    mut tcp: TcpStream,
    client: SocketAddr,
    info: Conn,
    cancel: CancellationToken,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) {
    let open = tokio::select! {
        _ = cancel.cancelled() => return,
        res = registry.open_stream(&info.spec.agent_id, info.spec.kind, &info.spec.target, info.spec.auth.clone()) => res,
    };
    let stream = match open {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                relay_id = info.relay_id,
                agent_id = %info.spec.agent_id,
                target = ?info.spec.target,
                client = %client,
                reason = ?e.to_string(),
                "relay stream open failed; closing client connection"
            );
            return;
        }
    };
    let stream_id = stream.id();
    lock(&info.streams).insert(stream_id);
    let _registered = OnDrop(|| {
        lock(&info.streams).remove(&stream_id);
    });
    let mut stream = stream.compat();
    tracing::debug!(relay_id = info.relay_id, stream_id, client = %client, "relay connection open");
    // copy_bidirectional shuts down each writer when its reader hits EOF: a TCP EOF
    // becomes a stream fin (poll_close) and a stream fin a TCP write shutdown.
    tokio::select! {
        _ = cancel.cancelled() => {
            tracing::debug!(relay_id = info.relay_id, stream_id, "relay connection cancelled");
        }
        res = tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, RELAY_BUF, RELAY_BUF) => match res {
            Ok((to_agent, from_agent)) => {
                metrics.relay_bytes_to_agent.fetch_add(to_agent, Ordering::Relaxed);
                metrics.relay_bytes_from_agent.fetch_add(from_agent, Ordering::Relaxed);
                tracing::debug!(relay_id = info.relay_id, stream_id, to_agent, from_agent, "relay connection done");
            }
            Err(e) => {
                tracing::info!(relay_id = info.relay_id, stream_id, client = %client, error = %e, "relay connection ended with error");
            }
        }
    }
}
