//! The RFB (VNC) security handshake, sans-IO: bytes in, bytes out, no sockets, no
//! clock.
//!
//! Two state machines, both stopping right after a successful SecurityResult (or its
//! absence, where the protocol version has none), so that everything after it
//! (ClientInit, ServerInit, the session) is relayed unchanged between the two legs:
//!
//! - [`BmcHandshake`]: the agent as RFB *client* toward the BMC. ProtocolVersion 3.3,
//!   3.7, 3.8 (and the 3.889 / 4.x variants, read as 3.8), security type None or VNC
//!   Authentication (DES challenge-response, see [`vnc_auth`]).
//! - [`FrontHandshake`]: the agent as RFB *server* toward the browser (through the
//!   gateway). Offers only security type None, speaks 3.8 and accepts 3.3 and 3.7
//!   clients, so no BMC credential ever leaves the agent.
//!
//! Both consume only the bytes they need ([`BmcHandshake::wants`] says how many may be
//! read next without reading past the handshake), and buffer at most
//! [`MAX_REASON_LEN`] + 4 bytes whatever the peer sends.
//!
//! Wire reference: RFC 6143 §7.1 and its Appendix A on the 3.3 and 3.7 differences.

mod client;
mod server;
pub mod vnc_auth;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod server_tests;

pub use client::BmcHandshake;
pub use server::FrontHandshake;

/// The longest failure reason string accepted from a BMC; a longer one is a protocol
/// error (nothing of it is buffered).
pub const MAX_REASON_LEN: u32 = 1024;

/// Length of a ProtocolVersion message: `RFB xxx.yyy\n`.
pub const VERSION_LEN: usize = 12;

/// Security type "None".
pub const SEC_NONE: u8 = 1;
/// Security type "VNC Authentication".
pub const SEC_VNC_AUTH: u8 = 2;

/// The RFB protocol version spoken on one leg after negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 3.3: the server chooses the security type; no SecurityResult after None; no
    /// failure reason after a failed SecurityResult.
    V3_3,
    /// 3.7: security type list; no SecurityResult after None; no failure reason.
    V3_7,
    /// 3.8: security type list; SecurityResult always, with a reason on failure.
    V3_8,
}

impl Version {
    /// The 12-byte ProtocolVersion message for this version.
    pub fn wire(self) -> &'static [u8; VERSION_LEN] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Whether a SecurityResult follows security type None.
    fn result_after_none(self) -> bool {
        self == Version::V3_8
    }

    /// Whether a failed SecurityResult carries a reason string.
    fn reason_after_failure(self) -> bool {
        self == Version::V3_8
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        })
    }
}

/// Why a handshake failed. [`HandshakeError::code`] gives the stable short code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's greeting is not an RFB ProtocolVersion message.
    #[error("not an RFB ProtocolVersion message: {0:?}")]
    NotRfb(String),
    /// The peer speaks a protocol version we do not.
    #[error("unsupported RFB protocol version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version as sent.
        major: u16,
        /// Minor version as sent.
        minor: u16,
    },
    /// The server refused the connection before authentication (zero security
    /// types, or security type 0 in 3.3), with its reason.
    #[error("server refused the connection: {reason}")]
    Refused {
        /// The server's reason (sanitised).
        reason: String,
    },
    /// The server offers no security type we can use.
    #[error(
        "no supported security type (server offers {offered:?}; supported: None, VNC Authentication)"
    )]
    UnsupportedSecurity {
        /// The types the server offered.
        offered: Vec<u32>,
    },
    /// The server requires VNC Authentication but no password is configured.
    #[error("the server requires a VNC password and none is configured")]
    PasswordRequired,
    /// Authentication failed (SecurityResult non-zero).
    #[error("authentication failed (SecurityResult {status}){}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    AuthFailed {
        /// The SecurityResult status word.
        status: u32,
        /// The server's reason (3.8 only, sanitised).
        reason: Option<String>,
    },
    /// A length field exceeds its bound.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length as sent.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// The client picked a security type that was not offered.
    #[error("client chose security type {0}, only None (1) was offered")]
    BadClientChoice(u8),
    /// Input arrived after the handshake failed.
    #[error("handshake already failed")]
    AlreadyFailed,
}

impl HandshakeError {
    /// A stable short code for refusals and logs.
    pub fn code(&self) -> &'static str {
        match self {
            HandshakeError::UnsupportedVersion { .. }
            | HandshakeError::UnsupportedSecurity { .. } => "bmc_unsupported",
            HandshakeError::PasswordRequired | HandshakeError::AuthFailed { .. } => {
                "bmc_auth_failed"
            }
            HandshakeError::Refused { .. } => "bmc_refused",
            HandshakeError::NotRfb(_)
            | HandshakeError::TooLong { .. }
            | HandshakeError::BadClientChoice(_)
            | HandshakeError::AlreadyFailed => "bmc_protocol",
        }
    }
}

/// Parses `RFB xxx.yyy\n` into (major, minor).
pub(crate) fn parse_version(msg: &[u8]) -> Result<(u16, u16), HandshakeError> {
    let bad = || HandshakeError::NotRfb(sanitize(msg));
    let msg: &[u8; VERSION_LEN] = msg.try_into().map_err(|_| bad())?;
    if &msg[..4] != b"RFB " || msg[7] != b'.' || msg[11] != b'\n' {
        return Err(bad());
    }
    let num = |d: &[u8]| -> Option<u16> {
        d.iter().try_fold(0u16, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
        })
    };
    match (num(&msg[4..7]), num(&msg[8..11])) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(bad()),
    }
}

/// Makes peer text safe to log and show: lossy UTF-8, control characters replaced.
pub(crate) fn sanitize(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Reads a big-endian u32 from exactly four bytes.
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    if let Some(src) = b.get(..4) {
        a.copy_from_slice(src);
    }
    u32::from_be_bytes(a)
}

/// The input side shared by both machines: bytes are accumulated until the current
/// state has exactly what it needs, never more.
#[derive(Debug, Default)]
pub(crate) struct Input {
    buf: Vec<u8>,
}

impl Input {
    /// Takes from `data` (starting at `*pos`) what is missing to hold `need` bytes;
    /// returns the complete message when it is there.
    pub(crate) fn fill(&mut self, need: usize, data: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
        let missing = need.saturating_sub(self.buf.len());
        let avail = data.get(*pos..).unwrap_or_default();
        let take = missing.min(avail.len());
        self.buf
            .extend_from_slice(avail.get(..take).unwrap_or_default());
        *pos += take;
        (self.buf.len() >= need).then(|| std::mem::take(&mut self.buf))
    }

    /// Bytes held for the current state.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Ok((3, 8)));
        assert_eq!(parse_version(b"RFB 003.889\n"), Ok((3, 889)));
        assert_eq!(parse_version(b"RFB 004.001\n"), Ok((4, 1)));
        assert!(matches!(
            parse_version(b"RFB 003.00x\n"),
            Err(HandshakeError::NotRfb(_))
        ));
        assert!(matches!(
            parse_version(b"HTTP/1.1 400"),
            Err(HandshakeError::NotRfb(_))
        ));
        assert!(matches!(
            parse_version(b"RFB 003.008"),
            Err(HandshakeError::NotRfb(_))
        ));
        assert!(matches!(
            parse_version(b"RFB 003.008\r"),
            Err(HandshakeError::NotRfb(_))
        ));
    }

    #[test]
    fn sanitizes_control_characters() {
        assert_eq!(
            sanitize(b"a\nb\x1b[2J\xff"),
            "a\u{fffd}b\u{fffd}[2J\u{fffd}"
        );
    }
}
