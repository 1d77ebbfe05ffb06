//! Checks of inventory input: BMC endpoint URLs by role, certificate fingerprints,
//! gateway and agent ids. Pure functions, no I/O.
//!
//! Endpoint URLs are `scheme://host[:port][/path]` with a scheme allowed for the role:
//!
//! | role | schemes | default port |
//! |---|---|---|
//! | power | `ipmi` (IPMI over LAN), `https` (Redfish) | 623, 443 |
//! | serial | `ipmi` (SOL), `wss` | 623, 443 |
//! | graphical | `vnc`, `ws`, `wss` | 5900, 80, 443 |
//!
//! Refused: user info (`user:pass@host`: credentials belong in the write-only
//! credentials field, never in a URL that is returned and logged), fragments, paths on
//! `ipmi`/`vnc`, whitespace and control characters, port 0 or over 65535, host names
//! the resolver would read as legacy numeric addresses (`010.0.0.5`, `10.0.5`,
//! `0x0a000005`), over [`MAX_URL_LEN`] bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 512;
/// Longest gateway or agent id.
pub const MAX_REF_LEN: usize = 128;

/// What an endpoint is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRole {
    /// Power status and control.
    Power,
    /// Serial console.
    Serial,
    /// Graphical console.
    Graphical,
}

impl EndpointRole {
    /// Name in messages.
    pub fn name(self) -> &'static str {
        match self {
            EndpointRole::Power => "power",
            EndpointRole::Serial => "serial",
            EndpointRole::Graphical => "graphical",
        }
    }

    fn schemes(self) -> &'static [(&'static str, u16)] {
        match self {
            EndpointRole::Power => &[("ipmi", 623), ("https", 443)],
            EndpointRole::Serial => &[("ipmi", 623), ("wss", 443)],
            EndpointRole::Graphical => &[("vnc", 5900), ("ws", 80), ("wss", 443)],
        }
    }
}

/// A checked endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Scheme, lower case.
    pub scheme: String,
    /// Host name (lower case) or address (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when absent).
    pub port: u16,
    /// Path and query (`/` when absent; only ws/wss/https).
    pub path: String,
}

impl Endpoint {
    /// The normalized URL (lower-case scheme and host, explicit port).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.scheme.as_str() {
            "ipmi" | "vnc" => format!("{}://{host}:{}", self.scheme, self.port),
            _ => format!("{}://{host}:{}{}", self.scheme, self.port, self.path),
        }
    }
}

/// Parses and checks `url` for `role`; the error is a message for the client.
pub fn parse_endpoint(role: EndpointRole, url: &str) -> Result<Endpoint, String> {
    let err = |what: &str| format!("{} endpoint: {what}", role.name());
    if url.len() > MAX_URL_LEN {
        return Err(err("longer than 512 bytes"));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) || !url.is_ascii() {
        return Err(err("must be printable ASCII without spaces"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("expected scheme://host[:port]"))?;
    let scheme = scheme.to_ascii_lowercase();
    let &(_, default_port) = role
        .schemes()
        .iter()
        .find(|(s, _)| *s == scheme)
        .ok_or_else(|| {
            let allowed: Vec<&str> = role.schemes().iter().map(|(s, _)| *s).collect();
            err(&format!("scheme must be one of {}", allowed.join(", ")))
        })?;
    if rest.contains('#') {
        return Err(err("no fragment allowed"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(err(
            "no user info allowed: put credentials in the credentials field",
        ));
    }
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if matches!(scheme.as_str(), "ipmi" | "vnc") && path != "/" {
        return Err(err("no path allowed for ipmi:// and vnc://"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| err("bad host or port"))?;
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("port must be 1-65535"))?,
    };
    let host = check_host(host).ok_or_else(|| err("bad host"))?;
    Ok(Endpoint {
        scheme,
        host,
        port,
        path,
    })
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

fn check_host(host: &str) -> Option<String> {
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    if host.contains(':') {
        return host.parse::<Ipv6Addr>().ok().map(|a| a.to_string());
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let labels: Vec<&str> = host.split('.').collect();
    let last = labels.last()?;
    // A numeric-looking last label makes resolvers read the name as an address
    // (inet_aton forms): only a canonical dotted quad is accepted then.
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        let ip = host.parse::<Ipv4Addr>().ok()?;
        return (ip.to_string() == host).then_some(host.to_owned());
    }
    let ok = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then(|| host.to_owned())
}

/// Normalizes a SHA-256 certificate fingerprint: 64 hex digits, optionally in pairs
/// separated by `:`; returns lower-case hex without separators.
pub fn parse_fingerprint(fp: &str) -> Result<String, String> {
    let hex: String = fp.chars().filter(|c| *c != ':').collect();
    let pairs_ok = !fp.contains(':') || fp.split(':').all(|p| p.len() == 2);
    if hex.len() != 64 || !pairs_ok || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("cert_sha256 must be 64 hex digits (pairs may be separated by ':')".into());
    }
    Ok(hex.to_ascii_lowercase())
}

/// Checks a gateway or agent id: 1..=[`MAX_REF_LEN`] of `[A-Za-z0-9_.:-]`.
pub fn check_ref(what: &str, id: &str) -> Result<String, String> {
    if id.is_empty()
        || id.len() > MAX_REF_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(format!("{what} must be 1-128 of [A-Za-z0-9_.:-]"));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::EndpointRole::{Graphical, Power, Serial};
    use super::*;

    #[test]
    fn accepted_urls_are_normalized() {
        for (role, url, norm) in [
            (Power, "ipmi://10.0.0.5", "ipmi://10.0.0.5:623"),
            (
                Power,
                "IPMI://BMC-1.Example.com:6230",
                "ipmi://bmc-1.example.com:6230",
            ),
            (Power, "https://10.0.0.5:8443", "https://10.0.0.5:8443/"),
            (
                Power,
                "https://bmc/redfish/v1",
                "https://bmc:443/redfish/v1",
            ),
            (
                Serial,
                "ipmi://[2001:db8::1]:623",
                "ipmi://[2001:db8::1]:623",
            ),
            (
                Serial,
                "wss://console.example/ws?port=1",
                "wss://console.example:443/ws?port=1",
            ),
            (Graphical, "vnc://127.0.0.1:5901", "vnc://127.0.0.1:5901"),
            (
                Graphical,
                "ws://h:6080/websockify",
                "ws://h:6080/websockify",
            ),
            (Graphical, "wss://h?token=x", "wss://h:443/?token=x"),
        ] {
            assert_eq!(
                parse_endpoint(role, url).map(|e| e.url()),
                Ok(norm.into()),
                "{url}"
            );
        }
    }

    #[test]
    fn refused_urls() {
        for (role, url) in [
            (Power, "vnc://h:5900"),
            (Power, "http://h"),
            (Serial, "ws://h"),
            (Graphical, "https://h"),
            (Power, "ipmi://admin:secret@h"),
            (Graphical, "vnc://u@h"),
            (Power, "ipmi://h:0"),
            (Power, "ipmi://h:65536"),
            (Power, "ipmi://h:"),
            (Power, "ipmi://h:x"),
            (Power, "ipmi://h/path"),
            (Graphical, "vnc://h/x"),
            (Power, "ipmi://"),
            (Power, "ipmi://h h"),
            (Power, "ipmi://h\n"),
            (Power, "ipmi://010.0.0.5"),
            (Power, "ipmi://10.0.5"),
            (Power, "ipmi://0x0a000005"),
            (Power, "ipmi://999.1.1.1"),
            (Power, "ipmi://-h"),
            (Power, "ipmi://a..b"),
            (Power, "ipmi://[::1"),
            (Power, "ipmi://[zz::1]"),
            (Power, "ipmi://::1"),
            (Graphical, "wss://h#frag"),
            (Power, "10.0.0.5:623"),
            (Power, "ipmi://hé"),
        ] {
            assert!(parse_endpoint(role, url).is_err(), "{url} must be refused");
        }
        let long = format!("https://h/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_endpoint(Power, &long).is_err());
        let e = parse_endpoint(Power, "ipmi://admin:secret@h").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn fingerprints_and_refs() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), "ab".repeat(32));
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), "ab".repeat(32));
        assert!(parse_fingerprint(&"ab".repeat(31)).is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&format!("a:{}", "b".repeat(63))).is_err());
        assert!(check_ref("agent_id", "agt_1.x:y-z").is_ok());
        assert!(check_ref("agent_id", "").is_err());
        assert!(check_ref("agent_id", "a b").is_err());
        assert!(check_ref("agent_id", &"a".repeat(129)).is_err());
    }
}
