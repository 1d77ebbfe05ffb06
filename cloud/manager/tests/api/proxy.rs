//! Client address and scheme behind trusted proxies (`--trusted-proxy`): what login
//! throttling, the audit log and the gateway-credential transport rule see.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::ctx::{Db, PASSWORD, Resp, TestApp, both};
use crate::gateways::gateway;

both!(
    spoofed_forwarded_for_from_an_untrusted_peer_is_ignored,
    a_trusted_proxy_forwards_the_client_address,
    malformed_and_oversized_forwarded_for,
    forwarded_proto_decides_whether_gateway_credentials_may_pass,
    bmc_credentials_leave_only_over_an_encrypted_client_connection,
);

const PROXY: [u8; 4] = [10, 0, 0, 2];

async fn app_behind_proxy(db: Db) -> TestApp {
    TestApp::with_config(db, |c| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await
}

async fn login_via(app: &TestApp, email: &str, peer: [u8; 4], headers: &[(&str, &str)]) -> Resp {
    let body = json!({ "email": email, "password": "wrong password!" }).to_string();
    app.send_via(
        Method::POST,
        "/api/v1/auth/login",
        Some(body),
        None,
        peer,
        false,
        headers,
    )
    .await
}

/// Source addresses of the audited login failures, newest first.
async fn login_sources(app: &TestApp, root: &str) -> Vec<String> {
    app.audit(root, "action=login&limit=1000")
        .await
        .iter()
        .filter(|e| e["outcome"] != "success")
        .map(|e| e["source_ip"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(db: Db) {
    let app = app_behind_proxy(db).await;
    let root = app.root().await;
    let attacker = [203, 0, 113, 5];
    // Eight failures (the address limit in tests), each claiming another address and
    // naming another account (so the account limit never applies).
    for i in 0..8 {
        let fake = format!("198.51.100.{i}");
        let r = login_via(
            &app,
            &format!("u{i}@example.com"),
            attacker,
            &[("x-forwarded-for", &fake), ("x-forwarded-proto", "https")],
        )
        .await;
        assert_eq!(r.code(), "invalid_credentials", "{i}: {}", r.text);
    }
    let r = login_via(
        &app,
        "u99@example.com",
        attacker,
        &[("x-forwarded-for", "198.51.100.99")],
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        "the throttle counts the real peer"
    );
    let sources = login_sources(&app, &root).await;
    assert_eq!(sources.len(), 9);
    assert!(sources.iter().all(|s| s == "203.0.113.5"), "{sources:?}");
    // Another client is not affected.
    let r = login_via(&app, "u100@example.com", [203, 0, 113, 6], &[]).await;
    assert_eq!(r.code(), "invalid_credentials");
}

async fn a_trusted_proxy_forwards_the_client_address(db: Db) {
    let app = app_behind_proxy(db).await;
    let root = app.root().await;
    // Client A tries to hide behind an address of its choosing; the proxy appends
    // the address it saw.
    for i in 0..8 {
        let r = login_via(
            &app,
            &format!("a{i}@example.com"),
            PROXY,
            &[("x-forwarded-for", "192.0.2.77, 198.51.100.1")],
        )
        .await;
        assert_eq!(r.code(), "invalid_credentials", "{i}");
    }
    let r = login_via(
        &app,
        "a9@example.com",
        PROXY,
        &[("x-forwarded-for", "198.51.100.1")],
    )
    .await;
    assert_eq!(r.code(), "too_many_attempts", "A is throttled");
    // Client B behind the same proxy (through a second, trusted hop) is not.
    let r = login_via(
        &app,
        "b@example.com",
        PROXY,
        &[("x-forwarded-for", "198.51.100.2, 10.0.0.9")],
    )
    .await;
    assert_eq!(r.code(), "invalid_credentials", "B is not throttled");
    let sources = login_sources(&app, &root).await;
    assert_eq!(sources[0], "198.51.100.2");
    assert!(
        sources[1..].iter().all(|s| s == "198.51.100.1"),
        "{sources:?}"
    );
    // B logs in for real: the session and the audit carry B's address.
    app.user("b2@example.com", false).await;
    let r = app
        .send_via(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"email": "b2@example.com", "password": PASSWORD}).to_string()),
            None,
            PROXY,
            false,
            &[("x-forwarded-for", "198.51.100.2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ok = app.audit(&root, "action=login&limit=1").await;
    assert_eq!(ok[0]["outcome"], "success");
    assert_eq!(ok[0]["source_ip"], "198.51.100.2");
}

async fn malformed_and_oversized_forwarded_for(db: Db) {
    let app = app_behind_proxy(db).await;
    let root = app.root().await;
    // Garbage where the proxy's entry should be: the proxy's own address counts.
    for (i, bad) in [
        "not-an-ip",
        "198.51.100.1, 300.1.1.1",
        "[::1",
        "1.2.3.4:99999",
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("m{i}@example.com");
        let r = login_via(&app, &email, PROXY, &[("x-forwarded-for", bad)]).await;
        assert_eq!(r.code(), "invalid_credentials", "{bad}: {}", r.text);
        let sources = login_sources(&app, &root).await;
        assert_eq!(sources[0], "10.0.0.2", "{bad}");
    }
    // Oversized from the trusted proxy: refused, not guessed.
    let long = "198.51.100.1, ".repeat(200);
    let r = login_via(&app, "m@example.com", PROXY, &[("x-forwarded-for", &long)]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{}",
        r.text
    );
    let many: Vec<(&str, &str)> = (0..40).map(|_| ("x-forwarded-for", "10.0.0.7")).collect();
    let r = login_via(&app, "m@example.com", PROXY, &many).await;
    assert_eq!(r.code(), "invalid_request");
    // Non-UTF-8 bytes in the header: no panic, the proxy's address.
    let mut req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header("content-type", "application/json")
        .header(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"198.51.100.1\xff").unwrap(),
        )
        .body(axum::body::Body::from(
            json!({"email": "m9@example.com", "password": "wrong password!"}).to_string(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            PROXY, 1,
        ))));
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Oversized from anyone else: never read.
    let r = login_via(
        &app,
        "m2@example.com",
        [203, 0, 113, 8],
        &[("x-forwarded-for", &long)],
    )
    .await;
    assert_eq!(r.code(), "invalid_credentials");
    assert_eq!(login_sources(&app, &root).await[0], "203.0.113.8");
}

async fn forwarded_proto_decides_whether_gateway_credentials_may_pass(db: Db) {
    let app = app_behind_proxy(db).await;
    let root = app.root().await;
    let create = |peer, tls, headers: &'static [(&'static str, &'static str)], name: &str| {
        let body = json!({ "name": name }).to_string();
        let app = &app;
        let root = root.clone();
        async move {
            app.send_via(
                Method::POST,
                "/api/v1/gateways",
                Some(body),
                Some(&root),
                peer,
                tls,
                headers,
            )
            .await
        }
    };
    let https: &[(&str, &str)] = &[("x-forwarded-proto", "https")];
    let http: &[(&str, &str)] = &[("x-forwarded-proto", "http")];
    // A trusted proxy that terminated TLS.
    let r = create(PROXY, false, https, "g1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A trusted proxy that received plain HTTP (even over TLS to us, even on loopback
    // when trusted).
    assert_eq!(
        create(PROXY, true, http, "g2").await.code(),
        "insecure_transport"
    );
    // A trusted proxy that says nothing, from a remote address: plain.
    assert_eq!(
        create(PROXY, false, &[], "g3").await.code(),
        "insecure_transport"
    );
    // An untrusted client claiming https.
    assert_eq!(
        create([203, 0, 113, 9], false, https, "g4").await.code(),
        "insecure_transport"
    );
    // The registration credential goes through a trusted TLS proxy; the gateway token
    // then works only the same way.
    let cred = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let register = |headers: &'static [(&'static str, &'static str)]| {
        let body = json!({ "registration_credential": cred }).to_string();
        let app = &app;
        async move {
            app.send_via(
                Method::POST,
                "/api/v1/gateway/register",
                Some(body),
                None,
                PROXY,
                false,
                headers,
            )
            .await
        }
    };
    assert_eq!(register(http).await.code(), "insecure_transport");
    let r = register(https).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json()["gateway_token"].as_str().unwrap().to_owned();
    let body =
        json!({"user_id": "usr_x", "session_id": "ses_x", "server_id": "srv_x", "kind": "serial"})
            .to_string();
    for (headers, expect) in [(http, "insecure_transport"), (https, "")] {
        let r = app
            .send_via(
                Method::POST,
                "/api/v1/gateway/session-authz",
                Some(body.clone()),
                Some(&token),
                PROXY,
                false,
                headers,
            )
            .await;
        if expect.is_empty() {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json()["allowed"], false);
        } else {
            assert_eq!(r.code(), expect);
        }
    }
}

async fn bmc_credentials_leave_only_over_an_encrypted_client_connection(db: Db) {
    let canary = format!("CANARY-{}-tls", outband_manager::ids::random_token(6));
    let app = app_behind_proxy(db).await;
    let root = app.root().await;
    let (g, gw) = gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let op = app.member("op@a.example", &a, "operator").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(json!({"agents": [{"agent_id": "agt_1", "pairing_code": "AAAA-AAAA"}]})),
            &gw,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/api/v1/agents/adopt",
            Some(json!({"pairing_code": "AAAA-AAAA", "agent_id": "agt_1"})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": "s", "gateway_id": g, "agent_id": "agt_1",
                "endpoints": {"power": "ipmi://10.0.0.5"},
                "credentials": {"username": "ADMIN", "password": canary}})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server = r.json()["id"].as_str().unwrap().to_owned();
    let body =
        json!({"access_token": op, "server_id": server, "kind": "power_control"}).to_string();
    let ask = |peer: [u8; 4], tls: bool, headers: &'static [(&'static str, &'static str)]| {
        let (app, body, gw) = (&app, body.clone(), gw.clone());
        async move {
            app.send_via(
                Method::POST,
                "/api/v1/gateway/session-authz",
                Some(body),
                Some(&gw),
                peer,
                tls,
                headers,
            )
            .await
        }
    };
    let remote = [198, 51, 100, 20];
    // Encrypted: over our TLS listener from anywhere, or a trusted proxy's https.
    for r in [
        ask(remote, true, &[]).await,
        ask(PROXY, false, &[("x-forwarded-proto", "https")]).await,
        ask([127, 0, 0, 1], false, &[]).await,
    ] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["allowed"], true, "{}", r.text);
        assert_eq!(
            r.json()["target"]["credentials"]["password"],
            canary.as_str()
        );
    }
    // Plain: refused before anything is looked up; the password never leaves.
    for r in [
        ask(remote, false, &[]).await,
        ask(remote, false, &[("x-forwarded-proto", "https")]).await,
        ask(PROXY, false, &[("x-forwarded-proto", "http")]).await,
        ask(PROXY, true, &[("x-forwarded-proto", "http")]).await,
    ] {
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "insecure_transport")
        );
        assert!(!r.text.contains(&canary));
    }
    let authz = app.audit(&root, "action=session_authz&limit=100").await;
    assert_eq!(authz.len(), 3, "only the encrypted requests were decided");
}
