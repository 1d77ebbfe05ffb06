//! Command line and config file, merged into a validated [`Config`].
//!
//! Precedence: command line flag, then the TOML file given with `--config`, then the
//! built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::manager::jwks::JwksSettings;

/// Raw command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "outband-gateway",
    version,
    about = "outband gateway: agent tunnels and relays"
)]
pub struct Cli {
    /// TOML config file (keys as the long flags, with `_` for `-`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address agents connect to (TLS). Default 127.0.0.1:7443.
    #[arg(long, value_name = "ADDR")]
    pub agent_listen: Option<SocketAddr>,
    /// Address of the operator HTTP API (no auth yet: keep it on loopback). Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Directory for the dev PKI and other state. Default ./gateway-state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Server certificate chain (PEM) for production; without it a dev CA is used.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Once both listeners are bound, write their addresses and the CA path here as JSON.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Heartbeat interval announced to agents, in milliseconds. Default 5000.
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Time allowed for TLS handshake plus hello, in milliseconds. Default 10000.
    #[arg(long, value_name = "MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Most TLS handshakes in progress at once. Default 256.
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// Per-stream receive window the gateway grants, in bytes. Default 262144.
    #[arg(long, value_name = "BYTES")]
    pub window: Option<u32>,
    /// While an agent connection carries more than one stream, the most bytes the
    /// gateway keeps unacknowledged per stream, so a bulk stream cannot queue a
    /// whole window ahead of a console's keystrokes. The gateway adds what 1 Gbit/s
    /// fills in the connection's idle round trip, so long paths keep their
    /// throughput. Default 32768.
    #[arg(long, value_name = "BYTES")]
    pub shared_window: Option<u32>,
    /// The largest receive window a stream's window grows to, in bytes. A lone
    /// stream that moves its whole window every round trip (a long path) gets its
    /// window doubled, up to this; a slow reader never grows its window, so what the
    /// gateway buffers per stream stays bounded. At or below `--window`, windows stay
    /// fixed. Default 8388608.
    #[arg(long, value_name = "BYTES")]
    pub max_window: Option<u32>,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `outband_gateway=debug`. Default info.
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// Base URL of the outband manager (`http://127.0.0.1:8090` or `https://...`).
    /// Without it the gateway runs standalone.
    #[arg(long, value_name = "URL")]
    pub manager_url: Option<String>,
    /// File holding the one-time registration credential (`obgr_...`) from the
    /// manager's admin; read once at start, only needed until the gateway registered.
    #[arg(long, value_name = "PATH")]
    pub registration_credential_file: Option<PathBuf>,
    /// PEM CA certificates trusted for an `https://` manager URL. Default: the system
    /// bundle `/etc/ssl/certs/ca-certificates.crt`.
    #[arg(long, value_name = "PATH")]
    pub manager_ca_file: Option<PathBuf>,
    /// Interval of heartbeats (and revocation polls) to the manager, in milliseconds.
    /// Default 10000.
    #[arg(long, value_name = "MS")]
    pub manager_heartbeat_interval_ms: Option<u64>,
    /// Deadline of one call to the manager (connect, request, response), in
    /// milliseconds. Default 10000.
    #[arg(long, value_name = "MS")]
    pub manager_timeout_ms: Option<u64>,
    /// Address of the user API (access tokens from the manager; needs --manager-url).
    /// Off unless given. Plain HTTP only on loopback; elsewhere it needs --tls-cert.
    #[arg(long, value_name = "ADDR")]
    pub user_listen: Option<SocketAddr>,
    /// Required `iss` of access tokens (the manager's --issuer). Default outband-manager.
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of access tokens (the manager's --audience). Default outband.
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Interval of routine fetches of the manager's JWKS, in milliseconds. Default 300000.
    #[arg(long, value_name = "MS")]
    pub jwks_refresh_interval_ms: Option<u64>,
    /// Least time between two JWKS fetches caused by tokens with an unknown `kid`, in
    /// milliseconds. Default 10000.
    #[arg(long, value_name = "MS")]
    pub jwks_min_refetch_interval_ms: Option<u64>,
}

/// The `--config` TOML file. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Cli::agent_listen`].
    pub agent_listen: Option<SocketAddr>,
    /// See [`Cli::http_listen`].
    pub http_listen: Option<SocketAddr>,
    /// See [`Cli::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// See [`Cli::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Cli::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Cli::ready_file`].
    pub ready_file: Option<PathBuf>,
    /// See [`Cli::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: Option<u64>,
    /// See [`Cli::handshake_timeout_ms`].
    pub handshake_timeout_ms: Option<u64>,
    /// See [`Cli::max_handshakes`].
    pub max_handshakes: Option<usize>,
    /// See [`Cli::window`].
    pub window: Option<u32>,
    /// See [`Cli::shared_window`].
    pub shared_window: Option<u32>,
    /// See [`Cli::max_window`].
    pub max_window: Option<u32>,
    /// See [`Cli::log`].
    pub log: Option<String>,
    /// See [`Cli::manager_url`].
    pub manager_url: Option<String>,
    /// See [`Cli::registration_credential_file`].
    pub registration_credential_file: Option<PathBuf>,
    /// See [`Cli::manager_ca_file`].
    pub manager_ca_file: Option<PathBuf>,
    /// See [`Cli::manager_heartbeat_interval_ms`].
    pub manager_heartbeat_interval_ms: Option<u64>,
    /// See [`Cli::manager_timeout_ms`].
    pub manager_timeout_ms: Option<u64>,
    /// See [`Cli::user_listen`].
    pub user_listen: Option<SocketAddr>,
    /// See [`Cli::jwt_issuer`].
    pub jwt_issuer: Option<String>,
    /// See [`Cli::jwt_audience`].
    pub jwt_audience: Option<String>,
    /// See [`Cli::jwks_refresh_interval_ms`].
    pub jwks_refresh_interval_ms: Option<u64>,
    /// See [`Cli::jwks_min_refetch_interval_ms`].
    pub jwks_min_refetch_interval_ms: Option<u64>,
}

/// Production server certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Agent listener address (used by the binary to bind).
    pub agent_listen: SocketAddr,
    /// HTTP listener address (used by the binary to bind).
    pub http_listen: SocketAddr,
    /// State directory (dev PKI).
    pub state_dir: PathBuf,
    /// Production certificate; `None` means the dev PKI in `state_dir`.
    pub tls: Option<TlsFiles>,
    /// Where to write the ready file.
    pub ready_file: Option<PathBuf>,
    /// Heartbeat interval for agent connections.
    pub heartbeat_interval: Duration,
    /// Deadline for TLS handshake plus hello.
    pub handshake_timeout: Duration,
    /// Concurrent TLS handshakes.
    pub max_handshakes: usize,
    /// Per-stream receive window the gateway grants.
    pub window: u32,
    /// Unacknowledged bytes per stream while streams share a connection.
    pub shared_window: u32,
    /// The largest a stream's receive window grows to.
    pub max_window: u32,
    /// Log filter.
    pub log: String,
    /// The manager connection; `None` = standalone.
    pub manager: Option<ManagerConfig>,
    /// The user API; `None` = off.
    pub user_api: Option<UserApiConfig>,
}

/// The user API listener and what its tokens must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Expected issuer/audience and the JWKS refresh settings.
    pub jwks: JwksSettings,
}

/// Where and how the gateway reaches the manager (outbound only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Base URL, validated: `http` or `https`, a host, no user info, query or fragment;
    /// no trailing `/`.
    pub url: String,
    /// The registration credential file (read once at start).
    pub registration_credential_file: Option<PathBuf>,
    /// CA bundle for `https`.
    pub ca_file: Option<PathBuf>,
    /// Heartbeat (and revocation poll) interval.
    pub heartbeat_interval: Duration,
    /// Deadline of one call.
    pub timeout: Duration,
}

/// Default interval of manager heartbeats.
pub const DEFAULT_MANAGER_HEARTBEAT: Duration = Duration::from_secs(10);
/// Default deadline of one call to the manager.
pub const DEFAULT_MANAGER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            state_dir: PathBuf::from("./gateway-state"),
            tls: None,
            ready_file: None,
            heartbeat_interval: Duration::from_millis(5000),
            handshake_timeout: Duration::from_millis(10_000),
            max_handshakes: 256,
            window: 256 * 1024,
            shared_window: outband_proto::mux::DEFAULT_SHARED_WINDOW,
            max_window: outband_proto::mux::DEFAULT_MAX_WINDOW,
            log: "info".to_owned(),
            manager: None,
            user_api: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("parsing config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

impl Config {
    /// Loads the `--config` file if any and merges it with the command line.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    /// Merges command line over file over defaults, then validates.
    pub fn merge(cli: Cli, file: FileConfig) -> Result<Self, ConfigError> {
        let d = Config::default();
        let user_api = user_api_config(&cli, &file)?;
        let tls_cert = cli.tls_cert.or(file.tls_cert);
        let tls_key = cli.tls_key.or(file.tls_key);
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key must be given together".into(),
                ));
            }
        };
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let cfg = Config {
            agent_listen: cli
                .agent_listen
                .or(file.agent_listen)
                .unwrap_or(d.agent_listen),
            http_listen: cli
                .http_listen
                .or(file.http_listen)
                .unwrap_or(d.http_listen),
            state_dir: cli.state_dir.or(file.state_dir).unwrap_or(d.state_dir),
            tls,
            ready_file: cli.ready_file.or(file.ready_file),
            heartbeat_interval: ms(
                cli.heartbeat_interval_ms.or(file.heartbeat_interval_ms),
                d.heartbeat_interval,
            ),
            handshake_timeout: ms(
                cli.handshake_timeout_ms.or(file.handshake_timeout_ms),
                d.handshake_timeout,
            ),
            max_handshakes: cli
                .max_handshakes
                .or(file.max_handshakes)
                .unwrap_or(d.max_handshakes),
            window: cli.window.or(file.window).unwrap_or(d.window),
            shared_window: cli
                .shared_window
                .or(file.shared_window)
                .unwrap_or(d.shared_window),
            max_window: cli.max_window.or(file.max_window).unwrap_or(d.max_window),
            log: cli.log.or(file.log).unwrap_or(d.log),
            manager: None,
            user_api: None,
        };
        let manager_url = cli.manager_url.or(file.manager_url);
        let credential = cli
            .registration_credential_file
            .or(file.registration_credential_file);
        let ca_file = cli.manager_ca_file.or(file.manager_ca_file);
        let hb = cli
            .manager_heartbeat_interval_ms
            .or(file.manager_heartbeat_interval_ms);
        let timeout = cli.manager_timeout_ms.or(file.manager_timeout_ms);
        let cfg = match manager_url {
            Some(url) => Config {
                manager: Some(ManagerConfig {
                    url: check_manager_url(&url)?,
                    registration_credential_file: credential,
                    ca_file,
                    heartbeat_interval: ms(hb, DEFAULT_MANAGER_HEARTBEAT),
                    timeout: ms(timeout, DEFAULT_MANAGER_TIMEOUT),
                }),
                user_api,
                ..cfg
            },
            None => {
                let stray = [
                    ("user_listen", user_api.is_some()),
                    ("registration_credential_file", credential.is_some()),
                    ("manager_ca_file", ca_file.is_some()),
                    ("manager_heartbeat_interval_ms", hb.is_some()),
                    ("manager_timeout_ms", timeout.is_some()),
                ];
                if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Invalid(format!(
                        "{name} needs manager_url (without it the gateway runs standalone)"
                    )));
                }
                cfg
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.http_listen.ip().is_loopback() {
            return bad(format!(
                "http_listen {} is not a loopback address: the operator API has no \
                 authentication yet, so it may only listen on 127.0.0.1 or [::1]",
                self.http_listen
            ));
        }
        let hb = self.heartbeat_interval.as_millis();
        if !(50..=600_000).contains(&hb) {
            return bad(format!("heartbeat_interval_ms {hb} outside 50..=600000"));
        }
        let hs = self.handshake_timeout.as_millis();
        if !(50..=600_000).contains(&hs) {
            return bad(format!("handshake_timeout_ms {hs} outside 50..=600000"));
        }
        if !(1..=65_536).contains(&self.max_handshakes) {
            return bad(format!(
                "max_handshakes {} outside 1..=65536",
                self.max_handshakes
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.window) {
            return bad(format!("window {} outside 1024..=16777216", self.window));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.shared_window) {
            return bad(format!(
                "shared_window {} outside 1024..=16777216",
                self.shared_window
            ));
        }
        if self.max_window > outband_proto::mux::MAX_WINDOW {
            return bad(format!(
                "max_window {} over {}",
                self.max_window,
                outband_proto::mux::MAX_WINDOW
            ));
        }
        if let Some(u) = &self.user_api {
            if !u.listen.ip().is_loopback() && self.tls.is_none() {
                return bad(format!(
                    "user_listen {} is not a loopback address: give tls_cert and tls_key \
                     (access tokens must not cross a network in clear text)",
                    u.listen
                ));
            }
            for (name, v) in [
                ("jwt_issuer", &u.jwks.issuer),
                ("jwt_audience", &u.jwks.audience),
            ] {
                if v.is_empty() || v.len() > 256 {
                    return bad(format!("{name} must be 1..=256 bytes"));
                }
            }
            let r = u.jwks.refresh.as_millis();
            if !(1000..=86_400_000).contains(&r) {
                return bad(format!(
                    "jwks_refresh_interval_ms {r} outside 1000..=86400000"
                ));
            }
            let m = u.jwks.min_refetch.as_millis();
            if !(100..=3_600_000).contains(&m) {
                return bad(format!(
                    "jwks_min_refetch_interval_ms {m} outside 100..=3600000"
                ));
            }
        }
        if let Some(m) = &self.manager {
            let hb = m.heartbeat_interval.as_millis();
            if !(100..=3_600_000).contains(&hb) {
                return bad(format!(
                    "manager_heartbeat_interval_ms {hb} outside 100..=3600000"
                ));
            }
            let t = m.timeout.as_millis();
            if !(100..=600_000).contains(&t) {
                return bad(format!("manager_timeout_ms {t} outside 100..=600000"));
            }
        }
        Ok(())
    }
}

/// The user API settings from the command line and file; `None` without
/// `user_listen` (then the JWT and JWKS settings must not be given either).
fn user_api_config(cli: &Cli, file: &FileConfig) -> Result<Option<UserApiConfig>, ConfigError> {
    let issuer = cli.jwt_issuer.clone().or(file.jwt_issuer.clone());
    let audience = cli.jwt_audience.clone().or(file.jwt_audience.clone());
    let refresh = cli
        .jwks_refresh_interval_ms
        .or(file.jwks_refresh_interval_ms);
    let min_refetch = cli
        .jwks_min_refetch_interval_ms
        .or(file.jwks_min_refetch_interval_ms);
    let Some(listen) = cli.user_listen.or(file.user_listen) else {
        let stray = [
            ("jwt_issuer", issuer.is_some()),
            ("jwt_audience", audience.is_some()),
            ("jwks_refresh_interval_ms", refresh.is_some()),
            ("jwks_min_refetch_interval_ms", min_refetch.is_some()),
        ];
        if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid(format!(
                "{name} needs user_listen (the user API is off without it)"
            )));
        }
        return Ok(None);
    };
    let d = JwksSettings::default();
    Ok(Some(UserApiConfig {
        listen,
        jwks: JwksSettings {
            issuer: issuer.unwrap_or(d.issuer),
            audience: audience.unwrap_or(d.audience),
            refresh: refresh.map_or(d.refresh, Duration::from_millis),
            min_refetch: min_refetch.map_or(d.min_refetch, Duration::from_millis),
        },
    }))
}

/// Checks `--manager-url` and returns it without a trailing `/`.
fn check_manager_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        Err(ConfigError::Invalid(format!(
            "manager_url {url:?}: {why} (expected http(s)://host[:port][/path])"
        )))
    };
    if url.len() > 512 || !url.bytes().all(|b| b > b' ' && b < 0x7f) {
        return bad("at most 512 printable ASCII bytes");
    }
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return bad("not a URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad("the scheme must be http or https");
    }
    let Some(authority) = uri.authority() else {
        return bad("no host");
    };
    if authority.as_str().contains('@') {
        return bad("user info is not allowed");
    }
    if authority.host().is_empty() {
        return bad("no host");
    }
    if uri.query().is_some() || url.contains('#') {
        return bad("no query or fragment");
    }
    // The gateway token must not cross a network in clear text (the manager refuses it
    // too, unless it listens on loopback behind a TLS proxy).
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() == Some("http") && !loopback {
        return bad("plain http only to a loopback host; use https");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_overrides_file_overrides_default() {
        let file: FileConfig = toml::from_str("window = 4096\nmax_handshakes = 8\n").unwrap();
        let cli = Cli::parse_from(["outband-gateway", "--window", "8192"]);
        let cfg = Config::merge(cli, file).unwrap();
        assert_eq!(cfg.window, 8192);
        assert_eq!(cfg.max_handshakes, 8);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(cfg.agent_listen.to_string(), "127.0.0.1:7443");
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_rejected() {
        assert!(toml::from_str::<FileConfig>("windw = 1").is_err());
        let cli = Cli::parse_from(["outband-gateway", "--window", "10"]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("window 10"), "{err}");
        let cli = Cli::parse_from(["outband-gateway", "--shared-window", "100"]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("shared_window 100"), "{err}");
        let file: FileConfig = toml::from_str("shared_window = 65536").unwrap();
        let cfg = Config::merge(Cli::default(), file).unwrap();
        assert_eq!(cfg.shared_window, 65536);
        let cli = Cli::parse_from(["outband-gateway", "--max-window", "16777217"]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("max_window 16777217 over"),
            "{err}"
        );
        let file: FileConfig = toml::from_str("max_window = 0").unwrap();
        let cfg = Config::merge(Cli::default(), file).unwrap();
        assert_eq!(cfg.max_window, 0);
        let file: FileConfig = toml::from_str("tls_cert = \"/x.pem\"").unwrap();
        assert!(Config::merge(Cli::default(), file).is_err());
    }

    #[test]
    fn the_unauthenticated_api_stays_on_loopback() {
        let cli = Cli::parse_from(["outband-gateway", "--http-listen", "0.0.0.0:8080"]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let cli = Cli::parse_from(["outband-gateway", "--http-listen", "[::1]:0"]);
        assert!(Config::merge(cli, FileConfig::default()).is_ok());
    }

    #[test]
    fn user_api_settings() {
        let cfg = Config::merge(Cli::default(), FileConfig::default()).unwrap();
        assert_eq!(cfg.user_api, None, "off by default");
        let mgr = ["--manager-url", "http://127.0.0.1:8090"];
        let parse = |extra: &[&str]| {
            let mut args = vec!["outband-gateway"];
            args.extend_from_slice(extra);
            Config::merge(Cli::parse_from(args), FileConfig::default())
        };
        let u = parse(&[mgr[0], mgr[1], "--user-listen", "127.0.0.1:0"])
            .unwrap()
            .user_api
            .unwrap();
        assert_eq!(u.jwks, JwksSettings::default());
        assert_eq!(u.jwks.issuer, "outband-manager");
        assert_eq!(u.jwks.audience, "outband");
        let u = parse(&[
            mgr[0],
            mgr[1],
            "--user-listen",
            "[::1]:9443",
            "--jwt-issuer",
            "https://mgr.example",
            "--jwks-min-refetch-interval-ms",
            "500",
        ])
        .unwrap()
        .user_api
        .unwrap();
        assert_eq!(u.jwks.issuer, "https://mgr.example");
        assert_eq!(u.jwks.min_refetch, Duration::from_millis(500));
        for (args, why) in [
            (
                vec!["--user-listen", "127.0.0.1:0"],
                "user_listen needs manager_url",
            ),
            (
                vec![mgr[0], mgr[1], "--user-listen", "0.0.0.0:9443"],
                "not a loopback address: give tls_cert",
            ),
            (
                vec![mgr[0], mgr[1], "--jwt-audience", "x"],
                "jwt_audience needs user_listen",
            ),
            (
                vec![
                    mgr[0],
                    mgr[1],
                    "--user-listen",
                    "127.0.0.1:0",
                    "--jwt-issuer",
                    "",
                ],
                "jwt_issuer must be",
            ),
            (
                vec![
                    mgr[0],
                    mgr[1],
                    "--user-listen",
                    "127.0.0.1:0",
                    "--jwks-min-refetch-interval-ms",
                    "0",
                ],
                "jwks_min_refetch_interval_ms 0",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.to_string().contains(why), "{args:?}: {err}");
        }
        // A public address is fine with a certificate.
        let file: FileConfig = toml::from_str(
            "manager_url = \"https://mgr.example\"\nuser_listen = \"0.0.0.0:9443\"\n\
             tls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"\n",
        )
        .unwrap();
        let u = Config::merge(Cli::default(), file)
            .unwrap()
            .user_api
            .unwrap();
        assert_eq!(u.listen.to_string(), "0.0.0.0:9443");
    }

    #[test]
    fn manager_settings() {
        let cfg = Config::merge(Cli::default(), FileConfig::default()).unwrap();
        assert_eq!(cfg.manager, None, "standalone by default");
        let file: FileConfig = toml::from_str(
            "manager_url = \"https://mgr.example:8443/base/\"\n\
             registration_credential_file = \"/etc/outband/cred\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["outband-gateway", "--manager-heartbeat-interval-ms", "500"]);
        let m = Config::merge(cli, file).unwrap().manager.unwrap();
        assert_eq!(m.url, "https://mgr.example:8443/base");
        assert_eq!(m.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(m.timeout, DEFAULT_MANAGER_TIMEOUT);
        assert_eq!(
            m.registration_credential_file.as_deref(),
            Some(Path::new("/etc/outband/cred"))
        );
        let cli = Cli::parse_from(["outband-gateway", "--manager-url", "http://127.0.0.1:1"]);
        let m = Config::merge(cli, FileConfig::default())
            .unwrap()
            .manager
            .unwrap();
        assert_eq!(m.heartbeat_interval, DEFAULT_MANAGER_HEARTBEAT);

        for (url, why) in [
            ("ftp://mgr", "scheme"),
            ("http://user:pw@mgr", "user info"),
            ("https://mgr/?a=1", "query"),
            (
                "http://mgr.example:8090",
                "plain http only to a loopback host",
            ),
            ("http://10.0.0.1", "plain http only to a loopback host"),
            ("mgr:8090", "scheme"),
            ("http://mgr/a b", "printable"),
        ] {
            let cli = Cli::parse_from(["outband-gateway", "--manager-url", url]);
            let err = Config::merge(cli, FileConfig::default()).unwrap_err();
            assert!(err.to_string().contains("manager_url"), "{url}: {err}");
            assert!(err.to_string().contains(why), "{url}: {err}");
        }
        let cli = Cli::parse_from([
            "outband-gateway",
            "--manager-url",
            "http://127.0.0.1:1",
            "--manager-heartbeat-interval-ms",
            "10",
        ]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("manager_heartbeat_interval_ms 10"),
            "{err}"
        );
        let cli = Cli::parse_from(["outband-gateway", "--registration-credential-file", "/c"]);
        let err = Config::merge(cli, FileConfig::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("registration_credential_file needs manager_url"),
            "{err}"
        );
    }
}
