//! The manager's own TLS listener (`--tls-cert`, `--tls-key`): rustls with the ring
//! provider, TLS 1.3 and 1.2 only, HTTP/1.1 by ALPN, no client certificates. The
//! accept loop ([`crate::serve`]) runs each handshake in its connection's task under a
//! deadline and a cap on handshakes in progress, so a client that stalls its handshake
//! holds one slot for at most the deadline and never delays the others.
//!
//! [`TlsReloader`] holds the current configuration; `SIGHUP` re-reads the files (a
//! renewed certificate) for new connections, and a failed reload keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// PEM files of the listener's certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The TLS files are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM object.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS certificate and key")]
    Rustls(#[from] rustls::Error),
}

/// Reads the files and builds the server configuration.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let bad = |path: &Path, message: String| TlsError::File {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files and the configuration built from them, replaceable at run time.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsReloader {
    /// Loads the files once.
    pub fn load(files: &TlsFiles) -> Result<Arc<TlsReloader>, TlsError> {
        Ok(Arc::new(TlsReloader {
            current: RwLock::new(server_config(files)?),
            files: files.clone(),
        }))
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Reloads on every `SIGHUP` until `cancel`.
    pub async fn reload_on_sighup(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: TLS files reload on restart only");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                }
            }
        }
    }
}
