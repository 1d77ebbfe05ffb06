//! Plain request and response types of the outband manager's REST API.
//!
//! Shared by the manager (server side), the gateway and the CLI (client side) so the
//! wire shapes cannot drift. Only serde here: no HTTP, no database, no crypto, so any
//! client can link it (design invariant: the gateway and the CLI link no server crate).
//!
//! Requests reject unknown fields; responses tolerate them (clients stay compatible
//! with a newer manager that adds fields). The `openapi` feature adds utoipa schema
//! derives for the manager's generated OpenAPI document; clients leave it off.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agents;
pub mod audit;
pub mod auth;
pub mod error;
pub mod gateways;
pub mod jwks;
pub mod ops;
pub mod servers;
pub mod tenants;

pub use error::{ErrorBody, ErrorDetail};
