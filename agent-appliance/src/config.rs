//! Command line and config file, in two stages: a raw parse (every setting optional),
//! then [`validate`] into a [`Config`] whose every field is known good.
//!
//! Flags override the config file; a repeated `--allow` replaces the file's `allow`
//! list rather than extending it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::ServerName;
use serde::Deserialize;

use crate::backoff::Backoff;
use crate::discovery::{Range, ScanConfig};
use crate::target::{AllowList, Scheme, Target};

/// Default state directory (holds the identity key).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/outband-agent";

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: outband-agent --gateway HOST:PORT (--ca-file PEM | --ca-fingerprint SHA256HEX) [options]

Dials the outband gateway over TLS 1.3 and relays the streams it asks for to the
BMC endpoints on the allow-list.

options:
  --config FILE              TOML config file (flags override it)
  --gateway HOST:PORT        gateway to dial (required)
  --server-name NAME         TLS name the gateway certificate must carry (default: HOST)
  --ca-file PEM              CA certificate(s) that sign the gateway certificate
  --ca-fingerprint HEX       SHA-256 of the DER CA certificate the gateway chain ends in
  --state-dir DIR            where the identity key lives (default /var/lib/outband-agent)
  --join-token-file FILE     join token (objt_...) for adoption without a pairing code;
                             presented until the gateway reports it used or refused
  --allow TARGET             BMC endpoint the agent may use (repeatable): host:port,
                             vnc://, ipmi:// (UDP), https://, http://, ws://, wss://
                             host[:port][/path]
  --discover CIDR            scan this IPv4 range (at most a /20) for BMCs: RMCP ping on
                             UDP 623, Redfish service root on 443; found endpoints are
                             reported to the gateway, not added to the allow-list
                             (repeatable)
  --discover-rate N          probes per second (default 50, at most 1000)
  --discover-interval-s N    time between scans (default 600)
  --discover-ipmi-port N     UDP port of the presence ping (default 623)
  --discover-redfish-port N  TCP port of the Redfish probe (default 443)
  --backoff-base-ms N        first reconnect delay ceiling (default 500)
  --backoff-cap-ms N         largest reconnect delay ceiling (default 30000)
  --connect-timeout-ms N     TCP connect and TLS handshake timeout (default 10000)
  --window BYTES             per-stream receive window (default 262144)
  --max-window BYTES         largest a stream's window grows to when it moves a whole
                             window per round trip (long paths); 0 keeps windows
                             fixed (default 8388608, at most 16777216)
  --log LEVEL                error, warn, info, debug or trace (default info)
  --print-identity           print agent id and pairing code, then exit
  -h, --help                 this text
  -V, --version              print the version
";

/// A configuration problem; names the setting and the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line could not be parsed.
    #[error("command line: {0}")]
    Args(String),
    /// The config file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A required setting is absent.
    #[error("missing required setting {0}")]
    Missing(&'static str),
    /// A setting has a bad value.
    #[error("invalid {name} {value:?}: {reason}")]
    Invalid {
        /// Setting name (flag form).
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it is bad.
        reason: String,
    },
    /// Settings that exclude each other.
    #[error("{0}")]
    Conflict(&'static str),
}

/// How the agent decides to trust the gateway. There is no "trust anything" mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The gateway chain must verify to one of the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// The gateway chain must contain a certificate with this SHA-256 fingerprint (of
    /// its DER), and must verify with that certificate as the only root.
    Fingerprint([u8; 32]),
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateway endpoint.
    pub gateway: Target,
    /// Name the gateway certificate must be valid for.
    pub server_name: ServerName<'static>,
    /// Gateway trust anchor.
    pub trust: Trust,
    /// State directory (identity key).
    pub state_dir: PathBuf,
    /// File holding a join token (read at start, see `join.rs`).
    pub join_token_file: Option<PathBuf>,
    /// BMC endpoints the agent may dial.
    pub allow: AllowList,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// TCP connect timeout (gateway and BMCs) and TLS handshake timeout.
    pub connect_timeout: Duration,
    /// Per-stream receive window granted to the gateway.
    pub window: u32,
    /// The largest a stream's receive window grows to (`MuxConfig::max_window`).
    pub max_window: u32,
    /// Log level.
    pub log: tracing::Level,
    /// BMC discovery: ranges to scan and how; `None` when no range is configured.
    pub discovery: Option<Discovery>,
}

/// Periodic BMC discovery on the agent's network.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// What to scan and how fast.
    pub scan: ScanConfig,
    /// Time between scans.
    pub interval: Duration,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Run the agent.
    Run(Box<Config>),
    /// Print the identity for this state directory and exit.
    PrintIdentity {
        /// State directory.
        state_dir: PathBuf,
    },
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Every setting, as given (command line or file); nothing validated yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    gateway: Option<String>,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
    ca_fingerprint: Option<String>,
    state_dir: Option<PathBuf>,
    join_token_file: Option<PathBuf>,
    allow: Option<Vec<String>>,
    backoff_base_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    window: Option<u64>,
    max_window: Option<u64>,
    log: Option<String>,
    discover: Option<Vec<String>>,
    discover_rate: Option<u64>,
    discover_interval_s: Option<u64>,
    discover_ipmi_port: Option<u64>,
    discover_redfish_port: Option<u64>,
}

impl Raw {
    /// Fills unset fields from `file`.
    fn or(self, file: Raw) -> Raw {
        Raw {
            gateway: self.gateway.or(file.gateway),
            server_name: self.server_name.or(file.server_name),
            ca_file: self.ca_file.or(file.ca_file),
            ca_fingerprint: self.ca_fingerprint.or(file.ca_fingerprint),
            state_dir: self.state_dir.or(file.state_dir),
            join_token_file: self.join_token_file.or(file.join_token_file),
            allow: self.allow.or(file.allow),
            backoff_base_ms: self.backoff_base_ms.or(file.backoff_base_ms),
            backoff_cap_ms: self.backoff_cap_ms.or(file.backoff_cap_ms),
            connect_timeout_ms: self.connect_timeout_ms.or(file.connect_timeout_ms),
            window: self.window.or(file.window),
            max_window: self.max_window.or(file.max_window),
            log: self.log.or(file.log),
            discover: self.discover.or(file.discover),
            discover_rate: self.discover_rate.or(file.discover_rate),
            discover_interval_s: self.discover_interval_s.or(file.discover_interval_s),
            discover_ipmi_port: self.discover_ipmi_port.or(file.discover_ipmi_port),
            discover_redfish_port: self.discover_redfish_port.or(file.discover_redfish_port),
        }
    }
}

/// Parses the command line (without the program name) and the config file it names.
pub fn parse_args<I>(args: I) -> Result<Action, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut raw = Raw::default();
    let mut config_file: Option<PathBuf> = None;
    let mut print_identity = false;
    let mut parser = lexopt::Parser::from_iter(
        std::iter::once(OsString::from("outband-agent")).chain(args.into_iter().map(Into::into)),
    );
    let err = |e: lexopt::Error| ConfigError::Args(e.to_string());
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(Action::Help),
            Short('V') | Long("version") => return Ok(Action::Version),
            Long("config") => config_file = Some(value(&mut parser)?.into()),
            Long("gateway") => raw.gateway = Some(value(&mut parser)?),
            Long("server-name") => raw.server_name = Some(value(&mut parser)?),
            Long("ca-file") => raw.ca_file = Some(value(&mut parser)?.into()),
            Long("ca-fingerprint") => raw.ca_fingerprint = Some(value(&mut parser)?),
            Long("state-dir") => raw.state_dir = Some(value(&mut parser)?.into()),
            Long("join-token-file") => raw.join_token_file = Some(value(&mut parser)?.into()),
            Long("allow") => raw
                .allow
                .get_or_insert_with(Vec::new)
                .push(value(&mut parser)?),
            Long("backoff-base-ms") => {
                raw.backoff_base_ms = Some(number("--backoff-base-ms", value(&mut parser)?)?)
            }
            Long("backoff-cap-ms") => {
                raw.backoff_cap_ms = Some(number("--backoff-cap-ms", value(&mut parser)?)?)
            }
            Long("connect-timeout-ms") => {
                raw.connect_timeout_ms = Some(number("--connect-timeout-ms", value(&mut parser)?)?)
            }
            Long("window") => raw.window = Some(number("--window", value(&mut parser)?)?),
            Long("max-window") => {
                raw.max_window = Some(number("--max-window", value(&mut parser)?)?)
            }
            Long("log") => raw.log = Some(value(&mut parser)?),
            Long("discover") => raw
                .discover
                .get_or_insert_with(Vec::new)
                .push(value(&mut parser)?),
            Long("discover-rate") => {
                raw.discover_rate = Some(number("--discover-rate", value(&mut parser)?)?)
            }
            Long("discover-interval-s") => {
                raw.discover_interval_s =
                    Some(number("--discover-interval-s", value(&mut parser)?)?)
            }
            Long("discover-ipmi-port") => {
                raw.discover_ipmi_port = Some(number("--discover-ipmi-port", value(&mut parser)?)?)
            }
            Long("discover-redfish-port") => {
                raw.discover_redfish_port =
                    Some(number("--discover-redfish-port", value(&mut parser)?)?)
            }
            Long("print-identity") => print_identity = true,
            _ => return Err(err(arg.unexpected())),
        }
    }
    if let Some(path) = &config_file {
        raw = raw.or(load_file(path)?);
    }
    if print_identity {
        return Ok(Action::PrintIdentity {
            state_dir: raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        });
    }
    validate(raw).map(|c| Action::Run(Box::new(c)))
}

fn value(parser: &mut lexopt::Parser) -> Result<String, ConfigError> {
    use lexopt::ValueExt;
    let err = |e: lexopt::Error| ConfigError::Args(e.to_string());
    parser.value().map_err(err)?.string().map_err(err)
}

fn number(name: &'static str, value: String) -> Result<u64, ConfigError> {
    value
        .parse()
        .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
            name,
            value,
            reason: e.to_string(),
        })
}

/// Reads a TOML config file.
fn load_file(path: &Path) -> Result<Raw, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

fn parse_file(text: &str) -> Result<Raw, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

fn invalid(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.into(),
        reason: reason.into(),
    }
}

/// The discovery settings, validated; `None` without `--discover`.
fn discovery(raw: &Raw) -> Result<Option<Discovery>, ConfigError> {
    let Some(specs) = raw.discover.as_ref().filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let mut scan = ScanConfig::default();
    for spec in specs {
        let range = spec
            .parse::<Range>()
            .map_err(|e| invalid("--discover", spec, e.to_string()))?;
        scan.ranges.push(range);
    }
    let port = |name: &'static str, v: Option<u64>, default: u16| match v {
        None => Ok(default),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid(name, p.to_string(), "must be a port in 1..=65535")),
    };
    scan.ipmi_port = port(
        "--discover-ipmi-port",
        raw.discover_ipmi_port,
        scan.ipmi_port,
    )?;
    scan.redfish_port = port(
        "--discover-redfish-port",
        raw.discover_redfish_port,
        scan.redfish_port,
    )?;
    if let Some(rate) = raw.discover_rate {
        scan.rate = u32::try_from(rate)
            .ok()
            .filter(|r| (1..=1000).contains(r))
            .ok_or_else(|| {
                invalid(
                    "--discover-rate",
                    rate.to_string(),
                    "must be 1..=1000 probes/s",
                )
            })?;
    }
    scan.validate()
        .map_err(|e| invalid("--discover", specs.join(","), e.to_string()))?;
    let secs = raw.discover_interval_s.unwrap_or(600);
    if !(10..=7 * 24 * 3600).contains(&secs) {
        return Err(invalid(
            "--discover-interval-s",
            secs.to_string(),
            "must be between 10 s and a week",
        ));
    }
    Ok(Some(Discovery {
        scan,
        interval: Duration::from_secs(secs),
    }))
}

/// Checks every setting and applies defaults.
fn validate(raw: Raw) -> Result<Config, ConfigError> {
    let discovery = discovery(&raw)?;
    let gw = raw.gateway.ok_or(ConfigError::Missing("--gateway"))?;
    let gateway = Target::parse(&gw).map_err(|e| invalid("--gateway", &gw, e.to_string()))?;
    if gateway.scheme != Scheme::Tcp {
        return Err(invalid(
            "--gateway",
            gw,
            "expected HOST:PORT without a scheme",
        ));
    }
    let name = raw.server_name.unwrap_or_else(|| gateway.host.clone());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| invalid("--server-name", name, e.to_string()))?;

    let trust = match (raw.ca_file, raw.ca_fingerprint) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Conflict(
                "give only one of --ca-file and --ca-fingerprint",
            ));
        }
        (None, None) => {
            return Err(ConfigError::Missing(
                "--ca-file or --ca-fingerprint (the agent never trusts a gateway blindly)",
            ));
        }
        (Some(path), None) => Trust::CaFile(path),
        (None, Some(hex)) => Trust::Fingerprint(
            parse_fingerprint(&hex).map_err(|reason| invalid("--ca-fingerprint", hex, reason))?,
        ),
    };

    let mut allowed = Vec::new();
    for spec in raw.allow.unwrap_or_default() {
        let t = Target::parse(&spec).map_err(|e| invalid("--allow", &spec, e.to_string()))?;
        allowed.push(t);
    }

    let base = raw.backoff_base_ms.unwrap_or(500);
    let cap = raw.backoff_cap_ms.unwrap_or(30_000);
    if base == 0 {
        return Err(invalid("--backoff-base-ms", "0", "must be at least 1"));
    }
    if cap < base || cap > 3_600_000 {
        return Err(invalid(
            "--backoff-cap-ms",
            cap.to_string(),
            format!("must be between --backoff-base-ms ({base}) and 3600000"),
        ));
    }
    let timeout = raw.connect_timeout_ms.unwrap_or(10_000);
    if !(1..=600_000).contains(&timeout) {
        return Err(invalid(
            "--connect-timeout-ms",
            timeout.to_string(),
            "must be between 1 and 600000",
        ));
    }
    let window = raw.window.unwrap_or(256 * 1024);
    let window = u32::try_from(window)
        .ok()
        .filter(|w| (1024..=16 * 1024 * 1024).contains(w))
        .ok_or_else(|| {
            invalid(
                "--window",
                window.to_string(),
                "must be between 1024 and 16777216",
            )
        })?;
    let max_window = raw
        .max_window
        .unwrap_or(outband_proto::mux::DEFAULT_MAX_WINDOW.into());
    let max_window = u32::try_from(max_window)
        .ok()
        .filter(|w| *w <= outband_proto::mux::MAX_WINDOW)
        .ok_or_else(|| {
            invalid(
                "--max-window",
                max_window.to_string(),
                "must be at most 16777216",
            )
        })?;
    let log_text = raw.log.unwrap_or_else(|| "info".into());
    let log = parse_level(&log_text).ok_or_else(|| {
        invalid(
            "--log",
            log_text,
            "expected error, warn, info, debug or trace",
        )
    })?;

    Ok(Config {
        discovery,
        gateway,
        server_name,
        trust,
        state_dir: raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        join_token_file: raw.join_token_file,
        allow: AllowList::new(allowed),
        backoff: Backoff {
            base: Duration::from_millis(base),
            cap: Duration::from_millis(cap),
        },
        connect_timeout: Duration::from_millis(timeout),
        window,
        max_window,
        log,
    })
}

/// Parses a log level name.
pub fn parse_level(s: &str) -> Option<tracing::Level> {
    Some(match s.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" | "warning" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => return None,
    })
}

/// Parses 64 hex digits, optionally separated by `:` (as openssl prints them).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return Err(format!("expected 64 hex digits, got {}", hex.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |b: u8| {
            (b as char)
                .to_digit(16)
                .ok_or(format!("{:?} is not a hex digit", b as char))
        };
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse_args(args.iter().copied())? {
            Action::Run(c) => Ok(*c),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn base() -> Vec<&'static str> {
        vec![
            "--gateway",
            "gw.example.net:7443",
            "--ca-file",
            "/etc/ca.pem",
        ]
    }

    fn invalid_name(e: ConfigError) -> &'static str {
        match e {
            ConfigError::Invalid { name, .. } => name,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&base()).unwrap();
        assert_eq!(c.gateway.key(), "gw.example.net:7443");
        assert_eq!(
            c.server_name,
            ServerName::try_from("gw.example.net").unwrap()
        );
        assert_eq!(c.trust, Trust::CaFile("/etc/ca.pem".into()));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.allow.entries().is_empty());
        assert_eq!(c.backoff.base, Duration::from_millis(500));
        assert_eq!(c.backoff.cap, Duration::from_millis(30_000));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.window, 262_144);
        assert_eq!(c.max_window, outband_proto::mux::DEFAULT_MAX_WINDOW);
        assert_eq!(c.log, tracing::Level::INFO);
        assert_eq!(c.join_token_file, None);
    }

    #[test]
    fn join_token_file_from_flag_or_file() {
        let mut args = base();
        args.extend(["--join-token-file", "/boot/join-token"]);
        assert_eq!(
            run(&args).unwrap().join_token_file,
            Some(PathBuf::from("/boot/join-token"))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outband.toml");
        std::fs::write(
            &path,
            "gateway = \"gw:1\"\nca_file = \"/ca.pem\"\njoin_token_file = \"/boot/jt\"\n",
        )
        .unwrap();
        let c = run(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.join_token_file, Some(PathBuf::from("/boot/jt")));
    }

    #[test]
    fn all_flags() {
        let c = run(&[
            "--gateway=127.0.0.1:9000",
            "--server-name",
            "gateway.test",
            "--ca-fingerprint",
            FP,
            "--state-dir",
            "/tmp/st",
            "--allow",
            "vnc://10.0.0.5",
            "--allow",
            "10.0.0.6:623",
            "--backoff-base-ms",
            "10",
            "--backoff-cap-ms",
            "100",
            "--connect-timeout-ms",
            "250",
            "--window",
            "65536",
            "--max-window",
            "0",
            "--log",
            "DEBUG",
        ])
        .unwrap();
        assert_eq!(c.server_name, ServerName::try_from("gateway.test").unwrap());
        let Trust::Fingerprint(fp) = c.trust else {
            panic!("fingerprint mode expected")
        };
        assert_eq!(fp[0], 0x00);
        assert_eq!(fp[15], 0xff);
        assert_eq!(fp[31], 0xff);
        let allowed: Vec<String> = c.allow.entries().iter().map(|t| t.to_string()).collect();
        assert_eq!(allowed, ["vnc://10.0.0.5:5900", "10.0.0.6:623"]);
        assert_eq!(c.backoff.cap, Duration::from_millis(100));
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.window, 65536);
        assert_eq!(c.max_window, 0);
        assert_eq!(c.log, tracing::Level::DEBUG);
    }

    #[test]
    fn ip_gateway_gets_ip_server_name() {
        let c = run(&["--gateway", "[::1]:7443", "--ca-file", "x"]).unwrap();
        assert!(matches!(c.server_name, ServerName::IpAddress(_)));
    }

    #[test]
    fn missing_and_conflicting_trust() {
        let e = run(&["--gateway", "gw:1"]).unwrap_err();
        assert!(matches!(e, ConfigError::Missing(m) if m.contains("--ca-file")));
        let mut both = base();
        both.extend(["--ca-fingerprint", FP]);
        assert!(matches!(run(&both).unwrap_err(), ConfigError::Conflict(_)));
        let e = run(&["--ca-file", "x"]).unwrap_err();
        assert!(matches!(e, ConfigError::Missing("--gateway")));
    }

    #[test]
    fn discovery_settings() {
        let mut args = base();
        args.extend_from_slice(&["--discover", "10.1.0.0/24", "--discover", "10.2.0.0/28"]);
        let c = run(&args).unwrap();
        let d = c.discovery.expect("discovery configured");
        assert_eq!(d.scan.ranges.len(), 2);
        assert_eq!(
            (d.scan.ipmi_port, d.scan.redfish_port, d.scan.rate),
            (623, 443, 50)
        );
        assert_eq!(d.interval, Duration::from_secs(600));
        assert!(run(&base()).unwrap().discovery.is_none());
        for (extra, name) in [
            (&["--discover", "10.0.0.0/16"][..], "--discover"),
            (&["--discover", "10.0.0.0"][..], "--discover"),
            (
                &["--discover", "10.0.0.0/24", "--discover-rate", "0"][..],
                "--discover-rate",
            ),
            (
                &["--discover", "10.0.0.0/24", "--discover-rate", "5000"][..],
                "--discover-rate",
            ),
            (
                &["--discover", "10.0.0.0/24", "--discover-interval-s", "1"][..],
                "--discover-interval-s",
            ),
            (
                &["--discover", "10.0.0.0/24", "--discover-ipmi-port", "70000"][..],
                "--discover-ipmi-port",
            ),
        ] {
            let mut args = base();
            args.extend_from_slice(extra);
            assert_eq!(invalid_name(run(&args).unwrap_err()), name, "{extra:?}");
        }
        // Five /20s are more addresses than one scan may cover.
        let mut args = base();
        for i in 0..5 {
            args.push("--discover");
            args.push(
                [
                    "10.0.0.0/20",
                    "10.0.16.0/20",
                    "10.0.32.0/20",
                    "10.0.48.0/20",
                    "10.0.64.0/20",
                ][i],
            );
        }
        assert_eq!(invalid_name(run(&args).unwrap_err()), "--discover");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--gateway", "gw"], "--gateway"),
            (&["--gateway", "vnc://gw:1"], "--gateway"),
            (&["--server-name", "bad name!"], "--server-name"),
            (&["--allow", "ssh://x:1"], "--allow"),
            (&["--allow", "vnc://x:1/path"], "--allow"),
            (&["--allow", "x"], "--allow"),
            (&["--backoff-base-ms", "0"], "--backoff-base-ms"),
            (&["--backoff-base-ms", "-1"], "--backoff-base-ms"),
            (
                &["--backoff-base-ms", "100", "--backoff-cap-ms", "50"],
                "--backoff-cap-ms",
            ),
            (&["--connect-timeout-ms", "0"], "--connect-timeout-ms"),
            (&["--window", "100"], "--window"),
            (&["--window", "99999999999"], "--window"),
            (&["--max-window", "16777217"], "--max-window"),
            (&["--log", "loud"], "--log"),
        ];
        for (extra, name) in cases {
            let mut args = base();
            // Later flags override earlier ones.
            args.extend_from_slice(extra);
            let e = run(&args).unwrap_err();
            assert_eq!(invalid_name(e), *name, "args {extra:?}");
        }
        let e = run(&["--gateway", "gw:1", "--ca-fingerprint", "abcd"]).unwrap_err();
        assert!(e.to_string().contains("--ca-fingerprint \"abcd\""), "{e}");
    }

    #[test]
    fn unknown_flag_and_missing_value() {
        assert!(matches!(run(&["--frobnicate"]), Err(ConfigError::Args(_))));
        assert!(matches!(run(&["--gateway"]), Err(ConfigError::Args(_))));
        assert!(matches!(run(&["stray"]), Err(ConfigError::Args(_))));
    }

    #[test]
    fn help_version_identity() {
        assert!(matches!(parse_args(["--help"]), Ok(Action::Help)));
        assert!(matches!(parse_args(["-V"]), Ok(Action::Version)));
        match parse_args(["--print-identity", "--state-dir", "/s"]).unwrap() {
            Action::PrintIdentity { state_dir } => assert_eq!(state_dir, PathBuf::from("/s")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "gateway = \"gw.file:1\"\nca_file = \"/ca.pem\"\nallow = [\"a:1\", \"b:2\"]\nwindow = 4096\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = run(&["--config", p]).unwrap();
        assert_eq!(c.gateway.key(), "gw.file:1");
        assert_eq!(c.allow.entries().len(), 2);
        assert_eq!(c.window, 4096);
        let c = run(&["--config", p, "--gateway", "gw.flag:2", "--allow", "c:3"]).unwrap();
        assert_eq!(c.gateway.key(), "gw.flag:2");
        assert_eq!(c.allow.entries().len(), 1);
        assert_eq!(c.window, 4096);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "gateway = \"gw:1\"\nca_flie = \"typo\"\n").unwrap();
        let e = run(&["--config", path.to_str().unwrap()]).unwrap_err();
        let ConfigError::Parse { path: p, message } = e else {
            panic!("expected Parse")
        };
        assert_eq!(p, path);
        assert!(message.contains("ca_flie"), "{message}");
        let e = run(&["--config", "/nonexistent/agent.toml"]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../agent.example.toml");
        let raw = parse_file(text).unwrap();
        let c = validate(raw).unwrap();
        assert!(!c.allow.entries().is_empty());
    }

    #[test]
    fn fingerprint_forms() {
        let colon: String = FP
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colon), parse_fingerprint(FP));
        assert!(parse_fingerprint(&FP[..62]).is_err());
        assert!(parse_fingerprint(&FP.replace('0', "g")).is_err());
        assert!(parse_fingerprint(&"é".repeat(32)).is_err());
    }
}
