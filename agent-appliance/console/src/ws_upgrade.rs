//! The WebSocket client upgrade (RFC 6455 §4.1), sans-IO: the request bytes out, the
//! server's response bytes in, a verdict and the length of the response head out (any
//! bytes after it are already WebSocket frames). The 16-byte key nonce comes from the
//! caller.

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};

/// The largest upgrade response head accepted (status line and headers).
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The server answered with another HTTP status than 101.
    #[error("HTTP {status} {reason}")]
    Status {
        /// The status code.
        status: u16,
        /// The reason phrase (sanitised).
        reason: String,
    },
    /// The response head exceeds [`MAX_RESPONSE_HEAD`].
    #[error("response head longer than {MAX_RESPONSE_HEAD} bytes")]
    TooLong,
    /// The response is not HTTP/1.1 or misses a required header.
    #[error("malformed upgrade response: {0}")]
    Malformed(&'static str),
    /// `Sec-WebSocket-Accept` does not match the key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// The server chose a subprotocol that was not asked for.
    #[error("server chose subprotocol {0:?}, not asked for")]
    BadSubprotocol(String),
    /// The server enabled an extension, and none was offered.
    #[error("server enabled extensions {0:?}, none offered")]
    Extensions(String),
    /// A request header name or value is not valid HTTP.
    #[error("invalid request header")]
    BadHeader,
}

/// One upgrade in progress: knows the accept value to expect.
#[derive(Debug, Clone)]
pub struct Upgrade {
    accept: String,
    /// The one subprotocol the server may choose (or none).
    subprotocol: Option<String>,
}

/// The upgrade request for `host` (the Host header, `host:port`) and `path`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The Host header value.
    pub host: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// `Sec-WebSocket-Protocol` to ask for.
    pub subprotocol: Option<&'static str>,
    /// One extra header (session token, cookie). A `Sec-WebSocket-Protocol` header
    /// here (a token passed as subprotocol, as browsers must) is the subprotocol the
    /// server may echo.
    pub header: Option<(&'a str, &'a str)>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("host", &self.host)
            .field("path", &self.path)
            .field("subprotocol", &self.subprotocol)
            .field("header", &self.header.map(|(name, _)| (name, "***")))
            .finish()
    }
}

impl Upgrade {
    /// Builds the request bytes for `req` with the key nonce `nonce`.
    pub fn start(req: &Request<'_>, nonce: [u8; 16]) -> Result<(Upgrade, Vec<u8>), UpgradeError> {
        let key = base64(&nonce);
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            req.path, req.host
        );
        let bad = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
        if bad(req.path) || bad(req.host) {
            return Err(UpgradeError::BadHeader);
        }
        let mut subprotocol = req.subprotocol.map(str::to_owned);
        if let Some(p) = req.subprotocol {
            out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        if let Some((name, value)) = req.header {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let value_ok = value.bytes().all(|b| b == b'\t' || !b.is_ascii_control());
            if !name_ok || !value_ok {
                return Err(UpgradeError::BadHeader);
            }
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                if subprotocol.is_some() {
                    return Err(UpgradeError::BadHeader);
                }
                subprotocol = Some(value.trim().to_owned());
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let accept = accept_for(&key);
        Ok((
            Upgrade {
                accept,
                subprotocol,
            },
            out.into_bytes(),
        ))
    }

    /// Looks at what the server sent so far. `Ok(None)`: the head is incomplete, read
    /// more. `Ok(Some(n))`: upgraded; the first `n` bytes were the head, the rest are
    /// WebSocket frames.
    pub fn handle_response(&self, buf: &[u8]) -> Result<Option<usize>, UpgradeError> {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if buf.len() >= MAX_RESPONSE_HEAD {
                Err(UpgradeError::TooLong)
            } else {
                Ok(None)
            };
        };
        let head_len = end + 4;
        if head_len > MAX_RESPONSE_HEAD {
            return Err(UpgradeError::TooLong);
        }
        let head = buf.get(..end).ok_or(UpgradeError::Malformed("head"))?;
        let head = std::str::from_utf8(head).map_err(|_| UpgradeError::Malformed("not text"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("HTTP/1.1") {
            return Err(UpgradeError::Malformed("not an HTTP/1.1 status line"));
        }
        let status = parts
            .next()
            .filter(|s| s.len() == 3)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(UpgradeError::Malformed("status code"))?;
        if status != 101 {
            let reason = parts.next().unwrap_or_default();
            return Err(UpgradeError::Status {
                status,
                reason: crate::rfb::sanitize(reason.as_bytes()),
            });
        }
        let (mut upgrade, mut connection, mut accept) = (false, false, false);
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or(UpgradeError::Malformed("header line"))?;
            let value = value.trim();
            let has_token = |t: &str| value.split(',').any(|v| v.trim().eq_ignore_ascii_case(t));
            match name.to_ascii_lowercase().as_str() {
                "upgrade" => upgrade |= has_token("websocket"),
                "connection" => connection |= has_token("upgrade"),
                "sec-websocket-accept" => {
                    if value != self.accept {
                        return Err(UpgradeError::BadAccept);
                    }
                    accept = true;
                }
                "sec-websocket-protocol" if Some(value) != self.subprotocol.as_deref() => {
                    return Err(UpgradeError::BadSubprotocol(crate::rfb::sanitize(
                        value.as_bytes(),
                    )));
                }
                "sec-websocket-extensions" if !value.is_empty() => {
                    return Err(UpgradeError::Extensions(crate::rfb::sanitize(
                        value.as_bytes(),
                    )));
                }
                _ => {}
            }
        }
        match (upgrade, connection, accept) {
            (false, _, _) => Err(UpgradeError::Malformed("no Upgrade: websocket")),
            (_, false, _) => Err(UpgradeError::Malformed("no Connection: Upgrade")),
            (_, _, false) => Err(UpgradeError::Malformed("no Sec-WebSocket-Accept")),
            _ => Ok(Some(head_len)),
        }
    }
}

/// `base64(SHA-1(key + GUID))`.
fn accept_for(key: &str) -> String {
    let d = digest(&SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64(d.as_ref())
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's example nonce ("the sample nonce").
    const NONCE: [u8; 16] = *b"the sample nonce";

    fn req(subprotocol: Option<&'static str>) -> Request<'static> {
        Request {
            host: "127.0.0.1:5700",
            path: "/kvm/0",
            subprotocol,
            header: None,
        }
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&NONCE), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn rfc6455_accept_and_qemus_answer() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (up, request) = Upgrade::start(&req(Some("binary")), NONCE).unwrap();
        let request = String::from_utf8(request).unwrap();
        assert!(request.starts_with("GET /kvm/0 HTTP/1.1\r\nHost: 127.0.0.1:5700\r\n"));
        assert!(request.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(request.contains("Sec-WebSocket-Protocol: binary\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
        // QEMU 9's answer to exactly this key, captured, followed by a first frame.
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nServer: QEMU VNC\r\n\
            Date: Thu, 03 Dec 2026 16:19:29 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
            .to_vec();
        let head = resp.len();
        resp.extend_from_slice(b"\x82\x0cRFB 003.008\n");
        for cut in 0..head {
            assert_eq!(up.handle_response(&resp[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(up.handle_response(&resp), Ok(Some(head)));
    }

    #[test]
    fn no_subprotocol_chosen_is_fine_another_is_not() {
        let (up, _) = Upgrade::start(&req(Some("binary")), NONCE).unwrap();
        let ok = b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
            sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(up.handle_response(ok), Ok(Some(ok.len())));
        let other = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: base64\r\n\r\n";
        assert_eq!(
            up.handle_response(other),
            Err(UpgradeError::BadSubprotocol("base64".into()))
        );
        let (none, _) = Upgrade::start(&req(None), NONCE).unwrap();
        assert!(matches!(
            none.handle_response(other),
            Err(UpgradeError::BadSubprotocol(_))
        ));
    }

    #[test]
    fn token_as_subprotocol_may_be_echoed() {
        let r = Request {
            header: Some(("Sec-WebSocket-Protocol", "abc123token")),
            ..req(None)
        };
        let (up, bytes) = Upgrade::start(&r, NONCE).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches("Sec-WebSocket-Protocol").count(), 1, "{text}");
        let echo = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: abc123token\r\n\r\n";
        assert_eq!(up.handle_response(echo), Ok(Some(echo.len())));
        // Not together with a subprotocol of our own.
        let both = Request {
            header: Some(("sec-websocket-protocol", "t")),
            ..req(Some("binary"))
        };
        assert_eq!(
            Upgrade::start(&both, NONCE).err(),
            Some(UpgradeError::BadHeader)
        );
    }

    #[test]
    fn refusals_and_malformed_answers() {
        let (up, _) = Upgrade::start(&req(None), NONCE).unwrap();
        assert_eq!(
            up.handle_response(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n\r\n"),
            Err(UpgradeError::Status {
                status: 401,
                reason: "Unauthorized".into()
            })
        );
        let wrong_accept = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert_eq!(
            up.handle_response(wrong_accept),
            Err(UpgradeError::BadAccept)
        );
        let no_accept = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(matches!(
            up.handle_response(no_accept),
            Err(UpgradeError::Malformed(_))
        ));
        let ext = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
            Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        assert!(matches!(
            up.handle_response(ext),
            Err(UpgradeError::Extensions(_))
        ));
        for bad in [
            &b"RFB 003.008\n\r\n\r\n"[..],
            b"HTTP/1.0 101 OK\r\n\r\n",
            b"HTTP/1.1 1x1 OK\r\n\r\n",
        ] {
            assert!(
                matches!(up.handle_response(bad), Err(UpgradeError::Malformed(_))),
                "{bad:?}"
            );
        }
        // An endless head is refused at the bound.
        let endless = vec![b'x'; MAX_RESPONSE_HEAD];
        assert_eq!(up.handle_response(&endless), Err(UpgradeError::TooLong));
        assert_eq!(
            up.handle_response(&endless[..MAX_RESPONSE_HEAD - 1]),
            Ok(None)
        );
    }

    #[test]
    fn request_headers_are_validated() {
        let mut r = req(None);
        r.header = Some(("X-Auth-Token", "abc\r\nEvil: 1"));
        assert_eq!(
            Upgrade::start(&r, NONCE).err(),
            Some(UpgradeError::BadHeader)
        );
        r.header = Some(("Bad Name", "v"));
        assert_eq!(
            Upgrade::start(&r, NONCE).err(),
            Some(UpgradeError::BadHeader)
        );
        r.header = Some(("Cookie", "SESSION=abc; x=y"));
        let (_, bytes) = Upgrade::start(&r, NONCE).unwrap();
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains("Cookie: SESSION=abc; x=y\r\n")
        );
        let r = Request {
            path: "/a b",
            ..req(None)
        };
        assert_eq!(
            Upgrade::start(&r, NONCE).err(),
            Some(UpgradeError::BadHeader)
        );
    }
}
