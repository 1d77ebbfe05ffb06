//! The outband manager: users, login, JWT issuance (EdDSA, JWKS, rotation), refresh
//! tokens with rotation and reuse detection, login throttling, tenants and roles, the
//! server inventory with encrypted BMC credentials, gateway registration and session
//! authorization, agent adoption and an append-only audit log, on SQLite (default,
//! zero set-up) or PostgreSQL (several replicas).
//!
//! Layout:
//! - [`config`]: settings with embedded defaults; [`cli`]: flags and subcommands.
//! - [`store`]: the database (sqlx `Any`, per-backend migrations) — one module per table.
//! - [`password`]: argon2id with a concurrency cap; [`ids`]: random ids, token hashing, clock.
//! - [`jwt`]: strict EdDSA JWS signing and verification (no I/O); [`keys`]: key set,
//!   cache and rotation.
//! - [`auth`]: login, refresh, logout; [`authz`]: the authorization function;
//!   [`users`]: user creation and the first-start admin.
//! - [`inventory`]: endpoint URL and fingerprint checks; [`secrets`]: BMC credentials
//!   at rest (AES-256-GCM, key file); [`session_authz`]: the gateways' question.
//! - [`http`]: the REST API; [`error`]: error codes and their HTTP status;
//!   [`metrics`]: counters; [`serve`]: the accept loop (timeouts, connection cap);
//!   [`tls`]: the HTTPS listener; [`proxy`]: client address and scheme behind
//!   trusted proxies.
//!
//! [`run`] takes a bound listener and a shutdown future, so tests bind port 0.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit_limit;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod inventory;
pub mod jwt;
pub mod keys;
pub mod manager;
pub mod metrics;
pub mod password;
pub mod proxy;
pub mod secrets;
pub mod serve;
pub mod session_authz;
pub mod store;
pub mod tls;
pub mod users;

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

pub use config::Config;
pub use manager::Manager;

use crate::config::Database;
use crate::ids::Clock;
use crate::store::{Store, StoreError};

/// Why the manager could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Invalid settings.
    #[error("invalid configuration")]
    Config(#[from] config::ConfigError),
    /// The data directory could not be created.
    #[error("creating data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Database failure.
    #[error("opening the database")]
    Store(#[from] StoreError),
    /// Signing-key setup failed.
    #[error("setting up signing keys")]
    Keys(#[from] keys::KeyError),
    /// Password hashing setup failed.
    #[error("setting up password hashing")]
    Password(#[from] password::PasswordError),
    /// The TLS certificate or key is unusable.
    #[error("TLS listener")]
    Tls(#[from] tls::TlsError),
    /// The credential key file is unusable, or lacks keys the database uses.
    #[error("BMC credential keys")]
    Secrets(#[from] secrets::SecretError),
    /// First-start admin creation failed.
    #[error("creating the first admin")]
    Bootstrap(#[from] users::CreateUserError),
    /// I/O on the listener or the ready file.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Contents of the `--ready-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// HTTP listener address.
    pub http_addr: String,
}

/// Opens the configured database (creating the SQLite data directory, mode 0700).
pub async fn open_store(database: &Database) -> Result<Store, ManagerError> {
    match database {
        Database::Url(url) => Ok(Store::connect(url).await?),
        Database::SqliteDir(dir) => {
            create_private_dir(dir).map_err(|source| ManagerError::DataDir {
                path: dir.clone(),
                source,
            })?;
            let dir = std::fs::canonicalize(dir).map_err(|source| ManagerError::DataDir {
                path: dir.clone(),
                source,
            })?;
            Ok(Store::open_sqlite(&dir.join("manager.db")).await?)
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("ready file path has no file name"))?;
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs the manager on `listener` until `shutdown` completes: opens the store, makes
/// sure a signing key exists, creates the first admin if there is no user (printing
/// its one-time password to stderr), serves the API.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ManagerError> {
    config.validate()?;
    let mut config = config;
    // The address actually bound: plain HTTP only on loopback unless allowed.
    if let Ok(addr) = listener.local_addr() {
        config.listen = addr;
    }
    config.validate_listener(config.listen)?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::TlsReloader::load)
        .transpose()?;
    let store = open_store(&config.database).await?;
    let clock = Clock::default();
    if config.bootstrap_admin
        && let Some(password) = users::bootstrap_admin(&store, &clock).await?
    {
        eprintln!(
            "outband-manager: first start: created global admin {} with one-time password: {password}",
            users::BOOTSTRAP_EMAIL
        );
    }
    let manager = Manager::new(store.clone(), config.clone(), clock)?;
    manager.keys.ensure_key().await?;
    manager.check_credential_keys().await?;

    let addr: SocketAddr = listener.local_addr().map_err(|source| ManagerError::Io {
        what: "reading listener address".into(),
        source,
    })?;
    let app = http::router(manager.clone());
    if let Some(path) = &config.ready_file {
        let info = ReadyInfo {
            http_addr: addr.to_string(),
        };
        let json = serde_json::to_vec_pretty(&info).expect("plain struct serializes");
        write_atomic(path, &json).map_err(|source| ManagerError::Io {
            what: format!("writing ready file {}", path.display()),
            source,
        })?;
    }
    tracing::info!(http_addr = %addr, tls = tls.is_some(), backend = ?store.backend(), "manager ready");
    let cancel = tokio_util::sync::CancellationToken::new();
    let housekeeping = tokio::spawn(manager.housekeeping_loop(cancel.clone()));
    if let Some(t) = &tls {
        tokio::spawn(t.clone().reload_on_sighup(cancel.clone()));
    }
    serve::serve(listener, app, tls, config.limits, shutdown).await;
    cancel.cancel();
    let _ = housekeeping.await;
    store.close().await;
    Ok(())
}
