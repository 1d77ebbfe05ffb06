//! `/health`, `/metrics` and the JWKS.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use outband_api::jwks::Jwks;

use crate::error::ApiError;
use crate::manager::Manager;

/// `GET /health`: 200 when the database answers.
pub async fn health(State(m): State<Arc<Manager>>) -> Result<Json<serde_json::Value>, ApiError> {
    m.store.count_users().await?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(m): State<Arc<Manager>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.metrics.render(m.hasher.available()),
    )
}

/// `GET /.well-known/jwks.json`: keys that verify access tokens now.
pub async fn jwks(State(m): State<Arc<Manager>>) -> Result<impl IntoResponse, ApiError> {
    let set: Jwks = m.keys.jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(set)))
}
