//! `outband-agent`: the appliance agent binary. See the crate docs and README.

use std::process::ExitCode;

use anyhow::Context;
use outband_agent::config::{self, Action};
use outband_agent::connect::Agent;
use outband_agent::identity::Identity;
use outband_agent::{log, tls};

mod memory;

/// musl's allocator returns large blocks to the kernel on every free, so a busy
/// tunnel spent most of its time in page faults and TLB shootdowns (1.9 vs 3.3
/// Gbit/s against the glibc build); mimalloc keeps the static agent as fast as a
/// glibc one for about 100 KB of binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let action = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("outband-agent: {:#}", anyhow::Error::new(e));
            eprintln!("try `outband-agent --help`");
            return ExitCode::from(2);
        }
    };
    match run(action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outband-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(action: Action) -> anyhow::Result<()> {
    let config = match action {
        Action::Help => {
            print!("{}", config::USAGE);
            return Ok(());
        }
        Action::Version => {
            println!("outband-agent {}", outband_agent::VERSION);
            return Ok(());
        }
        Action::PrintIdentity { state_dir } => {
            let (identity, _) = Identity::load_or_create(&state_dir)?;
            println!("agent_id={}", identity.agent_id());
            println!("pairing_code={}", identity.pairing_code());
            return Ok(());
        }
        Action::Run(config) => *config,
    };
    log::init(config.log);
    let (identity, created) = Identity::load_or_create(&config.state_dir)?;
    tracing::info!(
        "outband-agent {} agent_id={} pairing_code={}{}",
        outband_agent::VERSION,
        identity.agent_id(),
        identity.pairing_code(),
        if created { " (new identity)" } else { "" }
    );
    let tls = tls::client_config(&config.trust, &identity).context("setting up TLS")?;
    let agent = Agent::new(config, identity, tls);
    let _collector = outband_agent::rt::spawn(memory::collect_periodically());
    // The dial loop only ends with the process.
    outband_agent::rt::block_on(agent.run());
    Ok(())
}
