//! BMC credentials at rest: AES-256-GCM (`ring`) under a key from a key file.
//!
//! The key file (`--credential-key-file`, default `<data-dir>/credential.key`, created
//! mode 0600 on first start) holds one key per line, `<key id>:<base64url 32 bytes>`;
//! `#` starts a comment. The first key encrypts; every key decrypts, so rotation is:
//! put a new line first, restart the managers, run `outband-manager keys
//! rewrap-credentials` (re-encrypts every row under the new key), then drop the old
//! line. Rows keep the key id they were sealed under.
//!
//! A sealed value is `nonce (12 random bytes) || ciphertext || tag`; the associated
//! data binds it to its row: `outband credentials v1\0<server id>\0<key id>`, so a
//! ciphertext copied onto another server (or relabelled with another key id) does not
//! open. Plaintext lives in [`Credentials`] (zeroized on drop, `***` in Debug) only
//! while a request needs it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use data_encoding::BASE64URL_NOPAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Longest BMC username or password accepted (bytes).
pub const MAX_SECRET_LEN: usize = 256;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Plain BMC credentials (never logged; zeroized on drop).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// BMC user name.
    pub username: Zeroizing<String>,
    /// BMC password.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { username: ***, password: *** }")
    }
}

impl Credentials {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let u = self.username.as_bytes();
        let p = self.password.as_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(2 + u.len() + p.len() + 16));
        out.extend_from_slice(&(u.len() as u16).to_be_bytes());
        out.extend_from_slice(u);
        out.extend_from_slice(p);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Credentials> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let u = rest.get(..len)?;
        let p = rest.get(len..)?;
        Some(Credentials {
            username: Zeroizing::new(std::str::from_utf8(u).ok()?.to_owned()),
            password: Zeroizing::new(std::str::from_utf8(p).ok()?.to_owned()),
        })
    }
}

/// Errors of the key file and of sealing.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading or creating the key file failed.
    #[error("credential key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not parse (the message names the line, never key bytes).
    #[error("credential key file {path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A stored value names a key id the key file does not hold.
    #[error("no credential key with id {0}")]
    UnknownKey(String),
    /// A stored value does not open (wrong key, tampered, or moved to another row).
    #[error("stored credentials do not decrypt")]
    Corrupt,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The credential keys (first = the one that encrypts).
pub struct CredentialKeys {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for CredentialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialKeys")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

fn aad(server_id: &str, key_id: &str) -> Vec<u8> {
    let mut a = b"outband credentials v1\0".to_vec();
    a.extend_from_slice(server_id.as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn signing_aad(kid: &str, key_id: &str) -> Vec<u8> {
    let mut a = b"outband signing key v1\0".to_vec();
    a.extend_from_slice(kid.as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

impl CredentialKeys {
    /// Keys from the text of a key file (see the module docs).
    pub fn parse(text: &str, path: &Path) -> Result<CredentialKeys, SecretError> {
        let bad = |what: String| SecretError::Format {
            path: path.to_owned(),
            what,
        };
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, b64) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("line {}: expected <key id>:<base64url key>", n + 1)))?;
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad(format!(
                    "line {}: key id must be 1-32 of [A-Za-z0-9_-]",
                    n + 1
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(bad(format!("line {}: duplicate key id {id}", n + 1)));
            }
            let raw = Zeroizing::new(
                BASE64URL_NOPAD
                    .decode(b64.trim().as_bytes())
                    .map_err(|_| bad(format!("line {}: key is not base64url", n + 1)))?,
            );
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| bad(format!("line {}: key must be 32 bytes", n + 1)))?;
            keys.push(Key {
                id: id.to_owned(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(bad("no key".into()));
        }
        Ok(CredentialKeys {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Reads the key file, creating it (mode 0600, one new key) if it does not exist.
    /// Two processes creating it at once end up with the same file (link, not rename).
    pub fn load_or_create(path: &Path) -> Result<CredentialKeys, SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return CredentialKeys::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let text = Zeroizing::new(new_key_file());
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => CredentialKeys::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
                CredentialKeys::parse(&text, path)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Key ids, the encrypting one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `creds` for `server_id`: `(key id, nonce || ciphertext || tag)`.
    pub fn seal(&self, server_id: &str, creds: &Credentials) -> (String, Vec<u8>) {
        let buf = creds.encode();
        self.seal_raw(&buf, |key_id| aad(server_id, key_id))
    }

    /// Seals a JWT signing key (PKCS#8) bound to its `kid`, like credentials.
    pub fn seal_signing_key(&self, kid: &str, pkcs8: &[u8]) -> (String, Vec<u8>) {
        self.seal_raw(pkcs8, |key_id| signing_aad(kid, key_id))
    }

    /// Opens what [`CredentialKeys::seal_signing_key`] produced for the same `kid`.
    pub fn open_signing_key(
        &self,
        kid: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let mut buf = self.open_raw(key_id, sealed, &signing_aad(kid, key_id))?;
        let len = buf.len() - AES_256_GCM.tag_len();
        buf.truncate(len);
        Ok(buf)
    }

    fn seal_raw(&self, plain: &[u8], aad_for: impl Fn(&str) -> Vec<u8>) -> (String, Vec<u8>) {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the OS random source works");
        let mut buf = Zeroizing::new(plain.to_vec());
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad_for(&key.id)),
                &mut *buf,
            )
            .expect("AES-GCM seals any input under 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        (key.id.clone(), out)
    }

    /// Decrypts in place; the buffer still ends with the tag's length of garbage.
    fn open_raw(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretError::UnknownKey(key_id.to_owned()))?;
        let (nonce, ct) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(SecretError::Corrupt)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        key.key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| SecretError::Corrupt)?;
        Ok(buf)
    }

    /// Opens what [`CredentialKeys::seal`] produced for the same server.
    pub fn open(
        &self,
        server_id: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Credentials, SecretError> {
        let buf = self.open_raw(key_id, sealed, &aad(server_id, key_id))?;
        let plain = &buf[..buf.len() - AES_256_GCM.tag_len()];
        Credentials::decode(plain).ok_or(SecretError::Corrupt)
    }
}

/// Re-encrypts every stored credential that is not under the first (encrypting) key,
/// after a rotation; returns how many were re-encrypted. Safe beside running
/// managers: each row is replaced only if it is still under the key it was read with.
pub async fn rewrap_all(
    store: &crate::store::Store,
    keys: &CredentialKeys,
) -> Result<usize, RewrapError> {
    let current = keys.key_ids()[0].to_owned();
    let mut done = 0;
    loop {
        let batch = store.credentials_not_under(&current, 500).await?;
        if batch.is_empty() {
            return Ok(done);
        }
        let mut progressed = false;
        for (id, kid, sealed) in batch {
            let creds = keys.open(&id, &kid, &sealed)?;
            if store
                .reseal_credentials(&id, &kid, &keys.seal(&id, &creds))
                .await?
            {
                done += 1;
                progressed = true;
            }
        }
        if !progressed {
            return Ok(done);
        }
    }
}

/// Re-seals every JWT signing key that is not under the first (encrypting) key, and
/// seals legacy plaintext rows; returns how many were re-sealed. Like
/// [`rewrap_all`], safe beside running managers.
pub async fn rewrap_signing_keys(
    store: &crate::store::Store,
    keys: &CredentialKeys,
) -> Result<usize, RewrapError> {
    let current = keys.key_ids()[0].to_owned();
    let mut done = 0;
    for (kid, sealed_with, stored) in store.signing_keys_not_under(&current).await? {
        let pkcs8 = match &sealed_with {
            Some(old) => keys.open_signing_key(&kid, old, &stored)?,
            None => Zeroizing::new(stored),
        };
        let (new_id, sealed) = keys.seal_signing_key(&kid, &pkcs8);
        if store
            .reseal_signing_key(&kid, sealed_with.as_deref(), &new_id, &sealed)
            .await?
        {
            done += 1;
        }
    }
    Ok(done)
}

/// Why re-encryption stopped.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    /// Database failure.
    #[error("database")]
    Store(#[from] crate::store::StoreError),
    /// A row does not open with the key file's keys.
    #[error("opening stored credentials")]
    Secret(#[from] SecretError),
}

/// The text of a new key file: a comment and one random key.
pub fn new_key_file() -> String {
    let rng = SystemRandom::new();
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill(&mut *key).expect("the OS random source works");
    let mut id = [0u8; 5];
    rng.fill(&mut id).expect("the OS random source works");
    format!(
        "# outband-manager credential keys: <key id>:<base64url 32 bytes>; the first encrypts.\n\
         ck_{}:{}\n",
        data_encoding::BASE32_NOPAD.encode(&id).to_lowercase(),
        BASE64URL_NOPAD.encode(&*key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: Zeroizing::new(u.into()),
            password: Zeroizing::new(p.into()),
        }
    }

    #[test]
    fn seal_open_round_trip_is_bound_to_the_server_and_key() {
        let keys = CredentialKeys::parse(&new_key_file(), Path::new("k")).unwrap();
        let c = creds("admin", "pässwörd:with\0odd bytes");
        let (kid, sealed) = keys.seal("srv_a", &c);
        assert_eq!(kid, keys.key_ids()[0]);
        assert_eq!(keys.open("srv_a", &kid, &sealed).unwrap(), c);
        assert!(
            !sealed
                .windows(8)
                .any(|w| w == b"admin\0\0\0" || w == b"p\xc3\xa4ssw\xc3\xb6")
        );
        assert!(matches!(
            keys.open("srv_b", &kid, &sealed),
            Err(SecretError::Corrupt)
        ));
        assert!(matches!(
            keys.open("srv_a", "ck_other", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            keys.open("srv_a", &kid, &flipped),
            Err(SecretError::Corrupt)
        ));
        assert!(matches!(
            keys.open("srv_a", &kid, &sealed[..5]),
            Err(SecretError::Corrupt)
        ));
        // Random nonces: sealing twice differs.
        assert_ne!(keys.seal("srv_a", &c).1, sealed);
        assert!(!format!("{c:?}{keys:?}").contains("admin"));
    }

    #[test]
    fn rotation_keeps_old_keys_for_decryption() {
        let old = new_key_file();
        let old_keys = CredentialKeys::parse(&old, Path::new("k")).unwrap();
        let (kid, sealed) = old_keys.seal("srv_a", &creds("u", "p"));
        let rotated = new_key_file() + &old;
        let keys = CredentialKeys::parse(&rotated, Path::new("k")).unwrap();
        assert_eq!(keys.key_ids().len(), 2);
        assert_ne!(keys.key_ids()[0], kid);
        assert_eq!(keys.open("srv_a", &kid, &sealed).unwrap(), creds("u", "p"));
        assert_eq!(keys.seal("srv_a", &creds("u", "p")).0, keys.key_ids()[0]);
    }

    #[test]
    fn bad_key_files_are_refused_without_echoing_key_bytes() {
        for text in [
            "",
            "# only a comment\n",
            "nocolon\n",
            "k:!!!\n",
            "k:AAAA\n",
            "bad id:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        ] {
            let e = CredentialKeys::parse(text, Path::new("k")).unwrap_err();
            assert!(matches!(e, SecretError::Format { .. }), "{text:?}");
            assert!(!e.to_string().contains("AAAA"), "{e}");
        }
        let dup = "a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n".repeat(2);
        assert!(CredentialKeys::parse(&dup, Path::new("k")).is_err());
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/credential.key");
        let a = CredentialKeys::load_or_create(&path).unwrap();
        let b = CredentialKeys::load_or_create(&path).unwrap();
        assert_eq!(a.key_ids(), b.key_ids());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (kid, sealed) = a.seal("s", &creds("u", "p"));
        assert!(b.open("s", &kid, &sealed).is_ok());
    }

    #[test]
    fn decode_rejects_truncated_input() {
        assert!(Credentials::decode(&[]).is_none());
        assert!(Credentials::decode(&[0, 5, b'a']).is_none());
        assert_eq!(Credentials::decode(&[0, 0]).unwrap(), creds("", ""));
    }
}
