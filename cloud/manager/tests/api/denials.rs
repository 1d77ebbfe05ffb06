//! Denials nobody could audit before: refused access tokens, calls with a one-time
//! password, refused gateway tokens and plain-HTTP gateway calls; each writes a
//! `denied` row with the reason and the source address, at most 10 per address per
//! minute (the rest counted in `outband_manager_audit_suppressed_total`).

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use outband_manager::audit_limit::PER_SOURCE;
use outband_manager::users;
use serde_json::{Value, json};

use crate::ctx::{Db, TestApp, both};
use crate::gateways::gateway;

/// `(actor_id, source_ip, target, detail)` of the `denied` rows of `action`, newest
/// first.
async fn denied(app: &TestApp, root: &str, action: &str) -> Vec<[String; 4]> {
    app.audit(root, &format!("action={action}&limit=1000"))
        .await
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            [s("actor_id"), s("source_ip"), s("target"), s("detail")]
        })
        .collect()
}

async fn get_from(app: &TestApp, path: &str, token: &str, ip: [u8; 4]) -> StatusCode {
    app.send(Method::GET, path, None, Some(token), ip)
        .await
        .status
}

async fn refused_access_tokens_are_audited(db: Db) {
    let app = TestApp::new(db).await;
    let user = app.user("u@example.com", false).await;
    let (access, refresh) = app.tokens("u@example.com").await;

    let r = app
        .send(
            Method::GET,
            "/api/v1/me",
            None,
            Some("garbage"),
            [198, 51, 100, 1],
        )
        .await;
    assert_eq!(r.code(), "invalid_token");
    let big = "x".repeat(9000);
    let status = get_from(&app, "/api/v1/me", &big, [198, 51, 100, 1]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Logged out: the token verifies, the session is over.
    app.post("/api/v1/auth/logout", json!({"refresh_token": refresh}))
        .await;
    let status = get_from(&app, "/api/v1/me", &access, [198, 51, 100, 2]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Expired.
    let (access2, _) = app.tokens("u@example.com").await;
    app.clock.advance(11 * 60);
    let status = get_from(&app, "/api/v1/me", &access2, [198, 51, 100, 3]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let root = app.root().await;
    let rows = denied(&app, &root, "access_token").await;
    let sid = |t: &str| {
        let claims = t.split('.').nth(1).unwrap();
        let v: Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(claims.as_bytes())
                .unwrap(),
        )
        .unwrap();
        v["sid"].as_str().unwrap().to_owned()
    };
    let s = |v: &str| v.to_owned();
    assert_eq!(
        rows,
        [
            [s(""), s("198.51.100.3"), s(""), s("token expired")],
            [
                s(&user.id),
                s("198.51.100.2"),
                sid(&access),
                s("session ended")
            ],
            [s(""), s("198.51.100.1"), s(""), s("token too large")],
            [s(""), s("198.51.100.1"), s(""), s("malformed token")],
        ]
    );
}

async fn calls_with_a_one_time_password_are_audited(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let otp = users::generate_password();
    let user = users::create_user(
        &app.m.store,
        &app.clock,
        "n@example.com",
        &otp,
        false,
        true,
        "test",
    )
    .await
    .unwrap();
    let r = app
        .login_from("n@example.com", &otp, [203, 0, 113, 7])
        .await;
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = app
        .send(
            Method::GET,
            "/api/v1/servers",
            None,
            Some(&token),
            [203, 0, 113, 7],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "password_change_required");
    let rows = denied(&app, &root, "password_change_required").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], user.id);
    assert_eq!(rows[0][1], "203.0.113.7");
    assert_eq!(rows[0][3], "GET /api/v1/servers");
}

async fn gateway_denials_are_audited(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (gw_id, _token) = gateway(&app, &root, "g").await;
    let beat = json!({"agents": []}).to_string();
    let remote = [192, 0, 2, 5];
    for bad in ["obg_not-a-real-token", "something-else"] {
        let r = app
            .send(
                Method::POST,
                "/api/v1/gateway/heartbeat",
                Some(beat.clone()),
                Some(bad),
                [127, 0, 0, 1],
            )
            .await;
        assert_eq!(r.code(), "invalid_token");
    }
    // Plain HTTP from a remote peer: a gateway call, registering, an admin creating a
    // gateway or a credential.
    let credential = format!("/api/v1/gateways/{gw_id}/credential");
    let plain = [
        ("/api/v1/gateway/heartbeat", Some(beat), None),
        (
            "/api/v1/gateway/register",
            Some(json!({"registration_credential": "obgr_x"}).to_string()),
            None,
        ),
        (
            "/api/v1/gateways",
            Some(json!({"name": "h"}).to_string()),
            Some(root.as_str()),
        ),
        (credential.as_str(), None, Some(root.as_str())),
    ];
    for (path, body, bearer) in plain {
        let r = app
            .send_via(Method::POST, path, body, bearer, remote, false, &[])
            .await;
        assert_eq!(r.code(), "insecure_transport", "{path}");
    }

    let s = |v: &str| v.to_owned();
    assert_eq!(
        denied(&app, &root, "gateway_auth").await,
        [
            [
                s(""),
                s("192.0.2.5"),
                s(""),
                s("insecure_transport /api/v1/gateway/heartbeat")
            ],
            [
                s(""),
                s("127.0.0.1"),
                s(""),
                s("invalid_token /api/v1/gateway/heartbeat")
            ],
            [
                s(""),
                s("127.0.0.1"),
                s(""),
                s("invalid_token /api/v1/gateway/heartbeat")
            ],
        ]
    );
    assert_eq!(
        denied(&app, &root, "gateway_register").await,
        [[s(""), s("192.0.2.5"), s(""), s("insecure_transport")]]
    );
    let admin = app
        .m
        .store
        .user_by_email("root@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        denied(&app, &root, "gateway_create").await,
        [[s(&admin.id), s("192.0.2.5"), s(""), s("insecure_transport")]]
    );
    assert_eq!(
        denied(&app, &root, "gateway_credential").await,
        [[s(&admin.id), s("192.0.2.5"), gw_id, s("insecure_transport")]]
    );
}

async fn a_token_spray_writes_a_bounded_number_of_rows(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    for i in 0..50 {
        let t = format!("garbage-{i}");
        assert_eq!(
            get_from(&app, "/api/v1/me", &t, [198, 51, 100, 9]).await,
            StatusCode::UNAUTHORIZED
        );
        let t = format!("obg_{i}");
        let r = app
            .send_via(
                Method::POST,
                "/api/v1/gateway/heartbeat",
                Some("{}".into()),
                Some(&t),
                [198, 51, 100, 9],
                true,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let rows = denied(&app, &root, "access_token").await.len()
        + denied(&app, &root, "gateway_auth").await.len();
    assert_eq!(rows, PER_SOURCE as usize, "one address, one allowance");
    assert_eq!(
        app.m.metrics.audit_suppressed.load(Ordering::Relaxed),
        100 - u64::from(PER_SOURCE)
    );
    let metrics = app.get("/metrics", None).await.text;
    assert!(
        metrics.contains(&format!(
            "outband_manager_audit_suppressed_total {}",
            100 - PER_SOURCE
        )),
        "{metrics}"
    );
    // Another address still gets its rows; the next minute the first one does again.
    assert_eq!(
        get_from(&app, "/api/v1/me", "x", [198, 51, 100, 10]).await,
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(60);
    assert_eq!(
        get_from(&app, "/api/v1/me", "x", [198, 51, 100, 9]).await,
        StatusCode::UNAUTHORIZED
    );
    let rows = denied(&app, &root, "access_token").await;
    assert_eq!(rows[0][1], "198.51.100.9");
    assert_eq!(rows[1][1], "198.51.100.10");
}

both!(
    refused_access_tokens_are_audited,
    calls_with_a_one_time_password_are_audited,
    gateway_denials_are_audited,
    a_token_spray_writes_a_bounded_number_of_rows,
);
