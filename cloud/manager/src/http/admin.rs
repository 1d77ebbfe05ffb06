//! Admin endpoints: the audit log and key rotation.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use outband_api::ErrorBody;
use outband_api::audit::{AuditPage, AuditQuery};
use outband_api::auth::RotateKeyResponse;

use super::bearer::AuthUser;
use super::extract::ApiQuery;
use crate::authz::{Action, On, authorize};
use crate::error::ApiError;
use crate::manager::Manager;
use crate::store::audit::NewAudit;

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Entries, newest first", body = AuditPage),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden / password_change_required", body = ErrorBody)
    )
)]
/// `GET /api/v1/audit` (global admins).
pub async fn audit(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    authorize(&m, &user, Action::ReadAudit, On::Global).await?;
    let entries = m.store.audit_query(&q).await?;
    Ok(Json(AuditPage { entries }))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/keys/rotate",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "New signing key", body = RotateKeyResponse),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden / password_change_required", body = ErrorBody)
    )
)]
/// `POST /api/v1/admin/keys/rotate` (global admins): a new signing key now; older keys
/// verify for the configured overlap.
pub async fn rotate_keys(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
) -> Result<Json<RotateKeyResponse>, ApiError> {
    authorize(&m, &user, Action::RotateKeys, On::Global).await?;
    let (kid, until) = m.keys.rotate(m.config.key_overlap.as_secs() as i64).await?;
    m.audit(NewAudit {
        action: "key_rotate",
        outcome: "success",
        actor_id: Some(user.user.id.clone()),
        actor_email: Some(user.user.email.clone()),
        source_ip: Some(user.source_ip.clone()),
        target: Some(kid.clone()),
        ..NewAudit::default()
    })
    .await?;
    Ok(Json(RotateKeyResponse {
        kid,
        previous_keys_valid_until: until,
    }))
}
