//! Password hashing: argon2id at OWASP's recommended cost (m = 19 MiB, t = 2, p = 1),
//! run on the blocking pool with a semaphore capping concurrent hashes so a login flood
//! cannot take every core or unbounded memory. At most `queue` callers wait for a slot
//! (each at most `wait`); more are refused at once as busy, so a flood gets its 503s
//! quickly instead of piling up.
//!
//! Unknown accounts are verified against a dummy hash of the same cost, so a wrong
//! email and a wrong password take about the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::SecureRandom;
use tokio::sync::Semaphore;

/// Memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Iterations.
pub const T_COST: u32 = 2;
/// Parallelism.
pub const P_COST: u32 = 1;
/// Longest password accepted (bytes); longer input is refused before hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Shortest password accepted when setting one.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Why hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many hashes in flight for too long.
    #[error("password hashing is saturated")]
    Busy,
    /// The argon2 implementation failed (or the stored hash is malformed).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The blocking task died.
    #[error("hashing task failed")]
    Join,
}

/// Hashes and verifies passwords with a cap on concurrent work.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    wait: Duration,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    dummy_hash: Arc<str>,
}

/// The default number of concurrent hashes: half the cores (at least one), so a login
/// flood leaves the other half to every other request.
pub fn default_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).max(1)
}

/// Counts one waiter for as long as it lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).expect("constant params are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` synchronously (the CLI uses this; servers use [`Hasher::hash`]).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Argon2("no randomness".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Argon2(e.to_string()))
}

fn verify_blocking(password: &str, hash: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(hash).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    match argon2().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Argon2(e.to_string())),
    }
}

impl Hasher {
    /// A hasher allowing `max_concurrent` hashes at once; at most `queue` callers wait,
    /// each at most `wait`, for a slot. Computes the dummy hash (one hash of work).
    pub fn new(
        max_concurrent: usize,
        queue: usize,
        wait: Duration,
    ) -> Result<Hasher, PasswordError> {
        let dummy = crate::ids::random_token(32);
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            wait,
            queue,
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash: hash_blocking(&dummy)?.into(),
        })
    }

    /// Hashes inside the cap.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_blocking(&password)).await
    }

    /// Verifies `password` against `hash`, or against the dummy hash when `hash` is
    /// `None` (unknown account: same work, always false).
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(ok && known)
    }

    /// Free hashing slots (for metrics).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = Waiting(self.waiting.clone());
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                    return Err(PasswordError::Busy);
                }
                tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| PasswordError::Busy)?
                    .map_err(|_| PasswordError::Busy)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| PasswordError::Join)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_at_owasp_cost_and_verifies() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse battery", &h).unwrap());
        assert!(!verify_blocking("correct horse batterY", &h).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_hashing_is_capped() {
        // One slot and a wait far shorter than one hash: of two concurrent
        // verifications, one must be refused as busy.
        let mut hasher = Hasher::new(1, 8, Duration::from_secs(5)).unwrap();
        hasher.wait = Duration::from_millis(1);
        let (a, b) = tokio::join!(
            hasher.verify("a".into(), None),
            hasher.verify("b".into(), None)
        );
        let busy = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(PasswordError::Busy)))
            .count();
        assert_eq!(busy, 1, "{a:?} {b:?}");
        assert_eq!(hasher.available(), 1, "slot returned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_beyond_the_queue_are_refused_at_once() {
        // One slot, one place in the queue, a long wait: of three at once, one hashes,
        // one waits and then hashes, one is refused without waiting.
        let hasher = Hasher::new(1, 1, Duration::from_secs(30)).unwrap();
        let t = std::time::Instant::now();
        let (a, b, c) = tokio::join!(
            hasher.verify("a".into(), None),
            hasher.verify("b".into(), None),
            hasher.verify("c".into(), None)
        );
        let busy = [&a, &b, &c]
            .iter()
            .filter(|r| matches!(r, Err(PasswordError::Busy)))
            .count();
        assert_eq!(busy, 1, "{a:?} {b:?} {c:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        assert_eq!(hasher.available(), 1);
    }

    #[test]
    fn default_cap_leaves_half_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default_concurrency(), (cores / 2).max(1));
        assert_eq!(
            crate::Config::default().argon2_concurrency,
            default_concurrency()
        );
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let hasher = Hasher::new(1, 8, Duration::from_secs(5)).unwrap();
        let dummy = hasher.dummy_hash.to_string();
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
        // Even the dummy's own hash input is unknown, but a None hash is always false.
        assert!(dummy.starts_with("$argon2id$"));
    }
}
