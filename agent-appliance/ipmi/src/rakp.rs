//! RMCP+ session establishment messages (IPMI 2.0 sections 13.17-13.23): Open Session
//! Request/Response and RAKP messages 1-4, and the cipher suites this crate accepts.

use thiserror::Error;

use crate::crypto::{AuthAlg, IntegrityAlg, SessionKeys, ct_eq};

/// A cipher suite this crate can use: authentication, integrity and AES-CBC-128.
/// Suites without authentication or integrity (0, 1, 2, 6, ...) are never offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    /// The suite id (IPMI 2.0 table 22-20).
    pub id: u8,
    /// RAKP authentication algorithm.
    pub auth: AuthAlg,
    /// Per-packet integrity algorithm.
    pub integrity: IntegrityAlg,
    /// Whether payloads are encrypted with AES-CBC-128.
    pub aes: bool,
}

impl CipherSuite {
    /// The suite with this id, if this crate supports it (3 and 17).
    pub fn by_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(CipherSuite {
                id,
                auth: AuthAlg::HmacSha1,
                integrity: IntegrityAlg::HmacSha1_96,
                aes: true,
            }),
            17 => Some(CipherSuite {
                id,
                auth: AuthAlg::HmacSha256,
                integrity: IntegrityAlg::HmacSha256_128,
                aes: true,
            }),
            _ => None,
        }
    }
}

/// RMCP+ status codes (IPMI 2.0 table 13-15), for error messages.
pub fn status_text(code: u8) -> &'static str {
    match code {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status",
    }
}

/// Status codes that mean "these algorithms are not acceptable".
pub fn status_is_cipher_refusal(code: u8) -> bool {
    matches!(code, 0x03..=0x07 | 0x10 | 0x11)
}

/// Status codes that mean "these credentials are not acceptable".
pub fn status_is_auth_refusal(code: u8) -> bool {
    matches!(code, 0x09 | 0x0a | 0x0c | 0x0d | 0x0e | 0x0f)
}

/// Why a session establishment message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RakpError {
    /// Too short for its fields.
    #[error("{0} truncated ({1} bytes)")]
    Truncated(&'static str, usize),
    /// The message tag or our session id does not match the request.
    #[error("{0} does not answer our request (tag or session id)")]
    Mismatch(&'static str),
    /// The BMC answered with a non-zero RMCP+ status code.
    #[error("{msg} status {code:#04x} ({})", status_text(*code))]
    Status {
        /// Which message.
        msg: &'static str,
        /// The RMCP+ status code.
        code: u8,
    },
    /// The BMC chose algorithms other than the ones proposed.
    #[error(
        "BMC chose other algorithms than proposed (auth {0}, integrity {1}, confidentiality {2})"
    )]
    Algorithms(u8, u8, u8),
    /// The key exchange auth code in RAKP 2 is wrong: wrong password (or a forged
    /// answer).
    #[error("RAKP 2 HMAC does not verify (wrong password?)")]
    Rakp2Hmac,
    /// The integrity check value in RAKP 4 is wrong.
    #[error("RAKP 4 integrity check value does not verify")]
    Rakp4Icv,
}

/// Builds an Open Session Request payload.
pub fn open_session_request(
    tag: u8,
    privilege: u8,
    console_sid: u32,
    suite: &CipherSuite,
) -> Vec<u8> {
    let mut m = vec![tag, privilege, 0, 0];
    m.extend_from_slice(&console_sid.to_le_bytes());
    m.extend_from_slice(&[0x00, 0, 0, 8, suite.auth.number(), 0, 0, 0]);
    m.extend_from_slice(&[0x01, 0, 0, 8, suite.integrity.number(), 0, 0, 0]);
    m.extend_from_slice(&[0x02, 0, 0, 8, u8::from(suite.aes), 0, 0, 0]);
    m
}

/// A successful Open Session Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionResponse {
    /// The maximum privilege level the BMC allows for the session.
    pub privilege: u8,
    /// The BMC's session id (sent in every later header).
    pub bmc_sid: u32,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses an Open Session Response and checks it answers `tag`/`console_sid` and
/// accepts exactly the proposed `suite`.
pub fn parse_open_session_response(
    p: &[u8],
    tag: u8,
    console_sid: u32,
    suite: &CipherSuite,
) -> Result<OpenSessionResponse, RakpError> {
    const MSG: &str = "Open Session Response";
    if p.len() < 2 {
        return Err(RakpError::Truncated(MSG, p.len()));
    }
    if p[0] != tag {
        return Err(RakpError::Mismatch(MSG));
    }
    if p[1] != 0 {
        return Err(RakpError::Status {
            msg: MSG,
            code: p[1],
        });
    }
    if p.len() < 36 {
        return Err(RakpError::Truncated(MSG, p.len()));
    }
    if le32(&p[4..8]) != console_sid {
        return Err(RakpError::Mismatch(MSG));
    }
    if le32(&p[8..12]) == 0 {
        // 0 means "no session": it could never be used in a session header.
        return Err(RakpError::Mismatch(MSG));
    }
    let (a, i, c) = (p[16] & 0x3f, p[24] & 0x3f, p[32] & 0x3f);
    if a != suite.auth.number() || i != suite.integrity.number() || c != u8::from(suite.aes) {
        return Err(RakpError::Algorithms(a, i, c));
    }
    Ok(OpenSessionResponse {
        privilege: p[2],
        bmc_sid: le32(&p[8..12]),
    })
}

/// What both sides of RAKP must agree on: kept by the console between messages.
#[derive(Debug, Clone)]
pub struct RakpParams {
    /// The suite negotiated.
    pub suite: CipherSuite,
    /// Console session id (SIDm).
    pub console_sid: u32,
    /// BMC session id (SIDc).
    pub bmc_sid: u32,
    /// Console random number Rm.
    pub rm: [u8; 16],
    /// The requested role byte of RAKP 1 (privilege | name-only lookup bit).
    pub role: u8,
    /// The user name (at most 16 bytes).
    pub username: Vec<u8>,
}

/// Builds RAKP message 1.
pub fn rakp1(tag: u8, p: &RakpParams) -> Vec<u8> {
    let mut m = vec![tag, 0, 0, 0];
    m.extend_from_slice(&p.bmc_sid.to_le_bytes());
    m.extend_from_slice(&p.rm);
    m.push(p.role);
    m.extend_from_slice(&[0, 0]);
    m.push(p.username.len() as u8);
    m.extend_from_slice(&p.username);
    m
}

/// The BMC's side of RAKP 2, kept for RAKP 3 and 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    /// Managed system random number Rc.
    pub rc: [u8; 16],
    /// Managed system GUID.
    pub guid: [u8; 16],
}

/// The RAKP 2 key exchange auth code: HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, RoleM,
/// ULengthM, UNameM).
pub fn rakp2_hmac(p: &RakpParams, kuid: &[u8], rc: &[u8; 16], guid: &[u8; 16]) -> Vec<u8> {
    p.suite
        .auth
        .mac(
            kuid,
            &[
                &p.console_sid.to_le_bytes(),
                &p.bmc_sid.to_le_bytes(),
                &p.rm,
                rc,
                guid,
                &[p.role, p.username.len() as u8],
                &p.username,
            ],
        )
        .to_vec()
}

/// Parses and verifies RAKP message 2 with the user's key `kuid` (the password).
pub fn parse_rakp2(m: &[u8], tag: u8, p: &RakpParams, kuid: &[u8]) -> Result<Rakp2, RakpError> {
    const MSG: &str = "RAKP 2";
    if m.len() < 2 {
        return Err(RakpError::Truncated(MSG, m.len()));
    }
    if m[0] != tag {
        return Err(RakpError::Mismatch(MSG));
    }
    if m[1] != 0 {
        return Err(RakpError::Status {
            msg: MSG,
            code: m[1],
        });
    }
    let n = p.suite.auth.len();
    if m.len() != 40 + n {
        return Err(RakpError::Truncated(MSG, m.len()));
    }
    if le32(&m[4..8]) != p.console_sid {
        return Err(RakpError::Mismatch(MSG));
    }
    let mut rc = [0u8; 16];
    rc.copy_from_slice(&m[8..24]);
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&m[24..40]);
    let want = rakp2_hmac(p, kuid, &rc, &guid);
    if !ct_eq(&want, &m[40..]) {
        return Err(RakpError::Rakp2Hmac);
    }
    Ok(Rakp2 { rc, guid })
}

/// Builds RAKP message 3: HMAC_Kuid(Rc, SIDm, RoleM, ULengthM, UNameM), or, with a
/// non-zero `status`, an abort notice with no auth code.
pub fn rakp3(tag: u8, status: u8, p: &RakpParams, kuid: &[u8], r2: &Rakp2) -> Vec<u8> {
    let mut m = vec![tag, status, 0, 0];
    m.extend_from_slice(&p.bmc_sid.to_le_bytes());
    if status == 0 {
        let mac = p.suite.auth.mac(
            kuid,
            &[
                &r2.rc,
                &p.console_sid.to_le_bytes(),
                &[p.role, p.username.len() as u8],
                &p.username,
            ],
        );
        m.extend_from_slice(&mac);
    }
    m
}

/// The session keys (Kg is the password: BMC keys are not supported).
pub fn session_keys(p: &RakpParams, kuid: &[u8], r2: &Rakp2) -> SessionKeys {
    SessionKeys::derive(p.suite.auth, kuid, &p.rm, &r2.rc, p.role, &p.username)
}

/// The RAKP 4 integrity check value: HMAC_SIK(Rm, SIDc, GUIDc), truncated.
pub fn rakp4_icv(p: &RakpParams, keys: &SessionKeys, r2: &Rakp2) -> Vec<u8> {
    let mut v = p
        .suite
        .auth
        .mac(&keys.sik, &[&p.rm, &p.bmc_sid.to_le_bytes(), &r2.guid])
        .to_vec();
    v.truncate(p.suite.auth.icv_len());
    v
}

/// Parses and verifies RAKP message 4.
pub fn parse_rakp4(
    m: &[u8],
    tag: u8,
    p: &RakpParams,
    keys: &SessionKeys,
    r2: &Rakp2,
) -> Result<(), RakpError> {
    const MSG: &str = "RAKP 4";
    if m.len() < 2 {
        return Err(RakpError::Truncated(MSG, m.len()));
    }
    if m[0] != tag {
        return Err(RakpError::Mismatch(MSG));
    }
    if m[1] != 0 {
        return Err(RakpError::Status {
            msg: MSG,
            code: m[1],
        });
    }
    if m.len() != 8 + p.suite.auth.icv_len() {
        return Err(RakpError::Truncated(MSG, m.len()));
    }
    if le32(&m[4..8]) != p.console_sid {
        return Err(RakpError::Mismatch(MSG));
    }
    if !ct_eq(&rakp4_icv(p, keys, r2), &m[8..]) {
        return Err(RakpError::Rakp4Icv);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn arr16(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    // Inputs of a real session: `ipmitool -vvvv -I lanplus -C 3 -U admin -P password
    // chassis power status` against OpenIPMI ipmi_sim 2.0.33, which printed Rm, Rc,
    // the GUID, the session ids and every MAC and key below.
    const RM: &str = "d2eab463cde64e5a3de7e27e20b1b493";
    const RC: &str = "0782d6b87d7c4b03914713adab1b976b";
    const GUID: &str = "a123456789abcdefa123456789abcdef";

    fn params(id: u8) -> (RakpParams, Rakp2) {
        (
            RakpParams {
                suite: CipherSuite::by_id(id).unwrap(),
                console_sid: 0xa0a2_a3a4,
                bmc_sid: 2,
                rm: arr16(RM),
                role: 0x14,
                username: b"admin".to_vec(),
            },
            Rakp2 {
                rc: arr16(RC),
                guid: arr16(GUID),
            },
        )
    }

    fn rakp2_msg(p: &RakpParams, r2: &Rakp2, mac: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 0];
        m.extend_from_slice(&p.console_sid.to_le_bytes());
        m.extend_from_slice(&r2.rc);
        m.extend_from_slice(&r2.guid);
        m.extend_from_slice(mac);
        m
    }

    #[test]
    fn sha1_vectors_from_ipmitool_session() {
        let (p, r2) = params(3);
        let mac = hex("bc5019809e457eb6adbacd72b56e50692b577ab3");
        assert_eq!(rakp2_hmac(&p, b"password", &r2.rc, &r2.guid), mac);
        assert_eq!(
            parse_rakp2(&rakp2_msg(&p, &r2, &mac), 0, &p, b"password"),
            Ok(r2.clone())
        );
        assert_eq!(
            parse_rakp2(&rakp2_msg(&p, &r2, &mac), 0, &p, b"passwore"),
            Err(RakpError::Rakp2Hmac)
        );
        let m3 = rakp3(0, 0, &p, b"password", &r2);
        assert_eq!(&m3[..8], &[0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&m3[8..], hex("99dbdc0812a1e9f992484f78d8e8d31b3c3c618a"));
        let k = session_keys(&p, b"password", &r2);
        assert_eq!(*k.sik, hex("47b8eec0b2cd0a39c45e955a258cf02b8411424e"));
        assert_eq!(*k.k1, hex("6d14a22bfa397a1a22972b7035de0b8a20b4b268"));
        assert_eq!(*k.k2, hex("b73b6ca92444c2633ff80b171db34370895ca56a"));
        let icv = hex("d8058e9c240676c8c76e4809");
        assert_eq!(rakp4_icv(&p, &k, &r2), icv);
        let mut m4 = vec![0, 0, 0, 0, 0xa4, 0xa3, 0xa2, 0xa0];
        m4.extend_from_slice(&icv);
        assert_eq!(parse_rakp4(&m4, 0, &p, &k, &r2), Ok(()));
        m4[10] ^= 1;
        assert_eq!(parse_rakp4(&m4, 0, &p, &k, &r2), Err(RakpError::Rakp4Icv));
    }

    // Same inputs with RAKP-HMAC-SHA256 (suite 17), computed independently with
    // Python's hmac/hashlib: r2 = hmac(b"password", sidm+sidc+rm+rc+guid+role+ulen+name),
    // sik = hmac(kuid, rm+rc+role+ulen+name), k1 = hmac(sik, b"\x01"*32), etc.
    #[test]
    fn sha256_vectors_from_python_hmac() {
        let (p, r2) = params(17);
        let mac = hex("bca9b74b6cf431de5f3a16b9e3934854dac2aa5942887581a051decb037bafc4");
        assert_eq!(rakp2_hmac(&p, b"password", &r2.rc, &r2.guid), mac);
        assert_eq!(
            parse_rakp2(&rakp2_msg(&p, &r2, &mac), 0, &p, b"password"),
            Ok(r2.clone())
        );
        let m3 = rakp3(0, 0, &p, b"password", &r2);
        assert_eq!(
            &m3[8..],
            hex("9d3df838c4906d1facaa92b62b164b01330e3e8da67f509b8eef5fa8e29be8c8")
        );
        let k = session_keys(&p, b"password", &r2);
        assert_eq!(
            *k.sik,
            hex("bff91b863bc00c6e89989a7e6bdc3ac58682b443062384f8d112b0af16fb914d")
        );
        assert_eq!(
            *k.k1,
            hex("c3e033f15154d3f434c1371f488cf9bdf1651048b5cf3413a4189fa2316e4b70")
        );
        assert_eq!(
            *k.k2,
            hex("7fd6da19b18f23830f0647bc9312a384b327cc0d98c12e875f01c17b77d51f9d")
        );
        assert_eq!(
            rakp4_icv(&p, &k, &r2),
            hex("f1712edeb27f1616ab239fb4bd4e1817")
        );
    }

    #[test]
    fn open_session_bytes_and_checks() {
        let s = CipherSuite::by_id(17).unwrap();
        let req = open_session_request(7, 4, 0x1122_3344, &s);
        assert_eq!(
            req,
            hex("07040000 44332211 00000008 03000000 01000008 04000000 02000008 01000000")
        );
        let mut resp = hex("07000400 44332211 0a000000");
        resp.extend_from_slice(&req[8..]);
        assert_eq!(
            parse_open_session_response(&resp, 7, 0x1122_3344, &s),
            Ok(OpenSessionResponse {
                privilege: 4,
                bmc_sid: 10
            })
        );
        assert_eq!(
            parse_open_session_response(&resp, 8, 0x1122_3344, &s),
            Err(RakpError::Mismatch("Open Session Response"))
        );
        let refused = hex("07110000 44332211");
        assert!(matches!(
            parse_open_session_response(&refused, 7, 0x1122_3344, &s),
            Err(RakpError::Status { code: 0x11, .. })
        ));
        resp[24] = 0; // integrity "none" chosen by the BMC
        assert!(matches!(
            parse_open_session_response(&resp, 7, 0x1122_3344, &s),
            Err(RakpError::Algorithms(3, 0, 1))
        ));
        assert!(parse_open_session_response(&resp[..20], 7, 0x1122_3344, &s).is_err());
    }

    #[test]
    fn rakp1_bytes() {
        let (p, _) = params(3);
        assert_eq!(
            rakp1(0, &p),
            hex(&format!("00000000 02000000 {RM} 14 0000 05 61646d696e"))
        );
    }
}
