//! Agent adoption by pairing code + agent id, rejection, tenant scoping, and join
//! tokens presented by gateways.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ctx::{Db, Resp, TestApp, both, join_all};

async fn registered_gateway(app: &TestApp, root: &str, name: &str) -> String {
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": name})),
            root,
        )
        .await;
    let cred = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        "/api/v1/gateway/register",
        json!({"registration_credential": cred}),
    )
    .await
    .json()["gateway_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn report(app: &TestApp, gw: &str, agents: Value) {
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateway/heartbeat",
            Some(json!({"agents": agents})),
            gw,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn post(app: &TestApp, path: &str, body: Value, token: &str) -> Resp {
    app.call(Method::POST, path, Some(body), token).await
}

async fn adoption_needs_code_and_id_and_stays_in_the_tenant(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let gw = registered_gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let viewer_a = app.member("viewer@a.example", &a, "viewer").await;
    let admin_b = app.member("admin@b.example", &b, "admin").await;
    report(
        &app,
        &gw,
        json!([
            {"agent_id": "agt_one", "pairing_code": "K7QX-2M9D", "endpoints": ["ipmi://10.0.0.5:623"]},
            {"agent_id": "agt_two", "pairing_code": "K7QX-2M9D"},
            {"agent_id": "agt_three", "pairing_code": "ZZZZ-ZZZZ"}
        ]),
    )
    .await;
    // Lookup shows both agents behind the (colliding) code, with what they see.
    let r = post(
        &app,
        "/api/v1/agents/lookup",
        json!({"pairing_code": "K7QX-2M9D"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let found = r.json()["agents"].as_array().unwrap().clone();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0]["id"], "agt_one");
    assert_eq!(found[0]["status"], "pending");
    assert_eq!(found[0]["endpoints"], json!(["ipmi://10.0.0.5:623"]));
    // Viewers may not.
    let r = post(
        &app,
        "/api/v1/agents/lookup",
        json!({"pairing_code": "K7QX-2M9D"}),
        &viewer_a,
    )
    .await;
    assert_eq!(r.code(), "forbidden");
    // The id must match the code.
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_three"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.code(), "not_found");
    // Into another tenant: like a missing tenant.
    let foreign = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_one", "tenant_id": b}),
        &admin_a,
    )
    .await;
    let missing = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_one", "tenant_id": "ten_missing"}),
        &admin_a,
    )
    .await;
    assert_eq!(
        (foreign.status, &foreign.text),
        (missing.status, &missing.text)
    );
    assert_eq!(foreign.code(), "not_found");
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_one"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["status"], "adopted");
    assert_eq!(r.json()["tenant_id"], a.as_str());
    // Once decided, it is no longer pending: B cannot take it, nor A adopt it twice.
    for t in [&admin_b, &admin_a] {
        let r = post(
            &app,
            "/api/v1/agents/adopt",
            json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_one"}),
            t,
        )
        .await;
        assert_eq!(r.code(), "not_found");
    }
    // A later report does not change its state.
    report(
        &app,
        &gw,
        json!([{"agent_id": "agt_one", "pairing_code": "K7QX-2M9D"}]),
    )
    .await;
    // Reject another (global admins only); global admins adopt into a named tenant.
    let r = post(
        &app,
        "/api/v1/agents/reject",
        json!({"pairing_code": "K7QX-2M9D", "agent_id": "agt_two"}),
        &root,
    )
    .await;
    assert_eq!(r.json()["status"], "rejected");
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "ZZZZ-ZZZZ", "agent_id": "agt_three"}),
        &root,
    )
    .await;
    assert_eq!(r.code(), "invalid_request", "global admins name the tenant");
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "ZZZZ-ZZZZ", "agent_id": "agt_three", "tenant_id": b}),
        &root,
    )
    .await;
    assert_eq!(r.json()["tenant_id"], b.as_str());
    // Lists: own tenant's adopted agents only; global admins all.
    let ids = |r: Resp| -> Vec<String> {
        r.json()["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(app
            .call(Method::GET, "/api/v1/agents", None, &viewer_a)
            .await),
        ["agt_one"]
    );
    assert_eq!(
        ids(app
            .call(Method::GET, "/api/v1/agents", None, &admin_b)
            .await),
        ["agt_three"]
    );
    assert_eq!(
        ids(app.call(Method::GET, "/api/v1/agents", None, &root).await).len(),
        3
    );
    let audit = app.audit(&root, "limit=1000").await;
    let count = |action: &str, outcome: &str| {
        audit
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("agent_adopt", "success"), 2);
    assert_eq!(count("agent_adopt", "failure"), 3);
    assert_eq!(count("agent_reject", "success"), 1);
    assert_eq!(count("agent_lookup", "success"), 1);
}

async fn join_tokens_are_one_time_or_short_lived(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let gw = registered_gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let op_a = app.member("op@a.example", &a, "operator").await;
    let r = post(&app, "/api/v1/join-tokens", json!({}), &admin_a).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let tok = r.json()["token"].as_str().unwrap().to_owned();
    assert!(tok.starts_with("objt_"));
    assert_eq!(r.json()["one_time"], true);
    assert_eq!(r.json()["tenant_id"], a.as_str());
    assert_eq!(
        post(&app, "/api/v1/join-tokens", json!({}), &op_a)
            .await
            .code(),
        "forbidden"
    );
    assert_eq!(
        post(
            &app,
            "/api/v1/join-tokens",
            json!({"tenant_id": b}),
            &admin_a
        )
        .await
        .code(),
        "not_found"
    );
    assert_eq!(
        post(
            &app,
            "/api/v1/join-tokens",
            json!({"ttl_secs": 0}),
            &admin_a
        )
        .await
        .code(),
        "invalid_request"
    );
    let join = |token: String, agent: &'static str| {
        let app = &app;
        let gw = gw.clone();
        async move {
            post(
                app,
                "/api/v1/gateway/join",
                json!({"join_token": token, "agent_id": agent, "pairing_code": "CODE-0001"}),
                &gw,
            )
            .await
        }
    };
    // A never-seen agent joins with it.
    let r = join(tok.clone(), "agt_new").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["tenant_id"].as_str()),
        (Some("adopted"), Some(a.as_str()))
    );
    // Used: refused, for any agent.
    assert_eq!(
        join(tok.clone(), "agt_other").await.code(),
        "invalid_credentials"
    );
    assert_eq!(
        join("objt_made_up".into(), "agt_other").await.code(),
        "invalid_credentials"
    );
    assert_eq!(
        join("nonsense".into(), "agt_other").await.code(),
        "invalid_credentials"
    );
    // A multi-use token works until it expires; an adopted agent cannot re-join (and
    // the failed attempt does not use up a one-time token).
    let multi = post(
        &app,
        "/api/v1/join-tokens",
        json!({"one_time": false, "ttl_secs": 60}),
        &admin_a,
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(join(multi.clone(), "agt_m1").await.status, StatusCode::OK);
    assert_eq!(join(multi.clone(), "agt_m2").await.status, StatusCode::OK);
    let one = post(&app, "/api/v1/join-tokens", json!({"tenant_id": b}), &root)
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(join(one.clone(), "agt_m1").await.code(), "conflict");
    assert_eq!(
        join(one.clone(), "agt_b1").await.json()["tenant_id"],
        b.as_str()
    );
    app.clock.advance(61);
    assert_eq!(join(multi, "agt_m3").await.code(), "invalid_credentials");
    // Users cannot call the gateway endpoint.
    let r = post(
        &app,
        "/api/v1/gateway/join",
        json!({"join_token": tok, "agent_id": "x", "pairing_code": "C"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let root = app.tokens("root@example.com").await.0;
    let joins = app.audit(&root, "action=agent_join").await;
    let outcomes: Vec<&str> = joins
        .iter()
        .rev()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "success", "failure", "failure", "failure", "success", "success", "failure", "success",
            "failure"
        ]
    );
    assert!(
        !app.get("/api/v1/audit?limit=1000", Some(&root))
            .await
            .text
            .contains("objt_")
    );
}

async fn pairing_code_lookups_that_miss_are_throttled(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let gw = registered_gateway(&app, &root, "g").await;
    report(
        &app,
        &gw,
        json!([{"agent_id": "agt_x", "pairing_code": "REAL-CODE"}]),
    )
    .await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let other = app.member("other@a.example", &a, "admin").await;
    for i in 0..20 {
        let r = post(
            &app,
            "/api/v1/agents/lookup",
            json!({"pairing_code": format!("GUES-{i:04}")}),
            &admin,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{i}");
    }
    // Locked now, even for a code that exists; other users are not.
    let r = post(
        &app,
        "/api/v1/agents/lookup",
        json!({"pairing_code": "REAL-CODE"}),
        &admin,
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    assert!(r.headers.get("retry-after").is_some());
    let r = post(
        &app,
        "/api/v1/agents/lookup",
        json!({"pairing_code": "REAL-CODE"}),
        &other,
    )
    .await;
    assert_eq!(r.json()["agents"].as_array().unwrap().len(), 1);
    // Hits do not count.
    for _ in 0..25 {
        let r = post(
            &app,
            "/api/v1/agents/lookup",
            json!({"pairing_code": "REAL-CODE"}),
            &other,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    app.clock.advance(15 * 60 + 1);
    let admin = app.tokens("admin@a.example").await.0;
    let r = post(
        &app,
        "/api/v1/agents/lookup",
        json!({"pairing_code": "REAL-CODE"}),
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn concurrent_uses_of_one_time_secrets_let_exactly_one_win(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    // One registration credential, 8 gateways racing.
    let r = app
        .call(
            Method::POST,
            "/api/v1/gateways",
            Some(json!({"name": "g"})),
            &root,
        )
        .await;
    let cred = r.json()["registration_credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let tries = (0..8).map(|_| {
        app.post(
            "/api/v1/gateway/register",
            json!({"registration_credential": cred}),
        )
    });
    let results = join_all(tries).await;
    let won: Vec<&Resp> = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let gw = won[0].json()["gateway_token"].as_str().unwrap().to_owned();
    // One one-time join token, 8 agents racing.
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let tok = post(&app, "/api/v1/join-tokens", json!({}), &admin)
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let tries = (0..8).map(|i| {
        post(
            &app,
            "/api/v1/gateway/join",
            json!({"join_token": tok, "agent_id": format!("agt_{i}"), "pairing_code": "C"}),
            &gw,
        )
    });
    let results = join_all(tries).await;
    let ok = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{results:?}");
    let adopted = app
        .call(Method::GET, "/api/v1/agents", None, &admin)
        .await
        .json();
    assert_eq!(adopted["agents"].as_array().unwrap().len(), 1);
}

async fn only_global_admins_reject_pending_agents(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let gw = registered_gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let admin_b = app.member("admin@b.example", &b, "admin").await;
    report(
        &app,
        &gw,
        json!([{"agent_id": "agt_for_a", "pairing_code": "AAAA-BBBB"}]),
    )
    .await;
    // B learnt A's code and id: B cannot take the agent away from A by rejecting it.
    let body = json!({"pairing_code": "AAAA-BBBB", "agent_id": "agt_for_a"});
    let r = post(&app, "/api/v1/agents/reject", body.clone(), &admin_b).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "forbidden");
    let denied = app.denials(&root).await;
    assert!(
        denied.contains(&(
            "reject_agents".into(),
            "reject_agents global_admin_only".into()
        )),
        "{denied:?}"
    );
    // Still pending: A adopts it.
    let r = post(&app, "/api/v1/agents/adopt", body.clone(), &admin_a).await;
    assert_eq!(r.json()["status"], "adopted", "{}", r.text);
    // A global admin may reject a pending agent; tenant_id or site are adopt-only.
    report(
        &app,
        &gw,
        json!([{"agent_id": "agt_stray", "pairing_code": "CCCC-DDDD"}]),
    )
    .await;
    let stray = json!({"pairing_code": "CCCC-DDDD", "agent_id": "agt_stray"});
    let mut with_site = stray.clone();
    with_site["site"] = json!("rack 1");
    let r = post(&app, "/api/v1/agents/reject", with_site, &root).await;
    assert_eq!(r.code(), "invalid_request");
    let r = post(&app, "/api/v1/agents/reject", stray, &root).await;
    assert_eq!(r.json()["status"], "rejected", "{}", r.text);
}

async fn agents_are_adopted_into_a_site(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let gw = registered_gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    report(
        &app,
        &gw,
        json!([
            {"agent_id": "agt_r1", "pairing_code": "SITE-0001"},
            {"agent_id": "agt_r2", "pairing_code": "SITE-0002"},
        ]),
    )
    .await;
    // Bad labels: 400 invalid_site as JSON, nothing adopted.
    let long = "x".repeat(65);
    for bad in [
        "",
        " rack",
        "rack ",
        long.as_str(),
        "a\u{7}b",
        "a\nb",
        "a\u{85}b",
    ] {
        let r = post(
            &app,
            "/api/v1/agents/adopt",
            json!({"pairing_code": "SITE-0001", "agent_id": "agt_r1", "site": bad}),
            &admin_a,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text);
        assert_eq!(r.code(), "invalid_site", "{bad:?}");
        let r = post(&app, "/api/v1/join-tokens", json!({"site": bad}), &admin_a).await;
        assert_eq!(r.code(), "invalid_site", "{bad:?}");
    }
    // 64 characters (not bytes) fit.
    let room = "Zürich room 3 · rack 12".to_owned() + &"é".repeat(41);
    assert_eq!(room.chars().count(), 64);
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "SITE-0001", "agent_id": "agt_r1", "site": room}),
        &admin_a,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["site"], room.as_str());
    assert_eq!(r.json()["tenant_id"], a.as_str());
    // Without a site.
    let r = post(
        &app,
        "/api/v1/agents/adopt",
        json!({"pairing_code": "SITE-0002", "agent_id": "agt_r2"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.json()["site"], Value::Null);
    // A join token carries its site to the agents it adopts.
    let r = post(
        &app,
        "/api/v1/join-tokens",
        json!({"site": "lab"}),
        &admin_a,
    )
    .await;
    assert_eq!(r.json()["site"], "lab");
    let tok = r.json()["token"].as_str().unwrap().to_owned();
    let r = post(
        &app,
        "/api/v1/gateway/join",
        json!({"join_token": tok, "agent_id": "agt_j1", "pairing_code": "JOIN-0001"}),
        &gw,
    )
    .await;
    assert_eq!(r.json()["site"], "lab", "{}", r.text);
    // Listed with the site, and filtered by it.
    let list = |q: String| {
        let app = &app;
        let admin_a = &admin_a;
        async move {
            app.call(Method::GET, &format!("/api/v1/agents{q}"), None, admin_a)
                .await
        }
    };
    let all = list(String::new()).await.json();
    let sites: Vec<(String, Value)> = all["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_owned(), a["site"].clone()))
        .collect();
    assert_eq!(
        sites,
        [
            ("agt_j1".to_owned(), json!("lab")),
            ("agt_r1".to_owned(), json!(room)),
            ("agt_r2".to_owned(), Value::Null),
        ]
    );
    let lab = list("?site=lab".into()).await.json();
    assert_eq!(lab["agents"].as_array().unwrap().len(), 1);
    assert_eq!(lab["agents"][0]["id"], "agt_j1");
    let none = list("?site=nowhere".into()).await.json();
    assert!(none["agents"].as_array().unwrap().is_empty());
    assert_eq!(list("?site=%20x".into()).await.code(), "invalid_site");
    // Audited with the site.
    let audit = app.audit(&root, "limit=1000").await;
    let detail = |action: &str, target: &str| {
        audit
            .iter()
            .find(|e| e["action"] == action && e["target"] == target && e["outcome"] == "success")
            .map(|e| e["detail"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(detail("agent_adopt", "agt_r1"), format!("{a} site={room}"));
    assert_eq!(detail("agent_adopt", "agt_r2"), a);
    let join = detail("agent_join", "agt_j1");
    assert!(join.contains(" site=lab via "), "{join}");
}

both!(
    concurrent_uses_of_one_time_secrets_let_exactly_one_win,
    adoption_needs_code_and_id_and_stays_in_the_tenant,
    join_tokens_are_one_time_or_short_lived,
    pairing_code_lookups_that_miss_are_throttled,
    only_global_admins_reject_pending_agents,
    agents_are_adopted_into_a_site,
);
