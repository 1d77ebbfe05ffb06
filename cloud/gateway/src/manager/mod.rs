//! The gateway's link to the outband manager: outbound only (the manager never calls
//! the gateway), optional (without `--manager-url` the gateway runs standalone).
//!
//! - On start, if no gateway token is stored in the state dir, register with the
//!   one-time registration credential and store the token (`manager-token.json`,
//!   0600); later starts reuse it.
//! - Every heartbeat interval, report the connected agents (id, pairing code,
//!   inventory endpoints), then poll the revocation feed into [`Revocations`]. A
//!   change in the registry (agent connected, gone, new inventory) brings the next
//!   heartbeat forward, at most one per min(interval, 1 s).
//! - Failures never stop the gateway: they are logged, counted
//!   (`outband_gateway_manager_heartbeats_total{result="error"}`), shown by
//!   `GET /api/v1/manager`, and retried with exponential backoff.
//!
//! - [`client`]: the HTTP client (timeouts, bounded bodies).
//! - [`secret`]: the credential and token wrapper (`***` in Debug, zeroized).
//! - [`token_store`]: the token file.
//! - [`revocations`]: the ended login sessions with the feed cursor.
//! - [`jwks`]: the manager's signing keys, cached, for verifying user tokens locally.
//! - [`session`]: session authorization (may this user do this on this server?).
//! - [`events`]: user actions queued for the manager's audit log.
//! - [`join`]: join tokens agents present, spent at the manager, outcome sent back.

pub mod client;
pub mod events;
pub mod join;
pub mod jwks;
pub mod revocations;
pub mod secret;
pub mod session;
pub mod token_store;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use outband_api::gateways::{HeartbeatRequest, ReportedAgent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::ManagerConfig;
use crate::metrics::Metrics;
use crate::registry::{AgentView, Registry};
use client::{ClientError, ManagerClient};
pub use revocations::Revocations;
use secret::Secret;
use token_store::StoredToken;

/// Most agents in one heartbeat (the manager's limit).
pub const MAX_REPORTED_AGENTS: usize = 1024;
/// Most endpoints reported per agent (the manager's limit).
pub const MAX_REPORTED_ENDPOINTS: usize = 64;
/// Longest endpoint URL reported (the manager's limit).
pub const MAX_REPORTED_URL: usize = 512;
/// Page size of the manager's revocation feed.
pub const REVOCATION_PAGE: usize = 1000;
/// Most revocation pages fetched in one tick.
const MAX_PAGES_PER_TICK: usize = 10;

/// What `GET /api/v1/manager` shows. Never the token or the credential.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManagerStatus {
    /// The manager base URL.
    pub manager_url: String,
    /// Whether the gateway holds a gateway token.
    pub registered: bool,
    /// This gateway's id at the manager.
    pub gateway_id: Option<String>,
    /// Last successful heartbeat, RFC 3339 UTC.
    pub last_heartbeat_at: Option<String>,
    /// The same, Unix seconds.
    pub last_heartbeat_unix: Option<u64>,
    /// Agents reported in the last successful heartbeat.
    pub last_reported_agents: usize,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Ended login sessions known from the revocation feed.
    pub revoked_sessions: usize,
    /// The revocation feed cursor (Unix seconds).
    pub revocation_cursor: Option<i64>,
}

/// The link's shared state: status for the API, the revocation set for sessions.
#[derive(Debug)]
pub struct ManagerLink {
    config: ManagerConfig,
    state_dir: PathBuf,
    client: ManagerClient,
    status: Mutex<ManagerStatus>,
    /// The gateway token in use (set by the heartbeat loop), for the other calls.
    token: Mutex<Option<Secret>>,
    /// Ended login sessions.
    pub revocations: Revocations,
}

/// Exponential backoff from `base` doubling to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            next: base,
        }
    }

    /// The delay before the next retry; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Backoff bounds for a heartbeat interval: from min(interval, 1 s) up to
/// 6 × interval, kept within 1..=60 s.
pub fn backoff_for(interval: Duration) -> Backoff {
    let base = interval.min(Duration::from_secs(1));
    let cap = (interval * 6).clamp(Duration::from_secs(1), Duration::from_secs(60));
    Backoff::new(base, cap.max(base))
}

/// `d` scaled into 80..=120 % by `r` (random bits), so gateways that lost the manager
/// together do not all retry in the same instant.
pub fn jittered(d: Duration, r: u16) -> Duration {
    d.mul_f64(0.8 + 0.4 * f64::from(r) / f64::from(u16::MAX))
}

fn random_u16() -> u16 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 2];
    // On failure (no entropy source) the delay is just not jittered.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u16::from_le_bytes(b)
}

/// The heartbeat body for the agents connected now, cut to the manager's limits.
/// Agents whose id the manager would refuse are left out (logged at debug).
pub fn report(agents: &[AgentView]) -> HeartbeatRequest {
    let valid_id = |id: &str| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    };
    let printable = |s: &str| s.bytes().all(|b| b > b' ' && b < 0x7f);
    let agents = agents
        .iter()
        .filter(|a| {
            let ok = valid_id(&a.agent_id)
                && !a.pairing_code.is_empty()
                && a.pairing_code.len() <= 32
                && printable(&a.pairing_code);
            if !ok {
                tracing::debug!(agent_id = %a.agent_id, "agent not reportable to the manager");
            }
            ok
        })
        .take(MAX_REPORTED_AGENTS)
        .map(|a| ReportedAgent {
            agent_id: a.agent_id.clone(),
            pairing_code: a.pairing_code.clone(),
            endpoints: a
                .inventory
                .iter()
                .map(|e| e.url.clone())
                .filter(|u| !u.is_empty() && u.len() <= MAX_REPORTED_URL && printable(u))
                .take(MAX_REPORTED_ENDPOINTS)
                .collect(),
        })
        .collect();
    HeartbeatRequest { agents }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ManagerLink {
    /// A link for `config`; the token file lives in `state_dir`.
    pub fn new(config: ManagerConfig, state_dir: PathBuf) -> Result<Self, ClientError> {
        let client = ManagerClient::new(&config.url, config.ca_file.as_deref(), config.timeout)?;
        Ok(Self {
            status: Mutex::new(ManagerStatus {
                manager_url: config.url.clone(),
                ..ManagerStatus::default()
            }),
            config,
            state_dir,
            client,
            token: Mutex::new(None),
            revocations: Revocations::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManagerStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gateway token the heartbeat loop uses now; `None` until registered.
    pub(crate) fn gateway_token(&self) -> Option<Secret> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current status.
    pub fn status(&self) -> ManagerStatus {
        let mut s = self.lock().clone();
        s.revoked_sessions = self.revocations.len();
        s.revocation_cursor = self.revocations.cursor();
        s
    }

    fn failed(&self, err: String) {
        let mut s = self.lock();
        s.last_error = Some(err);
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    }

    /// Runs registration, heartbeats and revocation polling until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        let mut credential = self.read_credential();
        let mut token = self.load_token();
        if token.is_none() && credential.is_none() {
            let msg = "not registered with the manager: no stored gateway token and no \
                       usable --registration-credential-file";
            tracing::error!("{msg}; serving agents standalone");
            self.failed(msg.into());
            return;
        }
        let interval = self.config.heartbeat_interval;
        let mut backoff = backoff_for(interval);
        loop {
            let ok = self
                .tick(&mut token, &mut credential, &registry, &metrics)
                .await;
            if token.is_none() && credential.is_none() {
                tracing::error!(
                    "no usable registration credential left; the gateway keeps serving \
                     agents standalone until it is restarted with a new one"
                );
                return;
            }
            if ok {
                backoff.reset();
                // The next heartbeat after the interval, or sooner when agents come,
                // go or report inventory (but at most one per min(interval, 1 s)).
                let started = tokio::time::Instant::now();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = registry.changed().notified() => {
                        let gap = interval.min(Duration::from_secs(1));
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep_until(started + gap) => {}
                        }
                    }
                }
            } else {
                let delay = jittered(backoff.next_delay(), random_u16());
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    fn read_credential(&self) -> Option<Secret> {
        let path = self.config.registration_credential_file.as_ref()?;
        match secret::read_credential_file(path) {
            Ok(s) => Some(s),
            Err(e) => {
                // Fine once registered: the credential is only needed once.
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn load_token(&self) -> Option<StoredToken> {
        match token_store::load(&self.state_dir) {
            Ok(Some(t)) if t.manager_url == self.config.url => {
                tracing::info!(gateway_id = %t.gateway_id, "using the stored gateway token");
                let mut s = self.lock();
                s.registered = true;
                s.gateway_id = Some(t.gateway_id.clone());
                Some(t)
            }
            Ok(Some(t)) => {
                tracing::warn!(
                    stored_for = %t.manager_url,
                    manager_url = %self.config.url,
                    "the stored gateway token belongs to another manager URL; registering anew"
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("{e}; registering anew");
                None
            }
        }
    }

    /// One round: register if needed, heartbeat, poll revocations. `true` on success.
    async fn tick(
        &self,
        token: &mut Option<StoredToken>,
        credential: &mut Option<Secret>,
        registry: &Registry,
        metrics: &Metrics,
    ) -> bool {
        if token.is_none() {
            let Some(cred) = credential.take() else {
                return false;
            };
            match self.client.register(&cred, env!("CARGO_PKG_VERSION")).await {
                Ok(r) => {
                    let t = StoredToken {
                        manager_url: self.config.url.clone(),
                        gateway_id: r.gateway_id.clone(),
                        token: Secret::new(r.gateway_token.clone()),
                    };
                    if let Err(e) = token_store::store(&self.state_dir, &t) {
                        tracing::error!(
                            "{e}: the gateway token is kept in memory only; the next start \
                             needs a new registration credential"
                        );
                    }
                    tracing::info!(gateway_id = %t.gateway_id, "registered with the manager");
                    let mut s = self.lock();
                    s.registered = true;
                    s.gateway_id = Some(t.gateway_id.clone());
                    drop(s);
                    *token = Some(t);
                }
                Err(e) if e.is_unauthorized() => {
                    // Spent, expired or unknown: retrying it cannot succeed.
                    tracing::error!(
                        error = %e,
                        "the manager refused the registration credential (unknown, used or \
                         expired); ask the manager's admin for a new one \
                         (POST /api/v1/gateways/{{id}}/credential)"
                    );
                    self.failed(format!("registration refused: {e}"));
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registration with the manager failed; retrying");
                    self.failed(format!("registration failed: {e}"));
                    *credential = Some(cred);
                    return false;
                }
            }
        }
        let Some(t) = token.as_ref() else {
            return false;
        };
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.token.clone());
        let body = report(&registry.list());
        match self.client.heartbeat(&t.token, &body).await {
            Ok(resp) => {
                metrics
                    .manager_heartbeats_ok
                    .fetch_add(1, Ordering::Relaxed);
                let now = SystemTime::now();
                {
                    let mut s = self.lock();
                    if s.consecutive_failures > 0 {
                        tracing::info!(
                            failures = s.consecutive_failures,
                            "manager reachable again"
                        );
                    }
                    s.last_heartbeat_at = Some(humantime::format_rfc3339_seconds(now).to_string());
                    s.last_heartbeat_unix = Some(unix(now));
                    s.last_reported_agents = body.agents.len();
                    s.last_error = None;
                    s.consecutive_failures = 0;
                }
                tracing::debug!(agents = body.agents.len(), "manager heartbeat");
                self.revocations.start_at(resp.now);
                self.poll_revocations(&t.token).await;
                true
            }
            Err(e) => {
                metrics
                    .manager_heartbeats_error
                    .fetch_add(1, Ordering::Relaxed);
                if e.is_unauthorized() {
                    tracing::error!(
                        error = %e,
                        gateway_id = %t.gateway_id,
                        "the manager rejected the gateway token (the gateway was re-registered \
                         or removed); still serving agents, retrying; give the gateway a new \
                         registration credential to register again"
                    );
                    if credential.is_some() {
                        // An unspent credential from this start: register with it.
                        *token = None;
                        self.lock().registered = false;
                    }
                } else {
                    tracing::warn!(error = %e, "manager heartbeat failed; retrying with backoff");
                }
                self.failed(e.to_string());
                false
            }
        }
    }

    async fn poll_revocations(&self, token: &Secret) {
        for _ in 0..MAX_PAGES_PER_TICK {
            let Some((since, after)) = self.revocations.query() else {
                return;
            };
            match self
                .client
                .revocations(token, since, after.as_deref())
                .await
            {
                Ok(page) => {
                    let applied = self.revocations.apply(&page, REVOCATION_PAGE);
                    if applied.added > 0 {
                        tracing::info!(
                            added = applied.added,
                            total = self.revocations.len(),
                            "login sessions ended (revocation feed)"
                        );
                    }
                    if !applied.more {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "polling the revocation feed failed");
                    self.lock().last_error = Some(format!("revocation feed: {e}"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EndpointView;

    fn agent(id: &str, code: &str, urls: &[&str]) -> AgentView {
        AgentView {
            agent_id: id.into(),
            peer_addr: "127.0.0.1:1".into(),
            connected_at: String::new(),
            connected_at_unix: 0,
            version: String::new(),
            protocol_version: 1,
            pairing_code: code.into(),
            capabilities: vec![],
            streams: 0,
            bytes_in: 0,
            bytes_out: 0,
            rtt_ms: None,
            inventory: urls
                .iter()
                .map(|u| EndpointView {
                    url: (*u).into(),
                    reachable: true,
                    source: "config",
                    cert_sha256: None,
                })
                .collect(),
        }
    }

    #[test]
    fn report_is_cut_to_the_managers_limits() {
        let many: Vec<String> = (0..100).map(|i| format!("vnc://10.0.0.{i}:5900")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = format!("https://{}", "a".repeat(600));
        let agents = vec![
            agent(
                "ag-1",
                "ABCD-EFGH",
                &["ipmi://10.0.0.1:623", "bad url", &long],
            ),
            agent("ag-2", "WXYZ-1234", &many),
            agent("bad id/..", "ABCD", &[]),
            agent("ag-3", "", &[]),
        ];
        let r = report(&agents);
        assert_eq!(r.agents.len(), 2);
        assert_eq!(r.agents[0].agent_id, "ag-1");
        assert_eq!(r.agents[0].pairing_code, "ABCD-EFGH");
        assert_eq!(r.agents[0].endpoints, vec!["ipmi://10.0.0.1:623"]);
        assert_eq!(r.agents[1].endpoints.len(), MAX_REPORTED_ENDPOINTS);
        let lots: Vec<AgentView> = (0..1100)
            .map(|i| agent(&format!("ag-{i}"), "C", &[]))
            .collect();
        assert_eq!(report(&lots).agents.len(), MAX_REPORTED_AGENTS);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = backoff_for(Duration::from_secs(10));
        let seq: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        let mut fast = backoff_for(Duration::from_millis(200));
        assert_eq!(fast.next_delay(), Duration::from_millis(200));
        for _ in 0..10 {
            fast.next_delay();
        }
        assert_eq!(fast.next_delay(), Duration::from_millis(1200));
        let d = Duration::from_secs(10);
        assert_eq!(jittered(d, 0), Duration::from_secs(8));
        assert_eq!(jittered(d, u16::MAX), Duration::from_secs(12));
        assert_eq!(jittered(d, u16::MAX / 2).as_millis(), 9999);
    }
}
