//! `POST /api/v1/gateway/events`: gateway-reported actions in the audit log, the
//! server-binding rule, unknown users, field checks and the batch bound.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ctx::{Db, TestApp, both};
use crate::gateways::gateway;

both!(
    events_are_audited_and_queryable_by_user_and_server,
    events_about_other_gateways_servers_or_with_bad_fields_are_denied,
    batches_are_bounded_and_need_a_gateway_over_tls,
);

fn event(action: &str, outcome: &str, user: &str, server: &str) -> Value {
    json!({"action": action, "outcome": outcome, "user_id": user, "server_id": server,
           "at": 1_700_000_000})
}

async fn post_events(app: &TestApp, gw: &str, events: Vec<Value>) -> crate::ctx::Resp {
    app.call(
        Method::POST,
        "/api/v1/gateway/events",
        Some(json!({ "events": events })),
        gw,
    )
    .await
}

/// A tenant with an admin and a server bound to `gateway_id`; returns the server id.
async fn server(app: &TestApp, admin: &str, name: &str, gateway_id: &str) -> String {
    let r = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": name, "gateway_id": gateway_id})),
            admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn events_are_audited_and_queryable_by_user_and_server(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (g1, gw1) = gateway(&app, &root, "g1").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let s1 = server(&app, &admin, "s1", &g1).await;
    let s2 = server(&app, &admin, "s2", &g1).await;
    let alice = app.user("alice@a.example", false).await.id;
    let bob = app.user("bob@a.example", false).await.id;
    let mut on = event("power_on", "success", &alice, &s1);
    on["session_id"] = json!("ses_1");
    let mut serial = event("serial_open", "failure", &bob, &s2);
    serial["detail"] = json!("bmc_unreachable");
    let r = post_events(
        &app,
        &gw1,
        vec![on, serial, event("graphical_close", "success", &alice, &s2)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["accepted"], 3);
    // By server.
    let rows = app.audit(&root, &format!("target={s1}")).await;
    let gw_rows: Vec<&Value> = rows
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("gateway_"))
        .collect();
    assert_eq!(gw_rows.len(), 1, "{rows:?}");
    let e = gw_rows[0];
    assert_eq!(e["action"], "gateway_power_on");
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["actor_id"], alice.as_str());
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert_eq!(
        e["detail"],
        format!("via {g1} at=1700000000 session=ses_1").as_str()
    );
    // By user, and by action.
    let bob: Vec<Value> = app
        .audit(&root, &format!("actor_id={bob}"))
        .await
        .into_iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("gateway_"))
        .collect();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["action"], "gateway_serial_open");
    assert_eq!(bob[0]["outcome"], "failure");
    assert_eq!(bob[0]["target"], s2.as_str());
    assert_eq!(
        bob[0]["detail"],
        format!("via {g1} at=1700000000 detail=bmc_unreachable").as_str()
    );
    let alice_s2 = app
        .audit(
            &root,
            &format!("actor_id={alice}&target={s2}&action=gateway_graphical_close"),
        )
        .await;
    assert_eq!(alice_s2.len(), 1);
    // An empty batch is fine.
    let r = post_events(&app, &gw1, vec![]).await;
    assert_eq!(r.json()["accepted"], 0);
}

async fn events_about_other_gateways_servers_or_with_bad_fields_are_denied(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (g1, gw1) = gateway(&app, &root, "g1").await;
    let (g2, _gw2) = gateway(&app, &root, "g2").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let mine = server(&app, &admin, "mine", &g1).await;
    let theirs = server(&app, &admin, "theirs", &g2).await;
    let user = app.user("u@a.example", false).await.id;
    let u = user.as_str();
    let long = "x".repeat(65);
    let mut bad_detail = event("power_off", "success", u, &mine);
    bad_detail["detail"] = json!("d".repeat(257));
    let mut ctl_detail = event("power_off", "success", u, &mine);
    ctl_detail["detail"] = json!("line\nbreak");
    let mut bad_session = event("power_off", "success", u, &mine);
    bad_session["session_id"] = json!(long);
    let mut bad_at = event("power_off", "success", u, &mine);
    bad_at["at"] = json!(-1);
    let cases = vec![
        (
            event("power_off", "success", u, &theirs),
            "server_not_bound",
        ),
        (
            event("power_off", "success", u, "srv_missing"),
            "server_not_bound",
        ),
        (event("format_disk", "success", u, &mine), "bad_action"),
        (event("power_off", "maybe", u, &mine), "bad_outcome"),
        (event("power_off", "success", &long, &mine), "bad_user_id"),
        (event("power_off", "success", "u v", &mine), "bad_user_id"),
        (event("power_off", "success", u, ""), "bad_server_id"),
        (
            event("power_off", "success", "usr_nobody", &mine),
            "unknown_user",
        ),
        (bad_session, "bad_session_id"),
        (bad_at, "bad_at"),
        (bad_detail, "bad_detail"),
        (ctl_detail, "bad_detail"),
    ];
    let good = event("power_cycle", "success", u, &mine);
    let mut batch: Vec<Value> = cases.iter().map(|(e, _)| e.clone()).collect();
    batch.push(good);
    let r = post_events(&app, &gw1, batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["accepted"], 1, "only the good event");
    let denied: Vec<Value> = app
        .audit(&root, "limit=1000")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied" && e["detail"].as_str().unwrap().contains(&g1))
        .rev()
        .collect();
    let reasons: Vec<String> = denied
        .iter()
        .map(|e| {
            e["detail"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons, expected);
    // The denial of the other gateway's server names it, under the real action.
    assert_eq!(denied[0]["action"], "gateway_power_off");
    assert_eq!(denied[0]["target"], theirs.as_str());
    assert_eq!(denied[2]["action"], "gateway_event");
    // Refused values are not copied into the audit log, nor unknown users as actors.
    assert!(denied[4]["actor_id"].is_null());
    assert!(denied[7]["actor_id"].is_null());
    assert_eq!(denied[7]["target"], mine.as_str());
    assert_eq!(denied[0]["actor_id"], u);
    // The other gateway's server has no accepted gateway action.
    let rows = app.audit(&root, &format!("target={theirs}")).await;
    assert!(rows.iter().all(
        |e| e["outcome"] != "success" || !e["action"].as_str().unwrap().starts_with("gateway_")
    ));
    let ok = app.audit(&root, "action=gateway_power_cycle").await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["target"], mine.as_str());
}

async fn batches_are_bounded_and_need_a_gateway_over_tls(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (g1, gw1) = gateway(&app, &root, "g1").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let s = server(&app, &admin, "s", &g1).await;
    let u = app.user("u@a.example", false).await.id;
    let batch = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| event("power_status", "success", &u, &s))
            .collect()
    };
    let r = post_events(&app, &gw1, batch(101)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert!(
        app.audit(&root, "action=gateway_power_status")
            .await
            .is_empty(),
        "nothing of a refused batch is written"
    );
    let r = post_events(&app, &gw1, batch(100)).await;
    assert_eq!(r.json()["accepted"], 100);
    assert_eq!(
        app.audit(&root, "action=gateway_power_status&limit=1000")
            .await
            .len(),
        100
    );
    // A user token or no token is not a gateway token.
    let r = post_events(&app, &admin, batch(1)).await;
    assert_eq!(r.code(), "invalid_token");
    // Unknown fields are refused.
    let mut odd = event("power_on", "success", &u, &s);
    odd["extra"] = json!(1);
    assert_eq!(
        post_events(&app, &gw1, vec![odd]).await.code(),
        "invalid_request"
    );
    // Plain HTTP from a remote address.
    let r = app
        .send(
            Method::POST,
            "/api/v1/gateway/events",
            Some(json!({"events": batch(1)}).to_string()),
            Some(&gw1),
            [192, 0, 2, 1],
        )
        .await;
    assert_eq!(r.code(), "insecure_transport");
}
