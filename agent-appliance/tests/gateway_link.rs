//! The agent's connect logic against an in-test gateway: rustls server on smol, the
//! hello exchange, then a gateway-side `Tunnel` that opens streams through the agent
//! to a local TCP echo server.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use outband_agent::config::{self, Action, Config};
use outband_agent::connect::{Agent, ConnectError, SmolTimer};
use outband_agent::identity::Identity;
use outband_agent::tls;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use outband_proto::mux::{Mux, MuxConfig, Role};
use outband_proto::pb::{self, Frame, RefuseCode, StreamKind, frame, reply, request};
use outband_tunnel::{Incoming, OpenError, Tunnel};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use smol::net::{TcpListener, TcpStream};

/// Runs a test body on smol with an overall deadline.
fn run<F: Future<Output = ()>>(body: F) {
    outband_agent::rt::block_on(futures_lite::future::or(body, async {
        smol::Timer::after(Duration::from_secs(20)).await;
        panic!("test timed out");
    }))
}

/// A CA and a gateway certificate for `localhost` signed by it.
struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Pki {
        ca_der: ca.der().clone(),
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
    }
}

/// Client certificate verifier that accepts any certificate (the test checks it).
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 gateway listener. With `send_ca`, the chain includes the CA certificate.
/// A state directory holding `pki`'s CA as `ca.pem`, and that file's path.
fn ca_file(pki: &Pki) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    (dir, ca)
}

async fn gateway(pki: &Pki, send_ca: bool) -> (TcpListener, TlsAcceptor) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut chain = vec![pki.leaf.clone()];
    if send_ca {
        chain.push(pki.ca_der.clone());
    }
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(pki.leaf_key.clone()));
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener, TlsAcceptor::from(Arc::new(config)))
}

/// An echo server: echoes each connection until EOF, then half-closes.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    smol::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            smol::spawn(async move {
                let _ = futures_lite::io::copy(conn.clone(), conn.clone()).await;
                let _ = conn.shutdown(std::net::Shutdown::Write);
            })
            .detach();
        }
    })
    .detach();
    port
}

/// A request/response server: reads until EOF, then answers the bytes reversed and
/// closes. The answer and the EOF reach the agent together, after the gateway's fin.
async fn reverse_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    smol::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            smol::spawn(async move {
                let mut req = Vec::new();
                conn.read_to_end(&mut req).await.unwrap();
                req.reverse();
                conn.write_all(&req).await.unwrap();
            })
            .detach();
        }
    })
    .detach();
    port
}

fn agent_config(gw_port: u16, trust: &[&str], state: &Path, allow: &[String]) -> Config {
    let mut args: Vec<String> = vec![
        "--gateway".into(),
        format!("127.0.0.1:{gw_port}"),
        "--server-name".into(),
        "localhost".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--backoff-base-ms".into(),
        "20".into(),
        "--backoff-cap-ms".into(),
        "100".into(),
        "--connect-timeout-ms".into(),
        "3000".into(),
        "--window".into(),
        "65536".into(),
    ];
    args.extend(trust.iter().map(|s| s.to_string()));
    for a in allow {
        args.push("--allow".into());
        args.push(a.clone());
    }
    match config::parse_args(args).unwrap() {
        Action::Run(c) => *c,
        other => panic!("{other:?}"),
    }
}

fn make_agent(config: Config) -> Agent {
    let (identity, _) = Identity::load_or_create(&config.state_dir).unwrap();
    let tls = tls::client_config(&config.trust, &identity).unwrap();
    Agent::new(config, identity, tls)
}

/// Accepts one agent connection: TLS, then the agent's hello. Returns the stream, the
/// hello and the agent id derived from the presented client certificate.
async fn accept_agent(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
) -> (TlsStream<TcpStream>, pb::Hello, String) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = acceptor.accept(tcp).await.unwrap();
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("client certificate");
    assert_eq!(certs.len(), 1, "agent presents exactly its own certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
    let agent_id =
        outband_proto::identity::agent_id_from_spki(cert.tbs_certificate.subject_pki.raw);
    let frame = outband_tunnel::read_frame(&mut tls, &mut FrameDecoder::default())
        .await
        .unwrap();
    let Some(frame::Kind::Hello(hello)) = frame.kind else {
        panic!("expected hello, got {frame:?}")
    };
    (tls, hello, agent_id)
}

async fn send(tls: &mut TlsStream<TcpStream>, kind: frame::Kind) {
    let frame = Frame { kind: Some(kind) };
    outband_tunnel::write_frame(tls, &frame, DEFAULT_MAX_FRAME_LEN)
        .await
        .unwrap();
}

#[test]
fn hello_goaway_reconnect_then_relay() {
    run(async {
        let pki = pki();
        let (dir, ca) = ca_file(&pki);
        let echo = echo_server().await;
        let reverse = reverse_server().await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (listener, acceptor) = gateway(&pki, false).await;
        let port = listener.local_addr().unwrap().port();
        let allow = [
            format!("vnc://127.0.0.1:{echo}"),
            format!("127.0.0.1:{closed}"),
            format!("127.0.0.1:{reverse}"),
        ];
        let cfg = agent_config(
            port,
            &["--ca-file", ca.to_str().unwrap()],
            &dir.path().join("state"),
            &allow,
        );
        let agent = Arc::new(make_agent(cfg));
        let expected_id = agent.identity().agent_id().to_owned();
        let pairing = agent.identity().pairing_code().to_owned();
        let runner = {
            let agent = agent.clone();
            smol::spawn(async move { agent.run().await })
        };

        // First connection: the gateway turns the agent away.
        let (mut tls, hello, id) = accept_agent(&listener, &acceptor).await;
        assert_eq!(id, expected_id);
        assert_eq!(hello.pairing_code, pairing);
        assert_eq!(hello.initial_window, 65536);
        assert!(hello.capabilities.iter().any(|c| c == "tcp-relay"));
        outband_proto::handshake::validate_hello(&hello).unwrap();
        send(
            &mut tls,
            frame::Kind::GoAway(pb::GoAway {
                reason: "not adopted yet".into(),
            }),
        )
        .await;
        drop(tls);

        // The agent comes back (backoff ceiling 20 ms) and is accepted.
        let (mut tls, hello, id) = accept_agent(&listener, &acceptor).await;
        assert_eq!(id, expected_id);
        send(
            &mut tls,
            frame::Kind::HelloAck(pb::HelloAck {
                version: 1,
                capabilities: vec![],
                heartbeat_interval_ms: 200,
                initial_window: 32 * 1024,
                agent_id: id.clone(),
            }),
        )
        .await;
        let mux = Mux::new(
            MuxConfig {
                initial_window: 32 * 1024,
                peer_initial_window: hello.initial_window,
                heartbeat_interval: Duration::from_millis(200),
                ..MuxConfig::new(Role::Gateway)
            }
            .for_peer_version(1),
            std::time::Instant::now(),
        );
        let (tunnel, driver) = Tunnel::new(tls, mux, SmolTimer);
        let driver = smol::spawn(driver);

        // The agent reports its allow-list.
        match tunnel.accept().await {
            Some(Incoming::Inventory(inv)) => {
                let urls: Vec<_> = inv.endpoints.iter().map(|e| e.url.as_str()).collect();
                assert_eq!(urls, allow.iter().map(String::as_str).collect::<Vec<_>>());
            }
            other => panic!("expected inventory, got {other:?}"),
        }

        let reply = tunnel
            .request(request::Body::AgentInfo(pb::AgentInfoRequest {}))
            .await
            .unwrap();
        match reply.body {
            Some(reply::Body::AgentInfo(info)) => {
                assert_eq!(info.agent_version, outband_agent::VERSION);
                assert_eq!(info.addresses, ["127.0.0.1"]);
            }
            other => panic!("{other:?}"),
        }

        // Relay through the agent to the echo server, larger than both windows, with
        // half-close in both directions.
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = tunnel
            .open(StreamKind::Tcp, &format!("127.0.0.1:{echo}"))
            .await
            .unwrap();
        let writer = {
            let payload = payload.clone();
            async move {
                stream.write_all(&payload).await.unwrap();
                stream.close().await.unwrap();
                let mut back = Vec::new();
                stream.read_to_end(&mut back).await.unwrap();
                back
            }
        };
        let back = writer.await;
        assert_eq!(back.len(), payload.len());
        assert!(back == payload, "echo differs");

        // The BMC answers only after the gateway's fin, then closes at once: the
        // agent must deliver the whole answer and its fin before forgetting the stream.
        for size in [10, 40_000, 100_000] {
            let mut s = tunnel.open(StreamKind::Tcp, &allow[2]).await.unwrap();
            let req: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            s.write_all(&req).await.unwrap();
            s.close().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            back.reverse();
            assert!(back == req, "answer of {size} bytes differs");
        }

        // Several streams at once.
        let mut tasks = Vec::new();
        for i in 0..4u8 {
            let tunnel = tunnel.clone();
            tasks.push(smol::spawn(async move {
                let mut s = tunnel
                    .open(StreamKind::Tcp, &format!("vnc://127.0.0.1:{echo}"))
                    .await
                    .unwrap();
                let msg = vec![i; 1000 + i as usize];
                s.write_all(&msg).await.unwrap();
                s.close().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, msg);
            }));
        }
        for t in tasks {
            t.await;
        }

        // Refusals.
        let refused = |r: Result<outband_tunnel::Stream, OpenError>| match r {
            Err(OpenError::Refused { code, message, .. }) => (code, message),
            Ok(_) => panic!("stream unexpectedly accepted"),
            Err(e) => panic!("{e}"),
        };
        let (code, msg) = refused(tunnel.open(StreamKind::Tcp, "127.0.0.1:1").await);
        assert_eq!(code, RefuseCode::Forbidden, "{msg}");
        let (code, _) = refused(tunnel.open(StreamKind::Tcp, "not a target").await);
        assert_eq!(code, RefuseCode::BadTarget);
        let (code, _) = refused(tunnel.open(StreamKind::Unspecified, &allow[0]).await);
        assert_eq!(code, RefuseCode::UnsupportedKind);
        let (code, msg) = refused(tunnel.open(StreamKind::Tcp, &allow[1]).await);
        assert_eq!(code, RefuseCode::Unreachable);
        assert!(msg.contains("refused"), "{msg}");

        // Heartbeats keep the connection up while idle (interval 200 ms, dead after 3).
        smol::Timer::after(Duration::from_millis(1000)).await;
        assert!(
            tunnel.close_reason().is_none(),
            "{:?}",
            tunnel.close_reason()
        );

        tunnel.close("test done");
        driver.await;
        drop(runner);
    });
}

/// A gateway built before protocol version 2 grants credit only once a quarter of
/// its window is released. An agent that capped each of two streams at the shared
/// window (32 KiB plus 1 Gbit/s times the round trip) below that would wait for the
/// credit forever: towards a version-1 gateway it must send its whole window. (The
/// 8 MiB window puts that quarter far above any cap a slow machine's round trip
/// could produce.)
#[test]
fn a_protocol_1_gateway_gets_the_whole_window_while_streams_share_the_connection() {
    run(async {
        let pki = pki();
        let (dir, ca) = ca_file(&pki);
        let echo = echo_server().await;
        let (listener, acceptor) = gateway(&pki, false).await;
        let port = listener.local_addr().unwrap().port();
        let target = format!("127.0.0.1:{echo}");
        let cfg = agent_config(
            port,
            &["--ca-file", ca.to_str().unwrap()],
            &dir.path().join("state"),
            std::slice::from_ref(&target),
        );
        let agent = Arc::new(make_agent(cfg));
        let runner = {
            let agent = agent.clone();
            smol::spawn(async move { agent.run().await })
        };
        let (mut tls, hello, id) = accept_agent(&listener, &acceptor).await;
        assert!(hello.max_version >= 2);
        const WINDOW: u32 = 8 * 1024 * 1024;
        send(
            &mut tls,
            frame::Kind::HelloAck(pb::HelloAck {
                version: 1,
                capabilities: vec![],
                heartbeat_interval_ms: 1000,
                initial_window: WINDOW,
                agent_id: id,
            }),
        )
        .await;
        let mux = Mux::new(
            MuxConfig {
                initial_window: WINDOW,
                peer_initial_window: hello.initial_window,
                ..MuxConfig::new(Role::Gateway)
            }
            .for_peer_version(1),
            std::time::Instant::now(),
        );
        let (tunnel, driver) = Tunnel::new(tls, mux, SmolTimer);
        let _driver = smol::spawn(driver);

        // A second stream stays open, so the connection is shared throughout.
        let mut console = tunnel.open(StreamKind::Tcp, &target).await.unwrap();
        console.write_all(b"k").await.unwrap();
        let mut k = [0u8; 1];
        console.read_exact(&mut k).await.unwrap();

        // 4 MB through the echo: the agent sends it all back to the gateway.
        let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let bulk = tunnel.open(StreamKind::Tcp, &target).await.unwrap();
        let (mut rd, mut wr) = futures_lite::io::split(bulk);
        let writer = smol::spawn({
            let payload = payload.clone();
            async move {
                wr.write_all(&payload).await.unwrap();
                wr.close().await.unwrap();
            }
        });
        let mut back = Vec::new();
        let read = rd.read_to_end(&mut back);
        let stalled = async {
            smol::Timer::after(Duration::from_secs(10)).await;
            panic!("the echo stalled: the agent held its stream to a version-1 gateway");
        };
        futures_lite::future::or(read, stalled).await.unwrap();
        writer.await;
        assert!(back == payload, "echo differs");
        console.write_all(b"x").await.unwrap();
        console.read_exact(&mut k).await.unwrap();
        assert_eq!(&k, b"x");
        tunnel.close("test done");
        drop(runner);
    });
}

#[test]
fn wrong_ca_is_rejected() {
    run(async {
        let pki = pki();
        let other = pki_ca_pem();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("other-ca.pem");
        std::fs::write(&ca, other).unwrap();
        let (listener, acceptor) = gateway(&pki, true).await;
        let port = listener.local_addr().unwrap().port();
        let server = smol::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.is_err()
        });
        let agent = make_agent(agent_config(
            port,
            &["--ca-file", ca.to_str().unwrap()],
            dir.path(),
            &[],
        ));
        let err = agent.connect_once().await.unwrap_err();
        assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
        assert!(
            format!("{err:#}").contains("invalid peer certificate"),
            "{err:#}"
        );
        assert!(server.await, "server saw a failed handshake");
    });
}

fn pki_ca_pem() -> String {
    pki().ca_pem
}

#[test]
fn fingerprint_pin() {
    run(async {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let (listener, acceptor) = gateway(&pki, true).await;
        let port = listener.local_addr().unwrap().port();
        smol::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ =
                        outband_tunnel::read_frame(&mut tls, &mut FrameDecoder::default()).await;
                    send(
                        &mut tls,
                        frame::Kind::GoAway(pb::GoAway {
                            reason: "pinned ok".into(),
                        }),
                    )
                    .await;
                }
            }
        })
        .detach();

        let good = hex(&tls::fingerprint(&pki.ca_der));
        let agent = make_agent(agent_config(
            port,
            &["--ca-fingerprint", &good],
            dir.path(),
            &[],
        ));
        match agent.connect_once().await {
            Err(ConnectError::GoAway(reason)) => assert_eq!(reason, "pinned ok"),
            other => panic!("expected GoAway after a pinned handshake, got {other:?}"),
        }

        let bad = hex(&[7u8; 32]);
        let agent = make_agent(agent_config(
            port,
            &["--ca-fingerprint", &bad],
            dir.path(),
            &[],
        ));
        let err = agent.connect_once().await.unwrap_err();
        assert!(
            format!("{err:#}").contains("pinned SHA-256 fingerprint"),
            "{err:#}"
        );
    });
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn refused_gateway_port_is_a_tcp_error() {
    run(async {
        let (dir, ca) = ca_file(&pki());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let agent = make_agent(agent_config(
            port,
            &["--ca-file", ca.to_str().unwrap()],
            dir.path(),
            &[],
        ));
        let err = agent.connect_once().await.unwrap_err();
        assert!(matches!(err, ConnectError::Tcp { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    });
}
