//! The revocation feed under bursts: more sessions ended in one second than a page,
//! the strict (ended at, id) cursor, the settle window, and a client that sends only
//! `since` (today's gateway).

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::ctx::{Db, TestApp, both};
use crate::gateways::gateway;

/// Ends `n` sessions of `user_id` at second `at`, ids `ses_<prefix><i>`, straight in the
/// database (1500 logins would be 1500 argon2 hashes).
async fn ended_sessions(app: &TestApp, user_id: &str, prefix: &str, n: usize, at: i64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "('ses_{prefix}{i:05}', '{user_id}', {at}, {}, {at}, 'logout')",
                    at + 3600
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at, revoke_reason) \
             VALUES {}",
            values.join(", ")
        ))
        .execute(app.m.store.pool())
        .await
        .unwrap();
    }
}

async fn page(app: &TestApp, gw: &str, since: i64, after: Option<&str>) -> Value {
    let path = match after {
        Some(a) => format!("/api/v1/gateway/revocations?since={since}&after={a}"),
        None => format!("/api/v1/gateway/revocations?since={since}"),
    };
    let r = app.call(Method::GET, &path, None, gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_burst_of_revocations_in_one_second_does_not_stall_the_feed(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (_, gw) = gateway(&app, &root, "g").await;
    let user = app.user("u@example.com", false).await;
    let t = app.clock.now() - 100;
    ended_sessions(&app, &user.id, "a", 1500, t).await;
    ended_sessions(&app, &user.id, "b", 5, t + 1).await;
    let all: HashSet<String> = (0..1500)
        .map(|i| format!("ses_a{i:05}"))
        .chain((0..5).map(|i| format!("ses_b{i:05}")))
        .collect();

    // The strict cursor (from before every id of second t): pages of 1000 that move.
    let (mut since, mut after) = (t, Some("ses_".to_owned()));
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let p = page(&app, &gw, since, after.as_deref()).await;
        assert!(ids(&p).len() <= 1000);
        seen.extend(ids(&p));
        since = p["next_since"].as_i64().unwrap();
        after = p["next_after"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, all);
    assert_eq!((since, after.as_deref()), (t + 1, Some("ses_b00004")));
    assert!(ids(&page(&app, &gw, since, after.as_deref()).await).is_empty());

    // A client that knows only `since` gets the whole second again, then moves on.
    let p = page(&app, &gw, t, None).await;
    assert_eq!(ids(&p).into_iter().collect::<HashSet<_>>(), all);
    assert_eq!(p["next_since"], t + 1);
    let p = page(&app, &gw, t + 1, None).await;
    assert_eq!(ids(&p).len(), 5);

    // A bad cursor is a 400.
    for bad in ["", "%20x", &"x".repeat(129)] {
        let r = app
            .call(
                Method::GET,
                &format!("/api/v1/gateway/revocations?since={t}&after={bad}"),
                None,
                &gw,
            )
            .await;
        assert_eq!(r.code(), "invalid_request", "{bad:?}: {}", r.text);
    }
}

async fn recent_revocations_are_listed_again_until_they_settle(db: Db) {
    let app = TestApp::new(db).await;
    let root = app.root().await;
    let (_, gw) = gateway(&app, &root, "g").await;
    let user = app.user("u@example.com", false).await;
    let now = app.clock.now();
    // 1200 in this second: the first page does not move the cursor yet...
    ended_sessions(&app, &user.id, "m", 1200, now).await;
    let p = page(&app, &gw, now, Some("ses_")).await;
    assert_eq!(ids(&p).len(), 1000);
    assert_eq!(p["next_since"], now);
    assert_eq!(p["next_after"], "ses_", "cursor kept while unsettled");
    // ...so a session of the same second committed late with a smaller id is not
    // skipped.
    ended_sessions(&app, &user.id, "", 1, now).await; // ses_00000 < ses_m...
    let p = page(&app, &gw, now, Some("ses_")).await;
    assert_eq!(ids(&p)[0], "ses_00000");
    // Once settled, the cursor pages through the rest.
    app.clock.advance(11);
    let p = page(&app, &gw, now, Some("ses_")).await;
    let last = ids(&p).last().unwrap().clone();
    assert_eq!(p["next_after"], last.as_str());
    let p = page(&app, &gw, now, Some(&last)).await;
    assert_eq!(ids(&p).len(), 201);
    assert_eq!(p["next_after"], "ses_m01199");
}

both!(
    a_burst_of_revocations_in_one_second_does_not_stall_the_feed,
    recent_revocations_are_listed_again_until_they_settle,
);
