//! Errors of the console I/O layer, each with a stable short code for stream
//! refusals.

use std::time::Duration;

use crate::rfb::HandshakeError;

/// Why a console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target URL is malformed or uses an unknown scheme.
    #[error("invalid console target {url:?}: {reason}")]
    BadTarget {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TCP connection could not be made (refused, no route, name not resolved).
    #[error("cannot connect to {endpoint}: {source}")]
    Unreachable {
        /// host:port.
        endpoint: String,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The whole open (connect, TLS, WebSocket, RFB) did not finish in time.
    #[error("{endpoint}: no answer within {after:?} ({phase})")]
    Timeout {
        /// host:port.
        endpoint: String,
        /// The deadline that passed.
        after: Duration,
        /// What was in progress.
        phase: &'static str,
    },
    /// `wss://` without a certificate pin and without trust on first use.
    #[error("{endpoint}: wss:// needs a pinned certificate fingerprint (or trust on first use)")]
    NoPin {
        /// host:port.
        endpoint: String,
    },
    /// The BMC's certificate is not the pinned one.
    #[error("{endpoint}: TLS certificate SHA-256 {observed} does not match the pinned {expected}")]
    PinMismatch {
        /// host:port.
        endpoint: String,
        /// The pinned fingerprint, hex.
        expected: String,
        /// The fingerprint the BMC presented, hex.
        observed: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("{endpoint}: TLS handshake failed: {source}")]
    Tls {
        /// host:port.
        endpoint: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket upgrade failed (HTTP status when the server answered one).
    #[error("{endpoint}: WebSocket handshake failed{}: {reason}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    WebSocket {
        /// host:port.
        endpoint: String,
        /// The HTTP status of a refused upgrade.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The RFB handshake with the BMC failed.
    #[error("{endpoint}: RFB handshake with the BMC failed: {source}")]
    Bmc {
        /// host:port.
        endpoint: String,
        /// The handshake error.
        #[source]
        source: HandshakeError,
    },
    /// The BMC connection failed or closed during the handshake.
    #[error("{endpoint}: connection lost during the handshake: {source}")]
    BmcIo {
        /// host:port.
        endpoint: String,
        /// The I/O error (UnexpectedEof when the BMC closed).
        #[source]
        source: std::io::Error,
    },
    /// The RFB handshake with the browser side failed.
    #[error("RFB handshake with the client failed: {0}")]
    Front(#[source] HandshakeError),
    /// The browser side's connection failed during the handshake.
    #[error("client connection lost during the RFB handshake: {0}")]
    FrontIo(#[source] std::io::Error),
}

impl Error {
    /// A stable short code: `bmc_unreachable`, `bmc_timeout`, `bmc_auth_failed`,
    /// `bmc_tls_pin_mismatch`, `bmc_tls_unpinned`, `bmc_tls_failed`, `bmc_protocol`,
    /// `bmc_unsupported`, `bmc_refused`, `bmc_bad_target`, `client_protocol`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadTarget { .. } => "bmc_bad_target",
            Error::Unreachable { .. } => "bmc_unreachable",
            Error::Timeout { .. } => "bmc_timeout",
            Error::NoPin { .. } => "bmc_tls_unpinned",
            Error::PinMismatch { .. } => "bmc_tls_pin_mismatch",
            Error::Tls { .. } => "bmc_tls_failed",
            Error::WebSocket {
                status: Some(401 | 403),
                ..
            } => "bmc_auth_failed",
            Error::WebSocket { .. } | Error::BmcIo { .. } => "bmc_protocol",
            Error::Bmc { source, .. } => source.code(),
            Error::Front(_) | Error::FrontIo(_) => "client_protocol",
        }
    }
}

/// Lowercase hex of a fingerprint.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
