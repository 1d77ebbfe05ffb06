//! Access-token validation as a gateway does it: a key set parsed from a JWKS document
//! (the manager's shape, a few keys as during a rotation), then per token the `kid`
//! lookup in that set and the full [`outband_jwt::verify`] (header, Ed25519
//! signature, typed claims, iss/aud/exp). Also the JWKS parse itself.
//!
//! `cargo bench -p outband-jwt` (plain binary, no harness; one line per measurement).

use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use outband_jwt::{Claims, Expect, SigningKey, TOKEN_TYP, generate_key, parse_jwks};

fn rate(window: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up, then count.
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let window = Duration::from_secs(3);
    let keys: Vec<SigningKey> = (0..3)
        .map(|_| {
            let (kid, pkcs8, _) = generate_key();
            SigningKey::from_pkcs8(kid, &pkcs8).unwrap()
        })
        .collect();
    let doc = serde_json::json!({
        "keys": keys.iter().map(|k| serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": k.kid, "x": BASE64URL_NOPAD.encode(k.public_key()),
        })).collect::<Vec<_>>()
    })
    .to_string();
    let now = 1_700_000_000;
    let claims = Claims {
        iss: "outband-manager".into(),
        aud: "outband".into(),
        sub: "usr_0123456789abcdef".into(),
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: "jti_0123456789abcdef0123".into(),
        typ: TOKEN_TYP.into(),
        sid: "ses_0123456789abcdef".into(),
        email: "operator@example.com".into(),
        adm: false,
    };
    // The newest key signs (the last one looked up in the set).
    let token = keys[2].sign(&claims);
    let expect = Expect {
        issuer: "outband-manager",
        audience: "outband",
        now,
    };
    let set = parse_jwks(doc.as_bytes()).unwrap();
    assert_eq!(set.verify(&token, &expect).unwrap(), claims);

    let one = rate(window, || {
        std::hint::black_box(set.verify(std::hint::black_box(&token), &expect).unwrap());
    });
    println!(
        "token validation (JWKS kid lookup + verify), 1 thread: {one:.0} tokens/s ({:.1} µs each)",
        1e6 / one
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    rate(window, || {
                        std::hint::black_box(set.verify(&token, &expect).unwrap());
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("token validation, {threads} threads: {total:.0} tokens/s");
    // A signature that decodes but does not verify (one character in its middle
    // changed), so the refusal costs a real Ed25519 verification.
    let mut bad = token.clone().into_bytes();
    let i = bad.len() - 20;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        set.verify(&bad, &expect),
        Err(outband_jwt::TokenError::Signature)
    );
    let refused = rate(window, || {
        std::hint::black_box(set.verify(&bad, &expect).unwrap_err());
    });
    println!("bad signature refused, 1 thread: {refused:.0} tokens/s");
    let parses = rate(window, || {
        std::hint::black_box(parse_jwks(doc.as_bytes()).unwrap());
    });
    println!(
        "JWKS parse ({} keys, {} bytes): {parses:.0} documents/s",
        set.len(),
        doc.len()
    );
}
