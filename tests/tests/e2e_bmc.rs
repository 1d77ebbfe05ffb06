//! BMC operations through the whole path: HTTP API → gateway → agent (separate
//! processes, real TLS tunnel) → a real BMC simulator, cross-checked with independent
//! tools (ipmitool, vncdotool) where the simulator's state is visible.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outband_e2e::ipmi_sim::{IpmiSim, ipmitool};
use outband_e2e::pyghmi::PyghmiBmc;
use outband_e2e::qemu::QemuVncOptions;
use outband_e2e::screen::{Diff, Image};
use outband_e2e::sushy::{Sushy, SushyOptions};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, QemuVnc, TestContext};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(15);
const VNCDO: &str = "/opt/outband-venv/bin/vncdo";

/// A gateway and an agent allowed to reach `allow`, connected.
struct Stack {
    gw: Gateway,
    _agent: Agent,
    agent_id: String,
}

impl Stack {
    fn start(ctx: &TestContext, allow: Vec<String>) -> anyhow::Result<Stack> {
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let opts = AgentOptions {
            allow,
            ..Default::default()
        };
        let agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &opts)?;
        let agent_id = gw.wait_first_agent(T)?;
        Ok(Stack {
            gw,
            _agent: agent,
            agent_id,
        })
    }

    /// `POST /api/v1/agents/{id}/{op}`.
    fn call(&self, op: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.gw
            .post_json(&format!("/api/v1/agents/{}/{op}", self.agent_id), &body)
    }

    /// A power call that must succeed; returns the reported state.
    fn power(&self, endpoint: &str, auth: &Value, action: &str) -> anyhow::Result<String> {
        let (status, body) = self.call(
            "power",
            json!({"endpoint": endpoint, "auth": auth, "action": action}),
        )?;
        anyhow::ensure!(status == 200, "power {action}: {status} {body}");
        Ok(body["state"].as_str().context("state")?.to_owned())
    }
}

fn admin() -> Value {
    json!({"username": "admin", "password": "password"})
}

fn ipmitool_power(port: u16) -> anyhow::Result<String> {
    Ok(ipmitool(port, &["chassis", "power", "status"])?
        .trim()
        .to_owned())
}

/// Power status and every action through the tunnel against OpenIPMI's ipmi_sim,
/// each checked by ipmitool against the same simulator; BMC identity; clear errors
/// for a wrong password and an endpoint the agent may not reach.
#[test]
fn ipmi_power_through_the_tunnel_cross_checked_with_ipmitool() {
    TestContext::run("bmc_ipmi_power", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let ep = format!("ipmi://127.0.0.1:{}", sim.port());
        let s = Stack::start(ctx, vec![ep.clone()])?;
        let auth = json!({"username": "admin", "password": "password", "ipmi_cipher_suites": [3]});

        assert_eq!(s.power(&ep, &auth, "status")?, "off");
        assert_eq!(ipmitool_power(sim.port())?, "Chassis Power is off");
        assert_eq!(s.power(&ep, &auth, "on")?, "on");
        assert_eq!(ipmitool_power(sim.port())?, "Chassis Power is on");
        assert!(sim.power_on());
        assert_eq!(s.power(&ep, &auth, "off")?, "off");
        assert_eq!(ipmitool_power(sim.port())?, "Chassis Power is off");
        s.power(&ep, &auth, "on")?;
        s.power(&ep, &auth, "reset")?;
        s.power(&ep, &auth, "cycle")?;
        s.power(&ep, &auth, "soft_off")?;
        let actions = sim.actions();
        assert!(actions.contains("reset 1"), "chassis.sh saw: {actions}");

        // The default preference (17, then 3) must find suite 3 on ipmi_sim, which
        // neither answers Get Channel Cipher Suites nor supports 17.
        let (status, info) = s.call("bmc-info", json!({"endpoint": ep, "auth": admin()}))?;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["protocol"], "ipmi");
        assert_eq!(info["ipmi_cipher_suite"], 3);
        assert_eq!(info["manufacturer"], "4753", "{info}"); // 0x1291 from sim.emu
        assert_eq!(info["model"], "3842", "{info}"); // 0xf02

        let t0 = Instant::now();
        let (status, body) = s.call(
            "power",
            json!({"endpoint": ep, "auth": {"username": "admin", "password": "wrong", "ipmi_cipher_suites": [3]}, "action": "status"}),
        )?;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "bmc_auth_failed", "{body}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

        let (status, body) = s.call(
            "power",
            json!({"endpoint": "ipmi://127.0.0.1:9", "auth": admin(), "action": "off"}),
        )?;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");

        let (status, body) = s.call(
            "power",
            json!({"endpoint": ep, "auth": {"username": "", "password": "x"}, "action": "status"}),
        )?;
        assert_eq!(status, 400, "{body}");

        // The agent logs neither the password nor the wrong one.
        let log = s._agent.proc().stderr();
        assert!(!log.contains("password\""), "agent log leaks a password");
        s.gw.assert_no_panic()
    });
}

/// A second, independent BMC implementation (pyghmi): power and the boot device
/// override through the tunnel, read back by ipmitool.
#[test]
fn pyghmi_power_and_boot_device_through_the_tunnel() {
    TestContext::run("bmc_pyghmi", |ctx| {
        let bmc = PyghmiBmc::start(ctx)?;
        let ep = format!("ipmi://127.0.0.1:{}", bmc.port());
        let s = Stack::start(ctx, vec![ep.clone()])?;
        let auth = admin();
        let before = s.power(&ep, &auth, "status")?;
        let flipped = if before == "on" { "off" } else { "on" };
        assert_eq!(s.power(&ep, &auth, flipped)?, flipped);
        let tool = ipmitool(bmc.port(), &["chassis", "power", "status"])?;
        assert!(tool.contains(&format!("is {flipped}")), "{tool}");

        let (status, body) = s.call(
            "boot-device",
            json!({"endpoint": ep, "auth": auth, "device": "pxe", "persistent": false}),
        )?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["device"], "pxe", "{body}");
        let param = ipmitool(bmc.port(), &["chassis", "bootparam", "get", "5"])?;
        assert!(param.contains("PXE"), "ipmitool reads back: {param}");
        let (status, body) = s.call("boot-device", json!({"endpoint": ep, "auth": auth}))?;
        assert_eq!((status, &body["device"]), (200, &json!("pxe")), "{body}");
        s.gw.assert_no_panic()
    });
}

/// Redfish through the tunnel against sushy-tools over HTTPS with the certificate
/// pinned: status, on, off; a wrong pin and a missing pin fail closed.
#[test]
fn redfish_power_through_the_tunnel() {
    TestContext::run("bmc_redfish", |ctx| {
        let sushy = Sushy::start(ctx, &SushyOptions::default())?;
        let ep = sushy.url();
        let s = Stack::start(ctx, vec![ep.clone()])?;
        let pin: String = sha256_hex(sushy.cert_der());
        let auth = json!({"username": "admin", "password": "password", "cert_sha256": pin});

        assert_eq!(s.power(&ep, &auth, "status")?, "off");
        assert_eq!(s.power(&ep, &auth, "on")?, "on");
        assert_eq!(s.power(&ep, &auth, "status")?, "on");
        assert_eq!(s.power(&ep, &auth, "off")?, "off");

        let (status, info) = s.call("bmc-info", json!({"endpoint": ep, "auth": auth}))?;
        assert_eq!(
            (status, &info["protocol"]),
            (200, &json!("redfish")),
            "{info}"
        );

        let wrong =
            json!({"username": "admin", "password": "password", "cert_sha256": "00".repeat(32)});
        let (status, body) = s.call(
            "power",
            json!({"endpoint": ep, "auth": wrong, "action": "status"}),
        )?;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "bmc_tls_pin_mismatch", "{body}");
        let (status, body) = s.call(
            "power",
            json!({"endpoint": ep, "auth": admin(), "action": "status"}),
        )?;
        assert_eq!(body["error"]["code"], "bmc_tls_unpinned", "{status} {body}");
        let bad_pw = json!({"username": "admin", "password": "nope", "cert_sha256": pin});
        let (status, body) = s.call(
            "power",
            json!({"endpoint": ep, "auth": bad_pw, "action": "status"}),
        )?;
        assert_eq!(body["error"]["code"], "bmc_auth_failed", "{status} {body}");
        s.gw.assert_no_panic()
    });
}

/// A VNC console through the tunnel to a password-protected QEMU: the agent does
/// the VNC authentication, vncdotool connects to the relay WITHOUT a password and
/// captures the same screen as a direct capture with the password. A wrong password
/// is refused by the agent with `bmc_auth_failed`.
#[test]
fn vnc_console_with_bmc_password_through_the_tunnel() {
    TestContext::run("bmc_vnc_password", |ctx| {
        let qemu = QemuVnc::start_with(
            ctx,
            &QemuVncOptions {
                password: Some("s3cret".into()),
                ..Default::default()
            },
        )?;
        let ep = format!("vnc://{}", qemu.addr());
        let s = Stack::start(ctx, vec![ep.clone()])?;
        qemu.wait_settled(T)?;
        let relay = s.gw.create_relay_with(&json!({
            "agent_id": s.agent_id, "target": ep, "kind": "vnc",
            "auth": {"username": "", "password": "s3cret"}
        }))?;
        let mut last = None;
        for attempt in 0..2 {
            let direct = ctx.path().join(format!("direct-{attempt}.png"));
            let relayed = ctx.path().join(format!("relay-{attempt}.png"));
            vncdo(
                &format!("127.0.0.1::{}", qemu.addr().port()),
                Some("s3cret"),
                &direct,
            )?;
            vncdo(
                &format!("127.0.0.1::{}", relay.listen.port()),
                None,
                &relayed,
            )?;
            let diff = Diff::of_images(&Image::load_png(&direct)?, &Image::load_png(&relayed)?)?;
            last = Some(diff);
            if diff.within_cell() {
                break;
            }
        }
        let diff = last.context("a capture")?;
        assert!(diff.within_cell(), "relay capture differs: {diff:?}");

        let bad = s.gw.create_relay_with(&json!({
            "agent_id": s.agent_id, "target": ep, "kind": "vnc",
            "auth": {"username": "", "password": "wrong"}
        }))?;
        let mut c = TcpStream::connect(bad.listen)?;
        c.set_read_timeout(Some(T))?;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(buf.is_empty(), "a refused console sends nothing: {buf:?}");
        outband_e2e::wait::wait_until("the refusal in the gateway log", T, || {
            s.gw.proc().stderr().contains("bmc_auth_failed")
        })?;
        s.gw.assert_no_panic()
    });
}

/// IPMI SOL through the tunnel: text typed into the relay reaches the serial port
/// behind ipmi_sim, and what the serial port sends comes back.
#[test]
fn sol_console_through_the_tunnel() {
    TestContext::run("bmc_sol", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let ep = format!("ipmi://127.0.0.1:{}", sim.port());
        let s = Stack::start(ctx, vec![ep.clone()])?;
        let relay = s.gw.create_relay_with(&json!({
            "agent_id": s.agent_id, "target": ep, "kind": "serial",
            "auth": {"username": "admin", "password": "password", "ipmi_cipher_suites": [3]}
        }))?;
        let mut c = TcpStream::connect(relay.listen)?;
        c.set_read_timeout(Some(Duration::from_millis(200)))?;
        let line = b"typed through the tunnel\r\n";
        c.write_all(line)?;
        let mut got = Vec::new();
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 4096];
        while !contains(&got, line) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "echo not seen; got {:?}",
                String::from_utf8_lossy(&got)
            );
            match c.read(&mut buf) {
                Ok(0) => {
                    anyhow::bail!("SOL stream closed; got {:?}", String::from_utf8_lossy(&got))
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }

        // A serial break through the gateway API reaches the open SOL session, which
        // keeps working afterwards.
        let id = relay.relay_id.to_string();
        let (status, body) =
            s.gw.post_json(&format!("/api/v1/relays/{id}/break"), &json!({}))?;
        assert_eq!((status, &body["streams"]), (200, &json!(1)), "{body}");
        outband_e2e::wait::wait_until("the agent to log the break", T, || {
            s._agent.proc().stderr().contains("SOL break")
        })?;
        let again = b"still there after the break\r\n";
        c.write_all(again)?;
        got.clear();
        let deadline = Instant::now() + T;
        while !contains(&got, again) {
            anyhow::ensure!(Instant::now() < deadline, "no echo after the break");
            if let Ok(n) = c.read(&mut buf) {
                anyhow::ensure!(n > 0, "SOL stream closed after the break");
                got.extend_from_slice(&buf[..n]);
            }
        }
        let (status, body) = s.gw.post_json("/api/v1/relays/999/break", &json!({}))?;
        assert_eq!(status, 404, "{body}");
        s.gw.assert_no_panic()
    });
}

/// Discovery configured on the agent finds the simulators on its network (an RMCP
/// pong from ipmi_sim, a Redfish service root from sushy-tools with its certificate
/// fingerprint) and reports them to the gateway, without adding them to what the
/// agent may use: a power request to a discovered-only endpoint is still forbidden.
#[test]
fn discovery_reports_bmcs_to_the_gateway() {
    TestContext::run("bmc_discovery_e2e", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let sushy = Sushy::start(ctx, &SushyOptions::default())?;
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let opts = AgentOptions {
            extra_args: [
                "--discover",
                "127.0.0.0/29",
                "--discover-ipmi-port",
                &sim.port().to_string(),
                "--discover-redfish-port",
                &sushy.port().to_string(),
            ]
            .map(str::to_owned)
            .to_vec(),
            ..Default::default()
        };
        let agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &opts)?;
        let agent_id = gw.wait_first_agent(T)?;
        let caps = gw.agent(&agent_id)?.context("agent entry")?["capabilities"].clone();
        for cap in [
            "tcp-relay",
            "vnc-console",
            "serial-console",
            "bmc-requests",
            "discovery",
        ] {
            assert!(
                caps.as_array().is_some_and(|c| c.iter().any(|v| v == cap)),
                "{cap} missing from {caps}"
            );
        }
        let ipmi_url = format!("ipmi://127.0.0.1:{}", sim.port());
        let redfish_url = format!("https://127.0.0.1:{}", sushy.port());
        let inventory = outband_e2e::wait::wait_for("discovered endpoints", T, || {
            let a = gw.agent(&agent_id).ok()??;
            let inv = a["inventory"].as_array()?.clone();
            (inv.len() >= 2).then_some(inv)
        })?;
        let find = |url: &str| inventory.iter().find(|e| e["url"] == url).cloned();
        let ipmi = find(&ipmi_url).with_context(|| format!("{ipmi_url} in {inventory:?}"))?;
        assert_eq!(ipmi["source"], "discovery");
        assert_eq!(ipmi["reachable"], true);
        let redfish =
            find(&redfish_url).with_context(|| format!("{redfish_url} in {inventory:?}"))?;
        assert_eq!(redfish["cert_sha256"], sha256_hex(sushy.cert_der()));
        assert_eq!(
            inventory.len(),
            2,
            "nothing else answers on 127.0.0.0/29: {inventory:?}"
        );

        let s = Stack {
            gw,
            _agent: agent,
            agent_id,
        };
        let (status, body) = s.call(
            "power",
            json!({"endpoint": ipmi_url, "auth": admin(), "action": "status"}),
        )?;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("forbidden")),
            "{body}"
        );
        s.gw.assert_no_panic()
    });
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn vncdo(server: &str, password: Option<&str>, out: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("timeout");
    cmd.args(["30", VNCDO, "-s", server]);
    if let Some(p) = password {
        cmd.args(["-p", p]);
    }
    let res = cmd.arg("capture").arg(out).output().context("run vncdo")?;
    anyhow::ensure!(
        res.status.success(),
        "vncdo {server} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(())
}
