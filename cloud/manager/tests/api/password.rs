//! Password change and one-time passwords.

use axum::http::{Method, StatusCode};
use outband_manager::users;
use serde_json::json;

use crate::ctx::{Db, PASSWORD, TestApp, both};

const NEW: &str = "a brand new passphrase";

async fn change(app: &TestApp, token: &str, current: &str, new: &str) -> crate::ctx::Resp {
    let body = json!({ "current_password": current, "new_password": new }).to_string();
    app.send(
        Method::POST,
        "/api/v1/auth/password",
        Some(body),
        Some(token),
        [127, 0, 0, 1],
    )
    .await
}

async fn one_time_password_must_be_changed_before_anything_else(db: Db) {
    let app = TestApp::new(db).await;
    let otp = users::generate_password();
    users::create_user(
        &app.m.store,
        &app.clock,
        "new@example.com",
        &otp,
        true,
        true,
        "test",
    )
    .await
    .unwrap();
    let r = app.login("new@example.com", &otp).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["password_change_required"], true);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let blocked = app.get("/api/v1/audit", Some(&token)).await;
    assert_eq!(blocked.status, StatusCode::FORBIDDEN);
    assert_eq!(blocked.code(), "password_change_required");
    // Refreshing does not get around it.
    assert_eq!(
        app.refresh(&refresh).await.json()["password_change_required"],
        true
    );

    assert_eq!(
        change(&app, &token, "not it at all", NEW).await.code(),
        "wrong_password"
    );
    assert_eq!(
        change(&app, &token, &otp, "short").await.code(),
        "invalid_request"
    );
    assert_eq!(
        change(&app, &token, &otp, &otp).await.code(),
        "invalid_request"
    );
    assert_eq!(
        change(&app, &token, &otp, NEW).await.status,
        StatusCode::NO_CONTENT
    );

    // The same session now works; the old password does not.
    assert_eq!(
        app.get("/api/v1/audit", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.login("new@example.com", &otp).await.code(),
        "invalid_credentials"
    );
    let r = app.login("new@example.com", NEW).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["password_change_required"], false);
    let entries = app.audit(&token, "action=password_change").await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure"]);
}

async fn password_change_ends_the_other_sessions(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (a1, _) = app.tokens("root@example.com").await;
    let (a2, r2) = app.tokens("root@example.com").await;
    assert_eq!(
        change(&app, &a1, PASSWORD, NEW).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/api/v1/audit", Some(&a1)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v1/audit", Some(&a2)).await.code(),
        "invalid_token"
    );
    assert_eq!(app.refresh(&r2).await.code(), "invalid_refresh_token");
}

async fn wrong_current_passwords_count_toward_the_throttle(db: Db) {
    let app = TestApp::new(db).await; // account limit 3
    app.user("root@example.com", true).await;
    let (a, _) = app.tokens("root@example.com").await;
    for _ in 0..3 {
        assert_eq!(
            change(&app, &a, "guess guess guess", NEW).await.code(),
            "wrong_password"
        );
    }
    assert_eq!(
        change(&app, &a, PASSWORD, NEW).await.code(),
        "too_many_attempts"
    );
    assert_eq!(
        app.login("root@example.com", PASSWORD).await.code(),
        "too_many_attempts"
    );
}

both!(
    one_time_password_must_be_changed_before_anything_else,
    password_change_ends_the_other_sessions,
    wrong_current_passwords_count_toward_the_throttle,
);
