//! The verifier against well-formed tokens and the known JWT attacks, and the JWKS
//! parser against the documents a hostile or broken manager could serve.

use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_700_000_000;

fn key() -> SigningKey {
    let (kid, pkcs8, _) = generate_key();
    SigningKey::from_pkcs8(kid, &pkcs8).unwrap()
}

fn claims(now: i64) -> Claims {
    Claims {
        iss: "iss".into(),
        aud: "aud".into(),
        sub: "usr_1".into(),
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: "j".into(),
        typ: TOKEN_TYP.into(),
        sid: "ses_1".into(),
        email: "a@b".into(),
        adm: false,
    }
}

fn expect(now: i64) -> Expect<'static> {
    Expect {
        issuer: "iss",
        audience: "aud",
        now,
    }
}

/// The set holding `k`'s public key.
fn set_of(k: &SigningKey) -> KeySet {
    KeySet::from_keys(vec![PublicKey {
        kid: k.kid.clone(),
        key: k.public_key().try_into().unwrap(),
    }])
}

fn b64(v: &[u8]) -> String {
    BASE64URL_NOPAD.encode(v)
}

/// A token from raw header and claims JSON, signed with `k` (EdDSA over the input,
/// whatever the header says).
fn signed_raw(k: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = k.pair.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

fn header_of(k: &SigningKey) -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": k.kid})
}

fn claims_json(now: i64) -> Value {
    serde_json::to_value(claims(now)).unwrap()
}

#[test]
fn round_trip_and_wrong_key() {
    let k = key();
    let other = key();
    let t = k.sign(&claims(NOW));
    let e = expect(NOW);
    let pk = k.public_key().to_vec();
    assert_eq!(
        verify(&t, |kid| (kid == k.kid).then(|| pk.clone()), &e).unwrap(),
        claims(NOW)
    );
    assert_eq!(set_of(&k).verify(&t, &e).unwrap(), claims(NOW));
    let opk = other.public_key().to_vec();
    assert_eq!(
        verify(&t, |_| Some(opk.clone()), &e),
        Err(TokenError::Signature)
    );
    assert_eq!(
        verify(&t, |_| None::<Vec<u8>>, &e),
        Err(TokenError::UnknownKey)
    );
    // The same token through raw JSON: the helper builds what `sign` builds.
    assert!(
        set_of(&k)
            .verify(&signed_raw(&k, &header_of(&k), &claims_json(NOW)), &e)
            .is_ok()
    );
}

#[test]
fn thumbprint_is_rfc7638_shape() {
    // RFC 8037 appendix A.3 example key and thumbprint.
    let x = BASE64URL_NOPAD
        .decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap();
    assert_eq!(
        thumbprint(&x),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn alg_none_is_refused_before_any_key_is_looked_up() {
    let k = key();
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": k.kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims_json(NOW).to_string().as_bytes())
    );
    for token in [format!("{input}."), format!("{input}.AAAA")] {
        let mut looked_up = false;
        let r = verify(
            &token,
            |_| {
                looked_up = true;
                Some(k.public_key().to_vec())
            },
            &expect(NOW),
        );
        assert_eq!(r, Err(TokenError::Algorithm), "{token}");
        assert!(!looked_up);
    }
    // Case variants are not EdDSA either.
    for alg in ["None", "NONE", "eddsa", "ES256", "RS256", ""] {
        let h = json!({"alg": alg, "kid": k.kid});
        let t = signed_raw(&k, &h, &claims_json(NOW));
        assert_eq!(
            set_of(&k).verify(&t, &expect(NOW)),
            Err(TokenError::Algorithm),
            "{alg}"
        );
    }
    // No alg at all is not a header we accept.
    let t = signed_raw(&k, &json!({"kid": k.kid}), &claims_json(NOW));
    assert_eq!(
        set_of(&k).verify(&t, &expect(NOW)),
        Err(TokenError::Malformed)
    );
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    let k = key();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": k.kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims_json(NOW).to_string().as_bytes())
    );
    // The classic confusion: HMAC keyed with the (public) verification key, raw and
    // as its base64url text, as the JWKS publishes it.
    for secret in [k.public_key().to_vec(), b64(k.public_key()).into_bytes()] {
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(
            set_of(&k).verify(&token, &expect(NOW)),
            Err(TokenError::Algorithm)
        );
    }
}

#[test]
fn unknown_or_missing_kid() {
    let k = key();
    let other = key();
    // Signed by a key the set does not hold.
    let t = other.sign(&claims(NOW));
    assert_eq!(
        set_of(&k).verify(&t, &expect(NOW)),
        Err(TokenError::UnknownKey)
    );
    // A forged kid naming no key, or none at all.
    for h in [
        json!({"alg": "EdDSA", "kid": "made-up"}),
        json!({"alg": "EdDSA"}),
    ] {
        let t = signed_raw(&k, &h, &claims_json(NOW));
        assert_eq!(
            set_of(&k).verify(&t, &expect(NOW)),
            Err(TokenError::UnknownKey),
            "{h}"
        );
    }
    // The right kid on a token signed by another key: the signature decides.
    let t = signed_raw(&other, &header_of(&k), &claims_json(NOW));
    assert_eq!(
        set_of(&k).verify(&t, &expect(NOW)),
        Err(TokenError::Signature)
    );
}

#[test]
fn wrong_issuer_audience_and_type() {
    let k = key();
    let set = set_of(&k);
    let mut c = claims(NOW);
    c.iss = "someone-else".into();
    assert_eq!(
        set.verify(&k.sign(&c), &expect(NOW)),
        Err(TokenError::Issuer)
    );
    let mut c = claims(NOW);
    c.aud = "other-audience".into();
    assert_eq!(
        set.verify(&k.sign(&c), &expect(NOW)),
        Err(TokenError::Audience)
    );
    // An audience array is not the string we issue.
    let mut c = claims_json(NOW);
    c["aud"] = json!(["aud"]);
    assert_eq!(
        set.verify(&signed_raw(&k, &header_of(&k), &c), &expect(NOW)),
        Err(TokenError::Claims)
    );
    let mut c = claims(NOW);
    c.typ = "refresh".into();
    assert_eq!(set.verify(&k.sign(&c), &expect(NOW)), Err(TokenError::Type));
    let h = json!({"alg": "EdDSA", "typ": "JWT", "kid": k.kid});
    assert_eq!(
        set.verify(&signed_raw(&k, &h, &claims_json(NOW)), &expect(NOW)),
        Err(TokenError::Type)
    );
}

#[test]
fn expiry_with_leeway_and_not_yet_valid() {
    let k = key();
    let set = set_of(&k);
    let t = k.sign(&claims(NOW));
    let exp = NOW + 300;
    assert!(set.verify(&t, &expect(exp + LEEWAY - 1)).is_ok());
    assert_eq!(
        set.verify(&t, &expect(exp + LEEWAY)),
        Err(TokenError::Expired)
    );
    assert_eq!(
        set.verify(&t, &expect(exp + 86_400)),
        Err(TokenError::Expired)
    );
    // Issued in the future (beyond the leeway).
    assert!(set.verify(&t, &expect(NOW - LEEWAY)).is_ok());
    assert_eq!(
        set.verify(&t, &expect(NOW - LEEWAY - 1)),
        Err(TokenError::NotYetValid)
    );
    let mut c = claims(NOW);
    c.nbf = NOW + 120;
    assert_eq!(
        set.verify(&k.sign(&c), &expect(NOW)),
        Err(TokenError::NotYetValid)
    );
    // Overflow near i64::MAX must not wrap into "valid".
    let mut c = claims(NOW);
    c.exp = i64::MAX;
    assert!(set.verify(&k.sign(&c), &expect(NOW)).is_ok());
    c.exp = i64::MIN;
    assert_eq!(
        set.verify(&k.sign(&c), &expect(NOW)),
        Err(TokenError::Expired)
    );
}

#[test]
fn time_claims_must_be_integers_and_present() {
    let k = key();
    let set = set_of(&k);
    for (name, value) in [
        ("exp", json!("9999999999")),
        ("exp", json!(9_999_999_999.5)),
        ("exp", json!(null)),
        ("exp", json!([9_999_999_999i64])),
        ("nbf", json!("0")),
        ("iat", json!(true)),
    ] {
        let mut c = claims_json(NOW);
        c[name] = value.clone();
        let t = signed_raw(&k, &header_of(&k), &c);
        assert_eq!(
            set.verify(&t, &expect(NOW)),
            Err(TokenError::Claims),
            "{name}: {value}"
        );
    }
    for name in ["exp", "nbf", "iat", "sub", "sid", "iss", "aud", "typ"] {
        let mut c = claims_json(NOW);
        c.as_object_mut().unwrap().remove(name);
        let t = signed_raw(&k, &header_of(&k), &c);
        assert_eq!(
            set.verify(&t, &expect(NOW)),
            Err(TokenError::Claims),
            "missing {name}"
        );
    }
    // A duplicated claim is ambiguous: refused, not "last one wins".
    let body = claims_json(NOW).to_string();
    let dup = body.replacen('{', "{\"exp\":99999999999,", 1);
    let input = format!(
        "{}.{}",
        b64(header_of(&k).to_string().as_bytes()),
        b64(dup.as_bytes())
    );
    let t = format!("{input}.{}", b64(k.pair.sign(input.as_bytes()).as_ref()));
    assert_eq!(set.verify(&t, &expect(NOW)), Err(TokenError::Claims));
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let k = key();
    let set = set_of(&k);
    // A correctly signed token that is just too long.
    let mut c = claims(NOW);
    c.email = "x".repeat(MAX_TOKEN_LEN);
    let t = k.sign(&c);
    assert!(t.len() > MAX_TOKEN_LEN);
    let mut looked_up = false;
    let r = verify(
        &t,
        |_| {
            looked_up = true;
            Some(k.public_key().to_vec())
        },
        &expect(NOW),
    );
    assert_eq!(r, Err(TokenError::TooLarge));
    assert!(!looked_up);
    // Garbage of any size: too large, or malformed, never a panic.
    assert_eq!(
        set.verify(&"A".repeat(1 << 20), &expect(NOW)),
        Err(TokenError::TooLarge)
    );
    // Just under the limit it is judged on its merits.
    let mut c = claims(NOW);
    c.email = String::new();
    let base = k.sign(&c).len();
    c.email = "y".repeat((MAX_TOKEN_LEN - base) * 3 / 4 - 4);
    let t = k.sign(&c);
    assert!(t.len() <= MAX_TOKEN_LEN, "{}", t.len());
    assert!(set.verify(&t, &expect(NOW)).is_ok());
}

#[test]
fn malformed_tokens() {
    let k = key();
    let set = set_of(&k);
    let good = k.sign(&claims(NOW));
    let (input, sig) = good.rsplit_once('.').unwrap();
    for bad in [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{good}."),
        format!("{input}.{sig}="),
        format!("{input}.{sig}!"),
        format!("!{good}"),
        format!("{}.{}.{sig}", b64(b"not json"), b64(b"{}")),
        "...".into(),
        "é.é.é".into(),
    ] {
        let r = set.verify(&bad, &expect(NOW));
        assert!(
            matches!(r, Err(TokenError::Malformed | TokenError::UnknownKey)),
            "{bad}: {r:?}"
        );
    }
    // Claims changed after signing.
    let (h, rest) = good.split_once('.').unwrap();
    let (_, s) = rest.split_once('.').unwrap();
    let mut c = claims_json(NOW);
    c["sub"] = json!("usr_admin");
    let t = format!("{h}.{}.{s}", b64(c.to_string().as_bytes()));
    assert_eq!(set.verify(&t, &expect(NOW)), Err(TokenError::Signature));
    // `crit` names extensions we do not implement.
    let h = json!({"alg": "EdDSA", "kid": k.kid, "crit": ["exp"]});
    assert_eq!(
        set.verify(&signed_raw(&k, &h, &claims_json(NOW)), &expect(NOW)),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn error_names_are_distinct() {
    let names: std::collections::BTreeSet<_> = TokenError::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(names.len(), TokenError::ALL.len());
}

// --- JWKS -----------------------------------------------------------------

fn jwk(k: &SigningKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key()), "kid": k.kid, "alg": "EdDSA", "use": "sig"})
}

fn doc(keys: Vec<Value>) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

#[test]
fn jwks_keys_verify_and_other_entries_are_skipped() {
    let a = key();
    let b = key();
    let set = parse_jwks(&doc(vec![
        jwk(&a),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa-1"}),
        json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "ec-1"}),
        json!({"kty": "OKP", "crv": "X25519", "x": b64(&[1; 32]), "kid": "x-1"}),
        json!({"kty": "OKP", "crv": "Ed448", "x": b64(&[1; 57]), "kid": "ed448"}),
        json!({"kty": "future-type", "kid": "f"}),
        json!("not an object"),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 31]), "kid": "short"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 33]), "kid": "long"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "!".repeat(43), "kid": "bad-b64"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32])}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": ""}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "k".repeat(MAX_KID_LEN + 1)}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": 7}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "es", "alg": "ES256"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "enc", "use": "enc"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "d": b64(&[2; 32]), "kid": "priv"}),
        // Minimal members only (alg and use are optional).
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(b.public_key()), "kid": b.kid}),
    ]))
    .unwrap();
    assert_eq!(set.kids().collect::<Vec<_>>(), vec![&a.kid, &b.kid]);
    assert_eq!(set.ignored(), 16);
    assert!(set.contains(&a.kid) && !set.contains("rsa-1"));
    assert_eq!(set.get(&a.kid).unwrap().as_slice(), a.public_key());
    assert!(set.verify(&a.sign(&claims(NOW)), &expect(NOW)).is_ok());
    assert!(set.verify(&b.sign(&claims(NOW)), &expect(NOW)).is_ok());
    assert_eq!(
        set.verify(&key().sign(&claims(NOW)), &expect(NOW)),
        Err(TokenError::UnknownKey)
    );
    // Unknown top-level members are fine.
    let mut v: Value = serde_json::from_slice(&doc(vec![jwk(&a)])).unwrap();
    v["next_rotation"] = json!(12);
    assert_eq!(parse_jwks(v.to_string().as_bytes()).unwrap().len(), 1);
}

#[test]
fn jwks_bounds_and_refusals() {
    let a = key();
    // Size, checked before parsing (this one would otherwise be valid JSON).
    let mut big = doc(vec![jwk(&a)]);
    big.splice(1..1, std::iter::repeat_n(b' ', MAX_JWKS_LEN));
    assert_eq!(parse_jwks(&big), Err(JwksError::TooLarge));
    // Entries and usable keys.
    let junk = json!({"kty": "RSA", "kid": "r"});
    let mut many = vec![jwk(&a)];
    many.extend(std::iter::repeat_n(junk.clone(), MAX_JWKS_ENTRIES));
    assert_eq!(parse_jwks(&doc(many)), Err(JwksError::TooManyEntries));
    let mut at_limit = vec![jwk(&a)];
    at_limit.extend(std::iter::repeat_n(junk, MAX_JWKS_ENTRIES - 1));
    assert_eq!(parse_jwks(&doc(at_limit)).unwrap().len(), 1);
    let keys: Vec<Value> = (0..MAX_KEYS).map(|_| jwk(&key())).collect();
    assert_eq!(parse_jwks(&doc(keys.clone())).unwrap().len(), MAX_KEYS);
    let mut too_many = keys;
    too_many.push(jwk(&key()));
    assert_eq!(parse_jwks(&doc(too_many)), Err(JwksError::TooManyKeys));
    // Two keys under one kid: which one is meant?
    let mut twin = jwk(&key());
    twin["kid"] = json!(a.kid);
    assert_eq!(
        parse_jwks(&doc(vec![jwk(&a), twin])),
        Err(JwksError::DuplicateKid(a.kid.clone()))
    );
    // Nothing usable.
    assert_eq!(
        parse_jwks(&doc(vec![json!({"kty": "RSA"})])),
        Err(JwksError::NoUsableKey { ignored: 1 })
    );
    assert_eq!(
        parse_jwks(&doc(vec![])),
        Err(JwksError::NoUsableKey { ignored: 0 })
    );
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"{\"keys\": {}}",
        b"{\"keys\": [",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(parse_jwks(bad), Err(JwksError::Malformed(_))),
            "{bad:?}"
        );
    }
    // Deep nesting inside an entry: serde_json's recursion limit, an error, no overflow.
    let deep = format!(
        "{{\"keys\":[{}{}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(parse_jwks(deep.as_bytes()).is_err());
}
