//! Tenants and their users: `/api/v1/tenants/*`, `/api/v1/me`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::ErrorBody;
use outband_api::tenants::{
    CreateTenantRequest, CreateUserRequest, CreatedUser, Tenant, TenantList, UpdateUserRequest,
    User, UserList,
};

use super::bearer::AuthUser;
use super::extract::{ApiJson, PathId, PathIds};
use crate::authz::{Action, On, authorize};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::manager::Manager;
use crate::store::StoreError;
use crate::store::audit::NewAudit;
use crate::users::{self, Creator};

/// Longest tenant name, bytes.
pub const MAX_NAME_LEN: usize = 100;

/// Checks a display name (tenants, servers, gateways): trimmed, 1..=[`MAX_NAME_LEN`]
/// bytes, no control characters.
pub fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name must be 1-100 bytes without control characters",
        ));
    }
    Ok(name.to_owned())
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants",
    tag = "tenants",
    request_body = CreateTenantRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins only)", body = ErrorBody),
        (status = 409, description = "conflict: the name is taken", body = ErrorBody)
    )
)]
/// `POST /api/v1/tenants` (global admins).
pub async fn create_tenant(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    authorize(&m, &user, Action::CreateTenant, On::Global).await?;
    let tenant = Tenant {
        id: ids::new_id("ten"),
        name: check_name(&req.name)?,
        created_at: m.clock.now(),
    };
    match m.store.insert_tenant(&tenant).await {
        Err(StoreError::Conflict) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a tenant with this name exists",
            ));
        }
        other => other?,
    }
    m.audit(user.audit("tenant_create", &tenant.id, &tenant.name))
        .await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    tag = "tenants",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Global admins: every tenant; others: their own", body = TenantList),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (no tenant)", body = ErrorBody)
    )
)]
/// `GET /api/v1/tenants`.
pub async fn list_tenants(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
) -> Result<Json<TenantList>, ApiError> {
    let scope = authorize(&m, &user, Action::ViewTenant, On::List).await?;
    let tenants = m.store.list_tenants(scope.tenant()).await?;
    Ok(Json(TenantList { tenants }))
}

/// Looks a tenant up and authorizes `action` on it (foreign = missing = 404).
async fn tenant_for(
    m: &Manager,
    user: &AuthUser,
    id: &str,
    action: Action,
) -> Result<Tenant, ApiError> {
    let tenant = m.store.tenant_by_id(id).await?;
    let on = On::Object {
        id,
        tenant: tenant.as_ref().map(|t| t.id.as_str()),
    };
    authorize(m, user, action, on).await?;
    tenant.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 404, description = "not_found (also another tenant)", body = ErrorBody)
    )
)]
/// `GET /api/v1/tenants/{tenant_id}`.
pub async fn get_tenant(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<Tenant>, ApiError> {
    tenant_for(&m, &user, &id, Action::ViewTenant)
        .await
        .map(Json)
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant_id}/users",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = CreateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the password is one-time", body = CreatedUser),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: the email is taken", body = ErrorBody),
        (status = 503, description = "busy", body = ErrorBody)
    )
)]
/// `POST /api/v1/tenants/{tenant_id}/users`: a user in the tenant with a one-time
/// password (given, or generated and returned once).
pub async fn create_user(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let tenant = tenant_for(&m, &user, &id, Action::ManageUsers).await?;
    let (password, generated) = match req.password {
        Some(p) => (p, false),
        None => (users::generate_password(), true),
    };
    let email = users::check_new_user(&req.email, &password)?;
    let hash = m.hasher.hash(password.clone()).await?;
    let row = users::new_user_row(
        &m.clock,
        email,
        hash,
        false,
        true,
        Some((tenant.id, req.role)),
    );
    let creator = Creator {
        id: user.user.id.clone(),
        email: user.user.email.clone(),
        source_ip: user.source_ip.clone(),
    };
    let row = users::store_user(&m.store, &m.clock, row, "api", Some(&creator)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: users::to_api(&row),
            one_time_password: generated.then_some(password),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant_id}/users",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's users", body = UserList),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody)
    )
)]
/// `GET /api/v1/tenants/{tenant_id}/users`.
pub async fn list_users(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<UserList>, ApiError> {
    let tenant = tenant_for(&m, &user, &id, Action::ManageUsers).await?;
    let rows = m.store.users_of_tenant(&tenant.id).await?;
    Ok(Json(UserList {
        users: rows.iter().map(users::to_api).collect(),
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/tenants/{tenant_id}/users/{user_id}",
    tag = "tenants",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("user_id" = String, Path, description = "User id")
    ),
    request_body = UpdateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated; disabling ended the user's sessions", body = User),
        (status = 400, description = "invalid_request (e.g. one's own account)", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found (also a user of another tenant)", body = ErrorBody)
    )
)]
/// `PUT /api/v1/tenants/{tenant_id}/users/{user_id}`: role and disabled state.
pub async fn update_user(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathIds(tenant_id, user_id): PathIds,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<User>, ApiError> {
    // The user is an object of its tenant; one named under another tenant's path is
    // missing.
    let target = m
        .store
        .user_by_id(&user_id)
        .await?
        .filter(|u| u.tenant_id.as_deref() == Some(tenant_id.as_str()));
    let on = On::Object {
        id: &user_id,
        tenant: target.as_ref().and_then(|u| u.tenant_id.as_deref()),
    };
    authorize(&m, &user, Action::ManageUsers, on).await?;
    let target = target.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))?;
    if target.id == user.user.id {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "an admin cannot change their own role or disable themselves",
        ));
    }
    let now = m.clock.now();
    let revoked = m
        .store
        .update_membership(&target.id, req.role, req.disabled, now)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))?;
    let detail = format!(
        "{}{} sessions_revoked={revoked}",
        req.role.as_str(),
        if req.disabled { " disabled" } else { "" }
    );
    m.audit(user.audit("user_update", &target.id, &detail))
        .await?;
    let updated = m
        .store
        .user_by_id(&target.id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object"))?;
    Ok(Json(users::to_api(&updated)))
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "tenants",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody)
    )
)]
/// `GET /api/v1/me`: the caller's account, tenant and role.
pub async fn me(user: AuthUser) -> Json<User> {
    Json(users::to_api(&user.user))
}

impl AuthUser {
    /// A success audit entry for an action of this user on `target`.
    pub fn audit(&self, action: &'static str, target: &str, detail: &str) -> NewAudit {
        NewAudit {
            action,
            outcome: "success",
            actor_id: Some(self.user.id.clone()),
            actor_email: Some(self.user.email.clone()),
            source_ip: Some(self.source_ip.clone()),
            target: Some(target.to_owned()),
            detail: Some(detail.to_owned()),
            ..NewAudit::default()
        }
    }
}
