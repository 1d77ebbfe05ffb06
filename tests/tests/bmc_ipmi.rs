//! outband-ipmi against real BMCs: OpenIPMI `ipmi_sim` and pyghmi's `Bmc`, each a
//! separate process on loopback, with every state change cross-checked by the
//! reference client `ipmitool` (or the simulator's own action log).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use outband_e2e::TestContext;
use outband_e2e::ipmi_sim::{IpmiSim, PASSWORD, USER, ipmitool};
use outband_e2e::pyghmi::PyghmiBmc;
use outband_e2e::wait::{wait_for, wait_until};
use outband_ipmi::{BootDevice, ChassisAction, Credentials, ErrorKind, Options, Session, Sol};

fn creds() -> Credentials {
    Credentials::new(USER, PASSWORD)
}

fn opts() -> Options {
    Options {
        timeout: Duration::from_millis(500),
        retries: 2,
        ..Options::default()
    }
}

fn open(addr: SocketAddr, o: &Options) -> anyhow::Result<Session> {
    smol::block_on(Session::open(addr, &creds(), o))
        .with_context(|| format!("open session with {addr}"))
}

fn power_status(port: u16) -> anyhow::Result<String> {
    Ok(ipmitool(port, &["chassis", "power", "status"])?
        .trim()
        .to_owned())
}

/// Reads SOL output until `want` has been seen (or fails after `timeout`).
fn sol_read_until(sol: &mut Sol, want: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(want.len()).any(|w| w == want) {
        ensure!(
            Instant::now() < deadline,
            "SOL: {:?} not seen within {timeout:?}; got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        );
        let n = smol::block_on(async {
            futures_lite::future::or(async { sol.read(&mut buf).await.map(Some) }, async {
                smol::Timer::at(deadline).await;
                Ok(None)
            })
            .await
        })?;
        match n {
            Some(0) => anyhow::bail!("SOL deactivated by the BMC"),
            Some(n) => got.extend_from_slice(&buf[..n]),
            None => {}
        }
    }
    Ok(got)
}

#[test]
fn ipmi_sim_power_control_cross_checked_with_ipmitool() {
    TestContext::run("ipmi_sim_power", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        // Default options prefer suite 17: ipmi_sim does not answer Get Channel Cipher
        // Suites and refuses 17, so the client must end up on 3.
        let mut s = open(sim.addr(), &opts())?;
        ensure!(
            s.cipher_suite() == 3,
            "negotiated suite {}",
            s.cipher_suite()
        );
        ensure!(power_status(sim.port())? == "Chassis Power is off");
        smol::block_on(async {
            ensure!(!s.chassis_status().await?.power_on);
            s.chassis_control(ChassisAction::PowerOn).await?;
            anyhow::Ok(())
        })?;
        ensure!(sim.power_on(), "chassis.sh did not record power on");
        ensure!(power_status(sim.port())? == "Chassis Power is on");
        smol::block_on(async {
            ensure!(s.chassis_status().await?.power_on);
            s.chassis_control(ChassisAction::PowerOff).await?;
            anyhow::Ok(())
        })?;
        ensure!(power_status(sim.port())? == "Chassis Power is off");
        // ipmitool changes it; we see it.
        ipmitool(sim.port(), &["chassis", "power", "on"])?;
        ensure!(smol::block_on(s.chassis_status())?.power_on);
        smol::block_on(async {
            s.chassis_control(ChassisAction::PowerCycle).await?;
            s.chassis_control(ChassisAction::HardReset).await?;
            s.chassis_control(ChassisAction::SoftShutdown).await?;
            anyhow::Ok(())
        })?;
        let actions = sim.actions();
        ensure!(
            actions.contains("reset 1"),
            "no hard reset in chassis.sh log:\n{actions}"
        );
        ensure!(
            power_status(sim.port())? == "Chassis Power is off",
            "after soft shutdown; chassis.sh log:\n{actions}"
        );
        smol::block_on(s.close())?;
        Ok(())
    })
}

#[test]
fn ipmi_sim_device_id_and_session_reuse() {
    TestContext::run("ipmi_sim_device_id", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let mut o = opts();
        o.cipher_suites = vec![3];
        let mut s = open(sim.addr(), &o)?;
        smol::block_on(async {
            let id = s.device_id().await?;
            // From the emulator file: mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
            ensure!(
                id.manufacturer_id == 0x1291 && id.product_id == 0x0f02,
                "{id:?}"
            );
            ensure!((id.firmware_major, id.firmware_minor) == (9, 8), "{id:?}");
            ensure!(id.ipmi_version == (2, 0), "{id:?}");
            // Many commands on one session: sequence numbers and rqSeq wrap (64).
            for _ in 0..150 {
                ensure!(!s.chassis_status().await?.power_on);
            }
            s.close().await?;
            anyhow::Ok(())
        })?;
        let mc = ipmitool(sim.port(), &["mc", "info"])?;
        ensure!(mc.contains("Firmware Revision         : 9.08"), "{mc}");
        Ok(())
    })
}

#[test]
fn ipmi_sim_boot_options_unsupported_gives_bmc_error() {
    TestContext::run("ipmi_sim_boot", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let mut s = open(sim.addr(), &opts())?;
        // ipmi_sim 2.0.33 takes Set System Boot Options but cannot read boot flags
        // back: completion code 0xff, for ipmitool too.
        smol::block_on(s.set_boot_device(BootDevice::Pxe, false))?;
        let e = smol::block_on(s.boot_device()).unwrap_err();
        ensure!(
            e.kind()
                == ErrorKind::Bmc {
                    completion_code: 0xff
                },
            "{e}"
        );
        ensure!(e.code() == "bmc_error");
        ensure!(ipmitool(sim.port(), &["chassis", "bootparam", "get", "5"]).is_err());
        // The session survives a failed command.
        ensure!(!smol::block_on(s.chassis_status())?.power_on);
        smol::block_on(s.close())?;
        Ok(())
    })
}

#[test]
fn ipmi_sim_sol_round_trip() {
    TestContext::run("ipmi_sim_sol", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        for round in 0..2 {
            // Twice: the first close must free the SOL payload on the BMC. (ipmi_sim
            // connects to the backend at start-up, so the backend's banner is gone
            // by then; the echo shows both directions.)
            let s = open(sim.addr(), &opts())?;
            let mut sol = smol::block_on(s.sol()).context("activate SOL")?;
            let line = format!("hello outband {round} {}\r\n", "x".repeat(600));
            smol::block_on(sol.write_all(line.as_bytes()))?;
            smol::block_on(sol.flush())?;
            sol_read_until(&mut sol, line.as_bytes(), Duration::from_secs(10))?;
            smol::block_on(sol.send_break())?;
            smol::block_on(sol.close()).context("deactivate SOL")?;
        }
        Ok(())
    })
}

#[test]
fn ipmi_sim_wrong_password_and_user_fail_fast() {
    TestContext::run("ipmi_sim_auth", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        for (user, pass) in [(USER, "wrong"), ("nobody", PASSWORD)] {
            let t = Instant::now();
            let e = smol::block_on(Session::open(
                sim.addr(),
                &Credentials::new(user, pass),
                &opts(),
            ))
            .unwrap_err();
            ensure!(e.kind() == ErrorKind::AuthFailed, "{user}: {e}");
            ensure!(e.code() == "bmc_auth_failed");
            ensure!(
                t.elapsed() < Duration::from_secs(1),
                "took {:?}",
                t.elapsed()
            );
            ensure!(
                !e.to_string().contains(pass) || pass == PASSWORD,
                "password in error"
            );
        }
        // The BMC still works for the right password.
        let s = open(sim.addr(), &opts())?;
        smol::block_on(s.close())?;
        Ok(())
    })
}

#[test]
fn closed_port_fails_within_the_timeout() {
    TestContext::run("ipmi_closed_port", |_ctx| {
        // A port nobody listens on: loopback answers with ICMP port unreachable.
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        let o = opts();
        let t = Instant::now();
        let e = smol::block_on(Session::open(addr, &creds(), &o)).unwrap_err();
        ensure!(
            matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Timeout),
            "{e}"
        );
        ensure!(
            t.elapsed() <= o.timeout * (o.retries + 1) + Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
        // A bound socket that never answers: a timeout, within the configured bound.
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let t = Instant::now();
        let e = smol::block_on(Session::open(silent.local_addr()?, &creds(), &o)).unwrap_err();
        ensure!(
            e.kind() == ErrorKind::Timeout && e.code() == "bmc_timeout",
            "{e}"
        );
        let took = t.elapsed();
        ensure!(
            took >= o.timeout * (o.retries + 1)
                && took <= o.timeout * (o.retries + 1) + Duration::from_millis(500),
            "took {took:?}"
        );
        Ok(())
    })
}

#[test]
fn pyghmi_power_and_boot_cross_checked_with_ipmitool() {
    TestContext::run("pyghmi_power_boot", |ctx| {
        let bmc = PyghmiBmc::start(ctx)?;
        // pyghmi answers Get Channel Cipher Suites (suite 3 only).
        let mut s = open(bmc.addr(), &opts())?;
        ensure!(s.cipher_suite() == 3);
        smol::block_on(async {
            ensure!(!s.chassis_status().await?.power_on);
            s.chassis_control(ChassisAction::PowerOn).await?;
            anyhow::Ok(())
        })?;
        ensure!(power_status(bmc.port())? == "Chassis Power is on");
        smol::block_on(s.chassis_control(ChassisAction::PowerOff))?;
        ensure!(power_status(bmc.port())? == "Chassis Power is off");
        smol::block_on(async {
            s.chassis_control(ChassisAction::PowerCycle).await?;
            s.chassis_control(ChassisAction::HardReset).await?;
            s.chassis_control(ChassisAction::SoftShutdown).await?;
            anyhow::Ok(())
        })?;
        let actions = bmc.actions();
        ensure!(
            actions.lines().collect::<Vec<_>>() == ["on", "off", "cycle", "reset", "soft"],
            "{actions}"
        );
        for (dev, ipmitool_says) in [
            (BootDevice::Pxe, "Force PXE"),
            (BootDevice::Disk, "Force Boot from default Hard-Drive"),
            (BootDevice::BiosSetup, "Force Boot into BIOS Setup"),
        ] {
            smol::block_on(s.set_boot_device(dev, false))?;
            let out = ipmitool(bmc.port(), &["chassis", "bootparam", "get", "5"])?;
            ensure!(out.contains(ipmitool_says), "{dev:?}: {out}");
            let (got, _persistent) = smol::block_on(s.boot_device())?;
            ensure!(got == dev, "read back {got:?}, set {dev:?}");
        }
        // And the other way: ipmitool sets, we read.
        ipmitool(bmc.port(), &["chassis", "bootdev", "pxe"])?;
        ensure!(smol::block_on(s.boot_device())?.0 == BootDevice::Pxe);
        smol::block_on(s.close())?;
        Ok(())
    })
}

#[test]
fn pyghmi_sol_echo_and_wrong_password() {
    TestContext::run("pyghmi_sol", |ctx| {
        let mut bmc = PyghmiBmc::start(ctx)?;
        let s = open(bmc.addr(), &opts())?;
        let mut sol = smol::block_on(s.sol())?;
        let text = b"typed on the console\r\n";
        smol::block_on(sol.write_all(text))?;
        sol_read_until(&mut sol, text, Duration::from_secs(10))?;
        smol::block_on(sol.close())?;
        let t = Instant::now();
        let e = smol::block_on(Session::open(
            bmc.addr(),
            &Credentials::new(USER, "nope"),
            &opts(),
        ))
        .unwrap_err();
        ensure!(e.kind() == ErrorKind::AuthFailed, "{e}");
        ensure!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        ensure!(bmc.proc_mut().is_running(), "pyghmi died");
        Ok(())
    })
}

#[test]
fn ipmi_sim_sol_relay_and_dead_bmc_detected() {
    TestContext::run("ipmi_sim_sol_relay", |ctx| {
        let mut sim = IpmiSim::start(ctx)?;
        // relay(): a TCP client on one side, SOL (echoed by the backend) on the other.
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let front = listener.local_addr()?;
        let s = open(sim.addr(), &opts())?;
        let sol = smol::block_on(s.sol())?;
        let relay = std::thread::spawn(move || {
            smol::block_on(async {
                let (stream, _) = smol::net::TcpListener::try_from(listener)?.accept().await?;
                sol.relay(stream).await.map_err(anyhow::Error::from)
            })
        });
        let mut client = std::net::TcpStream::connect(front)?;
        client.set_read_timeout(Some(Duration::from_secs(10)))?;
        let line = b"through the relay\r\n";
        std::io::Write::write_all(&mut client, line)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(line.len()).any(|w| w == line) {
            let n = std::io::Read::read(&mut client, &mut buf)?;
            ensure!(
                n > 0,
                "relay closed early; got {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        // Closing the client ends the relay, which deactivates SOL and closes.
        drop(client);
        relay
            .join()
            .map_err(|_| anyhow::anyhow!("relay thread panicked"))??;

        // A BMC that freezes while SOL is idle: the keepalive notices, the pending
        // read fails with a timeout instead of waiting forever.
        let mut o = opts();
        o.keepalive = Duration::from_millis(300);
        let s = open(sim.addr(), &o)?;
        let mut sol = smol::block_on(s.sol())?;
        sim.proc_mut().stop()?;
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let r = smol::block_on(sol.read(&mut buf));
        let took = t.elapsed();
        sim.proc_mut().cont()?;
        let e = r.err().context("read from a frozen BMC returned data")?;
        ensure!(e.kind() == ErrorKind::Timeout, "{e}");
        ensure!(
            took < o.keepalive + o.timeout * (o.retries + 1) + Duration::from_secs(1),
            "took {took:?}"
        );
        Ok(())
    })
}

#[test]
fn ipmi_sim_drives_a_real_qemu_power_and_sol() {
    TestContext::run("ipmi_sim_qemu", |ctx| {
        let sim = IpmiSim::start_with_qemu(ctx)?;
        let mut o = opts();
        o.cipher_suites = vec![3];
        let mut power = open(sim.addr(), &o)?;
        ensure!(sim.qemu_pid().is_none(), "QEMU runs before power on");
        ensure!(
            !smol::block_on(power.chassis_status())?.power_on,
            "the chassis reports power on before the first power on"
        );

        smol::block_on(power.chassis_control(ChassisAction::PowerOn))?;
        let pid = wait_for("QEMU started by power on", Duration::from_secs(15), || {
            sim.qemu_pid()
        })?;
        ensure!(power_status(sim.port())? == "Chassis Power is on");

        // SOL on a second session carries the guest's serial port: SeaBIOS, which
        // reboots every 3 s (no disk) and prints its banner each time.
        let mut sol = smol::block_on(open(sim.addr(), &o)?.sol())?;
        let text = sol_read_until(&mut sol, b"No bootable device", Duration::from_secs(20))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        sol_read_until(&mut sol, b"SeaBIOS", Duration::from_secs(20)).context(text)?;
        // A hard reset is accepted and keeps the same VM process.
        smol::block_on(power.chassis_control(ChassisAction::HardReset))?;
        ensure!(
            sim.qemu_pid() == Some(pid),
            "reset must not restart the process"
        );
        smol::block_on(sol.close())?;

        // Power cycle: a new QEMU process.
        smol::block_on(power.chassis_control(ChassisAction::PowerCycle))?;
        wait_until(
            "a new QEMU after power cycle",
            Duration::from_secs(20),
            || sim.qemu_pid().is_some_and(|p| p != pid),
        )?;
        // Power off kills it; ipmitool agrees.
        smol::block_on(power.chassis_control(ChassisAction::PowerOff))?;
        wait_until("QEMU gone after power off", Duration::from_secs(15), || {
            sim.qemu_pid().is_none()
        })?;
        // ipmi_sim learns that the VM is gone when its connection to QEMU's BMC device
        // closes, a moment after the process: poll (a loaded CI machine lags).
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while smol::block_on(power.chassis_status())?.power_on {
            ensure!(
                std::time::Instant::now() < deadline,
                "chassis still reports power on 15 s after QEMU exited"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(power_status(sim.port())? == "Chassis Power is off");
        smol::block_on(power.close())?;
        Ok(())
    })
}

/// `ipmitool -I lan` (IPMI 1.5, MD5) against `port`.
fn ipmitool_lan(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("timeout")
        .args([
            "20",
            "ipmitool",
            "-I",
            "lan",
            "-A",
            "MD5",
            "-H",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(["-U", USER, "-P", PASSWORD, "-R", "2", "-N", "2"])
        .args(args)
        .output()
        .context("run ipmitool -I lan")?;
    ensure!(
        out.status.success(),
        "ipmitool -I lan {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn opts15() -> Options {
    Options {
        allow_ipmi15: true,
        force_ipmi15: true,
        ..opts()
    }
}

#[test]
fn ipmi_sim_ipmi15_forced_power_cross_checked_with_ipmitool_lan() {
    TestContext::run("ipmi_sim_ipmi15", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        let mut s = open(sim.addr(), &opts15())?;
        ensure!(
            s.ipmi15() == Some(outband_ipmi::v15::AuthType::Md5),
            "auth {:?}",
            s.ipmi15()
        );
        ensure!(s.cipher_suite() == 0);
        ensure!(
            ipmitool_lan(sim.port(), &["chassis", "power", "status"])? == "Chassis Power is off"
        );
        smol::block_on(async {
            let id = s.device_id().await?;
            ensure!(
                id.manufacturer_id == 0x1291 && id.product_id == 0x0f02,
                "{id:?}"
            );
            // Sequence numbers and rqSeq wrap (64) on a 1.5 session too.
            for _ in 0..100 {
                ensure!(!s.chassis_status().await?.power_on);
            }
            ensure!(!s.chassis_status().await?.power_on);
            s.chassis_control(ChassisAction::PowerOn).await?;
            anyhow::Ok(())
        })?;
        ensure!(sim.power_on(), "chassis.sh did not record power on");
        ensure!(
            ipmitool_lan(sim.port(), &["chassis", "power", "status"])? == "Chassis Power is on"
        );
        smol::block_on(async {
            ensure!(s.chassis_status().await?.power_on);
            s.chassis_control(ChassisAction::PowerOff).await?;
            anyhow::Ok(())
        })?;
        ensure!(
            ipmitool_lan(sim.port(), &["chassis", "power", "status"])? == "Chassis Power is off"
        );
        // ipmitool changes it over 1.5; our 1.5 session sees it.
        ipmitool_lan(sim.port(), &["chassis", "power", "on"])?;
        ensure!(smol::block_on(s.chassis_status())?.power_on);
        smol::block_on(s.close())?;

        // No SOL over IPMI 1.5.
        let s = open(sim.addr(), &opts15())?;
        let e = smol::block_on(s.sol())
            .err()
            .context("SOL over IPMI 1.5 accepted")?;
        ensure!(e.kind() == ErrorKind::Unsupported, "{e}");

        // The opt-in alone does not downgrade a BMC that offers IPMI 2.0.
        let o = Options {
            allow_ipmi15: true,
            ..opts()
        };
        let s = open(sim.addr(), &o)?;
        ensure!(s.ipmi15().is_none() && s.cipher_suite() == 3);
        smol::block_on(s.close())?;
        Ok(())
    })
}

#[test]
fn ipmi_sim_ipmi15_wrong_password_fails_fast() {
    TestContext::run("ipmi_sim_ipmi15_auth", |ctx| {
        let sim = IpmiSim::start(ctx)?;
        // An IPMI 1.5 BMC does not answer an Activate Session with a wrong AuthCode:
        // the client reports AuthFailed once that step's time is up (250 ms x 3).
        let o = Options {
            timeout: Duration::from_millis(250),
            ..opts15()
        };
        let t = Instant::now();
        let e = smol::block_on(Session::open(
            sim.addr(),
            &Credentials::new(USER, "Not-The-Pw-42"),
            &o,
        ))
        .err()
        .context("wrong password accepted over IPMI 1.5")?;
        ensure!(e.kind() == ErrorKind::AuthFailed, "{e}");
        // 750 ms for the step, plus slack for a loaded machine.
        ensure!(
            t.elapsed() < Duration::from_millis(1250),
            "took {:?}",
            t.elapsed()
        );
        ensure!(
            !e.to_string().contains("Not-The-Pw-42"),
            "password in error: {e}"
        );
        // The right password still works afterwards.
        let s = open(sim.addr(), &opts15())?;
        ensure!(s.ipmi15().is_some());
        smol::block_on(s.close())?;
        Ok(())
    })
}
