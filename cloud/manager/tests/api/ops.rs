//! `/health`, `/metrics`, error shapes for unknown routes and methods.

use axum::http::{Method, StatusCode};

use crate::ctx::{Db, PASSWORD, TestApp, both};

async fn health_metrics_and_json_errors(db: Db) {
    let app = TestApp::new(db).await;
    app.user("u@example.com", false).await;
    let h = app.get("/health", None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["status"], "ok");
    app.login("u@example.com", PASSWORD).await;
    app.login("u@example.com", "wrong password!").await;
    let m = app.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.contains("outband_manager_login_success_total 1"),
        "{}",
        m.text
    );
    assert!(m.text.contains("outband_manager_login_failure_total 1"));
    assert!(
        m.text
            .contains("# TYPE outband_manager_refresh_reuse_total counter")
    );
    let nf = app.get("/nope", None).await;
    assert_eq!(nf.status, StatusCode::NOT_FOUND);
    assert_eq!(nf.code(), "not_found");
    let mna = app
        .send(
            Method::GET,
            "/api/v1/auth/login",
            None,
            None,
            [127, 0, 0, 1],
        )
        .await;
    assert_eq!(mna.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(mna.code(), "method_not_allowed");
}

async fn openapi_document_describes_every_route(db: Db) {
    let app = TestApp::new(db).await;
    let doc = app.get("/api/v1/openapi.json", None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    // Keep in step with http::router.
    assert_eq!(
        paths,
        [
            "/.well-known/jwks.json",
            "/api/v1/admin/keys/rotate",
            "/api/v1/agents",
            "/api/v1/agents/adopt",
            "/api/v1/agents/lookup",
            "/api/v1/agents/reject",
            "/api/v1/audit",
            "/api/v1/auth/login",
            "/api/v1/auth/logout",
            "/api/v1/auth/password",
            "/api/v1/auth/refresh",
            "/api/v1/gateway/events",
            "/api/v1/gateway/heartbeat",
            "/api/v1/gateway/join",
            "/api/v1/gateway/register",
            "/api/v1/gateway/revocations",
            "/api/v1/gateway/session-authz",
            "/api/v1/gateways",
            "/api/v1/gateways/{gateway_id}",
            "/api/v1/gateways/{gateway_id}/credential",
            "/api/v1/join-tokens",
            "/api/v1/me",
            "/api/v1/openapi.json",
            "/api/v1/servers",
            "/api/v1/servers/{server_id}",
            "/api/v1/tenants",
            "/api/v1/tenants/{tenant_id}",
            "/api/v1/tenants/{tenant_id}/users",
            "/api/v1/tenants/{tenant_id}/users/{user_id}",
            "/api/v1/tenants/{tenant_id}/users/{user_id}/password",
            "/health",
            "/metrics",
        ]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/api/v1/audit"]["get"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    let login = &doc["components"]["schemas"]["LoginRequest"];
    assert_eq!(login["properties"]["password"]["maxLength"], 1024);
}

both!(
    health_metrics_and_json_errors,
    openapi_document_describes_every_route
);
