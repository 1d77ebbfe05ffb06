//! OpenIPMI `ipmi_sim` as a real IPMI 2.0 BMC: a `lan.conf` on a free UDP port, an
//! emulator commands file, a `chassis.sh` that keeps the power state in a file and
//! logs every action, and a TCP server behind SOL (a banner, then echo). Also the
//! `ipmitool` reference client used to cross-check it.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::context::TestContext;
use crate::process::Proc;
use crate::wait::wait_for;

/// User name configured on the simulated BMCs.
pub const USER: &str = "admin";
/// Password configured on the simulated BMCs.
pub const PASSWORD: &str = "password";
/// The banner the SOL backing server sends on each connection.
pub const SOL_BANNER: &[u8] = b"outband-sol-ready\r\n";

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind UDP 127.0.0.1:0")
}

/// Sends RMCP presence pings to `addr` until a pong comes back, or fails after
/// `timeout`.
pub fn wait_rmcp_pong(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    wait_for(&format!("RMCP presence pong from {addr}"), timeout, || {
        sock.send_to(&outband_ipmi::asf::presence_ping(1), addr)
            .ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        outband_ipmi::asf::parse_pong(&buf[..n]).ok()
    })
    .map(drop)
}

/// A TCP server on 127.0.0.1 that sends [`SOL_BANNER`] to each connection and echoes
/// what it receives (the serial port behind ipmi_sim's SOL). Stops on drop.
#[derive(Debug)]
pub struct SolBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SolBackend {
    /// Starts the server on a free port.
    pub fn start() -> anyhow::Result<SolBackend> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind SOL backend")?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
                            if c.write_all(SOL_BANNER).is_err() {
                                return;
                            }
                            let mut buf = [0u8; 4096];
                            while !s.load(Ordering::Relaxed) {
                                match c.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if c.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(SolBackend {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SolBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running `ipmi_sim` with user `admin`/`password` (admin privilege), cipher suites
/// 0-3 and 6 (it does not answer Get Channel Cipher Suites).
#[derive(Debug)]
pub struct IpmiSim {
    port: u16,
    dir: PathBuf,
    proc: Proc,
    sol: Option<SolBackend>,
    qemu_pidfile: Option<PathBuf>,
}

impl IpmiSim {
    /// Writes the config into `<test dir>/ipmi_sim/` and starts the simulator with a
    /// chassis script and a banner/echo server behind SOL; ready when it answers an
    /// RMCP presence ping.
    pub fn start(ctx: &TestContext) -> anyhow::Result<IpmiSim> {
        Self::launch(ctx, false)
    }

    /// Like [`start`](Self::start), but the chassis is a real QEMU (TCG, SeaBIOS, no
    /// disk, rebooting every 3 s so SeaBIOS keeps printing) that ipmi_sim starts on
    /// power on and kills on power off, connected through QEMU's `ipmi-bmc-extern`
    /// device; SOL carries the guest's serial port.
    pub fn start_with_qemu(ctx: &TestContext) -> anyhow::Result<IpmiSim> {
        Self::launch(ctx, true)
    }

    fn launch(ctx: &TestContext, qemu: bool) -> anyhow::Result<IpmiSim> {
        let dir = ctx.subdir("ipmi_sim");
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let sol = if qemu {
            None
        } else {
            Some(SolBackend::start()?)
        };
        let chassis = dir.join("chassis.sh");
        std::fs::write(
            &chassis,
            format!(
                "#!/bin/sh\n\
                 # Called by ipmi_sim: `get power` or `set power 0|1`, `set reset 1`, ...\n\
                 D='{}'\n\
                 if [ \"$1\" = get ]; then\n\
                 \x20 echo \"power:$(cat \"$D/power\" 2>/dev/null || echo 0)\"\n\
                 else\n\
                 \x20 shift\n\
                 \x20 while [ $# -ge 2 ]; do\n\
                 \x20   [ \"$1\" = power ] && echo \"$2\" > \"$D/power\"\n\
                 \x20   echo \"$1 $2\" >> \"$D/actions\"\n\
                 \x20   shift 2\n\
                 \x20 done\n\
                 fi\n",
                dir.display()
            ),
        )?;
        std::fs::set_permissions(&chassis, std::fs::Permissions::from_mode(0o755))?;
        let port = free_udp_port();
        let qemu_pidfile = qemu.then(|| dir.join("qemu.pid"));
        let chassis_lines = match (&sol, &qemu_pidfile) {
            (Some(sol), _) => format!(
                "  chassis_control \"{}\"\n  sol \"tcp:{}\" 115200\n",
                chassis.display(),
                sol.addr()
            ),
            (None, Some(pidfile)) => {
                let (vm_port, serial_port) = (crate::net::free_port(), crate::net::free_port());
                format!(
                    "  serial 15 127.0.0.1 {vm_port} codec VM\n\
                     \x20 startcmd \"qemu-system-x86_64 -machine pc,accel=tcg,graphics=off -m 64 \
                     -nodefaults -display none -nic none -boot reboot-timeout=3000 -pidfile {pidfile} \
                     -chardev socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect-ms=1000 \
                     -device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0 \
                     -chardev socket,id=s0,host=127.0.0.1,port={serial_port},server=on,wait=off \
                     -serial chardev:s0\"\n\
                     \x20 startnow false\n\
                     \x20 sol \"tcp:127.0.0.1:{serial_port}\" 115200\n",
                    pidfile = pidfile.display()
                )
            }
            (None, None) => unreachable!("either a SOL backend or QEMU"),
        };
        let conf = dir.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"simbmc\"\n\
                 set_working_mc 0x20\n\
                 \x20 startlan 1\n\
                 \x20   addr 127.0.0.1 {port}\n\
                 \x20   priv_limit admin\n\
                 \x20   allowed_auths_callback none md2 md5 straight\n\
                 \x20   allowed_auths_user none md2 md5 straight\n\
                 \x20   allowed_auths_operator none md2 md5 straight\n\
                 \x20   allowed_auths_admin none md2 md5 straight\n\
                 \x20   guid a123456789abcdefa123456789abcdef\n\
                 \x20 endlan\n\
                 {chassis_lines}\
                 \x20 user 1 true  \"\"      \"test\"     user  10  none md2 md5 straight\n\
                 \x20 user 2 true  \"{USER}\" \"{PASSWORD}\" admin 10  none md2 md5 straight\n"
            ),
        )?;
        let emu = dir.join("sim.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )?;
        let proc = Proc::spawn(
            ctx,
            "ipmi_sim",
            Path::new("/usr/bin/ipmi_sim"),
            [
                "-c".as_ref(),
                conf.as_os_str(),
                "-f".as_ref(),
                emu.as_os_str(),
                "-s".as_ref(),
                state.as_os_str(),
                "-n".as_ref(),
            ],
        )?;
        let sim = IpmiSim {
            port,
            dir,
            proc,
            sol,
            qemu_pidfile,
        };
        wait_rmcp_pong(sim.addr(), Duration::from_secs(10))?;
        Ok(sim)
    }

    /// The BMC's UDP address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP server behind SOL (not with QEMU).
    pub fn sol_backend(&self) -> Option<&SolBackend> {
        self.sol.as_ref()
    }

    /// The pid of the QEMU that ipmi_sim started, while it runs.
    pub fn qemu_pid(&self) -> Option<i32> {
        let pidfile = self.qemu_pidfile.as_ref()?;
        let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        // Check it is still our QEMU (the pid file may be stale, the pid reused).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let marker = pidfile.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(marker.as_ref())
            .then_some(pid)
    }

    /// The power state chassis.sh keeps (false until first powered on).
    pub fn power_on(&self) -> bool {
        std::fs::read_to_string(self.dir.join("power")).is_ok_and(|s| s.trim() == "1")
    }

    /// Every `set` chassis.sh was called with, one "NAME VALUE" per line.
    pub fn actions(&self) -> String {
        std::fs::read_to_string(self.dir.join("actions")).unwrap_or_default()
    }

    /// The simulator process.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        // ipmi_sim starts QEMU in a session of its own: it outlives ipmi_sim.
        if let Some(pid) = self.qemu_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs `ipmitool -I lanplus -C 3 -H 127.0.0.1 -p PORT -U admin -P password ARGS`
/// with a 20 s limit and returns its stdout; fails with its stderr if it fails.
pub fn ipmitool(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let port_s = port.to_string();
    let out = Command::new("timeout")
        .args([
            "20",
            "ipmitool",
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            "127.0.0.1",
            "-p",
        ])
        .arg(&port_s)
        .args(["-U", USER, "-P", PASSWORD, "-R", "2", "-N", "2"])
        .args(args)
        .output()
        .context("run ipmitool")?;
    if !out.status.success() {
        anyhow::bail!(
            "ipmitool {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
