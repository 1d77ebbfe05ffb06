//! The IPMI LAN message inside a session payload (IPMI 2.0 section 13.8): rsAddr,
//! netFn/rsLUN, checksum, rqAddr, rqSeq/rqLUN, command, data, checksum; and the
//! completion codes of responses.

use thiserror::Error;

/// The BMC's slave address.
pub const BMC_ADDR: u8 = 0x20;
/// The remote console's software id as requester address.
pub const CONSOLE_ADDR: u8 = 0x81;

/// Network functions (requests; the response netFn is the request's + 1).
pub mod netfn {
    /// Chassis.
    pub const CHASSIS: u8 = 0x00;
    /// Application.
    pub const APP: u8 = 0x06;
}

/// Why a response message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Shorter than the 8-byte minimum of a response.
    #[error("IPMI response too short ({0} bytes)")]
    Truncated(usize),
    /// A checksum does not add up to zero.
    #[error("IPMI message checksum {0} is wrong")]
    Checksum(u8),
}

/// The two's complement checksum: the byte that makes `data` sum to 0 mod 256.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Encodes a request from the console to the BMC. `seq` is the 6-bit rqSeq.
pub fn encode_request(netfn: u8, cmd: u8, seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + data.len());
    m.push(BMC_ADDR);
    m.push(netfn << 2);
    m.push(checksum(&m[0..2]));
    m.push(CONSOLE_ADDR);
    m.push((seq & 0x3f) << 2);
    m.push(cmd);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// A response from the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response netFn (request netFn + 1).
    pub netfn: u8,
    /// The rqSeq echoed.
    pub seq: u8,
    /// The command echoed.
    pub cmd: u8,
    /// The completion code (0 is success).
    pub completion: u8,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

/// Parses a response message and checks both checksums.
pub fn decode_response(m: &[u8]) -> Result<Response, MessageError> {
    if m.len() < 8 {
        return Err(MessageError::Truncated(m.len()));
    }
    if checksum(&m[0..3]) != 0 {
        return Err(MessageError::Checksum(1));
    }
    if checksum(&m[3..]) != 0 {
        return Err(MessageError::Checksum(2));
    }
    Ok(Response {
        netfn: m[1] >> 2,
        seq: m[4] >> 2,
        cmd: m[5],
        completion: m[6],
        data: m[7..m.len() - 1].to_vec(),
    })
}

/// A short description of a completion code (IPMI 2.0 table 5-2).
pub fn completion_text(cc: u8) -> &'static str {
    match cc {
        0x00 => "success",
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "command invalid for given LUN",
        0xc3 => "timeout while processing command",
        0xc4 => "out of space",
        0xc5 => "reservation canceled or invalid",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return number of requested data bytes",
        0xcb => "requested sensor, data, or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for specified sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "cannot execute duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in present state",
        0xd6 => "command sub-function disabled or unavailable",
        0x80..=0xbe => "command-specific error",
        _ => "unspecified error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        // Get Channel Authentication Capabilities, channel 0x8e, admin, rqSeq 0.
        // Checksums by hand: -(0x20+0x18) = 0xc8; -(0x81+0x38+0x8e+0x04) = 0xb5.
        assert_eq!(
            encode_request(netfn::APP, 0x38, 0, &[0x8e, 0x04]),
            [0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5]
        );
    }

    #[test]
    fn response_parse() {
        let mut m = vec![0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0x00, 0x01, 0x97];
        let cs = checksum(&m[3..m.len() - 1]);
        let n = m.len();
        m[n - 1] = cs;
        let r = decode_response(&m).unwrap();
        assert_eq!((r.netfn, r.seq, r.cmd, r.completion), (0x07, 1, 0x38, 0));
        assert_eq!(r.data, [0x01]);
        m[7] ^= 1;
        assert_eq!(decode_response(&m), Err(MessageError::Checksum(2)));
        assert_eq!(decode_response(&m[..5]), Err(MessageError::Truncated(5)));
    }
}
