//! `cargo xtask`: what cargo alone cannot express.
//!
//! - `cargo xtask dist [--check-size]`: static, stripped appliance agents for x86_64
//!   and aarch64 musl; `--check-size` fails if the x86_64 binary exceeds its budget.
//! - `cargo xtask bench [--quick]`: tunnel benchmarks against baselines measured in
//!   the same run (see docs/benchmarks.md).
//! - `cargo xtask bench-ab DIR_A DIR_B [--rounds N]`: two builds of the gateway and
//!   agent run side by side and measured in alternation (A/B on a noisy machine).
//! - `cargo xtask bench-bmc [--quick]`: the BMC protocols against ipmitool and direct
//!   connections on the same simulators (see docs/benchmarks.md).

mod bench;
mod bench_bmc;
mod dist;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    match args.first().map(String::as_str) {
        Some("dist") => dist::run(flag("--check-size")),
        Some("bench") => bench::run(
            flag("--quick"),
            args.windows(2)
                .find(|w| w[0] == "--only")
                .map(|w| w[1].as_str()),
        ),
        Some("bench-bmc") => bench_bmc::run(flag("--quick")),
        Some("bench-ab") => match (args.get(1), args.get(2)) {
            (Some(a), Some(b)) => {
                let rounds = match args.windows(2).find(|w| w[0] == "--rounds") {
                    Some(w) => w[1]
                        .parse()
                        .with_context(|| format!("--rounds {:?}: not a number", w[1]))?,
                    None => 10,
                };
                bench::ab::run(a.as_ref(), b.as_ref(), rounds)
            }
            _ => bail!("usage: cargo xtask bench-ab DIR_A DIR_B [--rounds N]"),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask dist [--check-size] | bench [--quick] [--only SECTION,...] | bench-ab DIR_A DIR_B [--rounds N] | bench-bmc [--quick]"
            );
            bail!("unknown or missing subcommand")
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    outband_e2e::bins::workspace_root()
}

/// The cargo target directory (honours CARGO_TARGET_DIR).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Runs cargo with `args` in the workspace root.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    outband_e2e::bins::without_run_env(&mut cmd);
    let status = cmd
        .args(args)
        .current_dir(root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
