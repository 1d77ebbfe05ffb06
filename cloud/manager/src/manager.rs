//! [`Manager`]: the shared state every request handler uses (store, keys, hasher,
//! clock, metrics, settings), plus the audit helper.

use std::sync::Arc;

use crate::config::Config;
use crate::ids::Clock;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::password::{Hasher, PasswordError};
use crate::store::Store;
use crate::store::StoreError;
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
}

impl Manager {
    /// Builds the state on an open store (computes the dummy password hash).
    pub fn new(store: Store, config: Config, clock: Clock) -> Result<Arc<Manager>, PasswordError> {
        let hasher = Hasher::new(config.argon2_concurrency, config.argon2_wait)?;
        Ok(Arc::new(Manager {
            keys: Keys::new(store.clone(), clock.clone()),
            store,
            hasher,
            clock,
            metrics: Metrics::default(),
            config,
        }))
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
            detail = entry.detail.as_deref().unwrap_or("-"),
            "audit"
        );
        self.store.audit_append(&entry).await
    }
}
