//! Errors, each with a stable machine-readable [`Error::code`].

use crate::tls::Fingerprint;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a BMC. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The BMC could not be reached (DNS, connection refused, reset, no route).
    #[error("BMC unreachable: {0}")]
    Unreachable(String),
    /// A connect or total deadline passed.
    #[error("BMC timed out: {0}")]
    Timeout(String),
    /// The BMC refused the credentials (HTTP 401/403 on login or with Basic auth).
    #[error("BMC refused the credentials (HTTP {status})")]
    AuthFailed {
        /// The HTTP status the BMC answered.
        status: u16,
    },
    /// The BMC's certificate is not the pinned one. Nothing was sent to it.
    #[error("BMC certificate fingerprint {observed} does not match the pinned {expected}")]
    TlsPinMismatch {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint of the certificate the BMC presented.
        observed: Fingerprint,
    },
    /// The BMC does not offer what was asked (reset type not advertised, no boot
    /// override, no systems).
    #[error("not supported by the BMC: {0}")]
    Unsupported(String),
    /// The BMC answered with an HTTP error status.
    #[error("BMC answered HTTP {status}{}", fmt_message(.message))]
    Http {
        /// The HTTP status.
        status: u16,
        /// The Redfish error message (`error.@Message.ExtendedInfo[].Message` or
        /// `error.message`), bounded in length.
        message: Option<String>,
    },
    /// The BMC broke the protocol: bad JSON, oversized body or header, a redirect to
    /// another origin, a TLS failure other than the pin.
    #[error("BMC protocol error: {0}")]
    Protocol(String),
    /// The request could not be made as asked (bad URL, plain http without opt-in).
    #[error("invalid request: {0}")]
    Config(String),
}

fn fmt_message(m: &Option<String>) -> String {
    m.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
}

impl Error {
    /// A stable code for the error, for the wire and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unreachable(_) => "bmc_unreachable",
            Error::Timeout(_) => "bmc_timeout",
            Error::AuthFailed { .. } => "bmc_auth_failed",
            Error::TlsPinMismatch { .. } => "bmc_tls_pin_mismatch",
            Error::Unsupported(_) => "bmc_unsupported",
            Error::Http { .. } => "bmc_error",
            Error::Protocol(_) => "bmc_protocol",
            Error::Config(_) => "bmc_config",
        }
    }
}
