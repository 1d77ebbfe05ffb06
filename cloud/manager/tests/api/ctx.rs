//! Test context: a manager on a fresh database, requests through `oneshot` with a
//! chosen source address, and every log line of the process captured for greps.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use outband_manager::config::{Config, Database};
use outband_manager::ids::Clock;
use outband_manager::store::Store;
use outband_manager::store::users::UserRow;
use outband_manager::{Manager, http, users};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(db: Db)` of the calling module on both databases.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::ctx::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::ctx::Db::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use both;

// ------------------------------------------------------------------ logs

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .init();
        buf
    });
}

/// Every log line this test process wrote so far (all tests, debug level).
pub fn all_logs() -> String {
    String::from_utf8_lossy(&LOGS.get().unwrap().lock().unwrap()).into_owned()
}

// ------------------------------------------------------------------ app

/// A password that passes the length rule.
pub const PASSWORD: &str = "correct horse battery staple";

/// A manager on a fresh database.
pub struct TestApp {
    pub m: Arc<Manager>,
    pub router: Router,
    pub clock: Clock,
    pub db: Db,
    pub dir: Option<tempfile::TempDir>,
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Test defaults: small throttle limits, no bootstrap admin.
pub fn test_config() -> Config {
    let mut c = Config {
        bootstrap_admin: false,
        argon2_concurrency: 2,
        ..Config::default()
    };
    c.throttle.account_limit = 3;
    c.throttle.ip_limit = 8;
    c
}

impl TestApp {
    pub async fn new(db: Db) -> TestApp {
        TestApp::with_config(db, |_| {}).await
    }

    pub async fn with_config(db: Db, tweak: impl FnOnce(&mut Config)) -> TestApp {
        init_logs();
        let mut config = test_config();
        tweak(&mut config);
        let dir = tempfile::tempdir().unwrap();
        config.credential_key_file = dir.path().join("credential.key");
        let store = match db {
            Db::Sqlite => {
                config.database = Database::SqliteDir(dir.path().join("data"));
                outband_manager::open_store(&config.database).await.unwrap()
            }
            Db::Postgres => {
                let url = crate::pg::fresh_database().await;
                config.database = Database::Url(url.clone());
                Store::connect(&url).await.unwrap()
            }
        };
        config.validate().unwrap();
        let clock = Clock::default();
        let m = Manager::new(store, config, clock.clone()).unwrap();
        m.keys.ensure_key().await.unwrap();
        TestApp {
            router: http::router(m.clone()),
            m,
            clock,
            db,
            dir: Some(dir),
        }
    }

    /// Creates a user with [`PASSWORD`] unless given.
    pub async fn user(&self, email: &str, admin: bool) -> UserRow {
        self.user_with(email, PASSWORD, admin).await
    }

    pub async fn user_with(&self, email: &str, password: &str, admin: bool) -> UserRow {
        users::create_user(
            &self.m.store,
            &self.clock,
            email,
            password,
            admin,
            false,
            "test",
        )
        .await
        .unwrap()
    }

    /// Sends a request from `ip`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        bearer: Option<&str>,
        ip: [u8; 4],
    ) -> Resp {
        self.send_via(method, path, body, bearer, ip, false, &[])
            .await
    }

    /// Sends a request from peer `ip`, over TLS or not, with extra headers.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_via(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        bearer: Option<&str>,
        ip: [u8; 4],
        tls: bool,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        req.extensions_mut()
            .insert(outband_manager::serve::Transport { tls });
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A request with a bearer token from 127.0.0.1.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        bearer: &str,
    ) -> Resp {
        self.send(
            method,
            path,
            body.map(|b| b.to_string()),
            Some(bearer),
            [127, 0, 0, 1],
        )
        .await
    }

    /// Creates a tenant directly in the store; returns its id.
    pub async fn tenant(&self, name: &str) -> String {
        let t = outband_api::tenants::Tenant {
            id: outband_manager::ids::new_id("ten"),
            name: name.into(),
            created_at: self.clock.now(),
        };
        self.m.store.insert_tenant(&t).await.unwrap();
        t.id
    }

    /// Creates a user of `tenant` with `role` and [`PASSWORD`]; logs in; returns the
    /// access token.
    pub async fn member(&self, email: &str, tenant: &str, role: &str) -> String {
        let role = outband_api::tenants::Role::parse(role).unwrap();
        users::create_user_in(
            &self.m.store,
            &self.clock,
            email,
            PASSWORD,
            false,
            false,
            Some((tenant.to_owned(), role)),
            "test",
        )
        .await
        .unwrap();
        self.tokens(email).await.0
    }

    /// A global admin's access token.
    pub async fn root(&self) -> String {
        self.user("root@example.com", true).await;
        self.tokens("root@example.com").await.0
    }

    /// Audit entries of authorization denials (as the given admin token), newest first:
    /// `(target, detail)`.
    pub async fn denials(&self, admin_token: &str) -> Vec<(String, String)> {
        self.audit(admin_token, "action=authz&limit=1000")
            .await
            .iter()
            .map(|e| {
                (
                    e["target"].as_str().unwrap_or_default().to_owned(),
                    e["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Every file of the database as raw bytes: the SQLite files, or the whole
    /// PostgreSQL data directory after a checkpoint. `None` when the PostgreSQL server
    /// is not ours to read (`OUTBAND_TEST_PG_URL`).
    pub async fn raw_database_files(&self) -> Option<Vec<(std::path::PathBuf, Vec<u8>)>> {
        let root = match self.db {
            Db::Sqlite => self.dir.as_ref().unwrap().path().join("data"),
            Db::Postgres => {
                sqlx::query("CHECKPOINT")
                    .execute(self.m.store.pool())
                    .await
                    .unwrap();
                let (dir,): (String,) = sqlx::query_as("SELECT current_setting('data_directory')")
                    .fetch_one(self.m.store.pool())
                    .await
                    .unwrap();
                let dir = std::path::PathBuf::from(dir);
                if std::fs::read_dir(&dir).is_err()
                    && std::env::var_os("OUTBAND_TEST_PG_URL").is_some()
                {
                    return None;
                }
                dir
            }
        };
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.push((p, bytes));
                }
            }
        }
        assert!(!out.is_empty());
        Some(out)
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(body.to_string()),
            None,
            [127, 0, 0, 1],
        )
        .await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Resp {
        self.send(Method::GET, path, None, bearer, [127, 0, 0, 1])
            .await
    }

    pub async fn login_from(&self, email: &str, password: &str, ip: [u8; 4]) -> Resp {
        let body = json!({ "email": email, "password": password }).to_string();
        self.send(Method::POST, "/api/v1/auth/login", Some(body), None, ip)
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.login_from(email, password, [127, 0, 0, 1]).await
    }

    /// Logs in and returns `(access, refresh)`.
    pub async fn tokens(&self, email: &str) -> (String, String) {
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let v = r.json();
        (
            v["access_token"].as_str().unwrap().to_owned(),
            v["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn refresh(&self, token: &str) -> Resp {
        self.post("/api/v1/auth/refresh", json!({ "refresh_token": token }))
            .await
    }

    /// Audit entries (as the given admin token), newest first.
    pub async fn audit(&self, admin_token: &str, query: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/api/v1/audit?{query}"), Some(admin_token))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["entries"].as_array().unwrap().clone()
    }
}

/// Polls all futures together on this task (like `tokio::join!` for a list).
pub async fn join_all<F: std::future::Future<Output = Resp>>(
    futs: impl Iterator<Item = F>,
) -> Vec<Resp> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = futs.map(|f| Some(Box::pin(f))).collect();
    let mut out = Vec::new();
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            if let Some(f) = slot
                && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
            {
                out.push(r);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out
}
