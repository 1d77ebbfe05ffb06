//! A hostile agent: a blocking rustls client that can present a good, missing or
//! broken client certificate, do the hello exchange, and then send arbitrary bytes.
//! Frames are built with `outband-proto`, the same schema crate the real peers use.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::BytesMut;
use outband_proto::codec::{self, FrameDecoder};
use outband_proto::pb::{self, Frame, frame};
use outband_proto::{handshake, identity};
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519, PublicKeyData};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SignatureScheme, StreamOwned};

use crate::net::{Closed, read_until_closed};

/// Which client certificate the fake agent presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// A valid self-signed Ed25519 certificate, as a real agent has.
    Valid,
    /// No certificate at all.
    None,
    /// A valid certificate for key A, but the TLS handshake (CertificateVerify) is
    /// signed with key B.
    WrongKey,
    /// Key A's certificate with its self-signature corrupted (last byte flipped).
    BadSelfSignature,
    /// Bytes that are not a certificate.
    Garbage,
    /// A certificate that expired in 2001.
    Expired,
}

/// A TLS connection to the gateway's agent port.
#[derive(Debug)]
pub struct FakeAgent {
    tls: StreamOwned<ClientConnection, TcpStream>,
    decoder: FrameDecoder,
    /// The agent id the gateway should derive from the certificate's key (the key
    /// in the certificate, not the signing key, for [`ClientCert::WrongKey`]).
    pub agent_id: String,
    /// The pairing code for the certificate's key.
    pub pairing_code: String,
}

impl FakeAgent {
    /// Connects and completes the TLS handshake as far as the client sees it. With
    /// TLS 1.3 the server checks the client certificate after the client considers
    /// the handshake done, so a rejected certificate may only show on the next read.
    pub fn connect(
        addr: SocketAddr,
        ca_file: &Path,
        cert: ClientCert,
        timeout: Duration,
    ) -> anyhow::Result<FakeAgent> {
        let (config, spki) = client_config(ca_file, cert)?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connect {addr}"))?;
        tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
        tcp.set_write_timeout(Some(timeout))?;
        let server_name = ServerName::try_from("localhost").expect("valid name");
        let conn = ClientConnection::new(Arc::new(config), server_name)?;
        let mut tls = StreamOwned::new(conn, tcp);
        let deadline = Instant::now() + timeout;
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e).context("TLS handshake"),
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "TLS handshake took over {timeout:?}"
            );
        }
        Ok(FakeAgent {
            tls,
            decoder: FrameDecoder::default(),
            agent_id: identity::agent_id_from_spki(&spki),
            pairing_code: identity::pairing_code_from_spki(&spki),
        })
    }

    /// Sends the agent's hello and waits for the gateway's answer: the `HelloAck`, or
    /// an error naming the `GoAway` reason or the closed connection.
    pub fn hello(&mut self, timeout: Duration) -> anyhow::Result<pb::HelloAck> {
        let code = self.pairing_code.clone();
        self.send_frame(&handshake::hello(
            "outband-e2e fake agent",
            &code,
            256 * 1024,
        ))?;
        match self.read_frame(timeout)? {
            Some(Frame {
                kind: Some(frame::Kind::HelloAck(ack)),
            }) => Ok(ack),
            Some(Frame {
                kind: Some(frame::Kind::GoAway(g)),
            }) => anyhow::bail!("gateway answered GoAway: {}", g.reason),
            Some(other) => anyhow::bail!("gateway answered {} to hello", codec::kind_name(&other)),
            None => anyhow::bail!("gateway closed the connection after hello"),
        }
    }

    /// Encodes and sends one frame.
    pub fn send_frame(&mut self, f: &Frame) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        codec::encode_frame(f, codec::DEFAULT_MAX_FRAME_LEN, &mut out)?;
        self.send_raw(&out)
    }

    /// Sends raw bytes inside the TLS connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tls.write_all(bytes).context("write to gateway")?;
        self.tls.flush().context("flush to gateway")?;
        Ok(())
    }

    /// Reads the next frame; `None` at end of stream.
    pub fn read_frame(&mut self, timeout: Duration) -> anyhow::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.decoder.decode().context("decode frame from gateway")? {
                return Ok(Some(f));
            }
            match self.tls.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.decoder.extend(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e).context("read from gateway"),
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no frame from the gateway within {timeout:?}"
            );
        }
    }

    /// Waits until the gateway closes the connection; returns the frames (e.g. a
    /// `GoAway`) it sent before closing.
    pub fn expect_closed(&mut self, timeout: Duration) -> anyhow::Result<(Vec<Frame>, Closed)> {
        let closed = read_until_closed(&mut self.tls, timeout)?;
        self.decoder.extend(closed.bytes());
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.decoder.decode() {
            frames.push(f);
        }
        Ok((frames, closed))
    }
}

/// The GoAway reason among `frames`, if any.
pub fn go_away_reason(frames: &[Frame]) -> Option<&str> {
    frames.iter().find_map(|f| match &f.kind {
        Some(frame::Kind::GoAway(g)) => Some(g.reason.as_str()),
        _ => None,
    })
}

/// The bytes of a real TLS ClientHello (for a peer that sends only part of it).
pub fn client_hello_bytes(ca_file: &Path) -> anyhow::Result<Vec<u8>> {
    let (config, _) = client_config(ca_file, ClientCert::Valid)?;
    let mut conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost")?)?;
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// A client config for `cert`, and the SPKI of the certificate's key.
fn client_config(ca_file: &Path, cert: ClientCert) -> anyhow::Result<(ClientConfig, Vec<u8>)> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("read {}", ca_file.display()))?
    {
        roots.add(c.context("parse CA PEM")?).context("add CA")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);

    let key_a = KeyPair::generate_for(&PKCS_ED25519)?;
    let spki = key_a.subject_public_key_info();
    if cert == ClientCert::None {
        return Ok((builder.with_no_client_auth(), spki));
    }
    let mut params = CertificateParams::new(vec!["outband-agent".to_owned()])?;
    if cert == ClientCert::Expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let mut der = params.self_signed(&key_a)?.der().to_vec();
    let signing_key = match cert {
        ClientCert::WrongKey => KeyPair::generate_for(&PKCS_ED25519)?,
        _ => key_a,
    };
    match cert {
        // An Ed25519 certificate ends with its 64-byte signature.
        ClientCert::BadSelfSignature => {
            if let Some(last) = der.last_mut() {
                *last ^= 0x55;
            }
        }
        ClientCert::Garbage => der = b"\x30\x03\x02\x01\x07 this is not a certificate".to_vec(),
        _ => {}
    }
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()))?;
    // `CertifiedKey::new` does not check that the key matches the certificate, which
    // is exactly what the broken variants need.
    let certified = Arc::new(CertifiedKey::new(vec![CertificateDer::from(der)], key));
    let config = builder.with_client_cert_resolver(Arc::new(FixedCert(certified)));
    Ok((config, spki))
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl FakeAgent {
    /// Closes our side cleanly: TLS close_notify, then TCP half-close.
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.tls.conn.send_close_notify();
        self.tls.flush().context("flush close_notify")?;
        self.tls.sock.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    }
}
