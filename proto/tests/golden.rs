//! Golden bytes for every wire message of protocol version 1.
//!
//! If a test in this module fails, do not change the test! Appliances in the field
//! speak this version; add a new golden for a new version.
//!
//! Each golden is a whole frame as it travels on the connection: the 4-byte
//! big-endian length, then the protobuf `Frame`. Both directions are checked: the
//! value encodes to exactly these bytes, and these bytes decode to exactly the value.
//! Together they pin the field numbers, wire types and oneof tags of the schema.

use bytes::{Bytes, BytesMut};
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};
use outband_proto::pb::{self, Frame, frame::Kind};

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert_eq!(s.len() & 1, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks both directions for one golden.
fn golden(value: Frame, expected_hex: &str) {
    let expected = unhex(expected_hex);
    let mut out = BytesMut::new();
    encode_frame(&value, DEFAULT_MAX_FRAME_LEN, &mut out).expect("encodes");
    assert_eq!(hex(&out), hex(&expected), "encoding of {value:?} changed");

    let mut dec = FrameDecoder::default();
    dec.extend(&expected);
    let decoded = dec
        .decode()
        .expect("golden decodes")
        .expect("golden is a whole frame");
    assert_eq!(decoded, value, "decoding of the golden changed");
    assert_eq!(dec.buffered(), 0, "golden has trailing bytes");
}

#[test]
fn hello() {
    golden(
        frame(Kind::Hello(pb::Hello {
            min_version: 1,
            max_version: 1,
            capabilities: vec!["tcp-relay".into()],
            agent_version: "0.1.0 (abc1234)".into(),
            pairing_code: "ABCD-EFGH".into(),
            initial_window: 262_144,
            join_token: String::new(),
        })),
        concat!(
            "00000031 ",
            "0a2f080110011a097463702d72656c6179220f302e312e302028616263313233",
            "34292a09414243442d4546474830808010",
        ),
    );
}

/// Field 7 of `Hello`, added in version 1 without a version bump: a hello without a
/// token is byte for byte the `hello` golden above.
#[test]
fn hello_with_join_token() {
    golden(
        frame(Kind::Hello(pb::Hello {
            min_version: 1,
            max_version: 1,
            capabilities: vec!["tcp-relay".into()],
            agent_version: "0.1.0 (abc1234)".into(),
            pairing_code: "ABCD-EFGH".into(),
            initial_window: 262_144,
            join_token: "objt_0123456789".into(),
        })),
        concat!(
            "00000042 0a40",
            "080110011a097463702d72656c6179220f302e312e302028616263313233",
            "34292a09414243442d4546474830808010",
            "3a0f6f626a745f30313233343536373839",
        ),
    );
}

/// A gateway built before join tokens decodes the new hello and skips the token.
#[test]
fn hello_with_join_token_decodes_as_an_old_hello() {
    use prost::Message as _;
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldHello {
        #[prost(uint32, tag = "1")]
        min_version: u32,
        #[prost(uint32, tag = "2")]
        max_version: u32,
        #[prost(string, repeated, tag = "3")]
        capabilities: Vec<String>,
        #[prost(string, tag = "4")]
        agent_version: String,
        #[prost(string, tag = "5")]
        pairing_code: String,
        #[prost(uint32, tag = "6")]
        initial_window: u32,
    }
    // The Hello message inside the golden frame above (after `00000042 0a40`).
    let body = unhex(concat!(
        "080110011a097463702d72656c6179220f302e312e302028616263313233",
        "34292a09414243442d4546474830808010",
        "3a0f6f626a745f30313233343536373839",
    ));
    let old = OldHello::decode(body.as_slice()).expect("an old decoder accepts it");
    assert_eq!(old.pairing_code, "ABCD-EFGH");
    assert_eq!(old.initial_window, 262_144);
    assert_eq!(old.capabilities, ["tcp-relay"]);
}

#[test]
fn hello_ack() {
    golden(
        frame(Kind::HelloAck(pb::HelloAck {
            version: 1,
            capabilities: vec!["tcp-relay".into()],
            heartbeat_interval_ms: 5000,
            initial_window: 262_144,
            agent_id: "ag-mfrggzdfmztwq2lknnwg23tpobyxe43u".into(),
        })),
        concat!(
            "0000003b ",
            "1239080112097463702d72656c6179188827208080102a2361672d6d66726767",
            "7a64666d7a747771326c6b6e6e7767323374706f62797865343375",
        ),
    );
}

#[test]
fn heartbeat() {
    golden(
        frame(Kind::Heartbeat(pb::Heartbeat {
            seq: 42,
            reply: false,
        })),
        "00000004 1a02082a",
    );
    golden(
        frame(Kind::Heartbeat(pb::Heartbeat {
            seq: 300,
            reply: true,
        })),
        "00000007 1a0508ac021001",
    );
}

#[test]
fn open() {
    golden(
        frame(Kind::Open(pb::StreamOpen {
            stream_id: 1,
            kind: pb::StreamKind::Tcp as i32,
            target: "vnc://10.0.0.5:5900".into(),
            initial_window: 65_536,
            auth: None,
        })),
        "0000001f 221d080110011a13766e633a2f2f31302e302e302e353a3539303020808004",
    );
}

#[test]
fn accept() {
    golden(
        frame(Kind::Accept(pb::StreamAccept {
            stream_id: 3,
            initial_window: 131_072,
        })),
        "00000008 2a06080310808008",
    );
}

#[test]
fn refuse() {
    golden(
        frame(Kind::Refuse(pb::StreamRefuse {
            stream_id: 5,
            code: pb::RefuseCode::Forbidden as i32,
            message: "not on the inventory".into(),
            error_code: String::new(),
        })),
        "0000001c 321a080510011a146e6f74206f6e2074686520696e76656e746f7279",
    );
}

#[test]
fn data_without_fin() {
    golden(
        frame(Kind::Data(pb::StreamData {
            stream_id: 7,
            data: Bytes::from_static(b"RFB 003.008\n"),
            fin: false,
        })),
        "00000012 3a100807120c524642203030332e3030380a",
    );
}

#[test]
fn data_with_fin() {
    golden(
        frame(Kind::Data(pb::StreamData {
            stream_id: 7,
            data: Bytes::from_static(b"bye"),
            fin: true,
        })),
        "0000000b 3a09080712036279651801",
    );
    golden(
        frame(Kind::Data(pb::StreamData {
            stream_id: 258,
            data: Bytes::new(),
            fin: true,
        })),
        "00000007 3a050882021801",
    );
}

#[test]
fn window() {
    golden(
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 9,
            increment: 32_768,
            window: 0,
        })),
        "00000008 4206080910808002",
    );
}

/// Version 3: a grant that raises the stream's window.
#[test]
fn window_raised() {
    golden(
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 9,
            increment: 32_768,
            window: 524_288,
        })),
        "0000000c 420a08091080800218808020",
    );
}

#[test]
fn close() {
    golden(
        frame(Kind::Close(pb::StreamClose {
            stream_id: 11,
            code: pb::CloseCode::PeerError as i32,
            message: "bmc reset".into(),
        })),
        "00000011 4a0f080b10021a09626d63207265736574",
    );
}

#[test]
fn request_agent_info() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 17,
            body: Some(pb::request::Body::AgentInfo(pb::AgentInfoRequest {})),
        })),
        "00000006 520408111200",
    );
}

#[test]
fn reply_error() {
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 17,
            body: Some(pb::reply::Body::Error(pb::ErrorReply {
                code: "unavailable".into(),
                message: "bmc busy".into(),
            })),
        })),
        "0000001d 5a1b081112170a0b756e617661696c61626c651208626d632062757379",
    );
}

#[test]
fn reply_agent_info() {
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 18,
            body: Some(pb::reply::Body::AgentInfo(pb::AgentInfoReply {
                agent_version: "0.1.0".into(),
                uptime_ms: 123_456_789,
                addresses: vec!["10.0.0.2/24".into(), "fe80::1/64".into()],
            })),
        })),
        concat!(
            "0000002b ",
            "5a2908121a250a05302e312e3010959aef3a1a0b31302e302e302e322f32341a",
            "0a666538303a3a312f3634",
        ),
    );
}

#[test]
fn inventory() {
    golden(
        frame(Kind::Inventory(pb::InventoryReport {
            endpoints: vec![
                pb::Endpoint {
                    url: "vnc://10.0.0.5:5900".into(),
                    reachable: true,
                    source: 0,
                    cert_sha256: Default::default(),
                },
                pb::Endpoint {
                    url: "ipmi://10.0.0.6:623".into(),
                    reachable: false,
                    source: 0,
                    cert_sha256: Default::default(),
                },
            ],
        })),
        concat!(
            "00000032 ",
            "62300a170a13766e633a2f2f31302e302e302e353a3539303010010a150a1369",
            "706d693a2f2f31302e302e302e363a363233",
        ),
    );
}

#[test]
fn go_away() {
    golden(
        frame(Kind::GoAway(pb::GoAway {
            reason: "gateway shutting down".into(),
        })),
        "00000019 6a170a1567617465776179207368757474696e6720646f776e",
    );
}

// ---- Added with BMC operations (still protocol version 1: new fields and kinds only;
// every golden above is unchanged, which is the compatibility proof). ----

fn auth() -> pb::BmcAuth {
    pb::BmcAuth {
        username: "admin".into(),
        password: "password".into(),
        cert_sha256: vec![0xab; 32].into(),
        ipmi_cipher_suites: vec![17, 3],
        allow_ipmi15: false,
    }
}

#[test]
fn open_vnc_with_auth() {
    golden(
        frame(Kind::Open(pb::StreamOpen {
            stream_id: 3,
            kind: pb::StreamKind::Vnc as i32,
            target: "wss://10.0.0.5/kvm/0".into(),
            initial_window: 0,
            auth: Some(Box::new(auth())),
        })),
        concat!(
            "00000055 ",
            "2253080310021a147773733a2f2f31302e302e302e352f6b766d2f302a370a05",
            "61646d696e120870617373776f72641a20ababababababababababababababab",
            "ababababababababababababababababab22021103",
        ),
    );
}

#[test]
fn open_serial() {
    golden(
        frame(Kind::Open(pb::StreamOpen {
            stream_id: 5,
            kind: pb::StreamKind::Serial as i32,
            target: "ipmi://10.0.0.5".into(),
            initial_window: 0,
            auth: Some(Box::new(pb::BmcAuth {
                username: "admin".into(),
                password: "password".into(),
                cert_sha256: Default::default(),
                ipmi_cipher_suites: vec![],
                allow_ipmi15: false,
            })),
        })),
        concat!(
            "0000002a ",
            "2228080510031a0f69706d693a2f2f31302e302e302e352a110a0561646d696e",
            "120870617373776f7264",
        ),
    );
}

#[test]
fn refuse_with_error_code() {
    golden(
        frame(Kind::Refuse(pb::StreamRefuse {
            stream_id: 3,
            code: pb::RefuseCode::AuthFailed as i32,
            message: "VNC authentication failed".into(),
            error_code: "bmc_auth_failed".into(),
        })),
        concat!(
            "00000032 ",
            "3230080310071a19564e432061757468656e7469636174696f6e206661696c65",
            "64220f626d635f617574685f6661696c6564",
        ),
    );
}

#[test]
fn request_power() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 9,
            body: Some(pb::request::Body::Power(pb::PowerRequest {
                endpoint: "ipmi://10.0.0.5:623".into(),
                auth: Some(Box::new(auth())),
                action: pb::PowerAction::Off as i32,
            })),
        })),
        concat!(
            "00000056 ",
            "525408091a500a1369706d693a2f2f31302e302e302e353a36323312370a0561",
            "646d696e120870617373776f72641a20abababababababababababababababab",
            "abababababababababababababababab220211031803",
        ),
    );
}

#[test]
fn reply_power() {
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 9,
            body: Some(pb::reply::Body::Power(pb::PowerReply {
                state: pb::PowerState::Off as i32,
            })),
        })),
        "00000008 5a06080922020802",
    );
}

#[test]
fn request_and_reply_bmc_info() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 10,
            body: Some(pb::request::Body::BmcInfo(pb::BmcInfoRequest {
                endpoint: "https://10.0.0.5".into(),
                auth: Some(Box::new(auth())),
            })),
        })),
        concat!(
            "00000051 ",
            "524f080a224b0a1068747470733a2f2f31302e302e302e3512370a0561646d69",
            "6e120870617373776f72641a20ababababababababababababababababababab",
            "ababababababababababababab22021103",
        ),
    );
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 10,
            body: Some(pb::reply::Body::BmcInfo(Box::new(pb::BmcInfoReply {
                protocol: "ipmi".into(),
                manufacturer: "4753".into(),
                model: "3842".into(),
                firmware_version: "9.08".into(),
                ipmi_cipher_suite: 3,
            }))),
        })),
        concat!(
            "00000020 ",
            "5a1e080a2a1a0a0469706d691204343735331a04333834322204392e30382803",
        ),
    );
}

#[test]
fn request_and_reply_boot_device() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 11,
            body: Some(pb::request::Body::BootDevice(pb::BootDeviceRequest {
                endpoint: "ipmi://10.0.0.5".into(),
                auth: Some(Box::new(auth())),
                device: pb::BootDevice::Pxe as i32,
                persistent: true,
            })),
        })),
        concat!(
            "00000054 ",
            "5252080b2a4e0a0f69706d693a2f2f31302e302e302e3512370a0561646d696e",
            "120870617373776f72641a20abababababababababababababababababababab",
            "abababababababababababab2202110318022001",
        ),
    );
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 11,
            body: Some(pb::reply::Body::BootDevice(pb::BootDeviceReply {
                device: pb::BootDevice::Pxe as i32,
                persistent: true,
            })),
        })),
        "0000000a 5a08080b320408021001",
    );
}

#[test]
fn request_and_reply_serial_break() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 12,
            body: Some(pb::request::Body::SerialBreak(pb::SerialBreakRequest {
                stream_id: 5,
            })),
        })),
        "00000008 5206080c32020805",
    );
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 12,
            body: Some(pb::reply::Body::SerialBreak(pb::SerialBreakReply {})),
        })),
        "00000006 5a04080c3a00",
    );
}

#[test]
fn request_and_reply_join_result() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 9,
            body: Some(pb::request::Body::JoinResult(pb::JoinResult {
                outcome: pb::JoinOutcome::Accepted as i32,
                message: "adopted".into(),
                tenant_id: "tn-1".into(),
            })),
        })),
        "00000017 5215 0809 3a11 0801 120761646f70746564 1a04746e2d31",
    );
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 9,
            body: Some(pb::request::Body::JoinResult(pb::JoinResult {
                outcome: pb::JoinOutcome::Refused as i32,
                message: "used".into(),
                tenant_id: String::new(),
            })),
        })),
        "0000000e 520c 0809 3a08 0802 120475736564",
    );
    golden(
        frame(Kind::Reply(pb::Reply {
            request_id: 9,
            body: Some(pb::reply::Body::JoinResult(pb::JoinResultReply {})),
        })),
        "00000006 5a04 0809 4200",
    );
}

#[test]
fn request_power_ipmi15_opt_in() {
    golden(
        frame(Kind::Request(pb::Request {
            request_id: 13,
            body: Some(pb::request::Body::Power(pb::PowerRequest {
                endpoint: "ipmi://10.0.0.8".into(),
                auth: Some(Box::new(pb::BmcAuth {
                    username: "admin".into(),
                    password: "pw".into(),
                    cert_sha256: Default::default(),
                    ipmi_cipher_suites: vec![],
                    allow_ipmi15: true,
                })),
                action: pb::PowerAction::Status as i32,
            })),
        })),
        concat!(
            "00000028 ",
            "5226080d1a220a0f69706d693a2f2f31302e302e302e38120d0a0561646d696e",
            "1202707728011801",
        ),
    );
}

#[test]
fn inventory_with_discovery() {
    golden(
        frame(Kind::Inventory(pb::InventoryReport {
            endpoints: vec![pb::Endpoint {
                url: "https://10.0.0.7:443".into(),
                reachable: true,
                source: pb::EndpointSource::Discovery as i32,
                cert_sha256: vec![0xcd; 32].into(),
            }],
        })),
        concat!(
            "00000040 ",
            "623e0a3c0a1468747470733a2f2f31302e302e302e373a343433100118022220",
            "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
        ),
    );
}

/// The schema file itself: its package is `outband.v1` and the `Frame.kind` tags are
/// the ones the goldens above were made with.
#[test]
fn schema_package_and_frame_tags() {
    let schema = include_str!("../schema/outband/v1/tunnel.proto");
    assert!(
        schema.lines().any(|l| l.trim() == "package outband.v1;"),
        "schema package must stay outband.v1"
    );
    assert!(schema.lines().any(|l| l.trim() == r#"syntax = "proto3";"#));
    let pinned = [
        "Hello hello = 1;",
        "HelloAck hello_ack = 2;",
        "Heartbeat heartbeat = 3;",
        "StreamOpen open = 4;",
        "StreamAccept accept = 5;",
        "StreamRefuse refuse = 6;",
        "StreamData data = 7;",
        "WindowUpdate window = 8;",
        "StreamClose close = 9;",
        "Request request = 10;",
        "Reply reply = 11;",
        "InventoryReport inventory = 12;",
        "GoAway go_away = 13;",
    ];
    for line in pinned {
        assert!(
            schema.lines().any(|l| l.trim() == line),
            "Frame.kind field `{line}` missing or renumbered"
        );
    }
}

/// Enum values travel as numbers; renumbering one silently changes its meaning.
#[test]
fn enum_values_are_pinned() {
    use pb::{CloseCode, RefuseCode, StreamKind};
    assert_eq!(StreamKind::Unspecified as i32, 0);
    assert_eq!(StreamKind::Tcp as i32, 1);
    assert_eq!(StreamKind::Vnc as i32, 2);
    assert_eq!(StreamKind::Serial as i32, 3);
    assert_eq!(RefuseCode::AuthFailed as i32, 7);
    assert_eq!(RefuseCode::BmcError as i32, 8);
    let power = [
        (pb::PowerAction::Unspecified, 0),
        (pb::PowerAction::Status, 1),
        (pb::PowerAction::On, 2),
        (pb::PowerAction::Off, 3),
        (pb::PowerAction::Cycle, 4),
        (pb::PowerAction::Reset, 5),
        (pb::PowerAction::SoftOff, 6),
    ];
    for (a, n) in power {
        assert_eq!(a as i32, n, "{a:?}");
    }
    assert_eq!(pb::PowerState::Unknown as i32, 0);
    assert_eq!(pb::PowerState::On as i32, 1);
    assert_eq!(pb::PowerState::Off as i32, 2);
    let boot = [
        (pb::BootDevice::Unspecified, 0),
        (pb::BootDevice::None, 1),
        (pb::BootDevice::Pxe, 2),
        (pb::BootDevice::Disk, 3),
        (pb::BootDevice::BiosSetup, 4),
        (pb::BootDevice::Cdrom, 5),
    ];
    for (d, n) in boot {
        assert_eq!(d as i32, n, "{d:?}");
    }
    let join = [
        (pb::JoinOutcome::Unspecified, 0),
        (pb::JoinOutcome::Accepted, 1),
        (pb::JoinOutcome::Refused, 2),
        (pb::JoinOutcome::AlreadyDecided, 3),
        (pb::JoinOutcome::NotUsed, 4),
    ];
    for (o, n) in join {
        assert_eq!(o as i32, n, "{o:?}");
    }
    assert_eq!(pb::EndpointSource::Config as i32, 1);
    assert_eq!(pb::EndpointSource::Discovery as i32, 2);
    let refuse = [
        (RefuseCode::Unspecified, 0),
        (RefuseCode::Forbidden, 1),
        (RefuseCode::Unreachable, 2),
        (RefuseCode::Timeout, 3),
        (RefuseCode::UnsupportedKind, 4),
        (RefuseCode::BadTarget, 5),
        (RefuseCode::TooManyStreams, 6),
    ];
    for (code, n) in refuse {
        assert_eq!(code as i32, n, "{code:?}");
    }
    let close = [
        (CloseCode::Unspecified, 0),
        (CloseCode::Normal, 1),
        (CloseCode::PeerError, 2),
        (CloseCode::ProtocolError, 3),
        (CloseCode::Cancelled, 4),
    ];
    for (code, n) in close {
        assert_eq!(code as i32, n, "{code:?}");
    }
}
