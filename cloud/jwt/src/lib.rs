//! outband access tokens: compact JWS, EdDSA (Ed25519) only, signed and verified with
//! `ring`, plus a bounded parser for the manager's JWKS. The manager signs with it; the
//! gateway verifies with the keys it fetched from the manager's
//! `/.well-known/jwks.json`, so both apply exactly the same rules.
//!
//! Decision: no general-purpose JWT library. We issue and accept exactly one algorithm,
//! so a strict verifier is short and leaves no algorithm-confusion surface: `alg` must be
//! `EdDSA` (so `none` and HS256-with-the-public-key fail before any key is touched),
//! `kid` must name a live key, the signature is checked before the claims are parsed,
//! and the claims are a typed struct, so `exp`/`nbf`/`iat` must be JSON integers — a
//! string `exp` is a parse error, never "absent" (the CVE-2026-25537 pattern). Tokens
//! over [`MAX_TOKEN_LEN`] bytes are refused before decoding. (jsonwebtoken >= 10.3
//! fixes that CVE too, but needs a RustCrypto or aws-lc backend we would not otherwise
//! build; `ring` is already in the workspace.)
//!
//! No I/O and no clock: the caller passes the current time in [`Expect::now`] and the
//! JWKS document as bytes to [`parse_jwks`].

mod jwks;

pub use jwks::{
    JwksError, KeySet, MAX_JWKS_ENTRIES, MAX_JWKS_LEN, MAX_KEYS, MAX_KID_LEN, PublicKey, parse_jwks,
};

use data_encoding::BASE64URL_NOPAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest token accepted, in bytes, checked before anything is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The only algorithm issued and accepted.
pub const ALG: &str = "EdDSA";
/// JOSE header `typ` of access tokens (RFC 9068).
pub const HEADER_TYP: &str = "at+jwt";
/// Claim `typ` of access tokens.
pub const TOKEN_TYP: &str = "access";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY: i64 = 30;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the manager's configured issuer).
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// Token type: [`TOKEN_TYP`].
    pub typ: String,
    /// Session (refresh family) id; revoking the session revokes its access tokens.
    pub sid: String,
    /// The user's email.
    pub email: String,
    /// Global administrator.
    #[serde(default)]
    pub adm: bool,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    /// Critical extensions: we understand none, so any present means reject.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Why a token was refused. Clients only ever see `invalid_token`; this is for logs
/// and metrics ([`TokenError::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts, or undecodable JSON.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not `EdDSA`, or `crit` is present.
    #[error("algorithm not allowed")]
    Algorithm,
    /// No `kid`, or no live key with that id.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Claims missing or of the wrong type.
    #[error("invalid claims")]
    Claims,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    Issuer,
    /// Wrong `aud`.
    #[error("wrong audience")]
    Audience,
    /// Not an access token.
    #[error("wrong token type")]
    Type,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf` or `iat` in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

impl TokenError {
    /// Every variant, for metrics that list each label.
    pub const ALL: [TokenError; 11] = [
        TokenError::TooLarge,
        TokenError::Malformed,
        TokenError::Algorithm,
        TokenError::UnknownKey,
        TokenError::Signature,
        TokenError::Claims,
        TokenError::Issuer,
        TokenError::Audience,
        TokenError::Type,
        TokenError::Expired,
        TokenError::NotYetValid,
    ];

    /// A stable snake_case name (metric label, log field).
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Signature => "signature",
            TokenError::Claims => "claims",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::Type => "type",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
        }
    }
}

/// An Ed25519 signing key.
#[derive(Debug)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads a PKCS#8 key.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<SigningKey, ring::error::KeyRejected> {
        Ok(SigningKey {
            kid,
            pair: Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)?,
        })
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = HeaderOut {
            alg: ALG,
            typ: HEADER_TYP,
            kid: &self.kid,
        };
        let header = serde_json::to_vec(&header).expect("header serializes");
        let claims = serde_json::to_vec(claims).expect("claims serialize");
        let input = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(&header),
            BASE64URL_NOPAD.encode(&claims)
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }
}

/// Header as written (without the `crit` member).
#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Generates a new Ed25519 key: `(kid, pkcs8, public_key)`.
pub fn generate_key() -> (String, Vec<u8>, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key generation works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("fresh key parses");
    let public = pair.public_key().as_ref().to_vec();
    (thumbprint(&public), pkcs8.as_ref().to_vec(), public)
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key (base64url SHA-256 of the
/// canonical `{"crv","kty","x"}` JSON).
pub fn thumbprint(public_key: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        BASE64URL_NOPAD.encode(public_key)
    );
    BASE64URL_NOPAD.encode(&Sha256::digest(canonical.as_bytes()))
}

/// What a verifier expects.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Required `iss`.
    pub issuer: &'a str,
    /// Required `aud`.
    pub audience: &'a str,
    /// Current unix time.
    pub now: i64,
}

/// Verifies `token` against the public key `lookup(kid)` returns and the expectations.
/// `lookup` is called at most once, and only for a token whose header passed (so a
/// caller can tell from it which `kid` an [`TokenError::UnknownKey`] was about).
pub fn verify<K: AsRef<[u8]>>(
    token: &str,
    lookup: impl FnOnce(&str) -> Option<K>,
    expect: &Expect<'_>,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = BASE64URL_NOPAD
        .decode(h64.as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    if header.alg != ALG || header.crit.is_some() {
        return Err(TokenError::Algorithm);
    }
    let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
    let public = lookup(kid).ok_or(TokenError::UnknownKey)?;
    let sig = BASE64URL_NOPAD
        .decode(s64.as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    let signed = &token[..h64.len() + 1 + c64.len()];
    UnparsedPublicKey::new(&ED25519, public.as_ref())
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| TokenError::Signature)?;
    let claims = BASE64URL_NOPAD
        .decode(c64.as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&claims).map_err(|_| TokenError::Claims)?;
    if claims.iss != expect.issuer {
        return Err(TokenError::Issuer);
    }
    if claims.aud != expect.audience {
        return Err(TokenError::Audience);
    }
    if claims.typ != TOKEN_TYP || header.typ.as_deref().is_some_and(|t| t != HEADER_TYP) {
        return Err(TokenError::Type);
    }
    if expect.now >= claims.exp.saturating_add(LEEWAY) {
        return Err(TokenError::Expired);
    }
    if claims.nbf > expect.now.saturating_add(LEEWAY)
        || claims.iat > expect.now.saturating_add(LEEWAY)
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests;
