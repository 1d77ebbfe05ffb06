//! Forged and tampered access tokens are refused (`401 invalid_token`) by the bearer
//! middleware; the untampered control token is accepted.

use axum::http::StatusCode;
use data_encoding::BASE64URL_NOPAD as B64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::ctx::{Db, TestApp, both};

fn seg(v: &Value) -> String {
    B64.encode(v.to_string().as_bytes())
}

/// `header.payload.signature` signed by `key` (or the given raw signature).
fn forge(header: &Value, payload: &Value, key: &Ed25519KeyPair) -> String {
    let input = format!("{}.{}", seg(header), seg(payload));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

fn hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", seg(header), seg(payload));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        input.as_bytes(),
    );
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

async fn forged_tokens_are_refused(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (good, _) = app.tokens("root@example.com").await;
    let ok = app.get("/api/v1/audit", Some(&good)).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "control token must work: {}",
        ok.text
    );

    // The real signing key, to show that claim checks hold even with a valid signature.
    let row = app
        .m
        .store
        .live_keys(app.clock.now())
        .await
        .unwrap()
        .remove(0);
    let pkcs8 = app
        .m
        .credential_keys
        .open_signing_key(
            &row.kid,
            row.sealed_with.as_deref().unwrap(),
            &row.private_key,
        )
        .unwrap();
    let real = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
    let kid = row.kid.clone();
    let parts: Vec<&str> = good.split('.').collect();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1].as_bytes()).unwrap()).unwrap();
    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid });
    let now = app.clock.now();
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let rng = ring::rand::SystemRandom::new();
    let stranger_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let stranger = Ed25519KeyPair::from_pkcs8(stranger_pkcs8.as_ref()).unwrap();
    let jwk_x = B64.encode(real.public_key().as_ref());

    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", seg(&json!({"alg":"none","kid":kid})), parts[1]),
        ),
        (
            "alg none, no kid",
            format!("{}.{}.", seg(&json!({"alg":"none"})), parts[1]),
        ),
        (
            "HS256 with the raw public key",
            hs256(
                &json!({"alg":"HS256","kid":kid}),
                &claims,
                real.public_key().as_ref(),
            ),
        ),
        (
            "HS256 with the JWK x string",
            hs256(&json!({"alg":"HS256","kid":kid}), &claims, jwk_x.as_bytes()),
        ),
        (
            "unknown kid",
            forge(
                &json!({"alg":"EdDSA","typ":"at+jwt","kid":"nope"}),
                &claims,
                &stranger,
            ),
        ),
        ("known kid, other key", forge(&header, &claims, &stranger)),
        (
            "no kid",
            forge(&json!({"alg":"EdDSA","typ":"at+jwt"}), &claims, &real),
        ),
        (
            "crit header",
            forge(
                &json!({"alg":"EdDSA","kid":kid,"crit":["exp"]}),
                &claims,
                &real,
            ),
        ),
        (
            "wrong iss",
            forge(&header, &with("iss", json!("evil")), &real),
        ),
        (
            "wrong aud",
            forge(&header, &with("aud", json!("someone-else")), &real),
        ),
        (
            "aud as array",
            forge(&header, &with("aud", json!(["outband"])), &real),
        ),
        (
            "expired",
            forge(&header, &with("exp", json!(now - 3600)), &real),
        ),
        (
            "exp as string",
            forge(
                &header,
                &with("exp", json!((now + 3600).to_string())),
                &real,
            ),
        ),
        (
            "exp as float",
            forge(
                &header,
                &with("exp", json!((now + 3600) as f64 + 0.5)),
                &real,
            ),
        ),
        ("missing exp", forge(&header, &without("exp"), &real)),
        ("missing nbf", forge(&header, &without("nbf"), &real)),
        (
            "nbf as string",
            forge(&header, &with("nbf", json!(now.to_string())), &real),
        ),
        (
            "nbf in the future",
            forge(&header, &with("nbf", json!(now + 3600)), &real),
        ),
        (
            "iat in the future",
            forge(&header, &with("iat", json!(now + 3600)), &real),
        ),
        (
            "refresh typ",
            forge(&header, &with("typ", json!("refresh")), &real),
        ),
        (
            "header typ",
            forge(
                &json!({"alg":"EdDSA","typ":"JWT+refresh","kid":kid}),
                &claims,
                &real,
            ),
        ),
        (
            "unknown session",
            forge(&header, &with("sid", json!("ses_forged")), &real),
        ),
        (
            "unknown user",
            forge(&header, &with("sub", json!("usr_forged")), &real),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                seg(&with("adm", json!(true))),
                parts[2]
            ),
        ),
        ("truncated signature", good[..good.len() - 4].to_owned()),
        ("four segments", format!("{good}.x")),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        (
            "padding",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        ),
        ("garbage", "not-a-token".into()),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
        ),
    ];
    for (name, token) in attacks {
        let r = app.get("/api/v1/audit", Some(&token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
        assert_eq!(r.code(), "invalid_token", "{name}");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{name}");
    }
    // No token at all.
    let r = app.get("/api/v1/audit", None).await;
    assert_eq!(r.code(), "unauthenticated");
    // The control token still works (nothing above poisoned state).
    assert_eq!(
        app.get("/api/v1/audit", Some(&good)).await.status,
        StatusCode::OK
    );
}

async fn expired_access_token_is_refused_after_the_clock_moves(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (good, _) = app.tokens("root@example.com").await;
    app.clock.advance(600 + 31);
    assert_eq!(
        app.get("/api/v1/audit", Some(&good)).await.code(),
        "invalid_token"
    );
}

both!(
    forged_tokens_are_refused,
    expired_access_token_is_refused_after_the_clock_moves
);
