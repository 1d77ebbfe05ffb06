//! [`Manager`]: the shared state every request handler uses (store, keys, hasher,
//! clock, metrics, settings), plus the audit helper.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ManagerError;
use crate::audit_limit::DenialAuditLimit;
use crate::config::Config;
use crate::ids::Clock;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::password::Hasher;
use crate::secrets::{CredentialKeys, SecretError};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::housekeeping::Purged;

/// How long ended sessions are kept before deletion.
pub const SESSION_RETENTION_SECS: i64 = 24 * 3600;
/// How often housekeeping runs.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);
use crate::store::audit::NewAudit;

/// Shared service state.
#[derive(Debug)]
pub struct Manager {
    /// Database.
    pub store: Store,
    /// Signing keys.
    pub keys: Keys,
    /// Password hashing.
    pub hasher: Hasher,
    /// Time.
    pub clock: Clock,
    /// Counters.
    pub metrics: Metrics,
    /// Settings.
    pub config: Config,
    /// Keys sealing BMC credentials and signing keys at rest.
    pub credential_keys: Arc<CredentialKeys>,
    /// Bound on audit rows of unauthenticated (or repeatable) denials.
    pub denial_audit: DenialAuditLimit,
}

impl Manager {
    /// Builds the state on an open store (computes the dummy password hash, reads or
    /// creates the credential key file).
    pub fn new(store: Store, config: Config, clock: Clock) -> Result<Arc<Manager>, ManagerError> {
        let hasher = Hasher::new(
            config.argon2_concurrency,
            config.argon2_queue,
            config.argon2_wait,
        )?;
        let credential_keys =
            Arc::new(CredentialKeys::load_or_create(&config.credential_key_file)?);
        Ok(Arc::new(Manager {
            keys: Keys::new(store.clone(), clock.clone(), credential_keys.clone()),
            credential_keys,
            store,
            hasher,
            clock,
            metrics: Metrics::default(),
            config,
            denial_audit: DenialAuditLimit::default(),
        }))
    }

    /// Refuses to serve when stored credentials or signing keys are sealed under a key
    /// id the key file lacks (a lost or wrong `--credential-key-file` must not go
    /// unnoticed).
    pub async fn check_credential_keys(&self) -> Result<(), ManagerError> {
        let known = self.credential_keys.key_ids();
        let mut used = self.store.credential_key_ids().await?;
        used.extend(self.store.signing_key_seal_ids().await?);
        for kid in used {
            if !known.contains(&kid.as_str()) {
                return Err(SecretError::UnknownKey(kid).into());
            }
        }
        Ok(())
    }

    /// One housekeeping pass: ended sessions are kept for [`SESSION_RETENTION_SECS`]
    /// (so a revoked session still reads as revoked for a while), then deleted.
    pub async fn housekeeping(&self) -> Result<Purged, StoreError> {
        let now = self.clock.now();
        let window = self.config.throttle.window.as_secs() as i64;
        self.store
            .purge(now, now - SESSION_RETENTION_SECS, window)
            .await
    }

    /// Runs [`Manager::housekeeping`] every [`HOUSEKEEPING_INTERVAL`] until cancelled.
    pub async fn housekeeping_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.housekeeping().await {
                Ok(p) if p != Purged::default() => {
                    tracing::info!(
                        sessions = p.sessions,
                        throttle = p.throttle,
                        users = p.users,
                        "housekeeping"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
            }
        }
    }

    /// Appends the audit row of a denial from `ip` within [`DenialAuditLimit`]; beyond
    /// it the row is only counted (`audit_suppressed`). The outcome is `denied`.
    pub async fn audit_denial(
        &self,
        ip: std::net::IpAddr,
        mut entry: NewAudit,
    ) -> Result<(), StoreError> {
        if !self.denial_audit.allow(ip, self.clock.now()) {
            crate::metrics::inc(&self.metrics.audit_suppressed);
            return Ok(());
        }
        entry.outcome = "denied";
        entry.source_ip = Some(ip.to_string());
        self.audit(entry).await
    }

    /// Appends an audit entry stamped with the current time. Audit is part of the
    /// operation: callers propagate a failure (fail closed).
    pub async fn audit(&self, mut entry: NewAudit) -> Result<(), StoreError> {
        entry.at_ms = self.clock.now_ms();
        tracing::info!(
            action = entry.action,
            outcome = entry.outcome,
            actor = entry.actor_id.as_deref().unwrap_or("-"),
            source_ip = entry.source_ip.as_deref().unwrap_or("-"),
            target = entry.target.as_deref().unwrap_or("-"),
            detail = entry.detail.as_deref().unwrap_or("-"),
            "audit"
        );
        self.store.audit_append(&entry).await
    }
}
