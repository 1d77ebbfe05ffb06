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
