//! The length-prefixed frame codec against split, concatenated and hostile input.

use bytes::{Bytes, BytesMut};
use outband_proto::codec::{
    DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, FrameDecoder, HEADER_LEN, encode_frame,
};
use outband_proto::pb::{self, Frame, frame::Kind};
use prost::Message;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

fn sample_frames() -> Vec<Frame> {
    let f = |kind| Frame { kind: Some(kind) };
    vec![
        f(Kind::Heartbeat(pb::Heartbeat {
            seq: 1,
            reply: false,
        })),
        f(Kind::Open(pb::StreamOpen {
            stream_id: 1,
            kind: pb::StreamKind::Tcp as i32,
            target: "10.0.0.5:5900".into(),
            initial_window: 0,
            auth: None,
        })),
        f(Kind::Data(pb::StreamData {
            stream_id: 1,
            data: Bytes::from(vec![7u8; 1000]),
            fin: false,
        })),
        f(Kind::Data(pb::StreamData {
            stream_id: 1,
            data: Bytes::new(),
            fin: true,
        })),
        f(Kind::GoAway(pb::GoAway { reason: "x".into() })),
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        encode_frame(f, DEFAULT_MAX_FRAME_LEN, &mut out).expect("encodes");
    }
    out
}

fn drain(dec: &mut FrameDecoder) -> Result<Vec<Frame>, DecodeError> {
    let mut out = Vec::new();
    while let Some(f) = dec.decode()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn split_at_every_byte_boundary() {
    let frames = sample_frames();
    let bytes = encode_all(&frames);
    for split in 0..=bytes.len() {
        let mut dec = FrameDecoder::default();
        dec.extend(&bytes[..split]);
        let mut got = drain(&mut dec).expect("valid input");
        dec.extend(&bytes[split..]);
        got.extend(drain(&mut dec).expect("valid input"));
        assert_eq!(got, frames, "split at {split}");
        assert_eq!(dec.buffered(), 0);
        dec.finish().expect("ends on a frame boundary");
    }
}

#[test]
fn one_byte_at_a_time() {
    let frames = sample_frames();
    let bytes = encode_all(&frames);
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    for b in bytes.iter() {
        assert!(dec.wanted() >= 1);
        dec.extend(&[*b]);
        got.extend(drain(&mut dec).expect("valid input"));
    }
    assert_eq!(got, frames);
}

#[test]
fn many_frames_in_one_buffer() {
    let frames: Vec<Frame> = (0..1000u64)
        .map(|seq| Frame {
            kind: Some(Kind::Heartbeat(pb::Heartbeat {
                seq,
                reply: seq % 2 == 0,
            })),
        })
        .collect();
    let mut dec = FrameDecoder::default();
    dec.extend(&encode_all(&frames));
    assert_eq!(drain(&mut dec).expect("valid"), frames);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn wanted_counts_down_to_the_frame_end() {
    let bytes = encode_all(&sample_frames()[2..3]);
    let mut dec = FrameDecoder::default();
    assert_eq!(dec.wanted(), HEADER_LEN);
    dec.extend(&bytes[..2]);
    assert_eq!(dec.wanted(), 2);
    dec.extend(&bytes[2..10]);
    assert_eq!(dec.wanted(), bytes.len() - 10);
    assert_eq!(dec.decode(), Ok(None));
    dec.extend(&bytes[10..]);
    assert!(dec.decode().expect("valid").is_some());
}

#[test]
fn zero_length_is_empty() {
    let mut dec = FrameDecoder::default();
    dec.extend(&[0, 0, 0, 0]);
    assert_eq!(dec.decode(), Err(DecodeError::Empty));
}

#[test]
fn max_u32_length_fails_before_any_body_is_buffered() {
    let mut dec = FrameDecoder::default();
    dec.extend(&[0xFF, 0xFF]);
    assert_eq!(dec.decode(), Ok(None));
    assert_eq!(dec.wanted(), 2);
    dec.extend(&[0xFF, 0xFF]);
    assert!(dec.wanted() <= HEADER_LEN + DEFAULT_MAX_FRAME_LEN);
    assert_eq!(
        dec.decode(),
        Err(DecodeError::TooLong {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME_LEN
        })
    );
    assert_eq!(dec.buffered(), 0, "a failed decoder drops its buffer");
}

#[test]
fn one_over_the_limit_is_too_long_and_the_limit_itself_is_fine() {
    let max = 100;
    let mut dec = FrameDecoder::new(max);
    dec.extend(&101u32.to_be_bytes());
    assert_eq!(
        dec.decode(),
        Err(DecodeError::TooLong { len: 101, max: 100 })
    );

    // A data frame whose encoding is exactly `max` bytes.
    let mut payload = 90;
    let frame = loop {
        let f = Frame {
            kind: Some(Kind::Data(pb::StreamData {
                stream_id: 1,
                data: Bytes::from(vec![1; payload]),
                fin: false,
            })),
        };
        match f.encoded_len().cmp(&max) {
            std::cmp::Ordering::Equal => break f,
            std::cmp::Ordering::Less => payload += 1,
            std::cmp::Ordering::Greater => payload -= 1,
        }
    };
    let mut out = BytesMut::new();
    encode_frame(&frame, max, &mut out).expect("exactly at the limit");
    let mut dec = FrameDecoder::new(max);
    dec.extend(&out);
    assert_eq!(dec.decode(), Ok(Some(frame.clone())));

    // The encoder refuses what the decoder would refuse.
    let mut big = frame;
    if let Some(Kind::Data(d)) = &mut big.kind {
        d.data = Bytes::from(vec![1; payload + 1]);
    }
    let err = encode_frame(&big, max, &mut BytesMut::new()).expect_err("over the limit");
    assert_eq!(err, EncodeError { len: max + 1, max });
}

#[test]
fn encoder_refuses_a_frame_without_kind() {
    let err = encode_frame(&Frame { kind: None }, 100, &mut BytesMut::new());
    assert_eq!(err, Err(EncodeError { len: 0, max: 100 }));
}

#[test]
fn truncated_stream_is_an_error_at_finish() {
    let bytes = encode_all(&sample_frames()[..3]);
    let cut = bytes.len() - 3;
    let mut dec = FrameDecoder::default();
    dec.extend(&bytes[..cut]);
    assert_eq!(drain(&mut dec).expect("valid so far").len(), 2);
    let buffered = dec.buffered();
    assert!(buffered > 0);
    assert_eq!(dec.finish(), Err(DecodeError::Truncated { buffered }));

    // A cut inside the header is truncated too.
    let mut dec = FrameDecoder::default();
    dec.extend(&[0, 0]);
    assert_eq!(dec.decode(), Ok(None));
    assert_eq!(dec.finish(), Err(DecodeError::Truncated { buffered: 2 }));

    // An empty stream is fine.
    assert_eq!(FrameDecoder::default().finish(), Ok(()));
}

#[test]
fn malformed_body_is_an_error() {
    // Field 7 (data), length-delimited, claims 100 bytes but the body ends.
    let body = [0x3A, 100, 0x08];
    let mut dec = FrameDecoder::default();
    dec.extend(&(body.len() as u32).to_be_bytes());
    dec.extend(&body);
    assert!(matches!(dec.decode(), Err(DecodeError::Malformed(_))));
}

#[test]
fn valid_protobuf_without_kind_is_unknown_kind() {
    // Only field 99 (varint): a message kind from a newer version, or garbage.
    let mut body = Vec::new();
    prost::encoding::encode_key(99, prost::encoding::WireType::Varint, &mut body);
    prost::encoding::encode_varint(5, &mut body);
    let mut dec = FrameDecoder::default();
    dec.extend(&(body.len() as u32).to_be_bytes());
    dec.extend(&body);
    assert_eq!(dec.decode(), Err(DecodeError::UnknownKind));
}

#[test]
fn decoder_stays_failed_after_an_error() {
    let mut dec = FrameDecoder::default();
    dec.extend(&[0, 0, 0, 0]);
    assert!(dec.decode().is_err());
    // Perfectly valid input afterwards does not revive it.
    dec.extend(&encode_all(&sample_frames()));
    for _ in 0..3 {
        assert!(dec.decode().is_err());
    }
}

#[test]
fn decoded_payload_does_not_pin_the_read_buffer() {
    // A 1-byte payload padded with an unknown field to a large frame: the payload the
    // application keeps must not hold on to the whole frame.
    let mut body = Vec::new();
    pb::StreamData {
        stream_id: 1,
        data: Bytes::from_static(b"x"),
        fin: false,
    }
    .encode(&mut body)
    .expect("vec grows");
    prost::encoding::encode_key(99, prost::encoding::WireType::LengthDelimited, &mut body);
    prost::encoding::encode_varint(100_000, &mut body);
    body.extend(std::iter::repeat_n(0u8, 100_000));
    let mut frame_body = Vec::new();
    prost::encoding::encode_key(
        7,
        prost::encoding::WireType::LengthDelimited,
        &mut frame_body,
    );
    prost::encoding::encode_varint(body.len() as u64, &mut frame_body);
    frame_body.extend(body);

    let mut dec = FrameDecoder::default();
    dec.extend(&(frame_body.len() as u32).to_be_bytes());
    dec.extend(&frame_body);
    let frame = dec.decode().expect("valid").expect("whole");
    let Some(Kind::Data(d)) = frame.kind else {
        panic!("not data: {frame:?}")
    };
    assert_eq!(&d.data[..], b"x");
    // `Bytes::try_into_mut` succeeds only for a unique, unshared buffer.
    let owned = d.data.try_into_mut().expect("payload owns its allocation");
    assert!(
        owned.capacity() < 1024,
        "payload kept {} bytes",
        owned.capacity()
    );
}

#[test]
fn random_bytes_are_an_error_or_nothing_never_a_panic() {
    let mut rng = StdRng::seed_from_u64(0x0b_0a_4d);
    for round in 0..5000 {
        let len = rng.random_range(0..64);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        // Keep announced lengths small often enough to reach the protobuf decoder.
        if round % 2 == 0 && len >= 4 {
            bytes[..4].copy_from_slice(&((len as u32 - 4).max(1)).to_be_bytes());
        }
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&bytes);
        loop {
            match dec.decode() {
                Ok(Some(f)) => assert!(f.kind.is_some()),
                Ok(None) => {
                    assert!(dec.buffered() < HEADER_LEN + 1024);
                    break;
                }
                Err(_) => {
                    assert!(dec.decode().is_err());
                    break;
                }
            }
        }
    }
}
