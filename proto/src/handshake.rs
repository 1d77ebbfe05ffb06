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

/// Join tokens start with this (the manager issues `objt_` + random).
pub const JOIN_TOKEN_PREFIX: &str = "objt_";
/// Longest join token in a hello, in bytes (the manager's limit as well).
pub const MAX_JOIN_TOKEN_LEN: usize = 128;
/// Longest `JoinResult.message` an agent keeps; longer ones are cut.
pub const MAX_JOIN_MESSAGE_LEN: usize = 256;

/// Whether `token` has the shape of a join token: the prefix, at most
/// [`MAX_JOIN_TOKEN_LEN`] bytes, printable ASCII without spaces. The error never
/// contains the token.
pub fn check_join_token(token: &str) -> Result<(), String> {
    if token.len() > MAX_JOIN_TOKEN_LEN {
        return Err(format!(
            "join token is {} bytes, at most {MAX_JOIN_TOKEN_LEN} allowed",
            token.len()
        ));
    }
    if !token.starts_with(JOIN_TOKEN_PREFIX) || token.len() == JOIN_TOKEN_PREFIX.len() {
        return Err(format!(
            "join token does not start with {JOIN_TOKEN_PREFIX:?} followed by the secret"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("join token has characters other than printable ASCII".into());
    }
    Ok(())
}

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
            join_token: String::new(),
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
    if hello.join_token.len() > MAX_JOIN_TOKEN_LEN {
        return Err(format!("join_token longer than {MAX_JOIN_TOKEN_LEN} bytes"));
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
        assert_eq!(
            negotiate(&h(1, 1)),
            Ok(1),
            "a version-1 agent is still served"
        );
        assert!(negotiate(&h(PROTOCOL_VERSION + 1, 9)).is_err());
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
        let mut token = h(1, 1);
        token.join_token = format!("objt_{}", "a".repeat(123));
        assert!(validate_hello(&token).is_ok());
        token.join_token.push('a');
        let err = validate_hello(&token).unwrap_err();
        assert!(
            err.contains("join_token") && !err.contains("objt_"),
            "{err}"
        );
    }

    #[test]
    fn join_token_shape() {
        assert!(check_join_token("objt_abc-DEF_123").is_ok());
        assert!(check_join_token(&format!("objt_{}", "x".repeat(123))).is_ok());
        for bad in [
            String::new(),
            "objt_".into(),
            "obgr_secretcanary".into(),
            "objt_with spacecanary".into(),
            "objt_nonascii\u{e9}canary".into(),
            format!("objt_{}canary", "x".repeat(130)),
        ] {
            let err = check_join_token(&bad).unwrap_err();
            assert!(!err.contains("canary"), "{err}");
        }
    }
}
