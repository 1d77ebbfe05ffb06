//! The agent's BMC discovery scan on a loopback range against real peers: OpenIPMI
//! `ipmi_sim` answering the RMCP presence ping, sushy-tools serving a Redfish root.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use outband_agent::discovery::{Found, ScanConfig, scan};
use outband_e2e::sushy::{Sushy, SushyOptions};
use outband_e2e::wait::wait_for;
use outband_e2e::{Proc, TestContext};
use outband_redfish::Fingerprint;

/// ipmi_sim with just a LAN channel on `port` (presence pongs need no more).
fn start_ipmi_sim(ctx: &TestContext, port: u16) -> anyhow::Result<Proc> {
    let dir = ctx.subdir("ipmi_sim");
    let lan = format!(
        "name \"simbmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n\
         \x20   priv_limit admin\n    allowed_auths_admin none md2 md5 straight\n\
         \x20   guid a123456789abcdefa123456789abcdef\n  endlan\n\
         \x20 user 2 true \"admin\" \"password\" admin 10 none md2 md5 straight\n"
    );
    std::fs::write(dir.join("lan.conf"), lan)?;
    std::fs::write(
        dir.join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
    )?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let (lan, emu) = (dir.join("lan.conf"), dir.join("sim.emu"));
    let args = [
        "-c".as_ref(),
        lan.as_os_str(),
        "-f".as_ref(),
        emu.as_os_str(),
        "-s".as_ref(),
        state.as_os_str(),
        "-n".as_ref(),
    ];
    let proc = Proc::spawn(ctx, "ipmi_sim", Path::new("/usr/bin/ipmi_sim"), args)?;
    // Up when it answers a ping.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    wait_for("ipmi_sim presence pong", Duration::from_secs(10), || {
        sock.send_to(
            &outband_ipmi::asf::presence_ping(0),
            (Ipv4Addr::LOCALHOST, port),
        )
        .ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        outband_ipmi::asf::parse_pong(buf.get(..n)?).ok()
    })?;
    Ok(proc)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind UDP 127.0.0.1:0")
}

#[test]
fn scan_finds_ipmi_sim_and_sushy_on_a_loopback_range() {
    TestContext::run("discovery_scan", |ctx| {
        let ipmi_port = free_udp_port();
        let _ipmi = start_ipmi_sim(ctx, ipmi_port)?;
        let sushy = Sushy::start(ctx, &SushyOptions::default())?;
        let baseline = sushy.settle_log()?.len();
        let cfg = ScanConfig {
            // 127.0.0.1 ..= 127.0.0.6; both peers listen on 127.0.0.1 only.
            ranges: vec!["127.0.0.0/29".parse()?],
            ipmi_port,
            redfish_port: sushy.port(),
            rate: 20,
            burst: 1,
            ping_grace: Duration::from_millis(500),
            redfish_timeout: Duration::from_secs(3),
            redfish_concurrency: 4,
        };
        let start = Instant::now();
        let found = outband_agent::rt::block_on(scan(&cfg))?;
        let took = start.elapsed();
        let local = |port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            found.iter().cloned().collect::<BTreeSet<_>>(),
            [
                Found::Redfish {
                    addr: local(sushy.port()),
                    fingerprint: Some(Fingerprint::of_der(sushy.cert_der()).to_string()),
                },
                Found::Ipmi {
                    addr: local(ipmi_port),
                    ipmi: true,
                },
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
        );
        assert_eq!(found.len(), 2, "{found:?}");
        // 12 probes at 20/s with a burst of 1: at least 11 intervals of 50 ms.
        assert!(took >= Duration::from_millis(550), "{took:?}");
        // The probe read the service root once, without credentials (sushy would log
        // a 401 for any other resource read without them).
        let log = sushy.settle_log()?;
        let probe_lines: Vec<_> = log.iter().skip(baseline).collect();
        assert_eq!(
            probe_lines.len(),
            2,
            "the scan's probe and the marker: {log:?}"
        );
        assert!(
            probe_lines
                .iter()
                .all(|l| l.contains("\"GET /redfish/v1/ HTTP/1.1\" 200")),
            "{log:?}"
        );
        Ok(())
    });
}

#[test]
fn scan_of_an_empty_range_finds_nothing_and_ends() {
    TestContext::run("discovery_empty", |_ctx| {
        let cfg = ScanConfig {
            ranges: vec!["127.0.0.8/30".parse()?],
            ipmi_port: free_udp_port(),
            redfish_port: outband_e2e::net::free_port(),
            rate: 100,
            ping_grace: Duration::from_millis(300),
            redfish_timeout: Duration::from_secs(2),
            ..ScanConfig::default()
        };
        let start = Instant::now();
        let found = outband_agent::rt::block_on(scan(&cfg))?;
        assert!(found.is_empty(), "{found:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    });
}
