//! Invariant checks for fuzzing the RFB handshake state machines with arbitrary bytes.
//!
//! [`check_ws_upgrade`] feeds arbitrary bytes as a WebSocket upgrade response.
//!
//! [`check_client`] and [`check_server`] take one input (the first byte chooses how
//! it is cut into reads and, for the client, whether a password is set) and panic if
//! an invariant breaks: no panic inside the machine, bounded buffering and output, a
//! read never consumes more than was given nor anything after the handshake ended.
//! A libFuzzer target can call them as they are; a stable test replays seeded random
//! inputs (`tests::replay_seeded`).

use crate::rfb::{BmcHandshake, FrontHandshake, MAX_REASON_LEN};

/// The most the client may ever send: version, type choice, DES response.
const CLIENT_MAX_OUT: usize = 12 + 1 + 16;
/// The most the server may ever send: version, type list, SecurityResult with reason.
const SERVER_MAX_OUT: usize = 12 + 2 + 8 + 64;

/// Splits `data` into chunks whose sizes follow `seed`.
fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let step = usize::from(seed % 17) + 1;
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        // Vary the size: 1, step, 2*step, ...
        let n = (1 + (i % 3) * step).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// Feeds `input` to a [`BmcHandshake`] and checks its invariants.
pub fn check_client(input: &[u8]) {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let password: Option<&[u8]> = (seed & 0x80 != 0).then_some(b"password");
    let mut hs = BmcHandshake::new(password);
    let mut sent = 0usize;
    for chunk in chunks(seed, data) {
        let done_before = hs.is_done();
        let wants = hs.wants();
        assert!(wants <= MAX_REASON_LEN as usize, "wants {wants}");
        match hs.handle_input(chunk) {
            Ok(n) => {
                assert!(n <= chunk.len());
                if done_before {
                    assert_eq!(n, 0, "consumed after the handshake ended");
                }
                if n < chunk.len() {
                    assert!(hs.is_done(), "stopped early without being done");
                }
            }
            Err(_) => {
                sent += hs.take_output().len();
                assert!(hs.handle_input(chunk).is_err(), "usable after an error");
                break;
            }
        }
        sent += hs.take_output().len();
        assert!(sent <= CLIENT_MAX_OUT, "client sent {sent} bytes");
    }
    assert!(sent <= CLIENT_MAX_OUT, "client sent {sent} bytes");
}

/// Feeds `input` to a [`FrontHandshake`] and checks its invariants.
pub fn check_server(input: &[u8]) {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let mut hs = FrontHandshake::new();
    let mut sent = hs.take_output().len();
    for chunk in chunks(seed, data) {
        let done_before = hs.is_done();
        assert!(hs.wants() <= 12);
        match hs.handle_input(chunk) {
            Ok(n) => {
                assert!(n <= chunk.len());
                if done_before {
                    assert_eq!(n, 0);
                }
                if n < chunk.len() {
                    assert!(hs.is_done());
                }
            }
            Err(_) => {
                sent += hs.take_output().len();
                assert!(hs.handle_input(chunk).is_err());
                break;
            }
        }
        sent += hs.take_output().len();
    }
    assert!(sent <= SERVER_MAX_OUT, "server sent {sent} bytes");
}

/// Feeds `input` as a WebSocket upgrade response, growing byte by byte as the I/O
/// shell does: no panic, a head length within the input and the bound, and a verdict
/// that never changes once given.
pub fn check_ws_upgrade(input: &[u8]) {
    use crate::ws_upgrade::{MAX_RESPONSE_HEAD, Request, Upgrade};
    let req = Request {
        host: "bmc:443",
        path: "/kvm/0",
        subprotocol: Some("binary"),
        header: None,
    };
    let Ok((up, _)) = Upgrade::start(&req, *b"the sample nonce") else {
        panic!("request for fixed inputs failed");
    };
    let mut verdict = None;
    for end in 0..=input.len().min(MAX_RESPONSE_HEAD + 16) {
        let r = up.handle_response(input.get(..end).unwrap_or_default());
        if let Ok(Some(n)) = r {
            assert!(n <= end && n <= MAX_RESPONSE_HEAD, "head {n} of {end}");
        }
        match (&verdict, r) {
            (None, Ok(None)) => {}
            (None, r) => verdict = Some(r),
            (Some(v), r) => {
                assert_eq!(v, &r, "verdict changed with more input");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plausible prefixes so random tails reach the deeper states.
    const PREFIXES: &[&[u8]] = &[
        b"",
        b"RFB 003.008\n",
        b"RFB 003.007\n",
        b"RFB 003.003\n",
        b"RFB 003.008\n\x00",
        b"RFB 003.008\n\x01\x02",
        b"RFB 003.003\n\x00\x00\x00\x02",
        b"RFB 003.003\n\x00\x00\x00\x00",
    ];

    #[test]
    fn replay_seeded() {
        let mut rng = fastrand::Rng::with_seed(0xba5e_2026);
        for i in 0..5000 {
            let prefix = PREFIXES[i % PREFIXES.len()];
            let len = rng.usize(0..80);
            let mut input = vec![rng.u8(..)];
            input.extend_from_slice(prefix);
            input.extend(std::iter::repeat_with(|| rng.u8(..)).take(len));
            check_client(&input);
            check_server(&input);
        }
    }

    #[test]
    fn replay_seeded_ws_upgrade() {
        const OK: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let mut rng = fastrand::Rng::with_seed(0x5eb_50c4);
        for i in 0..1500 {
            let mut input = if i % 2 == 0 { OK.to_vec() } else { Vec::new() };
            // Random bytes with CR/LF and ':' overrepresented, at a random place.
            let at = rng.usize(..=input.len());
            let noise: Vec<u8> = (0..rng.usize(0..64))
                .map(|_| match rng.u8(..8) {
                    0 => b'\r',
                    1 => b'\n',
                    2 => b':',
                    _ => rng.u8(..),
                })
                .collect();
            input.splice(at..at, noise);
            if rng.bool() {
                input.extend_from_slice(b"\r\n\r\n");
            }
            check_ws_upgrade(&input);
        }
        check_ws_upgrade(&[b'x'; 9000]);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for input in [&b""[..], b"\x00", b"\xff", b"\x80RFB"] {
            check_client(input);
            check_server(input);
        }
    }
}
