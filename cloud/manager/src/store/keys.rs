//! The `signing_keys` table.

use sqlx::Row;

use super::{Store, StoreError};

/// A stored signing key.
#[derive(Clone)]
pub struct KeyRow {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The Ed25519 private key: PKCS#8 DER sealed under the credential key
    /// `sealed_with` (plain PKCS#8 only in rows written before sealing existed).
    pub private_key: Vec<u8>,
    /// The credential key id that sealed `private_key`; `None` for a legacy row.
    pub sealed_with: Option<String>,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// The key signs from this time on (until a newer key takes over).
    pub not_before: i64,
    /// The key stops verifying at this time (`None`: current key, no end set).
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Keys that still verify at `now`, oldest first.
    pub async fn live_keys(&self, now: i64) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, sealed_with, public_key, created_at, not_before, expires_at \
             FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 \
             ORDER BY not_before, created_at, kid",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyRow {
                    kid: row.try_get("kid")?,
                    private_key: row.try_get("private_key")?,
                    sealed_with: row.try_get("sealed_with")?,
                    public_key: row.try_get("public_key")?,
                    created_at: row.try_get("created_at")?,
                    not_before: row.try_get("not_before")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Whether key `kid` exists and verifies at `now`.
    pub async fn key_is_live(&self, kid: &str, now: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM signing_keys \
             WHERE kid = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(kid)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Rotation in one transaction: every key without an end gets `old_keys_expire_at`,
    /// the new key is inserted, keys that expired before `now` are deleted.
    pub async fn rotate_keys(
        &self,
        new_key: &KeyRow,
        old_keys_expire_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE signing_keys SET expires_at = $1 WHERE expires_at IS NULL")
            .bind(old_keys_expire_at)
            .execute(&mut *tx)
            .await?;
        insert(&mut tx, new_key).await?;
        sqlx::query("DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a legacy plaintext private key by its sealed form (only if the row is
    /// still unsealed: another replica may have done it already).
    pub async fn seal_legacy_key(
        &self,
        kid: &str,
        sealed_with: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET private_key = $1, sealed_with = $2 \
             WHERE kid = $3 AND sealed_with IS NULL",
        )
        .bind(sealed)
        .bind(sealed_with)
        .bind(kid)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every stored signing key not sealed under `key_id` (legacy plaintext rows
    /// included): `(kid, sealed_with, private_key)`.
    pub async fn signing_keys_not_under(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, Option<String>, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, sealed_with, private_key FROM signing_keys \
             WHERE sealed_with IS NULL OR sealed_with <> $1",
        )
        .bind(key_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("kid")?,
                    r.try_get("sealed_with")?,
                    r.try_get("private_key")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Replaces a signing key's sealed form if it is still what was read
    /// (`old_sealed_with`); false if another process changed it first.
    pub async fn reseal_signing_key(
        &self,
        kid: &str,
        old_sealed_with: Option<&str>,
        new_sealed_with: &str,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let res = match old_sealed_with {
            Some(old) => {
                sqlx::query(
                    "UPDATE signing_keys SET private_key = $1, sealed_with = $2 \
                     WHERE kid = $3 AND sealed_with = $4",
                )
                .bind(sealed)
                .bind(new_sealed_with)
                .bind(kid)
                .bind(old)
                .execute(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE signing_keys SET private_key = $1, sealed_with = $2 \
                     WHERE kid = $3 AND sealed_with IS NULL",
                )
                .bind(sealed)
                .bind(new_sealed_with)
                .bind(kid)
                .execute(self.pool())
                .await?
            }
        };
        Ok(res.rows_affected() == 1)
    }

    /// The credential key ids that seal signing keys.
    pub async fn signing_key_seal_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT sealed_with FROM signing_keys WHERE sealed_with IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("sealed_with"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Inserts the first key (no rotation of others).
    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        insert(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, key: &KeyRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_key, sealed_with, public_key, created_at, not_before, expires_at) \
         VALUES ($1, 'EdDSA', $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.kid)
    .bind(&key.private_key)
    .bind(&key.sealed_with)
    .bind(&key.public_key)
    .bind(key.created_at)
    .bind(key.not_before)
    .bind(key.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
