//! The manager's JSON Web Key Set (`/.well-known/jwks.json`, RFC 7517 with OKP keys per
//! RFC 8037) turned into the keys a verifier may use.
//!
//! The document comes over the network, so everything has a bound before it is used:
//! the document size ([`MAX_JWKS_LEN`], checked before parsing), the number of entries
//! ([`MAX_JWKS_ENTRIES`]) and of usable keys ([`MAX_KEYS`]), the `kid` length
//! ([`MAX_KID_LEN`]) and the key size (exactly 32 bytes). Only Ed25519 keys
//! (`kty: OKP`, `crv: Ed25519`, `alg` absent or `EdDSA`, `use` absent or `sig`) are
//! used; any other entry (RSA, EC, an unknown type, a malformed one) is skipped and
//! counted in [`KeySet::ignored`], so the manager can publish other keys later without
//! breaking gateways. Two usable keys with the same `kid` make the document invalid: a
//! verifier could not tell which one is meant.

use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;

use crate::{Claims, Expect, TokenError};

/// Largest JWKS document accepted, in bytes, checked before parsing.
pub const MAX_JWKS_LEN: usize = 64 * 1024;
/// Most entries in `keys` (usable or not).
pub const MAX_JWKS_ENTRIES: usize = 64;
/// Most usable (Ed25519) keys.
pub const MAX_KEYS: usize = 16;
/// Longest `kid` accepted.
pub const MAX_KID_LEN: usize = 128;

/// Why a JWKS document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Longer than [`MAX_JWKS_LEN`].
    #[error("JWKS document larger than {MAX_JWKS_LEN} bytes")]
    TooLarge,
    /// Not JSON, or no `keys` array.
    #[error("JWKS document is malformed: {0}")]
    Malformed(String),
    /// More than [`MAX_JWKS_ENTRIES`] entries.
    #[error("JWKS document has more than {MAX_JWKS_ENTRIES} keys")]
    TooManyEntries,
    /// More than [`MAX_KEYS`] usable keys.
    #[error("JWKS document has more than {MAX_KEYS} Ed25519 keys")]
    TooManyKeys,
    /// Two usable keys share a `kid`.
    #[error("JWKS document has two keys with kid {0:?}")]
    DuplicateKid(String),
    /// No usable key at all (every entry was skipped).
    #[error("JWKS document has no usable Ed25519 key ({ignored} skipped)")]
    NoUsableKey {
        /// Entries skipped.
        ignored: usize,
    },
}

/// One Ed25519 public key and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The `kid` tokens name.
    pub kid: String,
    /// The raw 32-byte public key.
    pub key: [u8; 32],
}

/// The usable keys of one JWKS document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    ignored: usize,
}

impl KeySet {
    /// A set of the given keys (for tests and for a verifier that holds keys itself).
    pub fn from_keys(keys: Vec<PublicKey>) -> KeySet {
        KeySet { keys, ignored: 0 }
    }

    /// The public key with id `kid`. A linear scan: there are at most [`MAX_KEYS`].
    pub fn get(&self, kid: &str) -> Option<&[u8; 32]> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.key)
    }

    /// Whether a key with id `kid` is in the set.
    pub fn contains(&self, kid: &str) -> bool {
        self.get(kid).is_some()
    }

    /// The key ids, in document order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Entries of the document that were skipped (not Ed25519, or malformed).
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// Verifies `token` with the key its `kid` names ([`crate::verify`]).
    pub fn verify(&self, token: &str, expect: &Expect<'_>) -> Result<Claims, TokenError> {
        crate::verify(token, |kid| self.get(kid), expect)
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document into the Ed25519 keys it holds (see the module docs for the
/// rules and bounds).
pub fn parse_jwks(doc: &[u8]) -> Result<KeySet, JwksError> {
    if doc.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge);
    }
    let doc: Document =
        serde_json::from_slice(doc).map_err(|e| JwksError::Malformed(e.to_string()))?;
    if doc.keys.len() > MAX_JWKS_ENTRIES {
        return Err(JwksError::TooManyEntries);
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut ignored = 0;
    for entry in &doc.keys {
        let Some(key) = usable(entry) else {
            ignored += 1;
            continue;
        };
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(JwksError::DuplicateKid(key.kid));
        }
        if keys.len() == MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey { ignored });
    }
    Ok(KeySet { keys, ignored })
}

/// The entry as an Ed25519 verification key, or `None` to skip it.
fn usable(entry: &serde_json::Value) -> Option<PublicKey> {
    let obj = entry.as_object()?;
    let field = |name: &str| obj.get(name).map(|v| v.as_str());
    if field("kty")? != Some("OKP") || field("crv")? != Some("Ed25519") {
        return None;
    }
    // Absent is fine; present must say this key verifies EdDSA signatures.
    if field("alg").is_some_and(|a| a != Some(crate::ALG)) {
        return None;
    }
    if field("use").is_some_and(|u| u != Some("sig")) {
        return None;
    }
    // A published private key is a misconfiguration; do not build on it.
    if obj.contains_key("d") {
        return None;
    }
    let kid = field("kid")??;
    if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let x = field("x")??;
    // 32 bytes are 43 base64url characters; refuse anything longer before decoding.
    if x.len() != 43 {
        return None;
    }
    let raw = BASE64URL_NOPAD.decode(x.as_bytes()).ok()?;
    Some(PublicKey {
        kid: kid.to_owned(),
        key: raw.try_into().ok()?,
    })
}
