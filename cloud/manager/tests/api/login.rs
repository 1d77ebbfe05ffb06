//! Login: success, enumeration-safe failures, throttling, input bounds.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use outband_manager::jwt::{self, Expect};
use serde_json::json;

use crate::ctx::{Db, PASSWORD, TestApp, both, join_all};

async fn login_returns_tokens_that_verify_against_the_jwks(db: Db) {
    let app = TestApp::new(db).await;
    let user = app.user("Alice@Example.com", false).await;
    // Email is case-insensitive and trimmed.
    let r = app.login(" alice@EXAMPLE.com ", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    assert_eq!(v["gateways"], json!([]));
    let refresh = v["refresh_token"].as_str().unwrap();
    assert!(
        refresh.starts_with("obr_") && refresh.len() == 47,
        "{refresh}"
    );

    let jwks = app.get("/.well-known/jwks.json", None).await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    let x = data_encoding::BASE64URL_NOPAD
        .decode(key["x"].as_str().unwrap().as_bytes())
        .unwrap();
    let kid = key["kid"].as_str().unwrap().to_owned();
    let claims = jwt::verify(
        v["access_token"].as_str().unwrap(),
        |k| (k == kid).then(|| x.clone()),
        &Expect {
            issuer: "outband-manager",
            audience: "outband",
            now: app.clock.now(),
        },
    )
    .expect("access token verifies with the published key");
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.email, "alice@example.com");
    assert_eq!(claims.typ, "access");
    assert_eq!(claims.exp - claims.iat, 600);
    assert!(!claims.adm);
}

async fn wrong_password_and_unknown_email_look_the_same(db: Db) {
    let app = TestApp::with_config(db, |c| c.throttle.account_limit = 100).await;
    app.user("bob@example.com", false).await;
    let mut known = Duration::ZERO;
    let mut unknown = Duration::ZERO;
    let mut bodies = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let a = app
            .login_from("bob@example.com", "wrong password!!", [10, 0, 0, i])
            .await;
        known += t.elapsed();
        let t = Instant::now();
        let b = app
            .login_from("nobody@example.com", "wrong password!!", [10, 0, 1, i])
            .await;
        unknown += t.elapsed();
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.status, b.status);
        assert_eq!(a.text, b.text);
        let mut ha = a.headers.clone();
        let mut hb = b.headers.clone();
        ha.remove("date");
        hb.remove("date");
        assert_eq!(ha, hb);
        bodies.push(a.code());
    }
    assert_eq!(bodies[0], "invalid_credentials");
    // Both paths do one argon2 verification; without the dummy hash the unknown path
    // would take microseconds.
    assert!(
        unknown * 3 >= known && known * 3 >= unknown,
        "timing differs: known {known:?}, unknown {unknown:?}"
    );
}

async fn account_throttle_locks_after_the_limit_for_known_and_unknown(db: Db) {
    let app = TestApp::new(db).await; // account limit 3
    app.user("carol@example.com", false).await;
    for (n, email) in ["carol@example.com", "ghost@example.com"]
        .iter()
        .enumerate()
    {
        for i in 0..3u8 {
            // Different addresses: only the account counter trips.
            let r = app
                .login_from(email, "bad password 123", [10, 1, n as u8, i])
                .await;
            assert_eq!(r.code(), "invalid_credentials");
        }
        let r = app.login_from(email, PASSWORD, [10, 1, n as u8, 9]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        assert_eq!(r.code(), "too_many_attempts");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 15 * 60);
    }
    // Other accounts are unaffected.
    app.user("dave@example.com", false).await;
    assert_eq!(
        app.login("dave@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    // After the lockout the right password works again.
    app.clock.advance(15 * 60 + 1);
    assert_eq!(
        app.login("carol@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn address_throttle_locks_one_source_only(db: Db) {
    let app = TestApp::new(db).await; // ip limit 8, account limit 3
    app.user("erin@example.com", false).await;
    for i in 0..8 {
        let r = app
            .login_from(
                &format!("probe{i}@example.com"),
                "bad password 123",
                [10, 2, 0, 1],
            )
            .await;
        assert_eq!(r.code(), "invalid_credentials");
    }
    let r = app
        .login_from("erin@example.com", PASSWORD, [10, 2, 0, 1])
        .await;
    assert_eq!(r.code(), "too_many_attempts");
    let r = app
        .login_from("erin@example.com", PASSWORD, [10, 2, 0, 2])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn malformed_and_oversized_logins_are_refused_without_echo(db: Db) {
    let app = TestApp::new(db).await;
    let secret = "echo-canary-password-1";
    let cases = [
        (
            json!({ "email": "a@b.c", "password": secret, "extra": 1 }).to_string(),
            "invalid_request",
        ),
        (json!({ "email": "a@b.c" }).to_string(), "invalid_request"),
        (
            format!("{{\"email\":\"a@b.c\",\"password\":\"{secret}"),
            "invalid_request",
        ),
        (
            json!({ "email": "a@b.c", "password": "x".repeat(2000) }).to_string(),
            "invalid_request",
        ),
        (
            json!({ "email": "a".repeat(300), "password": secret }).to_string(),
            "invalid_request",
        ),
        (
            json!({ "email": "a@b.c", "password": "y".repeat(20_000) }).to_string(),
            "payload_too_large",
        ),
    ];
    for (body, code) in cases {
        let r = app
            .send(
                axum::http::Method::POST,
                "/api/v1/auth/login",
                Some(body),
                None,
                [127, 0, 0, 1],
            )
            .await;
        assert_eq!(r.code(), code, "{}", r.text);
        assert!(!r.text.contains(secret));
    }
}

/// Audit rows of `login` with this detail.
async fn login_rows(app: &TestApp, root: &str, detail: &str) -> usize {
    app.audit(root, "action=login&limit=1000")
        .await
        .iter()
        .filter(|e| e["detail"] == detail)
        .count()
}

async fn concurrent_guesses_get_at_most_the_account_limit(db: Db) {
    // One hashing slot: without reserving each attempt before hashing, every request
    // passes the "not locked" check while the first ones wait for argon2.
    let app = TestApp::with_config(db, |c| {
        c.argon2_concurrency = 1;
        c.throttle.ip_limit = 1000;
    })
    .await; // account limit 3
    let root = app.root().await;
    app.user("frank@example.com", false).await;
    let tries =
        (0..24).map(|i| app.login_from("frank@example.com", "bad password 123", [10, 3, 0, i]));
    let results = join_all(tries).await;
    let refused = results
        .iter()
        .filter(|r| r.code() == "invalid_credentials")
        .count();
    let throttled = results
        .iter()
        .filter(|r| r.code() == "too_many_attempts")
        .count();
    assert_eq!(refused + throttled, 24, "{results:?}");
    assert_eq!(refused, 3, "exactly the account limit was verified");
    assert_eq!(login_rows(&app, &root, "bad_password").await, 3);
    assert_eq!(login_rows(&app, &root, "throttled").await, 21);
    // Still locked for the right password too.
    let r = app.login("frank@example.com", PASSWORD).await;
    assert_eq!(r.code(), "too_many_attempts");
}

async fn concurrent_guesses_from_one_address_get_at_most_the_address_limit(db: Db) {
    let app = TestApp::with_config(db, |c| {
        c.argon2_concurrency = 1;
        c.throttle.ip_limit = 4;
    })
    .await;
    let root = app.root().await;
    let emails: Vec<String> = (0..24).map(|i| format!("spray{i}@example.com")).collect();
    let tries = emails
        .iter()
        .map(|e| app.login_from(e, "bad password 123", [10, 4, 0, 1]));
    let results = join_all(tries).await;
    let refused = results
        .iter()
        .filter(|r| r.code() == "invalid_credentials")
        .count();
    assert_eq!(refused, 4, "{results:?}");
    assert_eq!(login_rows(&app, &root, "unknown_user").await, 4);
    assert_eq!(login_rows(&app, &root, "throttled").await, 20);
    // The address stays locked, for a real account too.
    app.user("gina@example.com", false).await;
    let r = app.login_from("gina@example.com", PASSWORD, [10, 4, 0, 1]);
    assert_eq!(r.await.code(), "too_many_attempts");
}

async fn successful_logins_do_not_use_up_the_address_allowance(db: Db) {
    let app = TestApp::with_config(db, |c| c.throttle.ip_limit = 2).await;
    app.user("hank@example.com", false).await;
    for _ in 0..5 {
        let r = app
            .login_from("hank@example.com", PASSWORD, [10, 5, 0, 1])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    // Two failures still fit; the third attempt is throttled.
    for _ in 0..2 {
        let r = app
            .login_from("hank@example.com", "bad password 123", [10, 5, 0, 1])
            .await;
        assert_eq!(r.code(), "invalid_credentials");
    }
    let r = app
        .login_from("hank@example.com", PASSWORD, [10, 5, 0, 1])
        .await;
    assert_eq!(r.code(), "too_many_attempts");
}

both!(
    login_returns_tokens_that_verify_against_the_jwks,
    wrong_password_and_unknown_email_look_the_same,
    account_throttle_locks_after_the_limit_for_known_and_unknown,
    address_throttle_locks_one_source_only,
    malformed_and_oversized_logins_are_refused_without_echo,
    concurrent_guesses_get_at_most_the_account_limit,
    concurrent_guesses_from_one_address_get_at_most_the_address_limit,
    successful_logins_do_not_use_up_the_address_allowance,
);
