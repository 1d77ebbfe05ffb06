//! Gateways: creation, one-time registration, heartbeats with agent reports, session
//! authorization (roles, tenants, gateway binding, live sessions), revocation feed,
//! and the plain-HTTP rule.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ctx::{Db, PASSWORD, Resp, TestApp, all_logs, both};

/// Creates and registers a gateway; returns `(id, gateway token)`.
pub(crate) async fn gateway(app: &TestApp, root: &str, name: &str) -> (String, String) {
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": name})),
            root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cred = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            "/api/v1/gateway/register",
            json!({"registration_credential": cred, "version": "1.0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    (
        v["gateway_id"].as_str().unwrap().to_owned(),
        v["gateway_token"].as_str().unwrap().to_owned(),
    )
}

async fn authz(app: &TestApp, gw_token: &str, body: Value) -> Resp {
    app.call(
        Method::POST,
        "/api/v1/gateway/session-authz",
        Some(body),
        gw_token,
    )
    .await
}

async fn registration_is_one_time_and_tokens_rotate(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "edge-1", "url": "https://gw.example:8443"})),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let id = v["gateway"]["id"].as_str().unwrap().to_owned();
    let cred = v["registration_credential"].as_str().unwrap().to_owned();
    assert!(cred.starts_with("obgr_"));
    let dup = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "edge-1"})),
            &root,
        )
        .await;
    assert_eq!(dup.code(), "conflict");
    let bad = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "x", "url": "ftp://h"})),
            &root,
        )
        .await;
    assert_eq!(bad.code(), "invalid_request");
    // Tenant admins may not.
    let a = app.tenant("A").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    for (method, path) in [
        (Method::POST, "/api/v1/gateways"),
        (Method::GET, "/api/v1/gateways"),
    ] {
        let r = app
            .call(method, path, Some(json!({"name": "mine"})), &admin_a)
            .await;
        assert_eq!(r.code(), "forbidden", "{path}");
    }

    // Login answers list the gateways serving the user's tenant (with a URL).
    let r = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": "s", "gateway_id": id})),
            &admin_a,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let b = app.tenant("B").await;
    app.member("user@b.example", &b, "viewer").await;
    for (email, expect) in [
        (
            "admin@a.example",
            json!([{"id": id, "name": "edge-1", "url": "https://gw.example:8443"}]),
        ),
        ("user@b.example", json!([])),
        (
            "root@example.com",
            json!([{"id": id, "name": "edge-1", "url": "https://gw.example:8443"}]),
        ),
    ] {
        let v = app.login(email, PASSWORD).await.json();
        assert_eq!(v["gateways"], expect, "{email}");
    }

    let register = |c: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/gateway/register",
                json!({"registration_credential": c}),
            )
            .await
        }
    };
    let r = register(cred.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["gateway_id"], id.as_str());
    let token1 = r.json()["gateway_token"].as_str().unwrap().to_owned();
    assert!(token1.starts_with("obg_"));
    // Used, unknown, malformed: refused.
    for c in [cred.clone(), "obgr_unknown".into(), "x".repeat(200)] {
        assert_eq!(register(c).await.code(), "invalid_credentials");
    }
    // Heartbeat with agents.
    let hb = app
        .call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(
                json!({"agents": [{"agent_id": "agt_1", "pairing_code": "ABCD-EFGH",
                "endpoints": ["ipmi://10.0.0.5:623"]}]}),
            ),
            &token1,
        )
        .await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.text);
    let reports = app
        .m
        .store
        .agent_reports(Some("ABCD-EFGH"), None)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].gateway_id, id);
    assert_eq!(reports[0].endpoints, ["ipmi://10.0.0.5:623"]);
    let too_many: Vec<Value> = (0..1025)
        .map(|i| json!({"agent_id": format!("a{i}"), "pairing_code": "C"}))
        .collect();
    let body = json!({ "agents": too_many }).to_string();
    assert!(body.len() > 16 * 1024, "the body limit refuses it first");
    for agents in [
        json!([{"agent_id": "bad id", "pairing_code": "C"}]),
        json!([{"agent_id": "a", "pairing_code": ""}]),
        json!([{"agent_id": "a", "pairing_code": "C", "endpoints": ["a b"]}]),
    ] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/gateway/heartbeat",
                Some(json!({"agents": agents})),
                &token1,
            )
            .await;
        assert_eq!(r.code(), "invalid_request", "{agents}");
    }
    // Gateway endpoints refuse user tokens and bad gateway tokens.
    let user_token = app.tokens("root@example.com").await.0;
    for t in [user_token.as_str(), "obg_nope", "obg_"] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/gateway/heartbeat",
                Some(json!({})),
                t,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{t}");
    }
    let list = app.call(Method::GET, "/api/v1/gateways", None, &root).await;
    let g = &list.json()["gateways"][0];
    assert_eq!(g["id"], id.as_str());
    assert!(g["registered_at"].as_i64().is_some() && g["last_seen_at"].as_i64().is_some());
    assert!(!list.text.contains("obg"), "no secrets in the list");

    // A new credential; registering with it replaces the token.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/gateways/{id}/credential"),
            None,
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cred2 = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let token2 = register(cred2).await.json()["gateway_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = app
        .call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(json!({})),
            &token1,
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = app
        .call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(json!({})),
            &token2,
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateways/gw_missing/credential",
            None,
            &root,
        )
        .await;
    assert_eq!(r.code(), "not_found");
    // Expired credentials are refused.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/gateways/{id}/credential"),
            None,
            &root,
        )
        .await;
    let cred3 = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(8 * 24 * 3600);
    assert_eq!(register(cred3).await.code(), "invalid_credentials");
    let root = app.tokens("root@example.com").await.0;
    let regs = app.audit(&root, "action=gateway_register").await;
    let outcomes: Vec<&str> = regs
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "failure", "success", "failure", "failure", "failure", "success"
        ]
    );
}

async fn plain_http_from_a_remote_client_refuses_gateway_credentials(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let remote = [192, 0, 2, 10];
    let r = app
        .send(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "g"}).to_string()),
            Some(&root),
            remote,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "insecure_transport")
    );
    let r = app
        .send(
            Method::POST,
            "/api/v1/gateway/register",
            Some(json!({"registration_credential": "obgr_x"}).to_string()),
            None,
            remote,
        )
        .await;
    assert_eq!(r.code(), "insecure_transport");
    for path in ["/api/v1/gateway/heartbeat", "/api/v1/gateway/session-authz"] {
        let r = app
            .send(Method::POST, path, Some("{}".into()), Some("obg_x"), remote)
            .await;
        assert_eq!(r.code(), "insecure_transport", "{path}");
    }
    // The user API is unaffected.
    let r = app
        .send(Method::GET, "/api/v1/me", None, Some(&root), remote)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The same remote client over TLS may.
    let r = app
        .send_via(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "g"}).to_string()),
            Some(&root),
            remote,
            true,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

async fn session_authz_follows_roles_tenants_gateways_and_sessions(db: Db) {
    let canary = format!("CANARY-{}-authz", outband_manager::ids::random_token(6));
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (g1, gw1) = gateway(&app, &root, "g1").await;
    let (_g2, gw2) = gateway(&app, &root, "g2").await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    app.member("op@a.example", &a, "operator").await;
    app.member("viewer@a.example", &a, "viewer").await;
    app.member("eve@b.example", &b, "admin").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({
                "name": "s1", "gateway_id": g1, "agent_id": "agt_1",
                "endpoints": {"power": "ipmi://10.0.0.5", "serial": "wss://c.example/ws",
                    "graphical": "vnc://10.0.0.5:5901"},
                "cert_sha256": "cd".repeat(32),
                "credentials": {"username": "ADMIN", "password": canary}
            })),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server = r.json()["id"].as_str().unwrap().to_owned();
    // A server of A without agent, and one without a serial endpoint.
    let bare = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": "bare", "gateway_id": g1, "endpoints": {"power": "ipmi://h"}})),
            &admin,
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Before adoption, the agent may not serve anyone.
    let (access, _) = app.tokens("op@a.example").await;
    let v = authz(
        &app,
        &gw1,
        json!({"access_token": access, "server_id": server, "kind": "serial"}),
    )
    .await;
    assert_eq!(v.json()["reason"], "agent_not_adopted");
    // agt_1 reported by g1 and adopted into A; agt_b adopted into B.
    let hb = json!({"agents": [{"agent_id": "agt_1", "pairing_code": "AAAA-AAAA"},
        {"agent_id": "agt_b", "pairing_code": "BBBB-BBBB"}]});
    let r = app
        .call(Method::POST, "/api/v1/gateway/heartbeat", Some(hb), &gw1)
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
    let eve = app.tokens("eve@b.example").await.0;
    let r = app
        .call(
            Method::POST,
            "/api/v1/agents/adopt",
            Some(json!({"pairing_code": "BBBB-BBBB", "agent_id": "agt_b"})),
            &eve,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A server of A pointed at B's agent cannot reach through it.
    let hijack = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(
                json!({"name": "hijack", "gateway_id": g1, "agent_id": "agt_b",
                "endpoints": {"power": "ipmi://10.9.9.9"}}),
            ),
            &admin,
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = authz(
        &app,
        &gw1,
        json!({"access_token": access, "server_id": hijack, "kind": "power_status"}),
    )
    .await;
    assert_eq!(v.json()["reason"], "agent_not_adopted");

    let ask = |email: &'static str, server: String, kind: &'static str, gw: String| {
        let app = &app;
        async move {
            let (access, _) = app.tokens(email).await;
            let r = authz(
                app,
                &gw,
                json!({"access_token": access, "server_id": server, "kind": kind}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.json()
        }
    };
    let reason = |v: &Value| {
        if v["allowed"] == true {
            "allowed".to_owned()
        } else {
            v["reason"].as_str().unwrap().to_owned()
        }
    };
    let kinds = ["power_status", "power_control", "serial", "graphical"];
    for (email, expect) in [
        (
            "viewer@a.example",
            ["allowed", "forbidden", "forbidden", "allowed"],
        ),
        ("op@a.example", ["allowed", "allowed", "allowed", "allowed"]),
        (
            "admin@a.example",
            ["allowed", "allowed", "allowed", "allowed"],
        ),
        (
            "eve@b.example",
            ["not_found", "not_found", "not_found", "not_found"],
        ),
        (
            "root@example.com",
            ["allowed", "allowed", "allowed", "allowed"],
        ),
    ] {
        for (kind, want) in kinds.iter().zip(expect) {
            let v = ask(email, server.clone(), kind, gw1.clone()).await;
            assert_eq!(reason(&v), want, "{email} {kind}: {v}");
            if want == "allowed" {
                let t = &v["target"];
                assert_eq!(t["agent_id"], "agt_1");
                assert_eq!(t["credentials"]["password"], canary.as_str());
                assert_eq!(t["cert_sha256"], "cd".repeat(32));
                let url = t["endpoint_url"].as_str().unwrap();
                let expect_url = match *kind {
                    "serial" => "wss://c.example:443/ws",
                    "graphical" => "vnc://10.0.0.5:5901",
                    _ => "ipmi://10.0.0.5:623",
                };
                assert_eq!(url, expect_url);
                assert_eq!(
                    t["view_only"],
                    (email == "viewer@a.example" && *kind == "graphical")
                );
            } else {
                assert!(v["target"].is_null());
            }
        }
    }
    // Another tenant's server answers like a missing one.
    let foreign = ask("eve@b.example", server.clone(), "power_status", gw1.clone()).await;
    let missing = ask(
        "eve@b.example",
        "srv_missing".into(),
        "power_status",
        gw1.clone(),
    )
    .await;
    assert_eq!(reason(&foreign), reason(&missing));
    // Bound to its gateway; needs an agent and an endpoint.
    let v = ask("op@a.example", server.clone(), "power_status", gw2.clone()).await;
    assert_eq!(reason(&v), "wrong_gateway");
    assert_eq!(
        reason(&ask("op@a.example", bare.clone(), "power_status", gw1.clone()).await),
        "no_agent"
    );

    // By user id + session id.
    let login = app.login("op@a.example", PASSWORD).await.json();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let me = app
        .call(Method::GET, "/api/v1/me", None, &access)
        .await
        .json();
    let user_id = me["id"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(access.split('.').nth(1).unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    let sid = claims["sid"].as_str().unwrap().to_owned();
    let by_sid = |sid: String| json!({"user_id": user_id, "session_id": sid, "server_id": server, "kind": "serial"});
    assert_eq!(
        authz(&app, &gw1, by_sid(sid.clone())).await.json()["allowed"],
        true
    );
    assert_eq!(
        reason(&authz(&app, &gw1, by_sid("ses_other".into())).await.json()),
        "session_ended"
    );
    let v = authz(
        &app,
        &gw1,
        json!({"access_token": "x.y.z", "server_id": server, "kind": "serial"}),
    )
    .await;
    assert_eq!(reason(&v.json()), "invalid_token");
    let v = authz(&app, &gw1, json!({"server_id": server, "kind": "serial"})).await;
    assert_eq!(v.code(), "invalid_request");
    let v = authz(
        &app,
        &gw1,
        json!({"access_token": access, "server_id": server, "kind": "reboot"}),
    )
    .await;
    assert_eq!(v.code(), "invalid_request");

    // Logout ends it, and the revocation feed says so.
    let before = app.clock.now();
    let r = app
        .post("/api/v1/auth/logout", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let v = authz(
        &app,
        &gw1,
        json!({"access_token": access, "server_id": server, "kind": "serial"}),
    )
    .await;
    assert_eq!(reason(&v.json()), "session_ended");
    assert_eq!(
        reason(&authz(&app, &gw1, by_sid(sid.clone())).await.json()),
        "session_ended"
    );
    let feed = app
        .call(
            Method::GET,
            &format!("/api/v1/gateway/revocations?since={before}"),
            None,
            &gw2,
        )
        .await;
    assert_eq!(feed.status, StatusCode::OK, "{}", feed.text);
    let feed = feed.json();
    let ended: Vec<&str> = feed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ended, [sid.as_str()]);
    assert!(feed["next_since"].as_i64().unwrap() >= before);
    let later = feed["next_since"].as_i64().unwrap() + 1;
    let empty = app
        .call(
            Method::GET,
            &format!("/api/v1/gateway/revocations?since={later}"),
            None,
            &gw1,
        )
        .await
        .json();
    assert!(empty["sessions"].as_array().unwrap().is_empty());
    assert_eq!(
        app.call(Method::GET, "/api/v1/gateway/revocations", None, &gw1)
            .await
            .code(),
        "invalid_request"
    );

    // Audited, both ways; the canary is in no log line and no audit entry.
    let entries = app.audit(&root, "action=session_authz&limit=1000").await;
    assert!(entries.iter().any(
        |e| e["outcome"] == "success" && e["detail"] == format!("graphical view_only via {g1}")
    ));
    assert!(entries.iter().any(|e| {
        e["outcome"] == "denied"
            && e["detail"]
                .as_str()
                .unwrap()
                .starts_with("power_status wrong_gateway")
    }));
    let denials = app.denials(&root).await;
    assert!(
        denials
            .iter()
            .any(|(t, d)| *t == server && *d == format!("power_control role via {g1}"))
    );
    assert!(
        denials
            .iter()
            .any(|(t, d)| *t == server && *d == format!("serial_console other_tenant via {g1}"))
    );
    let audit_text = app.get("/api/v1/audit?limit=1000", Some(&root)).await.text;
    assert!(!audit_text.contains(&canary));
    for line in all_logs().lines() {
        assert!(!line.contains(&canary), "canary in a log line: {line}");
    }
}

both!(
    registration_is_one_time_and_tokens_rotate,
    plain_http_from_a_remote_client_refuses_gateway_credentials,
    session_authz_follows_roles_tenants_gateways_and_sessions,
);
