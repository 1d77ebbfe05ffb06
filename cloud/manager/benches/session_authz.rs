//! Latency of `POST /api/v1/gateway/session-authz` (through the axum router: gateway
//! token check, access-token verification, session and user lookup, server lookup,
//! authorization, agent check, credential decryption, audit insert) with 10,000
//! servers and 1,000 users in the database, on SQLite and PostgreSQL (a throwaway
//! cluster, or `OUTBAND_TEST_PG_URL`).
//!
//! `cargo bench -p outband-manager --bench session_authz` (plain binary, no harness).
//! Requests mix the four kinds, every role, and ~10 % other-tenant servers (denied).

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body_util::BodyExt;
use outband_api::tenants::Role;
use outband_manager::config::{Config, Database};
use outband_manager::ids::{self, Clock};
use outband_manager::secrets::Credentials;
use outband_manager::store::Store;
use outband_manager::store::sessions::NewSession;
use outband_manager::{Manager, auth, http, users};
use serde_json::json;
use tower::ServiceExt;
use zeroize::Zeroizing;

const TENANTS: usize = 10;
const SERVERS: usize = 10_000;
const USERS: usize = 1_000;
const AGENTS_PER_TENANT: usize = 10;

struct Fixture {
    router: axum::Router,
    gateway_token: String,
    /// (access token, tenant index)
    users: Vec<(String, usize)>,
    /// (server id, tenant index)
    servers: Vec<(String, usize)>,
}

async fn manager(db: &str, dir: &std::path::Path) -> Arc<Manager> {
    let mut config = Config {
        bootstrap_admin: false,
        ..Config::default()
    };
    config.credential_key_file = dir.join("credential.key");
    config.access_ttl = Duration::from_secs(3600);
    let store = if db == "sqlite" {
        config.database = Database::SqliteDir(dir.join("data"));
        outband_manager::open_store(&config.database).await.unwrap()
    } else {
        let url = pg::fresh_database().await;
        config.database = Database::Url(url.clone());
        Store::connect(&url).await.unwrap()
    };
    let m = Manager::new(store, config, Clock::default()).unwrap();
    m.keys.ensure_key().await.unwrap();
    m
}

async fn populate(m: &Arc<Manager>) -> Fixture {
    let now = m.clock.now();
    let pool = m.store.pool();
    let mut tx = pool.begin().await.unwrap();
    let gw = "gw_bench";
    let gateway_token = format!("obg_{}", ids::random_token(32));
    sqlx::query(
        "INSERT INTO gateways (id, name, token_hash, registered_at, created_at) \
         VALUES ($1, 'bench', $2, $3, $3)",
    )
    .bind(gw)
    .bind(ids::hash_token(&gateway_token))
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    for t in 0..TENANTS {
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(format!("ten_{t}"))
            .bind(format!("tenant {t}"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        for a in 0..AGENTS_PER_TENANT {
            sqlx::query(
                "INSERT INTO agents (id, pairing_code, gateway_id, status, tenant_id, \
                 first_seen_at) VALUES ($1, 'CODE', $2, 'adopted', $3, $4)",
            )
            .bind(format!("agt_{t}_{a}"))
            .bind(gw)
            .bind(format!("ten_{t}"))
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    let mut servers = Vec::with_capacity(SERVERS);
    for i in 0..SERVERS {
        let t = i % TENANTS;
        let id = ids::new_id("srv");
        let creds = Credentials {
            username: Zeroizing::new("admin".into()),
            password: Zeroizing::new(format!("bmc password {i}")),
        };
        let (kid, sealed) = m.credential_keys.seal(&id, &creds);
        sqlx::query(
            "INSERT INTO servers (id, tenant_id, name, gateway_id, agent_id, power_url, \
             serial_url, graphical_url, cert_sha256, cred_key_id, cred_blob, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $11)",
        )
        .bind(&id)
        .bind(format!("ten_{t}"))
        .bind(format!("server {i}"))
        .bind(gw)
        .bind(format!("agt_{t}_{}", i % AGENTS_PER_TENANT))
        .bind(format!(
            "ipmi://10.{}.{}.{}:623",
            t,
            (i / 250) % 250,
            i % 250
        ))
        .bind(format!(
            "ipmi://10.{}.{}.{}:623",
            t,
            (i / 250) % 250,
            i % 250
        ))
        .bind(format!(
            "vnc://10.{}.{}.{}:5900",
            t,
            (i / 250) % 250,
            i % 250
        ))
        .bind(kid)
        .bind(sealed)
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
        servers.push((id, t));
    }
    tx.commit().await.unwrap();
    // Users: one argon2 hash shared by all (hashing is not what is measured).
    let hash = outband_manager::password::hash_blocking("bench user password").unwrap();
    let mut users_out = Vec::with_capacity(USERS);
    for u in 0..USERS {
        let t = u % TENANTS;
        let role = [Role::Viewer, Role::Operator, Role::Admin][u % 3];
        let row = users::new_user_row(
            &m.clock,
            format!("user{u}@bench.example"),
            hash.clone(),
            false,
            false,
            Some((format!("ten_{t}"), role)),
        );
        m.store.insert_user(&row).await.unwrap();
        let sid = ids::new_id("ses");
        m.store
            .create_session(&NewSession {
                session_id: &sid,
                user_id: &row.id,
                source_ip: None,
                token_hash: &ids::hash_token(&ids::new_refresh_token()),
                now,
                token_expires_at: now + 3600,
                session_expires_at: now + 3600,
            })
            .await
            .unwrap();
        let token = m
            .keys
            .sign(&auth::access_claims(m, &row, &sid, now))
            .await
            .unwrap();
        users_out.push((token, t));
    }
    Fixture {
        router: http::router(m.clone()),
        gateway_token,
        users: users_out,
        servers,
    }
}

/// One request; returns (latency, allowed).
async fn one(f: &Fixture, i: usize) -> (Duration, bool) {
    let (token, t) = &f.users[(i * 7919) % f.users.len()];
    // ~10 % other-tenant servers.
    let want_foreign = i.is_multiple_of(10);
    let mut k = (i * 104_729) % f.servers.len();
    while (f.servers[k].1 == *t) == want_foreign {
        k = (k + 1) % f.servers.len();
    }
    let kind = ["power_status", "power_control", "serial", "graphical"][i % 4];
    let body = json!({"access_token": token, "server_id": f.servers[k].0, "kind": kind});
    let mut req = Request::post("/api/v1/gateway/session-authz")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", f.gateway_token))
        .body(Body::from(body.to_string()))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let start = Instant::now();
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let elapsed = start.elapsed();
    assert!(status.is_success(), "{status}");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    (elapsed, v["allowed"] == true)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(f: Arc<Fixture>, n: usize, concurrency: usize) -> (Vec<Duration>, usize, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n / concurrency);
            let mut allowed = 0;
            for j in 0..n / concurrency {
                let (d, ok) = one(&f, j * concurrency + c).await;
                out.push(d);
                allowed += usize::from(ok);
            }
            (out, allowed)
        }));
    }
    let mut all = Vec::with_capacity(n);
    let mut allowed = 0;
    for t in tasks {
        let (d, a) = t.await.unwrap();
        all.extend(d);
        allowed += a;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (all, allowed, rate)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    for db in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(db, dir.path()).await;
        let t = Instant::now();
        let f = Arc::new(populate(&m).await);
        println!(
            "{db}: populated {SERVERS} servers, {USERS} users (with live sessions), {} agents in {:.1} s",
            TENANTS * AGENTS_PER_TENANT,
            t.elapsed().as_secs_f64()
        );
        run(f.clone(), 400, 1).await; // warm-up
        for concurrency in [1, 4] {
            let (lat, allowed, rate) = run(f.clone(), n, concurrency).await;
            println!(
                "{db}: session-authz, {concurrency} concurrent: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {rate:.0} req/s ({} requests, {} allowed)",
                pct(&lat, 0.50),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
                lat.len(),
                allowed,
            );
        }
        m.store.close().await;
    }
}
