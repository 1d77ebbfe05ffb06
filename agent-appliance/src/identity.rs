//! The agent's identity: an Ed25519 key generated on first start and kept in the
//! state directory, and a self-signed client certificate made from it at each start.
//!
//! The agent id and the pairing code are derived from the key's SubjectPublicKeyInfo
//! with [`outband_proto::identity`], the same functions the gateway applies to the
//! client certificate, so both sides agree without exchanging the id.
//!
//! An existing key file is never overwritten: if it cannot be read or parsed the agent
//! stops with an error, because a new key would be a new, unadopted agent.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519, PublicKeyData};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "agent.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The state directory could not be created.
    #[error("creating state directory {path}")]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but could not be read.
    #[error("reading identity key {path}")]
    Read {
        /// Key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but holds no usable key. It is left untouched.
    #[error(
        "identity key {path} is unusable ({reason}); refusing to replace it: \
         move it away to give this appliance a new identity"
    )]
    Corrupt {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The new key could not be written.
    #[error("writing identity key {path}")]
    Write {
        /// Key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Key generation or certificate signing failed.
    #[error("{0}")]
    Crypto(String),
}

/// The agent's key pair and the names derived from it.
#[derive(Debug)]
pub struct Identity {
    key: KeyPair,
    agent_id: String,
    pairing_code: String,
}

impl Identity {
    /// Loads the key from `state_dir`, generating and storing one on first start.
    /// Returns the identity and whether it was just created.
    pub fn load_or_create(state_dir: &Path) -> Result<(Identity, bool), IdentityError> {
        let path = state_dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok((Self::from_pem_bytes(&path, &bytes)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(state_dir)
                    .map_err(|source| IdentityError::CreateDir {
                        path: state_dir.to_owned(),
                        source,
                    })?;
                let key = KeyPair::generate_for(&PKCS_ED25519)
                    .map_err(|e| IdentityError::Crypto(format!("generating Ed25519 key: {e}")))?;
                write_new(&path, key.serialize_pem().as_bytes())?;
                Ok((Self::from_key(key), true))
            }
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    fn from_pem_bytes(path: &Path, bytes: &[u8]) -> Result<Identity, IdentityError> {
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not PEM text".into()))?;
        let key = KeyPair::from_pem(text).map_err(|e| corrupt(e.to_string()))?;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "identity key {} has mode {mode:o}; expected 600",
                    path.display()
                );
            }
        }
        Ok(Self::from_key(key))
    }

    fn from_key(key: KeyPair) -> Identity {
        let spki = key.subject_public_key_info();
        Identity {
            agent_id: outband_proto::identity::agent_id_from_spki(&spki),
            pairing_code: outband_proto::identity::pairing_code_from_spki(&spki),
            key,
        }
    }

    /// The agent id (`ag-…`).
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The short pairing code shown for adoption.
    pub fn pairing_code(&self) -> &str {
        &self.pairing_code
    }

    /// DER SubjectPublicKeyInfo of the key.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// A self-signed client certificate (CN = agent id, validity 1975..4096, the
    /// gateway trusts the key, not the dates) and the private key for TLS.
    pub fn client_cert(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.agent_id.clone());
        params.distinguished_name = dn;
        let cert = params
            .self_signed(&self.key)
            .map_err(|e| IdentityError::Crypto(format!("signing client certificate: {e}")))?;
        let key = PrivatePkcs8KeyDer::from(self.key.serialize_der());
        Ok((cert.der().clone(), key.into()))
    }
}

/// Writes `contents` to a new file at `path` with mode 0600, failing if it exists.
/// The data goes to a temporary file first and is hard-linked into place, so a crash
/// never leaves a half-written key behind under the real name.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let res = f
        .write_all(contents)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    res.map_err(err)?;
    if let Some(Ok(d)) = path.parent().map(fs::File::open) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/nested");
        let (a, created) = Identity::load_or_create(&state).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(&state).unwrap();
        assert!(!created);
        assert_eq!(a.agent_id(), b.agent_id());
        assert_eq!(a.pairing_code(), b.pairing_code());
        assert!(a.agent_id().starts_with("ag-"));

        let key_mode = fs::metadata(state.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let pem = fs::read_to_string(state.join(KEY_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn different_state_dirs_differ() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let (a, _) = Identity::load_or_create(d1.path()).unwrap();
        let (b, _) = Identity::load_or_create(d2.path()).unwrap();
        assert_ne!(a.agent_id(), b.agent_id());
    }

    #[test]
    fn corrupt_key_is_an_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for junk in [
            &b"garbage"[..],
            b"\xff\xfe",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            fs::write(&path, junk).unwrap();
            let err = Identity::load_or_create(dir.path()).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains("refusing to replace"));
            assert_eq!(
                fs::read(&path).unwrap(),
                junk,
                "key file must not be overwritten"
            );
        }
    }

    #[test]
    fn cert_carries_the_key_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = Identity::load_or_create(dir.path()).unwrap();
        let (cert, _key) = id.client_cert().unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
        let spki = parsed.tbs_certificate.subject_pki.raw;
        assert_eq!(spki, id.spki_der().as_slice());
        assert_eq!(
            outband_proto::identity::agent_id_from_spki(spki),
            id.agent_id()
        );
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, id.agent_id());
    }
}
