//! `/health`, `/metrics`, the JWKS and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use outband_api::ErrorBody;
use outband_api::jwks::Jwks;
use outband_api::ops::Health;

use crate::error::ApiError;
use crate::manager::Manager;

#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 500, description = "internal", body = ErrorBody)
    )
)]
/// `GET /health`: 200 when the database answers.
pub async fn health(State(m): State<Arc<Manager>>) -> Result<Json<Health>, ApiError> {
    m.store.count_users().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(m): State<Arc<Manager>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.metrics.render(m.hasher.available()),
    )
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "ops",
    responses((status = 200, description = "Keys that verify access tokens", body = Jwks))
)]
/// `GET /.well-known/jwks.json`: keys that verify access tokens now.
pub async fn jwks(State(m): State<Arc<Manager>>) -> Result<impl IntoResponse, ApiError> {
    let set: Jwks = m.keys.jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(set)))
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
/// `GET /api/v1/openapi.json`: the API description, generated from the handlers.
pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi::document())
}
