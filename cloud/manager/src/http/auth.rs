//! `/api/v1/auth/*` handlers (thin: the rules live in [`crate::auth`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::ErrorBody;
use outband_api::auth::{ChangePasswordRequest, LoginRequest, RefreshRequest, TokenResponse};

use super::bearer::AuthUser;
use super::extract::{ApiJson, SourceIp};
use crate::error::ApiError;
use crate::manager::Manager;

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 429, description = "too_many_attempts", body = ErrorBody),
        (status = 503, description = "busy", body = ErrorBody)
    )
)]
/// `POST /api/v1/auth/login`.
pub async fn login(
    State(m): State<Arc<Manager>>,
    SourceIp(ip): SourceIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    crate::auth::login(&m, req, ip).await.map(Json)
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is spent", body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_refresh_token", body = ErrorBody)
    )
)]
/// `POST /api/v1/auth/refresh`.
pub async fn refresh(
    State(m): State<Arc<Manager>>,
    SourceIp(ip): SourceIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    crate::auth::refresh(&m, &req.refresh_token, ip)
        .await
        .map(Json)
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Session ended (or the token was unknown)"),
        (status = 400, description = "invalid_request", body = ErrorBody)
    )
)]
/// `POST /api/v1/auth/logout`: 204 whether or not the token was known.
pub async fn logout(
    State(m): State<Arc<Manager>>,
    SourceIp(ip): SourceIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    crate::auth::logout(&m, &req.refresh_token, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "auth",
    request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Password changed; other sessions ended"),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "wrong_password", body = ErrorBody),
        (status = 429, description = "too_many_attempts", body = ErrorBody),
        (status = 503, description = "busy", body = ErrorBody)
    )
)]
/// `POST /api/v1/auth/password`: 204; other sessions of the user are revoked.
pub async fn change_password(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    crate::auth::change_password(&m, &user, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
