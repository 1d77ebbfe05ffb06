//! Runs the fuzz targets' checks on stable: every seed under `fuzz/corpus/<target>/`
//! (written by `fuzz/gen_corpus.py`; crash inputs found by fuzzing go there too),
//! the expected outcome of the named seeds, and a few thousand inputs from a seeded
//! RNG.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::BytesMut;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, DecodeError, encode_frame};
use outband_proto::fuzzing::{self, DecoderOutcome, MuxOutcome};
use outband_proto::mux::ConnError;
use outband_proto::pb::{self, Frame, frame::Kind};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

fn corpus(target: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        out.insert(name, std::fs::read(entry.path()).expect("read seed"));
    }
    assert!(
        out.len() >= 20,
        "{target} corpus has only {} seeds",
        out.len()
    );
    out
}

fn run_decoder(name: &str, data: &[u8]) -> DecoderOutcome {
    std::panic::catch_unwind(|| fuzzing::frame_decoder(data))
        .unwrap_or_else(|_| panic!("frame_decoder seed {name} broke an invariant"))
}

fn run_mux(name: &str, data: &[u8]) -> MuxOutcome {
    std::panic::catch_unwind(|| fuzzing::mux(data))
        .unwrap_or_else(|_| panic!("mux seed {name} broke an invariant"))
}

#[test]
fn frame_decoder_corpus() {
    let seeds = corpus("frame_decoder");
    let out: BTreeMap<&str, DecoderOutcome> = seeds
        .iter()
        .map(|(n, d)| (n.as_str(), run_decoder(n, d)))
        .collect();
    let err = |n: &str| out[n].error.clone();
    assert_eq!(err("len_zero"), Some(DecodeError::Empty));
    assert!(matches!(
        err("len_ffffffff"),
        Some(DecodeError::TooLong {
            len: 0xFFFF_FFFF,
            ..
        })
    ));
    assert!(matches!(
        err("len_ffffffff_split"),
        Some(DecodeError::TooLong { .. })
    ));
    assert_eq!(
        err("over_limit_small_max"),
        Some(DecodeError::TooLong { len: 66, max: 65 })
    );
    assert!(matches!(
        err("over_default_max"),
        Some(DecodeError::TooLong { .. })
    ));
    assert_eq!(out["at_limit_small_max"].frames, 1);
    assert!(out["truncated_body"].truncated && out["truncated_header"].truncated);
    assert_eq!(err("unknown_kind_field_99"), Some(DecodeError::UnknownKind));
    assert_eq!(
        err("unknown_kind_then_valid"),
        Some(DecodeError::UnknownKind)
    );
    assert_eq!(out["unknown_kind_then_valid"].frames, 0);
    assert!(matches!(
        err("malformed_length_overrun"),
        Some(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        err("malformed_wire_type"),
        Some(DecodeError::Malformed(_))
    ));
    for n in [
        "all_kinds_one_piece",
        "all_kinds_fib_splits",
        "all_kinds_byte_by_byte",
    ] {
        assert_eq!(
            out[n],
            DecoderOutcome {
                frames: 9,
                error: None,
                truncated: false
            },
            "{n}"
        );
    }
    assert_eq!(out["heartbeats_100_split_3"].frames, 100);
    assert_eq!(out["valid_then_garbage"].frames, 1);
    assert_eq!(err("valid_then_garbage"), Some(DecodeError::Empty));
    assert_eq!(out["big_data_frame"].frames, 1);
    assert_eq!(out["padded_data_unknown_field"].frames, 1);
}

fn protocol_reason(name: &str, o: &MuxOutcome) -> String {
    match &o.error {
        Some(ConnError::Protocol(r)) => r.clone(),
        other => panic!("{name}: expected a protocol error, got {other:?}"),
    }
}

#[test]
fn mux_corpus() {
    let seeds = corpus("mux");
    let out: BTreeMap<&str, MuxOutcome> = seeds
        .iter()
        .map(|(n, d)| (n.as_str(), run_mux(n, d)))
        .collect();
    let expect_protocol = [
        ("duplicate_open", "duplicate or reused stream id 2"),
        ("reused_lower_id", "reused stream id 4"),
        ("wrong_parity_open", "wrong parity"),
        ("open_id_zero", "wrong parity"),
        ("data_unknown_stream", "unknown stream 10"),
        ("data_unknown_huge_id", "unknown stream"),
        ("data_before_accept", "before it was accepted"),
        ("data_after_fin", "after fin"),
        ("data_after_peer_close", "closed stream 2"),
        ("data_exceeding_window", "exceeded its window"),
        ("window_overflow", "beyond its window"),
        ("window_raised_over_limit", "window set to 33030144 bytes"),
        ("accept_unknown", "unknown stream 5"),
        ("accept_twice", "not opening"),
        ("refuse_peer_stream", "not opening"),
        ("close_unknown", "close for unknown stream 7"),
        ("hello_after_handshake", "hello after the handshake"),
        ("hello_ack_after_handshake", "hello after the handshake"),
    ];
    for (name, why) in expect_protocol {
        let reason = protocol_reason(name, &out[name]);
        assert!(reason.contains(why), "{name}: {reason:?} lacks {why:?}");
    }
    assert_eq!(out["go_away"].error, Some(ConnError::GoAway("bye".into())));
    assert!(matches!(
        out["silence_is_dead"].error,
        Some(ConnError::Dead(_))
    ));
    for name in [
        "too_many_streams",
        "heartbeat_flood",
        "heartbeats_answered",
        "request_reply_inventory",
        "happy_send_and_release",
        "window_raised",
        "close_crossing_fin",
        "detach_after_finish",
        "close_then_in_flight_data",
        "cancelled_open_refused",
    ] {
        assert_eq!(out[name].error, None, "{name} failed the connection");
    }
    assert_eq!(
        out["too_many_streams"].streams_left,
        fuzzing::mux_config().max_streams
    );
    assert!(out["happy_send_and_release"].bytes_delivered >= 1440);
    for name in [
        "close_crossing_fin",
        "detach_after_finish",
        "close_then_in_flight_data",
        "cancelled_open_refused",
    ] {
        assert_eq!(out[name].streams_left, 0, "{name} leaked a stream");
    }
}

/// A random valid frame.
fn random_frame(rng: &mut StdRng) -> Frame {
    let id = rng.random_range(0..10);
    let kind = match rng.random_range(0..5) {
        0 => Kind::Heartbeat(pb::Heartbeat {
            seq: rng.random(),
            reply: rng.random(),
        }),
        1 => {
            let mut data = vec![0u8; rng.random_range(0..2000)];
            rng.fill_bytes(&mut data);
            Kind::Data(pb::StreamData {
                stream_id: id,
                data: data.into(),
                fin: rng.random(),
            })
        }
        2 => Kind::Window(pb::WindowUpdate {
            stream_id: id,
            increment: rng.random(),
            window: 0,
        }),
        3 => Kind::Open(pb::StreamOpen {
            stream_id: id,
            kind: rng.random_range(0..3),
            target: "10.0.0.5:5900".into(),
            initial_window: rng.random(),
            auth: None,
        }),
        _ => Kind::Close(pb::StreamClose {
            stream_id: id,
            code: rng.random_range(0..6),
            message: "x".repeat(rng.random_range(0..50)),
        }),
    };
    Frame { kind: Some(kind) }
}

#[test]
fn frame_decoder_random_inputs() {
    let mut rng = StdRng::seed_from_u64(0x5EED_0001);
    let (mut frames, mut errors) = (0, 0);
    for i in 0..4000 {
        let data = if i % 2 == 0 {
            // Pure noise.
            let mut data = vec![0u8; rng.random_range(0..300)];
            rng.fill_bytes(&mut data);
            data
        } else {
            // Valid frames in random splits, sometimes with one byte corrupted.
            let n_ctrl = rng.random_range(0..8u8);
            let mut data = vec![n_ctrl << 1];
            data.extend((0..n_ctrl).map(|_| rng.random::<u8>()));
            let mut stream = BytesMut::new();
            for _ in 0..rng.random_range(1..6) {
                encode_frame(&random_frame(&mut rng), DEFAULT_MAX_FRAME_LEN, &mut stream)
                    .expect("encodes");
            }
            if rng.random_bool(0.3) {
                let at = rng.random_range(0..stream.len());
                stream[at] = rng.random();
            }
            data.extend_from_slice(&stream);
            data
        };
        let out = run_decoder(&format!("random #{i}"), &data);
        frames += out.frames;
        errors += usize::from(out.error.is_some());
    }
    assert!(frames > 1000, "only {frames} frames decoded");
    assert!(errors > 100, "only {errors} inputs failed");
}

#[test]
fn mux_random_inputs() {
    let mut rng = StdRng::seed_from_u64(0x5EED_0002);
    let mut survived = 0;
    for i in 0..3000 {
        let len = rng.random_range(0..400);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        if run_mux(&format!("random #{i}"), &data).error.is_none() {
            survived += 1;
        }
    }
    assert!(survived > 0, "every random program failed the connection");
}
