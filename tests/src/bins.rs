//! Finds the `outband-gateway` and `outband-agent` binaries.
//!
//! `env!("CARGO_BIN_EXE_…")` only works for binaries of the crate under test, so the
//! harness looks in the target profile dir of the test binary itself
//! (`target/<profile>/deps/e2e_vnc-…` → `target/<profile>/`). Before the first use in a
//! test process it runs `cargo build -p outband-agent -p outband-gateway --bins` for
//! that profile (a no-op when up to date), so a plain
//! `cargo nextest run -p outband-e2e` never tests stale binaries.
//!
//! - `OUTBAND_E2E_BIN_DIR=/dir`: use the binaries in `/dir`, build nothing.
//! - `OUTBAND_E2E_NO_BUILD=1`: use the target dir as is, build nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;

static BIN_DIR_OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// Uses the binaries in `dir` and builds nothing (for tools such as `cargo xtask
/// bench-bmc` that bring their own release builds). Call before anything starts a
/// process; later calls are ignored.
pub fn use_bin_dir(dir: PathBuf) {
    let _ = BIN_DIR_OVERRIDE.set(dir);
}

/// The directory holding the binaries, after building them once per test process.
pub fn bin_dir() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate_and_build().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The path of one of the workspace's binaries, e.g. `outband-gateway`.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found (build it with `cargo build -p {name}`)",
        path.display()
    );
    Ok(path)
}

fn locate_and_build() -> anyhow::Result<PathBuf> {
    if let Some(dir) = BIN_DIR_OVERRIDE.get() {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("OUTBAND_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locate the test binary")?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .with_context(|| {
            format!(
                "test binary {} is not in a target/<profile>/deps dir",
                exe.display()
            )
        })?
        .to_path_buf();
    if std::env::var_os("OUTBAND_E2E_NO_BUILD").is_some() {
        return Ok(profile_dir);
    }
    cargo_build(&profile_dir, &["outband-agent", "outband-gateway"])?;
    Ok(profile_dir)
}

/// `cargo build -p PACKAGES --bins` for the profile (and target triple, if any) that
/// `profile_dir` (`target/[<triple>/]<profile>`) belongs to, into the same target dir.
pub(crate) fn cargo_build(profile_dir: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => anyhow::bail!("cannot tell the profile of {}", profile_dir.display()),
    };
    // target/<profile> or target/<triple>/<profile>. A target triple has at least
    // three dash-separated parts (x86_64-unknown-linux-gnu); a target dir made by
    // someone else (e.g. CI's CARGO_TARGET_DIR) may lack cargo's CACHEDIR.TAG, so
    // the tag alone cannot tell.
    let mut target_dir = profile_dir.parent().context("profile dir has a parent")?;
    let mut triple = None;
    if let (false, Some(t), Some(parent)) = (
        target_dir.join("CACHEDIR.TAG").exists(),
        target_dir.file_name(),
        target_dir.parent(),
    ) && t.to_string_lossy().split('-').count() >= 3
    {
        triple = Some(t.to_owned());
        target_dir = parent;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    without_run_env(&mut cmd);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .args(["--bins", "--profile", &profile])
        .env("CARGO_TARGET_DIR", target_dir);
    if let Some(t) = triple {
        cmd.arg("--target").arg(t);
    }
    let out = cmd
        .output()
        .with_context(|| format!("run cargo build for {}", packages.join(", ")))?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build of {} failed:\n{}",
        packages.join("/"),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Removes the variables `cargo run` / `cargo test` set for the program they start
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...) from a nested cargo command. Some build
/// scripts (ring's) track `CARGO_MANIFEST_DIR`, so a nested build that inherits it is
/// "dirty" against the same build from a shell and recompiles ring, rustls and every
/// crate above them, and the next build from the shell recompiles them again.
pub fn without_run_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cmd.env_remove(key);
        }
    }
}

/// The workspace's root directory.
///
/// Taken from `CARGO_MANIFEST_DIR` at run time (cargo sets it for `cargo run`, tests
/// and xtask; every caller's package sits one level below the root) before the
/// compile-time value: builds share one `CARGO_TARGET_DIR` across clones, and cargo
/// does not rebuild a binary whose sources are older than it, so the compile-time
/// path may name another clone, long deleted.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([compiled.to_path_buf()])
        .filter_map(|dir| dir.parent().map(Path::to_path_buf))
        .find(|root| root.join("Cargo.toml").is_file())
        .unwrap_or_else(|| compiled.join(".."))
}
