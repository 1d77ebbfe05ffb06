//! The per-test context: a temp dir that holds every state dir and process log, kept
//! with the tail of every log printed when the test fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One test's scratch space (kept after the test when it fails, or always with
/// `OUTBAND_E2E_KEEP=1`). Create it first in a test (or use [`TestContext::run`]) so
/// it is dropped last, after the processes that write into it.
#[derive(Debug)]
pub struct TestContext {
    name: String,
    dir: Option<tempfile::TempDir>,
    logs: Arc<Mutex<Vec<PathBuf>>>,
}

impl TestContext {
    /// A fresh temp dir named after the test.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("outband-e2e-{name}-"))
            .tempdir()
            .expect("create the test's temp dir");
        Self {
            name: name.to_owned(),
            dir: Some(dir),
            logs: Arc::default(),
        }
    }

    /// Runs a test body with a fresh context; on error or panic, prints every process
    /// log tail, keeps the temp dir, and fails the test with the error chain.
    pub fn run(name: &str, body: impl FnOnce(&TestContext) -> anyhow::Result<()>) {
        let ctx = TestContext::new(name);
        if let Err(e) = body(&ctx) {
            // The body's processes are gone by now; their logs are still on disk.
            ctx.dump_logs();
            let kept = ctx.keep();
            panic!(
                "{name} failed: {e:#}\n(test dir kept at {})",
                kept.display()
            );
        }
    }

    /// The test's temp dir.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("temp dir present until drop")
            .path()
    }

    /// Creates (if needed) and returns a subdirectory of the temp dir.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).expect("create subdir");
        p
    }

    /// A log file path not used yet in this test, e.g. `gateway.2.stderr.log`.
    pub(crate) fn new_log_pair(&self, name: &str) -> (PathBuf, PathBuf) {
        let logs = self.path().join("logs");
        std::fs::create_dir_all(&logs).expect("create logs dir");
        let mut n = 1;
        loop {
            let stem = if n == 1 {
                name.to_owned()
            } else {
                format!("{name}.{n}")
            };
            let out = logs.join(format!("{stem}.stdout.log"));
            let err = logs.join(format!("{stem}.stderr.log"));
            if !out.exists() && !err.exists() {
                let mut reg = self.logs.lock().unwrap_or_else(|e| e.into_inner());
                reg.push(out.clone());
                reg.push(err.clone());
                return (out, err);
            }
            n += 1;
        }
    }

    /// Prints the last lines of every process log of this test to stderr.
    pub fn dump_logs(&self) {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            eprintln!("----- {} (last 80 lines) -----", path.display());
            eprintln!("{}", tail(&text, 80));
        }
    }

    fn keep(mut self) -> PathBuf {
        match self.dir.take() {
            Some(d) => d.keep(),
            None => PathBuf::new(),
        }
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let keep = std::env::var_os("OUTBAND_E2E_KEEP").is_some();
        if std::thread::panicking() || keep {
            if !keep {
                self.dump_logs();
            }
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!("test {}: test dir kept at {}", self.name, kept.display());
            }
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
