//! Starts `outband-gateway` and talks to its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// The gateway's log filter unless a test sets one: our crates at debug, libraries
/// (rustls, hyper) at info.
pub const DEFAULT_LOG: &str = "info,outband_gateway=debug,outband_tunnel=debug";

/// Command-line options for the gateway; `None` leaves the gateway's default.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// `--agent-listen` port (0 = any; pass a fixed one to restart on the same port).
    pub agent_port: u16,
    /// `--http-listen` port (0 = any).
    pub http_port: u16,
    /// `--heartbeat-interval-ms`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `--handshake-timeout-ms`.
    pub handshake_timeout_ms: Option<u64>,
    /// `--max-handshakes`.
    pub max_handshakes: Option<u32>,
    /// `--log` (default [`DEFAULT_LOG`], so failures explain themselves).
    pub log: Option<String>,
    /// Further flags, passed as given (e.g. `--manager-url URL`).
    pub extra_args: Vec<String>,
}

/// What the gateway writes to its `--ready-file` once it listens.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    /// The agent (TLS) listener.
    pub agent_addr: SocketAddr,
    /// The HTTP API listener.
    pub http_addr: SocketAddr,
    /// The dev CA the agents must trust.
    pub ca_file: PathBuf,
}

/// A relay created with `POST /api/v1/relays`.
#[derive(Debug, Clone, Deserialize)]
pub struct Relay {
    /// Its id, for `DELETE /api/v1/relays/{id}`.
    pub relay_id: Value,
    /// Where to connect: each TCP connection is one stream through the agent.
    pub listen: SocketAddr,
}

/// A running gateway process.
#[derive(Debug)]
pub struct Gateway {
    proc: Proc,
    opts: GatewayOptions,
    state_dir: PathBuf,
    ready_file: PathBuf,
    ready: Ready,
    http: ureq::Agent,
}

impl Gateway {
    /// Starts a gateway with its state in `<test dir>/gateway` and waits until it is
    /// ready.
    pub fn start(ctx: &TestContext, opts: GatewayOptions) -> anyhow::Result<Gateway> {
        let state_dir = ctx.subdir("gateway");
        let ready_file = ctx.path().join("gateway.ready.json");
        let (proc, ready) = spawn(ctx, &opts, &state_dir, &ready_file)?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Gateway {
            proc,
            opts,
            state_dir,
            ready_file,
            ready,
            http,
        })
    }

    /// Kills the gateway with SIGKILL (no graceful shutdown).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.proc.kill()
    }

    /// Starts the gateway again with the same state dir, options and ports (after
    /// [`Gateway::kill`], or it is killed first).
    pub fn restart(&mut self, ctx: &TestContext) -> anyhow::Result<()> {
        self.proc.kill()?;
        let mut opts = self.opts.clone();
        opts.agent_port = self.ready.agent_addr.port();
        opts.http_port = self.ready.http_addr.port();
        let (proc, ready) = spawn(ctx, &opts, &self.state_dir, &self.ready_file)?;
        anyhow::ensure!(
            ready.agent_addr == self.ready.agent_addr && ready.http_addr == self.ready.http_addr,
            "restarted gateway listens on {} / {}, not on the old {} / {}",
            ready.agent_addr,
            ready.http_addr,
            self.ready.agent_addr,
            self.ready.http_addr
        );
        self.proc = proc;
        self.ready = ready;
        Ok(())
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The process, mutably (signals, liveness).
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The agent listener address.
    pub fn agent_addr(&self) -> SocketAddr {
        self.ready.agent_addr
    }

    /// The HTTP API address.
    pub fn http_addr(&self) -> SocketAddr {
        self.ready.http_addr
    }

    /// The dev CA file the agents must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ready.ca_file
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ready.http_addr)
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut resp = self
            .http
            .get(&self.url(path))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().context("read body")?;
        Ok((status, body))
    }

    /// `GET /api/v1/agents`.
    pub fn agents(&self) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get("/api/v1/agents")?;
        anyhow::ensure!(status == 200, "GET /api/v1/agents: {status} {body}");
        serde_json::from_str(&body)
            .with_context(|| format!("agents list is not a JSON array: {body}"))
    }

    /// `GET /api/v1/agents/{id}`; `None` on 404.
    pub fn agent(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.get(&format!("/api/v1/agents/{id}"))?;
        match status {
            200 => Ok(Some(serde_json::from_str(&body).context("agent JSON")?)),
            404 => Ok(None),
            _ => anyhow::bail!("GET /api/v1/agents/{id}: {status} {body}"),
        }
    }

    /// The ids of the connected agents.
    pub fn agent_ids(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .agents()?
            .iter()
            .filter_map(|a| a.get("agent_id").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// Waits until agent `id` is listed in `/api/v1/agents`; returns its entry.
    pub fn wait_agent(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        wait_for(&format!("agent {id} in /api/v1/agents"), timeout, || {
            self.agents()
                .ok()?
                .into_iter()
                .find(|a| a.get("agent_id").and_then(Value::as_str) == Some(id))
        })
    }

    /// Waits until agent `id` is no longer listed.
    pub fn wait_agent_gone(&self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(
            &format!("agent {id} to leave /api/v1/agents"),
            timeout,
            || {
                let ids = self.agent_ids().ok()?;
                (!ids.iter().any(|a| a == id)).then_some(())
            },
        )
    }

    /// `POST /api/v1/relays`: status and JSON body (whatever the status).
    pub fn post_relay(&self, agent_id: &str, target: &str) -> anyhow::Result<(u16, Value)> {
        let mut resp = self
            .http
            .post(&self.url("/api/v1/relays"))
            .send_json(json!({ "agent_id": agent_id, "target": target }))
            .context("POST /api/v1/relays")?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().context("read body")?;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, value))
    }

    /// `POST path` with a JSON body: status and JSON body (whatever the status).
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let mut resp = self
            .http
            .post(&self.url(path))
            .send_json(body)
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().context("read body")?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Creates a relay from a full `POST /api/v1/relays` body (kind, auth, ...);
    /// fails unless the gateway answers 201.
    pub fn create_relay_with(&self, body: &Value) -> anyhow::Result<Relay> {
        let (status, resp) = self.post_json("/api/v1/relays", body)?;
        anyhow::ensure!(
            status == 201,
            "POST /api/v1/relays answered {status}: {resp}"
        );
        serde_json::from_value(resp.clone()).with_context(|| format!("relay JSON: {resp}"))
    }

    /// Creates a relay; fails unless the gateway answers 201.
    pub fn create_relay(&self, agent_id: &str, target: &str) -> anyhow::Result<Relay> {
        let (status, body) = self.post_relay(agent_id, target)?;
        anyhow::ensure!(
            status == 201,
            "POST /api/v1/relays answered {status}: {body}"
        );
        serde_json::from_value(body.clone()).with_context(|| format!("relay JSON: {body}"))
    }

    /// `DELETE /api/v1/relays/{id}`: the status.
    pub fn delete_relay(&self, relay: &Relay) -> anyhow::Result<u16> {
        let id = match &relay.relay_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let resp = self
            .http
            .delete(&self.url(&format!("/api/v1/relays/{id}")))
            .call()
            .context("DELETE relay")?;
        Ok(resp.status().as_u16())
    }

    /// Fails if the gateway's stderr shows a panic.
    pub fn assert_no_panic(&self) -> anyhow::Result<()> {
        let log = self.proc.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            anyhow::bail!("gateway panicked: {line}");
        }
        Ok(())
    }
}

fn spawn(
    ctx: &TestContext,
    opts: &GatewayOptions,
    state_dir: &Path,
    ready_file: &Path,
) -> anyhow::Result<(Proc, Ready)> {
    let _ = std::fs::remove_file(ready_file);
    let mut args: Vec<String> = vec![
        "--agent-listen".into(),
        format!("127.0.0.1:{}", opts.agent_port),
        "--http-listen".into(),
        format!("127.0.0.1:{}", opts.http_port),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--ready-file".into(),
        ready_file.display().to_string(),
        "--log".into(),
        opts.log.clone().unwrap_or_else(|| DEFAULT_LOG.into()),
    ];
    if let Some(ms) = opts.heartbeat_interval_ms {
        args.extend(["--heartbeat-interval-ms".into(), ms.to_string()]);
    }
    if let Some(ms) = opts.handshake_timeout_ms {
        args.extend(["--handshake-timeout-ms".into(), ms.to_string()]);
    }
    if let Some(n) = opts.max_handshakes {
        args.extend(["--max-handshakes".into(), n.to_string()]);
    }
    args.extend(opts.extra_args.iter().cloned());
    let mut proc = Proc::spawn(ctx, "gateway", &crate::bins::bin("outband-gateway")?, &args)?;
    let ready = wait_for("gateway ready file", Duration::from_secs(30), || {
        if !proc.is_running() {
            return Some(Err(anyhow::anyhow!(
                "gateway exited before it was ready:\n{}",
                crate::context::tail(&proc.stderr(), 30)
            )));
        }
        let text = std::fs::read_to_string(ready_file).ok()?;
        serde_json::from_str::<Ready>(&text).ok().map(Ok)
    })??;
    Ok((proc, ready))
}

impl Gateway {
    /// Waits until some agent is listed and returns its id (for tests that run one
    /// real agent and do not know its key-derived id in advance).
    pub fn wait_first_agent(&self, timeout: Duration) -> anyhow::Result<String> {
        wait_for("an agent in /api/v1/agents", timeout, || {
            self.agent_ids().ok()?.into_iter().next()
        })
    }
}

impl Gateway {
    /// `GET /metrics`: the value of the sample named exactly `series` (name plus
    /// labels as printed, e.g. `outband_gateway_handshakes_total{result="timeout"}`),
    /// or `None` if absent.
    pub fn metric(&self, series: &str) -> anyhow::Result<Option<f64>> {
        let (status, body) = self.get("/metrics")?;
        anyhow::ensure!(status == 200, "GET /metrics: {status} {body}");
        Ok(body.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        }))
    }

    /// Like [`Gateway::metric`], with an absent series read as 0.
    pub fn metric_or_zero(&self, series: &str) -> anyhow::Result<f64> {
        Ok(self.metric(series)?.unwrap_or(0.0))
    }
}
