//! Fuzzing support: [`check_packet`] feeds arbitrary bytes to the packet, message and
//! RAKP parsers and checks invariants: no panic, and whatever the packet parser
//! accepts re-encodes to the same bytes. Used by the seeded stable test below and by
//! the cargo-fuzz target in `fuzz/`.

use zeroize::Zeroizing;

use crate::crypto::IntegrityAlg;
use crate::packet::{self, Packet, Security};

fn session_keys(encrypt: bool) -> Security {
    Security {
        integrity: IntegrityAlg::HmacSha1_96,
        k1: Zeroizing::new(vec![0x5a; 20]),
        aes_key: encrypt.then(|| Zeroizing::new([0xa5; 16])),
    }
}

/// Parses `data` every way a BMC datagram can be parsed. Panics (the fuzz failure
/// signal) only if an invariant is broken.
pub fn check_packet(data: &[u8]) {
    for sec in [None, Some(session_keys(false)), Some(session_keys(true))] {
        if let Ok(p) = packet::decode(data, sec.as_ref()) {
            match p {
                Packet::V15(msg) => {
                    assert!(msg.len() <= data.len());
                    let again = packet::encode_v15(&msg).expect("re-encode v1.5");
                    assert_eq!(again[..], data[..again.len()], "v1.5 round trip");
                }
                Packet::V2(v) => {
                    if sec.as_ref().is_none_or(|s| s.aes_key.is_none()) {
                        let again = packet::encode_v2(
                            v.payload_type,
                            v.session_id,
                            v.seq,
                            &v.payload,
                            sec.as_ref(),
                            &[0; 16],
                        )
                        .expect("re-encode v2");
                        assert_eq!(again, data, "v2 round trip");
                    } else {
                        // Encrypted: re-encrypting with the packet's IV gives the same bytes.
                        let mut iv = [0u8; 16];
                        iv.copy_from_slice(&data[16..32]);
                        let again = packet::encode_v2(
                            v.payload_type,
                            v.session_id,
                            v.seq,
                            &v.payload,
                            sec.as_ref(),
                            &iv,
                        )
                        .expect("re-encode encrypted v2");
                        assert_eq!(again, data, "encrypted v2 round trip");
                    }
                    let _ = crate::message::decode_response(&v.payload);
                }
            }
        }
    }
    let _ = crate::message::decode_response(data);
    let _ = crate::asf::parse_pong(data);
    let _ = crate::commands::parse_device_id(data);
    let _ = crate::commands::parse_chassis_status(data);
    let _ = crate::commands::parse_boot_flags(data);
    let _ = crate::commands::parse_auth_caps(data);
    let _ = crate::commands::parse_cipher_suite_records(data);
    let _ = crate::commands::parse_activate_sol(data);
}

/// Feeds `data`, split into datagrams at each 0xA5 0x5A pair, to a session core in
/// its first state, with time advancing between datagrams. Checks that it never
/// panics and is never stuck: while not closed, it always has a deadline.
pub fn check_connection(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::commands::Privilege;
    use crate::conn::{Config, Connection, State};

    let cfg = Config {
        username: Zeroizing::new(b"admin".to_vec()),
        password: Zeroizing::new(b"password".to_vec()),
        privilege: Privilege::Administrator,
        cipher_suites: vec![17, 3],
        force_ipmi15: false,
        allow_ipmi15: false,
        timeout: Duration::from_millis(100),
        retries: 1,
        cipher_query_timeout: Duration::from_millis(50),
        keepalive: Duration::from_secs(1),
    };
    let mut now = Instant::now();
    let mut c = Connection::new(cfg, Box::new(|b: &mut [u8]| b.fill(7)), now);
    let mut rest = data;
    loop {
        while c.poll_transmit().is_some() {}
        let (dgram, next) = match rest.windows(2).position(|w| w == [0xa5, 0x5a]) {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        c.handle_datagram(dgram, now);
        while c.poll_transmit().is_some() {}
        if c.state() != State::Closed {
            assert!(
                c.poll_timeout().is_some(),
                "open connection without a deadline"
            );
        }
        now += Duration::from_millis(30);
        c.handle_timeout(now);
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    // Run the clock out: it must close (time out) in bounded steps.
    for _ in 0..100 {
        if c.state() == State::Closed {
            return;
        }
        while c.poll_transmit().is_some() {}
        match c.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                c.handle_timeout(now);
            }
            None => break,
        }
    }
    assert_eq!(c.state(), State::Closed, "never timed out");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::payload;

    /// A small deterministic generator (xorshift) so the test is stable.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        let k = session_keys(false);
        let e = session_keys(true);
        vec![
            packet::encode_v15(&[0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0, 1, 0xa3]).unwrap(),
            packet::encode_v2(payload::RAKP2, 0, 0, &[0; 60], None, &[0; 16]).unwrap(),
            packet::encode_v2(
                payload::IPMI,
                7,
                9,
                &[1, 2, 3, 4, 5, 6, 7, 8],
                Some(&k),
                &[0; 16],
            )
            .unwrap(),
            packet::encode_v2(payload::SOL, 7, 9, b"serial data", Some(&e), &[3; 16]).unwrap(),
            crate::asf::presence_ping(1).to_vec(),
        ]
    }

    #[test]
    fn seeded_random_inputs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = seeds();
        for s in &seeds {
            check_packet(s);
        }
        for i in 0..4000 {
            let mut d = seeds[i % seeds.len()].clone();
            // Mutate: flip bytes, truncate, or extend.
            match rng.next() % 4 {
                0 => {
                    for _ in 0..(rng.next() % 4 + 1) {
                        let at = (rng.next() as usize) % d.len();
                        d[at] = rng.next() as u8;
                    }
                }
                1 => d.truncate((rng.next() as usize) % (d.len() + 1)),
                2 => d.extend((0..rng.next() % 64).map(|_| rng.next() as u8)),
                _ => {
                    d = (0..rng.next() % 128).map(|_| rng.next() as u8).collect();
                }
            }
            check_packet(&d);
            if i % 4 == 0 {
                check_connection(&d);
            }
        }
    }

    #[test]
    fn connection_with_valid_caps_then_garbage() {
        // A valid capabilities answer (rqSeq 1) moves the core on; garbage follows.
        let mut caps = vec![0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0x00];
        caps.extend_from_slice(&[0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0]);
        let cs = crate::message::checksum(&caps[3..]);
        caps.push(cs);
        let mut d = packet::encode_v15(&caps).unwrap();
        d.extend_from_slice(&[0xa5, 0x5a, 6, 0, 0xff, 7, 6, 0x11, 0, 0]);
        check_connection(&d);
    }
}
