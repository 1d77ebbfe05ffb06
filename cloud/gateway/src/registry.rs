//! Connected agents by id, and opening streams to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outband_proto::pb::{BmcAuth, EndpointSource, InventoryReport, RefuseCode, StreamKind};
use outband_tunnel::{OpenError, Stream, Tunnel};
use serde::Serialize;

use crate::metrics::{Gauges, Metrics};

/// Most endpoints kept from one agent's inventory report.
pub const MAX_INVENTORY_ENDPOINTS: usize = 1024;
/// Longest endpoint URL kept from an inventory report.
pub const MAX_ENDPOINT_URL: usize = 512;

/// How long [`Registry::open_stream`] waits for the agent's answer.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the hello and the certificate told us about a connected agent.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// Derived from the client certificate's key.
    pub agent_id: String,
    /// Remote address of the TCP connection.
    pub peer_addr: SocketAddr,
    /// When the hello exchange completed.
    pub connected_at: SystemTime,
    /// Negotiated protocol version.
    pub protocol_version: u32,
    /// The agent's build, from its hello.
    pub agent_version: String,
    /// Pairing code derived from the agent's key.
    pub pairing_code: String,
    /// Capabilities from the hello.
    pub capabilities: Vec<String>,
}

/// One endpoint of an agent's inventory, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    /// e.g. `vnc://10.0.0.5:5900`.
    pub url: String,
    /// Whether the agent could reach it.
    pub reachable: bool,
    /// `config` (the agent's allow-list) or `discovery` (found by scanning).
    pub source: &'static str,
    /// For TLS endpoints found by discovery: the certificate's SHA-256 (hex), to pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// A connected agent as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// Agent id.
    pub agent_id: String,
    /// Remote address.
    pub peer_addr: String,
    /// RFC 3339, UTC.
    pub connected_at: String,
    /// Seconds since the Unix epoch.
    pub connected_at_unix: u64,
    /// The agent's build.
    pub version: String,
    /// Negotiated protocol version.
    pub protocol_version: u32,
    /// Pairing code.
    pub pairing_code: String,
    /// Capabilities from the hello.
    pub capabilities: Vec<String>,
    /// Streams holding an id on the connection now.
    pub streams: usize,
    /// The tunnel's round trip when nothing queues on it, in milliseconds: the
    /// smallest of the recent heartbeat round trips (absent until the first came
    /// back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Bytes received on the tunnel (with frame headers).
    pub bytes_in: u64,
    /// Bytes sent on the tunnel (with frame headers).
    pub bytes_out: u64,
    /// Latest inventory report; empty until the agent sent one.
    pub inventory: Vec<EndpointView>,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenStreamError {
    /// No live connection from that agent.
    #[error("agent {0} is not connected")]
    NotConnected(String),
    /// The agent refused the stream.
    #[error("agent refused the stream ({}{}{error_code}): {message}", refuse_code_name(*.code), if error_code.is_empty() { "" } else { ", " })]
    Refused {
        /// Refusal code.
        code: RefuseCode,
        /// The agent's reason.
        message: String,
        /// Stable detail from the agent, e.g. `bmc_auth_failed`; may be empty.
        error_code: String,
    },
    /// The agent did not answer in time.
    #[error("agent did not answer the stream open within {0:?}")]
    Timeout(Duration),
    /// The connection failed while opening, or the stream could not be created.
    #[error("{0}")]
    Failed(String),
}

/// Short name of a refusal code (`forbidden`, `unreachable`, ...).
pub fn refuse_code_name(code: RefuseCode) -> &'static str {
    match code {
        RefuseCode::Unspecified => "unspecified",
        RefuseCode::Forbidden => "forbidden",
        RefuseCode::Unreachable => "unreachable",
        RefuseCode::Timeout => "timeout",
        RefuseCode::UnsupportedKind => "unsupported_kind",
        RefuseCode::BadTarget => "bad_target",
        RefuseCode::TooManyStreams => "too_many_streams",
        RefuseCode::AuthFailed => "auth_failed",
        RefuseCode::BmcError => "bmc_error",
    }
}

#[derive(Debug)]
struct Entry {
    info: AgentInfo,
    conn_id: u64,
    tunnel: Tunnel,
    inventory: Option<InventoryReport>,
}

/// The agents connected to this gateway. One entry per agent id: a newer connection
/// replaces an older one.
#[derive(Debug)]
pub struct Registry {
    agents: Mutex<HashMap<String, Entry>>,
    next_conn: AtomicU64,
    metrics: Arc<Metrics>,
    open_timeout: Duration,
    changed: tokio::sync::Notify,
}

impl Registry {
    /// An empty registry that counts stream opens in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_open_timeout(metrics, OPEN_TIMEOUT)
    }

    /// Like [`Registry::new`] with a custom stream open timeout.
    pub fn with_open_timeout(metrics: Arc<Metrics>, open_timeout: Duration) -> Self {
        Self {
            agents: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            metrics,
            open_timeout,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Signalled when an agent connects, disconnects or sends an inventory report (one
    /// stored permit: a change while nobody waits wakes the next waiter at once). The
    /// manager link waits on it to report new agents without waiting for the next
    /// heartbeat.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection and returns its connection id. A previous connection of
    /// the same agent is closed with "replaced by a new connection".
    pub fn insert(&self, info: AgentInfo, tunnel: Tunnel) -> u64 {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let agent_id = info.agent_id.clone();
        let old = self.lock().insert(
            agent_id.clone(),
            Entry {
                info,
                conn_id,
                tunnel,
                inventory: None,
            },
        );
        if let Some(old) = old {
            tracing::info!(
                agent_id = %agent_id,
                old_peer = %old.info.peer_addr,
                "agent reconnected; closing its previous connection"
            );
            old.tunnel.close("replaced by a new connection");
        }
        self.changed.notify_one();
        conn_id
    }

    /// Removes the agent if its entry is still connection `conn_id`.
    pub fn remove_if(&self, agent_id: &str, conn_id: u64) -> bool {
        let mut agents = self.lock();
        if agents.get(agent_id).is_some_and(|e| e.conn_id == conn_id) {
            agents.remove(agent_id);
            self.changed.notify_one();
            true
        } else {
            false
        }
    }

    /// Stores an inventory report from connection `conn_id` of the agent.
    pub fn set_inventory(&self, agent_id: &str, conn_id: u64, mut report: InventoryReport) {
        // Bounded: what an agent reports is hostile input that the API serves back.
        report.endpoints.retain(|e| e.url.len() <= MAX_ENDPOINT_URL);
        report.endpoints.truncate(MAX_INVENTORY_ENDPOINTS);
        if let Some(e) = self
            .lock()
            .get_mut(agent_id)
            .filter(|e| e.conn_id == conn_id)
        {
            e.inventory = Some(report);
            self.changed.notify_one();
        }
    }

    /// Number of connected agents.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All connected agents, sorted by id.
    pub fn list(&self) -> Vec<AgentView> {
        let mut out: Vec<_> = self.lock().values().map(view).collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        out
    }

    /// One connected agent.
    pub fn get(&self, agent_id: &str) -> Option<AgentView> {
        self.lock().get(agent_id).map(view)
    }

    /// The tunnel of a connected agent.
    pub fn tunnel(&self, agent_id: &str) -> Option<Tunnel> {
        self.lock().get(agent_id).map(|e| e.tunnel.clone())
    }

    /// Closes every connection with `reason`.
    pub fn close_all(&self, reason: &str) {
        for e in self.lock().values() {
            e.tunnel.close(reason);
        }
    }

    /// Scrape-time values for the metrics.
    pub fn gauges(&self) -> Gauges {
        let agents = self.lock();
        let mut g = Gauges {
            agents_connected: agents.len() as u64,
            ..Gauges::default()
        };
        for e in agents.values() {
            g.tunnel_bytes_in += outband_tunnel::load(&e.tunnel.stats().bytes_in);
            g.tunnel_bytes_out += outband_tunnel::load(&e.tunnel.stats().bytes_out);
        }
        g
    }

    /// Opens a stream of `kind` to `target` through the agent's connection and waits
    /// (up to the open timeout, 10 s by default) for the agent to accept it. `auth` is
    /// what the agent needs to log in to the BMC (console kinds).
    pub async fn open_stream(
        &self,
        agent_id: &str,
        kind: StreamKind,
        target: &str,
        auth: Option<BmcAuth>,
    ) -> Result<Stream, OpenStreamError> {
        let res = self.open_inner(agent_id, kind, target, auth).await;
        let counter = match &res {
            Ok(_) => &self.metrics.streams_opened,
            Err(OpenStreamError::Refused { .. }) => &self.metrics.streams_refused,
            Err(_) => &self.metrics.streams_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        res
    }

    async fn open_inner(
        &self,
        agent_id: &str,
        kind: StreamKind,
        target: &str,
        auth: Option<BmcAuth>,
    ) -> Result<Stream, OpenStreamError> {
        let tunnel = self
            .tunnel(agent_id)
            .ok_or_else(|| OpenStreamError::NotConnected(agent_id.to_owned()))?;
        let open = tunnel.open_with_auth(kind, target, auth);
        match tokio::time::timeout(self.open_timeout, open).await {
            Err(_) => Err(OpenStreamError::Timeout(self.open_timeout)),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(OpenError::Refused {
                code,
                message,
                error_code,
            })) => Err(OpenStreamError::Refused {
                code,
                message,
                error_code,
            }),
            Ok(Err(OpenError::Connection(e))) => Err(OpenStreamError::Failed(format!(
                "agent connection closed while opening: {e}"
            ))),
            Ok(Err(e)) => Err(OpenStreamError::Failed(e.to_string())),
        }
    }
}

fn view(e: &Entry) -> AgentView {
    let unix = e
        .info
        .connected_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    AgentView {
        agent_id: e.info.agent_id.clone(),
        peer_addr: e.info.peer_addr.to_string(),
        connected_at: humantime::format_rfc3339_seconds(e.info.connected_at).to_string(),
        connected_at_unix: unix,
        version: e.info.agent_version.clone(),
        protocol_version: e.info.protocol_version,
        pairing_code: e.info.pairing_code.clone(),
        capabilities: e.info.capabilities.clone(),
        streams: e.tunnel.stream_count(),
        rtt_ms: e.tunnel.idle_rtt().map(|d| d.as_secs_f64() * 1e3),
        bytes_in: outband_tunnel::load(&e.tunnel.stats().bytes_in),
        bytes_out: outband_tunnel::load(&e.tunnel.stats().bytes_out),
        inventory: e
            .inventory
            .iter()
            .flat_map(|r| r.endpoints.iter())
            .map(|ep| EndpointView {
                url: ep.url.clone(),
                reachable: ep.reachable,
                source: match ep.source() {
                    EndpointSource::Config => "config",
                    EndpointSource::Discovery => "discovery",
                    EndpointSource::Unspecified => "unspecified",
                },
                cert_sha256: (ep.cert_sha256.len() == 32).then(|| {
                    ep.cert_sha256
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                }),
            })
            .collect(),
    }
}
