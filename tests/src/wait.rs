//! Bounded polling: every wait in the harness has a deadline and a description, so a
//! hung test fails with a message instead of running into the runner's timeout.

use std::time::{Duration, Instant};

/// How long to sleep between polls.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns true, or fails after `timeout` naming `what`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    wait_for(what, timeout, || f().then_some(()))
}
