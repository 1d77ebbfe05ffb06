//! Tenants, users with roles, and tenant isolation of the tenant endpoints.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::ctx::{Db, PASSWORD, TestApp, both};

async fn global_admin_creates_tenants_and_users(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": " Acme "})),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let acme = r.json()["id"].as_str().unwrap().to_owned();
    assert!(acme.starts_with("ten_"));
    assert_eq!(r.json()["name"], "Acme");
    let dup = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "Acme"})),
            &root,
        )
        .await;
    assert_eq!(
        (dup.status, dup.code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    for bad in ["", "   ", "a\nb", &"x".repeat(101)] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"name": bad})),
                &root,
            )
            .await;
        assert_eq!(r.code(), "invalid_request", "{bad:?}");
    }

    // A user with a generated one-time password, shown once.
    let path = format!("/api/v1/tenants/{acme}/users");
    let r = app
        .call(
            Method::POST,
            &path,
            Some(json!({"email": "Boss@Acme.example", "role": "admin"})),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["user"]["email"], "boss@acme.example");
    assert_eq!(v["user"]["tenant_id"], acme.as_str());
    assert_eq!(v["user"]["role"], "admin");
    assert_eq!(v["user"]["password_change_required"], true);
    let otp = v["one_time_password"].as_str().unwrap().to_owned();
    let login = app.login("boss@acme.example", &otp).await;
    assert_eq!(login.json()["password_change_required"], true);

    // A given password is one-time too and never echoed.
    let r = app
        .call(
            Method::POST,
            &path,
            Some(json!({"email": "ops@acme.example", "role": "operator", "password": PASSWORD})),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json().get("one_time_password").is_none());
    assert!(!r.text.contains(PASSWORD));
    // Refusals: duplicate email, weak password, unknown role, unknown fields.
    for (body, code) in [
        (
            json!({"email": "OPS@acme.example", "role": "viewer"}),
            "conflict",
        ),
        (
            json!({"email": "x@acme.example", "role": "viewer", "password": "short"}),
            "invalid_request",
        ),
        (
            json!({"email": "noat", "role": "viewer"}),
            "invalid_request",
        ),
        (
            json!({"email": "y@acme.example", "role": "owner"}),
            "invalid_request",
        ),
        (
            json!({"email": "y@acme.example", "role": "viewer", "admin": true}),
            "invalid_request",
        ),
    ] {
        let r = app
            .call(Method::POST, &path, Some(body.clone()), &root)
            .await;
        assert_eq!(r.code(), code, "{body}");
    }
    let list = app.call(Method::GET, &path, None, &root).await.json();
    let emails: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["boss@acme.example", "ops@acme.example"]);
    assert!(!list.to_string().contains("argon2"));
    let created = app.audit(&root, "action=user_create").await;
    assert_eq!(created.len(), 3, "root + 2 via the API");
    assert_eq!(created[0]["actor_email"], "root@example.com");
    assert_eq!(created[0]["detail"], format!("api {acme} operator"));
}

async fn tenant_admins_manage_only_their_own_tenant(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let viewer_a = app.member("viewer@a.example", &a, "viewer").await;
    let operator_a = app.member("op@a.example", &a, "operator").await;
    app.member("admin@b.example", &b, "admin").await;

    // Own tenant: create and list users.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{a}/users"),
            Some(json!({"email": "new@a.example", "role": "viewer"})),
            &admin_a,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/api/v1/tenants/{a}/users"),
            None,
            &admin_a
        )
        .await
        .json()["users"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Lower roles may not manage users (403: they see their tenant).
    for t in [&viewer_a, &operator_a] {
        let r = app
            .call(Method::GET, &format!("/api/v1/tenants/{a}/users"), None, t)
            .await;
        assert_eq!(r.code(), "forbidden");
    }
    // The other tenant answers exactly like a tenant that does not exist.
    let missing = "ten_doesnotexist";
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::GET, "/users", None),
        (
            Method::POST,
            "/users",
            Some(json!({"email": "spy@a.example", "role": "admin"})),
        ),
    ] {
        let foreign = app
            .call(
                method.clone(),
                &format!("/api/v1/tenants/{b}{suffix}"),
                body.clone(),
                &admin_a,
            )
            .await;
        let absent = app
            .call(
                method.clone(),
                &format!("/api/v1/tenants/{missing}{suffix}"),
                body.clone(),
                &admin_a,
            )
            .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{method} {suffix}");
        assert_eq!(
            (foreign.status, foreign.text.clone()),
            (absent.status, absent.text.clone()),
            "{method} {suffix}"
        );
    }
    assert!(app.login("spy@a.example", PASSWORD).await.status == StatusCode::UNAUTHORIZED);
    // Lists are filtered: only the own tenant.
    let list = app
        .call(Method::GET, "/api/v1/tenants", None, &viewer_a)
        .await
        .json();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(list["tenants"][0]["id"], a.as_str());
    assert!(!list.to_string().contains(&b));
    let all = app
        .call(Method::GET, "/api/v1/tenants", None, &root)
        .await
        .json();
    assert_eq!(all["tenants"].as_array().unwrap().len(), 2);
    // Global actions are refused to tenant admins.
    let r = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"name": "C"})),
            &admin_a,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    let me = app
        .call(Method::GET, "/api/v1/me", None, &operator_a)
        .await
        .json();
    assert_eq!(
        (me["role"].as_str(), me["tenant_id"].as_str()),
        (Some("operator"), Some(a.as_str()))
    );

    // Every denial is in the audit log with its reason.
    let denials = app.denials(&root).await;
    let count = |target: &str, detail: &str| {
        denials
            .iter()
            .filter(|(t, d)| t == target && d == detail)
            .count()
    };
    assert_eq!(count(&a, "manage_users role"), 2);
    assert_eq!(count(&b, "view_tenant other_tenant"), 1);
    assert_eq!(count(&b, "manage_users other_tenant"), 2);
    assert_eq!(count(missing, "manage_users no_such_object"), 2);
    assert_eq!(count("create_tenant", "create_tenant global_admin_only"), 1);
    assert_eq!(denials.len(), 9);
}

async fn tenant_admins_change_roles_and_disable_users(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let admin_a = app.member("admin@a.example", &a, "admin").await;
    let (viewer_token, viewer_refresh) = {
        app.member("viewer@a.example", &a, "viewer").await;
        app.tokens("viewer@a.example").await
    };
    let viewer_id = app
        .call(Method::GET, "/api/v1/me", None, &viewer_token)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_user = app.member("user@b.example", &b, "viewer").await;
    let b_id = app
        .call(Method::GET, "/api/v1/me", None, &b_user)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/tenants/{a}/users/{viewer_id}");
    // Promote: the next request already sees the new role.
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(json!({"role": "operator"})),
            &admin_a,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["role"], "operator");
    let me = app
        .call(Method::GET, "/api/v1/me", None, &viewer_token)
        .await
        .json();
    assert_eq!(me["role"], "operator");
    // The operator may not manage users.
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(json!({"role": "admin"})),
            &viewer_token,
        )
        .await;
    assert_eq!(r.code(), "forbidden");
    // Another tenant's user (under either path) answers like a missing one.
    for p in [
        format!("/api/v1/tenants/{a}/users/{b_id}"),
        format!("/api/v1/tenants/{b}/users/{b_id}"),
    ] {
        let foreign = app
            .call(Method::PUT, &p, Some(json!({"role": "admin"})), &admin_a)
            .await;
        let absent = app
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{a}/users/usr_missing"),
                Some(json!({"role": "admin"})),
                &admin_a,
            )
            .await;
        assert_eq!(
            (foreign.status, &foreign.text),
            (absent.status, &absent.text),
            "{p}"
        );
        assert_eq!(foreign.code(), "not_found");
    }
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &b_user)
            .await
            .json()["role"],
        "viewer"
    );
    // Not on oneself.
    let admin_id = app
        .call(Method::GET, "/api/v1/me", None, &admin_a)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{a}/users/{admin_id}"),
            Some(json!({"role": "viewer"})),
            &admin_a,
        )
        .await;
    assert_eq!(r.code(), "invalid_request");
    // Disable: the user's tokens stop working at once, login and refresh fail.
    let before = app.clock.now();
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(json!({"role": "operator", "disabled": true})),
            &admin_a,
        )
        .await;
    assert_eq!(r.json()["disabled"], true);
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", None, &viewer_token)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&viewer_refresh).await.code(),
        "invalid_refresh_token"
    );
    assert_eq!(
        app.login("viewer@a.example", PASSWORD).await.code(),
        "invalid_credentials"
    );
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at >= $2 \
         AND revoke_reason = 'user_disabled'",
    )
    .bind(&viewer_id)
    .bind(before)
    .fetch_one(app.m.store.pool())
    .await
    .unwrap();
    // Both live sessions (member() and tokens() each logged in) are revoked, so they
    // reach the gateways' revocation feed.
    assert_eq!(n, 2);
    // Enable again.
    let r = app
        .call(
            Method::PUT,
            &path,
            Some(json!({"role": "viewer", "disabled": false})),
            &admin_a,
        )
        .await;
    assert_eq!(r.json()["disabled"], false);
    assert_eq!(
        app.login("viewer@a.example", PASSWORD).await.status,
        StatusCode::OK
    );
    let updates = app.audit(&root, "action=user_update").await;
    assert_eq!(updates.len(), 3);
    assert_eq!(updates[1]["detail"], "operator disabled sessions_revoked=2");
}

both!(
    global_admin_creates_tenants_and_users,
    tenant_admins_manage_only_their_own_tenant,
    tenant_admins_change_roles_and_disable_users,
);
