//! The outband gateway: terminates agent tunnels (TLS 1.3, agent client
//! certificates, the framed multiplexer) and relays operator connections over them.
//!
//! Layout:
//! - [`config`]: command line and TOML config, validated.
//! - [`pki`]: the TLS server identity (production files or a dev CA).
//! - [`agents`]: agent listener, certificate verifier, hello, per-connection task.
//! - [`registry`]: connected agents; opening streams to them.
//! - [`relay`]: TCP listeners whose connections become streams.
//! - [`http`]: the operator HTTP API (no authentication: loopback only), and the
//!   user API (`--user-listen`, access tokens from the manager).
//! - [`metrics`]: counters and Prometheus text.
//! - [`manager`]: the optional outbound link to the manager (registration,
//!   heartbeats with the connected agents, revocation feed).
//!
//! [`run`] takes already bound listeners and a shutdown future, so tests bind port 0.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agents;
pub mod config;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod pki;
pub mod registry;
pub mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Server certificate setup failed.
    #[error("setting up the TLS server identity")]
    Pki(#[from] pki::PkiError),
    /// The TLS configuration was rejected.
    #[error("building the TLS configuration")]
    Tls(#[from] rustls::Error),
    /// A listener's address could not be read.
    #[error("reading listener address")]
    ListenerAddr(#[source] std::io::Error),
    /// The ready file could not be written.
    #[error("writing ready file {path}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: pki::PkiError,
    },
    /// The HTTP server failed.
    #[error("HTTP server")]
    Http(#[source] std::io::Error),
    /// The manager client could not be set up (`manager_url`, `manager_ca_file`).
    #[error("setting up the manager client")]
    Manager(#[from] manager::client::ClientError),
    /// The user API listener could not be bound.
    #[error("binding the user API listener {addr}")]
    UserListen {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Contents of the `--ready-file`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReadyInfo {
    /// Agent listener address.
    pub agent_addr: String,
    /// HTTP listener address.
    pub http_addr: String,
    /// User API listener address (`--user-listen`), when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_addr: Option<String>,
    /// Absolute path of the dev CA agents should pin (`null` with production certs).
    pub ca_file: Option<String>,
    /// SHA-256 fingerprint of the dev CA (`sha256:<hex>`).
    pub ca_fingerprint: Option<String>,
}

/// Runs the gateway on the given listeners until `shutdown` completes.
pub async fn run(
    config: Config,
    agent_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let identity = match &config.tls {
        Some(files) => pki::load_files(&files.cert, &files.key)?,
        None => pki::load_or_create_dev(&config.state_dir)?,
    };
    let ca_file = identity.ca_file.clone();
    let ca_fingerprint = identity.ca_fingerprint.clone();
    if let (Some(path), Some(fp)) = (&ca_file, &ca_fingerprint) {
        tracing::info!(ca_file = %path.display(), fingerprint = %fp, "dev CA (agents pin this CA)");
    }
    let tls = agents::tls_config(identity)?;
    let manager_link = match &config.manager {
        Some(m) => Some(Arc::new(manager::ManagerLink::new(
            m.clone(),
            config.state_dir.clone(),
        )?)),
        None => None,
    };

    let agent_addr: SocketAddr = agent_listener
        .local_addr()
        .map_err(GatewayError::ListenerAddr)?;
    let http_addr: SocketAddr = http_listener
        .local_addr()
        .map_err(GatewayError::ListenerAddr)?;

    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }

    let metrics = Arc::new(metrics::Metrics::default());
    let registry = Arc::new(registry::Registry::new(metrics.clone()));
    let relays = Arc::new(relay::Relays::new(
        registry.clone(),
        metrics.clone(),
        token.child_token(),
    ));
    let joiner = Arc::new(manager::join::Joiner::new(
        manager_link.clone(),
        metrics.clone(),
    ));
    let server = agents::AgentServer::new(
        tls,
        config.max_handshakes,
        agents::AgentSettings {
            heartbeat_interval: config.heartbeat_interval,
            handshake_timeout: config.handshake_timeout,
            window: config.window,
            shared_window: config.shared_window,
            max_window: config.max_window,
        },
        registry.clone(),
        metrics.clone(),
        joiner,
    );
    let agent_task = tokio::spawn(server.serve(agent_listener, token.clone()));

    if let Some(link) = &manager_link {
        tracing::info!(manager_url = %link.status().manager_url, "manager link enabled");
        tokio::spawn(
            link.clone()
                .run(registry.clone(), metrics.clone(), token.child_token()),
        );
    }

    let mut user_addr = None;
    let user_api = match (&config.user_api, &manager_link) {
        (Some(u), Some(link)) => {
            let listener =
                TcpListener::bind(u.listen)
                    .await
                    .map_err(|source| GatewayError::UserListen {
                        addr: u.listen,
                        source,
                    })?;
            user_addr = Some(listener.local_addr().map_err(GatewayError::ListenerAddr)?);
            let tls = match &config.tls {
                Some(files) => Some(http::listen::user_tls_config(pki::load_files(
                    &files.cert,
                    &files.key,
                )?)?),
                None => None,
            };
            let jwks = Arc::new(manager::jwks::JwksCache::new(link, u.jwks.clone()));
            let events = Arc::new(manager::events::EventQueue::default());
            tokio::spawn(jwks.clone().run(token.child_token()));
            tokio::spawn(events.clone().run(link.clone(), token.child_token()));
            let api = Arc::new(http::user::UserApi {
                registry: registry.clone(),
                manager: link.clone(),
                jwks,
                events,
                metrics: http::user::UserMetrics::default(),
            });
            tracing::info!(user_addr = ?user_addr, tls = tls.is_some(), "user API enabled");
            tokio::spawn(http::listen::serve(
                listener,
                tls,
                http::user::router(api.clone()),
                http::listen::ListenLimits::default(),
                token.child_token(),
            ));
            Some(api)
        }
        _ => None,
    };

    let app = http::router(http::AppState {
        registry,
        relays,
        metrics,
        manager: manager_link,
        user: user_api,
    });
    let http_task = tokio::spawn(
        axum::serve(http_listener, app)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    );

    if let Some(path) = &config.ready_file {
        let info = ReadyInfo {
            agent_addr: agent_addr.to_string(),
            http_addr: http_addr.to_string(),
            user_addr: user_addr.map(|a| a.to_string()),
            ca_file: ca_file.as_ref().map(|p| p.display().to_string()),
            ca_fingerprint,
        };
        let json = serde_json::to_vec_pretty(&info).expect("plain struct serializes");
        if let Err(source) = pki::write_atomic(path, &json, 0o644) {
            token.cancel();
            return Err(GatewayError::ReadyFile {
                path: path.clone(),
                source,
            });
        }
    }
    tracing::info!(agent_addr = %agent_addr, http_addr = %http_addr, "gateway ready");

    token.cancelled().await;
    tracing::info!("shutting down");
    let _ = agent_task.await;
    match http_task.await {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(e)) => Err(GatewayError::Http(e)),
    }
}
