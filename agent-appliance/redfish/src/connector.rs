//! A ureq connector that wraps the TCP transport in rustls with the [`PinVerifier`].
//!
//! ureq's own rustls connector can only use CA roots or no verification at all; the
//! BMC's pin needs a custom verifier, so this crate brings its connector (and ureq is
//! built without TLS features: no webpki-roots, no aws-lc).

use std::fmt;
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Wraps HTTPS connections in TLS with a fixed client config.
pub(crate) struct PinnedTlsConnector {
    config: Option<Arc<ClientConfig>>,
}

impl PinnedTlsConnector {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Self {
        Self {
            config: Some(config),
        }
    }

    /// For plain HTTP: passes connections through; an HTTPS URL fails.
    pub(crate) fn none() -> Self {
        Self { config: None }
    }
}

impl fmt::Debug for PinnedTlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedTlsConnector").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for PinnedTlsConnector {
    type Out = Either<In, PinnedTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::ConnectionFailed);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let Some(config) = &self.config else {
            return Err(ureq::Error::ConnectionFailed);
        };
        let host = details
            .uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::BadUri(format!("not a TLS server name: {host}")))?
            .to_owned();
        let mut conn = ClientConnection::new(config.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(handshake_error(e));
            }
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PinnedTlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A failed handshake is a protocol error (the peer is reachable but does not speak
/// TLS with us), unless it is a deadline.
fn handshake_error(e: std::io::Error) -> ureq::Error {
    use std::io::ErrorKind as K;
    match ureq::Error::from(e) {
        t @ ureq::Error::Timeout(_) => t,
        ureq::Error::Io(io) if matches!(io.kind(), K::TimedOut | K::WouldBlock) => {
            ureq::Error::Io(io)
        }
        other => ureq::Error::Io(std::io::Error::new(
            K::InvalidData,
            format!("TLS handshake: {other}"),
        )),
    }
}

/// A TLS transport for ureq.
pub(crate) struct PinnedTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedTlsTransport").finish_non_exhaustive()
    }
}

impl Transport for PinnedTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = self
            .buffers
            .output()
            .get(..amount)
            .ok_or(ureq::Error::ConnectionFailed)?;
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
