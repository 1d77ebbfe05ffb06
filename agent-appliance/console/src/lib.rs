//! BMC consoles for the agent: the RFB (VNC) security handshake, VNC over TCP and
//! WebSocket, and WebSocket serial consoles.
//!
//! # Layout
//! - [`rfb`]: the sans-IO RFB security handshake, both sides ([`rfb::BmcHandshake`]
//!   toward the BMC, [`rfb::FrontHandshake`] toward the browser), and VNC
//!   Authentication ([`rfb::vnc_auth`]).
//! - [`connect_bmc`] / [`serve_front`]: the thin I/O shell over smol. Transport by URL
//!   scheme: `vnc://host:port` or `host:port` (TCP), `ws://` and `wss://` (binary
//!   WebSocket messages, subprotocol `binary`; `wss` pinned by the SHA-256 of the
//!   BMC's leaf certificate).
//! - [`connect_serial_ws`]: a WebSocket serial console (OpenBMC `console0` style).
//! - [`ws_upgrade`]: the sans-IO WebSocket client upgrade (request, response checks).
//! - [`fuzzing`]: invariant checks for fuzzing the handshake machines.
//!
//! # Use in the agent
//! ```ignore
//! let bmc = connect_bmc(&target, timeout).await?;   // Err(e) -> refuse with e.code()
//! serve_front_within(&mut tunnel_stream, t).await?; // None-only, no credential leaves
//! // then copy bytes both ways, unchanged (ClientInit, ServerInit, the session)
//! ```
//!
//! Error codes ([`Error::code`]): `bmc_unreachable`, `bmc_timeout`, `bmc_auth_failed`,
//! `bmc_tls_pin_mismatch`, `bmc_tls_unpinned`, `bmc_tls_failed`, `bmc_protocol`,
//! `bmc_unsupported`, `bmc_refused`, `bmc_bad_target`, `client_protocol`.

mod error;
pub mod fuzzing;
pub mod rfb;
mod serial;
mod target;
mod tls;
mod transport;
mod vnc;
mod ws;
pub mod ws_upgrade;

pub use error::Error;
pub use serial::{SerialConsole, connect_serial_ws};
pub use target::VncTarget;
pub use vnc::{BmcConsole, connect_bmc, serve_front, serve_front_within};
pub use ws::{MAX_MESSAGE, WsStream};
pub use zeroize::Zeroizing;
