//! The user API listener in-process: TLS with production certificate files (a
//! rustls client that trusts only that certificate), the bounds of the accept loop
//! (header size, no plain HTTP on the TLS port), 401 answers with their challenge, and
//! the JWKS cache keeping the gateway up while the manager is unreachable (the manager
//! URL is a closed port: a fault a real manager cannot produce on demand). The full
//! flow with a real manager, agent and BMC is `tests/tests/e2e_user_sessions.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_gateway::config::{Config, ManagerConfig, TlsFiles, UserApiConfig};
use outband_gateway::manager::jwks::JwksSettings;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Running {
    user_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), outband_gateway::GatewayError>>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k): (PathBuf, PathBuf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let ready = dir.path().join("ready.json");
    let config = Config {
        state_dir: dir.path().join("state"),
        ready_file: Some(ready.clone()),
        tls: Some(TlsFiles { cert: c, key: k }),
        manager: Some(ManagerConfig {
            // Nothing listens there: every manager call fails at once.
            url: "http://127.0.0.1:1".into(),
            registration_credential_file: None,
            ca_file: None,
            heartbeat_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }),
        user_api: Some(UserApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks: JwksSettings::default(),
        }),
        ..Config::default()
    };
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(outband_gateway::run(config, agent, http, async move {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        if let Ok(bytes) = std::fs::read(&ready) {
            break serde_json::from_slice::<outband_gateway::ReadyInfo>(&bytes).unwrap();
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Running {
        user_addr: info.user_addr.expect("user_addr").parse().unwrap(),
        http_addr,
        cert: cert.der().clone(),
        _dir: dir,
        stop: Some(tx),
        task,
    }
}

impl Running {
    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(self.user_addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the user API")
    }

    /// One request over a fresh TLS connection: the whole response text.
    async fn request(&self, head: &str) -> String {
        let mut s = self.tls().await;
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.http_addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("gateway stops")
            .unwrap()
            .unwrap();
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn tls_listener_bounds_and_unauthenticated_answers() {
    let gw = start().await;

    let r = gw.request(&get("/health", "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // No token: 401 with a bare challenge; a token the gateway cannot verify (no keys:
    // the manager is down) is invalid_token.
    let r = gw.request(&get("/api/v1/servers/srv_1/power", "")).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(
        r.contains("www-authenticate: Bearer realm=\"outband\"\r\n"),
        "{r}"
    );
    assert!(r.contains("\"code\":\"missing_token\""), "{r}");
    let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.AAAA";
    let r = gw
        .request(&get(
            "/api/v1/servers/srv_1/power",
            &format!("Authorization: Bearer {token}\r\n"),
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("error=\"invalid_token\""), "{r}");

    // Headers beyond the read buffer (16 KiB): refused, not buffered.
    let big = format!("X-Filler: {}\r\n", "a".repeat(32 * 1024));
    let r = gw.request(&get("/health", &big)).await;
    assert!(r.starts_with("HTTP/1.1 431") || r.is_empty(), "{r}");
    // Too many header fields.
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = gw.request(&get("/health", &many)).await;
    assert!(!r.starts_with("HTTP/1.1 200"), "{r}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(gw.user_addr).await.unwrap();
    plain
        .write_all(get("/health", "").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("HTTP/1.1 200"));

    // The manager is unreachable: the fetch errors are counted, the API keeps answering.
    let m = gw.metrics().await;
    let errors: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("outband_gateway_jwks_fetches_total{result=\"error\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{m}");
    assert!(
        m.contains("outband_gateway_token_validations_total{result=\"missing\"} 1"),
        "{m}"
    );
    assert!(m.contains("outband_gateway_jwks_keys 0"), "{m}");
    let r = gw.request(&get("/health", "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    gw.stop().await;
}
