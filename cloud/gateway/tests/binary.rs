//! The real binary: flags, ready file, dev CA reuse across restarts, SIGTERM.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_outband-gateway");

/// The running binary; killed if a test panics before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(dir: &Path) -> (Running, serde_json::Value) {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let child = Running(Some(
        Command::new(BIN)
            .args([
                "--agent-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--log", "info"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(&ready) {
            return (child, serde_json::from_slice(&bytes).unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "gateway binary did not get ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut running: Running) -> String {
    let mut child = running.0.take().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gateway did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}; stderr:\n{stderr}");
    stderr
}

#[test]
fn binary_serves_writes_ready_file_and_keeps_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ready) = start(dir.path());
    let ca_file = ready["ca_file"].as_str().unwrap().to_owned();
    assert!(Path::new(&ca_file).is_absolute() && Path::new(&ca_file).exists());
    let fingerprint = ready["ca_fingerprint"].as_str().unwrap().to_owned();

    let http = ready["http_addr"].as_str().unwrap();
    let mut tcp = std::net::TcpStream::connect(http).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let stderr = stop(child);
    assert!(stderr.contains(&ca_file), "{stderr}");
    assert!(stderr.contains(&fingerprint), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a redirected log: {stderr}"
    );
    assert!(stderr.contains(&format!("ca_file={ca_file}")), "{stderr}");

    // Restart: same CA.
    let (child, again) = start(dir.path());
    assert_eq!(again["ca_fingerprint"].as_str().unwrap(), fingerprint);
    stop(child);
}

#[test]
fn bad_config_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, "windw = 5\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("parsing config file"), "{stderr}");
    assert!(stderr.contains("windw"), "{stderr}");
}

#[test]
fn a_plain_http_manager_url_to_another_host_is_refused_at_startup() {
    let out = Command::new(BIN)
        .args(["--manager-url", "http://manager.example:8090"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manager_url"), "{stderr}");
    assert!(stderr.contains("use https"), "{stderr}");
}
