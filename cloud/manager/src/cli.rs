//! Command line: `outband-manager [serve flags]`, `outband-manager admin create`,
//! `outband-manager keys rotate`. Database flags apply to every subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Database};

/// outband manager.
#[derive(Debug, Parser)]
#[command(name = "outband-manager", version, about)]
pub struct Cli {
    /// Subcommand (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Database selection.
    #[command(flatten)]
    pub db: DbArgs,
    /// Server flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Where the data is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// SQLite data directory (created on first start).
    #[arg(long, global = true, default_value = "manager-data")]
    pub data_dir: PathBuf,
    /// Database URL (`postgres://user@host/db`); overrides --data-dir for the data.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Key file for BMC credentials at rest (default: DATA_DIR/credential.key,
    /// created mode 0600 on first start). Several managers on one database need the
    /// same file.
    #[arg(long, global = true)]
    pub credential_key_file: Option<PathBuf>,
}

impl DbArgs {
    /// The database setting.
    pub fn database(&self) -> Database {
        match &self.database_url {
            Some(url) => Database::Url(url.clone()),
            None => Database::SqliteDir(self.data_dir.clone()),
        }
    }
}

/// Flags of the server.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP listen address (port 0: any free port, see --ready-file).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first; needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address. Only behind a TLS-terminating proxy
    /// (with --trusted-proxy): passwords and tokens would otherwise cross the network
    /// in clear. Gateway calls are still refused unless the client's own connection was
    /// encrypted (TLS to us, a loopback peer, or a trusted proxy's X-Forwarded-Proto:
    /// https).
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_plain_http: bool,
    /// A proxy (address or CIDR, repeatable) whose X-Forwarded-For and
    /// X-Forwarded-Proto are believed. Requests from anyone else: headers ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// Time a TLS client gets for its handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at most.
    #[arg(long, default_value_t = 64)]
    pub max_handshakes: usize,
    /// TLS handshakes in progress from one address (IPv6: one /64) at most.
    #[arg(long, default_value_t = 8)]
    pub max_handshakes_per_ip: usize,
    /// Write {"http_addr": ...} here once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// JWT issuer (`iss`).
    #[arg(long, default_value = "outband-manager")]
    pub issuer: String,
    /// JWT audience (`aud`).
    #[arg(long, default_value = "outband")]
    pub audience: String,
    /// Access token lifetime.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,
    /// How long a rotated-out signing key keeps verifying.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub key_overlap: Duration,
    /// Failed logins per account before a lockout.
    #[arg(long, default_value_t = 5)]
    pub account_failure_limit: i64,
    /// Failed logins per source address before a lockout.
    #[arg(long, default_value_t = 50)]
    pub ip_failure_limit: i64,
    /// Lockout duration once a failure limit is hit.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub lockout: Duration,
    /// Password hashes (argon2id, ~50 ms of a core each) at once; default: half the
    /// cores, at least one.
    #[arg(long)]
    pub argon2_concurrency: Option<usize>,
    /// Logins waiting for a hashing slot at most; more are answered 503 busy at once.
    #[arg(long, default_value_t = crate::config::DEFAULT_ARGON2_QUEUE)]
    pub argon2_queue: usize,
    /// Longest wait for a hashing slot before 503 busy.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub argon2_wait: Duration,
    /// Time a client gets to send a request's headers (and an idle connection its next
    /// request).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Open HTTP connections at most.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Do not create admin@localhost on first start.
    #[arg(long)]
    pub no_bootstrap_admin: bool,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a global admin. Password: from --password-file (`-` = stdin), or a
    /// generated one-time password printed once.
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// File holding the password (first line), `-` for stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Give an existing account a one-time password (from --password-file, or a
    /// generated one printed once): it must be changed at the next login, and every
    /// session of the account ends. For a global admin who lost theirs.
    ResetPassword {
        /// Email address.
        #[arg(long)]
        email: String,
        /// File holding the password (first line), `-` for stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// `keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; older keys verify for --key-overlap more.
    Rotate {
        /// How long the old keys keep verifying.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: Duration,
    },
    /// Re-encrypt every stored BMC credential under the first key of
    /// --credential-key-file (after putting a new key first).
    RewrapCredentials,
}

impl Cli {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Config {
        let s = &self.serve;
        let mut c = Config {
            database: self.db.database(),
            listen: s.listen,
            tls: s
                .tls_cert
                .clone()
                .zip(s.tls_key.clone())
                .map(|(cert, key)| crate::tls::TlsFiles { cert, key }),
            insecure_plain_http: s.insecure_plain_http,
            trusted_proxies: s.trusted_proxies.clone(),
            ready_file: s.ready_file.clone(),
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            access_ttl: s.access_ttl,
            key_overlap: s.key_overlap,
            bootstrap_admin: !s.no_bootstrap_admin,
            credential_key_file: self
                .db
                .credential_key_file
                .clone()
                .unwrap_or_else(|| self.db.data_dir.join("credential.key")),
            ..Config::default()
        };
        c.throttle.account_limit = s.account_failure_limit;
        c.throttle.ip_limit = s.ip_failure_limit;
        c.throttle.lockout = s.lockout;
        if let Some(n) = s.argon2_concurrency {
            c.argon2_concurrency = n.max(1);
        }
        c.argon2_queue = s.argon2_queue;
        c.argon2_wait = s.argon2_wait;
        c.limits.header_read_timeout = s.header_read_timeout;
        c.limits.max_connections = s.max_connections;
        c.limits.handshake_timeout = s.handshake_timeout;
        c.limits.max_handshakes = s.max_handshakes;
        c.limits.max_handshakes_per_ip = s.max_handshakes_per_ip;
        c
    }
}
