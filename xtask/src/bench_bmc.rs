//! `cargo xtask bench-bmc`: the agent's BMC protocols measured against the reference
//! tools on the same simulators, in the same run.
//!
//! - Power status latency (ipmi_sim): `ipmitool -I lanplus` whole process vs our
//!   whole session in-process (open, Get Chassis Status, close), our status with a
//!   reused session, and the full path HTTP → gateway → tunnel → agent → BMC.
//! - SOL keystroke echo through the tunnel (ipmi_sim, its serial port an echo server)
//!   vs `ipmitool sol activate` on a pseudo-terminal, and vs the echo server direct.
//! - SOL throughput: 4 KiB typed and echoed, tunnel vs ipmitool.
//! - VNC: full framebuffer updates from QEMU through the tunnel (kind `vnc`, the agent
//!   doing the RFB handshake) vs direct.
//!
//! Release gateway and the shipped static agent, started by the e2e harness
//! (`OUTBAND_E2E_BIN_DIR`). The table is also written to `target/bench-bmc-report.md`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outband_e2e::ipmi_sim::IpmiSim;
use outband_e2e::rfb::RfbClient;
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, QemuVnc, TestContext};
use serde_json::json;

use crate::bench::pct;
use crate::{cargo, dist, target_dir};

const T: Duration = Duration::from_secs(20);

struct Table(String);

impl Table {
    fn row(&mut self, cells: &[&str]) {
        let line = format!("| {} |", cells.join(" | "));
        println!("{line}");
        let _ = writeln!(self.0, "{line}");
    }
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

pub fn run(quick: bool) -> Result<()> {
    cargo(&["build", "--release", "--locked", "-p", "outband-gateway"])?;
    let static_target = "x86_64-unknown-linux-musl";
    dist::build(static_target)?;
    let bins = target_dir().join("bench-bmc-bins");
    std::fs::create_dir_all(&bins)?;
    std::fs::copy(
        target_dir().join("release/outband-gateway"),
        bins.join("outband-gateway"),
    )?;
    std::fs::copy(dist::agent_path(static_target), bins.join("outband-agent"))?;
    outband_e2e::bins::use_bin_dir(bins);

    let n = if quick { 10 } else { 40 };
    let ctx = TestContext::new("bench-bmc");
    let res = measure(&ctx, n);
    if res.is_err() {
        ctx.dump_logs();
    }
    res
}

fn measure(ctx: &TestContext, n: usize) -> Result<()> {
    let sim = IpmiSim::start(ctx)?;
    let qemu = QemuVnc::start(ctx)?;
    let ipmi_ep = format!("ipmi://127.0.0.1:{}", sim.port());
    let vnc_ep = format!("vnc://{}", qemu.addr());
    // SeaBIOS halts on its last screen; until then QEMU (TCG) keeps a core busy.
    qemu.wait_settled(T)?;
    let gw = Gateway::start(ctx, GatewayOptions::default())?;
    let opts = AgentOptions {
        allow: vec![ipmi_ep.clone(), vnc_ep.clone()],
        ..Default::default()
    };
    let _agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &opts)?;
    let agent_id = gw.wait_first_agent(T)?;
    let auth = json!({"username": "admin", "password": "password", "ipmi_cipher_suites": [3]});

    let mut t = Table(String::new());
    println!();
    t.row(&["measure", "outband", "baseline", "ratio", "goal"]);
    t.row(&["---", "---", "---", "---", "---"]);

    // ---- Power status latency ----
    let mut tool = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let out = ipmitool(sim.port(), &["chassis", "power", "status"])?;
        tool.push(t0.elapsed().as_secs_f64() * 1e6);
        if !out.contains("Chassis Power is") {
            bail!("ipmitool: {out}");
        }
    }
    let addr = sim.addr();
    let creds = outband_ipmi::Credentials::new("admin", "password");
    let iopts = outband_ipmi::Options {
        cipher_suites: vec![3],
        ..Default::default()
    };
    let mut whole = Vec::new();
    let mut reuse = Vec::new();
    smol::block_on(async {
        for _ in 0..n {
            let t0 = Instant::now();
            let mut s = outband_ipmi::Session::open(addr, &creds, &iopts).await?;
            s.chassis_status().await?;
            s.close().await?;
            whole.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let mut s = outband_ipmi::Session::open(addr, &creds, &iopts).await?;
        for _ in 0..n * 5 {
            let t0 = Instant::now();
            s.chassis_status().await?;
            reuse.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        s.close().await?;
        anyhow::Ok(())
    })?;
    let mut tunnel = Vec::new();
    let path = format!("/api/v1/agents/{agent_id}/power");
    for _ in 0..n {
        let t0 = Instant::now();
        let (status, body) = gw.post_json(
            &path,
            &json!({"endpoint": ipmi_ep, "auth": auth, "action": "status"}),
        )?;
        tunnel.push(t0.elapsed().as_secs_f64() * 1e6);
        if status != 200 {
            bail!("power status through the tunnel: {status} {body}");
        }
    }
    let tool50 = pct(&mut tool, 0.5);
    for (name, v) in [
        ("power status p50, new session in-process (ms)", &mut whole),
        ("power status p50, reused session (ms)", &mut reuse),
        (
            "power status p50, HTTP → gateway → tunnel → agent, new session (ms)",
            &mut tunnel,
        ),
    ] {
        let p50 = pct(v, 0.5);
        t.row(&[
            name,
            &format!("{} (p99 {})", ms(p50), ms(pct(v, 0.99))),
            &format!("ipmitool lanplus process {}", ms(tool50)),
            &format!("{:.1}× faster", tool50 / p50),
            "≥ 5× faster than ipmitool whole-process",
        ]);
    }

    // ---- SOL keystroke echo ----
    let relay = gw.create_relay_with(&json!({
        "agent_id": agent_id, "target": ipmi_ep, "kind": "serial", "auth": auth
    }))?;
    let mut sol = TcpStream::connect(relay.listen)?;
    sol.set_nodelay(true)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut reader = sol.try_clone()?;
    std::thread::spawn(move || pump(&mut reader, tx));
    let mut ours = Echo::new(rx);
    ours.wait_for(b"ipmi_sim serial", T).ok(); // the banner, if the backend sends one
    let tunnel_echo = ours.keystrokes(&mut sol, n * 2)?;
    let tunnel_tput = ours.throughput(&mut sol, 4096)?;
    // The reader thread holds a clone of the socket: shut it down, not just drop it.
    sol.shutdown(std::net::Shutdown::Both)?;
    // ipmi_sim allows one SOL session: wait until the agent has deactivated ours.
    outband_e2e::wait::wait_until("the SOL stream to close", T, || {
        gw.agent(&agent_id)
            .ok()
            .flatten()
            .is_some_and(|a| a["streams"].as_u64() == Some(0))
    })?;

    let mut direct = TcpStream::connect(sim.sol_backend().context("SOL backend")?.addr())?;
    direct.set_nodelay(true)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut reader = direct.try_clone()?;
    std::thread::spawn(move || pump(&mut reader, tx));
    let mut plain = Echo::new(rx);
    let mut direct_echo = plain.keystrokes(&mut direct, n * 2)?;
    direct.shutdown(std::net::Shutdown::Both)?;

    // The agent deactivates its SOL payload just after the stream closes; ipmitool
    // says "already active" until then.
    let mut attempt = 0;
    let (mut tool_echo, tool_tput) = loop {
        attempt += 1;
        match ipmitool_sol(sim.port(), n * 2) {
            Err(e) if attempt < 5 && format!("{e:#}").contains("already active") => {
                std::thread::sleep(Duration::from_millis(500));
            }
            other => break other?,
        }
    };
    let mut tunnel_echo = tunnel_echo;
    let (te, ie) = (pct(&mut tunnel_echo, 0.5), pct(&mut tool_echo, 0.5));
    t.row(&[
        "SOL keystroke echo p50 / p99 (ms)",
        &format!("{} / {}", ms(te), ms(pct(&mut tunnel_echo, 0.99))),
        &format!(
            "ipmitool sol activate {} / {}; serial echo direct {}",
            ms(ie),
            ms(pct(&mut tool_echo, 0.99)),
            ms(pct(&mut direct_echo, 0.5))
        ),
        &format!("{:.2}× ipmitool", te / ie),
        "–",
    ]);
    t.row(&[
        "SOL throughput, 4 KiB typed and echoed (KiB/s)",
        &format!("{tunnel_tput:.1}"),
        &format!("ipmitool sol activate {tool_tput:.1}"),
        &format!("{:.2}× ipmitool", tunnel_tput / tool_tput),
        "–",
    ]);

    // ---- VNC full frames ----
    let relay = gw.create_relay_with(&json!({
        "agent_id": agent_id, "target": vnc_ep, "kind": "vnc"
    }))?;
    let frames = n.max(10);
    let direct_mbs = vnc_rate(qemu.addr(), frames)?;
    let tunnel_mbs = vnc_rate(relay.listen, frames)?;
    t.row(&[
        "VNC full framebuffer updates (MB/s)",
        &format!("{tunnel_mbs:.1}"),
        &format!("direct {direct_mbs:.1}"),
        &format!("{:.2}× direct", tunnel_mbs / direct_mbs),
        "–",
    ]);

    let report = target_dir().join("bench-bmc-report.md");
    std::fs::write(&report, &t.0)?;
    println!("\nwritten to {}", report.display());
    gw.assert_no_panic()
}

fn ipmitool(port: u16, args: &[&str]) -> Result<String> {
    let port = port.to_string();
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", &port])
        .args(["-U", "admin", "-P", "password"])
        .args(args)
        .output()
        .context("run ipmitool")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pump(r: &mut impl Read, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
            return;
        }
    }
}

/// What a console echoes back, collected by a reader thread.
struct Echo {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Echo {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        Echo {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until `want` has been seen; drops everything up to its end.
    fn wait_for(&mut self, want: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.windows(want.len()).position(|w| w == want) {
                self.seen.drain(..i + want.len());
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend_from_slice(&b),
                Err(_) => bail!(
                    "{:?} not echoed within {timeout:?}; saw {:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Types `n` distinct keystrokes one at a time; microseconds to each echo.
    fn keystrokes(&mut self, w: &mut impl Write, n: usize) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let key = [b'a' + (i % 26) as u8, b'A' + (i / 26 % 26) as u8];
            let t0 = Instant::now();
            w.write_all(&key)?;
            w.flush()?;
            self.wait_for(&key, T)?;
            out.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        Ok(out)
    }

    /// Types `len` bytes of lines at once and waits for all of them; KiB/s.
    fn throughput(&mut self, w: &mut impl Write, len: usize) -> Result<f64> {
        let mut text = Vec::with_capacity(len);
        let mut line = 0;
        while text.len() < len {
            text.extend_from_slice(
                format!("line {line:05} of the SOL throughput test\r\n").as_bytes(),
            );
            line += 1;
        }
        let end = format!("line {:05} of", line - 1);
        let t0 = Instant::now();
        w.write_all(&text)?;
        w.flush()?;
        self.wait_for(end.as_bytes(), Duration::from_secs(120))?;
        Ok(text.len() as f64 / 1024.0 / t0.elapsed().as_secs_f64())
    }
}

/// `ipmitool sol activate` on a pseudo-terminal (`script`), driven like a user:
/// keystroke echo latencies (µs) and 4 KiB throughput (KiB/s).
fn ipmitool_sol(port: u16, n: usize) -> Result<(Vec<f64>, f64)> {
    let port = port.to_string();
    let cmd = format!(
        "stty raw -echo; exec ipmitool -I lanplus -C 3 -H 127.0.0.1 -p {port} -U admin -P password sol activate"
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run ipmitool sol activate under script")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || pump(&mut stdout, tx));
    let mut echo = Echo::new(rx);
    let res = (|| {
        echo.wait_for(b"SOL Session operational", T)?;
        let lat = echo.keystrokes(&mut stdin, n)?;
        let tput = echo.throughput(&mut stdin, 4096)?;
        anyhow::Ok((lat, tput))
    })();
    // ipmitool's escape sequence ends the session cleanly: "~." after a newline.
    let _ = stdin.write_all(b"\r~.");
    let _ = stdin.flush();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    res
}

/// MB/s of full (non-incremental) framebuffer updates from a VNC server.
fn vnc_rate(addr: std::net::SocketAddr, frames: usize) -> Result<f64> {
    let mut c = RfbClient::connect(addr, T)?;
    c.full_frame(T)?; // warm up
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for _ in 0..frames {
        bytes += c.full_frame(T)?.pixels.len();
    }
    Ok(bytes as f64 / 1e6 / t0.elapsed().as_secs_f64())
}
