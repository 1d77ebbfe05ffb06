//! The manager's API tests, run in-process against the axum router. Every test runs
//! twice: on SQLite and on a real PostgreSQL (see `../common/pg.rs`).

#[path = "../common/pg.rs"]
#[allow(dead_code)]
mod pg;

mod ctx;

mod admin_ops;
mod agents;
mod audit;
mod denials;
mod events;
mod flood;
mod gateways;
mod jwt_attacks;
mod keys;
mod login;
mod ops;
mod password;
mod proxy;
mod refresh;
mod revocations;
mod servers;
mod tenants;
mod tls;
