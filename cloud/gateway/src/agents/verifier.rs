//! Client certificate verification for agents.
//!
//! Agents present self-signed certificates (their identity is their key, not a CA's
//! word), so there is no chain to build. The verifier requires a certificate, checks
//! that it parses, is within its validity period and is signed by its own key, and
//! checks the TLS handshake signature with rustls' ring algorithms. Which agents may
//! do what is decided later from the agent id (a hash of the key).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};

/// Accepts self-signed Ed25519 / ECDSA agent certificates. See the module docs.
#[derive(Debug)]
pub struct AgentCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AgentCertVerifier {
    /// A verifier using `provider`'s signature algorithms for handshake signatures.
    pub fn new(provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(Self {
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

/// Parses a DER certificate and returns the DER SubjectPublicKeyInfo of its key.
pub fn spki_of(der: &[u8]) -> Result<Vec<u8>, CertificateError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| CertificateError::BadEncoding)?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Checks that `cert` is signed by its own key.
fn verify_self_signed(cert: &X509Certificate<'_>) -> Result<(), CertificateError> {
    use ring::signature::{self, VerificationAlgorithm};
    let sig_alg = &cert.signature_algorithm.algorithm;
    let candidates: &[&dyn VerificationAlgorithm] = if *sig_alg == OID_SIG_ED25519 {
        &[&signature::ED25519]
    } else if *sig_alg == OID_SIG_ECDSA_WITH_SHA256 {
        &[
            &signature::ECDSA_P256_SHA256_ASN1,
            &signature::ECDSA_P384_SHA256_ASN1,
        ]
    } else if *sig_alg == OID_SIG_ECDSA_WITH_SHA384 {
        &[
            &signature::ECDSA_P384_SHA384_ASN1,
            &signature::ECDSA_P256_SHA384_ASN1,
        ]
    } else {
        return Err(CertificateError::Other(rustls::OtherError(Arc::new(
            UnsupportedAlgorithm(sig_alg.to_id_string()),
        ))));
    };
    let key = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    let tbs = cert.tbs_certificate.as_ref();
    let sig = &cert.signature_value.data;
    // A key of the wrong curve fails to parse, so trying each candidate is safe: a
    // signature only verifies under the key that made it.
    if candidates.iter().any(|alg| {
        signature::UnparsedPublicKey::new(*alg, key)
            .verify(tbs, sig)
            .is_ok()
    }) {
        Ok(())
    } else {
        Err(CertificateError::BadSignature)
    }
}

#[derive(Debug)]
struct UnsupportedAlgorithm(String);

impl std::fmt::Display for UnsupportedAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unsupported certificate signature algorithm {} (use Ed25519 or ECDSA)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedAlgorithm {}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| CertificateError::BadEncoding)?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(CertificateError::NotValidYet.into());
        }
        if now > validity.not_after.timestamp() {
            return Err(CertificateError::Expired.into());
        }
        verify_self_signed(&cert)?;
        Ok(ClientCertVerified::assertion())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn verifier() -> Arc<AgentCertVerifier> {
        AgentCertVerifier::new(&rustls::crypto::ring::default_provider())
    }

    #[test]
    fn accepts_self_signed_ed25519_and_p256() {
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256] {
            let key = KeyPair::generate_for(alg).unwrap();
            let cert = CertificateParams::new(vec!["agent".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            verifier()
                .verify_client_cert(cert.der(), &[], UnixTime::now())
                .unwrap();
        }
    }

    #[test]
    fn rejects_cert_signed_by_another_key_and_garbage() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let other = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = CertificateParams::new(vec!["agent".into()]).unwrap();
        let issuer = rcgen::Issuer::new(CertificateParams::default(), other);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let err = verifier()
            .verify_client_cert(cert.der(), &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(
            verifier()
                .verify_client_cert(&garbage, &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn rejects_expired() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(vec!["agent".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let err = verifier()
            .verify_client_cert(cert.der(), &[], UnixTime::now())
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Expired)
        );
    }
}
