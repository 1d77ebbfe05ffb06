//! BMC endpoint addresses: `host:port`, `[v6]:port`, `vnc://host[:port]`.
//!
//! The allow-list and the targets the gateway asks for go through the same parser, so
//! they are compared in one normalized form (lowercase host, canonical IP text).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Default port for `vnc://host` without a port.
pub const VNC_DEFAULT_PORT: u16 = 5900;

/// Longest target string accepted (DNS names are at most 253 bytes).
const MAX_TARGET_LEN: usize = 300;

/// Why a target string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Empty string.
    #[error("empty endpoint")]
    Empty,
    /// Longer than any valid endpoint.
    #[error("endpoint longer than {MAX_TARGET_LEN} bytes")]
    TooLong,
    /// A URL scheme other than `vnc://`.
    #[error("unsupported scheme {0:?} (only vnc:// or plain host:port)")]
    Scheme(String),
    /// The port is missing where it is required.
    #[error("missing port (expected host:port)")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("invalid port {0:?}")]
    Port(String),
    /// The host is not a DNS name or IP address.
    #[error("invalid host {0:?}")]
    Host(String),
}

/// A normalized TCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name (lowercase) or IP address in canonical text, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Written with the `vnc://` scheme.
    pub vnc: bool,
}

impl Target {
    /// Parses `host:port`, `[v6]:port` or `vnc://host[:port]`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.len() > MAX_TARGET_LEN {
            return Err(TargetError::TooLong);
        }
        let (rest, vnc) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("vnc") => (rest, true),
            Some((scheme, _)) => return Err(TargetError::Scheme(scheme.to_owned())),
            None => (s, false),
        };
        // Tolerate a trailing slash on URLs ("vnc://host:5900/"), nothing else.
        let rest = if vnc {
            rest.strip_suffix('/').unwrap_or(rest)
        } else {
            rest
        };
        let (host, port) = split_host_port(rest)?;
        if rest.starts_with('[') && host.parse::<Ipv6Addr>().is_err() {
            return Err(TargetError::Host(host.to_owned()));
        }
        let port = match port {
            Some(p) => parse_port(p)?,
            None if vnc => VNC_DEFAULT_PORT,
            None => return Err(TargetError::MissingPort),
        };
        Ok(Target {
            host: normalize_host(host)?,
            port,
            vnc,
        })
    }

    /// The `host:port` key used to compare endpoints (scheme ignored).
    pub fn key(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.vnc {
            f.write_str("vnc://")?;
        }
        f.write_str(&self.key())
    }
}

/// Splits `host:port` / `[v6]:port` / `host` / `[v6]`.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), TargetError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| TargetError::Host(s.to_owned()))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(TargetError::Host(s.to_owned())),
            },
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address without brackets is ambiguous: refuse it.
        Some((host, _)) if host.contains(':') => Err(TargetError::Host(s.to_owned())),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::Port(p.to_owned())),
        Ok(n) if p.starts_with('+') => Err(TargetError::Port(n.to_string())),
        Ok(n) => Ok(n),
    }
}

fn normalize_host(host: &str) -> Result<String, TargetError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    // A name that is not a strict IP literal but looks numeric ("010.0.0.5",
    // "10.0.5", "0x0a000005") would be read by the system resolver in the old BSD way
    // (octal, short forms, hex) and reach a different address than it appears to.
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.len() > 2
            && last[..2].eq_ignore_ascii_case("0x")
            && last[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if valid && !numeric {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(TargetError::Host(host.to_owned()))
    }
}

/// The endpoints the agent may dial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Target>,
}

impl AllowList {
    /// An allow-list of `entries`.
    pub fn new(entries: Vec<Target>) -> Self {
        Self { entries }
    }

    /// True if `target` (any scheme) names an allowed `host:port`.
    pub fn permits(&self, target: &Target) -> bool {
        self.entries
            .iter()
            .any(|e| e.host == target.host && e.port == target.port)
    }

    /// The allowed endpoints as configured.
    pub fn entries(&self) -> &[Target] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn parses_forms() {
        assert_eq!(t("10.0.0.5:5900").key(), "10.0.0.5:5900");
        assert_eq!(t("vnc://10.0.0.5:5901").to_string(), "vnc://10.0.0.5:5901");
        assert_eq!(t("vnc://10.0.0.5").port, VNC_DEFAULT_PORT);
        assert_eq!(
            t("VNC://BMC-1.Example.net/").to_string(),
            "vnc://bmc-1.example.net:5900"
        );
        assert_eq!(t("[::1]:5900").key(), "[::1]:5900");
        assert_eq!(t("[0:0::1]:22").host, "::1");
        assert_eq!(t("vnc://[fe80::1]").key(), "[fe80::1]:5900");
        assert_eq!(t(" host:1 ").key(), "host:1");
    }

    #[test]
    fn rejects_names_the_resolver_would_read_as_numbers() {
        for s in [
            "010.0.0.5:5900",
            "10.0.5:5900",
            "0x0a000005:5900",
            "127.1:22",
            "bmc.0X1F:1",
        ] {
            assert!(
                matches!(Target::parse(s), Err(TargetError::Host(_))),
                "{s} must be refused"
            );
        }
        assert_eq!(t("bmc-5:623").key(), "bmc-5:623");
        assert_eq!(t("rack1.dc2.example:443").key(), "rack1.dc2.example:443");
        assert_eq!(t("0xcafe.example:1").key(), "0xcafe.example:1");
    }

    #[test]
    fn rejects_bad_targets() {
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert_eq!(Target::parse("host"), Err(TargetError::MissingPort));
        assert!(matches!(
            Target::parse("http://h:80"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(Target::parse("h:0"), Err(TargetError::Port(_))));
        assert!(matches!(
            Target::parse("h:65536"),
            Err(TargetError::Port(_))
        ));
        assert!(matches!(Target::parse("h:+5"), Err(TargetError::Port(_))));
        assert!(matches!(Target::parse("h:"), Err(TargetError::Port(_))));
        assert!(matches!(
            Target::parse("::1:5900"),
            Err(TargetError::Host(_))
        ));
        assert!(matches!(Target::parse("[::1"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse("[::1]x"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse("a b:1"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse("-a:1"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse("a..b:1"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse(":1"), Err(TargetError::Host(_))));
        assert!(matches!(Target::parse("[zz]:1"), Err(TargetError::Host(_))));
        assert_eq!(Target::parse(&"a".repeat(301)), Err(TargetError::TooLong));
    }

    #[test]
    fn allow_list_compares_normalized_host_port() {
        let allow = AllowList::new(vec![t("vnc://BMC1:5900"), t("[::1]:623")]);
        assert!(allow.permits(&t("bmc1:5900")));
        assert!(allow.permits(&t("vnc://bmc1")));
        assert!(allow.permits(&t("[0::1]:623")));
        assert!(!allow.permits(&t("bmc1:5901")));
        assert!(!allow.permits(&t("bmc2:5900")));
        assert!(!AllowList::default().permits(&t("bmc1:5900")));
    }
}
