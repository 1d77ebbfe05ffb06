//! Power-status latency against a real OpenIPMI `ipmi_sim` on loopback:
//! this crate with session reuse, this crate opening + querying + closing a session
//! each time, and `ipmitool -I lanplus -C 3 ... chassis power status` as a whole
//! process each time. Prints the means and the ratios.
//!
//! `cargo bench -p outband-ipmi --bench power_status` (needs `ipmi_sim` and
//! `ipmitool`; skips with a message when they are missing).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outband_ipmi::{Credentials, Options, Session};

struct Sim {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_sim() -> (Sim, u16) {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("outband-ipmi-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("state")).expect("temp dir");
    std::fs::write(
        dir.join("lan.conf"),
        format!(
            "name \"simbmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  user 2 true \"admin\" \"password\" admin 10 none md2 md5 straight\n"
        ),
    )
    .expect("lan.conf");
    std::fs::write(
        dir.join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .expect("sim.emu");
    let child = Command::new("ipmi_sim")
        .arg("-c")
        .arg(dir.join("lan.conf"))
        .arg("-f")
        .arg(dir.join("sim.emu"))
        .arg("-s")
        .arg(dir.join("state"))
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ipmi_sim");
    let sim = Sim { child, dir };
    // Ready when it answers a presence ping.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "ipmi_sim did not come up");
        let _ = sock.send_to(
            &outband_ipmi::asf::presence_ping(1),
            (Ipv4Addr::LOCALHOST, port),
        );
        let mut buf = [0u8; 64];
        if let Ok(n) = sock.recv(&mut buf)
            && outband_ipmi::asf::parse_pong(&buf[..n]).is_ok()
        {
            break;
        }
    }
    (sim, port)
}

fn mean(total: Duration, n: u32) -> Duration {
    total / n
}

fn main() {
    if !Path::new("/usr/bin/ipmi_sim").exists() || !Path::new("/usr/bin/ipmitool").exists() {
        eprintln!("power_status bench skipped: ipmi_sim or ipmitool not installed");
        return;
    }
    let (_sim, port) = start_sim();
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let creds = Credentials::new("admin", "password");
    let opts3 = Options {
        cipher_suites: vec![3],
        ..Options::default()
    };

    // Warm up (first ipmi_sim answers, page cache for ipmitool).
    smol::block_on(async {
        let mut s = Session::open(addr, &creds, &opts3).await.expect("open");
        s.chassis_status().await.expect("status");
        s.close().await.expect("close");
    });

    let n_reuse = 500;
    let reuse = smol::block_on(async {
        let mut s = Session::open(addr, &creds, &opts3).await.expect("open");
        let t = Instant::now();
        for _ in 0..n_reuse {
            s.chassis_status().await.expect("status");
        }
        let d = t.elapsed();
        s.close().await.expect("close");
        d
    });

    let n_whole = 100;
    let whole = smol::block_on(async {
        let t = Instant::now();
        for _ in 0..n_whole {
            let mut s = Session::open(addr, &creds, &opts3).await.expect("open");
            s.chassis_status().await.expect("status");
            s.close().await.expect("close");
        }
        t.elapsed()
    });

    let n_tool = 30;
    let port_s = port.to_string();
    let t = Instant::now();
    for _ in 0..n_tool {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", &port_s])
            .args([
                "-U", "admin", "-P", "password", "chassis", "power", "status",
            ])
            .output()
            .expect("run ipmitool");
        assert!(out.status.success(), "ipmitool failed");
    }
    let tool = t.elapsed();

    let (r, w, i) = (
        mean(reuse, n_reuse),
        mean(whole, n_whole),
        mean(tool, n_tool),
    );
    println!("power status against ipmi_sim on loopback (cipher suite 3):");
    println!("  outband-ipmi, session reused:          {r:>10.1?} per status ({n_reuse} runs)");
    println!("  outband-ipmi, open+status+close:       {w:>10.1?} per status ({n_whole} runs)");
    println!("  ipmitool whole process:                {i:>10.1?} per status ({n_tool} runs)");
    println!(
        "  ratios: ipmitool / reused = {:.1}x, ipmitool / open+status+close = {:.1}x",
        i.as_secs_f64() / r.as_secs_f64(),
        i.as_secs_f64() / w.as_secs_f64()
    );
}
