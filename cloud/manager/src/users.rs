//! Creating users (the `admin create` command) and the first-start admin.

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
    let email = normalize_email(email);
    if email.is_empty() || email.len() > MAX_EMAIL_LEN || !email.contains('@') {
        return Err(CreateUserError::InvalidEmail);
    }
    if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(CreateUserError::WeakPassword);
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash_blocking(&password))
        .await
        .map_err(|_| PasswordError::Join)??;
    let user = UserRow {
        id: ids::new_id("usr"),
        email,
        password_hash: hash,
        is_global_admin: global_admin,
        created_at: clock.now(),
        disabled_at: None,
        password_must_change: one_time,
    };
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
            actor_id: Some(user.id.clone()),
            actor_email: Some(user.email.clone()),
            target: Some(user.id.clone()),
            detail: Some(how.into()),
            ..NewAudit::default()
        })
        .await
        .map_err(CreateUserError::Store)?;
    Ok(user)
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
