//! Byte-by-byte tests of the client (agent toward BMC) handshake.

use super::vnc_auth;
use super::*;

const CHALLENGE: [u8; 16] = *b"0123456789abcdef";

/// Feeds `server` one byte at a time (checking `wants` never asks for more than the
/// handshake holds); returns everything the client sent, and the result.
fn run_bytewise(hs: &mut BmcHandshake, server: &[u8]) -> (Vec<u8>, Result<usize, HandshakeError>) {
    let mut sent = hs.take_output();
    let mut used = 0;
    for b in server {
        if hs.is_done() {
            break;
        }
        assert!(hs.wants() >= 1, "wants 0 while not done: {hs:?}");
        match hs.handle_input(std::slice::from_ref(b)) {
            Ok(n) => used += n,
            Err(e) => {
                sent.extend(hs.take_output());
                return (sent, Err(e));
            }
        }
        sent.extend(hs.take_output());
    }
    (sent, Ok(used))
}

/// Same, all at once, to check both paths agree.
fn run_whole(hs: &mut BmcHandshake, server: &[u8]) -> (Vec<u8>, Result<usize, HandshakeError>) {
    let r = hs.handle_input(server);
    (hs.take_output(), r)
}

fn both(password: Option<&[u8]>, server: &[u8]) -> (Vec<u8>, Result<usize, HandshakeError>) {
    let mut a = BmcHandshake::new(password);
    let mut b = BmcHandshake::new(password);
    let ra = run_bytewise(&mut a, server);
    let rb = run_whole(&mut b, server);
    assert_eq!(ra, rb, "bytewise and whole input disagree");
    assert_eq!(a.is_done(), b.is_done());
    ra
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn v38_none() {
    let server = cat(&[b"RFB 003.008\n", &[2, 2, 1], &[0, 0, 0, 0]]);
    let (sent, r) = both(None, &server);
    assert_eq!(sent, cat(&[b"RFB 003.008\n", &[1]]));
    assert_eq!(r, Ok(server.len()));
    let mut hs = BmcHandshake::new(None);
    hs.handle_input(&server).unwrap();
    assert!(hs.is_done());
    assert_eq!(hs.version(), Some(Version::V3_8));
    assert_eq!(hs.security_type(), Some(SEC_NONE));
    assert_eq!(hs.wants(), 0);
}

#[test]
fn v38_vnc_auth() {
    let server = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &[0, 0, 0, 0]]);
    let (sent, r) = both(Some(b"SECRET"), &server);
    let resp = vnc_auth::response(b"SECRET", &CHALLENGE);
    assert_eq!(sent, cat(&[b"RFB 003.008\n", &[2], &resp]));
    assert_eq!(r, Ok(server.len()));
}

#[test]
fn stops_right_after_security_result() {
    // ServerInit-like bytes after SecurityResult OK are not consumed.
    let server = cat(&[b"RFB 003.008\n", &[1, 1], &[0, 0, 0, 0], b"trailing"]);
    let mut hs = BmcHandshake::new(None);
    let used = hs.handle_input(&server).unwrap();
    assert_eq!(used, server.len() - 8);
    assert!(hs.is_done());
    assert_eq!(hs.handle_input(b"more").unwrap(), 0);
}

#[test]
fn v38_auth_failed_with_reason() {
    let reason = b"Authentication failed";
    let server = cat(&[
        b"RFB 003.008\n",
        &[1, 2],
        &CHALLENGE,
        &[0, 0, 0, 1],
        &(reason.len() as u32).to_be_bytes(),
        reason,
    ]);
    let (_, r) = both(Some(b"wrong"), &server);
    let e = r.unwrap_err();
    assert_eq!(
        e,
        HandshakeError::AuthFailed {
            status: 1,
            reason: Some("Authentication failed".into())
        }
    );
    assert_eq!(e.code(), "bmc_auth_failed");
}

#[test]
fn qemus_nul_terminated_reason_is_clean() {
    // QEMU 9 sends the reason with its C string terminator counted in the length.
    let reason = b"Authentication failed\0";
    let server = cat(&[
        b"RFB 003.008\n",
        &[1, 2],
        &CHALLENGE,
        &[0, 0, 0, 1],
        &(reason.len() as u32).to_be_bytes(),
        reason,
    ]);
    let (_, r) = both(Some(b"wrong"), &server);
    assert_eq!(
        r,
        Err(HandshakeError::AuthFailed {
            status: 1,
            reason: Some("Authentication failed".into())
        })
    );
}

#[test]
fn v37_none_has_no_security_result() {
    let server = cat(&[b"RFB 003.007\n", &[1, 1]]);
    let (sent, r) = both(None, &server);
    assert_eq!(sent, cat(&[b"RFB 003.007\n", &[1]]));
    assert_eq!(r, Ok(server.len()));
    let mut hs = BmcHandshake::new(None);
    hs.handle_input(&server).unwrap();
    assert!(hs.is_done());
    assert_eq!(hs.version(), Some(Version::V3_7));
}

#[test]
fn v37_auth_failed_has_no_reason() {
    let server = cat(&[b"RFB 003.007\n", &[1, 2], &CHALLENGE, &[0, 0, 0, 1]]);
    let (sent, r) = both(Some(b"pw"), &server);
    assert_eq!(sent.len(), 12 + 1 + 16);
    assert_eq!(
        r,
        Err(HandshakeError::AuthFailed {
            status: 1,
            reason: None
        })
    );
}

#[test]
fn v33_server_chosen_none() {
    let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 1]]);
    let (sent, r) = both(None, &server);
    // 3.3: the client sends no choice, and None has no SecurityResult.
    assert_eq!(sent, b"RFB 003.003\n");
    assert_eq!(r, Ok(server.len()));
}

#[test]
fn v33_server_chosen_vnc_auth() {
    let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 2], &CHALLENGE, &[0, 0, 0, 0]]);
    let (sent, r) = both(Some(b"SECRET"), &server);
    let resp = vnc_auth::response(b"SECRET", &CHALLENGE);
    assert_eq!(sent, cat(&[b"RFB 003.003\n", &resp]));
    assert_eq!(r, Ok(server.len()));
}

#[test]
fn v33_refused_with_reason() {
    let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 0], &[0, 0, 0, 4], b"busy"]);
    let (_, r) = both(None, &server);
    let e = r.unwrap_err();
    assert_eq!(
        e,
        HandshakeError::Refused {
            reason: "busy".into()
        }
    );
    assert_eq!(e.code(), "bmc_refused");
}

#[test]
fn v33_unknown_type_is_unsupported() {
    let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 19]]);
    let (_, r) = both(None, &server);
    assert_eq!(
        r,
        Err(HandshakeError::UnsupportedSecurity { offered: vec![19] })
    );
}

#[test]
fn odd_versions() {
    for (server, answer) in [
        (&b"RFB 003.889\n"[..], &b"RFB 003.008\n"[..]),
        (b"RFB 004.001\n", b"RFB 003.008\n"),
        (b"RFB 005.000\n", b"RFB 003.008\n"),
        (b"RFB 003.005\n", b"RFB 003.003\n"),
        (b"RFB 003.006\n", b"RFB 003.003\n"),
    ] {
        let (sent, r) = both(None, server);
        assert_eq!(r, Ok(12));
        assert_eq!(sent, answer);
    }
    for old in [&b"RFB 003.002\n"[..], b"RFB 002.009\n", b"RFB 000.000\n"] {
        let (sent, r) = both(None, old);
        assert!(sent.is_empty());
        let e = r.unwrap_err();
        assert!(
            matches!(e, HandshakeError::UnsupportedVersion { .. }),
            "{e}"
        );
        assert_eq!(e.code(), "bmc_unsupported");
    }
    let (_, r) = both(None, b"SSH-2.0-Open");
    assert_eq!(r.unwrap_err().code(), "bmc_protocol");
}

#[test]
fn prefers_none_and_requires_a_password_for_vnc_auth() {
    // Both offered, a password set: None wins (it cannot fail).
    let server = cat(&[b"RFB 003.008\n", &[2, 2, 1]]);
    let (sent, _) = both(Some(b"pw"), &server);
    assert_eq!(sent.last(), Some(&SEC_NONE));
    // VNC auth only, no password.
    let server = cat(&[b"RFB 003.008\n", &[1, 2]]);
    let (_, r) = both(None, &server);
    assert_eq!(r, Err(HandshakeError::PasswordRequired));
    assert_eq!(HandshakeError::PasswordRequired.code(), "bmc_auth_failed");
    // Neither: VeNCrypt and TLS only.
    let server = cat(&[b"RFB 003.008\n", &[2, 19, 18]]);
    let (_, r) = both(Some(b"pw"), &server);
    assert_eq!(
        r,
        Err(HandshakeError::UnsupportedSecurity {
            offered: vec![19, 18]
        })
    );
}

#[test]
fn zero_types_is_a_refusal_with_reason() {
    let server = cat(&[b"RFB 003.008\n", &[0], &[0, 0, 0, 0]]);
    let (_, r) = both(None, &server);
    assert_eq!(
        r,
        Err(HandshakeError::Refused {
            reason: String::new()
        })
    );
    let server = cat(&[b"RFB 003.008\n", &[0], &[0, 0, 0, 8], b"too\nmany"]);
    let (_, r) = both(None, &server);
    assert_eq!(
        r,
        Err(HandshakeError::Refused {
            reason: "too\u{fffd}many".into()
        })
    );
}

#[test]
fn huge_reason_length_is_refused_before_buffering() {
    let server = cat(&[b"RFB 003.008\n", &[0], &u32::MAX.to_be_bytes(), &[b'x'; 64]]);
    let mut hs = BmcHandshake::new(None);
    let e = hs.handle_input(&server).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::TooLong {
            what: "failure reason",
            len: u32::MAX,
            max: MAX_REASON_LEN
        }
    );
    assert_eq!(e.code(), "bmc_protocol");
    assert_eq!(hs.handle_input(b"x"), Err(HandshakeError::AlreadyFailed));
    // Exactly the bound is fine.
    let mut server = cat(&[b"RFB 003.008\n", &[0], &MAX_REASON_LEN.to_be_bytes()]);
    server.extend(std::iter::repeat_n(b'r', MAX_REASON_LEN as usize));
    let (_, r) = both(None, &server);
    assert!(matches!(r, Err(HandshakeError::Refused { reason }) if reason.len() == 1024));
}

#[test]
fn all_255_types() {
    let mut types: Vec<u8> = (3..=255).collect();
    types.extend([2, 1]);
    let server = cat(&[b"RFB 003.008\n", &[255], &types, &[0, 0, 0, 0]]);
    let (sent, r) = both(None, &server);
    assert_eq!(r, Ok(server.len()));
    assert_eq!(sent.last(), Some(&SEC_NONE));
}

#[test]
fn truncated_input_waits_for_more() {
    let full = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &[0, 0, 0, 0]]);
    for cut in 0..full.len() {
        let mut hs = BmcHandshake::new(Some(b"pw"));
        assert_eq!(hs.handle_input(&full[..cut]), Ok(cut));
        assert!(!hs.is_done(), "done after {cut} bytes");
        assert!(hs.wants() >= 1);
        assert_eq!(hs.handle_input(&full[cut..]), Ok(full.len() - cut));
        assert!(hs.is_done());
    }
}

#[test]
fn debug_hides_the_password() {
    let hs = BmcHandshake::new(Some(b"hunter2"));
    let dbg = format!("{hs:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("***"));
}
