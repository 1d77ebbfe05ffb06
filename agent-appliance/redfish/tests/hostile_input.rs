//! Whatever a BMC sends, parsing ends in a value or an error, never a panic.

use outband_redfish::model::{ComputerSystem, ServiceRoot, error_message};
use outband_redfish::origin::{Origin, redirect};
use proptest::prelude::*;

fn json_like() -> impl Strategy<Value = String> {
    // Fragments of Redfish JSON glued at random, so the parser gets deep into it.
    let frag = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "null",
        "1e999",
        "-0",
        "\"error\"",
        "\"@Message.ExtendedInfo\"",
        "\"Message\"",
        "\"message\"",
        "\"PowerState\"",
        "\"On\"",
        "\"Actions\"",
        "\"#ComputerSystem.Reset\"",
        "\"target\"",
        "\"ResetType@Redfish.AllowableValues\"",
        "\"@odata.id\"",
        "\"/redfish/v1/\"",
        "\"Systems\"",
        "\"Links\"",
        "\"Sessions\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\u{feff}",
    ]);
    prop::collection::vec(frag, 0..64).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn parsers_do_not_panic(s in json_like(), raw in prop::collection::vec(any::<u8>(), 0..256)) {
        for body in [s.as_bytes(), &raw[..]] {
            let _ = serde_json::from_slice::<ServiceRoot>(body);
            let _ = serde_json::from_slice::<ComputerSystem>(body);
            if let Some(m) = error_message(body) {
                prop_assert!(m.chars().count() <= outband_redfish::model::MAX_MESSAGE);
                prop_assert!(!m.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn links_never_leave_the_origin(link in "\\PC{0,80}", status in 300u16..310) {
        let origin = Origin::parse("https://10.1.2.3:8443").unwrap();
        if let Ok(path) = origin.resolve("/redfish/v1/Systems/1", &link) {
            prop_assert!(path.starts_with('/') && !path.starts_with("//"), "{path}");
            // The resolved path, put back on the origin, parses to the same origin.
            prop_assert_eq!(Origin::parse(&origin.url(&path)).unwrap(), origin.clone());
        }
        let _ = redirect(&origin, "GET", status, "/redfish/v1/", Some(&link));
    }
}
