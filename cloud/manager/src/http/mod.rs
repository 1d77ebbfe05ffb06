//! The REST API (axum). [`router`] builds it on shared [`Manager`] state so tests drive
//! it with `oneshot`; [`crate::run`] serves it.
//!
//! Bounds: request bodies are limited to [`MAX_BODY`]; bearer tokens to
//! [`crate::jwt::MAX_TOKEN_LEN`]; emails, passwords and refresh tokens are checked for
//! length before any work.

pub mod admin;
pub mod agents;
pub mod auth;
pub mod bearer;
pub mod events;
pub mod extract;
pub mod gateways;
pub mod openapi;
pub mod ops;
pub mod servers;
pub mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::{ApiError, ErrorCode};
use crate::manager::Manager;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// The API router.
pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route(bearer::PASSWORD_PATH, post(auth::change_password))
        .route("/api/v1/audit", get(admin::audit))
        .route("/api/v1/admin/keys/rotate", post(admin::rotate_keys))
        .route("/api/v1/me", get(tenants::me))
        .route(
            "/api/v1/tenants",
            post(tenants::create_tenant).get(tenants::list_tenants),
        )
        .route(
            "/api/v1/tenants/{tenant_id}",
            get(tenants::get_tenant).delete(tenants::delete_tenant),
        )
        .route(
            "/api/v1/gateways",
            post(gateways::create_gateway).get(gateways::list_gateways),
        )
        .route(
            "/api/v1/gateways/{gateway_id}",
            axum::routing::delete(gateways::delete_gateway),
        )
        .route(
            "/api/v1/gateways/{gateway_id}/credential",
            post(gateways::new_gateway_credential),
        )
        .route("/api/v1/gateway/register", post(gateways::register))
        .route("/api/v1/gateway/join", post(agents::join))
        .route("/api/v1/agents", get(agents::list_agents))
        .route("/api/v1/agents/lookup", post(agents::lookup))
        .route("/api/v1/agents/adopt", post(agents::adopt))
        .route("/api/v1/agents/reject", post(agents::reject))
        .route("/api/v1/join-tokens", post(agents::create_join_token))
        .route("/api/v1/gateway/heartbeat", post(gateways::heartbeat))
        .route(
            "/api/v1/gateway/session-authz",
            post(gateways::session_authz),
        )
        .route("/api/v1/gateway/revocations", get(gateways::revocations))
        .route("/api/v1/gateway/events", post(events::events))
        .route(
            "/api/v1/servers",
            post(servers::create_server).get(servers::list_servers),
        )
        .route(
            "/api/v1/servers/{server_id}",
            get(servers::get_server)
                .put(servers::update_server)
                .delete(servers::delete_server),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users",
            post(tenants::create_user).get(tenants::list_users),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users/{user_id}",
            axum::routing::put(tenants::update_user).delete(tenants::delete_user),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users/{user_id}/password",
            post(tenants::reset_password),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(manager)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
}
