use super::*;

const ROOT: &str = r##"{
  "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
  "@odata.id": "/redfish/v1/",
  "Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.5.0",
  "UUID": "92384634-2938-2342-8820-489239905423",
  "Systems": {"@odata.id": "/redfish/v1/Systems"},
  "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
  "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
  "Oem": {"Vendor": {"anything": [1, 2, {"x": null}]}}
}"##;

#[test]
fn service_root_links() {
    let r: ServiceRoot = parse("root", ROOT.as_bytes()).unwrap();
    assert_eq!(r.redfish_version.as_deref(), Some("1.5.0"));
    assert_eq!(r.systems.unwrap().id, "/redfish/v1/Systems");
    let r: ServiceRoot = parse("root", ROOT.as_bytes()).unwrap();
    assert_eq!(
        r.sessions_path().as_deref(),
        Some("/redfish/v1/SessionService/Sessions")
    );
}

#[test]
fn sessions_path_from_session_service_only() {
    let r: ServiceRoot = parse(
        "root",
        br#"{"SessionService": {"@odata.id": "/redfish/v1/SessionService/"}}"#,
    )
    .unwrap();
    assert_eq!(
        r.sessions_path().as_deref(),
        Some("/redfish/v1/SessionService/Sessions")
    );
    let r: ServiceRoot = parse(
        "root",
        br#"{"Systems": {"@odata.id": "/redfish/v1/Systems"}}"#,
    )
    .unwrap();
    assert_eq!(r.sessions_path(), None, "sushy-tools: Basic auth only");
}

#[test]
fn bad_json_is_a_protocol_error() {
    for body in [&b"{"[..], b"", b"<html>", b"{\"Systems\": 5}", b"\xff\xfe"] {
        let e = parse::<ServiceRoot>("root", body).unwrap_err();
        assert_eq!(e.code(), "bmc_protocol", "{body:?}");
    }
}

#[test]
fn collection_members_and_count() {
    let c: Collection = parse(
        "c",
        br#"{"Members@odata.count": 2, "Members": [
            {"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/2"}]}"#,
    )
    .unwrap();
    assert_eq!(
        members(&c).unwrap(),
        ["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"]
    );
    let c: Collection = parse("c", br#"{"Members@odata.count": 0}"#).unwrap();
    assert!(members(&c).unwrap().is_empty());
    let c: Collection = parse("c", br#"{"Members@odata.count": 100000, "Members": []}"#).unwrap();
    assert_eq!(members(&c).unwrap_err().code(), "bmc_protocol");
    let many = (0..=MAX_MEMBERS)
        .map(|i| format!(r#"{{"@odata.id": "/redfish/v1/Systems/{i}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let c: Collection = parse("c", format!(r#"{{"Members": [{many}]}}"#).as_bytes()).unwrap();
    assert_eq!(members(&c).unwrap_err().code(), "bmc_protocol");
}

const SYSTEM: &str = r##"{
  "@odata.id": "/redfish/v1/Systems/437XR1138R2", "Id": "437XR1138R2",
  "PowerState": "On",
  "Boot": {
    "BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe",
    "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Cd", "Hdd", "BiosSetup"]
  },
  "Actions": {"#ComputerSystem.Reset": {
    "target": "/redfish/v1/Systems/437XR1138R2/Actions/ComputerSystem.Reset",
    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "Nmi", "PushPowerButton"]
  }}
}"##;

#[test]
fn computer_system() {
    let s: ComputerSystem = parse("s", SYSTEM.as_bytes()).unwrap();
    assert_eq!(s.power_state, Some(PowerState::On));
    let reset = s.actions.reset.unwrap();
    assert_eq!(
        reset.target.as_deref(),
        Some("/redfish/v1/Systems/437XR1138R2/Actions/ComputerSystem.Reset")
    );
    let allowed: Vec<_> = reset
        .allowable
        .unwrap()
        .iter()
        .filter_map(|s| ResetType::from_redfish(s))
        .collect();
    assert_eq!(
        allowed,
        [
            ResetType::On,
            ResetType::ForceOff,
            ResetType::GracefulShutdown,
            ResetType::ForceRestart,
            ResetType::Nmi
        ]
    );
    let boot = s.boot.unwrap();
    assert_eq!(boot.target.as_deref(), Some("Pxe"));
    assert_eq!(boot.allowable_targets.unwrap().len(), 5);
}

#[test]
fn unknown_power_state_and_missing_fields() {
    let s: ComputerSystem = parse("s", br#"{"PowerState": "Flickering"}"#).unwrap();
    assert_eq!(s.power_state, Some(PowerState::Unknown));
    let s: ComputerSystem = parse("s", b"{}").unwrap();
    assert!(s.power_state.is_none() && s.actions.reset.is_none() && s.boot.is_none());
}

#[test]
fn action_info_reset_types() {
    let a: ActionInfo = parse(
        "ai",
        br#"{"Parameters": [{"Name": "Other"}, {"Name": "ResetType", "Required": true,
            "AllowableValues": ["On", "ForceOff"]}]}"#,
    )
    .unwrap();
    assert_eq!(a.reset_types().unwrap(), ["On", "ForceOff"]);
}

#[test]
fn reset_type_names_round_trip() {
    for t in ResetType::ALL {
        assert_eq!(ResetType::from_redfish(t.as_str()), Some(t));
    }
    assert_eq!(ResetType::from_redfish("forceoff"), None);
    assert_eq!(ResetType::from_redfish("PushPowerButton"), None);
}

#[test]
fn error_message_extended_info() {
    let body = br#"{"error": {"code": "Base.1.8.GeneralError", "message": "A general error",
        "@Message.ExtendedInfo": [
          {"MessageId": "Base.1.8.ActionParameterValueNotInList",
           "Message": "The value 'Nmi' for the parameter ResetType is not in the list of acceptable values."},
          {"MessageId": "x", "Message": "Second\u0007one"}]}}"#;
    assert_eq!(
        error_message(body).unwrap(),
        "The value 'Nmi' for the parameter ResetType is not in the list of acceptable values.; Secondone"
    );
    assert_eq!(
        error_message(br#"{"error": {"message": "only this"}}"#).as_deref(),
        Some("only this")
    );
    assert_eq!(error_message(b"<html>500</html>"), None);
    assert_eq!(error_message(br#"{"error": {}}"#), None);
    let long = "x".repeat(10_000);
    let body = format!(r#"{{"error": {{"message": "{long}"}}}}"#);
    assert_eq!(error_message(body.as_bytes()).unwrap().len(), MAX_MESSAGE);
}
