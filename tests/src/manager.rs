//! Starts `outband-manager` (SQLite in a data dir of the test) and talks to its API.
//!
//! The manager binary is not among the binaries [`crate::bins`] builds for every test
//! (it pulls in sqlx), so [`manager_bin`] builds it once per test process the same
//! way (`cargo build -p outband-manager --bins`, same profile and target dir), unless
//! `OUTBAND_E2E_BIN_DIR` or `OUTBAND_E2E_NO_BUILD` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// The manager binary, built once per test process.
pub fn manager_bin() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = crate::bins::bin_dir()?;
    BUILT
        .get_or_init(|| build(dir).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::bins::bin("outband-manager")
}

fn build(profile_dir: &Path) -> anyhow::Result<()> {
    if std::env::var_os("OUTBAND_E2E_BIN_DIR").is_some()
        || std::env::var_os("OUTBAND_E2E_NO_BUILD").is_some()
    {
        return Ok(());
    }
    crate::bins::cargo_build(profile_dir, &["outband-manager"])
}

/// A running manager process with its data in `<test dir>/<name>`.
#[derive(Debug)]
pub struct Manager {
    proc: Option<Proc>,
    name: String,
    data_dir: PathBuf,
    addr: SocketAddr,
    http: ureq::Agent,
}

impl Manager {
    /// Creates a global admin with `password` in a fresh data dir (`admin create`), then
    /// starts the manager on `127.0.0.1:0` without the bootstrap admin.
    pub fn start_with_admin(
        ctx: &TestContext,
        name: &str,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Manager> {
        let data_dir = ctx.subdir(name);
        let pw_file = ctx.path().join(format!("{name}.admin-password"));
        std::fs::write(&pw_file, format!("{password}\n"))?;
        let out = Command::new(manager_bin()?)
            .current_dir(ctx.path())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["admin", "create", "--email", email, "--password-file"])
            .arg(&pw_file)
            .output()
            .context("run outband-manager admin create")?;
        anyhow::ensure!(
            out.status.success(),
            "admin create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (proc, addr) = spawn(ctx, name, &data_dir, 0)?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Manager {
            proc: Some(proc),
            name: name.to_owned(),
            data_dir,
            addr,
            http,
        })
    }

    /// Kills the manager (SIGKILL).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.as_mut() {
            p.kill()?;
        }
        Ok(())
    }

    /// Starts the manager again on the same data dir and port (after [`Manager::kill`],
    /// or it is killed first).
    pub fn restart(&mut self, ctx: &TestContext) -> anyhow::Result<()> {
        self.kill()?;
        let (proc, addr) = spawn(ctx, &self.name, &self.data_dir, self.addr.port())?;
        anyhow::ensure!(
            addr == self.addr,
            "restarted manager on {addr}, not {}",
            self.addr
        );
        self.proc = Some(proc);
        Ok(())
    }

    /// The process.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// The base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request with an optional bearer token and JSON body: status and JSON body
    /// (`Value::String` of the text if not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.url());
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.http.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("POST", body) => {
                let mut r = self.http.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.cloned().unwrap_or(json!({})))
            }
            _ => anyhow::bail!("unsupported method {method}"),
        }
        .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().context("read body")?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Creates a gateway named `name` (as `admin`) and writes its one-time registration
    /// credential to `cred_file`; returns the gateway id.
    pub fn create_gateway(
        &self,
        admin: &str,
        name: &str,
        cred_file: &Path,
    ) -> anyhow::Result<String> {
        let (status, v) = self.call(
            "POST",
            "/api/v1/gateways",
            Some(admin),
            Some(&json!({ "name": name })),
        )?;
        anyhow::ensure!(status == 201, "create gateway: {status} {v}");
        let credential = v["registration_credential"]
            .as_str()
            .with_context(|| format!("no registration_credential in {v}"))?;
        std::fs::write(cred_file, format!("{credential}\n"))?;
        v["gateway"]["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no gateway id in {v}"))
    }

    /// `outband-gateway` flags that link it to this manager (plain HTTP on loopback)
    /// with the credential in `cred_file`.
    pub fn gateway_args(
        &self,
        cred_file: &Path,
        heartbeat_ms: u64,
        timeout_ms: u64,
    ) -> Vec<String> {
        vec![
            "--manager-url".into(),
            self.url(),
            "--registration-credential-file".into(),
            cred_file.display().to_string(),
            "--manager-heartbeat-interval-ms".into(),
            heartbeat_ms.to_string(),
            "--manager-timeout-ms".into(),
            timeout_ms.to_string(),
        ]
    }

    /// Logs in and returns the access token.
    pub fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let (status, v) = self.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({ "email": email, "password": password })),
        )?;
        anyhow::ensure!(status == 200, "login: {status} {v}");
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no access_token in {v}"))
    }
}

fn spawn(
    ctx: &TestContext,
    name: &str,
    data_dir: &Path,
    port: u16,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let ready = ctx.path().join(format!("{name}.ready.json"));
    let _ = std::fs::remove_file(&ready);
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ready-file".into(),
        ready.display().to_string(),
        "--no-bootstrap-admin".into(),
        "--log".into(),
        "info,outband_manager=debug".into(),
    ];
    let mut proc = Proc::spawn(ctx, name, &manager_bin()?, &args)?;
    let addr = wait_for("manager ready file", Duration::from_secs(60), || {
        if !proc.is_running() {
            return Some(Err(anyhow::anyhow!(
                "manager exited before it was ready:\n{}",
                crate::context::tail(&proc.stderr(), 30)
            )));
        }
        let text = std::fs::read_to_string(&ready).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["http_addr"].as_str()?.parse::<SocketAddr>().ok().map(Ok)
    })??;
    Ok((proc, addr))
}
