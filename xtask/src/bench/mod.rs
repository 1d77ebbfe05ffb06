//! `cargo xtask bench`: the tunnel measured against baselines from the same run.
//!
//! Topology (all loopback, separate processes): client → gateway relay port →
//! gateway → TLS agent connection → agent → target server. Baselines: the client
//! straight to the target; one direct rustls TLS connection. Figures are printed as
//! a table; ratios matter, absolute numbers depend on the machine.

pub mod ab;
mod net;
mod procs;
mod swarm;
mod tls_baseline;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{cargo, dist, target_dir};
pub(crate) use net::pct;

struct Report(String);

impl Report {
    fn row(&mut self, name: &str, tunnel: String, baseline: String, ratio: String, goal: &str) {
        let line = format!("| {name} | {tunnel} | {baseline} | {ratio} | {goal} |");
        println!("{line}");
        let _ = writeln!(self.0, "{line}");
    }
}

/// The sections of the run, for `--only a,b`.
pub const SECTIONS: &[&str] = &[
    "bulk", "pingpong", "reqresp", "probe", "wan", "connect", "agent", "swarm",
];

pub fn run(quick: bool, only: Option<&str>) -> Result<()> {
    let want = |section: &str| only.is_none_or(|o| o.split(',').any(|s| s == section));
    if let Some(o) = only
        && let Some(bad) = o.split(',').find(|s| !SECTIONS.contains(s))
    {
        anyhow::bail!(
            "unknown bench section {bad:?}; sections: {}",
            SECTIONS.join(", ")
        );
    }
    cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "outband-gateway",
        "-p",
        "outband-agent",
    ])?;
    let static_target = "x86_64-unknown-linux-musl";
    dist::build(static_target)?;
    let gateway_bin = target_dir().join("release/outband-gateway");
    let agent_bin = dist::agent_path(static_target);
    raise_fd_limit();

    let dir = std::env::temp_dir().join(format!("outband-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let echo = net::serve(net::echo)?.to_string();
    let sink = net::serve(net::sink)?.to_string();
    let drain = net::serve(net::drain)?.to_string();

    let (gateway, ready) = procs::gateway(&gateway_bin, &dir, &[])?;
    let mut agent = procs::agent(
        &agent_bin,
        &dir,
        &ready,
        &[echo.clone(), sink.clone(), drain.clone()],
    )?;
    let agent_id = procs::wait_for(Duration::from_secs(20), "agent to connect", || {
        procs::agents(&ready.http_addr).ok()?.into_iter().next()
    })
    .with_context(|| {
        format!(
            "agent log:\n{}\ngateway log:\n{}",
            agent.log_tail(),
            gateway.log_tail()
        )
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let agent_rss_fresh = agent.rss_kib()?;
    let echo_relay = procs::relay(&ready.http_addr, &agent_id, &echo)?;
    let sink_relay = procs::relay(&ready.http_addr, &agent_id, &sink)?;
    let drain_relay = procs::relay(&ready.http_addr, &agent_id, &drain)?;

    let mut r = Report(String::new());
    println!("\n| measure | tunnel | baseline | ratio | goal |\n|---|---|---|---|---|");

    // Bulk throughput. Baselines: straight to the sink; through two plain TCP relay
    // hops (the tunnel's topology without encryption or multiplexing); one direct TLS
    // connection.
    let two_hop_echo = net::plain_relay(net::plain_relay(echo.clone())?.to_string())?.to_string();
    if want("bulk") {
        let two_hop = net::plain_relay(net::plain_relay(sink.clone())?.to_string())?.to_string();
        let total = if quick { 256 << 20 } else { 1 << 30 };
        let direct = net::bulk_tcp(&sink, total)?;
        let hops = net::bulk_tcp(&two_hop, total)?;
        let tls = tls_baseline::bulk_tls(total)?;
        let tun = net::bulk_tcp(&sink_relay, total)?;
        r.row(
            "bulk, 1 stream (Gbit/s)",
            format!("{tun:.2}"),
            format!("direct TCP {direct:.2}; two plain relay hops {hops:.2}; direct TLS {tls:.2}"),
            format!("{:.2}× two-hop relay, {:.2}× TLS", tun / hops, tun / tls),
            "≥ 3.5 Gbit/s-class, no worse than a plain two-hop relay",
        );
    }

    // Ping-pong and request/response.
    let iters = if quick { 2000 } else { 20000 };
    let mut idle99 = None;
    if want("pingpong") {
        let mut d64 = net::ping_pong(&echo, 64, iters)?;
        let mut h64 = net::ping_pong(&two_hop_echo, 64, iters)?;
        let cpu_before = (agent.cpu_ns()?, gateway.cpu_ns()?);
        let mut t64 = net::ping_pong(&echo_relay, 64, iters)?;
        let cpu_after = (agent.cpu_ns()?, gateway.cpu_ns()?);
        let (d50, d99, h50, t50, t99) = (
            pct(&mut d64, 0.5),
            pct(&mut d64, 0.99),
            pct(&mut h64, 0.5),
            pct(&mut t64, 0.5),
            pct(&mut t64, 0.99),
        );
        r.row(
            "64 B ping-pong p50 / p99 (µs)",
            format!("{t50:.0} / {t99:.0}"),
            format!("direct {d50:.0} / {d99:.0}; two plain hops p50 {h50:.0}"),
            format!(
                "+{:.0} / +{:.0} µs; two plain hops add {:.0} µs p50",
                t50 - d50,
                t99 - d99,
                h50 - d50
            ),
            "added p50 ≤ 50 µs, p99 ≤ 500 µs",
        );
        // Where a round trip's time goes: CPU the two ends spent per round trip (the
        // warm-up round trips included), against the wall-clock round trip.
        let round_trips = (iters + (iters / 10).max(10)) as f64;
        let per_rt =
            |before: u64, after: u64| after.saturating_sub(before) as f64 / 1e3 / round_trips;
        r.row(
            "CPU per 64 B round trip (µs): agent / gateway",
            format!(
                "{:.1} / {:.1}",
                per_rt(cpu_before.0, cpu_after.0),
                per_rt(cpu_before.1, cpu_after.1)
            ),
            format!("round trip p50 {t50:.0}"),
            "-".into(),
            "-",
        );
        idle99 = Some(t99);
    }
    if want("reqresp") {
        for size in [16 * 1024, 64 * 1024] {
            let n = if quick { 300 } else { 2000 };
            let mut d = net::ping_pong(&echo, size, n)?;
            let mut h = net::ping_pong(&two_hop_echo, size, n)?;
            let mut t = net::ping_pong(&echo_relay, size, n)?;
            let (dp, hp, tp) = (pct(&mut d, 0.5), pct(&mut h, 0.5), pct(&mut t, 0.5));
            let (d9, t9) = (pct(&mut d, 0.99), pct(&mut t, 0.99));
            let worst = t.last().copied().unwrap_or_default();
            r.row(
                &format!("{} KiB request/response p50 / p99 / max (µs)", size / 1024),
                format!("{tp:.0} / {t9:.0} / {worst:.0}"),
                format!("direct {dp:.0} / {d9:.0}; two plain hops p50 {hp:.0}"),
                format!("{:.2}× direct, {:.2}× two-hop p50", tp / dp, tp / hp),
                "≤ 2× direct, no 40 ms stalls",
            );
        }
    }

    // Probe latency while another stream on the same agent connection runs bulk.
    if want("probe") {
        let t99 = match idle99 {
            Some(t) => t,
            None => pct(&mut net::ping_pong(&echo_relay, 64, iters)?, 0.99),
        };
        let (stop, bulk) = net::background_bulk(&drain_relay)?;
        let mut busy = net::ping_pong(&echo_relay, 64, iters / 2)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let moved = bulk.join().unwrap_or(0);
        let b99 = pct(&mut busy, 0.99);
        // The same measurement through two plain relay hops (a thread per connection,
        // so nothing is shared but the CPUs): how much of the slowdown is the machine
        // itself, two cores shared by the bulk writer, the relays and the sink.
        let two_hop_drain =
            net::plain_relay(net::plain_relay(drain.clone())?.to_string())?.to_string();
        let h99 = pct(&mut net::ping_pong(&two_hop_echo, 64, iters / 2)?, 0.99);
        let (stop, bulk) = net::background_bulk(&two_hop_drain)?;
        let mut hop_busy = net::ping_pong(&two_hop_echo, 64, iters / 2)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let hop_moved = bulk.join().unwrap_or(0);
        let hb99 = pct(&mut hop_busy, 0.99);
        r.row(
            "64 B probe p99 during bulk on same agent (µs)",
            format!("{b99:.0} (bulk moved {} MiB)", moved >> 20),
            format!(
                "idle tunnel {t99:.0}; two plain hops idle {h99:.0}, during bulk {hb99:.0} (moved {} MiB)",
                hop_moved >> 20
            ),
            format!(
                "{:.2}× idle; two plain hops {:.2}× idle",
                b99 / t99,
                hb99 / h99
            ),
            "≤ 2× idle",
        );
    }

    // A long path: a second agent dials the gateway through a relay that delays
    // every byte by 10 ms each way. The shared window must not cost a bulk stream
    // its throughput there just because another stream (a console) is open.
    if want("wan") {
        let one_way = Duration::from_millis(10);
        let proxy = net::delay_relay(ready.agent_addr.clone(), one_way)?.to_string();
        let wan_dir = dir.join("wan");
        std::fs::create_dir_all(&wan_dir)?;
        let wan_ready = procs::Ready {
            agent_addr: proxy,
            http_addr: ready.http_addr.clone(),
            ca_file: ready.ca_file.clone(),
        };
        let wan_agent = procs::agent(
            &agent_bin,
            &wan_dir,
            &wan_ready,
            &[echo.clone(), sink.clone()],
        )?;
        let wan_id = procs::wait_for(Duration::from_secs(20), "the WAN agent", || {
            procs::agents(&ready.http_addr)
                .ok()?
                .into_iter()
                .find(|id| *id != agent_id)
        })
        .with_context(|| format!("WAN agent log:\n{}", wan_agent.log_tail()))?;
        let rtt_ms = procs::wait_for(Duration::from_secs(20), "the WAN agent's rtt", || {
            procs::agent_rtt_ms(&ready.http_addr, &wan_id)
        })?;
        let wan_sink = procs::relay(&ready.http_addr, &wan_id, &sink)?;
        let wan_echo = procs::relay(&ready.http_addr, &wan_id, &echo)?;
        // Enough for the stream's window to grow from 256 KiB (a doubling per round
        // trip) and then carry most of the bytes.
        let total = if quick { 32 << 20 } else { 64 << 20 };
        let path = net::delay_relay(sink.clone(), one_way)?.to_string();
        let plain = net::bulk_tcp(&path, total)? * 1e3;
        let lone = net::bulk_tcp(&wan_sink, total)? * 1e3;
        // A console is open beside the bulk stream (one echoed byte: accepted).
        let mut console = net::connect(&wan_echo)?;
        console.write_all(b"k")?;
        console.read_exact(&mut [0u8; 1])?;
        let shared = net::bulk_tcp(&wan_sink, total)? * 1e3;
        drop(console);
        drop(wan_agent);
        let window_bound = 256.0 * 1024.0 * 8.0 / (2.0 * one_way.as_secs_f64()) / 1e6;
        r.row(
            "bulk over a 20 ms round trip (Mbit/s): lone / beside an open console",
            format!("{lone:.0} / {shared:.0} (tunnel rtt_ms {rtt_ms:.1})"),
            format!(
                "plain TCP over the same path {plain:.0}; a fixed 256 KiB window would bound a stream at {window_bound:.0}"
            ),
            format!("{:.2}× lone", shared / lone),
            "beside a console ≈ lone",
        );
    }

    // Stream open to first byte.
    if want("connect") {
        let n = if quick { 200 } else { 1000 };
        let mut d = net::open_to_first_byte(&echo, n)?;
        let mut t = net::open_to_first_byte(&echo_relay, n)?;
        let (dp, tp) = (pct(&mut d, 0.5), pct(&mut t, 0.5));
        r.row(
            "connect to first echoed byte p50 (µs)",
            format!("{tp:.0}"),
            format!("{dp:.0}"),
            format!("+{:.0} µs", tp - dp),
            "≤ 500 µs",
        );
    }

    // Agent memory when idle, then exec → first relayed byte.
    if want("agent") {
        // Idle means idle for a while: the agent gives emptied heap pages back every
        // second (`memory.rs`), so wait for two of its collections; its connection
        // frees idle buffers and shrinks its tables on a heartbeat tick (5 s), so
        // look again after one more tick and collection.
        std::thread::sleep(Duration::from_millis(2500));
        let agent_rss = agent.rss_kib()?;
        std::thread::sleep(Duration::from_millis(4000));
        let agent_rss_tick = agent.rss_kib()?;
        r.row(
            "agent idle RSS (KiB): connected / after this whole run, 2.5 s and 6.5 s idle",
            format!("{agent_rss_fresh} / {agent_rss} / {agent_rss_tick}"),
            "-".into(),
            "-".into(),
            "≤ 3072 KiB",
        );
        drop(agent);
        procs::wait_for(Duration::from_secs(10), "agent to disconnect", || {
            procs::agents(&ready.http_addr)
                .ok()?
                .is_empty()
                .then_some(())
        })?;
        let start = Instant::now();
        agent = procs::agent(&agent_bin, &dir, &ready, std::slice::from_ref(&echo))?;
        procs::wait_for(Duration::from_secs(20), "first relayed byte", || {
            first_byte(&echo_relay)
        })?;
        let exec_ms = start.elapsed().as_secs_f64() * 1e3;
        r.row(
            "agent exec → first relayed byte (ms)",
            format!("{exec_ms:.1}"),
            "-".into(),
            "-".into(),
            "≤ 20 ms",
        );
        let size = std::fs::metadata(&agent_bin)?.len();
        r.row(
            "static x86_64 agent size (MiB)",
            format!("{:.2}", size as f64 / 1048576.0),
            "-".into(),
            "-".into(),
            "≤ 2.5 MiB",
        );
    }

    // Gateway memory per idle agent.
    if want("swarm") {
        let n_agents = if quick { 1000 } else { 10_000 };
        let ca = std::fs::read_to_string(&ready.ca_file)?;
        std::thread::sleep(Duration::from_millis(300));
        let before = gateway.rss_kib()?;
        let swarm = swarm::connect(n_agents, &ready.agent_addr, &ca)?;
        std::thread::sleep(Duration::from_secs(2));
        let listed = procs::agents(&ready.http_addr)?.len();
        let after = gateway.rss_kib()?;
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n_agents as f64;
        r.row(
            &format!("gateway RSS per idle agent, {n_agents} agents (KiB)"),
            format!("{:.1}", per / 1024.0),
            format!("{before} KiB before, {after} KiB after, {listed} listed"),
            "-".into(),
            "≤ 16 KiB",
        );
        drop(swarm);
    }
    drop(agent);
    drop(gateway);

    let out = target_dir().join("bench-report.md");
    std::fs::write(&out, &r.0).context("writing the report")?;
    println!("\nreport written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One echo through `addr`, or None if the tunnel is not up yet.
fn first_byte(addr: &str) -> Option<()> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(b"x").ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    Some(())
}

/// Lets this process and its children hold many sockets (for the swarm).
fn raise_fd_limit() {
    // `ulimit -n` in a shell is the portable way without unsafe code.
    let _ = rlimit::increase_nofile_limit(200_000);
}
