//! TLS toward a BMC, trusted by the SHA-256 fingerprint of its leaf certificate.
//!
//! BMCs ship self-signed certificates with whatever name and dates the vendor chose,
//! so chain, name and date checks prove nothing about them; the pin is the identity.
//! The handshake signature is still verified against the pinned certificate's key, so
//! a peer that merely replays the certificate cannot complete the handshake. Without
//! a pin the connection is refused, unless trust on first use was asked for: then any
//! certificate is accepted and its fingerprint is reported to the caller to store.

use std::sync::{Arc, Mutex};

use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use smol::net::TcpStream;

use crate::error::{Error, hex};
use crate::target::Endpoint;

/// What the caller trusts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust {
    /// Only a leaf certificate with this SHA-256 fingerprint.
    Pin([u8; 32]),
    /// Any certificate; its fingerprint is reported.
    FirstUse,
}

impl Trust {
    /// The trust for a target: a pin wins over first use; neither fails closed.
    pub(crate) fn from_target(
        pin: Option<[u8; 32]>,
        tofu: bool,
        ep: &Endpoint,
    ) -> Result<Trust, Error> {
        match (pin, tofu) {
            (Some(p), _) => Ok(Trust::Pin(p)),
            (None, true) => Ok(Trust::FirstUse),
            (None, false) => Err(Error::NoPin {
                endpoint: ep.authority(),
            }),
        }
    }
}

#[derive(Debug)]
struct PinVerifier {
    trust: Trust,
    /// The fingerprint the server presented (for TOFU and for error messages).
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp);
        }
        match self.trust {
            Trust::Pin(pin) if pin != fp => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            Trust::Pin(_) | Trust::FirstUse => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs the TLS handshake over `tcp`; returns the stream and the fingerprint of the
/// certificate the BMC presented.
pub(crate) async fn connect(
    tcp: TcpStream,
    ep: &Endpoint,
    trust: Trust,
) -> Result<(TlsStream<TcpStream>, [u8; 32]), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(Mutex::new(None));
    let verifier = PinVerifier {
        trust,
        seen: seen.clone(),
        provider: provider.clone(),
    };
    let tls_err = |e: std::io::Error| Error::Tls {
        endpoint: ep.authority(),
        source: e,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(std::io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(ep.host.clone()).map_err(|_| Error::BadTarget {
        url: ep.host.clone(),
        reason: "not a valid TLS server name",
    })?;
    let observed = || seen.lock().ok().and_then(|s| *s);
    match TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(stream) => {
            let fp = observed().ok_or_else(|| tls_err(std::io::Error::other("no certificate")))?;
            Ok((stream, fp))
        }
        Err(e) => match (trust, observed()) {
            (Trust::Pin(pin), Some(fp)) if fp != pin => Err(Error::PinMismatch {
                endpoint: ep.authority(),
                expected: hex(&pin),
                observed: hex(&fp),
            }),
            _ => Err(tls_err(e)),
        },
    }
}
