//! sushy-tools' Redfish emulator (`sushy-emulator`, fake driver) as a real Redfish BMC:
//! HTTPS with a certificate made here (its SHA-256 pin is known), Basic auth from a
//! bcrypt htpasswd, one system `node1` that starts powered off.
//!
//! Quirks, as they are: no SessionService (Basic auth only); `Systems/node1` answers
//! 307 to the UUID path; the fake driver applies a power change 1–11 s after the
//! request, at random ([`SushyOptions::instant_power`] patches that delay out from the
//! config file, which sushy executes as Python).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

const EMULATOR: &str = "/opt/outband-venv/bin/sushy-emulator";
const PYTHON: &str = "/opt/outband-venv/bin/python";

/// The system sushy serves.
pub const SYSTEM_UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
/// Its name (an alias that sushy redirects to the UUID path).
pub const SYSTEM_NAME: &str = "node1";

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct SushyOptions {
    /// The user.
    pub username: String,
    /// The user's password (written only as a bcrypt hash).
    pub password: String,
    /// Apply power changes on the next read instead of 1–11 s later.
    pub instant_power: bool,
}

impl Default for SushyOptions {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: "password".into(),
            instant_power: true,
        }
    }
}

/// A running sushy-emulator.
#[derive(Debug)]
pub struct Sushy {
    proc: Proc,
    port: u16,
    cert_der: Vec<u8>,
}

impl Sushy {
    /// Generates a certificate and htpasswd in a subdir of the test dir, starts the
    /// emulator on a port it picks itself (port 0, read back from its log), and waits
    /// until the service root answers.
    pub fn start(ctx: &TestContext, opts: &SushyOptions) -> anyhow::Result<Sushy> {
        let dir = ctx.subdir("sushy");
        let key = rcgen::KeyPair::generate().context("generate key")?;
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sushy test BMC");
        let cert = params.self_signed(&key).context("self-sign")?;
        std::fs::write(dir.join("bmc.crt"), cert.pem())?;
        std::fs::write(dir.join("bmc.key"), key.serialize_pem())?;
        let hash = bcrypt_hash(&opts.password)?;
        std::fs::write(
            dir.join("htpasswd"),
            format!("{}:{}\n", opts.username, hash.trim()),
        )?;
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = 0\n\
             SUSHY_EMULATOR_SSL_CERT = {cert:?}\n\
             SUSHY_EMULATOR_SSL_KEY = {key:?}\n\
             SUSHY_EMULATOR_AUTH_FILE = {auth:?}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = {state:?}\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{SYSTEM_UUID}', 'name': '{SYSTEM_NAME}',\n\
               'power_state': 'Off', 'external_notifier': False,\n\
               'nics': [{{'mac': '00:5c:52:31:3a:9c', 'ip': '127.0.0.2'}}]}}]\n",
            cert = path_str(&dir.join("bmc.crt"))?,
            key = path_str(&dir.join("bmc.key"))?,
            auth = path_str(&dir.join("htpasswd"))?,
            state = path_str(&state)?,
        );
        if opts.instant_power {
            // The fake driver draws the delay with random.randint(1, 11) at call time.
            conf.push_str("import random as _r\n_r.randint = lambda a, b: 0\n");
        }
        let conf_path = dir.join("sushy.conf");
        std::fs::write(&conf_path, conf)?;
        let proc = Proc::spawn(
            ctx,
            "sushy",
            Path::new(EMULATOR),
            ["--config".as_ref(), conf_path.as_os_str()],
        )?;
        let mut proc = proc;
        let port = wait_for("sushy to print its port", Duration::from_secs(20), || {
            if !proc.is_running() {
                return Some(None);
            }
            let log = proc.stderr() + &proc.stdout();
            log.lines()
                .find_map(|l| l.split("Running on https://127.0.0.1:").nth(1))
                .and_then(|p| p.trim().parse::<u16>().ok())
                .map(Some)
        })?
        .with_context(|| format!("sushy exited: {}", proc.stderr()))?;
        let s = Sushy {
            proc,
            port,
            cert_der: cert.der().to_vec(),
        };
        wait_for("sushy TCP port", Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(500),
            )
            .ok()
        })?;
        Ok(s)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The DER certificate it serves (hash it for the pin).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The emulator's request log (werkzeug writes one line per request to stderr).
    pub fn request_log(&self) -> Vec<String> {
        strip_ansi(&self.proc.stderr())
            .lines()
            .filter(|l| {
                l.contains("\"GET ")
                    || l.contains("\"POST ")
                    || l.contains("\"PATCH ")
                    || l.contains("\"DELETE ")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the request log has a line satisfying `pred` (werkzeug writes a
    /// request's line after answering it, and not always in order), returns it.
    pub fn wait_request(&self, what: &str, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        wait_for(
            &format!("sushy request log: {what}"),
            Duration::from_secs(10),
            || self.request_log().into_iter().find(|l| pred(l)),
        )
    }

    /// Sends an unauthenticated service-root GET and waits until its line is logged, so
    /// that the lines of every request answered before it are in the log too (modulo
    /// reordering within werkzeug's threads, which a later request cannot overtake by
    /// much). Returns the log at that point.
    pub fn settle_log(&self) -> anyhow::Result<Vec<String>> {
        let count = |log: &[String]| {
            log.iter()
                .filter(|l| l.contains("\"GET /redfish/v1/ HTTP"))
                .count()
        };
        let before = count(&self.request_log());
        let timeouts = outband_redfish::Timeouts::default();
        outband_redfish::probe(&self.url(), timeouts).context("marker request")?;
        wait_for(
            "the marker request's log line",
            Duration::from_secs(10),
            || {
                let log = self.request_log();
                (count(&log) > before).then_some(log)
            },
        )
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// werkzeug colours status classes when it thinks it may: drop ESC [ … letter.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn path_str(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .context("temp path is not UTF-8")
}

/// A bcrypt hash of `password` made by the venv's `bcrypt` module (a sushy-tools
/// dependency); the password goes through stdin, not the command line.
fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    let mut child = Command::new(PYTHON)
        .args([
            "-c",
            "import sys, bcrypt; print(bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt(rounds=4)).decode())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {PYTHON}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "bcrypt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
