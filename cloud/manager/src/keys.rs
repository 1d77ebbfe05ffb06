//! Signing keys: the live set from the database, cached briefly, and rotation.
//!
//! Rotation adds a new key that signs from now on; every older key gets an end time of
//! `now + overlap` and keeps verifying (and stays in the JWKS) until then, so tokens it
//! signed and gateways' cached key sets stay good. Expired rows are deleted at the next
//! rotation. Replicas read the same rows; the cache lives [`CACHE_TTL_MS`], and a
//! token with a `kid` the cache lacks but the database holds forces a reload, so a key
//! rotated on another replica is accepted at once.
//!
//! Private keys are stored sealed with the credential key file (AES-256-GCM bound to
//! the `kid`, [`CredentialKeys::seal_signing_key`]): the database alone cannot sign
//! tokens. Rows from before sealing existed are sealed on first load.

use std::sync::{Arc, Mutex};

use data_encoding::BASE64URL_NOPAD;
use outband_api::jwks::{Jwk, Jwks};

use crate::ids::Clock;
use crate::jwt::{self, Claims, Expect, SigningKey, TokenError};
use crate::secrets::CredentialKeys;
use crate::store::keys::KeyRow;
use crate::store::{Store, StoreError};

/// How long a loaded key set is used before re-reading the database.
pub const CACHE_TTL_MS: i64 = 5_000;
/// Longest `kid` looked up in the database.
pub const MAX_KID_LEN: usize = 128;

/// One live key.
#[derive(Debug)]
pub struct LiveKey {
    /// The key (private part included: this manager may sign with it).
    pub key: SigningKey,
    /// Signs from this time.
    pub not_before: i64,
    /// Verifies until this time.
    pub expires_at: Option<i64>,
}

/// Keys valid at load time.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Oldest first.
    pub keys: Vec<LiveKey>,
}

impl KeySet {
    /// The key to sign with at `now`: a started key that is not being retired (no end
    /// set), else the newest started one. (Keys created in the same second are ordered
    /// by the end time, not by id.)
    pub fn signer(&self, now: i64) -> Option<&SigningKey> {
        self.keys
            .iter()
            .filter(|k| k.not_before <= now && k.expires_at.is_none_or(|e| e > now))
            .max_by_key(|k| (k.expires_at.is_none(), k.not_before, k.expires_at))
            .map(|k| &k.key)
    }

    fn public(&self, kid: &str, now: i64) -> Option<Vec<u8>> {
        self.keys
            .iter()
            .find(|k| k.key.kid == kid && k.expires_at.is_none_or(|e| e > now))
            .map(|k| k.key.public_key().to_vec())
    }
}

/// Key-set errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing keys failed.
    #[error("signing keys")]
    Store(#[from] StoreError),
    /// A stored key does not parse.
    #[error("stored signing key {kid} is corrupt")]
    Corrupt {
        /// Which key.
        kid: String,
    },
    /// A stored key does not open with the credential key file.
    #[error("stored signing key {kid} does not open with the credential key file")]
    Sealed {
        /// Which key.
        kid: String,
        /// Why.
        #[source]
        source: crate::secrets::SecretError,
    },
    /// There is no key to sign with.
    #[error("no signing key is active")]
    NoSigner,
}

#[derive(Debug)]
struct Cached {
    loaded_ms: i64,
    set: Arc<KeySet>,
}

/// The key manager.
#[derive(Debug)]
pub struct Keys {
    store: Store,
    clock: Clock,
    sealing: Arc<CredentialKeys>,
    cache: Mutex<Option<Cached>>,
}

impl Keys {
    /// A key manager over `store`; private keys are sealed with `sealing`.
    pub fn new(store: Store, clock: Clock, sealing: Arc<CredentialKeys>) -> Keys {
        Keys {
            store,
            clock,
            sealing,
            cache: Mutex::new(None),
        }
    }

    fn new_row(&self, now: i64) -> KeyRow {
        let (kid, private_key, public_key) = jwt::generate_key();
        let private_key = zeroize::Zeroizing::new(private_key);
        let (key_id, sealed) = self.sealing.seal_signing_key(&kid, &private_key);
        KeyRow {
            kid,
            private_key: sealed,
            sealed_with: Some(key_id),
            public_key,
            created_at: now,
            not_before: now,
            expires_at: None,
        }
    }

    /// The PKCS#8 of a stored key; a legacy plaintext row is sealed in the database.
    async fn private_key(&self, row: &KeyRow) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        match &row.sealed_with {
            Some(key_id) => self
                .sealing
                .open_signing_key(&row.kid, key_id, &row.private_key)
                .map_err(|source| KeyError::Sealed {
                    kid: row.kid.clone(),
                    source,
                }),
            None => {
                let (key_id, sealed) = self.sealing.seal_signing_key(&row.kid, &row.private_key);
                self.store
                    .seal_legacy_key(&row.kid, &key_id, &sealed)
                    .await?;
                Ok(zeroize::Zeroizing::new(row.private_key.clone()))
            }
        }
    }

    /// Creates the first key if no key is live.
    pub async fn ensure_key(&self) -> Result<(), KeyError> {
        let now = self.clock.now();
        if !self.store.live_keys(now).await?.is_empty() {
            return Ok(());
        }
        self.store.insert_key(&self.new_row(now)).await?;
        self.invalidate();
        Ok(())
    }

    /// Adds a new signing key; older keys verify for `overlap_secs` more. Returns the
    /// new key id and the old keys' end.
    pub async fn rotate(&self, overlap_secs: i64) -> Result<(String, i64), KeyError> {
        let now = self.clock.now();
        let row = self.new_row(now);
        let until = now + overlap_secs;
        self.store.rotate_keys(&row, until, now).await?;
        self.invalidate();
        Ok((row.kid, until))
    }

    /// Drops the cache (next use reloads).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("key cache lock") = None;
    }

    /// The current key set (cached).
    pub async fn current(&self) -> Result<Arc<KeySet>, KeyError> {
        let now_ms = self.clock.now_ms();
        if let Some(c) = self.cache.lock().expect("key cache lock").as_ref()
            && now_ms - c.loaded_ms < CACHE_TTL_MS
            && now_ms >= c.loaded_ms
        {
            return Ok(c.set.clone());
        }
        self.reload().await
    }

    async fn reload(&self) -> Result<Arc<KeySet>, KeyError> {
        let now_ms = self.clock.now_ms();
        let rows = self.store.live_keys(now_ms / 1000).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let pkcs8 = self.private_key(&row).await?;
            let key =
                SigningKey::from_pkcs8(row.kid.clone(), &pkcs8).map_err(|_| KeyError::Corrupt {
                    kid: row.kid.clone(),
                })?;
            keys.push(LiveKey {
                key,
                not_before: row.not_before,
                expires_at: row.expires_at,
            });
        }
        let set = Arc::new(KeySet { keys });
        *self.cache.lock().expect("key cache lock") = Some(Cached {
            loaded_ms: now_ms,
            set: set.clone(),
        });
        Ok(set)
    }

    /// Signs `claims` with the current signer.
    pub async fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let set = self.current().await?;
        let signer = set.signer(self.clock.now()).ok_or(KeyError::NoSigner)?;
        Ok(signer.sign(claims))
    }

    /// Verifies an access token. `Ok(Err(_))` is a refused token; `Err(_)` a failure
    /// to load keys.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Result<Claims, TokenError>, KeyError> {
        let now = self.clock.now();
        let expect = Expect {
            issuer,
            audience,
            now,
        };
        let set = self.current().await?;
        let mut asked = None;
        let first = jwt::verify(
            token,
            |kid| {
                asked = Some(kid.to_owned());
                set.public(kid, now)
            },
            &expect,
        );
        match (first, asked) {
            // A key another replica just added: reload only if the database has it,
            // so made-up key ids cost one primary-key lookup, never a full reload.
            (Err(TokenError::UnknownKey), Some(kid))
                if kid.len() <= MAX_KID_LEN && self.store.key_is_live(&kid, now).await? =>
            {
                let set = self.reload().await?;
                Ok(jwt::verify(token, |kid| set.public(kid, now), &expect))
            }
            (other, _) => Ok(other),
        }
    }

    /// The JWKS document.
    pub async fn jwks(&self) -> Result<Jwks, KeyError> {
        let set = self.current().await?;
        let now = self.clock.now();
        Ok(Jwks {
            keys: set
                .keys
                .iter()
                .filter(|k| k.expires_at.is_none_or(|e| e > now))
                .map(|k| Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: BASE64URL_NOPAD.encode(k.key.public_key()),
                    kid: k.key.kid.clone(),
                    alg: jwt::ALG.into(),
                    use_: "sig".into(),
                })
                .collect(),
        })
    }
}
