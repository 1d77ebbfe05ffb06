//! The BMC's origin (scheme, host, port) and the same-origin policy for every link
//! and redirect the client follows: credentials and session tokens only ever go to
//! the origin the caller named.

use crate::error::{Error, Result};

/// Longest path the client requests.
pub const MAX_PATH: usize = 2048;

/// Scheme, host and port of the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    /// Lower-case host; IPv6 literals in brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `https://host[:port][/…]` or `http://…`. The path is ignored: Redfish
    /// lives at `/redfish/v1/`.
    pub fn parse(url: &str) -> Result<Self> {
        Self::split(url).map(|(o, _)| o).ok_or_else(|| {
            Error::Config(format!(
                "bad BMC URL {url:?}: want http(s)://host[:port], without user info"
            ))
        })
    }

    /// Splits an absolute `http(s)://host[:port][path]` URL into its origin and its
    /// path (`/` when empty; a fragment is dropped). `None` for anything else,
    /// including user info, an empty host, a bad port or characters outside RFC 3986.
    pub(crate) fn split(url: &str) -> Option<(Self, String)> {
        let (scheme, rest) = url.split_once("://")?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return None;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']')?;
            if addr.is_empty()
                || !addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return None;
            }
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return None,
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        } else {
            let (h, p) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return None;
            }
            (h.to_ascii_lowercase(), p)
        };
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().ok().filter(|&p| p != 0)?
            }
            Some(_) => return None,
        };
        let tail = tail.split('#').next().unwrap_or_default();
        let path = if tail.is_empty() {
            "/".to_owned()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        valid_path(&path).then_some((Self { https, host, port }, path))
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host (lower case; IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The absolute URL of `path` (which must start with `/`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}{path}", self.host, self.port)
    }

    /// Resolves a link or a `Location` found at `base_path` to a path on this origin.
    /// Absolute paths and relative references stay on the origin; absolute URLs
    /// must name this very origin (same scheme, host and port); scheme-relative
    /// (`//host/…`) and anything else are refused.
    pub fn resolve(&self, base_path: &str, link: &str) -> Result<String> {
        let refuse = |why: &str| Err(Error::Protocol(format!("link {link:?} refused: {why}")));
        if link.len() > MAX_PATH {
            return refuse("too long");
        }
        if link.is_empty()
            || link
                .chars()
                .any(|c| c.is_control() || c == ' ' || c == '\\')
        {
            return refuse("empty or has control characters, spaces or backslashes");
        }
        if link.starts_with("//") {
            return refuse("scheme-relative URL");
        }
        let path = if link.starts_with('/') {
            link.to_owned()
        } else if link.contains("://") || link.split('/').next().is_some_and(|s| s.contains(':')) {
            match Self::split(link) {
                Some((o, path)) if o == *self => path,
                Some(_) => return refuse("another origin"),
                None => return refuse("not an http(s) URL"),
            }
        } else {
            // A relative reference: replace the last segment of the base path.
            let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{link}")
        };
        if !path.starts_with('/') || path.starts_with("//") {
            return refuse("not a path on this origin");
        }
        if path.len() > MAX_PATH || !valid_path(&path) {
            return refuse("not a valid URI path");
        }
        Ok(path)
    }
}

/// A path (and query) made only of RFC 3986 characters: unreserved, sub-delims,
/// `:@/?%`. No fragment, space, control, quote, angle bracket or backslash.
fn valid_path(p: &str) -> bool {
    p.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// What to do with a redirect status.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    /// Not a redirect (or one not to follow): hand the response to the caller.
    No,
    /// Repeat the request (same method and body) at this path.
    Same(String),
    /// Repeat as a GET without a body at this path (303, or 301/302 after a GET).
    AsGet(String),
}

/// The redirect policy: 301/302/303/307/308 with a same-origin `Location` are
/// followed (307/308 keep method and body, the others only for GET, HEAD, or as a
/// GET after 303); a `Location` to another origin is an error.
pub fn redirect(
    origin: &Origin,
    method: &str,
    status: u16,
    current: &str,
    location: Option<&str>,
) -> Result<Redirect> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Ok(Redirect::No);
    }
    let Some(location) = location else {
        return Err(Error::Protocol(format!("HTTP {status} without Location")));
    };
    let path = origin.resolve(current, location)?;
    let safe = matches!(method, "GET" | "HEAD");
    Ok(match status {
        307 | 308 => Redirect::Same(path),
        303 => Redirect::AsGet(path),
        _ if safe => Redirect::Same(path),
        _ => Redirect::No,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    #[test]
    fn parse_origins() {
        let a = o("https://BMC.example:8443/redfish/v1/");
        assert_eq!(
            (a.is_https(), a.host(), a.port()),
            (true, "bmc.example", 8443)
        );
        assert_eq!(o("https://10.0.0.5").port(), 443);
        assert_eq!(o("http://10.0.0.5").port(), 80);
        assert_eq!(o("https://[fe80::1]:444").host(), "[fe80::1]");
        assert_eq!(
            o("https://h:1").url("/redfish/v1/"),
            "https://h:1/redfish/v1/"
        );
        for bad in [
            "ftp://h",
            "h:443",
            "https://",
            "https://user:pw@h/",
            "",
            "/redfish",
        ] {
            assert_eq!(
                Origin::parse(bad).unwrap_err().code(),
                "bmc_config",
                "{bad}"
            );
        }
    }

    #[test]
    fn resolve_keeps_links_on_the_origin() {
        let b = o("https://10.0.0.5:8443");
        let here = "/redfish/v1/Systems/node1";
        assert_eq!(
            b.resolve(here, "/redfish/v1/Systems/1").unwrap(),
            "/redfish/v1/Systems/1"
        );
        assert_eq!(
            b.resolve(here, "https://10.0.0.5:8443/redfish/v1/Systems/u?x=1")
                .unwrap(),
            "/redfish/v1/Systems/u?x=1"
        );
        assert_eq!(
            b.resolve(here, "HTTPS://10.0.0.5:8443/x").unwrap(),
            "/x",
            "scheme is case-insensitive"
        );
        assert_eq!(
            b.resolve(here, "uuid-1").unwrap(),
            "/redfish/v1/Systems/uuid-1"
        );
        assert_eq!(
            o("https://h").resolve("/", "https://h:443/a").unwrap(),
            "/a"
        );
    }

    #[test]
    fn resolve_refuses_other_origins() {
        let b = o("https://10.0.0.5:8443");
        for link in [
            "https://10.0.0.6:8443/redfish/v1/",
            "https://10.0.0.5:8444/redfish/v1/",
            "http://10.0.0.5:8443/redfish/v1/",
            "https://10.0.0.5/redfish/v1/",
            "//evil.example/redfish/v1/",
            "https://10.0.0.5:8443@evil.example/",
            "https://evil.example#@10.0.0.5:8443/",
            "javascript:alert(1)",
            "/redfish/v1/\r\nX-Injected: 1",
            "/a b",
            "\\\\evil\\x",
            "",
            "Systems/\u{e0102}é",
            "/a#frag",
            "/a<b>",
        ] {
            let e = b.resolve("/redfish/v1/", link).unwrap_err();
            assert_eq!(e.code(), "bmc_protocol", "{link:?} -> {e}");
        }
        assert!(
            b.resolve("/", &format!("/{}", "a".repeat(MAX_PATH)))
                .is_err()
        );
    }

    #[test]
    fn redirect_policy() {
        let b = o("https://127.0.0.1:8000");
        let here = "/redfish/v1/Systems/node1";
        let to = Some("https://127.0.0.1:8000/redfish/v1/Systems/uuid");
        let p = "/redfish/v1/Systems/uuid".to_owned();
        assert_eq!(redirect(&b, "GET", 200, here, None).unwrap(), Redirect::No);
        assert_eq!(
            redirect(&b, "GET", 307, here, to).unwrap(),
            Redirect::Same(p.clone())
        );
        assert_eq!(
            redirect(&b, "POST", 307, here, to).unwrap(),
            Redirect::Same(p.clone())
        );
        assert_eq!(
            redirect(&b, "POST", 308, here, to).unwrap(),
            Redirect::Same(p.clone())
        );
        assert_eq!(
            redirect(&b, "GET", 301, here, to).unwrap(),
            Redirect::Same(p.clone())
        );
        assert_eq!(redirect(&b, "POST", 302, here, to).unwrap(), Redirect::No);
        assert_eq!(
            redirect(&b, "POST", 303, here, to).unwrap(),
            Redirect::AsGet(p)
        );
        let away = Some("https://127.0.0.2:8000/redfish/v1/Systems/uuid");
        for (m, s) in [
            ("GET", 301),
            ("GET", 302),
            ("GET", 307),
            ("POST", 308),
            ("PATCH", 303),
        ] {
            assert_eq!(
                redirect(&b, m, s, here, away).unwrap_err().code(),
                "bmc_protocol"
            );
        }
        assert_eq!(
            redirect(&b, "GET", 302, here, None).unwrap_err().code(),
            "bmc_protocol"
        );
    }
}
