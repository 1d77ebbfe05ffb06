//! Static appliance builds.

use anyhow::{Result, bail};

use crate::{cargo, target_dir};

/// Size budget of the stripped static x86_64 agent.
pub const AGENT_SIZE_BUDGET: u64 = 2_621_440; // 2.5 MiB

/// The appliance targets.
pub const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// Builds the agent for every appliance target and reports the sizes.
pub fn run(check_size: bool) -> Result<()> {
    for target in TARGETS {
        build(target)?;
    }
    for target in TARGETS {
        let size = std::fs::metadata(agent_path(target))?.len();
        println!(
            "outband-agent {target}: {size} bytes ({:.2} MiB)",
            size as f64 / 1048576.0
        );
        if check_size && target.starts_with("x86_64") && size > AGENT_SIZE_BUDGET {
            bail!("the x86_64 agent is {size} bytes, over its budget of {AGENT_SIZE_BUDGET}");
        }
    }
    Ok(())
}

/// Builds the static agent for one target.
pub fn build(target: &str) -> Result<()> {
    cargo(&[
        "build",
        "--locked",
        "-p",
        "outband-agent",
        "--bin",
        "outband-agent",
        "--profile",
        "appliance",
        "--target",
        target,
    ])
}

/// Where the static agent for `target` lands.
pub fn agent_path(target: &str) -> std::path::PathBuf {
    target_dir()
        .join(target)
        .join("appliance")
        .join("outband-agent")
}
