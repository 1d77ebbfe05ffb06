//! The hello exchange that starts every agent connection, before the multiplexer runs.
//!
//! agent → gateway: `Hello { min_version, max_version, capabilities, ... }`
//! gateway → agent: `HelloAck { version, ... }` or `GoAway { reason }`.

use crate::pb::{self, Frame, frame};
use crate::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Capability: the agent relays raw TCP streams.
pub const CAP_TCP_RELAY: &str = "tcp-relay";
/// Capability: `StreamKind::VNC` streams (the agent does the BMC's RFB login).
pub const CAP_VNC_CONSOLE: &str = "vnc-console";
/// Capability: `StreamKind::SERIAL` streams (IPMI SOL, WebSocket serial).
pub const CAP_SERIAL_CONSOLE: &str = "serial-console";
/// Capability: power, BMC identity and boot device requests (IPMI, Redfish).
pub const CAP_BMC_REQUESTS: &str = "bmc-requests";
/// Capability: the agent reports BMCs it discovered in its inventory.
pub const CAP_DISCOVERY: &str = "discovery";

/// Builds a hello that advertises only the raw TCP relay (the minimal agent, as
/// test doubles are).
pub fn hello(agent_version: &str, pairing_code: &str, initial_window: u32) -> Frame {
    hello_with(
        agent_version,
        pairing_code,
        initial_window,
        &[CAP_TCP_RELAY],
    )
}

/// Builds the agent's hello with its capabilities.
pub fn hello_with(
    agent_version: &str,
    pairing_code: &str,
    initial_window: u32,
    capabilities: &[&str],
) -> Frame {
    Frame {
        kind: Some(frame::Kind::Hello(pb::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            agent_version: agent_version.to_owned(),
            pairing_code: pairing_code.to_owned(),
            initial_window,
        })),
    }
}

/// Picks the protocol version for a hello, or says why there is none.
pub fn negotiate(hello: &pb::Hello) -> Result<u32, String> {
    if hello.min_version > hello.max_version {
        return Err(format!(
            "hello has min_version {} > max_version {}",
            hello.min_version, hello.max_version
        ));
    }
    let version = hello.max_version.min(PROTOCOL_VERSION);
    if version < hello.min_version || version < MIN_PROTOCOL_VERSION {
        return Err(format!(
            "no common protocol version: agent speaks {}..={}, gateway {}..={}",
            hello.min_version, hello.max_version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
        ));
    }
    Ok(version)
}

/// Limits on hello fields a gateway accepts (hostile input is bounded).
pub fn validate_hello(hello: &pb::Hello) -> Result<(), String> {
    if hello.agent_version.len() > 128 {
        return Err("agent_version longer than 128 bytes".into());
    }
    if hello.pairing_code.len() > 32 {
        return Err("pairing_code longer than 32 bytes".into());
    }
    if hello.capabilities.len() > 64 || hello.capabilities.iter().any(|c| c.len() > 64) {
        return Err("too many or too long capabilities".into());
    }
    if hello.initial_window < 1024 || hello.initial_window > 16 * 1024 * 1024 {
        return Err(format!(
            "initial_window {} outside 1 KiB..=16 MiB",
            hello.initial_window
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(min: u32, max: u32) -> pb::Hello {
        pb::Hello {
            min_version: min,
            max_version: max,
            initial_window: 65536,
            ..Default::default()
        }
    }

    #[test]
    fn negotiates_highest_common() {
        assert_eq!(negotiate(&h(1, 1)), Ok(1));
        assert_eq!(negotiate(&h(1, 9)), Ok(PROTOCOL_VERSION));
        assert!(negotiate(&h(2, 9)).is_err());
        assert!(negotiate(&h(3, 2)).is_err());
        assert!(negotiate(&h(0, 0)).is_err());
    }

    #[test]
    fn validates_bounds() {
        assert!(validate_hello(&h(1, 1)).is_ok());
        let mut bad = h(1, 1);
        bad.initial_window = 0;
        assert!(validate_hello(&bad).is_err());
        let mut bad = h(1, 1);
        bad.agent_version = "x".repeat(129);
        assert!(validate_hello(&bad).is_err());
    }
}
