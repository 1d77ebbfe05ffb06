//! The manager client against in-process fake servers, for what the real manager
//! does not produce: stalls, oversized and non-JSON bodies, TLS with a private CA. The
//! happy path against the real manager is in `tests/tests/e2e_manager_gateway.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_api::gateways::HeartbeatRequest;
use outband_gateway::manager::client::{ClientError, MAX_RESPONSE, ManagerClient};
use outband_gateway::manager::secret::Secret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Reads one request head (and a body up to Content-Length) and returns it as text.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

/// A plain HTTP server answering every connection with `status` and `body`; sends
/// each request it read on the channel. `None` as status: read, then never answer.
async fn fake(
    status: Option<&'static str>,
    body: Vec<u8>,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/base", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let req = read_request(&mut s).await;
                let _ = tx.send(req);
                match status {
                    Some(st) => respond(&mut s, st, &body).await,
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    (url, rx)
}

fn client(url: &str, timeout_ms: u64) -> ManagerClient {
    ManagerClient::new(url, None, Duration::from_millis(timeout_ms)).unwrap()
}

fn token() -> Secret {
    Secret::new("obg_test-token".into())
}

/// The feed's position within a second goes back as `after`, percent-encoded, and
/// the page's `next_after` comes out.
#[tokio::test]
async fn revocations_send_the_after_cursor() {
    let (url, mut rx) = fake(
        Some("200 OK"),
        br#"{"sessions":[{"session_id":"ses_2","user_id":"usr_1","revoked_at":7}],"next_since":7,"next_after":"ses_2"}"#.to_vec(),
    )
    .await;
    let page = client(&url, 5000)
        .revocations(&token(), 7, Some("ses_1&x=1"))
        .await
        .unwrap();
    assert_eq!(page.next_after.as_deref(), Some("ses_2"));
    assert_eq!(page.list.next_since, 7);
    assert_eq!(page.list.sessions.len(), 1);
    let req = rx.recv().await.unwrap();
    assert!(
        req.starts_with(
            "GET /base/api/v1/gateway/revocations?since=7&after=ses_1%26x%3D1 HTTP/1.1\r\n"
        ),
        "{req}"
    );
}

#[tokio::test]
async fn heartbeat_sends_bearer_under_the_base_path() {
    let (url, mut rx) = fake(
        Some("200 OK"),
        br#"{"now":1234,"extra":"ignored"}"#.to_vec(),
    )
    .await;
    let resp = client(&url, 5000)
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap();
    assert_eq!(resp.now, 1234);
    let req = rx.recv().await.unwrap();
    assert!(
        req.starts_with("POST /base/api/v1/gateway/heartbeat HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(
        req.contains("authorization: Bearer obg_test-token\r\n"),
        "{req}"
    );
    assert!(req.contains(r#"{"agents":[]}"#), "{req}");
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/base");
    assert!(
        req.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{req}"
    );
}

#[tokio::test]
async fn error_bodies_are_parsed_and_401_is_recognised() {
    let body = br#"{"error":{"code":"invalid_token","message":"token unknown"}}"#.to_vec();
    let (url, _rx) = fake(Some("401 Unauthorized"), body).await;
    let err = client(&url, 5000)
        .revocations(&token(), 5, None)
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("GET /api/v1/gateway/revocations") && text.contains("invalid_token"),
        "{text}"
    );
    assert!(!text.contains("obg_test-token"), "{text}");

    let (url, _rx) = fake(
        Some("502 Bad Gateway"),
        b"<html>proxy says no</html>".to_vec(),
    )
    .await;
    let err = client(&url, 5000)
        .revocations(&token(), 5, None)
        .await
        .unwrap_err();
    assert!(!err.is_unauthorized());
    assert!(
        matches!(&err, ClientError::Status { message, .. } if message.contains("proxy says no")),
        "{err}"
    );

    let (url, _rx) = fake(Some("200 OK"), b"{\"now\":\"not a number\"}".to_vec()).await;
    let err = client(&url, 5000)
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Body { .. }), "{err}");
}

#[tokio::test]
async fn a_stalled_manager_times_out() {
    let (url, _rx) = fake(None, vec![]).await;
    let start = Instant::now();
    let err = client(&url, 300)
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let mut body = b"{\"now\":1,\"pad\":\"".to_vec();
    body.resize(MAX_RESPONSE + 100, b'a');
    body.extend_from_slice(b"\"}");
    let (url, _rx) = fake(Some("200 OK"), body).await;
    let err = client(&url, 5000)
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Body { message, .. } if message.contains("at most")),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let err = client(&url, 5000)
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Transport { message, .. } if message.contains("connecting")),
        "{err}"
    );
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let id = outband_gateway::pki::load_or_create_dev(dir.path()).unwrap();
    let ca_file = id.ca_file.clone().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(id.cert_chain, id.key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = read_request(&mut tls).await;
                    respond(&mut tls, "200 OK", br#"{"now":77}"#).await;
                }
            });
        }
    });
    let url = format!("https://localhost:{port}");
    let c = ManagerClient::new(&url, Some(&ca_file), Duration::from_secs(5)).unwrap();
    let resp = c
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap();
    assert_eq!(resp.now, 77);

    // Another CA: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_ca = outband_gateway::pki::load_or_create_dev(other.path())
        .unwrap()
        .ca_file
        .unwrap();
    let c = ManagerClient::new(&url, Some(&other_ca), Duration::from_secs(5)).unwrap();
    let err = c
        .heartbeat(&token(), &HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Transport { message, .. } if message.contains("TLS")),
        "{err}"
    );

    let err = ManagerClient::new(
        &url,
        Some(&dir.path().join("missing.pem")),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
