//! Console targets: what the gateway asks for in a stream open, and the parsed
//! endpoint (transport chosen by URL scheme).

use zeroize::Zeroizing;

use crate::error::Error;

/// A graphical console to open: `vnc://host:port` or `host:port` (raw TCP, default
/// port 5900), `ws://host[:port]/path` or `wss://host[:port]/path` (RFB in binary
/// WebSocket messages, as QEMU's websocket port, websockify and OpenBMC's `/kvm/0`).
#[derive(Clone, Default)]
pub struct VncTarget {
    /// The endpoint URL.
    pub url: String,
    /// The VNC password, used if the BMC asks for VNC Authentication.
    pub password: Option<Zeroizing<String>>,
    /// For `wss://`: the SHA-256 fingerprint of the BMC's leaf certificate.
    pub cert_sha256: Option<[u8; 32]>,
    /// For `wss://` without a pin: accept the certificate and report its fingerprint
    /// ([`crate::BmcConsole::observed_cert_sha256`]) so the caller can store it.
    pub trust_on_first_use: bool,
}

impl std::fmt::Debug for VncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VncTarget")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "cert_sha256",
                &self.cert_sha256.map(|p| crate::error::hex(&p)),
            )
            .field("trust_on_first_use", &self.trust_on_first_use)
            .finish()
    }
}

impl VncTarget {
    /// A target without password or pin.
    pub fn new(url: impl Into<String>) -> Self {
        VncTarget {
            url: url.into(),
            ..Default::default()
        }
    }
}

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Raw TCP.
    Tcp,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    /// Host name or IP address, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query for WebSocket (starts with `/`).
    pub(crate) path: String,
}

impl Endpoint {
    /// Parses `vnc://`, `ws://`, `wss://` URLs and bare `host[:port]`.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = |reason| Error::BadTarget {
            url: url.to_owned(),
            reason,
        };
        if url.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (scheme, rest) = match url.split_once("://") {
            None => (Scheme::Tcp, url),
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "vnc" => (Scheme::Tcp, rest),
                "ws" => (Scheme::Ws, rest),
                "wss" => (Scheme::Wss, rest),
                _ => return Err(bad("unknown scheme (vnc, ws, wss)")),
            },
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("credentials do not belong in the URL"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let port = match (port, scheme) {
            (Some(p), _) => p,
            (None, Scheme::Tcp) => 5900,
            (None, Scheme::Ws) => 80,
            (None, Scheme::Wss) => 443,
        };
        let path = match scheme {
            Scheme::Tcp if !path.is_empty() && path != "/" => {
                return Err(bad("a raw VNC target has no path"));
            }
            Scheme::Tcp => String::new(),
            _ if path.starts_with('/') => path.to_owned(),
            _ => format!("/{path}"),
        };
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]`; None when malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.parse::<std::net::Ipv4Addr>().is_err() && !valid_name(host) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            return None;
        }
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return None,
            Ok(n) => Some(n),
        },
    };
    Some((host, port))
}

/// A DNS name (letters, digits, `-`, `_`; labels of 1–63 bytes) that the system
/// resolver cannot read as a legacy numeric address ("010.0.0.5" octal, "10.0.5"
/// short form, "0x0a000005" hex), which would reach another host than it shows.
fn valid_name(host: &str) -> bool {
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2
            && last[..2].eq_ignore_ascii_case("0x")
            && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    labels_ok && !numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn schemes_and_defaults() {
        let e = ep("vnc://10.0.0.5:5901");
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tcp, "10.0.0.5", 5901)
        );
        let e = ep("bmc.example:5900");
        assert_eq!((e.scheme, e.port), (Scheme::Tcp, 5900));
        assert_eq!(ep("bmc").port, 5900);
        let e = ep("ws://127.0.0.1:5700");
        assert_eq!((e.scheme, e.path.as_str()), (Scheme::Ws, "/"));
        assert_eq!(e.authority(), "127.0.0.1:5700");
        let e = ep("wss://bmc/kvm/0?x=1");
        assert_eq!(
            (e.scheme, e.port, e.path.as_str()),
            (Scheme::Wss, 443, "/kvm/0?x=1")
        );
        assert_eq!(e.authority(), "bmc:443");
        let e = ep("WSS://[fe80::1]:8443/console0");
        assert_eq!((e.host.as_str(), e.port), ("fe80::1", 8443));
        assert_eq!(e.authority(), "[fe80::1]:8443");
        assert_eq!(ep("ws://h?token=a").path, "/?token=a");
        assert_eq!(ep("vnc://[::1]").port, 5900);
        assert_eq!(ep("bmc-01.rack_2.lab:5901").host, "bmc-01.rack_2.lab");
    }

    #[test]
    fn rejects_bad_targets() {
        for url in [
            "http://bmc:80",
            "vnc://user:pw@bmc:5900",
            "vnc://bmc:0",
            "vnc://bmc:65536",
            "vnc://bmc:+5900",
            "vnc://bmc:5900/path",
            "vnc://:5900",
            "ws://bm c/",
            "ws://bmc\n/",
            "fe80::1:5900",
            "[fe80::1",
            "[nothex]:1",
            "[::1]5900",
            "",
            "010.0.0.5:5900",
            "vnc://10.0.5",
            "ws://0x0a000005/",
            "vnc://-bmc:5900",
            "vnc://bmc..lab:5900",
        ] {
            let e = Endpoint::parse(url).expect_err(url);
            assert_eq!(e.code(), "bmc_bad_target");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut t = VncTarget::new("vnc://bmc");
        t.password = Some(Zeroizing::new("hunter2".into()));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("***"), "{dbg}");
    }
}
