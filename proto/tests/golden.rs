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
        })),
        concat!(
            "00000031 ",
            "0a2f080110011a097463702d72656c6179220f302e312e302028616263313233",
            "34292a09414243442d4546474830808010",
        ),
    );
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
        })),
        "00000008 4206080910808002",
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
                },
                pb::Endpoint {
                    url: "ipmi://10.0.0.6:623".into(),
                    reachable: false,
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
