//! The gateway's outbound link to the manager, with real processes: `outband-manager`
//! (SQLite), `outband-gateway --manager-url` and `outband-agent`.
//!
//! Registration with a one-time credential, the heartbeat making a connected agent
//! pending in the manager, adoption by pairing code + id, a restart reusing the stored
//! gateway token, the manager going away (the gateway keeps relaying and counts
//! heartbeat errors) and coming back on the same port and data dir, and a refused
//! credential.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use outband_e2e::manager::Manager;
use outband_e2e::net::{EchoServer, echo_roundtrip};
use outband_e2e::wait::{wait_for, wait_until};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, TestContext};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const ADMIN: &str = "ops@example.com";
const ADMIN_PW: &str = "a long admin passphrase for the test";
const OK: &str = "outband_gateway_manager_heartbeats_total{result=\"ok\"}";
const ERR: &str = "outband_gateway_manager_heartbeats_total{result=\"error\"}";

fn managed_gateway(ctx: &TestContext, mgr: &Manager, credential: &str) -> anyhow::Result<Gateway> {
    managed_gateway_every(ctx, mgr, credential, 300)
}

fn managed_gateway_every(
    ctx: &TestContext,
    mgr: &Manager,
    credential: &str,
    heartbeat_ms: u64,
) -> anyhow::Result<Gateway> {
    let cred_file = ctx.path().join("registration-credential");
    std::fs::write(&cred_file, format!("{credential}\n"))?;
    Gateway::start(
        ctx,
        GatewayOptions {
            extra_args: vec![
                "--manager-url".into(),
                mgr.url(),
                "--registration-credential-file".into(),
                cred_file.display().to_string(),
                "--manager-heartbeat-interval-ms".into(),
                heartbeat_ms.to_string(),
                "--manager-timeout-ms".into(),
                "2000".into(),
            ],
            ..Default::default()
        },
    )
}

fn manager_status(gw: &Gateway) -> anyhow::Result<Value> {
    let (status, body) = gw.get("/api/v1/manager")?;
    anyhow::ensure!(status == 200, "GET /api/v1/manager: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Creates a gateway in the manager; returns (gateway id, registration credential).
fn create_gateway(mgr: &Manager, admin: &str, name: &str) -> anyhow::Result<(String, String)> {
    let (status, v) = mgr.call(
        "POST",
        "/api/v1/gateways",
        Some(admin),
        Some(&json!({ "name": name })),
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

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metric_or_zero(series).unwrap_or(-1.0)
}

#[test]
fn gateway_registers_reports_agents_and_outlives_the_manager() {
    TestContext::run("manager_gateway", |ctx| {
        let mut mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let admin = mgr.login(ADMIN, ADMIN_PW)?;
        let (gw_id, credential) = create_gateway(&mgr, &admin, "gw-e2e")?;
        anyhow::ensure!(credential.starts_with("obgr_"), "credential {credential:?}");

        let mut gw = managed_gateway(ctx, &mgr, &credential)?;
        // Registration, then heartbeats.
        let st = wait_for("the gateway registered and heartbeating", T, || {
            let st = manager_status(&gw).ok()?;
            (st["registered"] == true && st["last_heartbeat_at"].is_string()).then_some(st)
        })?;
        anyhow::ensure!(
            st["mode"] == "managed" && st["gateway_id"] == gw_id.as_str(),
            "{st}"
        );
        let token_file = ctx.path().join("gateway").join("manager-token.json");
        let mode = std::fs::metadata(&token_file)?.permissions().mode();
        anyhow::ensure!(mode & 0o777 == 0o600, "token file mode {mode:o}");
        let stored: Value = serde_json::from_slice(&std::fs::read(&token_file)?)?;
        let gateway_token = stored["gateway_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(gateway_token.starts_with("obg_"), "stored {stored}");
        anyhow::ensure!(
            !st.to_string().contains(&gateway_token),
            "the status shows the token: {st}"
        );
        let (status, list) = mgr.call("GET", "/api/v1/gateways", Some(&admin), None)?;
        let entry = list["gateways"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["id"] == gw_id.as_str()).cloned())
            .unwrap_or_default();
        anyhow::ensure!(
            status == 200 && entry["registered_at"].is_i64() && entry["last_seen_at"].is_i64(),
            "gateway list: {status} {list}"
        );

        // An agent connects; the heartbeat makes it pending in the manager.
        let echo = EchoServer::start()?;
        let _agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &AgentOptions {
                allow: vec![echo.addr().to_string()],
                ..Default::default()
            },
        )?;
        let agent_id = gw.wait_first_agent(T)?;
        let code = gw.wait_agent(&agent_id, T)?["pairing_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let port = echo.addr().port().to_string();
        let pending = wait_for(
            "the agent pending in the manager with its endpoint",
            T,
            || {
                let (status, v) = mgr
                    .call(
                        "POST",
                        "/api/v1/agents/lookup",
                        Some(&admin),
                        Some(&json!({ "pairing_code": code })),
                    )
                    .ok()?;
                let a = v["agents"]
                    .as_array()?
                    .iter()
                    .find(|a| a["id"] == agent_id.as_str())?;
                let has_ep = a["endpoints"].to_string().contains(&port);
                (status == 200 && has_ep).then(|| a.clone())
            },
        )?;
        anyhow::ensure!(
            pending["status"] == "pending" && pending["gateway_id"] == gw_id.as_str(),
            "{pending}"
        );

        // The admin adopts it into a tenant by pairing code and full id.
        let (status, tenant) = mgr.call(
            "POST",
            "/api/v1/tenants",
            Some(&admin),
            Some(&json!({ "name": "acme" })),
        )?;
        anyhow::ensure!(status == 201, "tenant: {status} {tenant}");
        let (status, adopted) = mgr.call(
            "POST",
            "/api/v1/agents/adopt",
            Some(&admin),
            Some(&json!({ "pairing_code": code, "agent_id": agent_id, "tenant_id": tenant["id"] })),
        )?;
        anyhow::ensure!(
            status == 200 && adopted["status"] == "adopted" && adopted["tenant_id"] == tenant["id"],
            "adopt: {status} {adopted}"
        );
        let (_, agents) = mgr.call("GET", "/api/v1/agents", Some(&admin), None)?;
        anyhow::ensure!(
            agents["agents"].to_string().contains(&agent_id),
            "adopted agent not listed: {agents}"
        );

        // A logout reaches the gateway through the revocation feed.
        let (status, login) = mgr.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({ "email": ADMIN, "password": ADMIN_PW })),
        )?;
        anyhow::ensure!(status == 200, "second login: {status} {login}");
        anyhow::ensure!(
            manager_status(&gw)?["revoked_sessions"] == 0,
            "revocations before any logout"
        );
        let (status, _) = mgr.call(
            "POST",
            "/api/v1/auth/logout",
            None,
            Some(&json!({ "refresh_token": login["refresh_token"] })),
        )?;
        anyhow::ensure!(status == 204, "logout: {status}");
        let st = wait_for("the logout in the gateway's revocation set", T, || {
            let st = manager_status(&gw).ok()?;
            (st["revoked_sessions"] == 1).then_some(st)
        })?;
        anyhow::ensure!(st["revocation_cursor"].is_i64(), "{st}");

        // Restart without the credential file: the stored token is reused.
        std::fs::remove_file(ctx.path().join("registration-credential"))?;
        let seen_before = entry["last_seen_at"].as_i64().unwrap_or(0);
        gw.restart(ctx)?;
        gw.proc()
            .wait_stderr_line("stored token in use", 0, T, |l| {
                l.contains("using the stored gateway token")
            })?;
        wait_until("a heartbeat after the restart", T, || {
            metric(&gw, OK) >= 1.0
        })?;
        anyhow::ensure!(
            !gw.proc().stderr().contains("registered with the manager"),
            "the restarted gateway registered again"
        );
        wait_until("the manager saw the restarted gateway", T, || {
            mgr.call("GET", "/api/v1/gateways", Some(&admin), None)
                .ok()
                .and_then(|(_, l)| {
                    l["gateways"]
                        .as_array()?
                        .iter()
                        .find(|g| g["id"] == gw_id.as_str())?["last_seen_at"]
                        .as_i64()
                })
                .is_some_and(|t| t >= seen_before)
        })?;
        gw.wait_agent(&agent_id, T)?;

        // The manager goes away: the gateway keeps relaying and counts errors.
        let ok_before = metric(&gw, OK);
        mgr.kill()?;
        wait_until("heartbeat errors counted", T, || metric(&gw, ERR) >= 2.0)?;
        let st = manager_status(&gw)?;
        anyhow::ensure!(
            st["registered"] == true
                && st["last_error"].is_string()
                && st["consecutive_failures"].as_u64() >= Some(2),
            "status while the manager is down: {st}"
        );
        anyhow::ensure!(
            gw.agent_ids()?.contains(&agent_id),
            "agent gone while the manager is down"
        );
        let relay = gw.create_relay(&agent_id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"relayed without a manager", T)?;
        gw.assert_no_panic()?;

        // It comes back on the same port and data dir: heartbeats succeed again.
        mgr.restart(ctx)?;
        wait_until("heartbeats again after the manager restart", T, || {
            metric(&gw, OK) > ok_before
                && manager_status(&gw).is_ok_and(|s| s["last_error"].is_null())
        })?;

        // Secrets stay out of the logs.
        let logs = gw.proc().stderr();
        anyhow::ensure!(
            !logs.contains(&credential) && !logs.contains(&gateway_token),
            "a secret is in the gateway log"
        );
        Ok(())
    });
}

#[test]
fn refused_credential_is_logged_and_agents_are_still_served() {
    TestContext::run("manager_gateway_bad_credential", |ctx| {
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let bogus = "obgr_not-a-credential-the-manager-issued";
        let mut gw = managed_gateway(ctx, &mgr, bogus)?;
        let line = gw
            .proc()
            .wait_stderr_line("credential refused", 0, T, |l| {
                l.contains("ERROR") && l.contains("refused the registration credential")
            })?;
        anyhow::ensure!(!line.contains(bogus), "the credential is logged: {line}");
        let st = manager_status(&gw)?;
        anyhow::ensure!(
            st["registered"] == false
                && st["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("registration refused")),
            "{st}"
        );
        anyhow::ensure!(
            !ctx.path()
                .join("gateway")
                .join("manager-token.json")
                .exists(),
            "a token file without a token"
        );

        let echo = EchoServer::start()?;
        let _agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &AgentOptions {
                allow: vec![echo.addr().to_string()],
                ..Default::default()
            },
        )?;
        let id = gw.wait_first_agent(T)?;
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"standalone after a refused credential", T)?;
        anyhow::ensure!(gw.proc_mut().is_running(), "gateway exited");
        anyhow::ensure!(!gw.proc().stderr().contains(bogus), "credential in the log");
        gw.assert_no_panic()?;
        Ok(())
    });
}

#[test]
fn replaced_token_is_logged_retried_and_replaced_by_a_new_credential() {
    TestContext::run("manager_gateway_token_replaced", |ctx| {
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let admin = mgr.login(ADMIN, ADMIN_PW)?;
        let (gw_id, credential) = create_gateway(&mgr, &admin, "gw-replaced")?;
        let mut gw = managed_gateway(ctx, &mgr, &credential)?;
        wait_until("the gateway heartbeating", T, || metric(&gw, OK) >= 1.0)?;

        // Someone else registers as this gateway with a new credential: the running
        // gateway's token is replaced and the manager answers it 401.
        let new_credential = |mgr: &Manager| -> anyhow::Result<String> {
            let (status, v) = mgr.call(
                "POST",
                &format!("/api/v1/gateways/{gw_id}/credential"),
                Some(&admin),
                None,
            )?;
            anyhow::ensure!(
                status == 200 || status == 201,
                "new credential: {status} {v}"
            );
            Ok(v["registration_credential"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        };
        let other = new_credential(&mgr)?;
        let (status, v) = mgr.call(
            "POST",
            "/api/v1/gateway/register",
            None,
            Some(&json!({ "registration_credential": other })),
        )?;
        anyhow::ensure!(status == 200, "register elsewhere: {status} {v}");
        let errors_before = metric(&gw, ERR);
        gw.proc().wait_stderr_line("token rejected", 0, T, |l| {
            l.contains("ERROR") && l.contains("rejected the gateway token")
        })?;
        wait_until("errors counted", T, || {
            metric(&gw, ERR) >= errors_before + 2.0
        })?;
        let (status, _) = gw.get("/health")?;
        anyhow::ensure!(status == 200 && gw.proc_mut().is_running(), "gateway down");

        // Restarted with a fresh credential: the stored token is refused, so it
        // registers with the credential and heartbeats again.
        let fresh = new_credential(&mgr)?;
        std::fs::write(
            ctx.path().join("registration-credential"),
            format!("{fresh}\n"),
        )?;
        gw.restart(ctx)?;
        gw.proc().wait_stderr_line("registered again", 0, T, |l| {
            l.contains("registered with the manager")
        })?;
        wait_until("heartbeats with the new token", T, || {
            metric(&gw, OK) >= 1.0 && manager_status(&gw).is_ok_and(|s| s["last_error"].is_null())
        })?;
        let stored: Value = serde_json::from_slice(&std::fs::read(
            ctx.path().join("gateway").join("manager-token.json"),
        )?)?;
        anyhow::ensure!(stored["gateway_id"] == gw_id.as_str(), "{stored}");
        Ok(())
    });
}

#[test]
fn a_new_agent_is_reported_before_the_next_interval() {
    TestContext::run("manager_gateway_prompt_report", |ctx| {
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let admin = mgr.login(ADMIN, ADMIN_PW)?;
        let (_, credential) = create_gateway(&mgr, &admin, "gw-slow")?;
        // One heartbeat a minute: only the registry's change signal can report the
        // agent within the wait below.
        let gw = managed_gateway_every(ctx, &mgr, &credential, 60_000)?;
        wait_until("the first heartbeat", T, || metric(&gw, OK) >= 1.0)?;
        let _agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &AgentOptions::default(),
        )?;
        let id = gw.wait_first_agent(T)?;
        let code = gw.wait_agent(&id, T)?["pairing_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let started = std::time::Instant::now();
        wait_until(
            "the agent pending in the manager",
            Duration::from_secs(15),
            || {
                mgr.call(
                    "POST",
                    "/api/v1/agents/lookup",
                    Some(&admin),
                    Some(&json!({ "pairing_code": code })),
                )
                .is_ok_and(|(_, v)| v["agents"].to_string().contains(&id))
            },
        )?;
        eprintln!("agent reported {:?} after it was listed", started.elapsed());
        Ok(())
    });
}
