//! The gateway's TLS server identity: production files, or a development CA kept in
//! the state directory.
//!
//! Dev PKI: on first start the gateway creates `ca.pem` and `ca.key` (ECDSA P-256,
//! key file mode 0600) in the state directory and, on every start, issues a fresh
//! server certificate signed by that CA for `localhost`, `127.0.0.1`, `::1` and the
//! host name. The CA survives restarts, so agents that pinned it keep trusting the
//! gateway.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// File name of the dev CA certificate in the state directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the dev CA private key in the state directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// The certificate and key the agent listener presents.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The dev CA agents should pin (absolute path), when the dev PKI is used.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the dev CA certificate (DER), `sha256:` + hex.
    pub ca_fingerprint: Option<String>,
}

/// Why the server identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// File system error.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {message}")]
    BadFile {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Certificate generation failed.
    #[error("generating certificate")]
    Generate(#[from] rcgen::Error),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Loads a production certificate chain and key from PEM files.
pub fn load_files(cert: &Path, key: &Path) -> Result<ServerIdentity, PkiError> {
    let bad = |path: &Path, message: String| PkiError::BadFile {
        path: path.to_owned(),
        message,
    };
    let cert_chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if cert_chain.is_empty() {
        return Err(bad(cert, "no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    Ok(ServerIdentity {
        cert_chain,
        key,
        ca_file: None,
        ca_fingerprint: None,
    })
}

/// Loads the dev CA from `state_dir` (creating it on first start) and issues a
/// server certificate signed by it.
pub fn load_or_create_dev(state_dir: &Path) -> Result<ServerIdentity, PkiError> {
    fs::create_dir_all(state_dir).map_err(io_err("creating state directory", state_dir))?;
    let state_dir = fs::canonicalize(state_dir).map_err(io_err("resolving", state_dir))?;
    let ca_path = state_dir.join(CA_CERT_FILE);
    let key_path = state_dir.join(CA_KEY_FILE);

    let (ca_pem, ca_key) = match (ca_path.exists(), key_path.exists()) {
        (true, true) => {
            let pem = fs::read_to_string(&ca_path).map_err(io_err("reading", &ca_path))?;
            let key_pem = fs::read_to_string(&key_path).map_err(io_err("reading", &key_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadFile {
                path: key_path.clone(),
                message: e.to_string(),
            })?;
            (pem, key)
        }
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "outband gateway dev CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?;
            // Key first: a CA certificate without its key would be unusable.
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(ca = %ca_path.display(), "created dev CA");
            (cert.pem(), key)
        }
        _ => {
            return Err(PkiError::BadFile {
                path: state_dir.clone(),
                message: format!(
                    "only one of {CA_CERT_FILE} and {CA_KEY_FILE} exists; refusing to replace \
                     the CA agents may have pinned (restore the missing file or remove both)"
                ),
            });
        }
    };
    let ca_der =
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| PkiError::BadFile {
            path: ca_path.clone(),
            message: e.to_string(),
        })?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = hostname().filter(|h| !names.contains(h)) {
        names.push(host);
    }
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "outband gateway");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer)?;

    Ok(ServerIdentity {
        cert_chain: vec![server_cert.der().clone(), ca_der.clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ca_fingerprint: Some(fingerprint(&ca_der)),
        ca_file: Some(ca_path),
    })
}

/// `sha256:` followed by the lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The host name, if it is a usable DNS name.
fn hostname() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim().to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then_some(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename, with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PkiError::Io {
            what: "writing",
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_dev(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create_dev(dir.path()).unwrap();
        assert_eq!(first.ca_fingerprint, second.ca_fingerprint);
        assert_eq!(first.cert_chain[1], second.cert_chain[1]);
        // A fresh leaf each start, signed by the same CA.
        assert_ne!(first.cert_chain[0], second.cert_chain[0]);
        assert!(first.ca_file.unwrap().is_absolute());
    }

    #[test]
    fn half_a_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create_dev(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = load_or_create_dev(dir.path()).unwrap_err();
        assert!(err.to_string().contains("refusing to replace"), "{err}");
    }

    #[test]
    fn production_files_load_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["gw.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        let id = load_files(&c, &k).unwrap();
        assert_eq!(id.cert_chain.len(), 1);
        assert!(id.ca_file.is_none());

        let missing = dir.path().join("missing.pem");
        let err = load_files(&missing, &k).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = load_files(&c, &c).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
