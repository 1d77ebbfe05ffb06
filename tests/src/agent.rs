//! Starts `outband-agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::context::TestContext;
use crate::process::Proc;

/// Command-line options for the agent.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `--allow` entries (BMC endpoints the agent may dial).
    pub allow: Vec<String>,
    /// `--backoff-base-ms`.
    pub backoff_base_ms: Option<u64>,
    /// `--backoff-cap-ms`.
    pub backoff_cap_ms: Option<u64>,
    /// `--log` (default `debug`).
    pub log: Option<String>,
    /// Further flags, passed as given (e.g. `--discover 127.0.0.0/29`).
    pub extra_args: Vec<String>,
}

/// A running agent process.
#[derive(Debug)]
pub struct Agent {
    proc: Proc,
    args: Vec<String>,
    state_dir: PathBuf,
}

impl Agent {
    /// Starts an agent with its state in `<test dir>/<name>` that dials `gateway`.
    pub fn start(
        ctx: &TestContext,
        name: &str,
        gateway: SocketAddr,
        ca_file: &Path,
        opts: &AgentOptions,
    ) -> anyhow::Result<Agent> {
        let state_dir = ctx.subdir(name);
        let mut args: Vec<String> = vec![
            "--gateway".into(),
            gateway.to_string(),
            "--ca-file".into(),
            ca_file.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--log".into(),
            opts.log.clone().unwrap_or_else(|| "debug".into()),
        ];
        for a in &opts.allow {
            args.extend(["--allow".into(), a.clone()]);
        }
        if let Some(ms) = opts.backoff_base_ms {
            args.extend(["--backoff-base-ms".into(), ms.to_string()]);
        }
        if let Some(ms) = opts.backoff_cap_ms {
            args.extend(["--backoff-cap-ms".into(), ms.to_string()]);
        }
        args.extend(opts.extra_args.iter().cloned());
        let proc = Proc::spawn(ctx, name, &crate::bins::bin("outband-agent")?, &args)?;
        Ok(Agent {
            proc,
            args,
            state_dir,
        })
    }

    /// Kills the agent (SIGKILL) and starts it again with the same state dir (so the
    /// same key and agent id).
    pub fn restart(&mut self, ctx: &TestContext) -> anyhow::Result<()> {
        self.proc.kill()?;
        let name = self.proc.name().to_owned();
        self.proc = Proc::spawn(ctx, &name, &crate::bins::bin("outband-agent")?, &self.args)?;
        Ok(())
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// The process, mutably.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The agent's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}
