//! BMC endpoint addresses: `host:port`, `[v6]:port`, or a URL with a scheme that says
//! how the agent talks to it: `vnc://`, `ipmi://` (UDP), `https://`, `http://`,
//! `ws://`, `wss://` (a path is kept for the web schemes, e.g. `wss://bmc/kvm/0`).
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
    /// A URL scheme the agent does not speak.
    #[error(
        "unsupported scheme {0:?} (use vnc://, ipmi://, https://, http://, ws://, wss:// or plain host:port)"
    )]
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
    /// A path where the scheme has none, or one with characters a URL path cannot hold.
    #[error("invalid path {0:?}")]
    Path(String),
}

/// How the agent reaches an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain `host:port`: a raw TCP relay.
    Tcp,
    /// `vnc://`: RFB over TCP.
    Vnc,
    /// `ipmi://`: IPMI 2.0 RMCP+ over UDP.
    Ipmi,
    /// `https://`: Redfish.
    Https,
    /// `http://`: Redfish without TLS.
    Http,
    /// `ws://`: WebSocket (VNC or serial).
    Ws,
    /// `wss://`: WebSocket over TLS.
    Wss,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "vnc" => Scheme::Vnc,
            "ipmi" => Scheme::Ipmi,
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        })
    }

    /// The URL prefix (`vnc://`), empty for plain `host:port`.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::Tcp => "",
            Scheme::Vnc => "vnc://",
            Scheme::Ipmi => "ipmi://",
            Scheme::Https => "https://",
            Scheme::Http => "http://",
            Scheme::Ws => "ws://",
            Scheme::Wss => "wss://",
        }
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Tcp => None,
            Scheme::Vnc => Some(VNC_DEFAULT_PORT),
            Scheme::Ipmi => Some(623),
            Scheme::Https | Scheme::Wss => Some(443),
            Scheme::Http | Scheme::Ws => Some(80),
        }
    }

    fn has_path(self) -> bool {
        matches!(
            self,
            Scheme::Https | Scheme::Http | Scheme::Ws | Scheme::Wss
        )
    }

    /// Whether the endpoint is reached over UDP (IPMI) rather than TCP.
    pub fn is_udp(self) -> bool {
        self == Scheme::Ipmi
    }
}

/// A normalized endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// How the agent talks to it.
    pub scheme: Scheme,
    /// Host name (lowercase) or IP address in canonical text, without brackets.
    pub host: String,
    /// TCP or UDP port.
    pub port: u16,
    /// Path for web schemes (`/kvm/0`), empty otherwise or when absent.
    pub path: String,
}

impl Target {
    /// Parses `host:port`, `[v6]:port` or `scheme://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.len() > MAX_TARGET_LEN {
            return Err(TargetError::TooLong);
        }
        let (rest, scheme) = match s.split_once("://") {
            Some((name, rest)) => (
                rest,
                Scheme::parse(name).ok_or_else(|| TargetError::Scheme(name.to_owned()))?,
            ),
            None => (s, Scheme::Tcp),
        };
        let (authority, path) = match (scheme, rest.find('/')) {
            (Scheme::Tcp, _) | (_, None) => (rest, ""),
            (_, Some(i)) => (&rest[..i], &rest[i..]),
        };
        let path = match path {
            "" | "/" => "",
            p if scheme.has_path() && valid_path(p) => p,
            p => return Err(TargetError::Path(p.to_owned())),
        };
        let (host, port) = split_host_port(authority)?;
        if authority.starts_with('[') && host.parse::<Ipv6Addr>().is_err() {
            return Err(TargetError::Host(host.to_owned()));
        }
        let port = match (port, scheme.default_port()) {
            (Some(p), _) => parse_port(p)?,
            (None, Some(d)) => d,
            (None, None) => return Err(TargetError::MissingPort),
        };
        Ok(Target {
            scheme,
            host: normalize_host(host)?,
            port,
            path: path.to_owned(),
        })
    }

    /// The `host:port` part.
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
        f.write_str(self.scheme.prefix())?;
        f.write_str(&self.key())?;
        f.write_str(&self.path)
    }
}

/// A URL path: printable ASCII without spaces, quotes, backslashes or fragments.
fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'#' | b'<' | b'>'))
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

    /// True if `target` names an allowed `host:port` on the same transport: any TCP
    /// scheme matches any TCP entry for that host and port (`vnc://h` allows a raw relay
    /// to `h:5900`), while `ipmi://` (UDP) only matches `ipmi://` entries.
    pub fn permits(&self, target: &Target) -> bool {
        self.entries.iter().any(|e| {
            e.host == target.host
                && e.port == target.port
                && e.scheme.is_udp() == target.scheme.is_udp()
        })
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
            Target::parse("ssh://h:22"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("vnc://h/x"),
            Err(TargetError::Path(_))
        ));
        assert!(matches!(
            Target::parse("ipmi://h:623/x"),
            Err(TargetError::Path(_))
        ));
        assert!(matches!(
            Target::parse("wss://h/a b"),
            Err(TargetError::Path(_))
        ));
        assert!(matches!(
            Target::parse("wss://h/a#frag"),
            Err(TargetError::Path(_))
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
    fn schemes_default_ports_and_paths() {
        assert_eq!(t("ipmi://10.0.0.5").to_string(), "ipmi://10.0.0.5:623");
        assert_eq!(t("https://bmc").to_string(), "https://bmc:443");
        assert_eq!(t("http://bmc").port, 80);
        assert_eq!(t("ws://bmc:5700/").to_string(), "ws://bmc:5700");
        let k = t("WSS://BMC/kvm/0");
        assert_eq!(
            (k.scheme, k.port, k.path.as_str()),
            (Scheme::Wss, 443, "/kvm/0")
        );
        assert_eq!(k.to_string(), "wss://bmc:443/kvm/0");
        assert_eq!(t("https://[::1]:8443/redfish/v1").key(), "[::1]:8443");
        assert_eq!(t("10.0.0.5:5900").scheme, Scheme::Tcp);
    }

    #[test]
    fn allow_list_keeps_udp_and_tcp_apart() {
        let allow = AllowList::new(vec![t("ipmi://bmc1"), t("https://bmc1")]);
        assert!(allow.permits(&t("ipmi://bmc1:623")));
        assert!(!allow.permits(&t("bmc1:623")), "ipmi:// allows UDP only");
        assert!(allow.permits(&t("wss://bmc1/console0")));
        assert!(allow.permits(&t("bmc1:443")));
        assert!(!allow.permits(&t("ipmi://bmc1:443")));
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
