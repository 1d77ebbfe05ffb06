//! The manager's own TLS listener with the real gateway binary: `outband-manager
//! --tls-cert/--tls-key` (a CA and leaf made here with rcgen), `outband-gateway
//! --manager-url https://... --manager-ca-file`: the gateway registers and heartbeats
//! over HTTPS; a gateway that trusts another CA refuses the manager and never spends
//! its registration credential.
//!
//! Admin calls go to a second, plain-HTTP loopback manager process on the same SQLite
//! data directory (the e2e manager client speaks plain HTTP only); both processes serve
//! the same database, so what the TLS manager records is visible through it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outband_e2e::manager::{Manager, manager_bin};
use outband_e2e::wait::{wait_for, wait_until};
use outband_e2e::{Gateway, GatewayOptions, Proc, TestContext};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const ADMIN: &str = "ops@example.com";
const ADMIN_PW: &str = "a long admin passphrase for the test";

/// A CA (`<name>-ca.pem`) and a leaf for 127.0.0.1 and localhost; returns
/// `(ca, cert chain, key)` paths.
fn pki(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = params.self_signed(&ca_key)?;
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
        .signed_by(&key, &issuer)?;
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca.pem())?;
    std::fs::write(&paths.1, format!("{}{}", leaf.pem(), ca.pem()))?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

/// Starts a second manager process with TLS on the plain manager's data directory.
fn start_tls_manager(
    ctx: &TestContext,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let ready = ctx.path().join("manager-tls.ready.json");
    let args: Vec<String> = vec![
        "--data-dir".into(),
        ctx.subdir("manager").display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--ready-file".into(),
        ready.display().to_string(),
        "--no-bootstrap-admin".into(),
        "--log".into(),
        "info,outband_manager=debug".into(),
    ];
    let mut proc = Proc::spawn(ctx, "manager-tls", &manager_bin()?, &args)?;
    let addr = wait_for("TLS manager ready file", Duration::from_secs(60), || {
        if !proc.is_running() {
            return Some(Err(anyhow::anyhow!(
                "TLS manager exited:\n{}",
                proc.stderr()
            )));
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()?;
        v["http_addr"].as_str()?.parse::<SocketAddr>().ok().map(Ok)
    })??;
    Ok((proc, addr))
}

fn gateway_via(
    ctx: &TestContext,
    url: &str,
    ca: &Path,
    credential: &str,
) -> anyhow::Result<Gateway> {
    let cred_file = ctx.path().join("registration-credential");
    std::fs::write(&cred_file, format!("{credential}\n"))?;
    Gateway::start(
        ctx,
        GatewayOptions {
            extra_args: vec![
                "--manager-url".into(),
                url.into(),
                "--manager-ca-file".into(),
                ca.display().to_string(),
                "--registration-credential-file".into(),
                cred_file.display().to_string(),
                "--manager-heartbeat-interval-ms".into(),
                "300".into(),
                "--manager-timeout-ms".into(),
                "2000".into(),
            ],
            ..Default::default()
        },
    )
}

fn manager_status(gw: &Gateway) -> Option<Value> {
    let (status, body) = gw.get("/api/v1/manager").ok()?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// A gateway created through the plain manager: (id, registration credential).
fn create_gateway(mgr: &Manager, admin: &str) -> anyhow::Result<(String, String)> {
    let (status, v) = mgr.call(
        "POST",
        "/api/v1/gateways",
        Some(admin),
        Some(&json!({"name": "gw-tls"})),
    )?;
    anyhow::ensure!(status == 201, "create gateway: {status} {v}");
    Ok((
        v["gateway"]["id"].as_str().unwrap_or_default().to_owned(),
        v["registration_credential"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

fn gateway_entry(mgr: &Manager, admin: &str, id: &str) -> anyhow::Result<Value> {
    let (status, list) = mgr.call("GET", "/api/v1/gateways", Some(admin), None)?;
    anyhow::ensure!(status == 200, "list gateways: {status} {list}");
    Ok(list["gateways"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["id"] == id).cloned())
        .unwrap_or_default())
}

#[test]
fn gateway_registers_and_heartbeats_over_https() {
    TestContext::run("manager_tls", |ctx| {
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let admin = mgr.login(ADMIN, ADMIN_PW)?;
        let (gw_id, credential) = create_gateway(&mgr, &admin)?;
        let (ca, cert, key) = pki(ctx.path(), "manager")?;
        let (_tls, addr) = start_tls_manager(ctx, &cert, &key)?;
        let url = format!("https://{addr}");
        let gw = gateway_via(ctx, &url, &ca, &credential)?;
        let st = wait_for("registered and heartbeating over https", T, || {
            let st = manager_status(&gw)?;
            (st["registered"] == true && st["last_heartbeat_at"].is_string()).then_some(st)
        })?;
        anyhow::ensure!(
            st["gateway_id"] == gw_id.as_str() && st["manager_url"] == url.as_str(),
            "{st}"
        );
        // The manager recorded it (seen through the other process on the same data).
        let entry = gateway_entry(&mgr, &admin, &gw_id)?;
        anyhow::ensure!(
            entry["registered_at"].is_i64() && entry["last_seen_at"].is_i64(),
            "{entry}"
        );
        let (status, audit) = mgr.call(
            "GET",
            "/api/v1/audit?action=gateway_register",
            Some(&admin),
            None,
        )?;
        anyhow::ensure!(status == 200, "{audit}");
        let rows = audit["entries"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            rows.len() == 1
                && rows[0]["outcome"] == "success"
                && rows[0]["target"] == gw_id.as_str(),
            "{audit}"
        );
        // Heartbeats keep coming over TLS.
        let first = gateway_entry(&mgr, &admin, &gw_id)?["last_seen_at"].as_i64();
        wait_until("a later heartbeat", T, || {
            gateway_entry(&mgr, &admin, &gw_id)
                .ok()
                .and_then(|e| e["last_seen_at"].as_i64())
                > first
        })?;
        gw.assert_no_panic()?;
        Ok(())
    });
}

#[test]
fn a_gateway_trusting_another_ca_refuses_the_manager() {
    TestContext::run("manager_tls_wrong_ca", |ctx| {
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let admin = mgr.login(ADMIN, ADMIN_PW)?;
        let (gw_id, credential) = create_gateway(&mgr, &admin)?;
        let (_ca, cert, key) = pki(ctx.path(), "manager")?;
        let (other_ca, _, _) = pki(ctx.path(), "other")?;
        let (tls, addr) = start_tls_manager(ctx, &cert, &key)?;
        let gw = gateway_via(ctx, &format!("https://{addr}"), &other_ca, &credential)?;
        let st = wait_for("a failed registration attempt", T, || {
            let st = manager_status(&gw)?;
            (st["consecutive_failures"].as_u64() >= Some(2)).then_some(st)
        })?;
        let err = st["last_error"].as_str().unwrap_or_default().to_lowercase();
        anyhow::ensure!(
            st["registered"] == false && err.contains("certificate"),
            "{st}"
        );
        // The credential never reached the manager: nothing registered or audited.
        let entry = gateway_entry(&mgr, &admin, &gw_id)?;
        anyhow::ensure!(entry["registered_at"].is_null(), "{entry}");
        let (_, audit) = mgr.call(
            "GET",
            "/api/v1/audit?action=gateway_register",
            Some(&admin),
            None,
        )?;
        anyhow::ensure!(
            audit["entries"].as_array().is_some_and(Vec::is_empty),
            "{audit}"
        );
        anyhow::ensure!(
            tls.stderr().contains("TLS handshake failed"),
            "TLS manager log:\n{}",
            tls.stderr()
        );
        gw.assert_no_panic()?;
        Ok(())
    });
}
