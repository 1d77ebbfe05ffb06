//! Refresh rotation, reuse detection, logout.

use axum::http::StatusCode;
use serde_json::json;

use crate::ctx::{Db, TestApp, both};

async fn refresh_rotates_the_token(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (a1, r1) = app.tokens("root@example.com").await;
    let resp = app.refresh(&r1).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let v = resp.json();
    let r2 = v["refresh_token"].as_str().unwrap().to_owned();
    let a2 = v["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_ne!(a1, a2);
    assert_eq!(
        app.get("/api/v1/audit", Some(&a2)).await.status,
        StatusCode::OK
    );
    // The chain continues.
    let r3 = app.refresh(&r2).await;
    assert_eq!(r3.status, StatusCode::OK);
    // Stored hashed: the database never holds the token itself.
    let rows: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM refresh_tokens")
        .fetch_all(app.m.store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|(h,)| h.len() == 64 && *h != r1 && *h != r2)
    );
}

async fn reuse_of_a_rotated_token_revokes_the_family(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (_, r1) = app.tokens("root@example.com").await;
    let v = app.refresh(&r1).await.json();
    let r2 = v["refresh_token"].as_str().unwrap().to_owned();
    let a2 = v["access_token"].as_str().unwrap().to_owned();
    // An attacker replays r1.
    let replay = app.refresh(&r1).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.code(), "invalid_refresh_token");
    // The legitimate holder's newer token is dead too, and so is its access token here.
    assert_eq!(app.refresh(&r2).await.code(), "invalid_refresh_token");
    assert_eq!(
        app.get("/api/v1/audit", Some(&a2)).await.code(),
        "invalid_token"
    );
    // Another session of the same user is untouched; it sees the audit entry.
    let (admin, _) = app.tokens("root@example.com").await;
    let reuse = app.audit(&admin, "action=refresh_reuse").await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0]["outcome"], "denied");
}

async fn concurrent_use_of_one_token_lets_at_most_one_win(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (_, r1) = app.tokens("root@example.com").await;
    let (a, b) = tokio::join!(app.refresh(&r1), app.refresh(&r1));
    let wins = [&a, &b]
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(wins <= 1, "both refreshes succeeded");
    assert!(wins < 2 && [&a, &b].iter().any(|r| r.code() == "invalid_refresh_token"));
    // Whoever won holds a token of a now-revoked family.
    for r in [&a, &b] {
        if r.status == StatusCode::OK {
            let t = r.json()["refresh_token"].as_str().unwrap().to_owned();
            assert_eq!(app.refresh(&t).await.code(), "invalid_refresh_token");
        }
    }
}

async fn logout_revokes_the_session(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (access, refresh) = app.tokens("root@example.com").await;
    let r = app
        .post("/api/v1/auth/logout", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.refresh(&refresh).await.code(), "invalid_refresh_token");
    assert_eq!(
        app.get("/api/v1/audit", Some(&access)).await.code(),
        "invalid_token"
    );
    // Unknown and repeated logouts are quiet no-ops.
    for t in [refresh.as_str(), "obr_unknown", "junk"] {
        let r = app
            .post("/api/v1/auth/logout", json!({ "refresh_token": t }))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let (admin, _) = app.tokens("root@example.com").await;
    assert_eq!(app.audit(&admin, "action=logout").await.len(), 1);
}

async fn refresh_tokens_expire(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (_, r1) = app.tokens("root@example.com").await;
    app.clock.advance(14 * 24 * 3600 + 1);
    assert_eq!(app.refresh(&r1).await.code(), "invalid_refresh_token");
    for junk in ["", "obr_", "x".repeat(5000).as_str()] {
        assert_eq!(app.refresh(junk).await.code(), "invalid_refresh_token");
    }
}

async fn housekeeping_deletes_ended_sessions_only(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (_, ended) = app.tokens("root@example.com").await;
    app.post("/api/v1/auth/logout", json!({ "refresh_token": ended }))
        .await;
    let (_, live) = app.tokens("root@example.com").await;
    assert_eq!(
        app.login("root@example.com", "wrong password!")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let count = |sql: &'static str| {
        let pool = app.m.store.pool().clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            n
        }
    };
    // Nothing is old enough yet.
    assert_eq!(app.m.housekeeping().await.unwrap().sessions, 0);
    assert_eq!(count("SELECT COUNT(*) FROM sessions").await, 2);
    // A day later the logged-out session and the stale throttle counters go; the live
    // session and its token stay.
    app.clock
        .advance(outband_manager::manager::SESSION_RETENTION_SECS + 3600);
    let purged = app.m.housekeeping().await.unwrap();
    assert_eq!(purged.sessions, 1);
    assert_eq!(purged.throttle, 2, "account and address counters");
    assert_eq!(count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(app.refresh(&live).await.status, StatusCode::OK);
    assert_eq!(app.refresh(&ended).await.code(), "invalid_refresh_token");
}

both!(
    refresh_rotates_the_token,
    reuse_of_a_rotated_token_revokes_the_family,
    concurrent_use_of_one_token_lets_at_most_one_win,
    logout_revokes_the_session,
    refresh_tokens_expire,
    housekeeping_deletes_ended_sessions_only,
);
