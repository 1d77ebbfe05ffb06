//! Creating users (the `admin create` command) and the first-start admin.

use outband_api::tenants::Role;

use crate::auth::{MAX_EMAIL_LEN, normalize_email};
use crate::ids::{self, Clock};
use crate::password::{self, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, PasswordError};
use crate::store::audit::NewAudit;
use crate::store::users::UserRow;
use crate::store::{Store, StoreError};

/// Email of the admin created on first start.
pub const BOOTSTRAP_EMAIL: &str = "admin@localhost";

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// The email is empty, too long or has no `@`.
    #[error("invalid email address")]
    InvalidEmail,
    /// The password is too short or too long.
    #[error("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes")]
    WeakPassword,
    /// A user with this email exists.
    #[error("a user with this email already exists")]
    Exists,
    /// Hashing failed.
    #[error("hashing the password")]
    Hash(#[from] PasswordError),
    /// Storage failed.
    #[error("storing the user")]
    Store(#[source] StoreError),
}

/// Checks a new account's email and password; returns the normalized email.
pub fn check_new_user(email: &str, password: &str) -> Result<String, CreateUserError> {
    let email = normalize_email(email);
    if email.is_empty() || email.len() > MAX_EMAIL_LEN || !email.contains('@') {
        return Err(CreateUserError::InvalidEmail);
    }
    if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(CreateUserError::WeakPassword);
    }
    Ok(email)
}

/// Who created an account (for the audit entry); `None`: the CLI or first start.
#[derive(Debug, Clone, Default)]
pub struct Creator {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Source address.
    pub source_ip: String,
}

/// Stores a checked, hashed account and audits it (`user_create`, detail `how`).
pub async fn store_user(
    store: &Store,
    clock: &Clock,
    user: UserRow,
    how: &str,
    creator: Option<&Creator>,
) -> Result<UserRow, CreateUserError> {
    match store.insert_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(CreateUserError::Exists),
        Err(e) => return Err(CreateUserError::Store(e)),
    }
    store
        .audit_append(&NewAudit {
            at_ms: clock.now_ms(),
            action: "user_create",
            outcome: "success",
            actor_id: Some(creator.map_or(&user.id, |c| &c.id).clone()),
            actor_email: Some(creator.map_or(&user.email, |c| &c.email).clone()),
            source_ip: creator.map(|c| c.source_ip.clone()),
            target: Some(user.id.clone()),
            detail: Some(match (&user.tenant_id, user.role) {
                (Some(t), Some(r)) => format!("{how} {t} {}", r.as_str()),
                _ => how.into(),
            }),
        })
        .await
        .map_err(CreateUserError::Store)?;
    Ok(user)
}

/// A user row for a new account (fresh id, now).
pub fn new_user_row(
    clock: &Clock,
    email: String,
    password_hash: String,
    global_admin: bool,
    one_time: bool,
    tenant: Option<(String, Role)>,
) -> UserRow {
    let (tenant_id, role) = tenant.map_or((None, None), |(t, r)| (Some(t), Some(r)));
    UserRow {
        id: ids::new_id("usr"),
        email,
        password_hash,
        is_global_admin: global_admin,
        created_at: clock.now(),
        disabled_at: None,
        password_must_change: one_time,
        tenant_id,
        role,
    }
}

/// Creates a user (hashing on the blocking pool: for the CLI and first start).
/// `one_time`: the password must be changed at first login. `how` is recorded in the
/// audit log.
pub async fn create_user(
    store: &Store,
    clock: &Clock,
    email: &str,
    password: &str,
    global_admin: bool,
    one_time: bool,
    how: &str,
) -> Result<UserRow, CreateUserError> {
    create_user_in(
        store,
        clock,
        email,
        password,
        global_admin,
        one_time,
        None,
        how,
    )
    .await
}

/// [`create_user`] with a tenant and role.
#[allow(clippy::too_many_arguments)]
pub async fn create_user_in(
    store: &Store,
    clock: &Clock,
    email: &str,
    password: &str,
    global_admin: bool,
    one_time: bool,
    tenant: Option<(String, Role)>,
    how: &str,
) -> Result<UserRow, CreateUserError> {
    let email = check_new_user(email, password)?;
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&password))
        .await
        .map_err(|_| PasswordError::Join)??;
    let row = new_user_row(clock, email, hash, global_admin, one_time, tenant);
    store_user(store, clock, row, how, None).await
}

/// Sets a one-time password for the account with this email (the CLI's
/// `admin reset-password`, e.g. for a global admin who lost theirs): the user must
/// change it at the next login, every session ends (revocation feed), and it is
/// audited (`user_password_reset`, actor `cli`). Returns the user and the sessions
/// revoked; `Ok(None)`: no such account.
pub async fn reset_password_offline(
    store: &Store,
    clock: &Clock,
    email: &str,
    password: &str,
) -> Result<Option<(UserRow, u64)>, CreateUserError> {
    let email = check_new_user(email, password)?;
    let Some(user) = store
        .user_by_email(&email)
        .await
        .map_err(CreateUserError::Store)?
    else {
        return Ok(None);
    };
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&password))
        .await
        .map_err(|_| PasswordError::Join)??;
    let Some(revoked) = store
        .reset_password(&user.id, &hash, clock.now())
        .await
        .map_err(CreateUserError::Store)?
    else {
        return Ok(None);
    };
    store
        .audit_append(&crate::store::audit::NewAudit {
            at_ms: clock.now_ms(),
            action: "user_password_reset",
            outcome: "success",
            actor_id: Some("cli".into()),
            target: Some(user.id.clone()),
            detail: Some(format!("cli sessions_revoked={revoked}")),
            ..Default::default()
        })
        .await
        .map_err(CreateUserError::Store)?;
    Ok(Some((user, revoked)))
}

/// A generated one-time password (144 random bits).
pub fn generate_password() -> String {
    ids::random_token(18)
}

/// On first start (no users), creates [`BOOTSTRAP_EMAIL`] as global admin with a
/// generated password and returns it, to be shown once. Another replica winning the
/// race is fine (returns `None`).
pub async fn bootstrap_admin(
    store: &Store,
    clock: &Clock,
) -> Result<Option<String>, CreateUserError> {
    if store.count_users().await.map_err(CreateUserError::Store)? > 0 {
        return Ok(None);
    }
    let password = generate_password();
    match create_user(
        store,
        clock,
        BOOTSTRAP_EMAIL,
        &password,
        true,
        true,
        "bootstrap",
    )
    .await
    {
        Ok(_) => Ok(Some(password)),
        Err(CreateUserError::Exists) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The API view of a user (no hash).
pub fn to_api(u: &UserRow) -> outband_api::tenants::User {
    outband_api::tenants::User {
        id: u.id.clone(),
        email: u.email.clone(),
        tenant_id: u.tenant_id.clone(),
        role: u.role,
        is_global_admin: u.is_global_admin,
        password_change_required: u.password_must_change,
        disabled: u.disabled_at.is_some(),
        created_at: u.created_at,
    }
}
