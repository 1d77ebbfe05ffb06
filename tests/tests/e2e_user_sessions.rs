//! User sessions through the gateway's user API, with real processes: `outband-manager`
//! (SQLite), `outband-gateway --manager-url --user-listen`, `outband-agent`, and
//! OpenIPMI's `ipmi_sim` as the BMC, cross-checked with `ipmitool`.
//!
//! Users log in at the manager and present the access JWT to the gateway, which
//! verifies it against the manager's JWKS, asks the manager's session authorization,
//! and has the agent talk IPMI to the BMC: an operator powers on, a viewer reads but
//! may not control, another tenant's user gets the same 404 as an unknown server,
//! forged and garbage tokens get 401, a logout reaches the gateway through the
//! revocation feed, a key rotation at the manager is picked up on the first token
//! with the new `kid`, and the gateway's report of the power action lands in the
//! manager's audit log. A second test checks an expired token with a manager that
//! issues short-lived ones.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outband_e2e::ipmi_sim::{IpmiSim, ipmitool};
use outband_e2e::manager::{Manager, manager_bin};
use outband_e2e::process::Proc;
use outband_e2e::wait::{wait_for, wait_until};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, TestContext};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const ADMIN: &str = "ops@example.com";
const ADMIN_PW: &str = "a long admin passphrase for the test";
const USER_PW: &str = "a user passphrase that is long enough";
/// Revocation poll interval of the gateway under test.
const POLL_MS: u64 = 300;

/// The user API's address from the gateway's ready file.
fn user_addr(ctx: &TestContext) -> anyhow::Result<String> {
    let ready: Value =
        serde_json::from_slice(&std::fs::read(ctx.path().join("gateway.ready.json"))?)?;
    ready["user_addr"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no user_addr in the ready file: {ready}"))
}

/// A client of the gateway's user API.
struct UserApi {
    base: String,
    http: ureq::Agent,
}

/// A response: status, `WWW-Authenticate`, body as text and as JSON.
#[derive(Debug)]
struct Resp {
    status: u16,
    challenge: Option<String>,
    text: String,
    json: Value,
}

impl UserApi {
    fn new(addr: &str) -> UserApi {
        UserApi {
            base: format!("http://{addr}"),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Resp> {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => {
                let mut r = self.http.get(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            "POST" => {
                let mut r = self.http.post(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.cloned().unwrap_or(json!({})))
            }
            _ => anyhow::bail!("method {method}"),
        };
        let mut resp = resp.with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.body_mut().read_to_string().context("read body")?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            challenge,
            text,
            json,
        })
    }

    fn power(&self, token: &str, server: &str) -> anyhow::Result<Resp> {
        self.send(
            "GET",
            &format!("/api/v1/servers/{server}/power"),
            Some(&format!("Bearer {token}")),
            None,
        )
    }

    fn power_action(&self, token: &str, server: &str, action: &str) -> anyhow::Result<Resp> {
        self.send(
            "POST",
            &format!("/api/v1/servers/{server}/power"),
            Some(&format!("Bearer {token}")),
            Some(&json!({ "action": action })),
        )
    }
}

/// Logs in: `(access_token, refresh_token)`.
fn login(mgr: &Manager, email: &str, password: &str) -> anyhow::Result<(String, String)> {
    let (status, v) = mgr.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "email": email, "password": password })),
    )?;
    anyhow::ensure!(status == 200, "login {email}: {status} {v}");
    Ok((
        v["access_token"]
            .as_str()
            .context("access_token")?
            .to_owned(),
        v["refresh_token"]
            .as_str()
            .context("refresh_token")?
            .to_owned(),
    ))
}

/// Creates a user in `tenant` and replaces the one-time password with [`USER_PW`];
/// returns the user id.
fn create_user(
    mgr: &Manager,
    admin: &str,
    tenant: &str,
    email: &str,
    role: &str,
) -> anyhow::Result<String> {
    let (status, v) = mgr.call(
        "POST",
        &format!("/api/v1/tenants/{tenant}/users"),
        Some(admin),
        Some(&json!({ "email": email, "role": role })),
    )?;
    anyhow::ensure!(status == 201, "create user {email}: {status} {v}");
    let otp = v["one_time_password"]
        .as_str()
        .context("one_time_password")?
        .to_owned();
    let id = v["user"]["id"].as_str().context("user id")?.to_owned();
    let (token, _) = login(mgr, email, &otp)?;
    let (status, v) = mgr.call(
        "POST",
        "/api/v1/auth/password",
        Some(&token),
        Some(&json!({ "current_password": otp, "new_password": USER_PW })),
    )?;
    anyhow::ensure!(status == 204, "password change {email}: {status} {v}");
    Ok(id)
}

fn create_tenant(mgr: &Manager, admin: &str, name: &str) -> anyhow::Result<String> {
    let (status, v) = mgr.call(
        "POST",
        "/api/v1/tenants",
        Some(admin),
        Some(&json!({ "name": name })),
    )?;
    anyhow::ensure!(status == 201, "tenant {name}: {status} {v}");
    Ok(v["id"].as_str().context("tenant id")?.to_owned())
}

/// base64url without padding (for hand-made tokens).
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn ipmi_power(port: u16) -> anyhow::Result<String> {
    Ok(ipmitool(port, &["chassis", "power", "status"])?
        .trim()
        .to_owned())
}

#[test]
fn users_act_on_servers_through_the_gateway_with_manager_tokens() {
    TestContext::run("user_sessions", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let ep = format!("ipmi://127.0.0.1:{}", sim.port());
        let mgr = Manager::start_with_admin(ctx, "manager", ADMIN, ADMIN_PW)?;
        let (admin, _) = login(&mgr, ADMIN, ADMIN_PW)?;
        let (status, v) = mgr.call(
            "POST",
            "/api/v1/gateways",
            Some(&admin),
            Some(&json!({ "name": "gw-users" })),
        )?;
        anyhow::ensure!(status == 201, "create gateway: {status} {v}");
        let gw_id = v["gateway"]["id"]
            .as_str()
            .context("gateway id")?
            .to_owned();
        let cred_file = ctx.path().join("registration-credential");
        std::fs::write(
            &cred_file,
            format!("{}\n", v["registration_credential"].as_str().unwrap_or("")),
        )?;
        let gw = Gateway::start(
            ctx,
            GatewayOptions {
                extra_args: vec![
                    "--manager-url".into(),
                    mgr.url(),
                    "--registration-credential-file".into(),
                    cred_file.display().to_string(),
                    "--manager-heartbeat-interval-ms".into(),
                    POLL_MS.to_string(),
                    "--manager-timeout-ms".into(),
                    "5000".into(),
                    "--user-listen".into(),
                    "127.0.0.1:0".into(),
                    "--jwks-min-refetch-interval-ms".into(),
                    "500".into(),
                ],
                ..Default::default()
            },
        )?;
        let api = UserApi::new(&user_addr(ctx)?);
        let metric = |series: &str| gw.metric_or_zero(series).unwrap_or(-1.0);
        wait_until("the gateway holds the manager's keys", T, || {
            metric("outband_gateway_jwks_keys") >= 1.0
        })?;

        // The agent, adopted into tenant acme; a server of acme behind it.
        let _agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &AgentOptions {
                allow: vec![ep.clone()],
                ..Default::default()
            },
        )?;
        let agent_id = gw.wait_first_agent(T)?;
        let code = gw.wait_agent(&agent_id, T)?["pairing_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let acme = create_tenant(&mgr, &admin, "acme")?;
        let other = create_tenant(&mgr, &admin, "other")?;
        let adopted = wait_for("the agent adopted into acme", T, || {
            let (status, v) = mgr
                .call(
                    "POST",
                    "/api/v1/agents/adopt",
                    Some(&admin),
                    Some(&json!({ "pairing_code": code, "agent_id": agent_id, "tenant_id": acme })),
                )
                .ok()?;
            (status == 200).then_some(v)
        })?;
        anyhow::ensure!(adopted["status"] == "adopted", "{adopted}");
        let (status, server) = mgr.call(
            "POST",
            "/api/v1/servers",
            Some(&admin),
            Some(&json!({
                "name": "web-1",
                "tenant_id": acme,
                "gateway_id": gw_id,
                "agent_id": agent_id,
                "endpoints": { "power": ep },
                "credentials": { "username": "admin", "password": "password" },
            })),
        )?;
        anyhow::ensure!(status == 201, "create server: {status} {server}");
        let server_id = server["id"].as_str().context("server id")?.to_owned();

        let operator_id = create_user(&mgr, &admin, &acme, "operator@acme.example", "operator")?;
        create_user(&mgr, &admin, &acme, "viewer@acme.example", "viewer")?;
        create_user(&mgr, &admin, &other, "mallory@other.example", "admin")?;
        let (operator, operator_refresh) = login(&mgr, "operator@acme.example", USER_PW)?;
        let (viewer, _) = login(&mgr, "viewer@acme.example", USER_PW)?;
        let (mallory, _) = login(&mgr, "mallory@other.example", USER_PW)?;
        wait_until("the gateway registered", T, || {
            gw.get("/api/v1/manager")
                .is_ok_and(|(_, b)| b.contains("\"registered\":true"))
        })?;

        // The operator powers the server on; ipmitool sees it at the BMC.
        assert_eq!(ipmi_power(sim.port())?, "Chassis Power is off");
        let r = api.power_action(&operator, &server_id, "on")?;
        anyhow::ensure!(r.status == 200, "operator power on: {r:?}");
        assert_eq!(r.json["state"], "on", "{r:?}");
        assert_eq!(r.json["action"], "on");
        assert_eq!(ipmi_power(sim.port())?, "Chassis Power is on");
        assert!(sim.power_on());
        let r = api.power(&operator, &server_id)?;
        anyhow::ensure!(r.status == 200 && r.json["state"] == "on", "{r:?}");

        // The viewer reads status and the BMC identity, but may not control power.
        let r = api.power(&viewer, &server_id)?;
        anyhow::ensure!(
            r.status == 200 && r.json["state"] == "on",
            "viewer status: {r:?}"
        );
        let r = api.send(
            "GET",
            &format!("/api/v1/servers/{server_id}/bmc-info"),
            Some(&format!("Bearer {viewer}")),
            None,
        )?;
        anyhow::ensure!(
            r.status == 200 && r.json["protocol"] == "ipmi",
            "viewer bmc-info: {r:?}"
        );
        let r = api.power_action(&viewer, &server_id, "off")?;
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(r.json["error"]["code"], "forbidden");
        assert_eq!(
            ipmi_power(sim.port())?,
            "Chassis Power is on",
            "the viewer's off ran"
        );

        // Another tenant's admin: the same 404 as a server that does not exist.
        let foreign = api.power(&mallory, &server_id)?;
        let missing = api.power(&mallory, "srv_does_not_exist")?;
        let impossible = api.power(&operator, "not%20an%20id")?;
        assert_eq!(foreign.status, 404, "{foreign:?}");
        assert_eq!(foreign.text, missing.text);
        assert_eq!((missing.status, &missing.text), (404, &impossible.text));
        let r = api.power_action(&mallory, &server_id, "off")?;
        assert_eq!((r.status, &r.text), (404, &missing.text));
        assert_eq!(ipmi_power(sim.port())?, "Chassis Power is on");

        // Bad requests from a permitted user.
        let r = api.power_action(&operator, &server_id, "explode")?;
        assert_eq!(r.status, 400, "{r:?}");

        // Tokens that are not the manager's.
        let refused_before =
            metric("outband_gateway_token_validations_total{result=\"signature\"}");
        let (head, rest) = operator.split_once('.').context("jwt")?;
        let (_, sig) = rest.split_once('.').context("jwt")?;
        let payload = json!({"iss": "outband-manager", "aud": "outband", "sub": "usr_x",
            "exp": 4_000_000_000i64, "iat": 1, "nbf": 1, "jti": "j", "typ": "access",
            "sid": "ses_x", "email": "x@x", "adm": true});
        let tampered = format!("{head}.{}.{sig}", b64url(payload.to_string().as_bytes()));
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"at+jwt"}"#),
            b64url(payload.to_string().as_bytes())
        );
        let forged_kid = format!(
            "{}.{}.{sig}",
            b64url(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"forged-kid"}"#),
            b64url(payload.to_string().as_bytes())
        );
        let huge = "A".repeat(9000);
        for (name, auth) in [
            ("tampered claims", Some(format!("Bearer {tampered}"))),
            ("alg none", Some(format!("Bearer {none}"))),
            ("unknown kid", Some(format!("Bearer {forged_kid}"))),
            ("garbage", Some("Bearer garbage".to_owned())),
            ("oversized", Some(format!("Bearer {huge}"))),
            ("basic auth", Some("Basic b3A6cHc=".to_owned())),
            ("no token", None),
        ] {
            let r = api.send(
                "POST",
                &format!("/api/v1/servers/{server_id}/power"),
                auth.as_deref(),
                Some(&json!({ "action": "off" })),
            )?;
            assert_eq!(r.status, 401, "{name}: {r:?}");
            let challenge = r.challenge.clone().unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{name}: {r:?}");
            if name == "no token" {
                assert_eq!(r.json["error"]["code"], "missing_token");
            } else {
                assert!(
                    challenge.contains("error=\"invalid_token\""),
                    "{name}: {r:?}"
                );
                assert_eq!(r.json["error"]["code"], "invalid_token", "{name}");
            }
        }
        assert_eq!(ipmi_power(sim.port())?, "Chassis Power is on");
        assert_eq!(
            metric("outband_gateway_token_validations_total{result=\"signature\"}"),
            refused_before + 1.0
        );
        assert_eq!(
            metric("outband_gateway_token_validations_total{result=\"algorithm\"}"),
            1.0
        );
        assert_eq!(
            metric("outband_gateway_token_validations_total{result=\"too_large\"}"),
            1.0
        );

        // The operator logs out at the manager: the revocation feed ends the session at
        // the gateway within the poll interval, without asking the manager per request.
        let (status, _) = mgr.call(
            "POST",
            "/api/v1/auth/logout",
            None,
            Some(&json!({ "refresh_token": operator_refresh })),
        )?;
        anyhow::ensure!(status == 204, "logout: {status}");
        let logged_out = Instant::now();
        // Until the feed delivers it the manager's session authorization refuses it too
        // (also `session_ended`); the gateway's own refusal shows in the metric.
        let revoked = "outband_gateway_token_validations_total{result=\"revoked\"}";
        anyhow::ensure!(metric(revoked) == 0.0, "revoked before the logout");
        let r = wait_for("the gateway itself refuses the logged-out token", T, || {
            let r = api.power(&operator, &server_id).ok()?;
            (metric(revoked) >= 1.0).then_some(r)
        })?;
        let took = logged_out.elapsed();
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json["error"]["code"], "session_ended", "{r:?}");
        assert!(
            r.challenge
                .as_deref()
                .unwrap_or("")
                .contains("invalid_token"),
            "{r:?}"
        );
        eprintln!("logout refused by the gateway after {took:?} (poll every {POLL_MS} ms)");
        assert!(took < Duration::from_millis(POLL_MS * 10), "{took:?}");

        // A key rotation: a token under the new kid makes the gateway refetch the keys.
        let refetched = "outband_gateway_jwks_unknown_kid_total{result=\"refetched\"}";
        let refetches_before = metric(refetched);
        let (status, v) = mgr.call("POST", "/api/v1/admin/keys/rotate", Some(&admin), None)?;
        anyhow::ensure!(status == 200 || status == 201, "rotate: {status} {v}");
        std::thread::sleep(Duration::from_millis(600)); // past the refetch rate limit
        let (operator2, _) = login(&mgr, "operator@acme.example", USER_PW)?;
        let kid = |t: &str| t.split('.').next().map(str::to_owned).unwrap_or_default();
        assert_ne!(
            kid(&operator2),
            kid(&operator),
            "the new token has a new header (kid)"
        );
        let r = api.power_action(&operator2, &server_id, "off")?;
        anyhow::ensure!(
            r.status == 200 && r.json["state"] == "off",
            "after rotation: {r:?}"
        );
        assert_eq!(ipmi_power(sim.port())?, "Chassis Power is off");
        assert_eq!(metric(refetched), refetches_before + 1.0);
        assert_eq!(metric("outband_gateway_jwks_keys"), 2.0, "old and new key");

        // The gateway reported the power actions to the manager's audit log.
        let entries = wait_for("the gateway's power_on in the audit log", T, || {
            let (status, page) = mgr
                .call("GET", "/api/v1/audit?limit=1000", Some(&admin), None)
                .ok()?;
            let entries = page["entries"].as_array()?.clone();
            let found = entries.iter().any(|e| {
                e["action"].as_str().is_some_and(|a| a.contains("power_on"))
                    && e["target"] == server_id.as_str()
            });
            (status == 200 && found).then_some(entries)
        })?;
        let on = entries
            .iter()
            .find(|e| {
                e["action"].as_str().is_some_and(|a| a.contains("power_on"))
                    && e["target"] == server_id.as_str()
            })
            .context("power_on entry")?;
        assert_eq!(on["outcome"], "success", "{on}");
        assert_eq!(on["actor_id"], operator_id.as_str(), "{on}");
        wait_until("events sent", T, || {
            metric("outband_gateway_manager_events_total{result=\"sent\"}") >= 5.0
        })?;
        assert_eq!(
            metric("outband_gateway_manager_events_total{result=\"dropped\"}"),
            0.0
        );

        // No secret in the gateway's log.
        let logs = gw.proc().stderr();
        for secret in [operator.as_str(), viewer.as_str(), "password\""] {
            assert!(!logs.contains(secret), "a secret is in the gateway log");
        }
        gw.assert_no_panic()?;
        Ok(())
    });
}

/// A manager issuing 1-second tokens (not the harness's launcher: that one keeps the
/// 10-minute default). The gateway needs no registration to verify tokens: the JWKS is
/// public.
#[test]
fn expired_tokens_are_refused() {
    TestContext::run("user_sessions_expired", |ctx| {
        let data = ctx.subdir("manager");
        let pw_file = ctx.path().join("admin-password");
        std::fs::write(&pw_file, format!("{ADMIN_PW}\n"))?;
        let out = Command::new(manager_bin()?)
            .arg("--data-dir")
            .arg(&data)
            .args(["admin", "create", "--email", ADMIN, "--password-file"])
            .arg(&pw_file)
            .output()?;
        anyhow::ensure!(out.status.success(), "admin create: {out:?}");
        let ready = ctx.path().join("manager.ready.json");
        let mut proc = Proc::spawn(
            ctx,
            "manager",
            &manager_bin()?,
            [
                "--data-dir".into(),
                data.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--ready-file".into(),
                ready.display().to_string(),
                "--no-bootstrap-admin".into(),
                "--access-ttl".into(),
                "1s".into(),
            ],
        )?;
        let addr = wait_for("manager ready", T, || {
            if !proc.is_running() {
                return Some(Err(anyhow::anyhow!("manager exited: {}", proc.stderr())));
            }
            let v: Value = serde_json::from_slice(&std::fs::read(&ready).ok()?).ok()?;
            v["http_addr"].as_str().map(|a| Ok(a.to_owned()))
        })??;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut resp = http
            .post(&format!("http://{addr}/api/v1/auth/login"))
            .send_json(json!({ "email": ADMIN, "password": ADMIN_PW }))?;
        let login: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        let token = login["access_token"].as_str().context("token")?.to_owned();
        assert_eq!(login["expires_in"], 1, "{login}");

        let gw = Gateway::start(
            ctx,
            GatewayOptions {
                extra_args: vec![
                    "--manager-url".into(),
                    format!("http://{addr}"),
                    "--user-listen".into(),
                    "127.0.0.1:0".into(),
                ],
                ..Default::default()
            },
        )?;
        let api = UserApi::new(&user_addr(ctx)?);
        wait_until("the gateway holds the manager's keys", T, || {
            gw.metric_or_zero("outband_gateway_jwks_keys")
                .unwrap_or(0.0)
                >= 1.0
        })?;
        // Valid for now: it gets past the signature check, to session authorization
        // (which fails: this gateway never registered).
        let r = api.power(&token, "srv_1")?;
        assert_eq!(r.json["error"]["code"], "manager_unavailable", "{r:?}");
        // Past exp plus the 30 s leeway.
        let exp_plus_leeway = Duration::from_secs(1 + 30 + 1);
        std::thread::sleep(exp_plus_leeway);
        let r = api.power(&token, "srv_1")?;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json["error"]["code"], "invalid_token");
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("expired")),
            "{r:?}"
        );
        assert!(
            r.challenge
                .as_deref()
                .is_some_and(|c| c.contains("error=\"invalid_token\"")),
            "{r:?}"
        );
        assert_eq!(
            gw.metric_or_zero("outband_gateway_token_validations_total{result=\"expired\"}")?,
            1.0
        );
        Ok(())
    });
}
