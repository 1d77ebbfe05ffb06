//! Redfish client for the agent: power state, `ComputerSystem.Reset`, boot override.
//!
//! Blocking (std sockets, rustls, a small HTTP/1.1 client of its own); the smol agent runs it with `smol::unblock`. What it guarantees:
//!
//! - **Trust**: HTTPS with the BMC certificate pinned by SHA-256 fingerprint
//!   ([`TlsPolicy::Pinned`]), checked before any credential is sent; trust on first
//!   use or plain HTTP only when the caller asks. Handshake signatures are always
//!   verified ([`tls`]).
//! - **Credentials** go only to the origin named by the caller: links and redirects
//!   to another scheme, host or port are refused ([`origin`]). The password is wiped
//!   on drop and never printed ([`Credentials`]).
//! - **Sessions** (SessionService) are DELETEd on every path: [`Client::close`], or
//!   `Drop` on errors and unwinding. Without a SessionService, Basic auth.
//! - **Bounds**: bodies up to [`http::MAX_BODY`], headers up to [`http::MAX_HEADER`],
//!   connect and total deadlines per request ([`Timeouts`]).
//! - **Errors** carry a stable [`Error::code`].
//!
//! ```no_run
//! use outband_redfish::{Client, Credentials, ResetType, Timeouts, TlsPolicy};
//! let pin = "ab12…".parse().unwrap();
//! let creds = Credentials::new("admin", "password");
//! let bmc = Client::connect("https://10.0.0.5", &creds, TlsPolicy::Pinned(pin), Timeouts::default())?;
//! let sys = bmc.default_system()?;
//! println!("{:?}", bmc.power_state(&sys)?);
//! bmc.reset(&sys, ResetType::ForceRestart)?;
//! bmc.close()?;
//! # Ok::<(), outband_redfish::Error>(())
//! ```
#![warn(missing_docs)]

mod client;
mod creds;
mod error;
pub mod http;
pub mod model;
pub mod origin;
mod probe;
mod session;
pub mod tls;
mod wire;

pub use client::{Client, ROOT, SystemId};
pub use creds::Credentials;
pub use error::{Error, Result};
pub use http::Timeouts;
pub use model::{BootOverride, BootTarget, ComputerSystem, PowerState, ResetType, ServiceRoot};
pub use probe::{Probe, probe};
pub use tls::{Fingerprint, TlsPolicy};
