//! TLS accept and the hello exchange for one agent connection.

use std::net::SocketAddr;

use outband_proto::codec::{self, DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use outband_proto::handshake::{negotiate, validate_hello};
use outband_proto::identity::{agent_id_from_spki, pairing_code_from_spki};
use outband_proto::mux::go_away;
use outband_proto::pb::{self, Frame, frame};
use outband_tunnel::{FrameIoError, read_frame, write_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::AgentSettings;
use super::read_ahead::ReadAhead;
use crate::metrics::HandshakeResult;

/// The agent transport as `futures-io`, as `outband-tunnel` wants it.
pub type AgentIo = Compat<TlsStream<ReadAhead>>;

/// A connection that completed TLS and the hello exchange.
#[derive(Debug)]
pub struct Established {
    /// The transport, positioned right after the hello.
    pub io: AgentIo,
    /// Remote address.
    pub peer: SocketAddr,
    /// From the client certificate.
    pub agent_id: String,
    /// From the client certificate.
    pub pairing_code: String,
    /// The agent's hello.
    pub hello: pb::Hello,
    /// Negotiated version.
    pub version: u32,
}

/// Why a connection was turned away.
#[derive(Debug)]
pub struct Rejection {
    /// For metrics.
    pub kind: HandshakeResult,
    /// For the log.
    pub reason: String,
}

impl Rejection {
    fn new(kind: HandshakeResult, reason: String) -> Self {
        Self { kind, reason }
    }

    pub(crate) fn tls(reason: String) -> Self {
        Self::new(HandshakeResult::TlsError, reason)
    }
}

/// Classifies a failed TLS accept.
fn tls_rejection(err: std::io::Error) -> Rejection {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => Rejection::new(
            HandshakeResult::NoClientCert,
            "no client certificate".into(),
        ),
        Some(rustls::Error::InvalidCertificate(e)) => Rejection::new(
            HandshakeResult::BadCert,
            format!("bad client certificate: {e}"),
        ),
        Some(e) => Rejection::tls(format!("TLS error: {e}")),
        None => Rejection::tls(format!("TLS error: {err}")),
    }
}

/// Runs TLS and the hello exchange. On a bad hello the agent gets a `GoAway` with
/// the reason before the connection closes.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    settings: &AgentSettings,
) -> Result<Established, Rejection> {
    let tls = acceptor
        .accept(ReadAhead::new(tcp))
        .await
        .map_err(tls_rejection)?;
    let spki = {
        let (_, conn) = tls.get_ref();
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| {
                Rejection::new(
                    HandshakeResult::NoClientCert,
                    "no client certificate".into(),
                )
            })?;
        verifier_spki(cert)?
    };
    let agent_id = agent_id_from_spki(&spki);
    let pairing_code = pairing_code_from_spki(&spki);
    let mut io = tls.compat();

    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let first = match read_frame(&mut io, &mut decoder).await {
        Ok(f) => f,
        Err(FrameIoError::Decode(e)) => {
            let reason = format!("malformed first frame: {e}");
            return Err(refuse(io, HandshakeResult::BadHello, reason).await);
        }
        Err(e) => {
            return Err(Rejection::new(
                HandshakeResult::BadHello,
                format!("no hello: {e}"),
            ));
        }
    };
    let hello = match first.kind {
        Some(frame::Kind::Hello(h)) => h,
        _ => {
            let reason = format!(
                "expected hello as first frame, got {}",
                codec::kind_name(&first)
            );
            return Err(refuse(io, HandshakeResult::BadHello, reason).await);
        }
    };
    if let Err(e) = validate_hello(&hello) {
        return Err(refuse(io, HandshakeResult::BadHello, format!("bad hello: {e}")).await);
    }
    let version = match negotiate(&hello) {
        Ok(v) => v,
        Err(e) => {
            let reason = format!("version mismatch: {e}");
            return Err(refuse(io, HandshakeResult::VersionMismatch, reason).await);
        }
    };
    if !hello.pairing_code.is_empty() && hello.pairing_code != pairing_code {
        tracing::warn!(
            agent_id = %agent_id,
            claimed = ?hello.pairing_code,
            derived = ?pairing_code,
            "agent's pairing code does not match its key; using the derived one"
        );
    }
    let ack = Frame {
        kind: Some(frame::Kind::HelloAck(pb::HelloAck {
            version,
            capabilities: vec![outband_proto::handshake::CAP_TCP_RELAY.to_owned()],
            heartbeat_interval_ms: u32::try_from(settings.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            initial_window: settings.window,
            agent_id: agent_id.clone(),
        })),
    };
    write_frame(&mut io, &ack, DEFAULT_MAX_FRAME_LEN)
        .await
        .map_err(|e| Rejection::tls(format!("sending hello ack: {e}")))?;
    Ok(Established {
        io,
        peer,
        agent_id,
        pairing_code,
        hello,
        version,
    })
}

fn verifier_spki(cert: &rustls_pki_types::CertificateDer<'_>) -> Result<Vec<u8>, Rejection> {
    super::verifier::spki_of(cert).map_err(|e| {
        Rejection::new(
            HandshakeResult::BadCert,
            format!("bad client certificate: {e}"),
        )
    })
}

/// Sends `GoAway{reason}` (best effort), closes the connection and returns the
/// rejection.
async fn refuse(mut io: AgentIo, kind: HandshakeResult, reason: String) -> Rejection {
    let _ = write_frame(&mut io, &go_away(&reason), DEFAULT_MAX_FRAME_LEN).await;
    let _ = io.get_mut().shutdown().await;
    Rejection::new(kind, reason)
}
