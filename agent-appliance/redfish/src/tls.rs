//! BMC trust: the certificate's SHA-256 fingerprint is pinned (BMCs ship self-signed
//! certificates, so a CA chain means nothing), or learnt on first use when the caller
//! explicitly allows it. The handshake signature is always checked against the
//! presented certificate's key, so a peer that merely replays the certificate fails.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};

/// The SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    /// Lower-case hex, 64 characters, no separators.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A fingerprint string that is not 32 bytes of hex.
#[derive(Debug, thiserror::Error)]
#[error("a SHA-256 fingerprint is 64 hex digits, optionally in colon-separated pairs")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Accepts `ab12…` and `AB:12:…` (as `openssl x509 -fingerprint -sha256` prints),
    /// with an optional `sha256:` or `SHA256 Fingerprint=` prefix.
    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256 Fingerprint="))
            .or_else(|| s.strip_prefix("sha256 Fingerprint="))
            .unwrap_or(s);
        let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| BadFingerprint)?;
            *o = u8::from_str_radix(hex, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Self(out))
    }
}

/// How the BMC's identity is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// HTTPS; the certificate must have this fingerprint.
    Pinned(Fingerprint),
    /// HTTPS; accept the first certificate seen and report its fingerprint
    /// ([`crate::Client::fingerprint`]); later connections of the same client must
    /// present the same one. Only when the operator asked for it.
    TrustOnFirstUse,
    /// Plain `http://`, no TLS at all. Only when the operator asked for it; `https://`
    /// URLs are refused with this policy.
    PlainHttp,
}

/// What the verifier saw, shared with the client to classify errors and report TOFU.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The fingerprint of the last certificate presented.
    pub(crate) last: Option<Fingerprint>,
    /// The fingerprint that is trusted (pinned, or learnt on first use).
    pub(crate) trusted: Option<Fingerprint>,
    /// A certificate was refused because it did not match.
    pub(crate) mismatch: Option<Fingerprint>,
}

/// A rustls verifier that accepts exactly one end-entity certificate by fingerprint,
/// and checks the handshake signatures with the provider's algorithms.
#[derive(Debug)]
pub struct PinVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    tofu: bool,
    seen: Arc<Mutex<Seen>>,
}

impl PinVerifier {
    /// A verifier for `policy` (`None` pin: trust on first use).
    pub(crate) fn new(provider: &CryptoProvider, pin: Option<Fingerprint>) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
            tofu: pin.is_none(),
            seen: Arc::new(Mutex::new(Seen {
                trusted: pin,
                ..Seen::default()
            })),
        }
    }

    /// A verifier that accepts any certificate and records its fingerprint (handshake
    /// signatures are still checked): for presence probes that send no credentials.
    pub fn recording(provider: &CryptoProvider) -> Self {
        Self::new(provider, None)
    }

    /// The fingerprint of the last certificate presented, if any.
    pub fn last_seen(&self) -> Option<Fingerprint> {
        self.seen().last
    }

    pub(crate) fn shared(&self) -> Arc<Mutex<Seen>> {
        self.seen.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The marker error a refused certificate carries through rustls.
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint does not match the pin")]
struct PinRefused;

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of_der(end_entity);
        let mut seen = self.seen();
        seen.last = Some(fp);
        match seen.trusted {
            Some(t) if t == fp => Ok(ServerCertVerified::assertion()),
            None if self.tofu => {
                seen.trusted = Some(fp);
                Ok(ServerCertVerified::assertion())
            }
            _ => {
                seen.mismatch = Some(fp);
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinRefused))),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The ring provider (the agent links no other).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config (TLS 1.2 and 1.3; many BMCs only speak 1.2) with `verifier`.
pub fn client_config(verifier: Arc<PinVerifier>) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_forms() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let fp: Fingerprint = hex.parse().unwrap();
        assert_eq!(fp.to_string(), hex);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            format!("sha256 Fingerprint={colons}")
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        assert_eq!(format!("sha256:{hex}").parse::<Fingerprint>().unwrap(), fp);
        assert!(hex[..62].parse::<Fingerprint>().is_err());
        assert!(format!("{}zz", &hex[..62]).parse::<Fingerprint>().is_err());
        assert!("é".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn fingerprint_of_der_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            Fingerprint::of_der(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn verify(v: &PinVerifier, der: &[u8]) -> bool {
        v.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("bmc").unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
    }

    #[test]
    fn pinned_accepts_only_the_pin() {
        let p = provider();
        let v = PinVerifier::new(&p, Some(Fingerprint::of_der(b"cert-a")));
        assert!(verify(&v, b"cert-a"));
        assert!(!verify(&v, b"cert-b"));
        let seen = v.shared();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.mismatch, Some(Fingerprint::of_der(b"cert-b")));
    }

    #[test]
    fn tofu_learns_the_first_and_then_pins_it() {
        let p = provider();
        let v = PinVerifier::new(&p, None);
        assert!(verify(&v, b"cert-a"));
        assert_eq!(v.last_seen(), Some(Fingerprint::of_der(b"cert-a")));
        assert!(verify(&v, b"cert-a"));
        assert!(!verify(&v, b"cert-b"), "a changed certificate is refused");
    }
}
