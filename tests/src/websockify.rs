//! websockify (the noVNC project's WebSocket-to-TCP proxy, from the test venv) as a
//! real third-party WebSocket server: in front of QEMU's VNC port it stands in for a
//! BMC's `wss://…/kvm/0`, in front of a TCP banner/echo server for a BMC's
//! `wss://…/console0`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// The websockify executable in the test venv.
pub const WEBSOCKIFY: &str = "/opt/outband-venv/bin/websockify";

/// How to start websockify.
#[derive(Debug, Clone, Default)]
pub struct WebsockifyOptions {
    /// Serve TLS only (`--ssl-only`) with a fresh self-signed certificate.
    pub tls: bool,
    /// Require HTTP Basic authentication (`--auth-plugin BasicHTTPAuth`) with this
    /// `user:password`.
    pub basic_auth: Option<String>,
}

/// A running websockify.
#[derive(Debug)]
pub struct Websockify {
    proc: Proc,
    addr: SocketAddr,
    cert_sha256: Option<[u8; 32]>,
    cert_pem: Option<PathBuf>,
}

impl Websockify {
    /// Starts websockify on a free port, proxying to `target`, and waits until it
    /// accepts connections.
    pub fn start(
        ctx: &TestContext,
        target: SocketAddr,
        opts: &WebsockifyOptions,
    ) -> anyhow::Result<Websockify> {
        let (cert, cert_sha256) = if opts.tls {
            let (pem, fp) = write_cert(&ctx.subdir("websockify-tls"))?;
            (Some(pem), Some(fp))
        } else {
            (None, None)
        };
        let mut last_err = None;
        // A port that was free may be taken before websockify binds it: try a few.
        for _ in 0..5 {
            let port = crate::net::free_port();
            let mut args: Vec<String> = Vec::new();
            if let Some(cert) = &cert {
                args.push(format!("--cert={}", cert.display()));
                args.push("--ssl-only".into());
            }
            if let Some(userpass) = &opts.basic_auth {
                args.push("--auth-plugin=BasicHTTPAuth".into());
                args.push(format!("--auth-source={userpass}"));
            }
            args.push(format!("127.0.0.1:{port}"));
            args.push(target.to_string());
            let mut proc = Proc::spawn(ctx, "websockify", Path::new(WEBSOCKIFY), &args)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let up = wait_for("websockify port", Duration::from_secs(20), || {
                if !proc.is_running() {
                    return Some(false);
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .ok()
                    .map(|_| true)
            });
            match up {
                Ok(true) => {
                    return Ok(Websockify {
                        proc,
                        addr,
                        cert_sha256,
                        cert_pem: cert,
                    });
                }
                Ok(false) => {
                    last_err = Some(anyhow::anyhow!("websockify exited: {}", proc.stderr()));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("websockify did not start")))
            .context("start websockify")
    }

    /// Its listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 of its TLS certificate (DER), when started with TLS.
    pub fn cert_sha256(&self) -> Option<[u8; 32]> {
        self.cert_sha256
    }

    /// Its certificate and key (one PEM file), when started with TLS.
    pub fn cert_pem(&self) -> Option<&Path> {
        self.cert_pem.as_deref()
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// Writes a self-signed certificate for 127.0.0.1/localhost and its key into one PEM
/// file (as websockify's `--cert` takes it); returns the path and the SHA-256 of the
/// certificate's DER.
fn write_cert(dir: &Path) -> anyhow::Result<(PathBuf, [u8; 32])> {
    let key = rcgen::KeyPair::generate().context("generate key")?;
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .context("certificate params")?;
    let cert = params.self_signed(&key).context("self-sign")?;
    let fp: [u8; 32] = Sha256::digest(cert.der()).into();
    let path = dir.join("bmc.pem");
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem()))
        .with_context(|| format!("write {}", path.display()))?;
    Ok((path, fp))
}
