//! The outband wire protocol between agent and gateway.
//!
//! - [`pb`]: the message schema (generated from `schema/outband/v1/tunnel.proto`).
//! - [`codec`]: the length-prefixed frame codec.
//! - [`mux`]: the stream multiplexer with per-stream credit-based flow control and
//!   heartbeats.
//! - [`identity`]: agent ids derived from public keys.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and depends on no
//! async runtime. Bytes and the current time go in; bytes, events and deadlines come
//! out. The agent (smol) and the gateway (tokio) drive the same state machines.
#![warn(missing_docs)]

mod auth;
pub mod codec;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handshake;
pub mod identity;
pub mod mux;

/// Generated protobuf types (package `outband.v1`).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/outband.v1.rs"));
}

/// The highest protocol version this build speaks.
///
/// - 1: the first wire protocol.
/// - 2: the same frames; a receiver also grants credit under the shared window
///   ([`mux::MuxConfig::shared_window`]), so a sender may cap each stream while
///   streams share the connection. A version-1 receiver grants only at a quarter of
///   its window, so a sender capped below that would wait forever: the cap is on
///   only when both ends speak version 2 ([`mux::MuxConfig::for_peer_version`]).
/// - 3: a receiver may raise a stream's window (`WindowUpdate.window`) when the
///   stream moves a whole window per round trip ([`mux::MuxConfig::max_window`]).
///   An older sender counts credit beyond the window it knows as a violation, so
///   windows grow only when both ends speak version 3.
pub const PROTOCOL_VERSION: u32 = 3;
/// The first protocol version whose receivers grant credit under the shared window.
pub const SHARED_WINDOW_VERSION: u32 = 2;
/// The first protocol version whose senders accept a raised window.
pub const WINDOW_GROWTH_VERSION: u32 = 3;
/// The lowest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
