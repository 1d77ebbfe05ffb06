//! The JSON shapes clients depend on.

use outband_api::auth::{LoginRequest, RefreshRequest};
use outband_api::jwks::Jwk;
use outband_api::{ErrorBody, ErrorDetail};
use serde_json::json;

#[test]
fn error_body_shape() {
    let e = ErrorBody {
        error: ErrorDetail {
            code: "invalid_token".into(),
            message: "m".into(),
        },
    };
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"error": {"code": "invalid_token", "message": "m"}})
    );
}

#[test]
fn jwk_uses_the_use_member() {
    let v = json!({"kty":"OKP","crv":"Ed25519","x":"AA","kid":"k","alg":"EdDSA","use":"sig"});
    let k: Jwk = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(k.use_, "sig");
    assert_eq!(serde_json::to_value(&k).unwrap(), v);
}

#[test]
fn requests_reject_unknown_fields_and_redact_secrets_in_debug() {
    assert!(
        serde_json::from_value::<LoginRequest>(json!({"email":"a","password":"b","x":1})).is_err()
    );
    let r: LoginRequest =
        serde_json::from_value(json!({"email":"a@b","password":"hunter2-secret"})).unwrap();
    assert!(!format!("{r:?}").contains("hunter2-secret"));
    let r: RefreshRequest = serde_json::from_value(json!({"refresh_token":"obr_secret"})).unwrap();
    assert!(!format!("{r:?}").contains("obr_secret"));
}

#[test]
fn gateway_events_shape() {
    use outband_api::gateways::{GatewayEvent, GatewayEventsRequest};
    let v = json!({"events": [{
        "action": "power_on", "outcome": "success", "user_id": "u_1",
        "session_id": "s_1", "server_id": "srv_1", "at": 1_700_000_000, "detail": null
    }]});
    let r: GatewayEventsRequest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        r.events[0],
        GatewayEvent {
            action: "power_on".into(),
            outcome: "success".into(),
            user_id: "u_1".into(),
            session_id: Some("s_1".into()),
            server_id: "srv_1".into(),
            at: 1_700_000_000,
            detail: None,
        }
    );
    assert_eq!(serde_json::to_value(&r).unwrap(), v);
    // Optional fields may be left out; unknown ones are refused.
    let short = json!({"events": [{"action": "serial_open", "outcome": "failure",
        "user_id": "u", "server_id": "s", "at": 1}]});
    assert!(serde_json::from_value::<GatewayEventsRequest>(short).is_ok());
    let extra = json!({"events": [{"action": "serial_open", "outcome": "failure",
        "user_id": "u", "server_id": "s", "at": 1, "x": 1}]});
    assert!(serde_json::from_value::<GatewayEventsRequest>(extra).is_err());
}
