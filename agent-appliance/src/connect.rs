//! The dial loop: TCP connect, TLS 1.3 handshake, hello exchange, then the tunnel
//! until the connection ends; reconnect with exponential backoff and full jitter.
//!
//! Backoff reset: the attempt counter goes back to 0 only after a connection that
//! completed the hello and then stayed up for [`STABLE_AFTER`]. A gateway that accepts
//! the hello and drops the agent right away therefore still sees the delays grow.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use outband_proto::mux::{ConnError, Mux, MuxConfig, Role};
use outband_proto::pb::{self, frame};
use outband_proto::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, handshake};
use outband_tunnel::{FrameIoError, ReadAhead, Timer, Tunnel};
use rustls::ClientConfig;

use crate::config::Config;
use crate::identity::Identity;
use crate::relay::{self, RelayContext};

/// A connection that lasted this long after its hello resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Heartbeat interval bounds applied to the gateway's `HelloAck`.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const MAX_HEARTBEAT: Duration = Duration::from_secs(600);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed or timed out.
    #[error("TCP connect to {addr}: {source}")]
    Tcp {
        /// Gateway address.
        addr: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (certificate rejected, alert, timeout...).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// Gateway address.
        addr: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The hello exchange broke off.
    #[error("hello exchange: {0}")]
    Hello(#[source] FrameIoError),
    /// The hello exchange took too long.
    #[error("hello exchange timed out after {0:?}")]
    HelloTimeout(Duration),
    /// The gateway answered the hello with `GoAway`.
    #[error("gateway refused the hello (GoAway): {0}")]
    GoAway(String),
    /// The gateway's answer is not a usable `HelloAck`.
    #[error("bad HelloAck: {0}")]
    BadAck(String),
}

/// A connection whose hello exchange succeeded.
#[derive(Debug)]
pub struct Session {
    /// The TLS transport, positioned after the `HelloAck`.
    pub io: TlsStream<ReadAhead<TcpStream>>,
    /// The gateway's answer.
    pub ack: pb::HelloAck,
    /// The agent's local address on this connection.
    pub local_addr: Option<std::net::SocketAddr>,
}

/// `smol` timers for the tunnel driver.
#[derive(Debug, Clone, Copy)]
pub struct SmolTimer;

impl Timer for SmolTimer {
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
    }
}

/// The running agent: configuration, identity and TLS settings.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    identity: Identity,
    tls: Arc<ClientConfig>,
    relay: Arc<RelayContext>,
}

impl Agent {
    /// Prepares an agent (no I/O besides what `tls` already did and reading the join
    /// token file and its state).
    pub fn new(config: Config, identity: Identity, tls: Arc<ClientConfig>) -> Agent {
        let mut relay = RelayContext::new(config.allow.clone(), config.connect_timeout);
        relay.join = crate::join::Join::load(config.join_token_file.as_deref(), &config.state_dir);
        let relay = Arc::new(relay);
        Agent {
            config,
            identity,
            tls,
            relay,
        }
    }

    /// The agent's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Dials, reconnecting forever with backoff. Never returns. Runs discovery scans
    /// alongside when they are configured.
    pub async fn run(&self) {
        let _discovery = self
            .config
            .discovery
            .clone()
            .map(|d| crate::rt::spawn(crate::discovery::run_periodic(d, self.relay.clone())));
        let mut rng = fastrand::Rng::new();
        let mut attempt: u32 = 0;
        let gw = self.config.gateway.key();
        loop {
            tracing::info!("connecting to gateway {gw}");
            match self.connect_once().await {
                Ok(session) => {
                    let up = Instant::now();
                    let reason = self.serve(session).await;
                    tracing::warn!(
                        "gateway connection to {gw} lost after {:.1?}: {reason}",
                        up.elapsed()
                    );
                    if up.elapsed() >= STABLE_AFTER {
                        attempt = 0;
                    }
                }
                Err(e) => tracing::warn!("gateway connect failed: {e:#}"),
            }
            let delay = self.config.backoff.delay(attempt, &mut rng);
            tracing::info!("reconnecting in {delay:?} (attempt {})", attempt + 1);
            attempt = attempt.saturating_add(1);
            smol::Timer::after(delay).await;
        }
    }

    /// One attempt: TCP (with `TCP_NODELAY`), TLS, hello. Each step is bounded by the
    /// connect timeout.
    pub async fn connect_once(&self) -> Result<Session, ConnectError> {
        let gw = &self.config.gateway;
        let addr = gw.key();
        let timeout = self.config.connect_timeout;
        let tcp = relay::connect_tcp(&gw.host, gw.port, timeout)
            .await
            .map_err(|source| ConnectError::Tcp {
                addr: addr.clone(),
                source,
            })?;
        let local_addr = tcp.local_addr().ok();
        outband_tunnel::tune_tunnel_socket(socket2::SockRef::from(&tcp));
        let connector = TlsConnector::from(self.tls.clone());
        // Read-ahead under TLS: rustls reads 4 KiB at a time (see `ReadAhead`).
        let handshake = connector.connect(self.config.server_name.clone(), ReadAhead::new(tcp));
        let mut io = with_timeout(handshake, timeout)
            .await
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {timeout:?}"),
                ))
            })
            .map_err(|source| ConnectError::Tls { addr, source })?;
        let ack = with_timeout(self.hello(&mut io), timeout)
            .await
            .unwrap_or(Err(ConnectError::HelloTimeout(timeout)))?;
        Ok(Session {
            io,
            ack,
            local_addr,
        })
    }

    async fn hello(
        &self,
        io: &mut TlsStream<ReadAhead<TcpStream>>,
    ) -> Result<pb::HelloAck, ConnectError> {
        let mut caps = vec![
            handshake::CAP_TCP_RELAY,
            handshake::CAP_VNC_CONSOLE,
            handshake::CAP_SERIAL_CONSOLE,
            handshake::CAP_BMC_REQUESTS,
        ];
        if self.config.discovery.is_some() {
            caps.push(handshake::CAP_DISCOVERY);
        }
        let mut hello = handshake::hello_with(
            crate::VERSION,
            self.identity.pairing_code(),
            self.config.window,
            &caps,
        );
        if let (Some(frame::Kind::Hello(h)), Some(token)) =
            (hello.kind.as_mut(), self.relay.join.token())
        {
            tracing::debug!("presenting the join token in the hello");
            h.join_token = token.expose().to_owned();
        }
        outband_tunnel::write_frame(io, &hello, DEFAULT_MAX_FRAME_LEN)
            .await
            .map_err(ConnectError::Hello)?;
        let answer = outband_tunnel::read_frame(io, &mut FrameDecoder::default())
            .await
            .map_err(ConnectError::Hello)?;
        match answer.kind {
            Some(frame::Kind::HelloAck(ack)) => {
                check_ack(&ack)?;
                Ok(ack)
            }
            Some(frame::Kind::GoAway(g)) => Err(ConnectError::GoAway(g.reason)),
            _ => Err(ConnectError::BadAck(format!(
                "expected HelloAck or GoAway, got {}",
                outband_proto::codec::kind_name(&answer)
            ))),
        }
    }

    /// Runs the tunnel on an established session until it ends; returns why.
    pub async fn serve(&self, session: Session) -> ConnError {
        let ack = session.ack;
        if !ack.agent_id.is_empty() && ack.agent_id != self.identity.agent_id() {
            tracing::warn!(
                "gateway knows this agent as {} but the local id is {}",
                ack.agent_id,
                self.identity.agent_id()
            );
        }
        let heartbeat = heartbeat_interval(ack.heartbeat_interval_ms);
        tracing::info!(
            "connected to gateway {} (protocol v{}, heartbeat {:?}, agent id {})",
            self.config.gateway.key(),
            ack.version,
            heartbeat,
            self.identity.agent_id()
        );
        let mux = Mux::new(
            MuxConfig {
                initial_window: self.config.window,
                peer_initial_window: ack.initial_window,
                heartbeat_interval: heartbeat,
                max_window: self.config.max_window,
                ..MuxConfig::new(Role::Agent)
            }
            .for_peer_version(ack.version),
            Instant::now(),
        );
        let (tunnel, driver) = Tunnel::new(session.io, mux, SmolTimer);
        let driver = crate::rt::spawn(driver);
        tunnel.send_inventory(self.relay.inventory());
        // Fresh reports when a discovery scan changes what the agent knows.
        let _reports = {
            let (tunnel, ctx) = (tunnel.clone(), self.relay.clone());
            crate::rt::spawn(async move {
                while ctx.inventory_changed.1.recv().await.is_ok() {
                    tunnel.send_inventory(ctx.inventory());
                }
            })
        };
        let addresses = session
            .local_addr
            .map(|a| vec![a.ip().to_string()])
            .unwrap_or_default();
        // Dropping this task when the driver ends cancels the accept loop; stream
        // tasks end on their own once the connection is gone.
        let _serving =
            crate::rt::spawn(relay::serve_incoming(tunnel, self.relay.clone(), addresses));
        driver.await
    }
}

/// Checks the gateway's `HelloAck` against what this agent can work with.
fn check_ack(ack: &pb::HelloAck) -> Result<(), ConnectError> {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&ack.version) {
        return Err(ConnectError::BadAck(format!(
            "protocol version {} outside {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
            ack.version
        )));
    }
    if !(1024..=16 * 1024 * 1024).contains(&ack.initial_window) {
        return Err(ConnectError::BadAck(format!(
            "initial_window {} outside 1 KiB..=16 MiB",
            ack.initial_window
        )));
    }
    Ok(())
}

/// The heartbeat interval from the `HelloAck`, clamped; 0 means the default.
fn heartbeat_interval(ms: u32) -> Duration {
    if ms == 0 {
        return DEFAULT_HEARTBEAT;
    }
    Duration::from_millis(ms.into()).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
}

/// Runs `fut` for at most `timeout`; `None` if it did not finish.
async fn with_timeout<T>(fut: impl Future<Output = T>, timeout: Duration) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(timeout).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(version: u32, window: u32) -> pb::HelloAck {
        pb::HelloAck {
            version,
            initial_window: window,
            ..Default::default()
        }
    }

    #[test]
    fn ack_checks() {
        assert!(check_ack(&ack(1, 65536)).is_ok());
        assert!(check_ack(&ack(0, 65536)).is_err());
        assert!(check_ack(&ack(PROTOCOL_VERSION + 1, 65536)).is_err());
        assert!(check_ack(&ack(1, 0)).is_err());
        assert!(check_ack(&ack(1, u32::MAX)).is_err());
    }

    #[test]
    fn heartbeat_clamped() {
        assert_eq!(heartbeat_interval(0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1), MIN_HEARTBEAT);
        assert_eq!(heartbeat_interval(2000), Duration::from_secs(2));
        assert_eq!(heartbeat_interval(u32::MAX), MAX_HEARTBEAT);
    }
}
