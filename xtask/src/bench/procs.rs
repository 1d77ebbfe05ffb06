//! Starting the gateway and agent processes for a benchmark run.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        // `OUTBAND_BENCH_WRAP_<NAME>=heaptrack` (or `perf record -g --`, ...) runs the
        // process under a profiler.
        let wrap = std::env::var(format!("OUTBAND_BENCH_WRAP_{}", name.to_uppercase())).ok();
        let mut words = wrap.as_deref().unwrap_or_default().split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // A process group of its own, so that dropping the `Proc` also ends what a
        // wrapper started (a tracer's tracee survives the tracer's SIGKILL).
        let child = cmd
            .process_group(0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Proc { child, log })
    }

    /// The last lines of the process's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// CPU time used so far by all the process's threads, in nanoseconds.
    pub fn cpu_ns(&self) -> Result<u64> {
        cpu_ns(self.pid())
    }
}

/// CPU time of all a process's live threads in nanoseconds: the first field of each
/// `/proc/PID/task/TID/schedstat` (time on CPU, at scheduler precision rather than
/// the 10 ms ticks of `/proc/PID/stat`).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that just exited has no schedstat any more.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("unreadable {}", path.display()))?;
    }
    Ok(total)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The gateway's ready file contents.
pub struct Ready {
    pub agent_addr: String,
    pub http_addr: String,
    pub ca_file: String,
}

/// Starts a gateway on loopback and waits for its ready file.
pub fn gateway(bin: &Path, dir: &Path, extra: &[&str]) -> Result<(Proc, Ready)> {
    let ready = dir.join("gateway.ready");
    let mut args: Vec<String> = [
        "--agent-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--log",
        "warn",
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.join("gateway-state").display().to_string());
    args.push("--ready-file".into());
    args.push(ready.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(window_args());
    let proc = Proc::spawn("gateway", bin, &args, dir)?;
    let v: serde_json::Value = wait_for(Duration::from_secs(20), "gateway ready file", || {
        let text = std::fs::read_to_string(&ready).ok()?;
        serde_json::from_str(&text).ok()
    })?;
    let s = |k: &str| v[k].as_str().map(str::to_owned).context("ready file field");
    let ready = Ready {
        agent_addr: s("agent_addr")?,
        http_addr: s("http_addr")?,
        ca_file: s("ca_file")?,
    };
    Ok((proc, ready))
}

/// Starts an agent that may reach `allow`.
pub fn agent(bin: &Path, dir: &Path, ready: &Ready, allow: &[String]) -> Result<Proc> {
    let mut args = vec![
        "--gateway".to_string(),
        ready.agent_addr.clone(),
        "--ca-file".into(),
        ready.ca_file.clone(),
        "--state-dir".into(),
        dir.join("agent-state").display().to_string(),
        "--log".into(),
        "warn".into(),
    ];
    for a in allow {
        args.push("--allow".into());
        args.push(a.clone());
    }
    args.extend(window_args());
    Proc::spawn("agent", bin, &args, dir)
}

/// Lists connected agent ids.
pub fn agents(http: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = ureq::get(&format!("http://{http}/api/v1/agents"))
        .call()?
        .body_mut()
        .read_json()?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["agent_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The tunnel's idle round trip the gateway reports for `agent_id`, once it has one.
pub fn agent_rtt_ms(http: &str, agent_id: &str) -> Option<f64> {
    let v: serde_json::Value = ureq::get(&format!("http://{http}/api/v1/agents/{agent_id}"))
        .call()
        .ok()?
        .body_mut()
        .read_json()
        .ok()?;
    v["rtt_ms"].as_f64()
}

/// Creates a relay port on the gateway for `agent_id` → `target`.
pub fn relay(http: &str, agent_id: &str, target: &str) -> Result<String> {
    let v: serde_json::Value = ureq::post(&format!("http://{http}/api/v1/relays"))
        .send_json(serde_json::json!({"agent_id": agent_id, "target": target}))?
        .body_mut()
        .read_json()?;
    v["listen"]
        .as_str()
        .map(str::to_owned)
        .context("relay listen address")
}

/// `--window N` for both ends when OUTBAND_BENCH_WINDOW is set (for tuning runs).
fn window_args() -> Vec<String> {
    match std::env::var("OUTBAND_BENCH_WINDOW") {
        Ok(w) => vec!["--window".into(), w],
        Err(_) => Vec::new(),
    }
}
