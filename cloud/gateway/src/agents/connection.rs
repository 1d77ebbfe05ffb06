//! One connected agent: registry entry, tunnel driver, the handler for what the
//! agent starts, and (in its own task) the join token the hello carried.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use outband_proto::mux::{ConnError, Mux, MuxConfig, Role};
use outband_proto::pb::{self, RefuseCode};
use outband_tunnel::{Incoming, Tunnel};

use super::handshake::Established;
use super::{AgentSettings, TokioTimer};
use crate::manager::join::Joiner;
use crate::manager::secret::Secret;
use crate::metrics::{Metrics, reason_kind};
use crate::registry::{AgentInfo, Registry};

/// Runs a connected agent until its connection ends.
pub async fn run(
    mut est: Established,
    settings: &AgentSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    joiner: Arc<Joiner>,
) {
    // Out of the hello at once: the hello lives as long as the connection.
    let join_token = std::mem::take(&mut est.hello.join_token);
    let cfg = MuxConfig {
        initial_window: settings.window,
        peer_initial_window: est.hello.initial_window,
        heartbeat_interval: settings.heartbeat_interval,
        shared_window: settings.shared_window,
        max_window: settings.max_window,
        ..MuxConfig::new(Role::Gateway)
    }
    .for_peer_version(est.version);
    let mux = Mux::new(cfg, Instant::now());
    let (tunnel, driver) = Tunnel::new(est.io, mux, TokioTimer);
    let info = AgentInfo {
        agent_id: est.agent_id.clone(),
        peer_addr: est.peer,
        connected_at: SystemTime::now(),
        protocol_version: est.version,
        agent_version: est.hello.agent_version.clone(),
        pairing_code: est.pairing_code.clone(),
        capabilities: est.hello.capabilities.clone(),
    };
    let conn_id = registry.insert(info, tunnel.clone());
    tracing::info!(
        agent_id = %est.agent_id,
        peer = %est.peer,
        version = ?est.hello.agent_version,
        protocol = est.version,
        pairing_code = %est.pairing_code,
        "agent connected"
    );
    if !join_token.is_empty() {
        // Not aborted with the connection: a call the manager may already have acted
        // on is finished, logged and counted (it is bounded by the client timeout).
        tokio::spawn(joiner.join_and_report(
            tunnel.clone(),
            est.agent_id.clone(),
            est.pairing_code.clone(),
            Secret::new(join_token),
        ));
    }
    // In this task rather than one of its own: one task per idle agent, not two.
    let incoming = handle_incoming(tunnel, est.agent_id.clone(), conn_id, registry.clone());
    let err = {
        tokio::pin!(incoming);
        let mut driver = std::pin::pin!(driver);
        let mut incoming_done = false;
        loop {
            tokio::select! {
                err = &mut driver => break err,
                () = &mut incoming, if !incoming_done => incoming_done = true,
            }
        }
    };
    registry.remove_if(&est.agent_id, conn_id);
    metrics.disconnect(&err);
    let reason = err.to_string();
    match err {
        ConnError::Closed(_) | ConnError::GoAway(_) => tracing::info!(
            agent_id = %est.agent_id,
            peer = %est.peer,
            reason_kind = reason_kind(&err),
            reason = ?reason,
            "agent disconnected"
        ),
        _ => tracing::warn!(
            agent_id = %est.agent_id,
            peer = %est.peer,
            reason_kind = reason_kind(&err),
            reason = ?reason,
            "agent disconnected"
        ),
    }
}

/// Handles what the agent starts: inventory reports are stored; streams are refused
/// (agents may not open streams to the gateway in protocol v1); requests get an
/// error reply.
async fn handle_incoming(tunnel: Tunnel, agent_id: String, conn_id: u64, registry: Arc<Registry>) {
    let mut refused_streams = 0u64;
    while let Some(inc) = tunnel.accept().await {
        match inc {
            Incoming::Inventory(report) => {
                tracing::debug!(agent_id = %agent_id, endpoints = report.endpoints.len(), "inventory report");
                registry.set_inventory(&agent_id, conn_id, report);
            }
            Incoming::Stream(pending) => {
                // Logged once per connection (and the target cut short): an agent
                // must not be able to flood the gateway's logs.
                refused_streams += 1;
                if refused_streams == 1 {
                    let target: String = pending.target().chars().take(64).collect();
                    tracing::warn!(
                        agent_id = %agent_id,
                        target = ?target,
                        "agent tried to open a stream; refused (further attempts on this connection are not logged)"
                    );
                }
                pending.refuse(
                    RefuseCode::Forbidden,
                    "agents may not open streams to the gateway",
                );
            }
            Incoming::Request(req) => {
                tunnel.reply(
                    req.request_id,
                    pb::reply::Body::Error(pb::ErrorReply {
                        code: "unsupported".into(),
                        message: "the gateway serves no requests from agents".into(),
                    }),
                );
            }
        }
    }
}
