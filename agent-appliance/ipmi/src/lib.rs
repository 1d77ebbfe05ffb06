//! IPMI 2.0 over LAN (RMCP+, "lanplus") for the outband agent, written natively.
//!
//! Layout:
//! - [`asf`]: RMCP/ASF presence ping and pong (discovery of BMCs on a network).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod asf;
pub mod commands;
pub mod conn;
pub mod crypto;
pub mod error;
pub mod message;
pub mod packet;
pub mod rakp;
pub mod sol;
