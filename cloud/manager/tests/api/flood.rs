//! A login flood through the real listener (`run` on a socket): beyond the argon2 cap
//! plus its queue, logins are answered `503 busy` at once, while `/health` and an
//! authenticated GET keep answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use outband_manager::config::{Config, Database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ctx::{Db, PASSWORD, both};

/// One request on its own connection: `(status, headers and body, time taken)`.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    bearer: Option<&str>,
) -> (u16, String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text, t.elapsed())
}

fn login_body(email: &str, password: &str) -> String {
    serde_json::json!({"email": email, "password": password}).to_string()
}

async fn a_login_flood_gets_busy_quickly_and_the_rest_keeps_answering(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config {
        bootstrap_admin: false,
        argon2_concurrency: 1,
        argon2_queue: 2,
        argon2_wait: Duration::from_secs(20),
        credential_key_file: dir.path().join("credential.key"),
        ..Config::default()
    };
    c.throttle.account_limit = 10_000;
    c.throttle.ip_limit = 10_000;
    c.database = match db {
        Db::Sqlite => Database::SqliteDir(dir.path().join("data")),
        Db::Postgres => Database::Url(crate::pg::fresh_database().await),
    };
    let store = outband_manager::open_store(&c.database).await.unwrap();
    outband_manager::users::create_user(
        &store,
        &outband_manager::ids::Clock::default(),
        "ops@example.com",
        PASSWORD,
        false,
        false,
        "test",
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(outband_manager::run(c, listener, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(addr, "GET", "/health", "", None).await.0 != 200 {
        assert!(Instant::now() < deadline, "manager not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, text, _) = http(
        addr,
        "POST",
        "/api/v1/auth/login",
        &login_body("ops@example.com", PASSWORD),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let token = v["access_token"].as_str().unwrap().to_owned();

    // 40 logins at once (unknown accounts: every one needs a hash): one hashes, two
    // wait, the rest are refused without waiting.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                let body = login_body(&format!("flood{i}@example.com"), "wrong password!!");
                http(addr, "POST", "/api/v1/auth/login", &body, None).await
            })
        })
        .collect();
    // Meanwhile the rest of the API answers.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..5 {
        let (s, _, took) = http(addr, "GET", "/health", "", None).await;
        assert_eq!(s, 200);
        assert!(took < Duration::from_secs(2), "/health took {took:?}");
        let (s, text, took) = http(addr, "GET", "/api/v1/me", "", Some(&token)).await;
        assert_eq!(s, 200, "{text}");
        assert!(took < Duration::from_secs(2), "/api/v1/me took {took:?}");
    }
    let mut busy = 0;
    let mut refused = 0;
    for f in flood {
        let (s, text, took) = f.await.unwrap();
        match s {
            503 => {
                assert!(text.contains(r#""code":"busy""#), "{text}");
                assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
                assert!(took < Duration::from_secs(3), "busy after {took:?}");
                busy += 1;
            }
            401 => refused += 1,
            _ => panic!("unexpected answer: {text}"),
        }
    }
    assert_eq!(busy + refused, 40);
    // At most cap + queue (3) were hashed at any moment; some more may have arrived
    // after a slot freed up, but most of the flood was turned away.
    assert!(busy >= 20, "busy {busy}, refused {refused}");
    assert!(refused >= 1, "busy {busy}, refused {refused}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("manager stops")
        .unwrap()
        .unwrap();
}

both!(a_login_flood_gets_busy_quickly_and_the_rest_keeps_answering);
