//! A throwaway PostgreSQL cluster per test binary, and a fresh database per test.
//!
//! `OUTBAND_TEST_PG_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) uses an
//! existing server instead. Otherwise the first caller runs `initdb` + `pg_ctl start`
//! in a temp dir (as the `postgres` user when we are root: postgres refuses root) on a
//! free port, with the unix socket in the temp dir. A watcher process stops the cluster
//! and deletes the directory when this test process exits.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

static SERVER: OnceLock<String> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding port 0")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn pg_bin(name: &str) -> PathBuf {
    for dir in ["/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_cluster() -> String {
    let dir = tempfile::Builder::new()
        .prefix("outband-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    if is_root() {
        let out = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(out.success(), "chown of {} failed", dir.display());
    }
    let data = dir.join("data");
    let mut initdb = as_postgres(&pg_bin("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--no-sync",
        "--no-instructions",
    ]);
    run(initdb, "initdb");
    let port = free_port();
    let opts = format!(
        "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=400",
        dir.display()
    );
    let mut start = as_postgres(&pg_bin("pg_ctl"));
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-o", &opts, "start"]);
    run(start, "pg_ctl start");
    // Stop the cluster and clean up once this process is gone.
    let pg_ctl = pg_bin("pg_ctl");
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    // Deliberately not waited for: it must outlive this process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the cluster watcher");
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// URL of the admin database on the test server.
pub fn server_url() -> &'static str {
    SERVER.get_or_init(|| match std::env::var("OUTBAND_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_cluster(),
    })
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let root = match base.rsplit_once('/') {
        Some((root, _)) if root.contains("://") && root.len() > root.find("://").unwrap() + 3 => {
            root
        }
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url().to_owned();
    let name = format!(
        "outband_t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("connecting to {server}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    conn.close().await.ok();
    with_database(&server, &name)
}
