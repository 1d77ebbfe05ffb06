//! The one error type of this crate: a kind the caller can act on, with a stable code
//! string for APIs, and a message that says which step failed and why.

/// What went wrong, coarsely enough to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The BMC's address refused the datagrams (ICMP port unreachable) or no route.
    Unreachable,
    /// The BMC did not answer within the deadline, after the retries.
    Timeout,
    /// Wrong user name or password, or a privilege the user does not have.
    AuthFailed,
    /// The BMC offers no cipher suite with authentication, integrity and encryption
    /// that this client accepts (e.g. only cipher suite 0).
    CipherRefused,
    /// The BMC or this client lacks a needed feature (IPMI 1.5 sessions, a command).
    Unsupported,
    /// The BMC answered a command with a non-zero completion code.
    Bmc {
        /// The IPMI completion code.
        completion_code: u8,
    },
    /// The BMC sent something malformed or unexpected.
    Protocol,
}

/// An IPMI error: kind plus a human-readable message (never containing secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// A stable code string for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Unreachable => "bmc_unreachable",
            ErrorKind::Timeout => "bmc_timeout",
            ErrorKind::AuthFailed => "bmc_auth_failed",
            ErrorKind::CipherRefused => "bmc_cipher_refused",
            ErrorKind::Unsupported => "bmc_unsupported",
            ErrorKind::Bmc { .. } => "bmc_error",
            ErrorKind::Protocol => "bmc_protocol",
        }
    }

    /// The same error with `what` in front of its message ("open session: ...").
    pub fn context(mut self, what: &str) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn completion(cmd: &str, cc: u8) -> Error {
        Error::new(
            ErrorKind::Bmc {
                completion_code: cc,
            },
            format!(
                "{cmd}: BMC completion code {cc:#04x} ({})",
                crate::message::completion_text(cc)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let e = Error::completion("Chassis Control", 0xd4);
        assert_eq!(e.code(), "bmc_error");
        assert_eq!(
            e.to_string(),
            "Chassis Control: BMC completion code 0xd4 (insufficient privilege level)"
        );
        assert_eq!(Error::new(ErrorKind::Timeout, "x").code(), "bmc_timeout");
        assert_eq!(
            Error::new(ErrorKind::AuthFailed, "x")
                .context("open")
                .to_string(),
            "open: x"
        );
    }
}
