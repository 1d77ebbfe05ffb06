//! The client against an in-process fake service: sessions are deleted on every
//! path, redirects stay on the origin, limits and deadlines hold, TLS pins hold.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_redfish::{Client, Credentials, Error, ResetType, SystemId, Timeouts, TlsPolicy};
use support::{Answer, FakeBmc, Override, Req, State, json};

fn creds() -> Credentials {
    Credentials::new("admin", "password")
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        total: Duration::from_secs(3),
    }
}

fn connect_plain(bmc: &FakeBmc) -> Result<Client, Error> {
    Client::connect(&bmc.url(), &creds(), TlsPolicy::PlainHttp, quick())
}

fn over(f: impl Fn(&Req, &mut State) -> Option<Answer> + Send + Sync + 'static) -> Arc<Override> {
    Arc::new(f)
}

#[test]
fn session_is_deleted_on_close() {
    let bmc = FakeBmc::start(true);
    let c = connect_plain(&bmc).unwrap();
    assert!(c.uses_session());
    let sys = c.default_system().unwrap();
    assert_eq!(sys.path(), "/redfish/v1/Systems/1");
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::Off
    );
    c.reset(&sys, ResetType::On).unwrap();
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::On
    );
    c.close().unwrap();
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
    assert!(st.live_sessions.is_empty());
    // The password went only into the login body, never into a header.
    for r in &st.requests {
        assert!(r.header("authorization").is_none(), "{r:?}");
    }
}

#[test]
fn session_is_deleted_when_a_request_fails_and_the_client_is_dropped() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, _| {
            (r.method == "GET" && r.path == "/redfish/v1/Systems/1").then(|| {
                json(
                    500,
                    r#"{"error": {"code": "Base.1.8.InternalError", "message": "m",
                     "@Message.ExtendedInfo": [{"Message": "The BMC is on fire."}]}}"#,
                )
            })
        }),
    );
    {
        let c = connect_plain(&bmc).unwrap();
        let e = c
            .power_state(&SystemId::new("/redfish/v1/Systems/1"))
            .unwrap_err();
        assert_eq!(e.code(), "bmc_error");
        assert!(
            e.to_string().contains("HTTP 500: The BMC is on fire."),
            "{e}"
        );
    }
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
}

#[test]
fn session_is_deleted_when_the_caller_panics() {
    let bmc = FakeBmc::start(true);
    let url = bmc.url();
    let r = std::panic::catch_unwind(|| {
        let c = Client::connect(&url, &creds(), TlsPolicy::PlainHttp, quick()).unwrap();
        let _ = c.default_system();
        panic!("caller bug while the session is open");
    });
    assert!(r.is_err());
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
}

#[test]
fn session_is_deleted_after_a_refused_reset() {
    let bmc = FakeBmc::start(true);
    {
        let c = connect_plain(&bmc).unwrap();
        let sys = c.default_system().unwrap();
        let e = c.reset(&sys, ResetType::Nmi).unwrap_err();
        assert_eq!(e.code(), "bmc_unsupported");
        assert!(e.to_string().contains("Nmi"), "{e}");
        assert!(e.to_string().contains("On, ForceOff, ForceRestart"), "{e}");
    }
    assert_eq!(bmc.count("POST"), 1, "only the login was POSTed, no reset");
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
}

#[test]
fn wrong_password_creates_no_session() {
    let bmc = FakeBmc::start(true);
    let bad = Credentials::new("admin", "wrong");
    let e = Client::connect(&bmc.url(), &bad, TlsPolicy::PlainHttp, quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_auth_failed");
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (0, 0));
}

#[test]
fn close_reports_a_delete_the_bmc_refused_and_drop_does_not_retry() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, _| (r.method == "DELETE").then(|| json(500, "{}"))),
    );
    let c = connect_plain(&bmc).unwrap();
    assert_eq!(c.close().unwrap_err().code(), "bmc_error");
    assert_eq!(bmc.count("DELETE"), 1);
}

#[test]
fn session_without_location_falls_back_to_odata_id() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, st| {
            if r.method != "POST" || !r.path.ends_with("/Sessions") {
                return None;
            }
            // The default answer, minus the Location header.
            match support::default_answer(r, st) {
                Answer::Json(s, h, b) => Some(Answer::Json(
                    s,
                    h.into_iter().filter(|(k, _)| k != "Location").collect(),
                    b,
                )),
                a => Some(a),
            }
        }),
    );
    connect_plain(&bmc).unwrap().close().unwrap();
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
}

#[test]
fn session_location_naming_another_origin_is_used_on_this_one() {
    // BMCs name themselves by a hostname or address of their own in Location: the
    // session is still deleted, on the BMC that was dialled; the token goes nowhere else.
    let other = FakeBmc::start(false);
    let evil = format!(
        "http://127.0.0.1:{}/redfish/v1/SessionService/Sessions/1",
        other.addr().port()
    );
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(move |r, st| {
            if r.method != "POST" || !r.path.ends_with("/Sessions") {
                return None;
            }
            match support::default_answer(r, st) {
                Answer::Json(s, h, b) => Some(Answer::Json(
                    s,
                    h.into_iter()
                        .map(|(k, v)| {
                            if k == "Location" {
                                (k, evil.clone())
                            } else {
                                (k, v)
                            }
                        })
                        .collect(),
                    b,
                )),
                a => Some(a),
            }
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    assert!(c.uses_session());
    c.close().unwrap();
    assert!(
        other.state().requests.is_empty(),
        "the token went to another origin"
    );
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (1, 1));
}

#[test]
fn session_without_any_location_is_deleted_and_the_login_fails() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, st| {
            if r.method != "POST" || !r.path.ends_with("/Sessions") {
                return None;
            }
            st.created += 1;
            Some(Answer::Json(
                201,
                vec![("X-Auth-Token".into(), "tok9".into())],
                "{}".into(),
            ))
        }),
    );
    let e = connect_plain(&bmc).unwrap_err();
    assert_eq!(e.code(), "bmc_protocol", "{e}");
    let st = bmc.state();
    let deletes: Vec<_> = st
        .requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "a best-effort delete was tried");
    assert_eq!(deletes[0].header("x-auth-token"), Some("tok9"));
}

#[test]
fn basic_auth_without_session_service() {
    let bmc = FakeBmc::start(false);
    let c = connect_plain(&bmc).unwrap();
    assert!(!c.uses_session());
    let sys = c.default_system().unwrap();
    c.reset(&sys, ResetType::ForceOff).unwrap();
    c.close().unwrap();
    assert_eq!(bmc.count("DELETE"), 0);
    let bad = Credentials::new("admin", "nope");
    let e = Client::connect(&bmc.url(), &bad, TlsPolicy::PlainHttp, quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_auth_failed");
}

#[test]
fn reset_posts_the_type_and_reads_action_info() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, st| match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/redfish/v1/Systems/1") => Some(json(
                200,
                format!(
                    r##"{{"PowerState": "{}", "Actions": {{"#ComputerSystem.Reset": {{
                    "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                    "@Redfish.ActionInfo": "/redfish/v1/Systems/1/ResetActionInfo"}}}}}}"##,
                    st.power
                ),
            )),
            ("GET", "/redfish/v1/Systems/1/ResetActionInfo") => Some(json(
                200,
                r#"{"Parameters": [{"Name": "ResetType", "AllowableValues": ["GracefulRestart", "PowerCycle"]}]}"#,
            )),
            _ => None,
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let sys = c.default_system().unwrap();
    assert_eq!(
        c.allowed_resets(&sys).unwrap().unwrap(),
        [ResetType::GracefulRestart, ResetType::PowerCycle]
    );
    c.reset(&sys, ResetType::PowerCycle).unwrap();
    assert_eq!(
        c.reset(&sys, ResetType::On).unwrap_err().code(),
        "bmc_unsupported"
    );
    let st = bmc.state();
    let posts: Vec<_> = st.requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].path,
        "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    );
    let v: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(v, serde_json::json!({"ResetType": "PowerCycle"}));
}

#[test]
fn same_origin_redirect_is_followed_with_credentials() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/Systems/node1").then(|| {
                Answer::Json(
                    307,
                    vec![("Location".into(), "/redfish/v1/Systems/1".into())],
                    String::new(),
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let sys = SystemId::new("/redfish/v1/Systems/node1");
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::Off
    );
    c.reset(&sys, ResetType::On).unwrap();
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::On
    );
    c.close().unwrap();
}

#[test]
fn redirect_to_another_origin_is_refused_and_nothing_reaches_it() {
    let other = FakeBmc::start(false);
    for status in [301, 302, 307, 308] {
        let to = format!(
            "http://127.0.0.1:{}/redfish/v1/Systems/1",
            other.addr().port()
        );
        let bmc = FakeBmc::start_with(
            false,
            false,
            over(move |r, _| {
                (r.path == "/redfish/v1/Systems/1").then(|| {
                    Answer::Json(status, vec![("Location".into(), to.clone())], String::new())
                })
            }),
        );
        let c = connect_plain(&bmc).unwrap();
        let e = c
            .power_state(&SystemId::new("/redfish/v1/Systems/1"))
            .unwrap_err();
        assert_eq!(e.code(), "bmc_protocol", "{status}: {e}");
        assert!(e.to_string().contains("another origin"), "{e}");
    }
    assert!(other.state().requests.is_empty());
}

#[test]
fn redirect_loop_ends() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/Systems/1").then(|| {
                Answer::Json(
                    302,
                    vec![("Location".into(), "/redfish/v1/Systems/1".into())],
                    String::new(),
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let e = c
        .power_state(&SystemId::new("/redfish/v1/Systems/1"))
        .unwrap_err();
    assert_eq!(e.code(), "bmc_protocol");
}

#[test]
fn oversized_body_is_refused() {
    for chunked in [false, true] {
        let bmc = FakeBmc::start_with(
            false,
            false,
            over(move |r, _| {
                (r.path == "/redfish/v1/Systems/1").then(|| {
                    let big = 2 * 1024 * 1024;
                    let mut raw = if chunked {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
                    } else {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n").into_bytes()
                    };
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..big / chunk.len() {
                        if chunked {
                            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        }
                        raw.extend_from_slice(&chunk);
                        if chunked {
                            raw.extend_from_slice(b"\r\n");
                        }
                    }
                    Answer::Raw(raw)
                })
            }),
        );
        let c = connect_plain(&bmc).unwrap();
        let e = c
            .power_state(&SystemId::new("/redfish/v1/Systems/1"))
            .unwrap_err();
        assert_eq!(e.code(), "bmc_protocol", "chunked={chunked}: {e}");
    }
}

#[test]
fn oversized_header_is_refused() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/Systems/1").then(|| {
                let v = "a".repeat(64 * 1024);
                Answer::Raw(
                    format!("HTTP/1.1 200 OK\r\nX-Big: {v}\r\nContent-Length: 2\r\n\r\n{{}}")
                        .into_bytes(),
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let e = c
        .power_state(&SystemId::new("/redfish/v1/Systems/1"))
        .unwrap_err();
    assert_eq!(e.code(), "bmc_protocol", "{e}");
}

#[test]
fn garbage_json_is_a_protocol_error() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| (r.path == "/redfish/v1/Systems/1").then(|| json(200, "{\"PowerState\": On"))),
    );
    let c = connect_plain(&bmc).unwrap();
    let e = c
        .power_state(&SystemId::new("/redfish/v1/Systems/1"))
        .unwrap_err();
    assert_eq!(e.code(), "bmc_protocol");
}

#[test]
fn slowloris_hits_the_total_deadline() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/Systems/1").then(|| {
                Answer::Trickle(
                    b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec(),
                    Duration::from_millis(100),
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let start = Instant::now();
    let e = c
        .power_state(&SystemId::new("/redfish/v1/Systems/1"))
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.code(), "bmc_timeout", "{e}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} with a 3 s total deadline"
    );
}

#[test]
fn unreachable_and_bad_urls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = Client::connect(&url, &creds(), TlsPolicy::PlainHttp, quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_unreachable", "{e}");
    let e = Client::connect(&url, &creds(), TlsPolicy::TrustOnFirstUse, quick()).unwrap_err();
    assert_eq!(
        e.code(),
        "bmc_config",
        "plain http needs the explicit opt-in: {e}"
    );
    let e = Client::connect(
        "https://127.0.0.1:1",
        &creds(),
        TlsPolicy::PlainHttp,
        quick(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "bmc_config", "{e}");
}

#[test]
fn tls_pin_tofu_and_mismatch() {
    let bmc = FakeBmc::start_with(true, true, over(|_, _| None));
    let fp = bmc.fingerprint.unwrap();
    // Trust on first use reports what it saw.
    let c = Client::connect(&bmc.url(), &creds(), TlsPolicy::TrustOnFirstUse, quick()).unwrap();
    assert_eq!(c.fingerprint(), Some(fp));
    c.close().unwrap();
    // The right pin works.
    let c = Client::connect(&bmc.url(), &creds(), TlsPolicy::Pinned(fp), quick()).unwrap();
    assert_eq!(c.fingerprint(), Some(fp));
    c.close().unwrap();
    let before = bmc.state().plaintext_bytes;
    assert!(before > 0);
    // A wrong pin fails before any request byte is sent.
    let mut wrong = fp;
    wrong.0[0] ^= 1;
    let e = Client::connect(&bmc.url(), &creds(), TlsPolicy::Pinned(wrong), quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_tls_pin_mismatch", "{e}");
    assert!(
        e.to_string().contains(&fp.to_string()),
        "names the observed: {e}"
    );
    assert_eq!(bmc.state().plaintext_bytes, before, "nothing was sent");
    let st = bmc.state();
    assert_eq!((st.created, st.deleted), (2, 2));
}

#[test]
fn probe_sends_no_credentials_and_records_the_fingerprint() {
    let bmc = FakeBmc::start_with(true, true, over(|_, _| None));
    let p = outband_redfish::probe(&bmc.url(), quick()).unwrap();
    assert_eq!(p.fingerprint, bmc.fingerprint);
    assert_eq!(p.redfish_version.as_deref(), Some("1.11.0"));
    let st = bmc.state();
    assert_eq!(st.requests.len(), 1);
    assert!(st.requests[0].header("authorization").is_none());
    drop(st);
    // Not Redfish: an HTTP server that answers 404.
    let web = FakeBmc::start_with(false, false, over(|_, _| Some(json(404, "nope"))));
    assert_eq!(
        outband_redfish::probe(&web.url(), quick())
            .unwrap_err()
            .code(),
        "bmc_error"
    );
}

#[test]
fn tls_handshake_stall_hits_the_deadline() {
    // Accepts TCP, never speaks TLS.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(6));
        drop(conn);
    });
    let start = Instant::now();
    let e = Client::connect(&url, &creds(), TlsPolicy::TrustOnFirstUse, quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_timeout", "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(hold);
}

#[test]
fn https_to_a_plain_http_server_is_a_protocol_error() {
    let bmc = FakeBmc::start(false);
    let url = bmc.url().replace("http://", "https://");
    let e = Client::connect(&url, &creds(), TlsPolicy::TrustOnFirstUse, quick()).unwrap_err();
    assert_eq!(e.code(), "bmc_protocol", "{e}");
    assert!(bmc.state().requests.is_empty());
}

#[test]
fn system_links_to_another_origin_are_refused() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/Systems").then(|| {
                json(
                    200,
                    r#"{"Members@odata.count": 2, "Members": [
                        {"@odata.id": "/redfish/v1/Systems/1"},
                        {"@odata.id": "https://evil.example/redfish/v1/Systems/2"}]}"#,
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let e = c.systems().unwrap_err();
    assert_eq!(e.code(), "bmc_protocol", "{e}");
}

#[test]
fn service_root_behind_basic_auth() {
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, _| {
            (r.path == "/redfish/v1/" && r.header("authorization").is_none())
                .then(|| json(401, "{}"))
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    assert_eq!(c.service_root().redfish_version.as_deref(), Some("1.11.0"));
    let st = bmc.state();
    // First without credentials, then with.
    assert!(st.requests[0].header("authorization").is_none());
    assert!(st.requests[1].header("authorization").is_some());
}

#[test]
fn gets_share_a_connection_and_posts_get_their_own() {
    let bmc = FakeBmc::start(true);
    let c = connect_plain(&bmc).unwrap();
    let sys = c.default_system().unwrap();
    for _ in 0..5 {
        c.power_state(&sys).unwrap();
    }
    c.reset(&sys, ResetType::On).unwrap();
    c.power_state(&sys).unwrap();
    c.close().unwrap();
    let st = bmc.state();
    // Root GET (1), login POST (2), GETs reuse it... the reset POST (3), then GETs
    // and the DELETE reuse that one.
    assert_eq!(st.connections, 3, "{} requests", st.requests.len());
    assert_eq!(st.requests.len(), 12);
}

#[test]
fn a_kept_alive_connection_the_bmc_closed_is_replaced() {
    // Answers the system GET with a complete, keep-alive-looking response and then
    // closes: the next GET finds the connection dead and must retry on a new one.
    let bmc = FakeBmc::start_with(
        false,
        false,
        over(|r, st| {
            (r.path == "/redfish/v1/Systems/1").then(|| {
                let body = format!(r#"{{"PowerState": "{}"}}"#, st.power);
                Answer::Raw(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                )
            })
        }),
    );
    let c = connect_plain(&bmc).unwrap();
    let sys = SystemId::new("/redfish/v1/Systems/1");
    for _ in 0..3 {
        assert_eq!(
            c.power_state(&sys).unwrap(),
            outband_redfish::PowerState::Off
        );
    }
    // Root and Systems on the first connection, then one per closing answer.
    assert_eq!(bmc.state().connections, 3);
}

fn raw_system(raw: &'static [u8]) -> FakeBmc {
    FakeBmc::start_with(
        false,
        false,
        over(move |r, _| (r.path == "/redfish/v1/Systems/1").then(|| Answer::Raw(raw.to_vec()))),
    )
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let bmc = raw_system(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\n{\"Pow\r\nf\r\nerState\": \"On\"}\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    let c = connect_plain(&bmc).unwrap();
    let sys = SystemId::new("/redfish/v1/Systems/1");
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::On
    );
}

#[test]
fn malformed_responses_are_protocol_errors() {
    let cases: [&'static [u8]; 8] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
        b"HTTP/2 200\r\n\r\n{}",
        b"HTTP/1.1 2000 OK\r\n\r\n{}",
    ];
    for raw in cases {
        let bmc = raw_system(raw);
        let c = connect_plain(&bmc).unwrap();
        let e = c
            .power_state(&SystemId::new("/redfish/v1/Systems/1"))
            .unwrap_err();
        assert_eq!(
            e.code(),
            "bmc_protocol",
            "{:?}: {e}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn interim_100_and_a_body_until_close() {
    let bmc = raw_system(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n{\"PowerState\": \"PoweringOn\"}",
    );
    let c = connect_plain(&bmc).unwrap();
    let sys = SystemId::new("/redfish/v1/Systems/1");
    assert_eq!(
        c.power_state(&sys).unwrap(),
        outband_redfish::PowerState::PoweringOn
    );
}

#[test]
fn a_session_token_with_a_line_break_is_not_echoed_into_a_header() {
    let bmc = FakeBmc::start_with(
        true,
        false,
        over(|r, st| {
            if r.method != "POST" || !r.path.ends_with("/Sessions") {
                return None;
            }
            st.created += 1;
            Some(Answer::Raw(
                b"HTTP/1.1 201 Created\r\nX-Auth-Token: tok\nX-Injected: 1\r\n\
                  Location: /redfish/v1/SessionService/Sessions/1\r\nContent-Length: 2\r\n\r\n{}"
                    .to_vec(),
            ))
        }),
    );
    let e = connect_plain(&bmc).unwrap();
    let e = e.default_system().unwrap_err();
    assert_eq!(e.code(), "bmc_protocol", "{e}");
    assert!(
        bmc.state()
            .requests
            .iter()
            .all(|r| r.header("x-injected").is_none())
    );
}
