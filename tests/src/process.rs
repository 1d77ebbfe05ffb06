//! A child process under test: output to files in the test dir, its own process group,
//! killed with SIGKILL on drop, and SIGSTOP/SIGCONT to simulate a frozen peer.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::context::TestContext;
use crate::wait::wait_for;

/// A running (or exited) child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    reaped: bool,
}

impl Proc {
    /// Starts `program args` with stdout and stderr in `<test dir>/logs/<name>.*.log`,
    /// in a new process group, and (where `setpriv` exists) with SIGKILL as its
    /// parent-death signal so that an aborted test run leaves nothing behind.
    pub fn spawn<I, S>(
        ctx: &TestContext,
        name: &str,
        program: &Path,
        args: I,
    ) -> anyhow::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (stdout, stderr) = ctx.new_log_pair(name);
        let out = File::create(&stdout).context("create stdout log")?;
        let err = File::create(&stderr).context("create stderr log")?;
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = if setpriv.exists() {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(ctx.path())
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {name} ({})", program.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            reaped: false,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig` to the process group.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        killpg(self.pid(), sig).with_context(|| format!("send {sig} to {}", self.name))
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but nothing is read or sent.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn cont(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the process group with SIGKILL and reaps the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.reaped {
            return Ok(());
        }
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = kill(self.pid(), Signal::SIGKILL);
        self.child
            .wait()
            .with_context(|| format!("reap {}", self.name))?;
        self.reaped = true;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            _ => {
                // Reaped now: never signal this pid again, it may be reused.
                self.reaped = true;
                false
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code (None for
    /// a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let status = wait_for(&format!("{} to exit", self.name), timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        self.reaped = true;
        Ok(status.code())
    }

    /// Everything the process wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Everything the process wrote to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// The current length of the stderr log, to look only at what comes later.
    pub fn stderr_len(&self) -> usize {
        std::fs::metadata(&self.stderr).map_or(0, |m| m.len() as usize)
    }

    /// What the process wrote to stderr after byte `offset`.
    pub fn stderr_since(&self, offset: usize) -> String {
        let text = std::fs::read(&self.stderr).unwrap_or_default();
        String::from_utf8_lossy(text.get(offset..).unwrap_or_default()).into_owned()
    }

    /// Waits until a stderr line written after `offset` satisfies `pred`; returns it.
    pub fn wait_stderr_line(
        &self,
        what: &str,
        offset: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        wait_for(&format!("{} log line: {what}", self.name), timeout, || {
            self.stderr_since(offset)
                .lines()
                .find(|l| pred(l))
                .map(str::to_owned)
        })
        .with_context(|| {
            format!(
                "{} stderr since offset {offset}:\n{}",
                self.name,
                crate::context::tail(&self.stderr_since(offset), 40)
            )
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The process was started in a group of its own: kill what it spawned too. A
        // frozen process dies of SIGKILL as well.
        let _ = self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
