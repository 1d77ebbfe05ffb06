//! RMCP/ASF presence ping and pong (DMTF DSP0136, ASF 2.0 section 3.2.4).
//!
//! A presence ping is sent to UDP port 623; a BMC that speaks RMCP answers with a
//! presence pong saying whether it supports IPMI. This needs no session and no
//! credentials, so a discovery scanner can use it to find BMCs.
//!
//! ```
//! let ping = outband_ipmi::asf::presence_ping(7);
//! assert_eq!(ping.len(), 12);
//! ```

use thiserror::Error;

/// RMCP version 1.0 (the only one defined).
pub const RMCP_VERSION: u8 = 0x06;
/// RMCP sequence number meaning "do not send an RMCP ACK".
pub const RMCP_SEQ_NO_ACK: u8 = 0xff;
/// RMCP message class: ASF.
pub const RMCP_CLASS_ASF: u8 = 0x06;
/// The ASF IANA enterprise number (4542), as found in ASF messages.
pub const ASF_IANA: u32 = 4542;
/// ASF message type: presence ping.
pub const ASF_TYPE_PING: u8 = 0x80;
/// ASF message type: presence pong.
pub const ASF_TYPE_PONG: u8 = 0x40;
/// Length of a presence pong: RMCP header (4), ASF header (8), pong data (16).
pub const PONG_LEN: usize = 28;

/// A parsed presence pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The message tag, echoed from the ping.
    pub tag: u8,
    /// IANA enterprise number of the responder's OEM (4542 when no OEM-specific data).
    pub iana: u32,
    /// OEM-defined data.
    pub oem: u32,
    /// Supported entities byte: bit 7 is "IPMI supported", bits 3:0 the ASF version.
    pub entities: u8,
    /// Supported interactions byte: bit 5 "RMCP security extensions" (RMCP+ hint),
    /// bit 0 "DASH supported".
    pub interactions: u8,
}

impl Pong {
    /// Whether the responder says it supports IPMI (entities bit 7).
    pub fn ipmi_supported(&self) -> bool {
        self.entities & 0x80 != 0
    }

    /// Whether the responder advertises RMCP security extensions (interactions bit 5).
    pub fn security_extensions(&self) -> bool {
        self.interactions & 0x20 != 0
    }
}

/// Why a datagram is not a presence pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PongError {
    /// Shorter than a presence pong.
    #[error("presence pong too short: {0} bytes, need {PONG_LEN}")]
    Truncated(usize),
    /// The RMCP header is not version 1.0 / class ASF.
    #[error("not an RMCP ASF message (version {version:#04x}, class {class:#04x})")]
    NotAsf {
        /// RMCP version byte.
        version: u8,
        /// RMCP class byte.
        class: u8,
    },
    /// The ASF header is not the ASF IANA number.
    #[error("ASF message with IANA {0}, expected 4542")]
    BadIana(u32),
    /// Another ASF message type (e.g. a ping).
    #[error("ASF message type {0:#04x} is not a presence pong")]
    NotPong(u8),
    /// The ASF data length is not 16.
    #[error("presence pong data length {0}, expected 16")]
    BadLength(u8),
}

/// A presence ping with message tag `tag` (0..=254; 255 means "no response needed"
/// in ASF, so a scanner should avoid it). Send it to UDP port 623.
pub fn presence_ping(tag: u8) -> [u8; 12] {
    let iana = ASF_IANA.to_be_bytes();
    [
        RMCP_VERSION,
        0x00,
        RMCP_SEQ_NO_ACK,
        RMCP_CLASS_ASF,
        iana[0],
        iana[1],
        iana[2],
        iana[3],
        ASF_TYPE_PING,
        tag,
        0x00,
        0x00,
    ]
}

/// Parses a presence pong. Trailing bytes after the 28 defined ones are ignored.
pub fn parse_pong(data: &[u8]) -> Result<Pong, PongError> {
    let d: &[u8; PONG_LEN] = data
        .get(..PONG_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(PongError::Truncated(data.len()))?;
    if d[0] != RMCP_VERSION || d[3] != RMCP_CLASS_ASF {
        return Err(PongError::NotAsf {
            version: d[0],
            class: d[3],
        });
    }
    let iana = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    if iana != ASF_IANA {
        return Err(PongError::BadIana(iana));
    }
    if d[8] != ASF_TYPE_PONG {
        return Err(PongError::NotPong(d[8]));
    }
    if d[11] != 16 {
        return Err(PongError::BadLength(d[11]));
    }
    Ok(Pong {
        tag: d[9],
        iana: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
        oem: u32::from_be_bytes([d[16], d[17], d[18], d[19]]),
        entities: d[20],
        interactions: d[21],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_bytes() {
        // ASF 2.0, 3.2.4.1 / IPMI 2.0 13.2.3: 06 00 ff 06 | 00 00 11 be 80 TAG 00 00
        assert_eq!(
            presence_ping(0x2a),
            [
                0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x2a, 0x00, 0x00
            ]
        );
    }

    // The pong OpenIPMI ipmi_sim 2.0.33 sends to a ping with tag 0x2a (received with a
    // Python UDP socket on loopback).
    const SIM_PONG: [u8; 28] = [
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, 0x2a, 0x00, 0x10, 0x00, 0x00, 0x11,
        0xbe, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn pong_parses() {
        let p = parse_pong(&SIM_PONG).unwrap();
        assert_eq!(p.tag, 0x2a);
        assert_eq!(p.iana, 4542);
        assert!(p.ipmi_supported());
        assert!(!p.security_extensions());
    }

    #[test]
    fn pong_rejects() {
        assert_eq!(parse_pong(&SIM_PONG[..27]), Err(PongError::Truncated(27)));
        let mut p = SIM_PONG;
        p[8] = 0x80;
        assert_eq!(parse_pong(&p), Err(PongError::NotPong(0x80)));
        let mut p = SIM_PONG;
        p[3] = 0x07;
        assert!(matches!(parse_pong(&p), Err(PongError::NotAsf { .. })));
        let mut p = SIM_PONG;
        p[7] = 0xbf;
        assert_eq!(parse_pong(&p), Err(PongError::BadIana(4543)));
        let mut p = SIM_PONG;
        p[11] = 0x20;
        assert_eq!(parse_pong(&p), Err(PongError::BadLength(0x20)));
        assert_eq!(parse_pong(&[]), Err(PongError::Truncated(0)));
    }
}
