//! Inventory: CRUD, validation, tenant isolation on every endpoint, the role matrix,
//! and the canary BMC password found nowhere in plain text.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ctx::{Db, Resp, TestApp, all_logs, both};

fn server_body(name: &str) -> Value {
    json!({
        "name": name,
        "gateway_id": "gw_1",
        "agent_id": "agt_1",
        "endpoints": {
            "power": "ipmi://10.0.0.5",
            "serial": "ipmi://10.0.0.5:623",
            "graphical": "vnc://BMC.example:5901"
        },
        "cert_sha256": "AB".repeat(32),
        "credentials": {"username": "root", "password": "calvin-0123456"}
    })
}

async fn create(app: &TestApp, token: &str, body: Value) -> Resp {
    app.call(Method::POST, "/api/v1/servers", Some(body), token)
        .await
}

async fn crud_and_validation(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;

    let r = create(&app, &admin, server_body("web-1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("srv_"));
    assert_eq!(v["tenant_id"], a.as_str());
    assert_eq!(v["has_credentials"], true);
    assert!(v.get("credentials").is_none());
    assert!(!r.text.contains("calvin"));
    assert_eq!(v["endpoints"]["power"], "ipmi://10.0.0.5:623");
    assert_eq!(v["endpoints"]["graphical"], "vnc://bmc.example:5901");
    assert_eq!(v["cert_sha256"], "ab".repeat(32));
    // Stored sealed, and it opens to what was sent.
    let row = app.m.store.server_by_id(&id).await.unwrap().unwrap();
    let (kid, sealed) = row.credentials.clone().unwrap();
    let plain = app.m.credential_keys.open(&id, &kid, &sealed).unwrap();
    assert_eq!(plain.password.as_str(), "calvin-0123456");

    // Duplicate name in the tenant, bad input.
    assert_eq!(
        create(&app, &admin, server_body("web-1")).await.code(),
        "conflict"
    );
    for (field, value) in [
        ("name", json!("")),
        ("gateway_id", json!("bad id")),
        ("cert_sha256", json!("abc")),
        ("endpoints", json!({"power": "vnc://h"})),
        ("endpoints", json!({"power": "ipmi://root:calvin@h"})),
        ("endpoints", json!({"graphical": "vnc://h:0"})),
        ("endpoints", json!({"serial": "wss://h", "x": 1})),
        (
            "credentials",
            json!({"username": "u", "password": "p".repeat(257)}),
        ),
        ("bogus", json!(1)),
    ] {
        let mut body = server_body("web-2");
        body[field] = value.clone();
        let r = create(&app, &admin, body).await;
        assert_eq!(r.code(), "invalid_request", "{field}={value}: {}", r.text);
        assert!(!r.text.contains("calvin"), "{}", r.text);
    }
    // Global admins must name the tenant.
    let r = create(&app, &root, server_body("web-3")).await;
    assert_eq!(r.code(), "invalid_request");
    let mut body = server_body("web-3");
    body["tenant_id"] = json!(a);
    assert_eq!(create(&app, &root, body).await.status, StatusCode::CREATED);

    // Update: keep, replace, clear credentials.
    let path = format!("/api/v1/servers/{id}");
    let mut upd = server_body("web-1b");
    upd.as_object_mut().unwrap().remove("credentials");
    upd["endpoints"] = json!({"power": "https://10.0.0.6/redfish/v1"});
    let r = app
        .call(Method::PUT, &path, Some(upd.clone()), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["name"], "web-1b");
    assert_eq!(r.json()["has_credentials"], true);
    assert_eq!(r.json()["endpoints"]["serial"], Value::Null);
    assert_eq!(
        r.json()["endpoints"]["power"],
        "https://10.0.0.6:443/redfish/v1"
    );
    upd["clear_credentials"] = json!(true);
    let r = app
        .call(Method::PUT, &path, Some(upd.clone()), &admin)
        .await;
    assert_eq!(r.json()["has_credentials"], false);
    upd["credentials"] = json!({"username": "u", "password": "p"});
    let r = app
        .call(Method::PUT, &path, Some(upd.clone()), &admin)
        .await;
    assert_eq!(r.code(), "invalid_request", "both");
    upd["clear_credentials"] = json!(false);
    let r = app.call(Method::PUT, &path, Some(upd), &admin).await;
    assert_eq!(r.json()["has_credentials"], true);

    // List with paging.
    let list = app
        .call(Method::GET, "/api/v1/servers", None, &admin)
        .await
        .json();
    let ids: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let page = app
        .call(
            Method::GET,
            &format!("/api/v1/servers?limit=1&after={}", ids[0]),
            None,
            &admin,
        )
        .await
        .json();
    assert_eq!(page["servers"][0]["id"], ids[1]);
    assert_eq!(page["servers"].as_array().unwrap().len(), 1);

    // Delete.
    let r = app.call(Method::DELETE, &path, None, &admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::GET, &path, None, &admin).await.code(),
        "not_found"
    );
    let actions: Vec<String> = app
        .audit(&root, "limit=1000")
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("server_"))
        .collect();
    assert_eq!(
        actions,
        [
            "server_delete",
            "server_update",
            "server_update",
            "server_update",
            "server_create",
            "server_create"
        ]
    );
}

async fn tenants_cannot_see_each_others_servers(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let admin_b = app.member("admin@b.example", &b, "admin").await;
    let r = create(&app, &admin_b, server_body("secret-b")).await;
    let b_server = r.json()["id"].as_str().unwrap().to_owned();
    create(&app, &admin_a, server_body("mine-a")).await;
    let missing = "srv_doesnotexist";
    let mut upd = server_body("x");
    upd.as_object_mut().unwrap().remove("credentials");
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(upd.clone())),
        (Method::DELETE, None),
    ] {
        let foreign = app
            .call(
                method.clone(),
                &format!("/api/v1/servers/{b_server}"),
                body.clone(),
                &admin_a,
            )
            .await;
        let absent = app
            .call(
                method.clone(),
                &format!("/api/v1/servers/{missing}"),
                body.clone(),
                &admin_a,
            )
            .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(
            (foreign.status, &foreign.text),
            (absent.status, &absent.text),
            "{method}"
        );
    }
    // Creating in another tenant looks like creating in a missing one.
    let mut body = server_body("planted");
    body["tenant_id"] = json!(b);
    let foreign = create(&app, &admin_a, body.clone()).await;
    body["tenant_id"] = json!("ten_doesnotexist");
    let absent = create(&app, &admin_a, body).await;
    assert_eq!(
        (foreign.status, &foreign.text),
        (absent.status, &absent.text)
    );
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    // The list holds only the own tenant's, for any paging.
    for q in ["", "?limit=1000", "?after=srv_"] {
        let list = app
            .call(Method::GET, &format!("/api/v1/servers{q}"), None, &admin_a)
            .await;
        assert!(
            !list.text.contains(&b_server) && !list.text.contains("secret-b"),
            "{q}"
        );
        assert_eq!(list.json()["servers"].as_array().unwrap().len(), 1);
    }
    // B's server is untouched; global admins see both.
    let r = app
        .call(
            Method::GET,
            &format!("/api/v1/servers/{b_server}"),
            None,
            &admin_b,
        )
        .await;
    assert_eq!(r.json()["name"], "secret-b");
    let all = app
        .call(Method::GET, "/api/v1/servers", None, &root)
        .await
        .json();
    assert_eq!(all["servers"].as_array().unwrap().len(), 2);
    let denials = app.denials(&root).await;
    assert_eq!(
        denials
            .iter()
            .filter(|(t, d)| *t == b_server && d.ends_with("other_tenant"))
            .count(),
        3
    );
    assert_eq!(
        denials.iter().filter(|(t, _)| t == missing).count(),
        3,
        "missing objects are audited the same way"
    );
}

async fn role_matrix_over_http(db: Db) {
    let app = TestApp::new(db).await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let operator = app.member("op@a.example", &a, "operator").await;
    let viewer = app.member("viewer@a.example", &a, "viewer").await;
    let id = create(&app, &admin, server_body("s")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/servers/{id}");
    let mut upd = server_body("s2");
    upd.as_object_mut().unwrap().remove("credentials");
    for (who, token, may_manage) in [("viewer", &viewer, false), ("operator", &operator, false)] {
        assert_eq!(
            app.call(Method::GET, &path, None, token).await.status,
            StatusCode::OK,
            "{who}"
        );
        let list = app.call(Method::GET, "/api/v1/servers", None, token).await;
        assert_eq!(list.json()["servers"].as_array().unwrap().len(), 1, "{who}");
        for (method, p, body) in [
            (
                Method::POST,
                "/api/v1/servers".to_owned(),
                Some(server_body(who)),
            ),
            (Method::PUT, path.clone(), Some(upd.clone())),
            (Method::DELETE, path.clone(), None),
        ] {
            let r = app.call(method.clone(), &p, body, token).await;
            assert_eq!(
                r.status == StatusCode::FORBIDDEN,
                !may_manage,
                "{who} {method}: {}",
                r.text
            );
        }
    }
    assert_eq!(
        app.call(Method::PUT, &path, Some(upd), &admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::DELETE, &path, None, &admin).await.status,
        StatusCode::NO_CONTENT
    );
}

async fn canary_bmc_password_is_never_in_plain_text(db: Db) {
    let canary = format!("CANARY-{}-bmc", outband_manager::ids::random_token(9));
    let user_canary = format!("CANARYUSER{}", outband_manager::ids::random_token(6));
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let mut body = server_body("canary");
    body["credentials"] = json!({"username": user_canary, "password": canary});
    let mut texts = Vec::new();
    let r = create(&app, &admin, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    texts.push(r.text);
    let path = format!("/api/v1/servers/{id}");
    // Refused and accepted requests carrying it.
    texts.push(create(&app, &admin, body.clone()).await.text);
    let mut bad = body.clone();
    bad["endpoints"]["power"] = json!(format!("ipmi://u:{canary}@h"));
    texts.push(create(&app, &admin, bad).await.text);
    body["name"] = json!("canary-renamed");
    texts.push(
        app.call(Method::PUT, &path, Some(body.clone()), &admin)
            .await
            .text,
    );
    body["extra"] = json!(canary);
    texts.push(app.call(Method::PUT, &path, Some(body), &admin).await.text);
    texts.push(app.call(Method::GET, &path, None, &admin).await.text);
    texts.push(
        app.call(Method::GET, "/api/v1/servers", None, &root)
            .await
            .text,
    );
    texts.push(app.get("/api/v1/audit?limit=1000", Some(&root)).await.text);
    texts.push(app.get("/metrics", None).await.text);
    for t in &texts {
        assert!(
            !t.contains(&canary) && !t.contains(&user_canary),
            "canary in a response: {t}"
        );
    }
    // Stored: it decrypts, yet no database file holds it in plain text.
    let row = app.m.store.server_by_id(&id).await.unwrap().unwrap();
    let (kid, sealed) = row.credentials.unwrap();
    let plain = app.m.credential_keys.open(&id, &kid, &sealed).unwrap();
    assert_eq!(plain.password.as_str(), canary);
    assert!(!format!("{plain:?}").contains(&canary));
    if let Some(files) = app.raw_database_files().await {
        let found_name = files
            .iter()
            .any(|(_, b)| b.windows(14).any(|w| w == b"canary-renamed"));
        assert!(found_name, "the grep must be able to find plain text");
        for (path, bytes) in &files {
            for needle in [canary.as_bytes(), user_canary.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "canary in {}",
                    path.display()
                );
            }
        }
    }
    let logs = all_logs();
    assert!(logs.contains(&id), "logs are captured");
    for line in logs.lines() {
        assert!(
            !line.contains(&canary) && !line.contains(&user_canary),
            "canary in a log line: {line}"
        );
    }
}

both!(
    crud_and_validation,
    tenants_cannot_see_each_others_servers,
    role_matrix_over_http,
    canary_bmc_password_is_never_in_plain_text,
);
