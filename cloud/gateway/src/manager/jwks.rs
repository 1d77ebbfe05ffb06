//! The manager's signing keys (`GET /.well-known/jwks.json`), cached, so user access
//! tokens are verified locally: no manager round trip per request for the signature.
//!
//! - Fetched at start and every refresh interval (default 5 min) through the same
//!   client as every other manager call (CA file, TLS, deadline, 1 MiB cap), parsed by
//!   [`outband_jwt::parse_jwks`] (its own 64 KiB, 64-entry, 16-key bounds; Ed25519
//!   only). A failed fetch keeps the last good set and is retried with backoff
//!   (1 s doubling to the refresh interval, at most 60 s, ±20 % jitter).
//! - A token naming a `kid` the set lacks (the manager rotated its key) triggers a
//!   refetch, but at most one per `min_refetch` ([`RefetchGate`]): forged `kid`s cannot
//!   make the gateway hammer the manager. Requests that arrive while that fetch runs
//!   wait for it instead of fetching again.
//!
//! Expected `iss`/`aud` are the gateway's `--jwt-issuer`/`--jwt-audience`, with the
//! manager's defaults (`outband-manager`, `outband`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::Method;
use outband_jwt::{Claims, Expect, KeySet, MAX_KID_LEN, TokenError};
use tokio_util::sync::CancellationToken;

use super::client::{ClientError, ManagerClient};
use super::{Backoff, ManagerLink, jittered, random_u16};

/// Where the manager publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Default `iss` expected (the manager's `--issuer` default).
pub const DEFAULT_ISSUER: &str = "outband-manager";
/// Default `aud` expected (the manager's `--audience` default).
pub const DEFAULT_AUDIENCE: &str = "outband";
/// Default interval between routine fetches.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Default least time between two fetches caused by an unknown `kid`.
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);

/// What tokens must say and how often keys are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Interval between routine fetches.
    pub refresh: Duration,
    /// Least time between two fetches caused by an unknown `kid`.
    pub min_refetch: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            refresh: DEFAULT_REFRESH,
            min_refetch: DEFAULT_MIN_REFETCH,
        }
    }
}

/// Rate limit of refetches on an unknown `kid` (sans-IO: the time goes in).
#[derive(Debug, Clone)]
pub struct RefetchGate {
    min_interval: Duration,
    last: Option<Instant>,
}

impl RefetchGate {
    /// At most one refetch per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: None,
        }
    }

    /// Whether a refetch may start at `now`; if so, it is counted from `now`.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let open = self
            .last
            .is_none_or(|l| now.saturating_duration_since(l) >= self.min_interval);
        if open {
            self.last = Some(now);
        }
        open
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct JwksCounters {
    /// Fetches that replaced the set.
    pub fetch_ok: AtomicU64,
    /// Fetches that failed (manager down, bad document); the last set stays.
    pub fetch_error: AtomicU64,
    /// Refetches an unknown `kid` caused.
    pub refetch_unknown_kid: AtomicU64,
    /// Unknown `kid`s refused without a fetch (rate limit).
    pub refetch_limited: AtomicU64,
}

/// The cached key set and how to refresh it.
#[derive(Debug)]
pub struct JwksCache {
    client: ManagerClient,
    settings: JwksSettings,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Bumped on every successful fetch.
    generation: AtomicU64,
    gate: Mutex<RefetchGate>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Counters.
    pub counters: JwksCounters,
    last_error: Mutex<Option<String>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl JwksCache {
    /// A cache fetching through the manager link's client (same URL, CA, deadline).
    pub fn new(link: &ManagerLink, settings: JwksSettings) -> Self {
        Self::with_client(link.client.clone(), settings)
    }

    /// A cache fetching through `client`.
    pub fn with_client(client: ManagerClient, settings: JwksSettings) -> Self {
        Self {
            gate: Mutex::new(RefetchGate::new(settings.min_refetch)),
            client,
            settings,
            keys: RwLock::new(None),
            generation: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
            counters: JwksCounters::default(),
            last_error: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// The current key set, if one was ever fetched.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the key set (a fetch, or a test).
    pub fn install(&self, set: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The last fetch error, if the last fetch failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetches the key set once; on failure the last good set stays.
    pub async fn fetch(&self) -> Result<usize, String> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, String> {
        let result = match self
            .client
            .call_raw::<()>(Method::GET, JWKS_PATH, None, None)
            .await
        {
            Ok(body) => outband_jwt::parse_jwks(&body).map_err(|e| format!("GET {JWKS_PATH}: {e}")),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(set) => {
                let n = set.len();
                let before = self.current();
                let changed = before.as_ref().is_none_or(|b| !b.kids().eq(set.kids()));
                if changed {
                    tracing::info!(
                        kids = ?set.kids().collect::<Vec<_>>(),
                        skipped = set.ignored(),
                        "manager signing keys loaded"
                    );
                }
                self.install(set);
                self.counters.fetch_ok.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(n)
            }
            Err(e) => {
                self.counters.fetch_error.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Verifies an access token against the cached keys (iss, aud, exp, ... per
    /// [`outband_jwt::verify`]); an unknown `kid` may refetch the keys once (see the
    /// module docs).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let generation = self.generation.load(Ordering::Acquire);
        let (first, asked) = self.verify_now(token);
        let kid = match (first, asked) {
            (Err(TokenError::UnknownKey), Some(kid)) if kid.len() <= MAX_KID_LEN => kid,
            (other, _) => return other,
        };
        let _one = self.fetching.lock().await;
        if self.generation.load(Ordering::Acquire) == generation {
            // Nobody fetched while we waited: fetch, unless one ran too recently.
            let open = self
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_acquire(Instant::now());
            if !open {
                self.counters
                    .refetch_limited
                    .fetch_add(1, Ordering::Relaxed);
                return Err(TokenError::UnknownKey);
            }
            self.counters
                .refetch_unknown_kid
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(kid = %kid, "token signed by an unknown key; fetching the manager's keys");
            if let Err(e) = self.fetch_locked().await {
                tracing::warn!(error = %e, "fetching the manager's keys failed; keeping the last set");
            }
        }
        self.verify_now(token).0
    }

    /// One verification against the current set; also returns the `kid` looked up.
    fn verify_now(&self, token: &str) -> (Result<Claims, TokenError>, Option<String>) {
        let set = self.current();
        let expect = Expect {
            issuer: &self.settings.issuer,
            audience: &self.settings.audience,
            now: unix_now(),
        };
        let mut asked = None;
        let r = outband_jwt::verify(
            token,
            |kid| {
                asked = Some(kid.to_owned());
                set.as_ref().and_then(|s| s.get(kid)).copied()
            },
            &expect,
        );
        (r, asked)
    }

    /// Fetches at start and every refresh interval until `cancel`; failures retry with
    /// backoff and keep the last good set.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let cap = self
            .settings
            .refresh
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut backoff = Backoff::new(Duration::from_secs(1).min(cap), cap);
        loop {
            let delay = match self.fetch().await {
                Ok(_) => {
                    backoff.reset();
                    self.settings.refresh
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        keys = self.current().map_or(0, |s| s.len()),
                        "fetching the manager's signing keys failed; keeping the last set, retrying"
                    );
                    jittered(backoff.next_delay(), random_u16())
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP outband_gateway_jwks_fetches_total Fetches of the manager's JWKS.\n\
             # TYPE outband_gateway_jwks_fetches_total counter\n\
             outband_gateway_jwks_fetches_total{{result=\"ok\"}} {}\n\
             outband_gateway_jwks_fetches_total{{result=\"error\"}} {}\n\
             # HELP outband_gateway_jwks_unknown_kid_total Tokens naming a key not in the cached set: refetched, or refused by the refetch rate limit.\n\
             # TYPE outband_gateway_jwks_unknown_kid_total counter\n\
             outband_gateway_jwks_unknown_kid_total{{result=\"refetched\"}} {}\n\
             outband_gateway_jwks_unknown_kid_total{{result=\"limited\"}} {}\n\
             # HELP outband_gateway_jwks_keys Signing keys in the cached set.\n\
             # TYPE outband_gateway_jwks_keys gauge\n\
             outband_gateway_jwks_keys {}",
            get(&c.fetch_ok),
            get(&c.fetch_error),
            get(&c.refetch_unknown_kid),
            get(&c.refetch_limited),
            self.current().map_or(0, |s| s.len()),
        );
    }
}

/// Whether `e` says the manager is unreachable or failing (as opposed to refusing).
pub fn is_unavailable(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, .. } => status.is_server_error(),
        ClientError::Timeout { .. } | ClientError::Transport { .. } => true,
        ClientError::BadUrl(_) | ClientError::Ca { .. } | ClientError::Body { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outband_jwt::{PublicKey, SigningKey, TOKEN_TYP};

    #[test]
    fn refetch_gate_opens_once_per_interval() {
        let t0 = Instant::now();
        let mut g = RefetchGate::new(Duration::from_secs(10));
        assert!(g.try_acquire(t0), "the first is free");
        for s in [0, 1, 5, 9] {
            assert!(!g.try_acquire(t0 + Duration::from_secs(s)), "{s}");
        }
        assert!(g.try_acquire(t0 + Duration::from_secs(10)));
        assert!(!g.try_acquire(t0 + Duration::from_secs(19)));
        assert!(g.try_acquire(t0 + Duration::from_secs(25)));
        // A clock that went backwards does not open it.
        assert!(!g.try_acquire(t0));
    }

    fn key() -> SigningKey {
        let (kid, pkcs8, _) = outband_jwt::generate_key();
        SigningKey::from_pkcs8(kid, &pkcs8).unwrap()
    }

    fn token(k: &SigningKey, iss: &str) -> String {
        let now = unix_now();
        k.sign(&Claims {
            iss: iss.into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: "usr_1".into(),
            exp: now + 60,
            iat: now,
            nbf: now,
            jti: "j".into(),
            typ: TOKEN_TYP.into(),
            sid: "ses_1".into(),
            email: "a@b".into(),
            adm: false,
        })
    }

    /// A cache whose manager is a closed port: every fetch fails fast.
    fn offline(min_refetch: Duration) -> JwksCache {
        let client =
            ManagerClient::new("http://127.0.0.1:1", None, Duration::from_secs(2)).unwrap();
        JwksCache::with_client(
            client,
            JwksSettings {
                min_refetch,
                ..JwksSettings::default()
            },
        )
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval_and_keep_the_last_set() {
        let k = key();
        let cache = offline(Duration::from_secs(3600));
        assert!(cache.verify(&token(&k, DEFAULT_ISSUER)).await.is_err());
        cache.install(KeySet::from_keys(vec![PublicKey {
            kid: k.kid.clone(),
            key: k.public_key().try_into().unwrap(),
        }]));
        let claims = cache.verify(&token(&k, DEFAULT_ISSUER)).await.unwrap();
        assert_eq!(claims.sid, "ses_1");
        assert_eq!(
            cache.verify(&token(&k, "evil")).await,
            Err(TokenError::Issuer)
        );
        // The first unknown kid was tried before any set: one refetch (failed). Forged
        // kids after that are refused without contacting the manager.
        let before = cache.counters.fetch_error.load(Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(
                cache.verify(&token(&key(), DEFAULT_ISSUER)).await,
                Err(TokenError::UnknownKey)
            );
        }
        assert_eq!(cache.counters.fetch_error.load(Ordering::Relaxed), before);
        assert_eq!(
            cache.counters.refetch_unknown_kid.load(Ordering::Relaxed),
            1
        );
        assert_eq!(cache.counters.refetch_limited.load(Ordering::Relaxed), 50);
        // The failed fetches kept the set.
        assert!(cache.verify(&token(&k, DEFAULT_ISSUER)).await.is_ok());
        assert!(cache.last_error().is_some());
        let mut text = String::new();
        cache.render(&mut text);
        assert!(text.contains("outband_gateway_jwks_keys 1"), "{text}");
        assert!(
            text.contains("outband_gateway_jwks_unknown_kid_total{result=\"limited\"} 50"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn garbage_never_fetches() {
        let cache = offline(Duration::ZERO);
        for t in ["", "x", "a.b.c", &"A".repeat(100_000)] {
            assert!(cache.verify(t).await.is_err());
        }
        assert_eq!(
            cache.counters.refetch_unknown_kid.load(Ordering::Relaxed),
            0
        );
    }
}
