//! Admin operations: password reset by an admin, deleting users, tenants and gateways;
//! their role rules, tenant isolation, audit, and the revocation feed.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ctx::{Db, PASSWORD, TestApp, all_logs, both};
use crate::gateways::gateway;

both!(
    an_admin_resets_a_password_and_ends_the_sessions,
    password_reset_rules,
    an_admin_deletes_a_user,
    a_tenant_is_deleted_only_when_empty,
    a_gateway_is_deleted_only_when_no_server_uses_it,
);

async fn id_of(app: &TestApp, token: &str) -> String {
    app.call(Method::GET, "/api/v1/me", None, token)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Session ids in the revocation feed since `since`.
async fn revoked(app: &TestApp, gw: &str, since: i64) -> Vec<(String, String)> {
    let r = app
        .call(
            Method::GET,
            &format!("/api/v1/gateway/revocations?since={since}"),
            None,
            gw,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["user_id"].as_str().unwrap().to_owned(),
                s["session_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn an_admin_resets_a_password_and_ends_the_sessions(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (_g, gw) = gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let user = app.member("u@a.example", &a, "operator").await;
    let (_, user_refresh) = app.tokens("u@a.example").await;
    let uid = id_of(&app, &user).await;
    let since = app.clock.now();
    let path = format!("/api/v1/tenants/{a}/users/{uid}/password");
    let r = app.call(Method::POST, &path, Some(json!({})), &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    let otp = v["one_time_password"].as_str().unwrap().to_owned();
    assert!(otp.len() >= 12);
    assert_eq!(v["sessions_revoked"], 2);
    assert_eq!(v["user"]["password_change_required"], true);
    // Every session ended: tokens, refresh, and the gateways hear of both.
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &user)
            .await
            .code(),
        "invalid_token"
    );
    assert_eq!(
        app.refresh(&user_refresh).await.code(),
        "invalid_refresh_token"
    );
    let feed = revoked(&app, &gw, since).await;
    assert_eq!(
        feed.iter().filter(|(u, _)| *u == uid).count(),
        2,
        "{feed:?}"
    );
    // The old password is gone; the one-time password must be changed first.
    assert_eq!(
        app.login("u@a.example", PASSWORD).await.code(),
        "invalid_credentials"
    );
    let r = app.login("u@a.example", &otp).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["password_change_required"], true);
    let t = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &t).await.code(),
        "password_change_required"
    );
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"current_password": otp, "new_password": "a brand new passphrase"})),
            &t,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &t).await.status,
        StatusCode::OK
    );
    // A given one-time password is not echoed.
    let r = app
        .call(
            Method::POST,
            &path,
            Some(json!({"password": "an admin chosen secret"})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json().get("one_time_password").is_none());
    assert!(!r.text.contains("an admin chosen secret"));
    let r = app.login("u@a.example", "an admin chosen secret").await;
    assert_eq!(r.json()["password_change_required"], true);
    // Audited, without the passwords; nor are they in any log line.
    let resets = app.audit(&root, "action=user_password_reset").await;
    let details: Vec<&str> = resets
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        ["given sessions_revoked=1", "generated sessions_revoked=2"]
    );
    assert!(resets.iter().all(|e| e["target"] == uid.as_str()));
    let logs = all_logs();
    assert!(!logs.contains(&otp) && !logs.contains("an admin chosen secret"));
    let everything = app.audit(&root, "limit=1000").await;
    assert!(!Value::Array(everything).to_string().contains(&otp));
}

async fn password_reset_rules(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let operator = app.member("op@a.example", &a, "operator").await;
    let u = app.member("u@a.example", &a, "viewer").await;
    let uid = id_of(&app, &u).await;
    let other = app.member("u@b.example", &b, "viewer").await;
    let other_id = id_of(&app, &other).await;
    let reset = |path: String, token: String, body: Value| {
        let app = &app;
        async move { app.call(Method::POST, &path, Some(body), &token).await }
    };
    let path = format!("/api/v1/tenants/{a}/users/{uid}/password");
    // Roles below admin: 403.
    assert_eq!(
        reset(path.clone(), operator.clone(), json!({}))
            .await
            .code(),
        "forbidden"
    );
    // Too short: 400, nothing changed.
    let r = reset(path.clone(), admin.clone(), json!({"password": "short"})).await;
    assert_eq!(r.code(), "invalid_request");
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &u).await.status,
        StatusCode::OK
    );
    // Another tenant's user, under either path: exactly like a missing one.
    let missing = reset(
        format!("/api/v1/tenants/{a}/users/usr_missing/password"),
        admin.clone(),
        json!({}),
    )
    .await;
    assert_eq!(missing.code(), "not_found");
    for p in [
        format!("/api/v1/tenants/{a}/users/{other_id}/password"),
        format!("/api/v1/tenants/{b}/users/{other_id}/password"),
    ] {
        let r = reset(p.clone(), admin.clone(), json!({})).await;
        assert_eq!((r.status, &r.text), (missing.status, &missing.text), "{p}");
    }
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &other)
            .await
            .status,
        StatusCode::OK
    );
    // Not on oneself.
    let admin_id = id_of(&app, &admin).await;
    let r = reset(
        format!("/api/v1/tenants/{a}/users/{admin_id}/password"),
        admin.clone(),
        json!({}),
    )
    .await;
    assert_eq!(r.code(), "invalid_request");
    // A global admin who is also a member: only global admins may reset it.
    let g = outband_manager::users::create_user_in(
        &app.m.store,
        &app.clock,
        "global@a.example",
        PASSWORD,
        true,
        false,
        Some((a.clone(), outband_api::tenants::Role::Viewer)),
        "test",
    )
    .await
    .unwrap();
    let gpath = format!("/api/v1/tenants/{a}/users/{}/password", g.id);
    assert_eq!(
        reset(gpath.clone(), admin.clone(), json!({})).await.code(),
        "forbidden"
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/tenants/{a}/users/{}", g.id),
            None,
            &admin
        )
        .await
        .code(),
        "forbidden"
    );
    assert_eq!(
        reset(gpath, root.clone(), json!({})).await.status,
        StatusCode::OK
    );
    let denials = app.denials(&root).await;
    assert!(
        denials
            .iter()
            .any(|(t, d)| *t == g.id && d == "manage_global_admins global_admin_only"),
        "{denials:?}"
    );
    assert!(
        denials
            .iter()
            .any(|(t, d)| *t == other_id && d == "manage_users other_tenant"),
        "{denials:?}"
    );
}

async fn an_admin_deletes_a_user(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (_g, gw) = gateway(&app, &root, "g").await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let user = app.member("u@a.example", &a, "operator").await;
    let uid = id_of(&app, &user).await;
    let other = app.member("u@b.example", &b, "viewer").await;
    let other_id = id_of(&app, &other).await;
    let since = app.clock.now();
    let del = |path: String, token: String| {
        let app = &app;
        async move { app.call(Method::DELETE, &path, None, &token).await }
    };
    // Foreign user: like a missing one; self: refused.
    let missing = del(
        format!("/api/v1/tenants/{a}/users/usr_missing"),
        admin.clone(),
    )
    .await;
    let foreign = del(
        format!("/api/v1/tenants/{a}/users/{other_id}"),
        admin.clone(),
    )
    .await;
    assert_eq!(missing.code(), "not_found");
    assert_eq!(
        (foreign.status, &foreign.text),
        (missing.status, &missing.text)
    );
    let admin_id = id_of(&app, &admin).await;
    assert_eq!(
        del(
            format!("/api/v1/tenants/{a}/users/{admin_id}"),
            admin.clone()
        )
        .await
        .code(),
        "invalid_request"
    );
    assert_eq!(
        del(format!("/api/v1/tenants/{a}/users/{uid}"), user.clone())
            .await
            .code(),
        "forbidden"
    );
    // Delete.
    let r = del(format!("/api/v1/tenants/{a}/users/{uid}"), admin.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &user)
            .await
            .code(),
        "invalid_token"
    );
    assert_eq!(
        app.login("u@a.example", PASSWORD).await.code(),
        "invalid_credentials"
    );
    assert!(
        revoked(&app, &gw, since)
            .await
            .iter()
            .any(|(u, _)| *u == uid)
    );
    let list = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{a}/users"),
            None,
            &admin,
        )
        .await;
    assert!(!list.text.contains(&uid) && !list.text.contains("u@a.example"));
    // Gone: a second delete, a reset or an update find nothing.
    assert_eq!(
        del(format!("/api/v1/tenants/{a}/users/{uid}"), admin.clone())
            .await
            .code(),
        "not_found"
    );
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{a}/users/{uid}"),
            Some(json!({"role": "admin"})),
            &admin,
        )
        .await;
    assert_eq!(r.code(), "not_found");
    // The email may be used again (a new account, a new id).
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{a}/users"),
            Some(json!({"email": "u@a.example", "role": "viewer"})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_ne!(r.json()["user"]["id"], uid.as_str());
    let audit = app.audit(&root, "action=user_delete").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["target"], uid.as_str());
    assert_eq!(audit[0]["detail"], "u@a.example sessions_revoked=1");
    // The other tenant's user is untouched.
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &other)
            .await
            .status,
        StatusCode::OK
    );
    // Housekeeping purges the tombstone a day later.
    app.clock.advance(2 * 24 * 3600);
    let purged = app.m.housekeeping().await.unwrap();
    assert_eq!(purged.users, 1);
}

async fn a_tenant_is_deleted_only_when_empty(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let admin_id = id_of(&app, &admin).await;
    // An agent adopted into A.
    let (_g, gw) = gateway(&app, &root, "g").await;
    let report = json!({"agents": [{"agent_id": "agt_a", "pairing_code": "AAAA-AAAA"}]});
    let heartbeat = || {
        let (app, gw, report) = (&app, gw.clone(), report.clone());
        async move {
            app.call(Method::POST, "/api/v1/gateway/heartbeat", Some(report), &gw)
                .await
        }
    };
    assert_eq!(heartbeat().await.status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/api/v1/agents/adopt",
            Some(json!({"pairing_code": "AAAA-AAAA", "agent_id": "agt_a"})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .call(Method::POST, "/api/v1/join-tokens", Some(json!({})), &admin)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": "s"})),
            &admin,
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/tenants/{a}");
    // Tenant admins may not, not even their own tenant (and learn nothing of others).
    assert_eq!(
        app.call(Method::DELETE, &path, None, &admin).await.code(),
        "forbidden"
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/tenants/{b}"),
            None,
            &admin
        )
        .await
        .code(),
        "forbidden"
    );
    // Not empty: 409 with a clear code.
    let r = app.call(Method::DELETE, &path, None, &root).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "tenant_not_empty"),
        "{}",
        r.text
    );
    assert!(r.text.contains("1 users and 1 servers"), "{}", r.text);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/servers/{server}"),
            None,
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::DELETE, &path, None, &root).await.code(),
        "tenant_not_empty"
    );
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/{a}/users/{admin_id}"),
            None,
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Empty: deleted with its join token.
    let r = app.call(Method::DELETE, &path, None, &root).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        app.call(Method::GET, &path, None, &root).await.code(),
        "not_found"
    );
    assert_eq!(
        app.call(Method::DELETE, &path, None, &root).await.code(),
        "not_found"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM join_tokens WHERE tenant_id = $1")
        .bind(&a)
        .fetch_one(app.m.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    let audit = app
        .audit(&root, &format!("action=tenant_delete&target={a}"))
        .await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["detail"], "A agents_released=1 join_tokens=1");
    // The released agent is pending again when its gateway reports it.
    assert_eq!(heartbeat().await.status, StatusCode::OK);
    let (status,): (String,) = sqlx::query_as("SELECT status FROM agents WHERE id = 'agt_a'")
        .fetch_one(app.m.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "pending");
    // The other tenant is untouched; its name can be reused for A's.
    assert_eq!(
        app.call(Method::GET, &format!("/api/v1/tenants/{b}"), None, &root)
            .await
            .status,
        StatusCode::OK
    );
    let r = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "A"})),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn a_gateway_is_deleted_only_when_no_server_uses_it(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (g, gw) = gateway(&app, &root, "g").await;
    let (_g2, gw2) = gateway(&app, &root, "g2").await;
    let a = app.tenant("A").await;
    let admin = app.member("admin@a.example", &a, "admin").await;
    let server = app
        .call(
            Method::POST,
            "/api/v1/servers",
            Some(json!({"name": "s", "gateway_id": g})),
            &admin,
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/gateways/{g}");
    assert_eq!(
        app.call(Method::DELETE, &path, None, &admin).await.code(),
        "forbidden"
    );
    let r = app.call(Method::DELETE, &path, None, &root).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "gateway_in_use"),
        "{}",
        r.text
    );
    // The gateway keeps working while refused.
    let hb = |token: String| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/v1/gateway/heartbeat",
                Some(json!({"agents": []})),
                &token,
            )
            .await
        }
    };
    assert_eq!(hb(gw.clone()).await.status, StatusCode::OK);
    // Re-point the server, then delete: the token stops working at once.
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/servers/{server}"),
            Some(json!({"name": "s"})),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.call(Method::DELETE, &path, None, &root).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = hb(gw.clone()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert_eq!(
        app.call(Method::DELETE, &path, None, &root).await.code(),
        "not_found"
    );
    let list = app.call(Method::GET, "/api/v1/gateways", None, &root).await;
    assert!(!list.text.contains(&g));
    assert_eq!(hb(gw2).await.status, StatusCode::OK, "the other gateway");
    let audit = app
        .audit(&root, &format!("action=gateway_delete&target={g}"))
        .await;
    assert_eq!(audit.len(), 1);
}
