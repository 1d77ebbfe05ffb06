//! IPMI 2.0 over LAN (RMCP+, "lanplus") for the outband agent, written natively: no
//! ipmitool subprocess.
//!
//! ```no_run
//! # async fn f() -> Result<(), outband_ipmi::Error> {
//! use outband_ipmi::{Credentials, Options, Session, ChassisAction};
//! let creds = Credentials::new("admin", "password");
//! let mut s = Session::open("10.0.0.5:623".parse().unwrap(), &creds, &Options::default()).await?;
//! if !s.chassis_status().await?.power_on {
//!     s.chassis_control(ChassisAction::PowerOn).await?;
//! }
//! s.close().await?;
//! # Ok(()) }
//! ```
//!
//! Layout (sans-IO core first, the smol shell last):
//! - [`asf`]: RMCP/ASF presence ping and pong (discovery).
//! - [`crypto`]: HMAC-SHA1/SHA256 (ring), AES-CBC-128, session key derivation.
//! - [`packet`]: RMCP, IPMI 1.5 and RMCP+ framing, integrity trailer, encryption.
//! - [`message`]: IPMI request/response messages with checksums, completion codes.
//! - [`rakp`]: Open Session and RAKP 1-4, the accepted cipher suites (17 and 3).
//! - [`commands`]: typed commands (device id, chassis, boot options, SOL activation).
//! - [`conn`]: the session state machine (datagrams, deadlines and entropy passed in).
//! - [`v15`]: IPMI 1.5 session framing and AuthCodes (opt-in only).
//! - [`sol`]: Serial over LAN flow (sequence numbers, acks, partial acceptance).
//! - [`client`]: [`Session`] and [`Sol`] on smol UDP sockets and timers.
//! - [`fuzzing`]: a never-panics / round-trip check for the packet parser.
//!
//! Safe by default: only cipher suites 17 and 3 (authentication, integrity and
//! AES encryption) are ever proposed; null user names are refused; IPMI 1.5 sessions
//! (authenticated, not encrypted, no SOL) only with `Options::allow_ipmi15` and a BMC
//! without IPMI 2.0 (or `force_ipmi15`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod asf;
pub mod client;
pub mod commands;
pub mod conn;
pub mod crypto;
pub mod error;
pub mod fuzzing;
pub mod message;
pub mod packet;
pub mod rakp;
pub mod sol;
pub mod v15;

pub use client::{Credentials, Options, Session, Sol};
pub use commands::{BootDevice, ChassisAction, ChassisStatus, DeviceId, Privilege};
pub use error::{Error, ErrorKind};
