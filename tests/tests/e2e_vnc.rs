//! A real VNC session through the tunnel: QEMU (VNC server) ← agent ← gateway ← client,
//! each a separate process, checked by our own RFB client and by vncdotool.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use outband_e2e::net::read_until_closed;
use outband_e2e::rfb::RfbClient;
use outband_e2e::screen::{Diff, Image};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, QemuVnc, TestContext};

const T: Duration = Duration::from_secs(15);
const VNCDO: &str = "/opt/outband-venv/bin/vncdo";

/// QEMU playing the BMC, a gateway, and an agent allowed to reach QEMU's VNC port,
/// connected.
struct VncStack {
    qemu: QemuVnc,
    gw: Gateway,
    agent: Agent,
    agent_id: String,
    /// QEMU's VNC endpoint, `vnc://127.0.0.1:PORT`.
    vnc: String,
}

impl VncStack {
    fn start(ctx: &TestContext) -> anyhow::Result<Self> {
        let qemu = QemuVnc::start(ctx)?;
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let vnc = format!("vnc://{}", qemu.addr());
        let opts = AgentOptions {
            allow: vec![vnc.clone()],
            ..Default::default()
        };
        let agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &opts)?;
        let agent_id = gw.wait_first_agent(T)?;
        Ok(Self {
            qemu,
            gw,
            agent,
            agent_id,
            vnc,
        })
    }
}

/// Our RFB client sees the same server through the relay as directly: version,
/// security types, ServerInit, and a full raw framebuffer.
#[test]
fn rfb_session_through_relay_matches_direct() {
    TestContext::run("rfb_relay", |ctx| {
        let VncStack {
            qemu,
            gw,
            agent: _agent,
            agent_id,
            vnc,
        } = VncStack::start(ctx)?;
        qemu.wait_settled(T)?;
        let relay = gw.create_relay(&agent_id, &vnc)?;

        let mut direct = RfbClient::connect(qemu.addr(), T).context("direct RFB")?;
        let mut relayed = RfbClient::connect(relay.listen, T).context("RFB through relay")?;
        assert_eq!(relayed.version, "RFB 003.008\n");
        assert_eq!(relayed.version, direct.version);
        assert_eq!(relayed.security_types, direct.security_types);
        assert_eq!(
            (relayed.width, relayed.height),
            (direct.width, direct.height)
        );
        assert!(
            relayed.width >= 640 && relayed.height >= 400,
            "{}x{}",
            relayed.width,
            relayed.height
        );
        assert_eq!(relayed.pixel_format, direct.pixel_format);
        assert_eq!(relayed.name, direct.name);

        // The SeaBIOS screen is static except for the blinking cursor: take frames
        // until one pair is identical, or accept a difference within one text cell.
        let mut last = None;
        for _ in 0..5 {
            let a = direct.full_frame(T).context("direct framebuffer")?;
            let b = relayed.full_frame(T).context("relayed framebuffer")?;
            assert!(b.updates >= 1);
            assert_eq!(
                b.pixels.len(),
                usize::from(relayed.width)
                    * usize::from(relayed.height)
                    * relayed.bytes_per_pixel()
            );
            assert!(
                b.pixels.iter().any(|&p| p != 0),
                "relayed framebuffer is all black"
            );
            let diff = Diff::of(a.width, a.bytes_per_pixel, &a.pixels, &b.pixels)?;
            if diff.identical() {
                last = Some(diff);
                break;
            }
            last = Some(diff);
        }
        let diff = last.expect("at least one comparison");
        assert!(
            diff.within_cell(),
            "relayed framebuffer differs from direct: {diff:?}"
        );

        // A second session through the same relay at the same time: a stream of its
        // own, the same picture.
        let mut second = RfbClient::connect(relay.listen, T).context("second relayed RFB")?;
        let entry = gw.agent(&agent_id)?.context("agent entry")?;
        assert_eq!(
            entry["streams"].as_u64(),
            Some(2),
            "two open sessions: {entry}"
        );
        let (f1, f2) = (relayed.full_frame(T)?, second.full_frame(T)?);
        let diff = Diff::of(f1.width, f1.bytes_per_pixel, &f1.pixels, &f2.pixels)?;
        assert!(diff.within_cell(), "concurrent sessions differ: {diff:?}");
        drop((relayed, second));
        outband_e2e::wait::wait_until("streams to close", T, || {
            gw.agent(&agent_id)
                .ok()
                .flatten()
                .is_some_and(|e| e["streams"].as_u64() == Some(0))
        })?;

        // The relay shows up in the agent's counters.
        let entry = gw.agent(&agent_id)?.context("agent entry")?;
        let bytes_in = entry
            .get("bytes_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        assert!(
            bytes_in > 720 * 400,
            "bytes_in {bytes_in} is less than one frame: {entry}"
        );
        gw.assert_no_panic()
    });
}

/// vncdotool, an independent VNC client, captures the same picture through the
/// relay as directly.
#[test]
fn vncdotool_capture_through_relay_matches_direct() {
    TestContext::run("vncdo_relay", |ctx| {
        let VncStack {
            qemu,
            gw,
            agent: _agent,
            agent_id,
            vnc,
        } = VncStack::start(ctx)?;
        qemu.wait_settled(T)?;
        let relay = gw.create_relay(&agent_id, &vnc)?;

        let mut last = None;
        // Two captures a second apart can straddle a cursor blink; a difference inside
        // one text cell is accepted, anything larger is retried once more.
        for attempt in 0..2 {
            let direct_png = ctx.path().join(format!("direct-{attempt}.png"));
            let relay_png = ctx.path().join(format!("relay-{attempt}.png"));
            vncdo_capture(&format!("127.0.0.1::{}", qemu.addr().port()), &direct_png)?;
            vncdo_capture(&format!("127.0.0.1::{}", relay.listen.port()), &relay_png)?;
            let a = Image::load_png(&direct_png)?;
            let b = Image::load_png(&relay_png)?;
            assert!(
                b.width >= 640 && b.height >= 400,
                "{}x{}",
                b.width,
                b.height
            );
            assert!(
                b.pixels.iter().any(|&p| p != 0),
                "relay capture is all black"
            );
            let diff = Diff::of_images(&a, &b)?;
            eprintln!("capture {attempt}: {diff:?}");
            last = Some(diff);
            if diff.within_cell() {
                break;
            }
        }
        let diff = last.expect("at least one capture");
        assert!(
            diff.within_cell(),
            "relay capture differs from direct: {diff:?}"
        );
        gw.assert_no_panic()
    });
}

/// A target that is not on the agent's allow-list is refused: the relay's TCP
/// connection closes without data, the target never sees a connection, and the
/// gateway logs why.
#[test]
fn relay_to_target_off_the_allow_list_is_refused() {
    TestContext::run("relay_forbidden", |ctx| {
        let VncStack {
            qemu: _qemu,
            gw,
            agent: _agent,
            agent_id,
            vnc,
        } = VncStack::start(ctx)?;

        // A live listener that is not on the allow-list: it must never be dialled.
        let forbidden = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        forbidden.set_nonblocking(true)?;
        let target = format!("vnc://{}", forbidden.local_addr()?);
        let log_start = gw.proc().stderr_len();
        let (status, body) = gw.post_relay(&agent_id, &target)?;
        if status == 201 {
            let listen = body["listen"].as_str().context("relay listen")?.parse()?;
            let mut s = TcpStream::connect_timeout(&listen, T)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let closed = read_until_closed(&mut s, T)?;
            assert!(
                closed.bytes().is_empty(),
                "relay to a forbidden target sent data: {closed:?}"
            );
            let line = gw
                .proc()
                .wait_stderr_line("relay refused", log_start, T, |l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("forbidden") || l.contains("refused") || l.contains("not allowed")
                })?;
            assert!(line.contains(&agent_id) || line.contains("relay"), "{line}");
        } else {
            assert!(
                (400..500).contains(&status),
                "POST relay answered {status}: {body}"
            );
        }
        let mut buf = [0u8; 1];
        match forbidden.accept() {
            Ok((mut c, peer)) => panic!(
                "forbidden target was dialled from {peer} ({:?})",
                c.read(&mut buf)
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
        // The agent is still connected and an allowed relay still works.
        let relay = gw.create_relay(&agent_id, &vnc)?;
        let rfb = RfbClient::connect(relay.listen, T)?;
        assert_eq!(rfb.version, "RFB 003.008\n");
        gw.assert_no_panic()
    });
}

fn vncdo_capture(server: &str, out: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(VNCDO);
    cmd.args(["-s", server, "capture"]).arg(out);
    let output = run_with_timeout(cmd, T).with_context(|| format!("vncdo -s {server} capture"))?;
    anyhow::ensure!(
        output.status.success(),
        "vncdo -s {server} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs a command to completion, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "timed out after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
