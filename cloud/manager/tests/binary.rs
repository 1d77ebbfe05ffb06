//! Tests that run the real `outband-manager` binary: first start on embedded defaults,
//! `admin create`, and two managers serving the same users and tokens from one
//! PostgreSQL database.

#[path = "common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_outband-manager");

/// A running manager with its output in files.
struct Manager {
    child: Child,
    addr: String,
    out: PathBuf,
    err: PathBuf,
}

impl Manager {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Manager {
        let ready = dir.join(format!("{name}.ready"));
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = Command::new(BIN)
            .current_dir(dir)
            .args(["--listen", "127.0.0.1:0", "--log", "debug", "--ready-file"])
            .arg(&ready)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("starting outband-manager");
        let mut m = Manager {
            child,
            addr: String::new(),
            out,
            err,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: Value = serde_json::from_str(&text).expect("ready file is JSON");
                m.addr = v["http_addr"].as_str().unwrap().to_owned();
                return m;
            }
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("manager exited with {status}: {}", m.logs());
            }
            assert!(Instant::now() < deadline, "manager not ready: {}", m.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
            + &std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops with SIGTERM and returns all output.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "manager ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.logs()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .build(),
    )
}

fn post(url: &str, body: Value) -> (u16, Value) {
    let mut r = agent().post(url).send_json(&body).expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().expect("GET");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn login(m: &Manager, email: &str, password: &str) -> (u16, Value) {
    post(
        &m.url("/api/v1/auth/login"),
        json!({ "email": email, "password": password }),
    )
}

fn kid_of(token: &str) -> String {
    let h = data_encoding::BASE64URL_NOPAD
        .decode(token.split('.').next().unwrap().as_bytes())
        .unwrap();
    serde_json::from_slice::<Value>(&h).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `db` (global flags naming the database, e.g. `--database-url`) before `args`.
fn with<'a>(db: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [db, args].concat()
}

/// `#[test] fn $sqlite` runs `$body(&[])`; `#[test] fn $postgres` runs it with
/// `--database-url` of a fresh database on the throwaway cluster.
macro_rules! on_sqlite_and_postgres {
    ($sqlite:ident, $postgres:ident, $body:ident) => {
        #[test]
        fn $sqlite() {
            $body(&[]);
        }

        #[test]
        fn $postgres() {
            let (_rt, url) = pg_url();
            $body(&["--database-url", &url]);
        }
    };
}

/// A fresh database on the throwaway PostgreSQL cluster (`common/pg.rs`); keep the
/// runtime alive for as long as the URL is used.
fn pg_url() -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(pg::fresh_database());
    (rt, url)
}

/// The data directory of the PostgreSQL server behind `url`, after a checkpoint (so
/// what was written is in the files).
fn pg_data_dir(url: &str) -> PathBuf {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = outband_manager::store::Store::connect(url).await.unwrap();
        sqlx::query("CHECKPOINT")
            .execute(store.pool())
            .await
            .unwrap();
        let (dir,): (String,) = sqlx::query_as("SELECT current_setting('data_directory')")
            .fetch_one(store.pool())
            .await
            .unwrap();
        PathBuf::from(dir)
    })
}

fn run_cli(dir: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn first_start_with_no_arguments_uses_sqlite_and_prints_a_one_time_password() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(dir.path(), "a", &[]);
    let data = dir.path().join("manager-data");
    assert!(data.join("manager.db").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let err = std::fs::read_to_string(&m.err).unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("one-time password"))
        .unwrap_or_else(|| panic!("no password line: {err}"));
    assert!(line.contains("admin@localhost"));
    let password = line.rsplit(' ').next().unwrap();
    let (status, v) = login(&m, "admin@localhost", password);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["password_change_required"], true);
    let token = v["access_token"].as_str().unwrap();
    let (status, e) = get(&m.url("/api/v1/audit"), Some(token));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("password_change_required"))
    );
    let new_password = "the admin's own passphrase";
    let r = agent()
        .post(&m.url("/api/v1/auth/password"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({ "current_password": password, "new_password": new_password }))
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, _) = get(&m.url("/api/v1/audit"), Some(token));
    assert_eq!(status, 200);
    let (status, h) = get(&m.url("/health"), None);
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")));
    let logs = m.stop();
    assert_eq!(logs.matches(password).count(), 1, "printed once: {logs}");

    // A second start finds the user and prints nothing.
    let m = Manager::start(dir.path(), "b", &[]);
    assert_eq!(login(&m, "admin@localhost", password).0, 401);
    assert_eq!(login(&m, "admin@localhost", new_password).0, 200);
    let logs = m.stop();
    assert!(!logs.contains("one-time password"), "{logs}");
    assert!(!logs.contains(password));
}

fn admin_create_and_keys_rotate(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = |args: &[&str], stdin: &str| run_cli(d, &with(db, args), stdin);
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "a@example.com",
            "--password-file",
            "-",
        ],
        "stdin password 123\n",
    );
    assert!(ok, "{out}");
    assert!(!out.contains("stdin password 123"));
    std::fs::write(d.join("pw"), "file password 123\nignored\n").unwrap();
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "b@example.com",
            "--password-file",
            "pw",
        ],
        "",
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&["admin", "create", "--email", "c@example.com"], "");
    assert!(ok, "{out}");
    let generated = out
        .lines()
        .find(|l| l.starts_with("one-time password"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    // Refusals: duplicate, short password.
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "A@example.com",
            "--password-file",
            "pw",
        ],
        "",
    );
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "d@example.com",
            "--password-file",
            "-",
        ],
        "short\n",
    );
    assert!(!ok && out.contains("password must be"), "{out}");

    // Offline key rotation: two rotations leave two published keys, the newer signs.
    let mut kids = Vec::new();
    for _ in 0..2 {
        let (ok, out) = cli(&["keys", "rotate", "--overlap", "1h"], "");
        assert!(ok, "{out}");
        let kid = out
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("{out}"))
            .trim_end_matches(';')
            .to_owned();
        kids.push(kid);
    }

    let m = Manager::start(d, "m", db);
    let (_, jwks) = get(&m.url("/.well-known/jwks.json"), None);
    let mut published: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    published.sort();
    let mut expect = kids.clone();
    expect.sort();
    assert_eq!(published, expect);
    let (_, t) = login(&m, "a@example.com", "stdin password 123");
    assert_eq!(kid_of(t["access_token"].as_str().unwrap()), kids[1]);
    assert_eq!(login(&m, "a@example.com", "stdin password 123").0, 200);
    assert_eq!(login(&m, "b@example.com", "file password 123").0, 200);
    assert_eq!(login(&m, "c@example.com", &generated).0, 200);
    let logs = m.stop();
    assert!(
        !logs.contains("one-time password"),
        "users exist: no bootstrap"
    );
}

on_sqlite_and_postgres!(
    admin_create_and_keys_rotate_work_offline,
    admin_create_and_keys_rotate_work_offline_on_postgres,
    admin_create_and_keys_rotate
);

#[test]
fn two_managers_on_one_postgres_share_users_tokens_keys_and_throttle() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(pg::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let canary = "CANARY-two-managers-pw-71";
    std::fs::write(d.join("pw"), canary).unwrap();
    let (ok, out) = run_cli(
        d,
        &[
            "--database-url",
            &url,
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password-file",
            "pw",
        ],
        "",
    );
    assert!(ok, "{out}");
    let args = [
        "--database-url",
        url.as_str(),
        "--account-failure-limit",
        "3",
    ];
    let a = Manager::start(d, "a", &args);
    let b = Manager::start(d, "b", &args);

    // Login on A, use the access token on B, refresh on B.
    let (status, t1) = login(&a, "ops@example.com", canary);
    assert_eq!(status, 200, "{t1}");
    let access1 = t1["access_token"].as_str().unwrap();
    let refresh1 = t1["refresh_token"].as_str().unwrap();
    assert_eq!(get(&b.url("/api/v1/audit"), Some(access1)).0, 200);
    let (status, t2) = post(
        &b.url("/api/v1/auth/refresh"),
        json!({ "refresh_token": refresh1 }),
    );
    assert_eq!(status, 200, "{t2}");
    let refresh2 = t2["refresh_token"].as_str().unwrap();
    // Replaying the rotated token on A revokes the family everywhere.
    let (status, e) = post(
        &a.url("/api/v1/auth/refresh"),
        json!({ "refresh_token": refresh1 }),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    let (status, _) = post(
        &b.url("/api/v1/auth/refresh"),
        json!({ "refresh_token": refresh2 }),
    );
    assert_eq!(status, 401);
    assert_eq!(
        get(&b.url("/api/v1/audit"), t2["access_token"].as_str()).0,
        401
    );

    // Key rotation on A: B accepts tokens signed with the new key at once.
    let (_, t3) = login(&a, "ops@example.com", canary);
    let access3 = t3["access_token"].as_str().unwrap();
    let mut req = agent().post(&a.url("/api/v1/admin/keys/rotate"));
    req = req.header("Authorization", &format!("Bearer {access3}"));
    let mut r = req.send_empty().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rotated: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap();
    let (_, t4) = login(&a, "ops@example.com", canary);
    let access4 = t4["access_token"].as_str().unwrap();
    assert_eq!(kid_of(access4), new_kid);
    assert_eq!(get(&b.url("/api/v1/audit"), Some(access4)).0, 200);
    assert_eq!(
        get(&b.url("/api/v1/audit"), Some(access3)).0,
        200,
        "old key in overlap"
    );
    let (_, jwks) = get(&b.url("/.well-known/jwks.json"), None);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // The failed-login throttle is shared: 3 failures on A lock the account on B.
    for _ in 0..3 {
        assert_eq!(login(&a, "ops@example.com", "wrong password 1").0, 401);
    }
    let (status, e) = login(&b, "ops@example.com", canary);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (429, Some("too_many_attempts"))
    );

    // The audit log of both is one log.
    let (_, audit) = get(&b.url("/api/v1/audit?action=refresh_reuse"), Some(access4));
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);

    let logs = a.stop() + &b.stop() + &out;
    assert!(logs.contains("audit"), "debug logs captured");
    assert!(!logs.contains(canary), "canary password in process output");
}

/// Runs schemathesis on the manager's OpenAPI document with `token`, on the operations
/// `filter` selects: `(passed, report)`.
fn schemathesis(
    st: &Path,
    m: &Manager,
    dir: &Path,
    token: &str,
    filter: &[&str],
) -> (bool, String) {
    let out = Command::new(st)
        .args([
            "run",
            &m.url("/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error",
        ])
        .args(["--max-examples", "40", "--seed", "1", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(filter)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir)
        .output()
        .expect("running schemathesis");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && report.contains("passed"), report)
}

/// POSTs `body` to `path` as `token`, expects 201, returns the string `field`.
fn created(m: &Manager, token: &str, path: &str, body: Value, field: &str) -> String {
    let (status, text) = call("POST", &m.url(path), token, Some(body));
    assert_eq!(status, 201, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()[field]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A registered gateway's token (created by the global admin `token`; plain HTTP is
/// fine on loopback).
fn gateway_token(m: &Manager, token: &str) -> String {
    let body = json!({"name": "fuzz-gw"});
    let cred = created(
        m,
        token,
        "/api/v1/gateways",
        body,
        "registration_credential",
    );
    let (status, r) = post(
        &m.url("/api/v1/gateway/register"),
        json!({"registration_credential": cred}),
    );
    assert_eq!(status, 200, "{r}");
    r["gateway_token"].as_str().unwrap().to_owned()
}

/// A tenant admin's access token (a new tenant and user; the one-time password
/// changed).
fn tenant_admin_token(m: &Manager, token: &str) -> String {
    let body = json!({"name": "fuzz-tenant"});
    let tenant = created(m, token, "/api/v1/tenants", body, "id");
    let (status, user) = call(
        "POST",
        &m.url(&format!("/api/v1/tenants/{tenant}/users")),
        token,
        Some(json!({"email": "tenant-fuzz@example.com", "role": "admin",
                    "password": "first tenant password"})),
    );
    assert_eq!(status, 201, "{user}");
    let (status, t) = login(m, "tenant-fuzz@example.com", "first tenant password");
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_owned();
    let (status, text) = call(
        "POST",
        &m.url("/api/v1/auth/password"),
        &access,
        Some(json!({"current_password": "first tenant password",
                    "new_password": "second tenant password"})),
    );
    assert_eq!(status, 204, "{text}");
    access
}

/// Runs schemathesis (PyPI, installed by `scripts/install-deps.sh` into the venv) against
/// a manager's own OpenAPI document: no generated request may cause a 5xx. Three runs:
/// every operation as a global admin, the `/api/v1/gateway/*` calls with a real
/// gateway token, and the tenant-scoped operations as a tenant admin.
fn fuzz_against_openapi(args: &[&str], dir: &Path) {
    let venv = std::env::var("OUTBAND_VENV").unwrap_or_else(|_| "/opt/outband-venv".into());
    let st = Path::new(&venv).join("bin/st");
    assert!(
        st.exists(),
        "{} missing: run scripts/install-deps.sh",
        st.display()
    );
    std::fs::write(dir.join("pw"), "fuzzing admin password").unwrap();
    let mut create = vec![
        "admin",
        "create",
        "--email",
        "fuzz@example.com",
        "--password-file",
        "pw",
    ];
    create.splice(0..0, args.iter().copied());
    let (ok, out) = run_cli(dir, &create, "");
    assert!(ok, "{out}");
    let m = Manager::start(dir, "fuzz", args);
    let (status, t) = login(&m, "fuzz@example.com", "fuzzing admin password");
    assert_eq!(status, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    let gateway = gateway_token(&m, &token);
    let tenant_admin = tenant_admin_token(&m, &token);
    // The global admin's run goes last: its stateful phase may delete the gateway or
    // the tenant user the other runs need.
    let runs = [
        (
            "gateway",
            gateway.as_str(),
            vec!["--include-path-regex", "^/api/v1/gateway/"],
        ),
        (
            "tenant admin",
            tenant_admin.as_str(),
            vec![
                "--include-path-regex",
                "^/api/v1/(me|tenants|servers|agents|join-tokens)",
            ],
        ),
        ("global admin", token.as_str(), vec![]),
    ];
    let mut failed = Vec::new();
    let mut heartbeat_seen = None;
    for (who, bearer, filter) in runs {
        let (ok, report) = schemathesis(&st, &m, dir, bearer, &filter);
        if !ok {
            failed.push(format!("--- as {who}:\n{report}"));
        }
        if who == "gateway" {
            // The gateway run got past the token: a heartbeat was accepted.
            let (_, gateways) = get(&m.url("/api/v1/gateways"), Some(&token));
            heartbeat_seen = Some(
                gateways["gateways"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{gateways}"))
                    .iter()
                    .any(|g| g["name"] == "fuzz-gw" && !g["last_seen_at"].is_null()),
            );
        }
    }
    let logs = m.stop();
    assert!(
        failed.is_empty(),
        "schemathesis found failures:\n{}\n{logs}",
        failed.join("\n")
    );
    assert!(!logs.contains("internal error"), "{logs}");
    assert_eq!(
        heartbeat_seen,
        Some(true),
        "no fuzzed heartbeat got through"
    );
}

#[test]
fn openapi_fuzz_finds_no_server_errors_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    fuzz_against_openapi(&[], dir.path());
}

#[test]
fn openapi_fuzz_finds_no_server_errors_on_postgres() {
    let (_rt, url) = pg_url();
    let dir = tempfile::tempdir().unwrap();
    fuzz_against_openapi(&["--database-url", &url], dir.path());
}

#[test]
fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(dir.path(), "m", &["--header-read-timeout", "1s"]);
    let closed_within = |send: &[u8]| {
        let mut s = std::net::TcpStream::connect(&m.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(send).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        // Whatever hyper answers (nothing, or a 408), the connection must then end.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        start.elapsed()
    };
    let slow = closed_within(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    assert!(slow < Duration::from_secs(5), "slow headers held {slow:?}");
    let idle = closed_within(b"");
    assert!(
        idle < Duration::from_secs(5),
        "idle connection held {idle:?}"
    );
    // Normal requests are unaffected.
    assert_eq!(get(&m.url("/health"), None).0, 200);
    m.stop();
}

/// A request with a bearer token; `(status, body text)`.
fn call(method: &str, url: &str, bearer: &str, body: Option<Value>) -> (u16, String) {
    let auth = format!("Bearer {bearer}");
    let mut r = match (method, body) {
        ("POST", Some(b)) => agent()
            .post(url)
            .header("Authorization", &auth)
            .send_json(b),
        ("PUT", Some(b)) => agent().put(url).header("Authorization", &auth).send_json(b),
        ("DELETE", _) => agent().delete(url).header("Authorization", &auth).call(),
        _ => agent().get(url).header("Authorization", &auth).call(),
    }
    .expect("request");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

fn canary_bmc_password(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = |args: &[&str], stdin: &str| run_cli(d, &with(db, args), stdin);
    let canary = format!("CANARY-bmc-{}", std::process::id());
    std::fs::write(d.join("pw"), "binary canary admin pw").unwrap();
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--password-file",
            "pw",
        ],
        "",
    );
    assert!(ok, "{out}");
    let m = Manager::start(d, "m", db);
    let (_, t) = login(&m, "root@example.com", "binary canary admin pw");
    let token = t["access_token"].as_str().unwrap().to_owned();
    let (status, tenant) = call(
        "POST",
        &m.url("/api/v1/tenants"),
        &token,
        Some(json!({"name": "Acme"})),
    );
    assert_eq!(status, 201, "{tenant}");
    let tenant: Value = serde_json::from_str(&tenant).unwrap();
    let body = json!({
        "name": "bmc-1",
        "tenant_id": tenant["id"],
        "endpoints": {"power": "ipmi://127.0.0.1:6230"},
        "credentials": {"username": "admin", "password": canary}
    });
    let mut texts = Vec::new();
    let (status, created) = call(
        "POST",
        &m.url("/api/v1/servers"),
        &token,
        Some(body.clone()),
    );
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    texts.push(created);
    texts.push(
        call(
            "POST",
            &m.url("/api/v1/servers"),
            &token,
            Some(body.clone()),
        )
        .1,
    );
    texts.push(
        call(
            "PUT",
            &m.url(&format!("/api/v1/servers/{id}")),
            &token,
            Some(body.clone()),
        )
        .1,
    );
    texts.push(
        call(
            "GET",
            &m.url(&format!("/api/v1/servers/{id}")),
            &token,
            None,
        )
        .1,
    );
    texts.push(call("GET", &m.url("/api/v1/servers"), &token, None).1);
    texts.push(call("GET", &m.url("/api/v1/audit"), &token, None).1);
    for t in &texts {
        assert!(!t.contains(&canary), "canary in a response: {t}");
    }
    assert!(
        texts[0].contains("\"has_credentials\":true"),
        "{}",
        texts[0]
    );
    let logs = m.stop();
    assert!(logs.contains(&id), "debug logs captured: {logs}");
    assert!(!logs.contains(&canary), "canary in the manager's output");
    let data = d.join("manager-data");
    // The data dir (SQLite files and the key file) and, on PostgreSQL, the cluster's
    // whole data directory after a checkpoint.
    let url = db.iter().skip_while(|a| **a != "--database-url").nth(1);
    let mut roots = vec![data.clone()];
    if let Some(url) = url {
        // Not ours to read when OUTBAND_TEST_PG_URL names another server.
        let pg = pg_data_dir(url);
        if std::fs::read_dir(&pg).is_ok() || std::env::var_os("OUTBAND_TEST_PG_URL").is_none() {
            roots.push(pg);
        }
    }
    let mut files = 0;
    while let Some(dir) = roots.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                roots.push(p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "canary in {}",
                p.display()
            );
            files += 1;
        }
    }
    assert!(files >= 2, "database and key file");
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(data.join("credential.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // Rotation: a new key first, re-encrypt, drop the old key; the manager starts and
    // the credentials still open (a second run has nothing left to do).
    let old = std::fs::read_to_string(data.join("credential.key")).unwrap();
    let new = outband_manager::secrets::new_key_file();
    std::fs::write(data.join("credential.key"), format!("{new}{old}")).unwrap();
    let (ok, out) = cli(&["keys", "rewrap-credentials"], "");
    // The signing key too: after the old line is dropped, logins still get tokens.
    assert!(
        ok && out.contains("re-encrypted 1 credentials and 1 signing keys"),
        "{out}"
    );
    let (ok, out) = cli(&["keys", "rewrap-credentials"], "");
    assert!(
        ok && out.contains("re-encrypted 0 credentials and 0 signing keys"),
        "{out}"
    );
    std::fs::write(data.join("credential.key"), &new).unwrap();
    let m = Manager::start(d, "m2", db);
    let (_, t) = login(&m, "root@example.com", "binary canary admin pw");
    let token = t["access_token"].as_str().unwrap().to_owned();
    let (status, server) = call(
        "GET",
        &m.url(&format!("/api/v1/servers/{id}")),
        &token,
        None,
    );
    assert_eq!(status, 200);
    assert!(server.contains("\"has_credentials\":true"), "{server}");
    m.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opened = rt.block_on(async {
        let store = match url {
            Some(url) => outband_manager::store::Store::connect(url).await.unwrap(),
            None => outband_manager::store::Store::open_sqlite(&data.join("manager.db"))
                .await
                .unwrap(),
        };
        let keys = outband_manager::secrets::CredentialKeys::parse(&new, &data).unwrap();
        let row = store.server_by_id(&id).await.unwrap().unwrap();
        let (kid, sealed) = row.credentials.unwrap();
        assert_eq!(kid, keys.key_ids()[0]);
        keys.open(&id, &kid, &sealed)
            .unwrap()
            .password
            .as_str()
            .to_owned()
    });
    assert_eq!(opened, canary);

    // A key file that lacks the key the database uses: refuse to start.
    std::fs::write(
        data.join("credential.key"),
        outband_manager::secrets::new_key_file(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(d)
        .args(with(db, &["--listen", "127.0.0.1:0"]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no credential key with id"), "{err}");
}

on_sqlite_and_postgres!(
    canary_bmc_password_is_not_in_responses_logs_or_the_database_file,
    canary_bmc_password_is_not_in_responses_logs_or_the_database_file_on_postgres,
    canary_bmc_password
);

#[test]
fn plain_http_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_cli(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--no-bootstrap-admin"],
        "",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("--insecure-plain-http"), "{out}");
    assert!(
        !dir.path().join("manager-data").exists(),
        "refused before the data dir"
    );
    // Half a TLS configuration is a usage error.
    let (ok, out) = run_cli(dir.path(), &["--tls-cert", "c.pem"], "");
    assert!(!ok && out.contains("--tls-key"), "{out}");
    // Explicitly allowed: it serves on every address.
    let ready = dir.path().join("plain.ready");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "--listen",
            "0.0.0.0:0",
            "--insecure-plain-http",
            "--no-bootstrap-admin",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: Value = serde_json::from_str(&text).unwrap();
            let addr: std::net::SocketAddr = v["http_addr"].as_str().unwrap().parse().unwrap();
            assert!(addr.ip().is_unspecified(), "{addr}");
            break addr.port();
        }
        assert!(child.try_wait().unwrap().is_none(), "manager exited");
        assert!(Instant::now() < deadline, "manager not ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (status, _) = get(&format!("http://127.0.0.1:{port}/health"), None);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
}

fn admin_reset_password(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = |args: &[&str], stdin: &str| run_cli(d, &with(db, args), stdin);
    std::fs::write(d.join("pw"), "the lost admin password\n").unwrap();
    let (ok, out) = cli(
        &[
            "admin",
            "create",
            "--email",
            "root@example.com",
            "--password-file",
            "pw",
        ],
        "",
    );
    assert!(ok, "{out}");
    let m = Manager::start(d, "reset", &with(db, &["--no-bootstrap-admin"]));
    let (status, t) = login(&m, "root@example.com", "the lost admin password");
    assert_eq!(status, 200, "{t}");
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    // Offline, beside the running manager (same database).
    let (ok, out) = cli(
        &["admin", "reset-password", "--email", "ROOT@example.com"],
        "",
    );
    assert!(ok, "{out}");
    assert!(out.contains("1 sessions ended"), "{out}");
    let otp = out
        .lines()
        .find_map(|l| l.strip_prefix("one-time password (shown once): "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let (status, _) = login(&m, "root@example.com", "the lost admin password");
    assert_eq!(status, 401);
    let (status, _) = post(
        &m.url("/api/v1/auth/refresh"),
        json!({ "refresh_token": refresh }),
    );
    assert_eq!(status, 401, "the old session ended");
    let (status, t) = login(&m, "root@example.com", &otp);
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["password_change_required"], true);
    // A given password, from stdin; an unknown account fails.
    let (ok, out) = cli(
        &[
            "admin",
            "reset-password",
            "--email",
            "root@example.com",
            "--password-file",
            "-",
        ],
        "a new given password\n",
    );
    assert!(ok && !out.contains("a new given password"), "{out}");
    let (status, _) = login(&m, "root@example.com", "a new given password");
    assert_eq!(status, 200);
    let (ok, out) = cli(
        &["admin", "reset-password", "--email", "nobody@example.com"],
        "",
    );
    assert!(!ok && out.contains("no account"), "{out}");
    let logs = m.stop();
    assert!(!logs.contains(&otp) && !logs.contains("a new given password"));
}

on_sqlite_and_postgres!(
    admin_reset_password_gives_a_global_admin_a_one_time_password,
    admin_reset_password_gives_a_global_admin_a_one_time_password_on_postgres,
    admin_reset_password
);

/// A CA and a leaf for 127.0.0.1: (CA PEM, chain PEM, key PEM).
fn tls_pki(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

/// `GET /health` over TLS trusting only `ca_pem`: the status line, or the error.
fn tls_health(addr: &str, ca_pem: &str) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use std::io::Read;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let read = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.lines().next() {
        Some(line) if line.starts_with("HTTP/") => Ok(line.to_owned()),
        _ => Err(read.err().map_or(text, |e| e.to_string())),
    }
}

#[test]
fn sighup_reloads_a_renewed_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca_a, chain_a, key_a) = tls_pki("CA A");
    let (ca_b, chain_b, key_b) = tls_pki("CA B");
    std::fs::write(d.join("tls.pem"), &chain_a).unwrap();
    std::fs::write(d.join("tls.key"), &key_a).unwrap();
    let m = Manager::start(
        d,
        "tls",
        &[
            "--no-bootstrap-admin",
            "--tls-cert",
            "tls.pem",
            "--tls-key",
            "tls.key",
        ],
    );
    assert_eq!(tls_health(&m.addr, &ca_a).as_deref(), Ok("HTTP/1.1 200 OK"));
    assert!(tls_health(&m.addr, &ca_b).is_err());
    let hup = |m: &Manager| {
        let ok = Command::new("kill")
            .args(["-HUP", &m.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    // Renewed files, then SIGHUP: new connections get the new certificate.
    std::fs::write(d.join("tls.pem"), &chain_b).unwrap();
    std::fs::write(d.join("tls.key"), &key_b).unwrap();
    assert!(tls_health(&m.addr, &ca_b).is_err(), "not before the signal");
    hup(&m);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_health(&m.addr, &ca_b).is_err() {
        assert!(
            Instant::now() < deadline,
            "the certificate was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tls_health(&m.addr, &ca_a).is_err());
    // A broken file: the reload fails, the current certificate stays.
    std::fs::write(d.join("tls.pem"), "garbage\n").unwrap();
    hup(&m);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.logs().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "no reload failure logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tls_health(&m.addr, &ca_b).as_deref(), Ok("HTTP/1.1 200 OK"));
    let logs = m.stop();
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
}
