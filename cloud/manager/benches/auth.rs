//! Throughput of the login path at the production argon2 cost and of access-token
//! validation, on SQLite and PostgreSQL (a throwaway cluster, or `OUTBAND_TEST_PG_URL`).
//!
//! `cargo bench -p outband-manager --bench auth` (plain binary, no harness; prints one
//! line per measurement).

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_api::auth::LoginRequest;
use outband_manager::config::{Config, Database};
use outband_manager::ids::Clock;
use outband_manager::store::Store;
use outband_manager::{Manager, auth, jwt, users};

const PASSWORD: &str = "benchmark password 1";

async fn manager(db: &str, dir: &std::path::Path) -> Arc<Manager> {
    let mut config = Config {
        bootstrap_admin: false,
        ..Config::default()
    };
    config.throttle.ip_limit = i64::MAX;
    config.credential_key_file = dir.join("credential.key");
    let store = if db == "sqlite" {
        config.database = Database::SqliteDir(dir.join("data"));
        outband_manager::open_store(&config.database).await.unwrap()
    } else {
        let url = pg::fresh_database().await;
        Store::connect(&url).await.unwrap()
    };
    let m = Manager::new(store, config, Clock::default()).unwrap();
    m.keys.ensure_key().await.unwrap();
    users::create_user(
        &m.store,
        &m.clock,
        "bench@example.com",
        PASSWORD,
        false,
        false,
        "bench",
    )
    .await
    .unwrap();
    m
}

async fn logins(m: &Arc<Manager>, window: Duration) -> f64 {
    let workers = m.config.argon2_concurrency * 2;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let ip: IpAddr = [10, 9, 0, w as u8].into();
            while start.elapsed() < window {
                let req = LoginRequest {
                    email: "bench@example.com".into(),
                    password: PASSWORD.into(),
                };
                auth::login(&m, req, ip).await.expect("login");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn validations(m: &Arc<Manager>, window: Duration) -> (f64, f64) {
    let user = m
        .store
        .user_by_email("bench@example.com")
        .await
        .unwrap()
        .unwrap();
    let claims = auth::access_claims(m, &user, "ses_bench", m.clock.now());
    let token = m.keys.sign(&claims).await.unwrap();
    let (iss, aud) = (m.config.issuer.clone(), m.config.audience.clone());
    // Through the key cache (what the manager's bearer check does before its DB reads).
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        m.keys.verify(&token, &iss, &aud).await.unwrap().unwrap();
        n += 1;
    }
    let cached = n as f64 / start.elapsed().as_secs_f64();
    // Signature and claim checks alone (the gateway's per-request work).
    let set = m.keys.current().await.unwrap();
    let public = set.keys[0].key.public_key().to_vec();
    let expect = jwt::Expect {
        issuer: &iss,
        audience: &aud,
        now: m.clock.now(),
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        jwt::verify(&token, |_| Some(public.clone()), &expect).unwrap();
        n += 1;
    }
    (cached, n as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let window = Duration::from_secs(3);
    for db in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(db, dir.path()).await;
        let lps = logins(&m, window).await;
        println!(
            "{db}: logins/s = {lps:.1} (argon2id m=19456 KiB t=2 p=1, {} concurrent hashes)",
            m.config.argon2_concurrency
        );
        let (cached, pure) = validations(&m, window).await;
        println!(
            "{db}: access-token validations/s = {cached:.0} (key cache), {pure:.0} (jwt::verify alone)"
        );
    }
}
