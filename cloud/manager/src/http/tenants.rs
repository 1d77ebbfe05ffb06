//! Tenants and their users: `/api/v1/tenants/*`, `/api/v1/me`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::ErrorBody;
use outband_api::tenants::{
    CreateTenantRequest, CreateUserRequest, CreatedUser, ResetPasswordRequest,
    ResetPasswordResponse, Tenant, TenantList, UpdateUserRequest, User, UserList,
};

use super::bearer::AuthUser;
use super::extract::{ApiJson, PathId, PathIds};
use crate::authz::{Action, On, authorize};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::manager::Manager;
use crate::store::StoreError;
use crate::store::audit::NewAudit;
use crate::store::tenants::TenantDeletion;
use crate::store::users::UserRow;
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
    let target = member_for(&m, &user, &tenant_id, &user_id).await?;
    not_oneself(
        &user,
        &target,
        "an admin cannot change their own role or disable themselves",
    )?;
    let now = m.clock.now();
    let revoked = m
        .store
        .update_membership(&target.id, req.role, req.disabled, now)
        .await?
        .ok_or_else(not_found)?;
    let detail = format!(
        "{}{} sessions_revoked={revoked}",
        req.role.as_str(),
        if req.disabled { " disabled" } else { "" }
    );
    m.audit(user.audit("user_update", &target.id, &detail))
        .await?;
    current(&m, &target.id).await.map(Json)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such object")
}

fn not_oneself(user: &AuthUser, target: &UserRow, message: &'static str) -> Result<(), ApiError> {
    if target.id == user.user.id {
        return Err(ApiError::new(ErrorCode::InvalidRequest, message));
    }
    Ok(())
}

async fn current(m: &Manager, id: &str) -> Result<User, ApiError> {
    let row = m.store.user_by_id(id).await?.ok_or_else(not_found)?;
    Ok(users::to_api(&row))
}

/// Looks a user of `tenant_id` up and authorizes managing it: the user is an object
/// of its tenant (one named under another tenant's path is missing); an account that
/// is also a global admin is for global admins only (asked after the tenant check, so
/// nothing leaks across tenants).
async fn member_for(
    m: &Manager,
    user: &AuthUser,
    tenant_id: &str,
    user_id: &str,
) -> Result<UserRow, ApiError> {
    let target = m
        .store
        .user_by_id(user_id)
        .await?
        .filter(|u| u.tenant_id.as_deref() == Some(tenant_id));
    let on = On::Object {
        id: user_id,
        tenant: target.as_ref().and_then(|u| u.tenant_id.as_deref()),
    };
    authorize(m, user, Action::ManageUsers, on).await?;
    if target.as_ref().is_some_and(|t| t.is_global_admin) {
        authorize(m, user, Action::ManageGlobalAdmins, on).await?;
    }
    target.ok_or_else(not_found)
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant_id}/users/{user_id}/password",
    tag = "tenants",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("user_id" = String, Path, description = "User id")
    ),
    request_body = ResetPasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One-time password set; the user's sessions ended", body = ResetPasswordResponse),
        (status = 400, description = "invalid_request (e.g. one's own account)", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found (also a user of another tenant)", body = ErrorBody),
        (status = 503, description = "busy", body = ErrorBody)
    )
)]
/// `POST /api/v1/tenants/{tenant_id}/users/{user_id}/password`: an admin sets a
/// one-time password (given, or generated and returned once); the user must change it
/// at the next login, and every session of the user ends (revocation feed).
pub async fn reset_password(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathIds(tenant_id, user_id): PathIds,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> Result<Json<ResetPasswordResponse>, ApiError> {
    let target = member_for(&m, &user, &tenant_id, &user_id).await?;
    not_oneself(
        &user,
        &target,
        "change your own password with POST /api/v1/auth/password",
    )?;
    let (password, generated) = match req.password {
        Some(p) => (p, false),
        None => (users::generate_password(), true),
    };
    users::check_new_user(&target.email, &password)?;
    let hash = m.hasher.hash(password.clone()).await?;
    let revoked = m
        .store
        .reset_password(&target.id, &hash, m.clock.now())
        .await?
        .ok_or_else(not_found)?;
    let detail = format!(
        "{} sessions_revoked={revoked}",
        if generated { "generated" } else { "given" }
    );
    m.audit(user.audit("user_password_reset", &target.id, &detail))
        .await?;
    Ok(Json(ResetPasswordResponse {
        user: current(&m, &target.id).await?,
        one_time_password: generated.then_some(password),
        sessions_revoked: revoked,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant_id}/users/{user_id}",
    tag = "tenants",
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("user_id" = String, Path, description = "User id")
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; the user's sessions ended"),
        (status = 400, description = "invalid_request (one's own account)", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found (also a user of another tenant)", body = ErrorBody)
    )
)]
/// `DELETE /api/v1/tenants/{tenant_id}/users/{user_id}`: the account is gone at once
/// (its email may be used again) and every session ends (revocation feed).
pub async fn delete_user(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathIds(tenant_id, user_id): PathIds,
) -> Result<StatusCode, ApiError> {
    let target = member_for(&m, &user, &tenant_id, &user_id).await?;
    not_oneself(&user, &target, "an admin cannot delete their own account")?;
    let revoked = m
        .store
        .delete_user(&target.id, m.clock.now())
        .await?
        .ok_or_else(not_found)?;
    let detail = format!("{} sessions_revoked={revoked}", target.email);
    m.audit(user.audit("user_delete", &target.id, &detail))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted, with its join tokens; its agents are released (pending again when they reconnect)"),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (global admins only)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "tenant_not_empty: delete its users and servers first", body = ErrorBody)
    )
)]
/// `DELETE /api/v1/tenants/{tenant_id}` (global admins): only an empty tenant.
pub async fn delete_tenant(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let tenant = m.store.tenant_by_id(&id).await?;
    let on = On::Object {
        id: &id,
        tenant: tenant.as_ref().map(|t| t.id.as_str()),
    };
    authorize(&m, &user, Action::DeleteTenant, on).await?;
    let tenant = tenant.ok_or_else(not_found)?;
    match m.store.delete_tenant(&tenant.id).await? {
        TenantDeletion::Deleted {
            agents,
            join_tokens,
        } => {
            let detail = format!(
                "{} agents_released={agents} join_tokens={join_tokens}",
                tenant.name
            );
            m.audit(user.audit("tenant_delete", &tenant.id, &detail))
                .await?;
            Ok(StatusCode::NO_CONTENT)
        }
        TenantDeletion::NotEmpty { users, servers } => Err(ApiError::new(
            ErrorCode::TenantNotEmpty,
            format!("the tenant still has {users} users and {servers} servers: delete them first"),
        )),
        TenantDeletion::Missing => Err(not_found()),
    }
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
