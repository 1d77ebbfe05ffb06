//! Tenants (customers) and their users (`/api/v1/tenants/*`).

use serde::{Deserialize, Serialize};

/// A user's role inside its tenant. Each role includes the rights of the ones before it.
///
/// - `viewer`: list and show servers, power status, graphical console view-only.
/// - `operator`: + power control, serial console, interactive graphical console.
/// - `admin`: + manage the tenant's users and servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Operates servers.
    Operator,
    /// Administers the tenant.
    Admin,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `POST /api/v1/tenants` (global admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Display name, unique (1-100 bytes).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Opaque id (`ten_...`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// `GET /api/v1/tenants`: global admins see every tenant, other users their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    /// Tenants by name.
    pub tenants: Vec<Tenant>,
}

/// `POST /api/v1/tenants/{tenant_id}/users` (the tenant's admins, global admins).
///
/// The account always starts with a one-time password: the one given here, or a
/// generated one returned once in the response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Email (case-insensitive, unique across the manager).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 254))]
    pub email: String,
    /// Role in the tenant.
    pub role: Role,
    /// Initial (one-time) password, 12-1024 bytes; omitted: generated.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: Option<String>,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Opaque id (`usr_...`).
    pub id: String,
    /// Lower-cased email.
    pub email: String,
    /// The user's tenant (none for global admins created by the CLI).
    pub tenant_id: Option<String>,
    /// Role in the tenant.
    pub role: Option<Role>,
    /// May administer everything.
    pub is_global_admin: bool,
    /// Must change the password before doing anything else.
    pub password_change_required: bool,
    /// The account is disabled (cannot log in; its sessions were ended).
    #[serde(default)]
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// `POST /api/v1/tenants/{tenant_id}/users` response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedUser {
    /// The new user.
    pub user: User,
    /// The generated one-time password, shown only here (absent when the request gave
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
}

impl std::fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedUser")
            .field("user", &self.user)
            .field(
                "one_time_password",
                &self.one_time_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// `PUT /api/v1/tenants/{tenant_id}/users/{user_id}` (the tenant's admins, global
/// admins; not on one's own account). Disabling ends every session of the user (they
/// appear in the gateways' revocation feed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// Role in the tenant.
    pub role: Role,
    /// Disable (true) or enable (false) the account.
    #[serde(default)]
    pub disabled: bool,
}

/// `GET /api/v1/tenants/{tenant_id}/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    /// Users by email.
    pub users: Vec<User>,
}

/// `POST /api/v1/tenants/{tenant_id}/users/{user_id}/password` (the tenant's admins,
/// global admins; not on one's own account): sets a one-time password. The user must
/// change it at the next login; every session of the user ends (they appear in the
/// gateways' revocation feed).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The one-time password, 12-1024 bytes; omitted: generated and returned once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: Option<String>,
}

impl std::fmt::Debug for ResetPasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetPasswordRequest")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `POST /api/v1/tenants/{tenant_id}/users/{user_id}/password` response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetPasswordResponse {
    /// The user (now `password_change_required`).
    pub user: User,
    /// The generated one-time password, shown only here (absent when the request gave
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
    /// Login sessions ended.
    pub sessions_revoked: u64,
}

impl std::fmt::Debug for ResetPasswordResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetPasswordResponse")
            .field("user", &self.user)
            .field(
                "one_time_password",
                &self.one_time_password.as_ref().map(|_| "***"),
            )
            .field("sessions_revoked", &self.sessions_revoked)
            .finish()
    }
}
