//! Gateway counters and their Prometheus text exposition.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use outband_proto::mux::ConnError;

/// Outcome of one agent connection attempt (TLS handshake plus hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeResult {
    /// The agent is connected.
    Ok,
    /// The client presented no certificate.
    NoClientCert,
    /// The client certificate was rejected.
    BadCert,
    /// Any other TLS failure.
    TlsError,
    /// The first frame was missing, malformed, not a hello, or out of bounds.
    BadHello,
    /// No common protocol version.
    VersionMismatch,
    /// TLS plus hello did not finish in time.
    Timeout,
    /// Closed before the handshake: too many pending from that address, or the
    /// backlog is full.
    Overloaded,
}

impl HandshakeResult {
    const ALL: [HandshakeResult; 8] = [
        Self::Ok,
        Self::NoClientCert,
        Self::BadCert,
        Self::TlsError,
        Self::BadHello,
        Self::VersionMismatch,
        Self::Timeout,
        Self::Overloaded,
    ];

    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoClientCert => "no_client_cert",
            Self::BadCert => "bad_cert",
            Self::TlsError => "tls_error",
            Self::BadHello => "bad_hello",
            Self::VersionMismatch => "version_mismatch",
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
        }
    }
}

/// Label value classifying why an agent connection ended.
pub fn reason_kind(err: &ConnError) -> &'static str {
    match err {
        ConnError::Protocol(_) => "protocol",
        ConnError::GoAway(_) => "go_away",
        ConnError::Dead(_) => "heartbeat_timeout",
        ConnError::Closed(_) => "closed",
        ConnError::Transport(_) => "transport",
    }
}

const REASON_KINDS: [&str; 5] = [
    "protocol",
    "go_away",
    "heartbeat_timeout",
    "closed",
    "transport",
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    handshakes: Mutex<BTreeMap<HandshakeResult, u64>>,
    disconnects: Mutex<BTreeMap<&'static str, u64>>,
    /// Streams the gateway opened successfully.
    pub streams_opened: AtomicU64,
    /// Streams the agent refused.
    pub streams_refused: AtomicU64,
    /// Stream opens that failed otherwise (not connected, timeout, connection lost).
    pub streams_failed: AtomicU64,
    /// Relay bytes from TCP clients towards agents.
    pub relay_bytes_to_agent: AtomicU64,
    /// Relay bytes from agents towards TCP clients.
    pub relay_bytes_from_agent: AtomicU64,
    /// Heartbeats the manager accepted.
    pub manager_heartbeats_ok: AtomicU64,
    /// Heartbeats that failed (manager down, token refused, ...).
    pub manager_heartbeats_error: AtomicU64,
    /// Join tokens agents presented, by outcome (index: [`JOIN_RESULTS`]).
    pub joins: [AtomicU64; 4],
}

/// The `result` label of `outband_gateway_agent_joins_total`, in the order of
/// [`Metrics::joins`].
pub const JOIN_RESULTS: [&str; 4] = ["accepted", "refused", "already_decided", "not_used"];

/// Values the metrics do not own, read at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Connected agents.
    pub agents_connected: u64,
    /// Open relay listeners.
    pub relays: u64,
    /// Tunnel bytes received from connected agents (TLS plaintext, with frame headers).
    pub tunnel_bytes_in: u64,
    /// Tunnel bytes sent to connected agents.
    pub tunnel_bytes_out: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts a connection attempt.
    pub fn handshake(&self, result: HandshakeResult) {
        *lock(&self.handshakes).entry(result).or_default() += 1;
    }

    /// Number of connection attempts with `result` so far.
    pub fn handshakes(&self, result: HandshakeResult) -> u64 {
        lock(&self.handshakes).get(&result).copied().unwrap_or(0)
    }

    /// Counts a disconnect.
    pub fn disconnect(&self, err: &ConnError) {
        *lock(&self.disconnects).entry(reason_kind(err)).or_default() += 1;
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: Gauges) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let mut s = String::new();
        head(
            &mut s,
            "outband_gateway_agents_connected",
            "gauge",
            "Agents with a live tunnel.",
        );
        let _ = writeln!(s, "outband_gateway_agents_connected {}", g.agents_connected);
        head(
            &mut s,
            "outband_gateway_handshakes_total",
            "counter",
            "Agent connection attempts by result.",
        );
        {
            let hs = lock(&self.handshakes);
            for r in HandshakeResult::ALL {
                let _ = writeln!(
                    s,
                    "outband_gateway_handshakes_total{{result=\"{}\"}} {}",
                    r.as_str(),
                    hs.get(&r).copied().unwrap_or(0)
                );
            }
        }
        head(
            &mut s,
            "outband_gateway_agent_disconnects_total",
            "counter",
            "Agent connections that ended, by reason kind.",
        );
        {
            let ds = lock(&self.disconnects);
            for k in REASON_KINDS {
                let _ = writeln!(
                    s,
                    "outband_gateway_agent_disconnects_total{{reason_kind=\"{k}\"}} {}",
                    ds.get(k).copied().unwrap_or(0)
                );
            }
        }
        for (name, help, v) in [
            (
                "outband_gateway_streams_opened_total",
                "Streams opened to agents.",
                load(&self.streams_opened),
            ),
            (
                "outband_gateway_streams_refused_total",
                "Stream opens the agent refused.",
                load(&self.streams_refused),
            ),
            (
                "outband_gateway_stream_open_failures_total",
                "Stream opens that failed without a refusal (not connected, timeout).",
                load(&self.streams_failed),
            ),
        ] {
            head(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {v}");
        }
        head(
            &mut s,
            "outband_gateway_relay_bytes_total",
            "counter",
            "Bytes relayed by finished relay connections, by direction.",
        );
        let _ = writeln!(
            s,
            "outband_gateway_relay_bytes_total{{direction=\"to_agent\"}} {}\n\
             outband_gateway_relay_bytes_total{{direction=\"from_agent\"}} {}",
            load(&self.relay_bytes_to_agent),
            load(&self.relay_bytes_from_agent)
        );
        head(
            &mut s,
            "outband_gateway_tunnel_bytes",
            "gauge",
            "Bytes carried by the tunnels of currently connected agents, by direction.",
        );
        let _ = writeln!(
            s,
            "outband_gateway_tunnel_bytes{{direction=\"in\"}} {}\n\
             outband_gateway_tunnel_bytes{{direction=\"out\"}} {}",
            g.tunnel_bytes_in, g.tunnel_bytes_out
        );
        head(
            &mut s,
            "outband_gateway_relays",
            "gauge",
            "Open relay listeners.",
        );
        let _ = writeln!(s, "outband_gateway_relays {}", g.relays);
        head(
            &mut s,
            "outband_gateway_manager_heartbeats_total",
            "counter",
            "Heartbeats to the manager by result (none when standalone).",
        );
        let _ = writeln!(
            s,
            "outband_gateway_manager_heartbeats_total{{result=\"ok\"}} {}\n\
             outband_gateway_manager_heartbeats_total{{result=\"error\"}} {}",
            load(&self.manager_heartbeats_ok),
            load(&self.manager_heartbeats_error)
        );
        head(
            &mut s,
            "outband_gateway_agent_joins_total",
            "counter",
            "Join tokens presented by agents, by outcome at the manager.",
        );
        for (label, n) in JOIN_RESULTS.iter().zip(&self.joins) {
            let _ = writeln!(
                s,
                "outband_gateway_agent_joins_total{{result=\"{label}\"}} {}",
                load(n)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.handshake(HandshakeResult::Ok);
        m.handshake(HandshakeResult::Timeout);
        m.handshake(HandshakeResult::Timeout);
        m.disconnect(&ConnError::Dead(std::time::Duration::from_secs(15)));
        let text = m.render(Gauges {
            agents_connected: 3,
            ..Gauges::default()
        });
        assert!(text.contains("outband_gateway_agents_connected 3\n"));
        assert!(text.contains("outband_gateway_handshakes_total{result=\"timeout\"} 2\n"));
        assert!(text.contains("outband_gateway_handshakes_total{result=\"bad_cert\"} 0\n"));
        assert!(text.contains(
            "outband_gateway_agent_disconnects_total{reason_kind=\"heartbeat_timeout\"} 1\n"
        ));
        assert!(text.contains("# TYPE outband_gateway_streams_opened_total counter\n"));
        m.manager_heartbeats_error.fetch_add(2, Ordering::Relaxed);
        let text = m.render(Gauges::default());
        assert!(text.contains("outband_gateway_manager_heartbeats_total{result=\"ok\"} 0\n"));
        assert!(text.contains("outband_gateway_manager_heartbeats_total{result=\"error\"} 2\n"));
        m.joins[1].fetch_add(1, Ordering::Relaxed);
        let text = m.render(Gauges::default());
        assert!(text.contains("outband_gateway_agent_joins_total{result=\"refused\"} 1\n"));
        assert!(text.contains("outband_gateway_agent_joins_total{result=\"not_used\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
