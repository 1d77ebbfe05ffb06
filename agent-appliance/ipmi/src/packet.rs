//! RMCP and session framing: the RMCP header, the IPMI 1.5 session wrapper (used only
//! for the pre-session Get Channel Authentication Capabilities exchange), and the
//! IPMI 2.0 RMCP+ session header with its integrity trailer and AES-CBC-128 payload
//! encryption (IPMI 2.0 sections 13.6, 13.8, 13.28-13.29).
//!
//! Every length read from a packet is checked against the packet before use, and no
//! packet longer than [`MAX_PACKET`] is parsed or produced.

use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{IntegrityAlg, aes_cbc_decrypt, aes_cbc_encrypt, ct_eq};

/// Hard maximum size of an RMCP packet, sent or received.
pub const MAX_PACKET: usize = 1024;

/// RMCP header for IPMI messages: version 1.0, reserved, no RMCP ACK, class IPMI.
pub const RMCP_IPMI: [u8; 4] = [0x06, 0x00, 0xff, 0x07];

/// Auth type / format byte of an RMCP+ session header.
const FORMAT_RMCPP: u8 = 0x06;
/// Next header byte of the integrity trailer.
const NEXT_HEADER: u8 = 0x07;
/// Session header length from the auth type byte through the payload length.
const V2_HEADER: usize = 12;

/// RMCP+ payload types (IPMI 2.0 table 13-16).
pub mod payload {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// Serial over LAN.
    pub const SOL: u8 = 0x01;
    /// OEM explicit (carries an IANA and OEM payload id; not supported here).
    pub const OEM: u8 = 0x02;
    /// RMCP+ Open Session Request.
    pub const OPEN_SESSION_REQ: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_SESSION_RESP: u8 = 0x11;
    /// RAKP Message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP Message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP Message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP Message 4.
    pub const RAKP4: u8 = 0x15;
}

/// Why a packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Larger than [`MAX_PACKET`].
    #[error("packet of {0} bytes exceeds the {MAX_PACKET}-byte maximum")]
    TooLarge(usize),
    /// Ends before a field it announces.
    #[error("packet truncated: {0}")]
    Truncated(&'static str),
    /// Not an RMCP IPMI-class packet.
    #[error("not an RMCP IPMI packet (header {0:02x?})")]
    NotIpmi([u8; 4]),
    /// An auth type other than none (IPMI 1.5) or RMCP+.
    #[error("unsupported session auth type {0:#04x}")]
    AuthType(u8),
    /// Bytes left over, or a trailer that does not add up.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The integrity AuthCode does not match.
    #[error("integrity check failed")]
    Integrity,
    /// A payload that should be authenticated/encrypted is not, or vice versa.
    #[error(
        "payload security flags do not match the session (encrypted {encrypted}, authenticated {authenticated})"
    )]
    Security {
        /// The encrypted bit of the packet.
        encrypted: bool,
        /// The authenticated bit of the packet.
        authenticated: bool,
    },
    /// OEM payloads are not supported.
    #[error("unsupported payload type {0:#04x}")]
    PayloadType(u8),
}

/// The keys an active session uses to protect its packets.
#[derive(Clone)]
pub struct Security {
    /// The integrity algorithm.
    pub integrity: IntegrityAlg,
    /// K1.
    pub k1: Zeroizing<Vec<u8>>,
    /// The AES-CBC-128 key, when payloads are encrypted.
    pub aes_key: Option<Zeroizing<[u8; 16]>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("integrity", &self.integrity)
            .field("encrypted", &self.aes_key.is_some())
            .finish_non_exhaustive()
    }
}

/// A decoded RMCP+ packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Packet {
    /// Payload type (bits 5:0).
    pub payload_type: u8,
    /// The session id in the header (the receiver's id for the session; 0 before).
    pub session_id: u32,
    /// The session sequence number (0 outside a session).
    pub seq: u32,
    /// The payload, decrypted.
    pub payload: Vec<u8>,
}

/// A decoded packet from a BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// An IPMI 1.5 session wrapper with auth type none: the IPMI message inside.
    V15(Vec<u8>),
    /// An RMCP+ packet.
    V2(V2Packet),
}

/// Wraps an IPMI message in RMCP and an IPMI 1.5 session header with auth type none,
/// session id 0 and sequence 0 (only valid outside a session).
pub fn encode_v15(msg: &[u8]) -> Result<Vec<u8>, PacketError> {
    let len = u8::try_from(msg.len()).map_err(|_| PacketError::TooLarge(msg.len()))?;
    let mut out = Vec::with_capacity(14 + msg.len());
    out.extend_from_slice(&RMCP_IPMI);
    out.push(0x00); // auth type none
    out.extend_from_slice(&[0; 8]); // sequence, session id
    out.push(len);
    out.extend_from_slice(msg);
    Ok(out)
}

/// Builds an RMCP+ packet. With `sec`, the payload is authenticated (and encrypted
/// with `iv` when the session has an AES key); without, it is sent in the clear (the
/// session establishment messages).
pub fn encode_v2(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    sec: Option<&Security>,
    iv: &[u8; 16],
) -> Result<Vec<u8>, PacketError> {
    let mut body: Vec<u8>;
    let mut ptype = payload_type & 0x3f;
    let body_ref: &[u8] = match sec.and_then(|s| s.aes_key.as_ref()) {
        Some(key) => {
            // Confidentiality trailer: pad bytes 1, 2, 3, ... then the pad length, so
            // that payload + pad + 1 is a multiple of the 16-byte block.
            let pad = (16 - (payload.len() + 1) % 16) % 16;
            body = Vec::with_capacity(16 + payload.len() + pad + 1);
            body.extend_from_slice(iv);
            body.extend_from_slice(payload);
            body.extend((1..=pad as u8).collect::<Vec<_>>());
            body.push(pad as u8);
            aes_cbc_encrypt(key, iv, &mut body[16..]);
            ptype |= 0x80;
            &body
        }
        None => payload,
    };
    if sec.is_some() {
        ptype |= 0x40;
    }
    let len = u16::try_from(body_ref.len()).map_err(|_| PacketError::TooLarge(body_ref.len()))?;
    let mut out = Vec::with_capacity(4 + V2_HEADER + body_ref.len() + 4 + 16);
    out.extend_from_slice(&RMCP_IPMI);
    out.push(FORMAT_RMCPP);
    out.push(ptype);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body_ref);
    if let Some(sec) = sec {
        // Integrity pad: 0xff so that auth type .. next header is a multiple of 4.
        let covered = V2_HEADER + body_ref.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xffu8, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let mac = sec.integrity.mac(&sec.k1, &out[4..]);
        out.extend_from_slice(&mac);
    }
    if out.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(out.len()));
    }
    Ok(out)
}

fn get<'a>(
    data: &'a [u8],
    range: std::ops::Range<usize>,
    what: &'static str,
) -> Result<&'a [u8], PacketError> {
    data.get(range).ok_or(PacketError::Truncated(what))
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Parses a packet from a BMC. `sec` is the session's keys once it is active: then
/// every RMCP+ packet must be authenticated (and encrypted if the session encrypts),
/// and before that none may be.
pub fn decode(data: &[u8], sec: Option<&Security>) -> Result<Packet, PacketError> {
    if data.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(data.len()));
    }
    let rmcp = get(data, 0..4, "RMCP header")?;
    if rmcp != RMCP_IPMI {
        let mut h = [0u8; 4];
        h.copy_from_slice(rmcp);
        return Err(PacketError::NotIpmi(h));
    }
    let auth_type = *data.get(4).ok_or(PacketError::Truncated("auth type"))?;
    match auth_type {
        0x00 => {
            // IPMI 1.5 wrapper, auth type none: seq (4), session id (4), length (1).
            let hdr = get(data, 5..14, "IPMI 1.5 header")?;
            // Only the pre-session exchange uses this wrapper: sequence and session
            // id must be 0.
            if hdr[..8].iter().any(|&b| b != 0) {
                return Err(PacketError::Malformed("IPMI 1.5 packet with a session"));
            }
            let len = hdr[8] as usize;
            let msg = get(data, 14..14 + len, "IPMI 1.5 message")?;
            // Some BMCs add a legacy pad byte; anything more is malformed.
            if data.len() > 14 + len + 1 {
                return Err(PacketError::Malformed("bytes after the IPMI 1.5 message"));
            }
            Ok(Packet::V15(msg.to_vec()))
        }
        FORMAT_RMCPP => decode_v2(data, sec).map(Packet::V2),
        other => Err(PacketError::AuthType(other)),
    }
}

fn decode_v2(data: &[u8], sec: Option<&Security>) -> Result<V2Packet, PacketError> {
    let hdr = get(data, 4..16, "RMCP+ session header")?;
    let encrypted = hdr[1] & 0x80 != 0;
    let authenticated = hdr[1] & 0x40 != 0;
    let payload_type = hdr[1] & 0x3f;
    if payload_type == payload::OEM {
        return Err(PacketError::PayloadType(payload_type));
    }
    let session_id = le32(&hdr[2..6]);
    let seq = le32(&hdr[6..10]);
    let len = u16::from_le_bytes([hdr[10], hdr[11]]) as usize;
    let body = get(data, 16..16 + len, "payload")?;
    let rest = data.get(16 + len..).unwrap_or_default();
    let want_enc = sec.is_some_and(|s| s.aes_key.is_some());
    if authenticated != sec.is_some() || encrypted != want_enc {
        return Err(PacketError::Security {
            encrypted,
            authenticated,
        });
    }
    if let Some(sec) = sec {
        let mac_len = sec.integrity.len();
        // pad (0-3), pad length, next header, AuthCode
        if rest.len() < 2 + mac_len || rest.len() > 5 + mac_len {
            return Err(PacketError::Malformed("integrity trailer length"));
        }
        let pad = rest.len() - 2 - mac_len;
        if rest[pad] as usize != pad || rest[pad + 1] != NEXT_HEADER {
            return Err(PacketError::Malformed(
                "integrity pad length or next header",
            ));
        }
        let covered = &data[4..data.len() - mac_len];
        if !covered.len().is_multiple_of(4) {
            return Err(PacketError::Malformed("integrity pad alignment"));
        }
        let mac = sec.integrity.mac(&sec.k1, covered);
        if !ct_eq(&mac, &data[data.len() - mac_len..]) {
            return Err(PacketError::Integrity);
        }
    } else if !rest.is_empty() {
        return Err(PacketError::Malformed("bytes after the payload"));
    }
    let payload = match sec.and_then(|s| s.aes_key.as_ref()) {
        Some(key) => {
            if body.len() < 32 || body.len() % 16 != 0 {
                return Err(PacketError::Malformed("encrypted payload length"));
            }
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&body[..16]);
            let mut plain = body[16..].to_vec();
            aes_cbc_decrypt(key, &iv, &mut plain);
            let pad = *plain
                .last()
                .ok_or(PacketError::Truncated("confidentiality pad"))?
                as usize;
            if pad > 15 || pad + 1 > plain.len() {
                return Err(PacketError::Malformed("confidentiality pad length"));
            }
            let end = plain.len() - 1 - pad;
            // The pad bytes are 1, 2, 3, ... (checked: a wrong key shows up here too).
            if plain[end..end + pad]
                .iter()
                .enumerate()
                .any(|(i, &b)| b as usize != i + 1)
            {
                return Err(PacketError::Malformed("confidentiality pad bytes"));
            }
            plain.truncate(end);
            plain
        }
        None => body.to_vec(),
    };
    Ok(V2Packet {
        payload_type,
        session_id,
        seq,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(aes: bool) -> Security {
        Security {
            integrity: IntegrityAlg::HmacSha1_96,
            k1: Zeroizing::new(vec![0x11; 20]),
            aes_key: aes.then(|| Zeroizing::new([0x22; 16])),
        }
    }

    #[test]
    fn v15_bytes() {
        let p = encode_v15(&[0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5]).unwrap();
        assert_eq!(
            p,
            [
                0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81,
                0x00, 0x38, 0x8e, 0x04, 0xb5
            ]
        );
        assert_eq!(decode(&p, None).unwrap(), Packet::V15(p[14..].to_vec()));
    }

    #[test]
    fn v2_clear_bytes() {
        let p = encode_v2(payload::RAKP1, 0, 0, &[1, 2, 3], None, &[0; 16]).unwrap();
        assert_eq!(
            p,
            [
                6, 0, 0xff, 7, 6, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 2, 3
            ]
        );
        let Packet::V2(d) = decode(&p, None).unwrap() else {
            panic!()
        };
        assert_eq!(d.payload, [1, 2, 3]);
        assert_eq!(d.payload_type, payload::RAKP1);
    }

    #[test]
    fn v2_authenticated_layout() {
        let s = sec(false);
        let p = encode_v2(payload::IPMI, 0x0403_0201, 7, &[9; 5], Some(&s), &[0; 16]).unwrap();
        // 12 header + 5 payload + 2 = 19, padded by 1 to 20; then 12-byte AuthCode.
        assert_eq!(p.len(), 4 + 12 + 5 + 1 + 2 + 12);
        assert_eq!(p[5], 0x40);
        assert_eq!(&p[6..10], &[1, 2, 3, 4]);
        assert_eq!(&p[21..24], &[0xff, 1, 7]);
        let Packet::V2(d) = decode(&p, Some(&s)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.session_id, d.seq, d.payload),
            (0x0403_0201, 7, vec![9; 5])
        );
        // One flipped bit anywhere covered by the MAC is caught.
        for i in 4..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, Some(&s)).is_err(), "flip at {i} accepted");
        }
        // Clear packets are refused in a session, authenticated ones outside.
        assert!(matches!(
            decode(&p, None),
            Err(PacketError::Security { .. })
        ));
    }

    #[test]
    fn v2_encrypted_roundtrip_all_lengths() {
        let s = sec(true);
        for n in 0..40 {
            let payload: Vec<u8> = (0..n as u8).collect();
            let p = encode_v2(payload::SOL, 5, 6, &payload, Some(&s), &[n as u8; 16]).unwrap();
            assert_eq!(p[5], 0xc1);
            let body_len = u16::from_le_bytes([p[14], p[15]]) as usize;
            assert_eq!(body_len % 16, 0);
            assert_eq!(&p[16..32], &[n as u8; 16], "IV sent in the clear");
            let Packet::V2(d) = decode(&p, Some(&s)).unwrap() else {
                panic!()
            };
            assert_eq!(d.payload, payload);
        }
        // Decrypting with another key fails on the pad check or the MAC, never panics.
        let p = encode_v2(payload::SOL, 5, 6, b"hello", Some(&s), &[3; 16]).unwrap();
        let mut other = sec(true);
        other.aes_key = Some(Zeroizing::new([0x23; 16]));
        assert!(decode(&p, Some(&other)).is_err());
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(
            decode(&[6, 0, 0xff], None),
            Err(PacketError::Truncated("RMCP header"))
        );
        let mut p = encode_v2(payload::RAKP2, 0, 0, &[1, 2, 3], None, &[0; 16]).unwrap();
        p[14] = 0xff; // claims 255 bytes of payload
        assert_eq!(decode(&p, None), Err(PacketError::Truncated("payload")));
        let big = vec![6u8; MAX_PACKET + 1];
        assert_eq!(
            decode(&big, None),
            Err(PacketError::TooLarge(MAX_PACKET + 1))
        );
        assert!(encode_v2(payload::SOL, 1, 1, &[0; 2000], Some(&sec(true)), &[0; 16]).is_err());
        let mut p = encode_v15(&[1, 2, 3]).unwrap();
        p[13] = 40;
        assert_eq!(
            decode(&p, None),
            Err(PacketError::Truncated("IPMI 1.5 message"))
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Golden packets from a real session (`ipmitool -vvvv -I lanplus -C 3` against
    /// ipmi_sim 2.0.33, which printed K1, K2, the IV and the authcode input and output;
    /// the keys are those of the RAKP vectors in `rakp.rs`).
    fn ipmitool_session() -> Security {
        let k2 = hex("b73b6ca92444c2633ff80b171db34370895ca56a");
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        Security {
            integrity: IntegrityAlg::HmacSha1_96,
            k1: Zeroizing::new(hex("6d14a22bfa397a1a22972b7035de0b8a20b4b268")),
            aes_key: Some(Zeroizing::new(aes)),
        }
    }

    #[test]
    fn golden_request_from_ipmitool() {
        // Set Session Privilege Level (admin), session id 2, sequence 3.
        let mut p = RMCP_IPMI.to_vec();
        p.extend(hex(
            "06c0020000000300000020000594aa7cf4374bd94b617f240e9cbfafd7c82756f00fa962e7ea9537008c8c36ffff0207",
        ));
        p.extend(hex("4842f5604ee13369f11936eb"));
        let sec = ipmitool_session();
        let Packet::V2(d) = decode(&p, Some(&sec)).unwrap() else {
            panic!("not RMCP+")
        };
        assert_eq!((d.payload_type, d.session_id, d.seq), (payload::IPMI, 2, 3));
        // rsAddr 0x20, netFn App, rqAddr 0x81, cmd 0x3b, data 0x04.
        assert_eq!(&d.payload[..4], &[0x20, 0x18, 0xc8, 0x81]);
        assert_eq!(&d.payload[5..7], &[0x3b, 0x04]);
        // Our encoder with the same IV produces ipmitool's bytes exactly.
        let iv: [u8; 16] = hex("0594aa7cf4374bd94b617f240e9cbfaf").try_into().unwrap();
        assert_eq!(
            encode_v2(payload::IPMI, 2, 3, &d.payload, Some(&sec), &iv).unwrap(),
            p
        );
    }

    #[test]
    fn golden_response_from_ipmi_sim() {
        // ipmi_sim's answer: session id 0xa0a2a3a4 (the console's), sequence 1.
        let mut p = RMCP_IPMI.to_vec();
        p.extend(hex(
            "06c0a4a3a2a001000000200080 46e8ab8327c8e33a0328c4e467aa3a35929ba82d1879f41f2f948e21c15b45ffff0207",
        ));
        p.extend(hex("c7809480139fa3867494e902"));
        let Packet::V2(d) = decode(&p, Some(&ipmitool_session())).unwrap() else {
            panic!("not RMCP+")
        };
        assert_eq!((d.session_id, d.seq), (0xa0a2_a3a4, 1));
        let r = crate::message::decode_response(&d.payload).unwrap();
        assert_eq!((r.netfn, r.cmd, r.completion), (0x07, 0x3b, 0x00));
        assert_eq!(r.data, [0x04]);
    }
}
