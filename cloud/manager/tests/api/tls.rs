//! The manager's own TLS listener, through `outband_manager::run` on a real socket
//! with a real TLS client (rustls) and a CA + leaf made here with rcgen; and the rule
//! that plain HTTP binds only to loopback. Each test runs on SQLite and PostgreSQL.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_manager::config::{Config, Database};
use outband_manager::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ctx::{Db, both};
use crate::pg;

both!(
    https_serves_the_api_on_tls_1_3_and_1_2,
    plaintext_to_the_tls_port_fails_cleanly,
    a_stalled_handshake_does_not_block_other_clients,
    one_address_cannot_take_every_handshake_slot,
    plain_http_binds_only_to_loopback_unless_allowed,
    unusable_tls_files_stop_the_start,
);

/// A CA and a leaf for `localhost` and 127.0.0.1, written as PEM files.
struct Pki {
    ca: CertificateDer<'static>,
    files: TlsFiles,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "manager test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = params.self_signed(&ca_key).unwrap();
    let ca_der = ca.der().clone();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let files = TlsFiles {
        cert: dir.join("manager.pem"),
        key: dir.join("manager.key"),
    };
    std::fs::write(&files.cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    Pki { ca: ca_der, files }
}

/// A manager served by `run` on `bind`.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), outband_manager::ManagerError>>,
    _dir: tempfile::TempDir,
}

async fn config(db: Db, dir: &Path) -> Config {
    let mut c = Config {
        bootstrap_admin: false,
        argon2_concurrency: 2,
        credential_key_file: dir.join("credential.key"),
        ..Config::default()
    };
    c.database = match db {
        Db::Sqlite => Database::SqliteDir(dir.join("data")),
        Db::Postgres => Database::Url(pg::fresh_database().await),
    };
    c
}

async fn start(
    db: Db,
    bind: &str,
    tweak: impl FnOnce(&mut Config, &Path),
) -> (Running, Option<Pki>) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(db, dir.path()).await;
    let pki = pki(dir.path());
    c.tls = Some(pki.files.clone());
    tweak(&mut c, dir.path());
    let has_tls = c.tls.is_some();
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(outband_manager::run(c, listener, async {
        let _ = rx.await;
    }));
    let running = Running {
        addr,
        stop: Some(tx),
        task,
        _dir: dir,
    };
    (running, has_tls.then_some(pki))
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("manager stops")
            .unwrap()
            .expect("manager ran without error");
    }

    /// Waits until the listener answers (the store opens first).
    async fn ready(&self, pki: Option<&Pki>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(!self.task.is_finished(), "manager stopped early");
            let ok = match pki {
                Some(p) => https(self.addr, p, Tls::Any, "GET", "/health", None)
                    .await
                    .is_ok_and(|(s, _)| s == 200),
                None => plain(self.addr, "GET /health")
                    .await
                    .starts_with("HTTP/1.1 200"),
            };
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "manager not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Tls {
    Any,
    Only12,
    Only13,
}

fn connector(pki: &Pki, version: Tls) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let versions: &[&'static rustls::SupportedProtocolVersion] = match version {
        Tls::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Tls::Only12 => &[&rustls::version::TLS12],
        Tls::Only13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTPS request (`Connection: close`): status, JSON body.
async fn https(
    addr: SocketAddr,
    pki: &Pki,
    version: Tls,
    method: &str,
    path: &str,
    body: Option<(&Value, Option<&str>)>,
) -> std::io::Result<(u16, Value)> {
    let tcp = TcpStream::connect(addr).await?;
    https_over(tcp, pki, version, method, path, body).await
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8).
async fn connect_from(addr: SocketAddr, from: [u8; 4]) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

async fn https_over(
    tcp: TcpStream,
    pki: &Pki,
    version: Tls,
    method: &str,
    path: &str,
    body: Option<(&Value, Option<&str>)>,
) -> std::io::Result<(u16, Value)> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector(pki, version).connect(name, tcp),
    )
    .await??;
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    let payload = body.map(|(b, _)| b.to_string()).unwrap_or_default();
    if let Some((_, bearer)) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
        if let Some(t) = bearer {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    tls.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    ))
}

/// A plain-text request line; everything the server sends until it closes (or 10 s).
async fn plain(addr: SocketAddr, line: &str) -> String {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn https_serves_the_api_on_tls_1_3_and_1_2(db: Db) {
    let (m, pki) = start(db, "127.0.0.1:0", |_, _| {}).await;
    let pki = pki.unwrap();
    m.ready(Some(&pki)).await;
    for version in [Tls::Only13, Tls::Only12] {
        let (status, body) = https(m.addr, &pki, version, "GET", "/health", None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{version:?}: {body}");
        // A JSON API call with a body over the same listener.
        let (status, body) = https(
            m.addr,
            &pki,
            version,
            "POST",
            "/api/v1/auth/login",
            Some((
                &json!({"email": "nobody@example.com", "password": "x"}),
                None,
            )),
        )
        .await
        .unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    // A client that does not trust the CA is refused.
    let other = pki_in_tempdir();
    let err = https(m.addr, &other, Tls::Any, "GET", "/health", None).await;
    assert!(err.is_err(), "{err:?}");
    m.stop().await;
}

fn pki_in_tempdir() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path())
}

async fn plaintext_to_the_tls_port_fails_cleanly(db: Db) {
    let (m, pki) = start(db, "127.0.0.1:0", |_, _| {}).await;
    let pki = pki.unwrap();
    m.ready(Some(&pki)).await;
    let started = Instant::now();
    let answer = plain(m.addr, "GET /health").await;
    // Closed promptly (rustls may send an alert first), never an HTTP answer.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!answer.contains("HTTP/"), "{answer:?}");
    assert!(answer.len() < 64, "{answer:?}");
    // The listener is unharmed.
    let (status, _) = https(m.addr, &pki, Tls::Any, "GET", "/health", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    m.stop().await;
}

async fn a_stalled_handshake_does_not_block_other_clients(db: Db) {
    let (m, pki) = start(db, "127.0.0.1:0", |c, _| {
        c.limits.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let pki = pki.unwrap();
    m.ready(Some(&pki)).await;
    // Two stallers: one sends nothing, one half a ClientHello record.
    let mut silent = TcpStream::connect(m.addr).await.unwrap();
    let mut half = TcpStream::connect(m.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, _) = https(m.addr, &pki, Tls::Any, "GET", "/health", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a second client waited {:?} behind the stallers",
        started.elapsed()
    );
    // The stallers are dropped at the handshake deadline.
    for s in [&mut silent, &mut half] {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "a stalled handshake was not closed");
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    m.stop().await;
}

async fn plain_http_binds_only_to_loopback_unless_allowed(db: Db) {
    // Plain HTTP on all interfaces: refused before anything else.
    let (m, _) = start(db, "0.0.0.0:0", |c, _| c.tls = None).await;
    let Running { task, _dir, .. } = m;
    let err = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .expect_err("plain HTTP on 0.0.0.0 must not start");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("--insecure-plain-http"), "{text}");
    // Allowed explicitly.
    let (m, _) = start(db, "0.0.0.0:0", |c, _| {
        c.tls = None;
        c.insecure_plain_http = true;
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], m.addr.port()));
    let m = Running { addr, ..m };
    m.ready(None).await;
    m.stop().await;
    // With TLS, any address.
    let (m, pki) = start(db, "0.0.0.0:0", |_, _| {}).await;
    let m = Running {
        addr: SocketAddr::from(([127, 0, 0, 1], m.addr.port())),
        ..m
    };
    m.ready(pki.as_ref()).await;
    m.stop().await;
    // Plain HTTP on loopback: the default.
    let (m, _) = start(db, "127.0.0.1:0", |c, _| c.tls = None).await;
    m.ready(None).await;
    assert!(
        plain(m.addr, "GET /health")
            .await
            .starts_with("HTTP/1.1 200")
    );
    m.stop().await;
}

async fn unusable_tls_files_stop_the_start(db: Db) {
    let expect_err = |m: Running| async move {
        let Running { task, _dir, .. } = m;
        let err = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap()
            .expect_err("must not start");
        format!("{:#}", anyhow::Error::from(err))
    };
    // Missing key file: the error names it.
    let (m, _) = start(db, "127.0.0.1:0", |c, dir| {
        c.tls.as_mut().unwrap().key = dir.join("missing.key");
    })
    .await;
    let text = expect_err(m).await;
    assert!(text.contains("missing.key"), "{text}");
    // A key that does not belong to the certificate.
    let (m, _) = start(db, "127.0.0.1:0", |c, dir| {
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p = dir.join("other.key");
        std::fs::write(&p, other.serialize_pem()).unwrap();
        c.tls.as_mut().unwrap().key = p;
    })
    .await;
    let text = expect_err(m).await;
    assert!(text.contains("TLS"), "{text}");
    // A certificate file without certificates.
    let (m, _) = start(db, "127.0.0.1:0", |c, dir| {
        let p = dir.join("empty.pem");
        std::fs::write(&p, "not PEM\n").unwrap();
        c.tls.as_mut().unwrap().cert = p;
    })
    .await;
    let text = expect_err(m).await;
    assert!(text.contains("empty.pem"), "{text}");
}

async fn one_address_cannot_take_every_handshake_slot(db: Db) {
    let (m, pki) = start(db, "127.0.0.1:0", |c, _| {
        c.limits.handshake_timeout = Duration::from_secs(20);
        c.limits.max_handshakes_per_ip = 2;
    })
    .await;
    let pki = pki.unwrap();
    m.ready(Some(&pki)).await;
    let from = [127, 0, 0, 7];
    let mut stallers = Vec::new();
    for _ in 0..2 {
        stallers.push(connect_from(m.addr, from).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third from the same address is closed at once.
    let mut third = connect_from(m.addr, from).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the third handshake from one address was not refused: {closed:?}"
    );
    // Another address is served at once.
    let started = Instant::now();
    let tcp = connect_from(m.addr, [127, 0, 0, 8]).await.unwrap();
    let (status, _) = https_over(tcp, &pki, Tls::Any, "GET", "/health", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Once the stallers give up, the address may connect again.
    drop(stallers);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = connect_from(m.addr, from).await.unwrap();
    let (status, _) = https_over(tcp, &pki, Tls::Any, "GET", "/health", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    m.stop().await;
}
