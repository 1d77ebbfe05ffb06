//! The cryptography of RMCP+: HMAC-SHA1 / HMAC-SHA256 (ring), AES-CBC-128 (the `aes`
//! block cipher with CBC chaining done here), and the session key derivation of
//! IPMI 2.0 section 13.31-13.32.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use ring::hmac;
use zeroize::Zeroizing;

/// A keyed hash used for RAKP authentication and session keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAlg {
    /// RAKP-HMAC-SHA1 (authentication algorithm 1).
    HmacSha1,
    /// RAKP-HMAC-SHA256 (authentication algorithm 3).
    HmacSha256,
}

impl AuthAlg {
    /// The algorithm number in Open Session payloads.
    pub fn number(self) -> u8 {
        match self {
            AuthAlg::HmacSha1 => 1,
            AuthAlg::HmacSha256 => 3,
        }
    }

    /// Full HMAC output length (RAKP 2/3 auth codes, SIK, K1, K2).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            AuthAlg::HmacSha1 => 20,
            AuthAlg::HmacSha256 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value (HMAC truncated: 12 or 16 bytes).
    pub fn icv_len(self) -> usize {
        match self {
            AuthAlg::HmacSha1 => 12,
            AuthAlg::HmacSha256 => 16,
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            AuthAlg::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            AuthAlg::HmacSha256 => hmac::HMAC_SHA256,
        }
    }

    /// HMAC of the concatenation of `parts` under `key`.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let k = hmac::Key::new(self.ring(), key);
        let mut ctx = hmac::Context::with_key(&k);
        for p in parts {
            ctx.update(p);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }
}

/// The per-packet integrity algorithm of an active session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlg {
    /// HMAC-SHA1-96 (integrity algorithm 1).
    HmacSha1_96,
    /// HMAC-SHA256-128 (integrity algorithm 4).
    HmacSha256_128,
}

impl IntegrityAlg {
    /// The algorithm number in Open Session payloads.
    pub fn number(self) -> u8 {
        match self {
            IntegrityAlg::HmacSha1_96 => 1,
            IntegrityAlg::HmacSha256_128 => 4,
        }
    }

    /// Length of the AuthCode in the session trailer.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            IntegrityAlg::HmacSha1_96 => 12,
            IntegrityAlg::HmacSha256_128 => 16,
        }
    }

    /// The truncated HMAC under K1 over `data`.
    pub fn mac(self, k1: &[u8], data: &[u8]) -> Vec<u8> {
        let alg = match self {
            IntegrityAlg::HmacSha1_96 => AuthAlg::HmacSha1,
            IntegrityAlg::HmacSha256_128 => AuthAlg::HmacSha256,
        };
        let mut m = alg.mac(k1, &[data]).to_vec();
        m.truncate(self.len());
        m
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session keys derived after RAKP 2 (IPMI 2.0 section 13.31-13.32).
#[derive(Clone)]
pub struct SessionKeys {
    /// Session Integrity Key.
    pub sik: Zeroizing<Vec<u8>>,
    /// K1: the integrity key.
    pub k1: Zeroizing<Vec<u8>>,
    /// K2: its first 16 bytes are the AES-CBC-128 key.
    pub k2: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(***)")
    }
}

impl SessionKeys {
    /// SIK = HMAC_Kg(Rm | Rc | RoleM | ULengthM | UNameM); K1 = HMAC_SIK(0x01 * n);
    /// K2 = HMAC_SIK(0x02 * n), n the hash length. `kg` is the BMC key, or the user
    /// password when the BMC has none (the usual case).
    pub fn derive(
        alg: AuthAlg,
        kg: &[u8],
        rm: &[u8; 16],
        rc: &[u8; 16],
        role: u8,
        username: &[u8],
    ) -> SessionKeys {
        let ulen = [username.len() as u8];
        let sik = alg.mac(kg, &[rm, rc, &[role], &ulen, username]);
        let ones = vec![1u8; alg.len()];
        let twos = vec![2u8; alg.len()];
        let k1 = alg.mac(&sik, &[&ones]);
        let k2 = alg.mac(&sik, &[&twos]);
        SessionKeys { sik, k1, k2 }
    }

    /// The AES-CBC-128 key (first 16 bytes of K2).
    pub fn aes_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.k2[..16]);
        k
    }
}

/// AES-CBC-128 encryption of `data`, whose length must be a multiple of 16.
pub fn aes_cbc_encrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
    let c = Aes128::new(GenericArray::from_slice(key));
    let mut prev = *iv;
    for block in data.chunks_exact_mut(16) {
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        c.encrypt_block(GenericArray::from_mut_slice(block));
        prev.copy_from_slice(block);
    }
}

/// AES-CBC-128 decryption of `data`, whose length must be a multiple of 16.
pub fn aes_cbc_decrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
    let c = Aes128::new(GenericArray::from_slice(key));
    let mut prev = *iv;
    for block in data.chunks_exact_mut(16) {
        let mut this = [0u8; 16];
        this.copy_from_slice(block);
        c.decrypt_block(GenericArray::from_mut_slice(block));
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        prev = this;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn aes_cbc_nist_vector() {
        // NIST SP 800-38A, F.2.1 CBC-AES128.Encrypt, first two blocks.
        let key: [u8; 16] = hex("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let plain = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let mut data = plain.clone();
        aes_cbc_encrypt(&key, &iv, &mut data);
        assert_eq!(
            data,
            hex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2")
        );
        aes_cbc_decrypt(&key, &iv, &mut data);
        assert_eq!(data, plain);
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
