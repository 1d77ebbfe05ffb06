//! `/api/v1/auth/*` handlers (thin: the rules live in [`crate::auth`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::auth::{ChangePasswordRequest, LoginRequest, RefreshRequest, TokenResponse};

use super::bearer::AuthUser;
use super::extract::{ApiJson, SourceIp};
use crate::error::ApiError;
use crate::manager::Manager;

/// `POST /api/v1/auth/login`.
pub async fn login(
    State(m): State<Arc<Manager>>,
    SourceIp(ip): SourceIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    crate::auth::login(&m, req, ip).await.map(Json)
}

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

/// `POST /api/v1/auth/logout`: 204 whether or not the token was known.
pub async fn logout(
    State(m): State<Arc<Manager>>,
    SourceIp(ip): SourceIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    crate::auth::logout(&m, &req.refresh_token, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/password`: 204; other sessions of the user are revoked.
pub async fn change_password(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    crate::auth::change_password(&m, &user, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
