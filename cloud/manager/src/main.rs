//! `outband-manager`: parses flags, sets up logging, then serves (default) or runs an
//! admin subcommand against the database.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use outband_manager::cli::{AdminCommand, Cli, Command, KeysCommand};
use outband_manager::ids::Clock;
use outband_manager::{keys::Keys, users};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.serve.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("outband-manager: invalid --log {:?}: {e}", cli.serve.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match &cli.command {
        None | Some(Command::Serve) => serve(&cli).await,
        Some(Command::Admin(AdminCommand::Create {
            email,
            password_file,
        })) => admin_create(&cli, email, password_file.as_deref()).await,
        Some(Command::Admin(AdminCommand::ResetPassword {
            email,
            password_file,
        })) => admin_reset_password(&cli, email, password_file.as_deref()).await,
        Some(Command::Keys(KeysCommand::Rotate { overlap })) => rotate(&cli, *overlap).await,
        Some(Command::Keys(KeysCommand::RewrapCredentials)) => rewrap(&cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outband-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding HTTP listener {}", config.listen))?;
    outband_manager::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// The password from `--password-file` (first line; `-`: stdin), or a generated one
/// (`true`).
fn read_password(password_file: Option<&std::path::Path>) -> anyhow::Result<(String, bool)> {
    Ok(match password_file {
        None => (users::generate_password(), true),
        Some(p) if p.as_os_str() == "-" => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            (line.trim_end_matches(['\r', '\n']).to_owned(), false)
        }
        Some(p) => {
            let mut text = String::new();
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_string(&mut text))
                .with_context(|| format!("reading password file {}", p.display()))?;
            let first = text.lines().next().unwrap_or_default().to_owned();
            (first, false)
        }
    })
}

async fn admin_create(
    cli: &Cli,
    email: &str,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (password, generated) = read_password(password_file)?;
    let store = outband_manager::open_store(&cli.db.database()).await?;
    let user = users::create_user(
        &store,
        &Clock::default(),
        email,
        &password,
        true,
        generated,
        "cli",
    )
    .await?;
    store.close().await;
    println!("created global admin {} ({})", user.email, user.id);
    if generated {
        eprintln!("one-time password (shown once; must be changed at first login): {password}");
    }
    Ok(())
}

async fn admin_reset_password(
    cli: &Cli,
    email: &str,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (password, generated) = read_password(password_file)?;
    let store = outband_manager::open_store(&cli.db.database()).await?;
    let result = users::reset_password_offline(&store, &Clock::default(), email, &password).await;
    store.close().await;
    let Some((user, revoked)) = result? else {
        anyhow::bail!("no account with email {email:?}");
    };
    println!(
        "reset the password of {} ({}); {revoked} sessions ended; it must be changed at the next login",
        user.email, user.id
    );
    if generated {
        eprintln!("one-time password (shown once): {password}");
    }
    Ok(())
}

async fn rotate(cli: &Cli, overlap: std::time::Duration) -> anyhow::Result<()> {
    let path = cli.config().credential_key_file;
    let sealing = outband_manager::secrets::CredentialKeys::load_or_create(&path)
        .with_context(|| format!("credential key file {}", path.display()))?;
    let store = outband_manager::open_store(&cli.db.database()).await?;
    let keys = Keys::new(
        store.clone(),
        Clock::default(),
        std::sync::Arc::new(sealing),
    );
    let (kid, until) = keys.rotate(overlap.as_secs() as i64).await?;
    store.close().await;
    println!("new signing key {kid}; previous keys verify until unix time {until}");
    Ok(())
}

async fn rewrap(cli: &Cli) -> anyhow::Result<()> {
    let path = cli.config().credential_key_file;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading credential key file {}", path.display()))?;
    let keys = outband_manager::secrets::CredentialKeys::parse(&text, &path)?;
    let store = outband_manager::open_store(&cli.db.database()).await?;
    let n = outband_manager::secrets::rewrap_all(&store, &keys).await?;
    let k = outband_manager::secrets::rewrap_signing_keys(&store, &keys).await?;
    store.close().await;
    println!(
        "re-encrypted {n} credentials and {k} signing keys under key {}",
        keys.key_ids()[0]
    );
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
