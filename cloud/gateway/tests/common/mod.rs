//! Test context: a gateway on port 0 with captured logs, a minimal HTTP client and a
//! test agent (tokio-rustls + rcgen + outband-tunnel, `Role::Agent`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outband_gateway::config::Config;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder};
use outband_proto::handshake;
use outband_proto::mux::{ConnError, Mux, MuxConfig, Role};
use outband_proto::pb::{self, RefuseCode, frame};
use outband_tunnel::{Incoming, Tunnel, read_frame, write_frame};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

// ---------------------------------------------------------------- logs

/// Log lines captured from this test's thread (tests use the current-thread
/// runtime, so every gateway task logs here).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a line contains every needle; panics with the log otherwise.
    pub async fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            if Instant::now() > deadline {
                panic!("no log line with {needles:?}; log:\n{}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        // Also shown when a test fails (the harness captures print! output).
        print!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- gateway

pub struct TestGateway {
    pub agent_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: tempfile::TempDir,
    pub ready: outband_gateway::ReadyInfo,
    pub ca: CertificateDer<'static>,
    pub logs: Logs,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), outband_gateway::GatewayError>>>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl TestGateway {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let logs = Logs::default();
        let sink = logs.0.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);

        let state = tempfile::tempdir().unwrap();
        let ready_path = state.path().join("ready.json");
        let mut config = Config {
            state_dir: state.path().join("state"),
            ready_file: Some(ready_path.clone()),
            handshake_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        tweak(&mut config);
        let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_addr = agent.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(outband_gateway::run(config, agent, http, async move {
            let _ = rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = loop {
            if let Ok(bytes) = std::fs::read(&ready_path) {
                break serde_json::from_slice::<outband_gateway::ReadyInfo>(&bytes).unwrap();
            }
            assert!(Instant::now() < deadline, "gateway did not become ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ca_path = ready.ca_file.clone().expect("dev CA");
        let ca = CertificateDer::from_pem_file(&ca_path).unwrap();
        Self {
            agent_addr,
            http_addr,
            state,
            ready,
            ca,
            logs,
            shutdown: Some(tx),
            task: Some(task),
            _log_guard: guard,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("gateway stops")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.http_addr, method, path, body).await
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.http("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Value of one metric line (`name{labels}` exactly as rendered).
    pub async fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.http("GET", "/metrics", None).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {series} in:\n{text}"))
    }

    /// Waits until `GET /api/v1/agents/{id}` satisfies `pred`.
    pub async fn wait_agent(
        &self,
        id: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = self
                .http("GET", &format!("/api/v1/agents/{id}"), None)
                .await;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if pred(&v) {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent {id} never matched; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A one-shot HTTP/1.1 request (`Connection: close`).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "test client does not do chunked: {head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

// ---------------------------------------------------------------- agent

/// A self-signed Ed25519 agent certificate.
#[derive(Clone)]
pub struct AgentIdentity {
    pub cert: CertificateDer<'static>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub agent_id: String,
    pub pairing_code: String,
}

impl AgentIdentity {
    pub fn generate() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["outband-agent".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert = cert.der().clone();
        let spki = outband_gateway::agents::verifier::spki_of(&cert).unwrap();
        Self {
            agent_id: outband_proto::identity::agent_id_from_spki(&spki),
            pairing_code: outband_proto::identity::pairing_code_from_spki(&spki),
            cert,
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        }
    }
}

pub type AgentIo = Compat<TlsStream<TcpStream>>;

fn client_config(ca: &CertificateDer<'static>, id: Option<&AgentIdentity>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    match id {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// TLS to the gateway (with `id`'s client certificate if given).
pub async fn tls_connect(gw: &TestGateway, id: Option<&AgentIdentity>) -> std::io::Result<AgentIo> {
    let tcp = TcpStream::connect(gw.agent_addr).await?;
    tcp.set_nodelay(true)?;
    let connector = TlsConnector::from(Arc::new(client_config(&gw.ca, id)));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(tls.compat())
}

/// Sends a hello and returns the gateway's answer frame.
pub async fn hello_exchange(io: &mut AgentIo, hello: pb::Frame) -> Result<pb::Frame, String> {
    write_frame(io, &hello, DEFAULT_MAX_FRAME_LEN)
        .await
        .map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    read_frame(io, &mut dec).await.map_err(|e| e.to_string())
}

pub struct TestAgent {
    pub tunnel: Tunnel,
    pub ack: pb::HelloAck,
    pub driver: JoinHandle<ConnError>,
    pub server: JoinHandle<()>,
}

/// Tokio timer for the test agent's tunnel.
struct Timer;
impl outband_tunnel::Timer for Timer {
    fn sleep_until(
        &self,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// Connects, says hello and serves streams by relaying to TCP targets.
pub async fn connect_agent(gw: &TestGateway, id: &AgentIdentity) -> Result<TestAgent, String> {
    connect_agent_speaking(gw, id, outband_proto::PROTOCOL_VERSION, 64 * 1024).await
}

/// [`connect_agent`] as an agent that speaks protocol versions up to `max_version`
/// and grants a `window`-byte receive window per stream. Its multiplexer behaves as
/// the negotiated version says (at version 1: no shared window, credit granted at a
/// quarter of the window, as agents built before version 2 do).
pub async fn connect_agent_speaking(
    gw: &TestGateway,
    id: &AgentIdentity,
    max_version: u32,
    window: u32,
) -> Result<TestAgent, String> {
    let mut io = tls_connect(gw, Some(id)).await.map_err(|e| e.to_string())?;
    let mut hello = handshake::hello("test-agent 0.0.1", &id.pairing_code, window);
    if let Some(frame::Kind::Hello(h)) = &mut hello.kind {
        h.max_version = max_version;
    }
    let answer = hello_exchange(&mut io, hello).await?;
    let ack = match answer.kind {
        Some(frame::Kind::HelloAck(ack)) => ack,
        Some(frame::Kind::GoAway(g)) => return Err(format!("go away: {}", g.reason)),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let cfg = MuxConfig {
        initial_window: window,
        peer_initial_window: ack.initial_window,
        heartbeat_interval: Duration::from_millis(ack.heartbeat_interval_ms.into()),
        ..MuxConfig::new(Role::Agent)
    }
    .for_peer_version(ack.version);
    let (tunnel, driver) = Tunnel::new(io, Mux::new(cfg, Instant::now()), Timer);
    let driver = tokio::spawn(driver);
    let server = tokio::spawn(serve_streams(tunnel.clone()));
    Ok(TestAgent {
        tunnel,
        ack,
        driver,
        server,
    })
}

/// Accepts every stream and relays it to its TCP target (`vnc://h:p` or `h:p`);
/// refuses with `Unreachable` when the target does not answer.
async fn serve_streams(tunnel: Tunnel) {
    while let Some(inc) = tunnel.accept().await {
        let Incoming::Stream(pending) = inc else {
            continue;
        };
        let target = pending.target().to_owned();
        let addr = target
            .strip_prefix("vnc://")
            .or_else(|| target.strip_prefix("tcp://"))
            .unwrap_or(&target)
            .to_owned();
        tokio::spawn(async move {
            match TcpStream::connect(&addr).await {
                Ok(mut tcp) => {
                    let Ok(stream) = pending.accept() else { return };
                    let mut stream = stream.compat();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                }
                Err(e) => pending.refuse(RefuseCode::Unreachable, &format!("connect {addr}: {e}")),
            }
        });
    }
}

/// A TCP echo server that echoes until EOF, then closes its write side.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

impl TestGateway {
    /// Waits until no agent is listed.
    pub async fn wait_until_no_agents(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .json("/api/v1/agents")
            .await
            .as_array()
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "agents still listed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
