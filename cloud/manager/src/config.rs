//! Manager settings. The binary fills them from flags ([`crate::cli`]); every field has
//! an embedded default so `outband-manager` with no arguments runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite file `manager.db` in this directory (created with mode 0700).
    SqliteDir(PathBuf),
    /// A `postgres://` (or `sqlite:`) URL.
    Url(String),
}

/// Failed-login throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// Failures per account (email as typed, lower-cased) per window before a lockout.
    pub account_limit: i64,
    /// Failures per source address per window before a lockout.
    pub ip_limit: i64,
    /// Counting window.
    pub window: Duration,
    /// Lockout once a limit is reached.
    pub lockout: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            account_limit: 5,
            ip_limit: 50,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

/// Default [`Config::argon2_queue`].
pub const DEFAULT_ARGON2_QUEUE: usize = 16;

/// Everything the manager needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Storage.
    pub database: Database,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Serve HTTPS with these PEM files ([`crate::tls`]).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating
    /// proxy).
    pub insecure_plain_http: bool,
    /// Peers whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed ([`crate::proxy`]).
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// Write `{"http_addr": ...}` here (atomically) once listening.
    pub ready_file: Option<PathBuf>,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime (each rotation starts a new one, capped by the session).
    pub refresh_ttl: Duration,
    /// Absolute session lifetime (log in again after this).
    pub session_ttl: Duration,
    /// How long a rotated-out signing key keeps verifying (at least the access TTL).
    pub key_overlap: Duration,
    /// Concurrent argon2 computations (default: half the cores, at least one).
    pub argon2_concurrency: usize,
    /// Callers waiting for an argon2 slot at most; more are answered `busy` at once.
    pub argon2_queue: usize,
    /// Longest wait for an argon2 slot before answering `busy`.
    pub argon2_wait: Duration,
    /// Login throttle.
    pub throttle: Throttle,
    /// Create `admin@localhost` with a printed one-time password when no user exists.
    pub bootstrap_admin: bool,
    /// HTTP connection limits.
    pub limits: crate::serve::Limits,
    /// Key file for BMC credentials at rest (created mode 0600 if missing; see
    /// [`crate::secrets`]).
    pub credential_key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: Database::SqliteDir(PathBuf::from("manager-data")),
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            tls: None,
            insecure_plain_http: false,
            trusted_proxies: Vec::new(),
            ready_file: None,
            issuer: "outband-manager".into(),
            audience: "outband".into(),
            access_ttl: Duration::from_secs(10 * 60),
            refresh_ttl: Duration::from_secs(14 * 24 * 3600),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            key_overlap: Duration::from_secs(24 * 3600),
            argon2_concurrency: crate::password::default_concurrency(),
            argon2_queue: DEFAULT_ARGON2_QUEUE,
            argon2_wait: Duration::from_secs(10),
            throttle: Throttle::default(),
            bootstrap_admin: true,
            limits: crate::serve::Limits::default(),
            credential_key_file: PathBuf::from("manager-data/credential.key"),
        }
    }
}

/// Invalid settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Config {
    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() || self.access_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("access token lifetime must be 1s..1h"));
        }
        if self.key_overlap < self.access_ttl {
            return Err(ConfigError::Invalid(
                "key overlap must be at least the access token lifetime",
            ));
        }
        if self.refresh_ttl.is_zero() || self.session_ttl < self.refresh_ttl {
            return Err(ConfigError::Invalid(
                "session lifetime must be at least the refresh token lifetime",
            ));
        }
        if self.throttle.account_limit < 1 || self.throttle.ip_limit < 1 {
            return Err(ConfigError::Invalid("throttle limits must be at least 1"));
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "issuer and audience must not be empty",
            ));
        }
        Ok(())
    }

    /// Checks the address the listener is bound to: plain HTTP only on loopback,
    /// unless [`Config::insecure_plain_http`].
    pub fn validate_listener(&self, bound: SocketAddr) -> Result<(), ConfigError> {
        if self.tls.is_none() && !self.insecure_plain_http && !bound.ip().is_loopback() {
            return Err(ConfigError::Invalid(
                "refusing plain HTTP on a non-loopback address: give --tls-cert and --tls-key, \
                 or --insecure-plain-http behind a TLS-terminating proxy",
            ));
        }
        Ok(())
    }
}
