//! `cargo xtask bench-ab DIR_A DIR_B [--rounds N]`: two builds of the gateway and
//! agent, side by side, measured in alternation.
//!
//! This VM's baselines drift by 1.5× within minutes, so two benchmark runs taken one
//! after the other cannot tell a 10 % change from the drift. Here both stacks run at
//! once (each a gateway and an agent, with its own relays to the same echo, sink and
//! drain servers) and every round measures A and B back to back, in alternating
//! order; the table gives each side's median over the rounds and the median of the
//! per-round ratios B/A. Each directory holds an `outband-gateway` and an
//! `outband-agent` (e.g. copies of the release gateway and the static agent).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::net::{self, pct};
use super::procs::{self, Proc};

/// One stack: a gateway, its agent and the relay ports to the three servers.
struct Side {
    name: &'static str,
    gateway: Proc,
    agent: Proc,
    echo: String,
    sink: String,
    drain: String,
}

#[derive(Default)]
struct Samples {
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    bulk: Vec<f64>,
    probe99: Vec<f64>,
    beside: Vec<f64>,
}

fn start(name: &'static str, bins: &Path, dir: &Path, servers: &[String; 3]) -> Result<Side> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let (gateway, ready) = procs::gateway(&bins.join("outband-gateway"), &dir, &[])?;
    let agent = procs::agent(&bins.join("outband-agent"), &dir, &ready, servers)?;
    let agent_id = procs::wait_for(Duration::from_secs(20), "agent to connect", || {
        procs::agents(&ready.http_addr).ok()?.into_iter().next()
    })
    .with_context(|| format!("{name}: agent log:\n{}", agent.log_tail()))?;
    let relay = |target: &String| procs::relay(&ready.http_addr, &agent_id, target);
    Ok(Side {
        name,
        echo: relay(&servers[0])?,
        sink: relay(&servers[1])?,
        drain: relay(&servers[2])?,
        gateway,
        agent,
    })
}

fn measure(side: &Side, out: &mut Samples) -> Result<()> {
    const ITERS: usize = 500;
    let cpu_before = side.agent.cpu_ns()? + side.gateway.cpu_ns()?;
    let mut rt = net::ping_pong(&side.echo, 64, ITERS)?;
    let cpu_after = side.agent.cpu_ns()? + side.gateway.cpu_ns()?;
    let round_trips = (ITERS + (ITERS / 10).max(10)) as f64;
    out.cpu
        .push(cpu_after.saturating_sub(cpu_before) as f64 / 1e3 / round_trips);
    out.p50.push(pct(&mut rt, 0.5));
    out.p99.push(pct(&mut rt, 0.99));
    out.bulk.push(net::bulk_tcp(&side.sink, 128 << 20)?);
    let (stop, bulk) = net::background_bulk(&side.drain)?;
    let started = std::time::Instant::now();
    let busy = net::ping_pong(&side.echo, 64, 300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = bulk.join().unwrap_or(0);
    // The background bulk ran 200 ms before the probe started.
    let secs = started.elapsed().as_secs_f64() + 0.2;
    out.probe99.push(pct(&mut busy?, 0.99));
    out.beside.push(sent as f64 * 8.0 / secs / 1e9);
    Ok(())
}

/// Picks one measure's samples.
type Column = fn(&Samples) -> &Vec<f64>;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    pct(&mut v, 0.5)
}

pub fn run(a: &Path, b: &Path, rounds: usize) -> Result<()> {
    for d in [a, b] {
        for bin in ["outband-gateway", "outband-agent"] {
            if !d.join(bin).is_file() {
                bail!("{} has no {bin}", d.display());
            }
        }
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("outband-ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let servers = [
        net::serve(net::echo)?.to_string(),
        net::serve(net::sink)?.to_string(),
        net::serve(net::drain)?.to_string(),
    ];
    let sides = [
        start("a", a, &dir, &servers)?,
        start("b", b, &dir, &servers)?,
    ];
    std::thread::sleep(Duration::from_millis(300));
    let mut samples = [Samples::default(), Samples::default()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            measure(&sides[i], &mut samples[i])
                .with_context(|| format!("side {}, round {round}", sides[i].name))?;
        }
        eprint!(".");
    }
    eprintln!();
    println!("A = {}\nB = {}\n", a.display(), b.display());
    println!(
        "| measure ({rounds} rounds) | A median | B median | B/A, median of rounds | rounds B < A |"
    );
    println!("|---|---|---|---|---|");
    let rows: [(&str, Column); 6] = [
        ("64 B ping-pong p50 (µs)", |s| &s.p50),
        ("64 B ping-pong p99 (µs)", |s| &s.p99),
        ("CPU per round trip, agent + gateway (µs)", |s| &s.cpu),
        ("bulk 128 MiB (Gbit/s)", |s| &s.bulk),
        ("64 B probe p99 during bulk (µs)", |s| &s.probe99),
        ("that bulk, beside the probe (Gbit/s)", |s| &s.beside),
    ];
    for (name, get) in rows {
        let (va, vb) = (get(&samples[0]), get(&samples[1]));
        let ratios: Vec<f64> = va.iter().zip(vb).map(|(x, y)| y / x).collect();
        let lower = va.iter().zip(vb).filter(|(x, y)| y < x).count();
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {lower}/{rounds} |",
            median(va),
            median(vb),
            median(&ratios)
        );
    }
    drop(sides);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
