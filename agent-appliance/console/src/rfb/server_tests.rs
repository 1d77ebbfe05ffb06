//! Byte-by-byte tests of the server (agent toward browser) handshake.

use super::*;

/// Feeds the client's bytes one at a time; returns what the server sent and the
/// result.
fn run(client: &[u8]) -> (Vec<u8>, Result<usize, HandshakeError>, FrontHandshake) {
    let mut hs = FrontHandshake::new();
    let mut sent = hs.take_output();
    let mut used = 0;
    let mut result = Ok(0);
    for b in client {
        if hs.is_done() {
            break;
        }
        match hs.handle_input(std::slice::from_ref(b)) {
            Ok(n) => used += n,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        sent.extend(hs.take_output());
    }
    sent.extend(hs.take_output());
    (sent, result.map(|_| used), hs)
}

#[test]
fn v38_client() {
    let (sent, r, hs) = run(b"RFB 003.008\n\x01");
    assert_eq!(sent, b"RFB 003.008\n\x01\x01\x00\x00\x00\x00");
    assert_eq!(r, Ok(13));
    assert!(hs.is_done());
    assert_eq!(hs.version(), Some(Version::V3_8));
}

#[test]
fn v37_client_gets_no_security_result() {
    let (sent, r, hs) = run(b"RFB 003.007\n\x01");
    assert_eq!(sent, b"RFB 003.008\n\x01\x01");
    assert_eq!(r, Ok(13));
    assert!(hs.is_done());
}

#[test]
fn v33_client_gets_server_chosen_none() {
    let (sent, r, hs) = run(b"RFB 003.003\n");
    assert_eq!(sent, b"RFB 003.008\n\x00\x00\x00\x01");
    assert_eq!(r, Ok(12));
    assert!(hs.is_done());
    assert_eq!(hs.version(), Some(Version::V3_3));
}

#[test]
fn client_init_is_not_consumed() {
    let mut hs = FrontHandshake::new();
    hs.take_output();
    // ClientInit (shared = 1) arrives in the same read as the choice.
    assert_eq!(hs.handle_input(b"RFB 003.008\n\x01\x01"), Ok(13));
    assert!(hs.is_done());
    assert_eq!(hs.wants(), 0);
}

#[test]
fn vnc_auth_choice_is_refused_with_reason() {
    let (sent, r, _) = run(b"RFB 003.008\n\x02");
    assert_eq!(r, Err(HandshakeError::BadClientChoice(2)));
    let tail = &sent[14..];
    assert_eq!(&tail[..4], &[0, 0, 0, 1]);
    let len = u32::from_be_bytes(tail[4..8].try_into().unwrap()) as usize;
    assert_eq!(tail.len(), 8 + len);
    // 3.7 has no failure message: the connection just closes.
    let (sent, r, _) = run(b"RFB 003.007\n\x00");
    assert_eq!(r, Err(HandshakeError::BadClientChoice(0)));
    assert_eq!(sent, b"RFB 003.008\n\x01\x01");
}

#[test]
fn bad_client_versions() {
    for v in [&b"RFB 004.000\n"[..], b"RFB 003.002\n", b"GET / HTTP/1"] {
        let (_, r, hs) = run(v);
        assert!(r.is_err(), "{v:?}");
        assert!(!hs.is_done());
    }
    // A newer 3.x client is answered as 3.8.
    let (_, r, hs) = run(b"RFB 003.889\n\x01");
    assert_eq!(r, Ok(13));
    assert_eq!(hs.version(), Some(Version::V3_8));
}

#[test]
fn truncated_input_waits() {
    let full = b"RFB 003.008\n\x01";
    for cut in 0..full.len() {
        let mut hs = FrontHandshake::new();
        assert_eq!(hs.handle_input(&full[..cut]), Ok(cut));
        assert!(!hs.is_done());
        assert_eq!(hs.handle_input(&full[cut..]), Ok(full.len() - cut));
        assert!(hs.is_done());
    }
}
