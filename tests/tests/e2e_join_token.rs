//! Join tokens end to end, with real processes: `outband-manager` (SQLite),
//! `outband-gateway --manager-url` registered with it, and `outband-agent
//! --join-token-file`.
//!
//! - A one-time token adopts the first agent into the token's tenant with no admin
//!   step; a second agent with the same token stays pending, and the refusal shows in
//!   the manager's audit log, the gateway's log and the agent's log (its last error).
//! - The adopted agent, restarted, does not present the token again.
//! - A token past its lifetime is refused.
//! - With the manager down the token is not used (not spent, not refused); once the
//!   manager is back, the next connection adopts the agent with it.
//! - Hostile hellos: a token over 128 bytes closes the connection at the hello; a
//!   token of the wrong shape is refused by the gateway without a manager call.
//! - The token appears in no log.

use std::path::PathBuf;
use std::time::Duration;

use outband_e2e::fake_agent::{ClientCert, FakeAgent};
use outband_e2e::manager::Manager;
use outband_e2e::wait::{wait_for, wait_until};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, TestContext};
use outband_proto::handshake;
use outband_proto::pb::{self, frame};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const ADMIN: &str = "ops@example.com";
const ADMIN_PW: &str = "a long admin passphrase for the test";

fn joins(gw: &Gateway, result: &str) -> f64 {
    gw.metric_or_zero(&format!(
        "outband_gateway_agent_joins_total{{result=\"{result}\"}}"
    ))
    .unwrap_or(-1.0)
}

/// A manager with an admin, a tenant and a registered gateway.
struct Setup {
    mgr: Manager,
    admin: String,
    tenant_id: String,
    gw: Gateway,
}

fn setup(ctx: &TestContext) -> anyhow::Result<Setup> {
    let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
    let admin = mgr.login(ADMIN, ADMIN_PW)?;
    let (status, tenant) = mgr.call(
        "POST",
        "/api/v1/tenants",
        Some(&admin),
        Some(&json!({ "name": "acme" })),
    )?;
    anyhow::ensure!(status == 201, "tenant: {status} {tenant}");
    let tenant_id = tenant["id"].as_str().unwrap_or_default().to_owned();
    let cred_file = ctx.path().join("registration-credential");
    mgr.create_gateway(&admin, "gw-join", &cred_file)?;
    let gw = Gateway::start(
        ctx,
        GatewayOptions {
            extra_args: mgr.gateway_args(&cred_file, 300, 2000),
            ..Default::default()
        },
    )?;
    wait_until("the gateway registered and heartbeating", T, || {
        gw.get("/api/v1/manager")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|st| st["registered"] == true && st["last_heartbeat_at"].is_string())
    })?;
    Ok(Setup {
        mgr,
        admin,
        tenant_id,
        gw,
    })
}

/// Creates a join token; returns the secret.
fn join_token(s: &Setup, ttl_secs: i64, one_time: bool) -> anyhow::Result<String> {
    let (status, v) = s.mgr.call(
        "POST",
        "/api/v1/join-tokens",
        Some(&s.admin),
        Some(&json!({ "tenant_id": s.tenant_id, "ttl_secs": ttl_secs, "one_time": one_time })),
    )?;
    anyhow::ensure!(status == 201, "create join token: {status} {v}");
    let token = v["token"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(token.starts_with("objt_"), "token {v}");
    Ok(token)
}

fn token_file(ctx: &TestContext, name: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = ctx.path().join(name);
    std::fs::write(&path, format!("{token}\n"))?;
    Ok(path)
}

fn start_agent(
    ctx: &TestContext,
    s: &Setup,
    name: &str,
    token_file: &std::path::Path,
) -> anyhow::Result<Agent> {
    Agent::start(
        ctx,
        name,
        s.gw.agent_addr(),
        s.gw.ca_file(),
        &AgentOptions {
            allow: vec!["127.0.0.1:9".into()],
            backoff_base_ms: Some(100),
            backoff_cap_ms: Some(500),
            extra_args: vec!["--join-token-file".into(), token_file.display().to_string()],
            ..Default::default()
        },
    )
}

/// The id of a connected agent that is not in `known`.
fn wait_new_agent(gw: &Gateway, known: &[&str]) -> anyhow::Result<String> {
    wait_for("a new agent at the gateway", T, || {
        gw.agent_ids()
            .ok()?
            .into_iter()
            .find(|id| !known.contains(&id.as_str()))
    })
}

/// The agent as the manager lists it.
fn manager_agent(s: &Setup, id: &str) -> Option<Value> {
    let (status, v) = s
        .mgr
        .call("GET", "/api/v1/agents", Some(&s.admin), None)
        .ok()?;
    if status != 200 {
        return None;
    }
    v["agents"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
}

fn audit_join_entries(s: &Setup) -> anyhow::Result<Vec<Value>> {
    let (status, v) = s.mgr.call(
        "GET",
        "/api/v1/audit?action=agent_join",
        Some(&s.admin),
        None,
    )?;
    anyhow::ensure!(status == 200, "audit: {status} {v}");
    Ok(v["entries"].as_array().cloned().unwrap_or_default())
}

fn assert_not_logged(token: &str, logs: &[(&str, String)]) -> anyhow::Result<()> {
    let secret = token.trim_start_matches("objt_");
    for (name, text) in logs {
        anyhow::ensure!(
            !text.contains(secret),
            "the join token is in the {name} log"
        );
    }
    Ok(())
}

#[test]
fn one_time_token_adopts_one_agent_and_refuses_the_next() {
    TestContext::run("join_token_one_time", |ctx| {
        let s = setup(ctx)?;
        let token = join_token(&s, 600, true)?;
        let file = token_file(ctx, "join-token", &token)?;

        // The first agent is adopted into the token's tenant without any admin step.
        let mut a = start_agent(ctx, &s, "agent-a", &file)?;
        let a_id = wait_new_agent(&s.gw, &[])?;
        let adopted = wait_for("agent-a adopted in the manager", T, || {
            manager_agent(&s, &a_id).filter(|v| v["status"] == "adopted")
        })?;
        anyhow::ensure!(
            adopted["tenant_id"] == s.tenant_id.as_str(),
            "adopted into the wrong tenant: {adopted}"
        );
        a.proc().wait_stderr_line("join accepted", 0, T, |l| {
            l.contains("join token accepted") && l.contains(&s.tenant_id)
        })?;
        let state = std::fs::read_to_string(a.state_dir().join("join-token.state"))?;
        anyhow::ensure!(state.contains("outcome=accepted"), "state file: {state}");
        wait_until("the accepted join counted", T, || {
            joins(&s.gw, "accepted") == 1.0
        })?;

        // A second agent with the same one-time token stays pending.
        let mut b = start_agent(ctx, &s, "agent-b", &file)?;
        let b_id = wait_new_agent(&s.gw, &[&a_id])?;
        let line =
            s.gw.proc()
                .wait_stderr_line("refused join at the gateway", 0, T, |l| {
                    l.contains("join token refused") && l.contains(&b_id)
                })?;
        anyhow::ensure!(line.contains("used or expired"), "gateway line: {line}");
        b.proc()
            .wait_stderr_line("refusal as the agent's error", 0, T, |l| {
                l.contains("ERROR") && l.contains("join token refused by the manager")
            })?;
        let pending = wait_for("agent-b pending in the manager", T, || {
            manager_agent(&s, &b_id)
        })?;
        anyhow::ensure!(
            pending["status"] == "pending" && pending["tenant_id"].is_null(),
            "agent-b: {pending}"
        );
        let audit = audit_join_entries(&s)?;
        let outcome_for = |id: &str| {
            audit
                .iter()
                .filter(|e| e["target"] == id)
                .map(|e| e["outcome"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        anyhow::ensure!(
            outcome_for(&a_id) == ["success"] && outcome_for(&b_id) == ["failure"],
            "audit: {audit:?}"
        );
        anyhow::ensure!(joins(&s.gw, "refused") == 1.0, "refusals counted");

        // Restarted, agent-b still knows: it presents nothing and says why.
        b.restart(ctx)?;
        b.proc().wait_stderr_line("refusal remembered", 0, T, |l| {
            l.contains("ERROR") && l.contains("not presenting it again")
        })?;

        // Restarted, the adopted agent does not present the token again.
        a.restart(ctx)?;
        a.proc()
            .wait_stderr_line("reconnected", 0, T, |l| l.contains("connected to gateway"))?;
        s.gw.wait_agent(&a_id, T)?;
        let before = s.gw.proc().stderr_len();
        // A few heartbeats later nothing more happened at the manager or gateway.
        std::thread::sleep(Duration::from_secs(2));
        anyhow::ensure!(
            joins(&s.gw, "accepted") == 1.0
                && joins(&s.gw, "refused") == 1.0
                && joins(&s.gw, "not_used") == 0.0,
            "a join after the restarts"
        );
        anyhow::ensure!(
            audit_join_entries(&s)?.len() == 2,
            "more join attempts in the audit log"
        );
        anyhow::ensure!(
            !s.gw.proc().stderr_since(before).contains("join token"),
            "the gateway saw a join token again"
        );
        let a_log = a.proc().stderr();
        anyhow::ensure!(
            a_log.contains("join token already used")
                && !a_log.contains("presenting the join token"),
            "agent-a after the restart:\n{a_log}"
        );
        anyhow::ensure!(
            manager_agent(&s, &a_id).is_some_and(|v| v["status"] == "adopted"),
            "agent-a no longer adopted"
        );

        let logs = [
            ("gateway", s.gw.proc().stderr()),
            ("agent-a", a.proc().stderr()),
            ("agent-b", b.proc().stderr()),
            (
                "manager",
                s.mgr.proc().map(|p| p.stderr()).unwrap_or_default(),
            ),
        ];
        assert_not_logged(&token, &logs)?;
        s.gw.assert_no_panic()?;
        Ok(())
    });
}

#[test]
fn expired_token_is_refused() {
    TestContext::run("join_token_expired", |ctx| {
        let s = setup(ctx)?;
        let token = join_token(&s, 1, false)?;
        let file = token_file(ctx, "join-token", &token)?;
        // The manager compares whole seconds: two of them are surely past.
        std::thread::sleep(Duration::from_millis(2100));
        let a = start_agent(ctx, &s, "agent", &file)?;
        let id = wait_new_agent(&s.gw, &[])?;
        a.proc().wait_stderr_line("refusal", 0, T, |l| {
            l.contains("ERROR") && l.contains("join token refused by the manager")
        })?;
        wait_until("the refusal counted", T, || joins(&s.gw, "refused") == 1.0)?;
        let pending = wait_for("the agent pending in the manager", T, || {
            manager_agent(&s, &id)
        })?;
        anyhow::ensure!(pending["status"] == "pending", "{pending}");
        let state = std::fs::read_to_string(a.state_dir().join("join-token.state"))?;
        anyhow::ensure!(state.contains("outcome=refused"), "state file: {state}");
        assert_not_logged(&token, &[("gateway", s.gw.proc().stderr())])?;
        Ok(())
    });
}

#[test]
fn manager_down_leaves_the_token_unspent() {
    TestContext::run("join_token_manager_down", |ctx| {
        let mut s = setup(ctx)?;
        let token = join_token(&s, 600, true)?;
        let file = token_file(ctx, "join-token", &token)?;
        s.mgr.kill()?;

        let mut a = start_agent(ctx, &s, "agent", &file)?;
        let id = wait_new_agent(&s.gw, &[])?;
        s.gw.proc()
            .wait_stderr_line("not used at the gateway", 0, T, |l| {
                l.contains("join token not used") && l.contains(&id)
            })?;
        a.proc()
            .wait_stderr_line("not used at the agent", 0, T, |l| {
                l.contains("join token not used")
            })?;
        anyhow::ensure!(joins(&s.gw, "not_used") == 1.0, "not_used counted");
        anyhow::ensure!(
            !a.state_dir().join("join-token.state").exists(),
            "the agent recorded an outcome while the manager was down"
        );

        // The manager is back; the agent's next connection spends the token.
        s.mgr.restart(ctx)?;
        wait_until("heartbeats again", T, || {
            s.gw.get("/api/v1/manager")
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|st| st["last_error"].is_null())
        })?;
        a.restart(ctx)?;
        let adopted = wait_for("the agent adopted after the manager came back", T, || {
            manager_agent(&s, &id).filter(|v| v["status"] == "adopted")
        })?;
        anyhow::ensure!(adopted["tenant_id"] == s.tenant_id.as_str(), "{adopted}");
        wait_until("the accepted join counted", T, || {
            joins(&s.gw, "accepted") == 1.0
        })?;
        assert_not_logged(&token, &[("gateway", s.gw.proc().stderr())])?;
        s.gw.assert_no_panic()?;
        Ok(())
    });
}

#[test]
fn standalone_gateway_does_not_use_the_token() {
    TestContext::run("join_token_standalone", |ctx| {
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let file = token_file(ctx, "join-token", "objt_standalone-token-value")?;
        let a = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &AgentOptions {
                extra_args: vec!["--join-token-file".into(), file.display().to_string()],
                ..Default::default()
            },
        )?;
        let id = gw.wait_first_agent(T)?;
        gw.proc()
            .wait_stderr_line("not used at the gateway", 0, T, |l| {
                l.contains("join token not used")
                    && l.contains("no manager link")
                    && l.contains(&id)
            })?;
        a.proc()
            .wait_stderr_line("not used at the agent", 0, T, |l| {
                l.contains("join token not used") && l.contains("no manager link")
            })?;
        anyhow::ensure!(!a.state_dir().join("join-token.state").exists());
        anyhow::ensure!(gw.agent_ids()?.contains(&id), "the agent was dropped");
        Ok(())
    });
}

/// A hello from a fake agent with `token`; the first frame the gateway answers.
fn hello_with_token(s: &Setup, token: &str) -> anyhow::Result<(FakeAgent, pb::Frame)> {
    let mut fake = FakeAgent::connect(s.gw.agent_addr(), s.gw.ca_file(), ClientCert::Valid, T)?;
    let mut hello = handshake::hello("outband-e2e fake agent", &fake.pairing_code, 65536);
    if let Some(frame::Kind::Hello(h)) = hello.kind.as_mut() {
        h.join_token = token.to_owned();
    }
    fake.send_frame(&hello)?;
    let answer = fake
        .read_frame(T)?
        .ok_or_else(|| anyhow::anyhow!("gateway closed the connection after hello"))?;
    Ok((fake, answer))
}

#[test]
fn hostile_tokens_are_bounded_and_never_reach_the_manager() {
    TestContext::run("join_token_hostile", |ctx| {
        let s = setup(ctx)?;

        // Over 128 bytes: the hello is refused, the connection closed.
        let long = format!("objt_{}", "L0ngCanary".repeat(13));
        let (_, answer) = hello_with_token(&s, &long)?;
        match &answer.kind {
            Some(frame::Kind::GoAway(g)) => anyhow::ensure!(
                g.reason.contains("join_token longer than 128 bytes"),
                "reason: {}",
                g.reason
            ),
            other => anyhow::bail!("expected GoAway, got {other:?}"),
        }

        // The wrong shape: a JoinResult REFUSED at once, and the manager never asked.
        let (mut fake, answer) = hello_with_token(&s, "obgr_WrongPrefixCanary")?;
        anyhow::ensure!(
            matches!(answer.kind, Some(frame::Kind::HelloAck(_))),
            "expected HelloAck, got {answer:?}"
        );
        let result = wait_for("a JoinResult request", T, || {
            match fake.read_frame(Duration::from_millis(200)).ok()??.kind {
                Some(frame::Kind::Request(pb::Request {
                    body: Some(pb::request::Body::JoinResult(r)),
                    ..
                })) => Some(r),
                _ => None,
            }
        })?;
        anyhow::ensure!(
            result.outcome == pb::JoinOutcome::Refused as i32
                && result.message.contains("objt_")
                && !result.message.contains("Canary"),
            "{result:?}"
        );
        wait_until("the refusal counted", T, || joins(&s.gw, "refused") == 1.0)?;
        anyhow::ensure!(
            audit_join_entries(&s)?.is_empty(),
            "the manager saw a join attempt"
        );
        let logs = s.gw.proc().stderr();
        anyhow::ensure!(
            !logs.contains("Canary"),
            "a hostile token is in the gateway log"
        );
        s.gw.assert_no_panic()?;
        Ok(())
    });
}
