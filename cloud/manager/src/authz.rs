//! Authorization: the one function every authenticated endpoint calls, [`authorize`].
//!
//! Rules ([`decide`], pure, unit-tested as a matrix):
//! - Global admins may do everything.
//! - Global actions (audit log, keys, creating tenants, gateways) are for global admins.
//! - Everything else belongs to a tenant. A user may act on an object only when it
//!   belongs to the user's own tenant and the user's role has the action's
//!   [`Action::min_role`]. An object of another tenant is answered exactly like one that does
//!   not exist (`404 not_found`, same code path: one lookup by id, then this function,
//!   which audits both), so no user learns anything about another tenant's objects.
//!   Lists are filtered in the query by the [`Scope`] this function returns, so counts
//!   do not leak either.
//! - Same tenant, role too low: `403 forbidden` (the user may already see the object).
//!
//! Every denial is audited (`action = authz`, `outcome = denied`, target = the object
//! id or the action, detail = `<action> <reason>`) and counted.

use outband_api::tenants::Role;

use crate::error::{ApiError, ErrorCode};
use crate::http::bearer::AuthUser;
use crate::manager::Manager;
use crate::metrics::inc;
use crate::store::audit::NewAudit;
use crate::store::users::UserRow;

/// Something a user wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the audit log (global).
    ReadAudit,
    /// Rotate the JWT signing key (global).
    RotateKeys,
    /// Create tenants (global).
    CreateTenant,
    /// Delete tenants (global).
    DeleteTenant,
    /// Reset, disable or delete an account that is a global admin (global).
    ManageGlobalAdmins,
    /// See a tenant (its own members).
    ViewTenant,
    /// List, create and change the users of a tenant (tenant admins).
    ManageUsers,
    /// List and show servers.
    ViewServer,
    /// Create, change and delete servers (tenant admins).
    ManageServers,
    /// Read power status.
    PowerStatus,
    /// Power on/off/cycle/reset.
    PowerControl,
    /// Serial console (interactive).
    SerialConsole,
    /// Graphical console, view only.
    GraphicalView,
    /// Graphical console with keyboard and mouse.
    GraphicalInteractive,
    /// Create and list gateways (global).
    ManageGateways,
    /// See and decide on agents waiting for adoption, create join tokens (tenant admins
    /// for their tenant; the pending list is global-admin only).
    AdoptAgents,
    /// Reject a pending agent (global): a pending agent belongs to no tenant yet, and
    /// rejection is final for every tenant, so no tenant admin may decide it for all.
    RejectAgents,
}

impl Action {
    /// Stable name (audit, logs).
    pub fn name(self) -> &'static str {
        match self {
            Action::ReadAudit => "read_audit",
            Action::RotateKeys => "rotate_keys",
            Action::CreateTenant => "create_tenant",
            Action::DeleteTenant => "delete_tenant",
            Action::ManageGlobalAdmins => "manage_global_admins",
            Action::ViewTenant => "view_tenant",
            Action::ManageUsers => "manage_users",
            Action::ViewServer => "view_server",
            Action::ManageServers => "manage_servers",
            Action::PowerStatus => "power_status",
            Action::PowerControl => "power_control",
            Action::SerialConsole => "serial_console",
            Action::GraphicalView => "graphical_view",
            Action::GraphicalInteractive => "graphical_interactive",
            Action::ManageGateways => "manage_gateways",
            Action::AdoptAgents => "adopt_agents",
            Action::RejectAgents => "reject_agents",
        }
    }

    /// The least role that may do this inside its own tenant; `None`: global admins
    /// only.
    pub fn min_role(self) -> Option<Role> {
        match self {
            Action::ReadAudit
            | Action::RotateKeys
            | Action::CreateTenant
            | Action::DeleteTenant
            | Action::ManageGlobalAdmins
            | Action::ManageGateways
            | Action::RejectAgents => None,
            Action::ViewTenant
            | Action::ViewServer
            | Action::PowerStatus
            | Action::GraphicalView => Some(Role::Viewer),
            Action::PowerControl | Action::SerialConsole | Action::GraphicalInteractive => {
                Some(Role::Operator)
            }
            Action::ManageUsers | Action::ManageServers | Action::AdoptAgents => Some(Role::Admin),
        }
    }
}

/// What the action is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On<'a> {
    /// Nothing tenant-specific (global administration).
    Global,
    /// A list: the answer is the [`Scope`] to filter the query by.
    List,
    /// One object, looked up by `id` without any tenant filter: `tenant` is the
    /// tenant it belongs to (a tenant's tenant is itself), `None` when there is no such
    /// object.
    Object {
        /// The id the caller named.
        id: &'a str,
        /// Owning tenant, or `None`: not found.
        tenant: Option<&'a str>,
    },
}

/// Which rows a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's (global admins).
    All,
    /// Only this tenant's.
    Tenant(String),
}

impl Scope {
    /// The tenant filter for a query (`None`: no filter).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Answered `404 not_found`: no such object, or another tenant's.
    NotFound(&'static str),
    /// Answered `403 forbidden`.
    Forbidden(&'static str),
}

/// The decision, without side effects.
pub fn decide(user: &UserRow, action: Action, on: On<'_>) -> Result<Scope, Denial> {
    if user.is_global_admin {
        return match on {
            On::Object { tenant: None, .. } => Err(Denial::NotFound("no_such_object")),
            _ => Ok(Scope::All),
        };
    }
    let Some(min) = action.min_role() else {
        // Global-admin actions: the objects are global too (gateways, agents), so a
        // tenant user learns nothing from a 403.
        return Err(Denial::Forbidden("global_admin_only"));
    };
    let (Some(own), Some(role)) = (user.tenant_id.as_deref(), user.role) else {
        return match on {
            On::Object { .. } => Err(Denial::NotFound("no_tenant")),
            _ => Err(Denial::Forbidden("no_tenant")),
        };
    };
    match on {
        On::Object { tenant: None, .. } => Err(Denial::NotFound("no_such_object")),
        On::Object {
            tenant: Some(t), ..
        } if t != own => Err(Denial::NotFound("other_tenant")),
        _ if role < min => Err(Denial::Forbidden("role")),
        _ => Ok(Scope::Tenant(own.to_owned())),
    }
}

/// Allows or denies `action` on `on` for `user`: the one authorization function of
/// every endpoint. Denials are audited, counted and answered `not_found` (foreign or
/// missing objects) or `forbidden`.
pub async fn authorize(
    m: &Manager,
    user: &AuthUser,
    action: Action,
    on: On<'_>,
) -> Result<Scope, ApiError> {
    authorize_user(m, &user.user, &user.source_ip, None, action, on).await
}

/// [`authorize`] for a user identified some other way than a bearer token of this
/// request (a gateway asking on the user's behalf: `via` names the gateway in the
/// audit entry).
pub async fn authorize_user(
    m: &Manager,
    user: &UserRow,
    source_ip: &str,
    via: Option<&str>,
    action: Action,
    on: On<'_>,
) -> Result<Scope, ApiError> {
    let denial = match decide(user, action, on) {
        Ok(scope) => return Ok(scope),
        Err(d) => d,
    };
    let (reason, error) = match denial {
        Denial::NotFound(r) => (r, ApiError::new(ErrorCode::NotFound, "no such object")),
        Denial::Forbidden(r) => (r, ApiError::new(ErrorCode::Forbidden, "not allowed")),
    };
    inc(&m.metrics.authz_denied);
    let target = match on {
        On::Object { id, .. } => id.to_owned(),
        _ => action.name().to_owned(),
    };
    let via = via.map(|g| format!(" via {g}")).unwrap_or_default();
    m.audit(NewAudit {
        action: "authz",
        outcome: "denied",
        actor_id: Some(user.id.clone()),
        actor_email: Some(user.email.clone()),
        source_ip: Some(source_ip.to_owned()),
        target: Some(target),
        detail: Some(format!("{} {reason}{via}", action.name())),
        ..NewAudit::default()
    })
    .await?;
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(global: bool, tenant: Option<&str>, role: Option<Role>) -> UserRow {
        UserRow {
            id: "usr_x".into(),
            email: "x@example.com".into(),
            password_hash: String::new(),
            is_global_admin: global,
            created_at: 0,
            disabled_at: None,
            password_must_change: false,
            tenant_id: tenant.map(Into::into),
            role,
        }
    }

    const SERVER_ACTIONS: [Action; 7] = [
        Action::ViewServer,
        Action::PowerStatus,
        Action::GraphicalView,
        Action::PowerControl,
        Action::SerialConsole,
        Action::GraphicalInteractive,
        Action::ManageServers,
    ];

    #[test]
    fn role_matrix_on_own_tenant_objects() {
        let own = On::Object {
            id: "srv_1",
            tenant: Some("ten_a"),
        };
        // How many of SERVER_ACTIONS (in order) each role may do.
        for (role, allowed) in [(Role::Viewer, 3), (Role::Operator, 6), (Role::Admin, 7)] {
            let u = user(false, Some("ten_a"), Some(role));
            for (i, a) in SERVER_ACTIONS.iter().enumerate() {
                let got = decide(&u, *a, own);
                if i < allowed {
                    assert_eq!(got, Ok(Scope::Tenant("ten_a".into())), "{role:?} {a:?}");
                } else {
                    assert_eq!(got, Err(Denial::Forbidden("role")), "{role:?} {a:?}");
                }
            }
            assert_eq!(
                decide(&u, Action::ManageUsers, own).is_ok(),
                role == Role::Admin
            );
        }
    }

    #[test]
    fn other_tenants_objects_look_missing_to_every_role() {
        let foreign = On::Object {
            id: "srv_1",
            tenant: Some("ten_b"),
        };
        let missing = On::Object {
            id: "srv_2",
            tenant: None,
        };
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            let u = user(false, Some("ten_a"), Some(role));
            for a in SERVER_ACTIONS {
                assert!(matches!(decide(&u, a, foreign), Err(Denial::NotFound(_))));
                assert!(matches!(decide(&u, a, missing), Err(Denial::NotFound(_))));
            }
        }
    }

    #[test]
    fn global_actions_and_lists() {
        let admin = user(false, Some("ten_a"), Some(Role::Admin));
        for a in [
            Action::ReadAudit,
            Action::RotateKeys,
            Action::CreateTenant,
            Action::DeleteTenant,
            Action::ManageGlobalAdmins,
            Action::ManageGateways,
            Action::RejectAgents,
        ] {
            assert_eq!(
                decide(&admin, a, On::Global),
                Err(Denial::Forbidden("global_admin_only"))
            );
            assert_eq!(
                decide(&user(true, None, None), a, On::Global),
                Ok(Scope::All)
            );
        }
        assert_eq!(
            decide(&admin, Action::ViewServer, On::List),
            Ok(Scope::Tenant("ten_a".into()))
        );
        assert_eq!(
            decide(&user(true, None, None), Action::ViewServer, On::List),
            Ok(Scope::All)
        );
        // No tenant, no global flag: nothing.
        let nobody = user(false, None, None);
        assert_eq!(
            decide(&nobody, Action::ViewServer, On::List),
            Err(Denial::Forbidden("no_tenant"))
        );
        // A tenant without a (known) role: nothing either.
        let unknown_role = user(false, Some("ten_a"), None);
        assert!(decide(&unknown_role, Action::ViewServer, On::List).is_err());
    }
}
