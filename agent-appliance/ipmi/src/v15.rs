//! IPMI 1.5 LAN session framing (IPMI 1.5 section 6.12, 22.13-22.19): the session
//! header with a per-packet AuthCode, MD5 or "straight password", and the request
//! and response bytes of Get Session Challenge and Activate Session.
//!
//! IPMI 1.5 authenticates packets but never encrypts them: it is only used when the
//! caller opts in. Auth type none (and MD2, OEM) is never used.

use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::commands::{Command, Privilege};
use crate::error::Error;
use crate::message::netfn;
use crate::packet::{MAX_PACKET, PacketError, RMCP_IPMI};

/// The IPMI 1.5 authentication types this client uses (never none, MD2 or OEM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// AuthCode = MD5(password, session id, message, session seq, password).
    Md5,
    /// AuthCode = the password itself, in the clear ("straight password").
    Password,
}

impl AuthType {
    /// The auth type number on the wire.
    pub fn number(self) -> u8 {
        match self {
            AuthType::Md5 => 0x02,
            AuthType::Password => 0x04,
        }
    }

    /// Picks from the auth type support bits of Get Channel Authentication
    /// Capabilities (byte 2 of the response data): MD5, else straight password.
    pub fn choose(support: u8) -> Option<AuthType> {
        if support & 0x04 != 0 {
            Some(AuthType::Md5)
        } else if support & 0x10 != 0 {
            Some(AuthType::Password)
        } else {
            None
        }
    }
}

/// The password padded with zeros to 16 bytes (IPMI 1.5 passwords are at most 16).
pub fn password16(password: &[u8]) -> Zeroizing<[u8; 16]> {
    let mut p = Zeroizing::new([0u8; 16]);
    let n = password.len().min(16);
    p[..n].copy_from_slice(&password[..n]);
    p
}

/// The AuthCode of a packet with session id `sid`, sequence `seq` and IPMI message
/// `msg` (IPMI 1.5 section 22.17.1 for MD5).
pub fn auth_code(auth: AuthType, pw: &[u8; 16], sid: u32, msg: &[u8], seq: u32) -> [u8; 16] {
    match auth {
        AuthType::Password => *pw,
        AuthType::Md5 => {
            let mut h = Md5::new();
            h.update(pw);
            h.update(sid.to_le_bytes());
            h.update(msg);
            h.update(seq.to_le_bytes());
            h.update(pw);
            h.finalize().into()
        }
    }
}

/// Wraps `msg` in RMCP and an authenticated IPMI 1.5 session header.
pub fn encode(
    auth: AuthType,
    pw: &[u8; 16],
    sid: u32,
    seq: u32,
    msg: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let len = u8::try_from(msg.len()).map_err(|_| PacketError::TooLarge(msg.len()))?;
    let mut out = Vec::with_capacity(30 + msg.len());
    out.extend_from_slice(&RMCP_IPMI);
    out.push(auth.number());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(&auth_code(auth, pw, sid, msg, seq));
    out.push(len);
    out.extend_from_slice(msg);
    if out.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(out.len()));
    }
    Ok(out)
}

/// A decoded IPMI 1.5 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V15Packet {
    /// The auth type byte.
    pub auth_type: u8,
    /// Session sequence number.
    pub seq: u32,
    /// Session id.
    pub sid: u32,
    /// The AuthCode, when the auth type is not none.
    pub auth_code: Option<[u8; 16]>,
    /// The IPMI message.
    pub msg: Vec<u8>,
}

impl V15Packet {
    /// Whether the packet carries auth type `auth` and a matching AuthCode.
    pub fn verify(&self, auth: AuthType, pw: &[u8; 16]) -> bool {
        let Some(code) = self.auth_code else {
            return false;
        };
        let want = auth_code(auth, pw, self.sid, &self.msg, self.seq);
        self.auth_type == auth.number() && crate::crypto::ct_eq(&code, &want)
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// Parses an IPMI 1.5 packet (any auth type; the caller checks it).
pub fn decode(data: &[u8]) -> Result<V15Packet, PacketError> {
    if data.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(data.len()));
    }
    let rmcp = data
        .get(0..4)
        .ok_or(PacketError::Truncated("RMCP header"))?;
    if rmcp != RMCP_IPMI {
        let mut h = [0u8; 4];
        h.copy_from_slice(rmcp);
        return Err(PacketError::NotIpmi(h));
    }
    let hdr = data
        .get(4..13)
        .ok_or(PacketError::Truncated("IPMI 1.5 session header"))?;
    let auth_type = hdr[0];
    let seq = le32(&hdr[1..5]);
    let sid = le32(&hdr[5..9]);
    let (auth_code, at) = match auth_type {
        0x00 => (None, 13),
        0x01 | 0x02 | 0x04 | 0x05 => {
            let c = data
                .get(13..29)
                .ok_or(PacketError::Truncated("IPMI 1.5 AuthCode"))?;
            let mut a = [0u8; 16];
            a.copy_from_slice(c);
            (Some(a), 29)
        }
        other => return Err(PacketError::AuthType(other)),
    };
    let len = *data
        .get(at)
        .ok_or(PacketError::Truncated("IPMI 1.5 message length"))? as usize;
    let msg = data
        .get(at + 1..at + 1 + len)
        .ok_or(PacketError::Truncated("IPMI 1.5 message"))?;
    // Some BMCs add a legacy pad byte; anything more is malformed.
    if data.len() > at + 1 + len + 1 {
        return Err(PacketError::Malformed("bytes after the IPMI 1.5 message"));
    }
    Ok(V15Packet {
        auth_type,
        seq,
        sid,
        auth_code,
        msg: msg.to_vec(),
    })
}

/// Get Session Challenge (sent outside a session, auth type none in the header).
pub fn get_session_challenge(auth: AuthType, username: &[u8]) -> Command {
    let mut data = vec![auth.number()];
    let mut name = [0u8; 16];
    let n = username.len().min(16);
    name[..n].copy_from_slice(&username[..n]);
    data.extend_from_slice(&name);
    Command {
        netfn: netfn::APP,
        cmd: 0x39,
        data,
        name: "Get Session Challenge",
    }
}

/// Parses Get Session Challenge response data: (temporary session id, challenge).
pub fn parse_session_challenge(d: &[u8]) -> Result<(u32, [u8; 16]), Error> {
    let (Some(sid), Some(ch)) = (d.get(0..4), d.get(4..20)) else {
        return Err(Error::protocol(format!(
            "Get Session Challenge: response has {} data bytes, expected 20",
            d.len()
        )));
    };
    let mut c = [0u8; 16];
    c.copy_from_slice(ch);
    Ok((le32(sid), c))
}

/// Activate Session: auth type, maximum privilege, the challenge, and the sequence
/// number the BMC is to start its packets with (`initial_in`, non-zero).
pub fn activate_session(
    auth: AuthType,
    privilege: Privilege,
    challenge: &[u8; 16],
    initial_in: u32,
) -> Command {
    let mut data = vec![auth.number(), privilege.number()];
    data.extend_from_slice(challenge);
    data.extend_from_slice(&initial_in.to_le_bytes());
    Command {
        netfn: netfn::APP,
        cmd: 0x3a,
        data,
        name: "Activate Session",
    }
}

/// What Activate Session returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activated {
    /// The auth type the BMC will use for the session.
    pub auth_type: u8,
    /// The session id.
    pub sid: u32,
    /// The sequence number the console starts its packets with.
    pub initial_out: u32,
    /// The maximum privilege the session allows.
    pub max_privilege: u8,
}

/// Parses Activate Session response data.
pub fn parse_activate_session(d: &[u8]) -> Result<Activated, Error> {
    let (Some(&auth_type), Some(sid), Some(seq), Some(&max_privilege)) =
        (d.first(), d.get(1..5), d.get(5..9), d.get(9))
    else {
        return Err(Error::protocol(format!(
            "Activate Session: response has {} data bytes, expected 10",
            d.len()
        )));
    };
    Ok(Activated {
        auth_type: auth_type & 0x0f,
        sid: le32(sid),
        initial_out: le32(seq),
        max_privilege: max_privilege & 0x0f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_prefers_md5_and_never_none() {
        assert_eq!(AuthType::choose(0x15), Some(AuthType::Md5));
        assert_eq!(AuthType::choose(0x11), Some(AuthType::Password));
        assert_eq!(AuthType::choose(0x01), None, "none only");
        assert_eq!(AuthType::choose(0x23), None, "none, MD2, OEM");
    }

    /// Set Session Privilege Level (admin, rqSeq 1) in session 0x12345678, seq
    /// 0x01020304, password "password". The AuthCode is from Python:
    /// `hashlib.md5(pw16 + struct.pack('<I', sid) + msg + struct.pack('<I', seq) + pw16)`.
    const MSG: [u8; 8] = [0x20, 0x18, 0xc8, 0x81, 0x04, 0x3b, 0x04, 0x3c];
    const MD5_CODE: [u8; 16] = [
        0xd3, 0x12, 0x36, 0x2e, 0x1a, 0x07, 0xcb, 0xd6, 0xea, 0x24, 0x5b, 0x70, 0x56, 0x77, 0x2d,
        0x08,
    ];

    #[test]
    fn md5_auth_code_vector_and_packet_layout() {
        let pw = password16(b"password");
        assert_eq!(
            auth_code(AuthType::Md5, &pw, 0x1234_5678, &MSG, 0x0102_0304),
            MD5_CODE
        );
        let b = encode(AuthType::Md5, &pw, 0x1234_5678, 0x0102_0304, &MSG).unwrap();
        assert_eq!(&b[..5], &[0x06, 0x00, 0xff, 0x07, 0x02]);
        assert_eq!(&b[5..9], &[0x04, 0x03, 0x02, 0x01], "seq, LS byte first");
        assert_eq!(&b[9..13], &[0x78, 0x56, 0x34, 0x12], "session id");
        assert_eq!(&b[13..29], &MD5_CODE);
        assert_eq!(b[29], 8);
        assert_eq!(&b[30..], &MSG);
        let p = decode(&b).unwrap();
        assert_eq!(
            (p.seq, p.sid, &p.msg[..]),
            (0x0102_0304, 0x1234_5678, &MSG[..])
        );
        assert!(p.verify(AuthType::Md5, &pw));
        assert!(!p.verify(AuthType::Md5, &password16(b"passwore")));
        assert!(!p.verify(AuthType::Password, &pw), "auth type must match");
        // Any changed byte under the AuthCode breaks it.
        for i in [5, 9, 30, 37] {
            let mut t = b.clone();
            t[i] ^= 1;
            assert!(!decode(&t).unwrap().verify(AuthType::Md5, &pw), "byte {i}");
        }
    }

    #[test]
    fn straight_password_and_none_packets() {
        let pw = password16(b"password");
        let b = encode(AuthType::Password, &pw, 7, 9, &MSG).unwrap();
        assert_eq!(&b[13..29], b"password\0\0\0\0\0\0\0\0");
        assert!(decode(&b).unwrap().verify(AuthType::Password, &pw));
        // Auth type none: no AuthCode, never verifies.
        let n = crate::packet::encode_v15(&MSG).unwrap();
        let p = decode(&n).unwrap();
        assert_eq!((p.auth_type, p.auth_code), (0, None));
        assert!(!p.verify(AuthType::Md5, &pw));
    }

    #[test]
    fn lengths_from_the_bmc_are_checked() {
        let pw = password16(b"password");
        let b = encode(AuthType::Md5, &pw, 1, 1, &MSG).unwrap();
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated to {n}");
        }
        let mut t = b.clone();
        t[29] = 0xff;
        assert_eq!(decode(&t), Err(PacketError::Truncated("IPMI 1.5 message")));
        let mut t = b.clone();
        t.extend_from_slice(&[0, 0]);
        assert!(decode(&t).is_err(), "trailing bytes");
        let mut t = b.clone();
        t[4] = 0x03;
        assert_eq!(decode(&t), Err(PacketError::AuthType(3)));
        assert!(decode(&vec![0u8; 2000]).is_err());
        assert!(parse_session_challenge(&[0; 19]).is_err());
        assert!(parse_activate_session(&[0; 9]).is_err());
        let a = parse_activate_session(&[0x02, 1, 0, 0, 0, 5, 0, 0, 0, 0x04]).unwrap();
        assert_eq!(
            (a.auth_type, a.sid, a.initial_out, a.max_privilege),
            (2, 1, 5, 4)
        );
    }

    #[test]
    fn challenge_and_activate_request_bytes() {
        let c = get_session_challenge(AuthType::Md5, b"admin");
        assert_eq!((c.netfn, c.cmd), (0x06, 0x39));
        assert_eq!(&c.data[..6], &[0x02, b'a', b'd', b'm', b'i', b'n']);
        assert_eq!(c.data.len(), 17);
        let a = activate_session(
            AuthType::Md5,
            Privilege::Administrator,
            &[9; 16],
            0x0a0b_0c0d,
        );
        assert_eq!(a.cmd, 0x3a);
        assert_eq!(&a.data[..2], &[0x02, 0x04]);
        assert_eq!(&a.data[2..18], &[9; 16]);
        assert_eq!(&a.data[18..], &[0x0d, 0x0c, 0x0b, 0x0a]);
    }
}
