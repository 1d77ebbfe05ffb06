//! Authorization: the one function every authenticated endpoint calls.
//!
//! Today only global-admin actions exist. Tenants, roles and per-server permissions
//! (issue 3's RBAC) extend [`Action`] and [`authorize`]; every denial is audited here.

use crate::error::{ApiError, ErrorCode};
use crate::http::bearer::AuthUser;
use crate::manager::Manager;
use crate::metrics::inc;
use crate::store::audit::NewAudit;

/// Something a user wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the audit log.
    ReadAudit,
    /// Rotate the JWT signing key.
    RotateKeys,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::ReadAudit => "read_audit",
            Action::RotateKeys => "rotate_keys",
        }
    }
}

/// Allows or denies `action` for `user`; denials are audited and answered `forbidden`.
pub async fn authorize(m: &Manager, user: &AuthUser, action: Action) -> Result<(), ApiError> {
    let allowed = match action {
        Action::ReadAudit | Action::RotateKeys => user.user.is_global_admin,
    };
    if allowed {
        return Ok(());
    }
    inc(&m.metrics.authz_denied);
    m.audit(NewAudit {
        action: "authz",
        outcome: "denied",
        actor_id: Some(user.user.id.clone()),
        actor_email: Some(user.user.email.clone()),
        source_ip: Some(user.source_ip.clone()),
        target: Some(action.name().into()),
        ..NewAudit::default()
    })
    .await?;
    Err(ApiError::new(ErrorCode::Forbidden, "not allowed"))
}
