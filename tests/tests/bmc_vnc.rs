//! The agent's native BMC console code (`outband-console`) against real peers: QEMU's
//! VNC server over TCP (with and without a password), QEMU's own WebSocket port, and
//! websockify with TLS in front of QEMU (pinned `wss://`); a WebSocket serial console
//! through websockify with TLS and Basic auth. vncdotool, an independent VNC client,
//! checks every relay against a direct capture.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use outband_console::{
    BmcConsole, Error, VncTarget, Zeroizing, connect_bmc, connect_serial_ws, serve_front,
};
use outband_e2e::net::read_until_closed;
use outband_e2e::rfb::RfbClient;
use outband_e2e::screen::{Diff, Image};
use outband_e2e::{QemuVnc, QemuVncOptions, TestContext, Websockify, WebsockifyOptions};

const T: Duration = Duration::from_secs(15);
const VNCDO: &str = "/opt/outband-venv/bin/vncdo";
const PASSWORD: &str = "SECRET";

/// How one relayed connection ended: the BMC security type used, or the error code
/// and message.
type Outcome = Result<u8, (String, String)>;

/// The agent's VNC path in miniature: for each TCP connection, `connect_bmc` (a
/// failure closes the connection without a byte), then `serve_front`, then a plain
/// copy both ways. Records each connection's outcome.
struct Relay {
    addr: SocketAddr,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    _task: smol::Task<()>,
}

impl Relay {
    fn start(target: VncTarget) -> anyhow::Result<Relay> {
        let listener = smol::block_on(smol::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let out = outcomes.clone();
        let task = smol::spawn(async move {
            while let Ok((front, _)) = listener.accept().await {
                let (target, out) = (target.clone(), out.clone());
                smol::spawn(async move {
                    let r = relay_one(front, &target).await;
                    out.lock().unwrap().push(r);
                })
                .detach();
            }
        });
        Ok(Relay {
            addr,
            outcomes,
            _task: task,
        })
    }

    /// Waits for the outcome of the `n`th connection (0-based): the BMC security type
    /// used, or the error code and message.
    fn outcome(&self, n: usize) -> anyhow::Result<Outcome> {
        outband_e2e::wait::wait_for("relay outcome", T, || {
            self.outcomes.lock().unwrap().get(n).cloned()
        })
    }
}

async fn relay_one(mut front: smol::net::TcpStream, target: &VncTarget) -> Outcome {
    let fail = |e: Error| (e.code().to_owned(), e.to_string());
    let bmc = connect_bmc(target, T).await.map_err(fail)?;
    let sec = bmc.security_type();
    serve_front(&mut front).await.map_err(fail)?;
    copy_both_ways(bmc, front).await;
    Ok(sec)
}

/// Copies until either side ends, flushing after each write (a WebSocket writer may
/// hold a message until flushed).
async fn copy_both_ways(bmc: BmcConsole, front: smol::net::TcpStream) {
    let (mut br, mut bw) = futures_lite::io::split(bmc);
    let (mut fr, mut fw) = (front.clone(), front);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = fr.read(&mut buf).await {
            if bw.write_all(&buf[..n]).await.is_err() || bw.flush().await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = br.read(&mut buf).await {
            if fw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    futures_lite::future::or(up, down).await;
}

fn vncdo_capture(server: SocketAddr, password: Option<&str>, out: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(VNCDO);
    cmd.arg("-s").arg(format!("127.0.0.1::{}", server.port()));
    if let Some(pw) = password {
        cmd.args(["-p", pw]);
    }
    cmd.arg("capture").arg(out);
    let output = run_with_timeout(cmd, T).with_context(|| format!("vncdo {server} capture"))?;
    anyhow::ensure!(
        output.status.success(),
        "vncdo {server} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Captures QEMU directly and through the relay with vncdotool and checks that the
/// pictures match (up to the blinking cursor cell).
fn assert_same_picture(
    ctx: &TestContext,
    qemu: &QemuVnc,
    relay: SocketAddr,
    tag: &str,
) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..3 {
        let direct = ctx.path().join(format!("{tag}-direct-{attempt}.png"));
        let relayed = ctx.path().join(format!("{tag}-relay-{attempt}.png"));
        vncdo_capture(qemu.addr(), qemu.password(), &direct)?;
        vncdo_capture(relay, None, &relayed)?;
        let (a, b) = (Image::load_png(&direct)?, Image::load_png(&relayed)?);
        anyhow::ensure!(
            b.width >= 640 && b.height >= 400,
            "{}x{}",
            b.width,
            b.height
        );
        anyhow::ensure!(
            b.pixels.iter().any(|&p| p != 0),
            "relay capture is all black"
        );
        let diff = Diff::of_images(&a, &b)?;
        eprintln!("{tag} capture {attempt}: {diff:?}");
        last = Some(diff);
        if diff.within_cell() {
            return Ok(());
        }
    }
    anyhow::bail!("relay capture differs from direct: {last:?}")
}

/// Our own RFB client through the relay: the front offers only None, whatever the BMC
/// needs, and ServerInit matches a direct session.
fn assert_front_offers_only_none(qemu: &QemuVnc, relay: SocketAddr) -> anyhow::Result<()> {
    let relayed = RfbClient::connect(relay, T).context("RFB through relay")?;
    assert_eq!(relayed.version, "RFB 003.008\n");
    assert_eq!(relayed.security_types, vec![1]);
    let direct = RfbClient::connect_with_password(qemu.addr(), T, qemu.password())?;
    assert_eq!(
        (relayed.width, relayed.height),
        (direct.width, direct.height)
    );
    assert_eq!(relayed.pixel_format, direct.pixel_format);
    assert_eq!(relayed.name, direct.name);
    Ok(())
}

fn target(url: String) -> VncTarget {
    VncTarget::new(url)
}

#[test]
fn tcp_without_password_matches_direct() {
    TestContext::run("bmc_vnc_tcp", |ctx| {
        let qemu = QemuVnc::start(ctx)?;
        qemu.wait_settled(T)?;
        let bmc = smol::block_on(connect_bmc(&target(format!("vnc://{}", qemu.addr())), T))?;
        assert_eq!(bmc.version(), outband_console::rfb::Version::V3_8);
        assert_eq!(bmc.security_type(), 1);
        drop(bmc);

        let relay = Relay::start(target(qemu.addr().to_string()))?;
        assert_front_offers_only_none(&qemu, relay.addr)?;
        assert_eq!(relay.outcome(0)?, Ok(1));
        assert_same_picture(ctx, &qemu, relay.addr, "tcp")
    });
}

#[test]
fn tcp_with_password_matches_direct() {
    TestContext::run("bmc_vnc_password", |ctx| {
        let opts = QemuVncOptions {
            password: Some(PASSWORD.into()),
            ..Default::default()
        };
        let qemu = QemuVnc::start_with(ctx, &opts)?;
        qemu.wait_settled(T)?;
        let mut t = target(format!("vnc://{}", qemu.addr()));
        t.password = Some(Zeroizing::new(PASSWORD.into()));
        let relay = Relay::start(t)?;
        assert_front_offers_only_none(&qemu, relay.addr)?;
        // VNC Authentication was done by us, toward QEMU.
        assert_eq!(relay.outcome(0)?, Ok(2));
        assert_same_picture(ctx, &qemu, relay.addr, "password")
    });
}

#[test]
fn wrong_or_missing_password_is_auth_failed_with_qemus_reason() {
    TestContext::run("bmc_vnc_bad_password", |ctx| {
        let opts = QemuVncOptions {
            password: Some(PASSWORD.into()),
            ..Default::default()
        };
        let qemu = QemuVnc::start_with(ctx, &opts)?;
        let mut t = target(format!("vnc://{}", qemu.addr()));
        t.password = Some(Zeroizing::new("wrong".into()));
        let e = smol::block_on(connect_bmc(&t, T)).expect_err("wrong password accepted");
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");
        // QEMU speaks 3.8, so its failure reason comes along.
        assert!(e.to_string().ends_with("Authentication failed"), "{e}");
        assert!(
            !e.to_string().contains("wrong"),
            "password in the error: {e}"
        );

        t.password = None;
        let e = smol::block_on(connect_bmc(&t, T)).expect_err("no password accepted");
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");
        assert!(e.to_string().contains("requires a VNC password"), "{e}");

        // Through the relay: the front connection closes without a byte.
        t.password = Some(Zeroizing::new("wrong".into()));
        let relay = Relay::start(t)?;
        let mut s = std::net::TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let closed = read_until_closed(&mut s, T)?;
        assert!(closed.bytes().is_empty(), "data flowed: {closed:?}");
        let (code, _) = relay.outcome(0)?.expect_err("relay succeeded");
        assert_eq!(code, "bmc_auth_failed");
        Ok(())
    });
}

/// QEMU's own WebSocket port (as OpenBMC's `/kvm/0`), with a VNC password: VNC
/// Authentication inside binary WebSocket messages.
#[test]
fn qemu_websocket_port_with_password_matches_direct() {
    TestContext::run("bmc_vnc_ws", |ctx| {
        let opts = QemuVncOptions {
            websocket: true,
            password: Some(PASSWORD.into()),
        };
        let qemu = QemuVnc::start_with(ctx, &opts)?;
        qemu.wait_settled(T)?;
        let ws = qemu.ws_addr().context("websocket port")?;
        let mut t = target(format!("ws://{ws}"));
        t.password = Some(Zeroizing::new(PASSWORD.into()));
        let relay = Relay::start(t)?;
        assert_front_offers_only_none(&qemu, relay.addr)?;
        assert_eq!(relay.outcome(0)?, Ok(2));
        assert_same_picture(ctx, &qemu, relay.addr, "ws")
    });
}

#[test]
fn websockify_wss_pinned_matches_direct_and_wrong_pin_fails() {
    TestContext::run("bmc_vnc_wss", |ctx| {
        let qemu = QemuVnc::start(ctx)?;
        let tls = WebsockifyOptions {
            tls: true,
            ..Default::default()
        };
        let wsk = Websockify::start(ctx, qemu.addr(), &tls)?;
        let pin = wsk.cert_sha256().context("pin")?;
        let url = format!("wss://{}/", wsk.addr());
        qemu.wait_settled(T)?;

        // No pin, no TOFU: refused before any byte is sent.
        let e = smol::block_on(connect_bmc(&target(url.clone()), T)).expect_err("unpinned");
        assert_eq!(e.code(), "bmc_tls_unpinned", "{e}");

        // Trust on first use reports the fingerprint to store.
        let mut tofu = target(url.clone());
        tofu.trust_on_first_use = true;
        let bmc = smol::block_on(connect_bmc(&tofu, T))?;
        assert_eq!(bmc.observed_cert_sha256(), Some(pin));
        drop(bmc);

        // A wrong pin: refused, the error names both fingerprints.
        let mut wrong = target(url.clone());
        let mut bad_pin = pin;
        bad_pin[0] ^= 1;
        wrong.cert_sha256 = Some(bad_pin);
        let e = smol::block_on(connect_bmc(&wrong, T)).expect_err("wrong pin accepted");
        assert_eq!(e.code(), "bmc_tls_pin_mismatch", "{e}");
        let hex: String = pin.iter().map(|b| format!("{b:02x}")).collect();
        assert!(e.to_string().contains(&hex), "{e}");
        // ... and through the relay no data flows.
        let relay = Relay::start(wrong)?;
        let mut s = std::net::TcpStream::connect(relay.addr)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let closed = read_until_closed(&mut s, T)?;
        assert!(closed.bytes().is_empty(), "data flowed: {closed:?}");
        assert_eq!(
            relay.outcome(0)?.map_err(|e| e.0),
            Err("bmc_tls_pin_mismatch".into())
        );

        // The right pin: the same picture as QEMU directly.
        let mut pinned = target(url);
        pinned.cert_sha256 = Some(pin);
        let relay = Relay::start(pinned)?;
        assert_front_offers_only_none(&qemu, relay.addr)?;
        assert_eq!(relay.outcome(0)?, Ok(1));
        assert_same_picture(ctx, &qemu, relay.addr, "wss")
    });
}

#[test]
fn unreachable_and_silent_bmcs_fail_within_the_timeout() {
    TestContext::run("bmc_vnc_unreachable", |_ctx| {
        // A port nobody listens on: refused at once.
        let closed = outband_e2e::net::free_port();
        let start = Instant::now();
        let e = smol::block_on(connect_bmc(
            &target(format!("vnc://127.0.0.1:{closed}")),
            Duration::from_secs(3),
        ))
        .expect_err("connected to a closed port");
        assert_eq!(e.code(), "bmc_unreachable", "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains(&closed.to_string()), "{e}");

        // A listener that accepts and never speaks: the deadline names the phase.
        let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        for url in [
            format!("vnc://{}", silent.local_addr()?),
            format!("ws://{}/", silent.local_addr()?),
        ] {
            let start = Instant::now();
            let e = smol::block_on(connect_bmc(
                &target(url.clone()),
                Duration::from_millis(700),
            ))
            .expect_err("silent BMC");
            let took = start.elapsed();
            assert_eq!(e.code(), "bmc_timeout", "{url}: {e}");
            assert!(
                took >= Duration::from_millis(700) && took < Duration::from_secs(3),
                "{url}: {took:?}"
            );
            let phase = if url.starts_with("ws") {
                "WebSocket"
            } else {
                "RFB"
            };
            assert!(e.to_string().contains(phase), "{url}: {e}");
        }
        Ok(())
    });
}

/// A TCP "host serial port": prints a banner, then echoes.
fn banner_echo_server() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { break };
            std::thread::spawn(move || {
                let _ = c.write_all(b"\r\nDebian GNU/Linux 12 bmc-host ttyS0\r\nlogin: ");
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

#[test]
fn serial_over_websockify_tls_with_auth_header() {
    TestContext::run("bmc_serial_ws", |ctx| {
        let serial = banner_echo_server()?;
        let opts = WebsockifyOptions {
            tls: true,
            basic_auth: Some("operator:s3cret".into()),
        };
        let wsk = Websockify::start(ctx, serial, &opts)?;
        let pin = wsk.cert_sha256().context("pin")?;
        let url = format!("wss://{}/console0", wsk.addr());
        // base64("operator:s3cret")
        let good = ("Authorization", "Basic b3BlcmF0b3I6czNjcmV0");

        smol::block_on(async {
            let mut con = connect_serial_ws(&url, Some(good), Some(pin), T).await?;
            assert_eq!(con.observed_cert_sha256(), Some(pin));
            let banner = read_until(&mut con, b"login: ").await?;
            assert!(banner.ends_with(b"ttyS0\r\nlogin: "), "{banner:?}");
            let line = b"root\r\n".repeat(1000);
            con.write_all(&line).await?;
            con.flush().await?;
            let echoed = read_exactly(&mut con, line.len()).await?;
            assert_eq!(echoed, line);
            anyhow::Ok(())
        })?;

        // Wrong credentials: websockify answers 401.
        let bad = ("Authorization", "Basic b3BlcmF0b3I6d3Jvbmc=");
        let e = smol::block_on(connect_serial_ws(&url, Some(bad), Some(pin), T))
            .expect_err("wrong credentials accepted");
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");
        assert!(e.to_string().contains("401"), "{e}");
        let e = smol::block_on(connect_serial_ws(&url, None, Some(pin), T))
            .expect_err("no credentials accepted");
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");

        // Wrong pin and no pin.
        let mut bad_pin = pin;
        bad_pin[31] ^= 0x80;
        let e = smol::block_on(connect_serial_ws(&url, Some(good), Some(bad_pin), T))
            .expect_err("wrong pin accepted");
        assert_eq!(e.code(), "bmc_tls_pin_mismatch", "{e}");
        let e = smol::block_on(connect_serial_ws(&url, Some(good), None, T))
            .expect_err("unpinned accepted");
        assert_eq!(e.code(), "bmc_tls_unpinned", "{e}");
        Ok(())
    });
}

async fn read_until(
    r: &mut (impl futures_lite::AsyncRead + Unpin),
    end: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + T;
    while !got.ends_with(end) {
        anyhow::ensure!(Instant::now() < deadline, "timed out, got {got:?}");
        let n = futures_lite::future::or(r.read(&mut buf), async {
            smol::Timer::after(T).await;
            Err(std::io::ErrorKind::TimedOut.into())
        })
        .await?;
        anyhow::ensure!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

async fn read_exactly(
    r: &mut (impl futures_lite::AsyncRead + Unpin),
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut got = vec![0u8; len];
    futures_lite::future::or(async { r.read_exact(&mut got).await }, async {
        smol::Timer::after(T).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
    .context("read echo")?;
    Ok(got)
}

/// Runs a command to completion, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() >= deadline {
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
