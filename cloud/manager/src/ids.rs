//! Random identifiers and secrets, and the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source works");
    b
}

/// An id with a type prefix and 128 random bits, e.g. `usr_k5v...` (lower-case base32).
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        BASE32_NOPAD.encode(&random_bytes::<16>()).to_lowercase()
    )
}

/// A URL-safe secret of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source works");
    BASE64URL_NOPAD.encode(&b)
}

/// Prefix of refresh tokens (recognisable in leaks and by secret scanners).
pub const REFRESH_PREFIX: &str = "obr_";

/// A new opaque refresh token: prefix + 256 random bits.
pub fn new_refresh_token() -> String {
    format!(
        "{REFRESH_PREFIX}{}",
        BASE64URL_NOPAD.encode(&random_bytes::<32>())
    )
}

/// How refresh tokens are stored: hex SHA-256 (the token has 256 bits of entropy, so a
/// fast hash is enough; a database leak does not yield usable tokens).
pub fn hash_token(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

/// Wall clock in unix seconds with an adjustable offset (tests move time forward).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms() / 1000
    }

    /// Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed) * 1000
    }

    /// Moves this clock (and its clones) forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
