//! VNC Authentication (RFB security type 2): the client encrypts the server's 16-byte
//! random challenge with DES in ECB mode, keyed by the password.
//!
//! The key is the password's first 8 bytes (zero-padded when shorter), each byte with
//! its bits in reverse order: the original VNC code loaded key bytes least significant
//! bit first, and every server since does the same.

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

/// Length of the challenge and of the response.
pub const CHALLENGE_LEN: usize = 16;

/// The DES key for `password`: first 8 bytes, zero-padded, bits of each byte reversed.
pub fn key(password: &[u8]) -> Zeroizing<[u8; 8]> {
    let mut key = Zeroizing::new([0u8; 8]);
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    key
}

/// The response to `challenge` for `password`.
pub fn response(password: &[u8], challenge: &[u8; CHALLENGE_LEN]) -> [u8; CHALLENGE_LEN] {
    let key = key(password);
    let cipher = Des::new(GenericArray::from_slice(&key[..]));
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> [u8; 16] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect();
        v.try_into().expect("16 bytes")
    }

    /// Vectors computed with vncdotool 1.4.2 (`vncdotool/rfb.py`: `_vnc_des` pads and
    /// bit-reverses the key, `des_encrypt` runs OpenSSL's DES through the Python
    /// `cryptography` package), independent of RustCrypto:
    /// `des_encrypt(_vnc_des(pw), bytes(range(16))).hex()`.
    #[test]
    fn matches_vncdotool() {
        let challenge = hex("000102030405060708090a0b0c0d0e0f");
        assert_eq!(
            response(b"SECRET", &challenge),
            hex("4c56ad3e24cd02ee0b219f6d67b56e4e")
        );
        assert_eq!(
            response(b"password", &challenge),
            hex("b866924125c8eebb9debc1db61c538e2")
        );
        // Longer than 8 bytes: only the first 8 count.
        assert_eq!(
            response(b"password-long", &challenge),
            response(b"password", &challenge)
        );
    }

    #[test]
    fn key_reverses_bits_and_pads() {
        assert_eq!(*key(b"\x01\x80"), [0x80, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(*key(b""), [0; 8]);
        assert_eq!(*key(b"123456789"), *key(b"12345678"));
    }
}
