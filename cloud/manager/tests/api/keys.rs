//! Signing-key rotation: overlap, then removal.

use axum::http::{Method, StatusCode};
use data_encoding::BASE64URL_NOPAD as B64;
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

use crate::ctx::{Db, TestApp, both};

fn kid_of(token: &str) -> String {
    let h: Value = serde_json::from_slice(
        &B64.decode(token.split('.').next().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let v = app.get("/.well-known/jwks.json", None).await.json();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn rotation_keeps_old_keys_during_overlap_then_drops_them(db: Db) {
    let app =
        TestApp::with_config(db, |c| c.key_overlap = std::time::Duration::from_secs(3600)).await;
    app.user("root@example.com", true).await;
    let (old_token, _) = app.tokens("root@example.com").await;
    let old_kid = kid_of(&old_token);
    let old_row = app
        .m
        .store
        .live_keys(app.clock.now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(old_row.kid, old_kid);

    let r = app
        .send(
            Method::POST,
            "/api/v1/admin/keys/rotate",
            None,
            Some(&old_token),
            [127, 0, 0, 1],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new_kid = r.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(
        r.json()["previous_keys_valid_until"].as_i64().unwrap(),
        app.clock.now() + 3600
    );

    // Overlap: both published, old tokens still accepted, new tokens use the new key.
    let kids = jwks_kids(&app).await;
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    assert_eq!(
        app.get("/api/v1/audit", Some(&old_token)).await.status,
        StatusCode::OK
    );
    let (new_token, _) = app.tokens("root@example.com").await;
    assert_eq!(kid_of(&new_token), new_kid);

    // After the overlap the old key is gone: a fresh token signed with it is refused.
    app.clock.advance(3600 + 1);
    assert_eq!(jwks_kids(&app).await, vec![new_kid.clone()]);
    let (fresh, _) = app.tokens("root@example.com").await;
    let parts: Vec<&str> = fresh.split('.').collect();
    let header = serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid":old_kid}).to_string();
    let input = format!("{}.{}", B64.encode(header.as_bytes()), parts[1]);
    let old_pkcs8 = app
        .m
        .credential_keys
        .open_signing_key(
            &old_row.kid,
            old_row.sealed_with.as_deref().unwrap(),
            &old_row.private_key,
        )
        .unwrap();
    let old_key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&old_pkcs8).unwrap();
    let forged = format!(
        "{input}.{}",
        B64.encode(old_key.sign(input.as_bytes()).as_ref())
    );
    assert_eq!(
        app.get("/api/v1/audit", Some(&forged)).await.code(),
        "invalid_token"
    );
    assert_eq!(
        app.get("/api/v1/audit", Some(&fresh)).await.status,
        StatusCode::OK
    );

    // The next rotation deletes the expired row.
    app.m.keys.rotate(3600).await.unwrap();
    let kids: Vec<(String,)> = sqlx::query_as("SELECT kid FROM signing_keys")
        .fetch_all(app.m.store.pool())
        .await
        .unwrap();
    assert_eq!(kids.len(), 2);
    assert!(!kids.iter().any(|(k,)| *k == old_kid));
}

async fn only_global_admins_rotate_and_denials_are_audited(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    app.user("plain@example.com", false).await;
    let (plain, _) = app.tokens("plain@example.com").await;
    let r = app
        .send(
            Method::POST,
            "/api/v1/admin/keys/rotate",
            None,
            Some(&plain),
            [127, 0, 0, 1],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "forbidden");
    assert_eq!(jwks_kids(&app).await.len(), 1);
    let (admin, _) = app.tokens("root@example.com").await;
    let denied = app.audit(&admin, "action=authz").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["actor_email"], "plain@example.com");
    assert_eq!(denied[0]["target"], "rotate_keys");
}

async fn a_replica_accepts_a_key_rotated_elsewhere_at_once(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    // A second manager on the same database, its key cache warm.
    let other =
        outband_manager::Manager::new(app.m.store.clone(), app.m.config.clone(), app.clock.clone())
            .unwrap();
    let (before, _) = app.tokens("root@example.com").await;
    assert!(
        other
            .keys
            .verify(&before, "outband-manager", "outband")
            .await
            .unwrap()
            .is_ok()
    );
    let (new_kid, _) = app.m.keys.rotate(3600).await.unwrap();
    let (after, _) = app.tokens("root@example.com").await;
    assert_eq!(kid_of(&after), new_kid);
    // Within the cache lifetime, the other replica still accepts it (reload on a kid
    // the database has) ...
    let claims = other
        .keys
        .verify(&after, "outband-manager", "outband")
        .await
        .unwrap();
    assert!(claims.is_ok(), "{claims:?}");
    // ... and publishes both keys.
    assert_eq!(other.keys.jwks().await.unwrap().keys.len(), 2);
}

/// Private keys in the database are sealed: the stored bytes are not a key, they open
/// only with the credential key file and only for their own kid; a plaintext row from
/// before sealing is sealed on first load and keeps signing.
async fn signing_keys_are_sealed_at_rest(db: Db) {
    let app = TestApp::new(db).await;
    app.user("root@example.com", true).await;
    let (token, _) = app.tokens("root@example.com").await;
    let rows = app.m.store.live_keys(app.clock.now()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.kid, kid_of(&token));
    let key_id = row.sealed_with.clone().expect("sealed");
    assert!(
        Ed25519KeyPair::from_pkcs8(&row.private_key).is_err(),
        "the stored bytes must not be a usable key"
    );
    let pkcs8 = app
        .m
        .credential_keys
        .open_signing_key(&row.kid, &key_id, &row.private_key)
        .unwrap();
    assert!(Ed25519KeyPair::from_pkcs8(&pkcs8).is_ok());
    // Bound to its kid: the same bytes do not open as another key.
    assert!(
        app.m
            .credential_keys
            .open_signing_key("another-kid", &key_id, &row.private_key)
            .is_err()
    );

    // A legacy plaintext row (as written before sealing) is sealed when loaded.
    let rng = ring::rand::SystemRandom::new();
    let legacy = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = Ed25519KeyPair::from_pkcs8(&legacy).unwrap();
    use ring::signature::KeyPair as _;
    let public = pair.public_key().as_ref().to_vec();
    let now = app.clock.now();
    app.m
        .store
        .rotate_keys(
            &outband_manager::store::keys::KeyRow {
                kid: "legacy-plaintext-key".into(),
                private_key: legacy.clone(),
                sealed_with: None,
                public_key: public,
                created_at: now,
                not_before: now,
                expires_at: None,
            },
            now + 3600,
            now,
        )
        .await
        .unwrap();
    app.m.keys.invalidate();
    let (signed, _) = app.tokens("root@example.com").await;
    assert_eq!(kid_of(&signed), "legacy-plaintext-key");
    let rows = app.m.store.live_keys(now).await.unwrap();
    let legacy_row = rows
        .iter()
        .find(|r| r.kid == "legacy-plaintext-key")
        .unwrap();
    assert!(legacy_row.sealed_with.is_some(), "sealed on first load");
    assert_ne!(
        legacy_row.private_key, legacy,
        "no plaintext left in the row"
    );
}

both!(
    signing_keys_are_sealed_at_rest,
    a_replica_accepts_a_key_rotated_elsewhere_at_once,
    rotation_keeps_old_keys_during_overlap_then_drops_them,
    only_global_admins_rotate_and_denials_are_audited,
);
