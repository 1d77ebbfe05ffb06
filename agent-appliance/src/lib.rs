//! The outband appliance agent.
//!
//! It dials its gateway (TLS 1.3, client certificate made from its own key), keeps
//! that one connection up with heartbeats, reconnects with backoff, and relays the
//! streams the gateway opens to BMC endpoints on its allow-list.
//!
//! Layout:
//! - [`config`]: command line and config file, validated into [`config::Config`].
//! - [`identity`]: the persistent key, agent id, pairing code, client certificate.
//! - [`join`]: the join token (file, hello, outcome recorded in the state dir).
//! - [`tls`]: the rustls client configuration and gateway trust (CA pin).
//! - [`connect`]: dial loop, hello exchange, backoff policy use.
//! - [`discovery`]: BMC discovery on configured ranges (RMCP ping, Redfish probe).
//! - [`backoff`]: exponential backoff with full jitter (pure).
//! - [`relay`]: stream opens, BMC relays, requests, inventory.
//! - [`target`]: endpoint parsing and the allow-list.
//! - [`log`]: a tiny stderr logger for `tracing`.
//!
//! Architecture invariant: no tokio, hyper, axum or sqlx in this crate's dependency
//! tree; the runtime is smol. The agent dials only its gateway and allow-listed BMC
//! endpoints that the gateway asked for.
#![warn(missing_docs)]

pub mod backoff;
pub mod bmc;
pub mod config;
pub mod connect;
pub mod console;
pub mod discovery;
pub mod identity;
pub mod join;
pub mod log;
pub mod relay;
pub mod rt;
pub mod target;
pub mod tls;

/// This build's version, sent in the hello and in `AgentInfo`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
