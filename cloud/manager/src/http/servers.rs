//! Inventory: `/api/v1/servers/*`. Every handler looks the object up by id, then asks
//! [`authorize`]; credentials are sealed before they reach the store and never
//! returned.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use outband_api::ErrorBody;
use outband_api::servers::{
    BmcCredentials, BmcEndpoints, CreateServerRequest, Server, ServerEndpoints, ServerList,
    ServerQuery, UpdateServerRequest,
};
use zeroize::Zeroizing;

use super::bearer::AuthUser;
use super::extract::{ApiJson, ApiQuery, MAX_ID_LEN, PathId};
use super::tenants::check_name;
use crate::authz::{Action, On, authorize};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::inventory::{self, EndpointRole};
use crate::manager::Manager;
use crate::secrets::{Credentials, MAX_SECRET_LEN};
use crate::store::StoreError;
use crate::store::servers::ServerRow;

fn invalid(msg: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such object")
}

/// The API view of a stored server (no credentials).
pub fn to_api(s: &ServerRow) -> Server {
    Server {
        id: s.id.clone(),
        name: s.name.clone(),
        tenant_id: s.tenant_id.clone(),
        gateway_id: s.gateway_id.clone(),
        agent_id: s.agent_id.clone(),
        endpoints: ServerEndpoints {
            power: s.power_url.clone(),
            serial: s.serial_url.clone(),
            graphical: s.graphical_url.clone(),
        },
        cert_sha256: s.cert_sha256.clone(),
        has_credentials: s.credentials.is_some(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// The checked, normalized fields shared by create and update.
struct Fields {
    name: String,
    gateway_id: Option<String>,
    agent_id: Option<String>,
    power_url: Option<String>,
    serial_url: Option<String>,
    graphical_url: Option<String>,
    cert_sha256: Option<String>,
}

fn check_fields(
    name: &str,
    gateway_id: Option<&str>,
    agent_id: Option<&str>,
    endpoints: &BmcEndpoints,
    cert_sha256: Option<&str>,
) -> Result<Fields, ApiError> {
    let endpoint = |role, url: Option<&String>| {
        url.map(|u| inventory::parse_endpoint(role, u).map(|e| e.url()))
            .transpose()
            .map_err(invalid)
    };
    Ok(Fields {
        name: check_name(name)?,
        gateway_id: gateway_id
            .map(|g| inventory::check_ref("gateway_id", g))
            .transpose()
            .map_err(invalid)?,
        agent_id: agent_id
            .map(|a| inventory::check_ref("agent_id", a))
            .transpose()
            .map_err(invalid)?,
        power_url: endpoint(EndpointRole::Power, endpoints.power.as_ref())?,
        serial_url: endpoint(EndpointRole::Serial, endpoints.serial.as_ref())?,
        graphical_url: endpoint(EndpointRole::Graphical, endpoints.graphical.as_ref())?,
        cert_sha256: cert_sha256
            .map(inventory::parse_fingerprint)
            .transpose()
            .map_err(invalid)?,
    })
}

/// Seals request credentials for `server_id` (length-checked first).
fn seal(m: &Manager, server_id: &str, c: BmcCredentials) -> Result<(String, Vec<u8>), ApiError> {
    let creds = Credentials {
        username: Zeroizing::new(c.username),
        password: Zeroizing::new(c.password),
    };
    if creds.username.len() > MAX_SECRET_LEN || creds.password.len() > MAX_SECRET_LEN {
        return Err(invalid(
            "credentials: username and password at most 256 bytes",
        ));
    }
    Ok(m.credential_keys.seal(server_id, &creds))
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict => ApiError::new(
            ErrorCode::Conflict,
            "a server with this name exists in the tenant",
        ),
        other => other.into(),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/servers",
    tag = "servers",
    request_body = CreateServerRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Server),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found: no such tenant", body = ErrorBody),
        (status = 409, description = "conflict: the name is taken in the tenant", body = ErrorBody)
    )
)]
/// `POST /api/v1/servers`.
pub async fn create_server(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateServerRequest>,
) -> Result<(StatusCode, Json<Server>), ApiError> {
    let tenant_id = req
        .tenant_id
        .clone()
        .or_else(|| user.user.tenant_id.clone())
        .ok_or_else(|| invalid("tenant_id is required"))?;
    let tenant = if tenant_id.len() <= MAX_ID_LEN {
        m.store.tenant_by_id(&tenant_id).await?
    } else {
        None
    };
    let on = On::Object {
        id: &tenant_id,
        tenant: tenant.as_ref().map(|t| t.id.as_str()),
    };
    authorize(&m, &user, Action::ManageServers, on).await?;
    let tenant = tenant.ok_or_else(not_found)?;
    let f = check_fields(
        &req.name,
        req.gateway_id.as_deref(),
        req.agent_id.as_deref(),
        &req.endpoints,
        req.cert_sha256.as_deref(),
    )?;
    let id = ids::new_id("srv");
    let credentials = req.credentials.map(|c| seal(&m, &id, c)).transpose()?;
    let now = m.clock.now();
    let row = ServerRow {
        id,
        tenant_id: tenant.id,
        name: f.name,
        gateway_id: f.gateway_id,
        agent_id: f.agent_id,
        power_url: f.power_url,
        serial_url: f.serial_url,
        graphical_url: f.graphical_url,
        cert_sha256: f.cert_sha256,
        credentials,
        created_at: now,
        updated_at: now,
    };
    m.store.insert_server(&row).await.map_err(conflict)?;
    m.audit(user.audit("server_create", &row.id, &row.tenant_id))
        .await?;
    Ok((StatusCode::CREATED, Json(to_api(&row))))
}

#[utoipa::path(
    get,
    path = "/api/v1/servers",
    tag = "servers",
    params(ServerQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's tenant's servers (global admins: all)", body = ServerList),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (no tenant)", body = ErrorBody)
    )
)]
/// `GET /api/v1/servers`: filtered by tenant in the query.
pub async fn list_servers(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ServerQuery>,
) -> Result<Json<ServerList>, ApiError> {
    let scope = authorize(&m, &user, Action::ViewServer, On::List).await?;
    if q.after.as_ref().is_some_and(|a| a.len() > MAX_ID_LEN) {
        return Err(invalid("after: at most 64 bytes"));
    }
    let rows = m
        .store
        .list_servers(scope.tenant(), q.after.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(ServerList {
        servers: rows.iter().map(to_api).collect(),
    }))
}

/// Looks a server up by id and authorizes `action` on it (foreign = missing = 404).
pub async fn server_for(
    m: &Manager,
    user: &AuthUser,
    id: &str,
    action: Action,
) -> Result<ServerRow, ApiError> {
    let row = m.store.server_by_id(id).await?;
    let on = On::Object {
        id,
        tenant: row.as_ref().map(|s| s.tenant_id.as_str()),
    };
    authorize(m, user, action, on).await?;
    row.ok_or_else(not_found)
}

#[utoipa::path(
    get,
    path = "/api/v1/servers/{server_id}",
    tag = "servers",
    params(("server_id" = String, Path, description = "Server id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The server", body = Server),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 404, description = "not_found (also another tenant's)", body = ErrorBody)
    )
)]
/// `GET /api/v1/servers/{server_id}`.
pub async fn get_server(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<Server>, ApiError> {
    let row = server_for(&m, &user, &id, Action::ViewServer).await?;
    Ok(Json(to_api(&row)))
}

#[utoipa::path(
    put,
    path = "/api/v1/servers/{server_id}",
    tag = "servers",
    params(("server_id" = String, Path, description = "Server id")),
    request_body = UpdateServerRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Server),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: the name is taken in the tenant", body = ErrorBody)
    )
)]
/// `PUT /api/v1/servers/{server_id}`.
pub async fn update_server(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
    ApiJson(req): ApiJson<UpdateServerRequest>,
) -> Result<Json<Server>, ApiError> {
    let old = server_for(&m, &user, &id, Action::ManageServers).await?;
    let f = check_fields(
        &req.name,
        req.gateway_id.as_deref(),
        req.agent_id.as_deref(),
        &req.endpoints,
        req.cert_sha256.as_deref(),
    )?;
    let credentials = match (req.clear_credentials, req.credentials) {
        (true, Some(_)) => {
            return Err(invalid("give credentials or clear_credentials, not both"));
        }
        (true, None) => None,
        (false, Some(c)) => Some(seal(&m, &old.id, c)?),
        (false, None) => old.credentials.clone(),
    };
    let row = ServerRow {
        name: f.name,
        gateway_id: f.gateway_id,
        agent_id: f.agent_id,
        power_url: f.power_url,
        serial_url: f.serial_url,
        graphical_url: f.graphical_url,
        cert_sha256: f.cert_sha256,
        credentials,
        updated_at: m.clock.now(),
        ..old
    };
    if !m.store.update_server(&row).await.map_err(conflict)? {
        return Err(not_found());
    }
    m.audit(user.audit("server_update", &row.id, &row.tenant_id))
        .await?;
    Ok(Json(to_api(&row)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/servers/{server_id}",
    tag = "servers",
    params(("server_id" = String, Path, description = "Server id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthenticated / invalid_token", body = ErrorBody),
        (status = 403, description = "forbidden (tenant admins, global admins)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody)
    )
)]
/// `DELETE /api/v1/servers/{server_id}`.
pub async fn delete_server(
    State(m): State<Arc<Manager>>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let row = server_for(&m, &user, &id, Action::ManageServers).await?;
    if !m.store.delete_server(&row.id).await? {
        return Err(not_found());
    }
    m.audit(user.audit("server_delete", &row.id, &row.tenant_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
