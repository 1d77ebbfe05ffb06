//! End-to-end test harness for outband: real `outband-gateway`, `outband-agent` and
//! QEMU processes talking over loopback.
//!
//! The tests live in `tests/*.rs`; this library holds what they share:
//!
//! - [`context`]: [`TestContext`], one temp dir per test, kept (and every process log
//!   tail printed) when the test fails.
//! - [`process`]: [`Proc`], a child process with its output in files, killed on drop,
//!   with SIGKILL/SIGSTOP/SIGCONT helpers.
//! - [`bins`]: finds (and builds once per test run) the gateway and agent binaries.
//! - [`gateway`] and [`agent`]: start the two binaries with the CLI they document, and
//!   a small client for the gateway's HTTP API.
//! - [`qemu`]: QEMU as a real VNC server (SeaBIOS screen), optionally with a VNC
//!   password and QEMU's own WebSocket port.
//! - [`websockify`]: websockify (optionally TLS with a fresh certificate, optionally
//!   Basic auth) as a real WebSocket server in front of a TCP port.
//! - [`rfb`]: a minimal blocking RFB (VNC) client to check a relay byte for byte.
//! - [`screen`]: PNG decoding and picture comparison that tolerates the blinking cursor.
//! - [`sushy`]: sushy-tools' Redfish emulator over HTTPS with a known certificate pin.
//! - [`ipmi_sim`] and [`pyghmi`]: the two real IPMI BMC simulators (OpenIPMI ipmi_sim
//!   with chassis script and SOL backend; pyghmi's Bmc subclassed) and `ipmitool`.
//! - [`fake_agent`]: a hostile TLS peer that speaks just enough of the agent protocol to
//!   send malformed frames.
//! - [`net`]: free ports, a TCP echo target, reading until the peer closes.
//! - [`wait`]: bounded polling.
//!
//! Running: `cargo nextest run -p outband-e2e`. The harness runs
//! `cargo build -p outband-agent -p outband-gateway --bins` once per test process (a
//! no-op when up to date) so the binaries next to the test binary are current. Set
//! `OUTBAND_E2E_BIN_DIR=/path` to use prebuilt binaries instead, or
//! `OUTBAND_E2E_NO_BUILD=1` to use whatever is in the target dir.
//!
//! A failing test prints the tail of every process log and keeps its temp dir
//! (`/tmp/outband-e2e-NAME-*`); `OUTBAND_E2E_KEEP=1` keeps it for passing tests too.

pub mod agent;
pub mod bins;
pub mod context;
pub mod fake_agent;
pub mod gateway;
pub mod ipmi_sim;
pub mod manager;
pub mod net;
pub mod process;
pub mod pyghmi;
pub mod qemu;
pub mod rfb;
pub mod screen;
pub mod sushy;
pub mod wait;
pub mod websockify;

pub use agent::{Agent, AgentOptions};
pub use context::TestContext;
pub use gateway::{Gateway, GatewayOptions};
pub use process::Proc;
pub use qemu::{QemuVnc, QemuVncOptions};
pub use websockify::{Websockify, WebsockifyOptions};
