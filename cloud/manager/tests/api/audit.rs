//! The audit log: what is recorded, filters, access control, append-only, and the
//! canary password never appearing anywhere.

use axum::http::StatusCode;
use serde_json::json;

use crate::ctx::{Db, TestApp, all_logs, both};

async fn logins_refreshes_and_logouts_are_recorded(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.user("root@example.com", true).await;
    assert_eq!(
        app.login("root@example.com", "not the password")
            .await
            .code(),
        "invalid_credentials"
    );
    assert_eq!(
        app.login("ghost@example.com", "not the password")
            .await
            .code(),
        "invalid_credentials"
    );
    let (_, r1) = app.tokens("root@example.com").await;
    let r2 = app.refresh(&r1).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post("/api/v1/auth/logout", json!({ "refresh_token": r2 }))
        .await;
    let (admin, _) = app.tokens("root@example.com").await;

    let all = app.audit(&admin, "").await;
    let seq: Vec<(String, String, String)> = all
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expect = [
        ("user_create", "success", "test"),
        ("login", "failure", "bad_password"),
        ("login", "failure", "unknown_user"),
        ("login", "success", "password"),
        ("refresh", "success", ""),
        ("logout", "success", ""),
        ("login", "success", "password"),
    ];
    let expect: Vec<(String, String, String)> = expect
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seq, expect);
    let failure = &all[all.len() - 3];
    assert_eq!(failure["actor_email"], "ghost@example.com");
    assert_eq!(failure["source_ip"], "127.0.0.1");
    assert!(failure["actor_id"].is_null());

    // Filters.
    assert_eq!(app.audit(&admin, "action=login").await.len(), 4);
    assert_eq!(
        app.audit(&admin, &format!("actor_id={}", root.id))
            .await
            .len(),
        6
    );
    assert_eq!(app.audit(&admin, "limit=2").await.len(), 2);
    let newest = all[0]["id"].as_i64().unwrap();
    assert_eq!(
        app.audit(&admin, &format!("before_id={newest}"))
            .await
            .len(),
        all.len() - 1
    );
    let future = app.clock.now_ms() + 1000;
    assert!(
        app.audit(&admin, &format!("since_ms={future}"))
            .await
            .is_empty()
    );
    let r = app.get("/api/v1/audit?bogus=1", Some(&admin)).await;
    assert_eq!(r.code(), "invalid_request");
}

async fn time_filters_bound_both_ends(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let mut at = Vec::new();
    for who in ["a", "b", "c"] {
        app.clock.advance(10);
        at.push(app.clock.now_ms());
        app.login(&format!("{who}@example.com"), "wrong password!!")
            .await;
    }
    let emails = |q: String| {
        let app = &app;
        let root = &root;
        async move {
            app.audit(root, &format!("action=login&{q}"))
                .await
                .iter()
                .map(|e| e["actor_email"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // until_ms is exclusive, since_ms inclusive.
    assert_eq!(
        emails(format!("until_ms={}", at[1])).await.len(),
        2,
        "root's login and a"
    );
    // (The clock moves 10 s before each login: login i is in [at[i], at[i + 1]).)
    assert_eq!(
        emails(format!("until_ms={}", at[2])).await[0],
        "b@example.com"
    );
    assert_eq!(
        emails(format!("since_ms={}&until_ms={}", at[1], at[2])).await,
        ["b@example.com"]
    );
    assert_eq!(
        emails(format!(
            "since_ms={}&until_ms={}",
            at[0],
            app.clock.now_ms() + 1
        ))
        .await,
        ["c@example.com", "b@example.com", "a@example.com"]
    );
    assert!(
        emails(format!("since_ms={}&until_ms={}", at[2], at[1]))
            .await
            .is_empty()
    );
    let r = app.get("/api/v1/audit?until_ms=soon", Some(&root)).await;
    assert_eq!(r.code(), "invalid_request");
}

async fn audit_is_for_admins_and_append_only(db: Db) {
    let app = TestApp::new(db).await;
    app.user("plain@example.com", false).await;
    let (plain, _) = app.tokens("plain@example.com").await;
    let r = app.get("/api/v1/audit", Some(&plain)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/v1/audit", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut refused = vec![
        "UPDATE audit_log SET outcome = 'success'",
        "DELETE FROM audit_log",
    ];
    if db == Db::Postgres {
        // No row trigger fires on TRUNCATE; a statement-level one must.
        refused.push("TRUNCATE audit_log");
        refused.push("TRUNCATE audit_log CASCADE");
    }
    for sql in refused {
        let res = sqlx::query(sql).execute(app.m.store.pool()).await;
        let err = res.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log")
        .fetch_one(app.m.store.pool())
        .await
        .unwrap();
    assert_eq!(n.0, 3, "user_create, login, authz denial");
}

async fn canary_password_never_leaks(db: Db) {
    let canary = format!("CANARY-{}-pw", outband_manager::ids::random_token(9));
    let app = TestApp::new(db).await;
    app.user_with("canary@example.com", &canary, true).await;
    let mut texts = Vec::new();
    let ok = app.login("canary@example.com", &canary).await;
    assert_eq!(ok.status, StatusCode::OK);
    texts.push(ok.text.clone());
    let refresh = ok.json()["refresh_token"].as_str().unwrap().to_owned();
    let access = ok.json()["access_token"].as_str().unwrap().to_owned();
    // The canary typed into the wrong places.
    texts.push(app.login("ghost@example.com", &canary).await.text);
    texts.push(app.login(&canary, &canary).await.text);
    texts.push(
        app.login("canary@example.com", &format!("{canary}x"))
            .await
            .text,
    );
    texts.push(
        app.send(
            axum::http::Method::POST,
            "/api/v1/auth/login",
            Some(json!({ "email": "canary@example.com", "password": canary, "x": 1 }).to_string()),
            None,
            [127, 0, 0, 1],
        )
        .await
        .text,
    );
    texts.push(app.refresh(&refresh).await.text);
    texts.push(
        app.get("/api/v1/audit?limit=1000", Some(&access))
            .await
            .text,
    );
    texts.push(app.get("/metrics", None).await.text);
    for t in &texts {
        assert!(!t.contains(&canary), "canary in a response: {t}");
    }
    // No stored column holds it.
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT COALESCE(actor_email,'') || COALESCE(detail,'') || COALESCE(target,'') FROM audit_log \
         UNION ALL SELECT password_hash FROM users",
    )
    .fetch_all(app.m.store.pool())
    .await
    .unwrap();
    // (The canary typed as an email is recorded lower-cased as the attempted email, by
    // design; the mixed-case canary itself must appear nowhere.)
    let leaked: Vec<_> = rows.iter().filter(|(r,)| r.contains(&canary)).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let logs = all_logs();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        assert!(!line.contains(&canary), "canary in a log line: {line}");
    }
}

both!(
    logins_refreshes_and_logouts_are_recorded,
    time_filters_bound_both_ends,
    audit_is_for_admins_and_append_only,
    canary_password_never_leaks,
);
