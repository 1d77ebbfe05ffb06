//! The real binary: usage errors, identity printing, refusing a corrupt key.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outband-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version() {
    let o = agent(&["--help"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--ca-fingerprint"));
    let o = agent(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("outband-agent "));
}

#[test]
fn config_errors_exit_2_naming_the_value() {
    let o = agent(&[
        "--gateway",
        "gw:1",
        "--ca-file",
        "/x",
        "--allow",
        "ftp://h:1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("invalid --allow \"ftp://h:1\""), "{err}");
    let o = agent(&["--gateway", "gw:1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("never trusts a gateway blindly"));
}

#[test]
fn missing_ca_file_fails_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let o = agent(&[
        "--gateway",
        "127.0.0.1:1",
        "--ca-file",
        "/nonexistent/ca.pem",
        "--state-dir",
        state,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("CA file /nonexistent/ca.pem"), "{err}");
    assert!(
        err.contains("agent_id=ag-"),
        "identity is logged first: {err}"
    );
}

#[test]
fn identity_is_stable_and_corrupt_key_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let first = agent(&["--print-identity", "--state-dir", state]);
    assert!(first.status.success(), "{}", stderr(&first));
    let text = String::from_utf8(first.stdout.clone()).unwrap();
    assert!(text.starts_with("agent_id=ag-"), "{text}");
    assert!(text.contains("\npairing_code="), "{text}");
    let second = agent(&["--print-identity", "--state-dir", state]);
    assert_eq!(first.stdout, second.stdout);

    let key = dir.path().join("agent.key");
    std::fs::write(&key, "not a key").unwrap();
    let o = agent(&["--print-identity", "--state-dir", state]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to replace it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "not a key");
}

#[test]
fn logs_connect_failures_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_outband-agent"))
        .args(["--gateway", &gateway, "--ca-file", ca.to_str().unwrap()])
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .args(["--backoff-base-ms", "10", "--backoff-cap-ms", "20"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    let first = log.lines().next().unwrap_or_default();
    // "2026-12-03T13:25:39.123Z INFO  outband_agent: ..."
    assert_eq!(first.as_bytes().get(10), Some(&b'T'), "{first}");
    assert!(first.contains("Z INFO "), "{first}");
    let failures = log
        .matches(&format!(
            "WARN  outband_agent::connect: gateway connect failed: TCP connect to {gateway}"
        ))
        .count();
    assert!(failures >= 2, "expected repeated failures:\n{log}");
    assert!(log.contains("reconnecting in"), "{log}");
}
