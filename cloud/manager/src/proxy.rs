//! Who sent a request, as far as the manager can trust it (no I/O; unit-tested).
//!
//! The TCP peer is the client unless it is a trusted proxy (`--trusted-proxy CIDR`).
//! Only then are `X-Forwarded-For` and `X-Forwarded-Proto` read: the client is the
//! rightmost `X-Forwarded-For` address that is not itself a trusted proxy (proxies
//! append, so everything left of that is whatever the client wrote and is ignored),
//! and the scheme is the forwarded one. From anyone else both headers are ignored, so
//! a client cannot choose the address its failed logins count against, nor claim TLS.
//!
//! Bounds: at most [`MAX_FORWARDED_LEN`] bytes of `X-Forwarded-For` (all header lines
//! together) and [`MAX_FORWARDED_HOPS`] addresses are read; more is an error (`400`)
//! rather than a silent fallback to the proxy's address, which would let one client's
//! failures lock out everyone behind the proxy. An entry that is not an address where
//! the walk needs one ends the walk at the last trusted hop.

use std::net::IpAddr;
use std::str::FromStr;

/// Most bytes of `X-Forwarded-For` accepted from a trusted proxy.
pub const MAX_FORWARDED_LEN: usize = 2048;
/// Most addresses walked in `X-Forwarded-For`.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// An address range, `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A `--trusted-proxy` value that is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an address range (expected e.g. 10.0.0.0/8, fd00::/8 or 127.0.0.1): {0:?}")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err())?
            }
            Some(_) => return Err(err()),
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr {
            addr: addr.to_canonical(),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address: the TCP peer, or what a trusted proxy forwarded.
    pub ip: IpAddr,
    /// Whether the client's own connection was encrypted: TLS to us, or a trusted
    /// proxy said `X-Forwarded-Proto: https`, or (no forwarded scheme) the peer is on
    /// loopback (a TLS-terminating proxy on the same host).
    pub secure: bool,
}

/// A trusted proxy sent forwarding headers we refuse to guess through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    /// `X-Forwarded-For` over [`MAX_FORWARDED_LEN`] bytes or [`MAX_FORWARDED_HOPS`]
    /// addresses.
    #[error("X-Forwarded-For is too long")]
    TooLong,
}

/// Resolves the client of a request that arrived from `peer` (`tls`: over our TLS
/// listener) with these `X-Forwarded-For` and `X-Forwarded-Proto` header values (in
/// order; `None` for a value that is not visible ASCII).
pub fn resolve<'a>(
    peer: IpAddr,
    tls: bool,
    forwarded_for: impl DoubleEndedIterator<Item = Option<&'a str>> + Clone,
    forwarded_proto: impl Iterator<Item = Option<&'a str>>,
    trusted: &[Cidr],
) -> Result<Client, ForwardedError> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let direct = Client {
        ip: peer,
        secure: tls || peer.is_loopback(),
    };
    if !is_trusted(peer) {
        return Ok(direct);
    }
    let mut len = 0usize;
    for v in forwarded_for.clone() {
        len = len.saturating_add(v.map_or(0, str::len) + 1);
    }
    if len > MAX_FORWARDED_LEN + 1 {
        return Err(ForwardedError::TooLong);
    }
    // Rightmost address that is not a trusted proxy; a malformed entry ends the walk
    // (the hop that wrote it is the last we can vouch for).
    let mut ip = peer;
    let mut hops = 0;
    'walk: for value in forwarded_for.rev() {
        let Some(value) = value else { break };
        for entry in value.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            hops += 1;
            if hops > MAX_FORWARDED_HOPS {
                return Err(ForwardedError::TooLong);
            }
            let Some(addr) = parse_forwarded_addr(entry) else {
                break 'walk;
            };
            ip = addr;
            if !is_trusted(addr) {
                break 'walk;
            }
        }
    }
    // The scheme: https only if every forwarded value says so.
    let mut proto: Option<bool> = None;
    for v in forwarded_proto {
        for p in v.unwrap_or("invalid").split(',') {
            let https = p.trim().eq_ignore_ascii_case("https");
            proto = Some(proto.unwrap_or(true) && https);
        }
    }
    Ok(Client {
        ip,
        secure: proto.unwrap_or(direct.secure),
    })
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally `[v6]`, `v4:port`
/// or `[v6]:port` (some proxies add the port).
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    if s.len() > 64 {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| inner.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(peer: &str, tls: bool, xff: &[&str], xfp: &[&str], trusted: &[&str]) -> Client {
        try_run(peer, tls, xff, xfp, trusted).unwrap()
    }

    fn try_run(
        peer: &str,
        tls: bool,
        xff: &[&str],
        xfp: &[&str],
        trusted: &[&str],
    ) -> Result<Client, ForwardedError> {
        let xff: Vec<Option<&str>> = xff.iter().map(|s| Some(*s)).collect();
        let xfp: Vec<Option<&str>> = xfp.iter().map(|s| Some(*s)).collect();
        resolve(
            ip(peer),
            tls,
            xff.iter().copied(),
            xfp.iter().copied(),
            &cidrs(trusted),
        )
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "v4-mapped counts as v4");
        assert!(!c.contains(ip("fd00::1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10/8",
            "x",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(c.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn untrusted_peers_cannot_forward() {
        let c = run(
            "203.0.113.9",
            false,
            &["198.51.100.1"],
            &["https"],
            &["10.0.0.0/8"],
        );
        assert_eq!(
            c,
            Client {
                ip: ip("203.0.113.9"),
                secure: false
            }
        );
        // Loopback peers are secure by default (a TLS proxy on the same host) but do
        // not forward unless trusted.
        let c = run("127.0.0.1", false, &["198.51.100.1"], &["http"], &[]);
        assert_eq!(
            c,
            Client {
                ip: ip("127.0.0.1"),
                secure: true
            }
        );
        let c = run("203.0.113.9", true, &[], &[], &[]);
        assert!(c.secure);
    }

    #[test]
    fn trusted_proxies_forward_the_rightmost_untrusted_address() {
        let t = &["10.0.0.0/8", "127.0.0.1"];
        // client 198.51.100.7 -> proxy 10.0.0.2 -> proxy 10.0.0.3 (peer)
        let c = run(
            "10.0.0.3",
            false,
            &["198.51.100.7, 10.0.0.2"],
            &["https"],
            t,
        );
        assert_eq!(
            c,
            Client {
                ip: ip("198.51.100.7"),
                secure: true
            }
        );
        // A client that writes its own header cannot pick its address.
        let c = run("10.0.0.3", false, &["1.2.3.4, 198.51.100.7"], &["https"], t);
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Several header lines read as one list, in order.
        let c = run(
            "127.0.0.1",
            false,
            &["1.2.3.4", "198.51.100.7", "10.9.9.9"],
            &[],
            t,
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Ports and brackets, as some proxies write them.
        for entry in [
            "198.51.100.7:4711",
            "[2001:db8::5]",
            "[2001:db8::5]:443",
            "2001:db8::5",
        ] {
            let c = run("10.0.0.3", false, &[entry], &[], t);
            assert_ne!(c.ip, ip("10.0.0.3"), "{entry}");
        }
        // All hops trusted: the leftmost one.
        let c = run("10.0.0.3", false, &["10.0.0.1, 10.0.0.2"], &[], t);
        assert_eq!(c.ip, ip("10.0.0.1"));
        // No header: the proxy itself.
        let c = run("10.0.0.3", true, &[], &[], t);
        assert_eq!(
            c,
            Client {
                ip: ip("10.0.0.3"),
                secure: true
            }
        );
    }

    #[test]
    fn forwarded_proto_decides_security_behind_a_trusted_proxy() {
        let t = &["10.0.0.0/8", "127.0.0.0/8"];
        assert!(
            !run("127.0.0.1", false, &[], &["http"], t).secure,
            "loopback proxy says http"
        );
        assert!(
            !run("10.0.0.3", true, &[], &["http"], t).secure,
            "TLS to us, http before"
        );
        assert!(run("10.0.0.3", false, &[], &["HTTPS"], t).secure);
        assert!(!run("10.0.0.3", false, &[], &["https, http"], t).secure);
        assert!(!run("10.0.0.3", false, &[], &["https", "gopher"], t).secure);
        assert!(
            !run("10.0.0.3", false, &[], &[], t).secure,
            "no scheme, not loopback"
        );
        let bad = resolve(
            ip("10.0.0.3"),
            false,
            std::iter::empty(),
            [None].into_iter(),
            &cidrs(t),
        )
        .unwrap();
        assert!(!bad.secure, "a non-ASCII scheme is not https");
    }

    #[test]
    fn malformed_and_oversized_headers() {
        let t = &["10.0.0.0/8"];
        // Garbage where the walk needs an address: stop at the last trusted hop.
        let c = run("10.0.0.3", false, &["198.51.100.7, garbage"], &[], t);
        assert_eq!(c.ip, ip("10.0.0.3"));
        let c = run(
            "10.0.0.3",
            false,
            &["198.51.100.7, 10.0.0.2, 1.2.3.4.5"],
            &[],
            t,
        );
        assert_eq!(c.ip, ip("10.0.0.3"));
        let c = run("10.0.0.3", false, &["garbage, 198.51.100.7"], &[], t);
        assert_eq!(
            c.ip,
            ip("198.51.100.7"),
            "garbage left of the client is irrelevant"
        );
        let c = run("10.0.0.3", false, &[", ,198.51.100.7,,"], &[], t);
        assert_eq!(c.ip, ip("198.51.100.7"));
        for entry in [
            "[::1",
            "[zz::]:1",
            "1.2.3.4:99999",
            "[::1]x",
            "unknown",
            "_hidden",
        ] {
            assert_eq!(
                run("10.0.0.3", false, &[entry], &[], t).ip,
                ip("10.0.0.3"),
                "{entry}"
            );
        }
        let non_ascii = resolve(
            ip("10.0.0.3"),
            false,
            [Some("198.51.100.7"), None].into_iter(),
            std::iter::empty(),
            &cidrs(t),
        )
        .unwrap();
        assert_eq!(non_ascii.ip, ip("10.0.0.3"));
        // Oversized: refused, not guessed.
        let long = "10.0.0.1, ".repeat(300);
        assert_eq!(
            try_run("10.0.0.3", false, &[&long], &[], t),
            Err(ForwardedError::TooLong)
        );
        let many = vec!["10.0.0.1"; 40];
        assert_eq!(
            try_run("10.0.0.3", false, &many, &[], t),
            Err(ForwardedError::TooLong)
        );
        // ...but only from a trusted peer (others' headers are never read).
        assert!(try_run("203.0.113.1", false, &[&long], &[], t).is_ok());
    }
}
