//! The router alone, through `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use outband_gateway::http::{AppState, MAX_BODY, router};
use outband_gateway::metrics::Metrics;
use outband_gateway::registry::Registry;
use outband_gateway::relay::Relays;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn app() -> axum::Router {
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(Registry::new(metrics.clone()));
    let relays = Arc::new(Relays::new(
        registry.clone(),
        metrics.clone(),
        CancellationToken::new(),
    ));
    router(AppState {
        registry,
        relays,
        metrics,
        manager: None,
        user: None,
    })
}

async fn call(req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn health_and_empty_agent_list() {
    let (s, v) = call(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (s, v) = call(Request::get("/api/v1/agents").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, serde_json::json!([]));
    let (s, v) = call(Request::get("/api/v1/manager").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, serde_json::json!({ "mode": "standalone" }));
}

#[tokio::test]
async fn errors_are_json() {
    let (s, v) = call(Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");

    let (s, v) = call(
        Request::get("/api/v1/agents/ag-unknown")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "agent_not_found");

    let post = |body: Vec<u8>| {
        Request::post("/api/v1/relays")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let (s, v) = call(post(b"[1,2".to_vec())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "bad_request");

    let (s, v) = call(post(br#"{"agent_id":"a","target":"t","extra":1}"#.to_vec())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let mut big = br#"{"agent_id":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_BODY));
    big.extend(br#"","target":"t"}"#);
    let (s, v) = call(post(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "payload_too_large");

    let (s, v) = call(
        Request::delete("/api/v1/relays/abc")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "bad_request");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let resp = app()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("outband_gateway_agents_connected 0\n"));
    assert!(text.contains("outband_gateway_relays 0\n"));
}

#[tokio::test]
async fn operator_page_is_html_that_uses_the_api() {
    let resp = app()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(resp.headers().contains_key("content-security-policy"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let html = std::str::from_utf8(&body).unwrap();
    assert!(html.contains("/api/v1/agents") && html.contains("/api/v1/relays"));
}

#[tokio::test]
async fn requests_for_a_foreign_host_are_refused() {
    // DNS rebinding: a page whose name now resolves to 127.0.0.1 still says its name.
    let (s, v) = call(
        Request::get("/api/v1/agents")
            .header("host", "attacker.example:8080")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(v["error"]["code"], "bad_host");
    let (s, _) = call(
        Request::get("/api/v1/agents")
            .header("host", "127.0.0.1:8080")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}
