//! QEMU as a real VNC server: a diskless PC that shows the SeaBIOS "No bootable
//! device." screen (TCG only; KVM is not available on the test machines).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// A running QEMU whose VNC server listens on [`QemuVnc::addr`].
#[derive(Debug)]
pub struct QemuVnc {
    proc: Proc,
    addr: SocketAddr,
}

impl QemuVnc {
    /// Starts QEMU with VNC on a free display (port 5900 + display) and waits until
    /// the port accepts connections. No `reboot-timeout`: SeaBIOS halts on its last
    /// screen, so the picture stops changing (except for the blinking text cursor).
    pub fn start(ctx: &TestContext) -> anyhow::Result<QemuVnc> {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        let mut last_err = None;
        // A port that was free may be taken before QEMU binds it: try a few.
        for _ in 0..5 {
            let port = free_vnc_port()?;
            let display = port - 5900;
            let args = [
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
                format!("127.0.0.1:{display}"),
                "-nic".to_owned(),
                "none".to_owned(),
            ];
            let mut proc = Proc::spawn(ctx, "qemu", qemu, args)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let up = wait_for("QEMU VNC port", Duration::from_secs(20), || {
                if !proc.is_running() {
                    return Some(false);
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .ok()
                    .map(|_| true)
            });
            match up {
                Ok(true) => return Ok(QemuVnc { proc, addr }),
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
            let mut c = RfbClient::connect(self.addr, Duration::from_secs(5)).ok()?;
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
