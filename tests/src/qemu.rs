//! QEMU as a real VNC server: a diskless PC that shows the SeaBIOS "No bootable
//! device." screen (TCG only; KVM is not available on the test machines).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// How to start QEMU's VNC server.
#[derive(Debug, Clone, Default)]
pub struct QemuVncOptions {
    /// Require VNC Authentication with this password (`password-secret=`; only the
    /// first 8 bytes count).
    pub password: Option<String>,
    /// Also listen for RFB over WebSocket (QEMU's `websocket=` option) on a free
    /// port, see [`QemuVnc::ws_addr`].
    pub websocket: bool,
}

/// A running QEMU whose VNC server listens on [`QemuVnc::addr`].
#[derive(Debug)]
pub struct QemuVnc {
    proc: Proc,
    addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    password: Option<String>,
}

impl QemuVnc {
    /// Starts QEMU with VNC on a free display (port 5900 + display), no password, and
    /// waits until the port accepts connections. No `reboot-timeout`: SeaBIOS halts on
    /// its last screen, so the picture stops changing (except for the blinking text
    /// cursor).
    pub fn start(ctx: &TestContext) -> anyhow::Result<QemuVnc> {
        Self::start_with(ctx, &QemuVncOptions::default())
    }

    /// Starts QEMU with the given VNC options and waits until its ports accept
    /// connections.
    pub fn start_with(ctx: &TestContext, opts: &QemuVncOptions) -> anyhow::Result<QemuVnc> {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        let mut last_err = None;
        // A port that was free may be taken before QEMU binds it: try a few.
        for _ in 0..5 {
            let port = free_vnc_port()?;
            let display = port - 5900;
            let ws_addr = opts
                .websocket
                .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, crate::net::free_port())));
            let mut vnc = format!("127.0.0.1:{display}");
            if let Some(ws) = ws_addr {
                vnc.push_str(&format!(",websocket=127.0.0.1:{}", ws.port()));
            }
            let mut args = Vec::new();
            if let Some(pw) = &opts.password {
                // The test password is not a secret; a real BMC's would never be on a
                // command line.
                args.push("-object".to_owned());
                args.push(format!("secret,id=vncpw,data={pw}"));
                vnc.push_str(",password-secret=vncpw");
            }
            args.extend([
                "-machine".to_owned(),
                "pc,accel=tcg".to_owned(),
                "-display".to_owned(),
                "none".to_owned(),
                "-m".to_owned(),
                "64".to_owned(),
                "-nodefaults".to_owned(),
                "-vga".to_owned(),
                "std".to_owned(),
                "-vnc".to_owned(),
                vnc,
                "-nic".to_owned(),
                "none".to_owned(),
            ]);
            let mut proc = Proc::spawn(ctx, "qemu", qemu, args)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let up = wait_for("QEMU VNC port", Duration::from_secs(20), || {
                if !proc.is_running() {
                    return Some(false);
                }
                let ok = |a: &SocketAddr| {
                    std::net::TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok()
                };
                (ok(&addr) && ws_addr.as_ref().is_none_or(ok)).then_some(true)
            });
            match up {
                Ok(true) => {
                    return Ok(QemuVnc {
                        proc,
                        addr,
                        ws_addr,
                        password: opts.password.clone(),
                    });
                }
                Ok(false) => {
                    last_err = Some(anyhow::anyhow!("qemu exited: {}", proc.stderr()));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("qemu did not start")))
            .context("start QEMU VNC server")
    }

    /// The VNC listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket listener (QEMU's `websocket=`), if started with one.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The VNC password, if started with one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

fn free_vnc_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind")?;
        let port = l.local_addr()?.port();
        // QEMU takes a display number: 5900 + display must stay a valid port.
        if port > 5900 {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port above 5900")
}

impl QemuVnc {
    /// Waits until SeaBIOS has finished drawing: two full frames 500 ms apart have
    /// the same size and differ at most in the cursor cell, and the screen is not
    /// blank. Returns the screen size.
    pub fn wait_settled(&self, timeout: Duration) -> anyhow::Result<(u16, u16)> {
        use crate::rfb::RfbClient;
        use crate::screen::Diff;
        let mut prev: Option<crate::rfb::Framebuffer> = None;
        wait_for("QEMU's SeaBIOS screen to settle", timeout, || {
            let mut c = RfbClient::connect_with_password(
                self.addr,
                Duration::from_secs(5),
                self.password(),
            )
            .ok()?;
            let fb = c.full_frame(Duration::from_secs(5)).ok()?;
            let size = (c.width, c.height);
            let settled = match &prev {
                Some(p) if p.width == fb.width && p.height == fb.height => {
                    Diff::of(fb.width, fb.bytes_per_pixel, &p.pixels, &fb.pixels)
                        .is_ok_and(|d| d.within_cell())
                        && fb.pixels.iter().any(|&b| b != 0)
                }
                _ => false,
            };
            prev = Some(fb);
            if !settled {
                std::thread::sleep(Duration::from_millis(500));
            }
            settled.then_some(size)
        })
    }
}
