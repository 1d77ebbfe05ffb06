//! Invariant checks shared by the cargo-fuzz targets in `proto/fuzz` and the stable
//! replay test `tests/fuzz_replay.rs` (feature `fuzzing`; not part of the API).
//!
//! Each function takes arbitrary bytes, drives a state machine with them and panics
//! if an invariant breaks. Hostile input must only ever produce errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::codec::{self, DecodeError, FrameDecoder, HEADER_LEN};
use crate::mux::{ConnError, Event, Mux, MuxConfig, Role, StreamId};
use crate::pb::{self, Frame, frame};

/// What [`frame_decoder`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecoderOutcome {
    /// Frames decoded.
    pub frames: usize,
    /// The error that failed the decoder, if any.
    pub error: Option<DecodeError>,
    /// Whether the input ended inside a frame (only checked without an error).
    pub truncated: bool,
}

/// Feeds `data` to a [`FrameDecoder`] in pieces whose sizes come from the first bytes
/// of `data`. Checks: no panic; after decoding all it can, the decoder holds less than
/// one maximal frame plus header; `wanted()` never exceeds that either; every frame
/// re-encodes to bytes that decode to an equal frame; after an error it stays failed.
pub fn frame_decoder(data: &[u8]) -> DecoderOutcome {
    let Some((&first, rest)) = data.split_first() else {
        return DecoderOutcome::default();
    };
    let max_len = if first & 1 == 0 {
        codec::DEFAULT_MAX_FRAME_LEN
    } else {
        64 + usize::from(first)
    };
    let n_ctrl = (usize::from(first >> 1) % 8).min(rest.len());
    let (ctrl, mut stream) = rest.split_at(n_ctrl);
    let mut dec = FrameDecoder::new(max_len);
    let mut out = DecoderOutcome::default();
    let mut i = 0;
    while !stream.is_empty() {
        // Piece sizes cycle through the control bytes; 0 means "all that is left".
        let size = match ctrl.get(i % ctrl.len().max(1)) {
            None | Some(0) => stream.len(),
            Some(&b) => usize::from(b).min(stream.len()),
        };
        i += 1;
        let (piece, tail) = stream.split_at(size);
        stream = tail;
        dec.extend(piece);
        loop {
            assert!(dec.wanted() >= 1);
            assert!(
                dec.wanted() <= HEADER_LEN + max_len,
                "wanted() beyond one frame"
            );
            match dec.decode() {
                Ok(Some(f)) => {
                    out.frames += 1;
                    check_reencode(&f, max_len);
                }
                Ok(None) => {
                    assert!(
                        dec.buffered() < HEADER_LEN + max_len,
                        "decoder holds {} bytes with nothing to decode",
                        dec.buffered()
                    );
                    break;
                }
                Err(e) => {
                    assert!(dec.decode().is_err(), "decoder recovered after {e}");
                    assert_eq!(dec.buffered(), 0, "failed decoder keeps its buffer");
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out.truncated = dec.finish().is_err();
    assert_eq!(out.truncated, dec.buffered() > 0);
    out
}

fn check_reencode(f: &Frame, max_len: usize) {
    assert!(f.kind.is_some(), "decoder yielded a frame without a kind");
    let mut buf = BytesMut::new();
    codec::encode_frame(f, max_len, &mut buf).expect("a decoded frame re-encodes within the limit");
    let mut dec = FrameDecoder::new(max_len);
    dec.extend(&buf);
    let again = dec
        .decode()
        .expect("re-encoded frame decodes")
        .expect("whole frame");
    assert_eq!(&again, f, "re-encoded frame differs");
    assert_eq!(dec.buffered(), 0);
}

/// The configuration [`mux`] runs with: tiny windows and limits so short inputs reach
/// the edges.
pub fn mux_config() -> MuxConfig {
    MuxConfig {
        role: Role::Gateway,
        initial_window: 1000,
        peer_initial_window: 700,
        max_streams: 4,
        max_chunk: 300,
        heartbeat_interval: Duration::from_secs(1),
        dead_after_intervals: 3,
        shared_window: 400,
        shared_rate: 1_000_000,
        max_window: 4000,
    }
}

/// What [`mux`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MuxOutcome {
    /// Frames the hostile peer fed in.
    pub frames_in: usize,
    /// Frames the multiplexer sent.
    pub frames_out: usize,
    /// Payload bytes delivered to the application.
    pub bytes_delivered: u64,
    /// Why the connection ended, if it did.
    pub error: Option<ConnError>,
    /// Streams still holding an id at the end.
    pub streams_left: usize,
}

/// A cursor over fuzz input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// Mostly small ids of both parities, sometimes 0 or huge.
    fn id(&mut self) -> Option<u32> {
        let b = self.byte()?;
        Some(match b {
            0xF0..=0xFF => u32::MAX - u32::from(b & 1),
            _ => u32::from(b % 24),
        })
    }
}

/// Checks the multiplexer against a hostile peer. `data` is a program: each step is
/// a frame from the peer (structured, or raw protobuf) or a local operation (open,
/// accept, refuse, send, finish, release, close, detach, request, time passing).
/// Checks: no panic; the application never holds more unreleased data of a stream
/// than the window it granted; we never send more on a stream than the peer granted;
/// at most `max_streams` streams exist; once the connection failed, nothing but a
/// `GoAway` goes out.
pub fn mux(data: &[u8]) -> MuxOutcome {
    let cfg = mux_config();
    let start = Instant::now();
    let mut now = start;
    let mut m = Mux::new(cfg.clone(), now);
    let mut h = Harness::default();
    let mut input = Input(data);
    while let Some(op) = input.byte() {
        let step = match op % 20 {
            0..=8 => match peer_frame(op, &mut input) {
                Some(f) => {
                    h.out.frames_in += 1;
                    h.note_peer_frame(&f, &cfg);
                    m.handle_frame(f, now).err()
                }
                None => break,
            },
            9 => {
                let _ = m.open(pb::StreamKind::Tcp, "10.0.0.5:5900");
                None
            }
            10 => {
                let Some(id) = input.id() else { break };
                let _ = m.accept(id);
                None
            }
            11 => {
                let Some(id) = input.id() else { break };
                let _ = m.refuse(id, pb::RefuseCode::Forbidden, "no");
                None
            }
            12 => {
                let (Some(id), Some(n)) = (input.id(), input.u16()) else {
                    break;
                };
                let cap = m.send_capacity(id);
                if let Ok(taken) = m.send(id, &vec![0xA5; usize::from(n % 3000)]) {
                    assert!(taken <= cap, "send took {taken} with capacity {cap}");
                }
                None
            }
            13 => {
                let Some(id) = input.id() else { break };
                let _ = m.finish(id);
                None
            }
            14 => {
                let (Some(id), Some(n)) = (input.id(), input.u16()) else {
                    break;
                };
                h.release(&mut m, id, usize::from(n), now);
                None
            }
            15 => {
                let Some(id) = input.id() else { break };
                m.close(id, pb::CloseCode::Cancelled, "fuzz");
                None
            }
            16 => {
                let Some(id) = input.id() else { break };
                m.detach(id);
                None
            }
            17 => {
                let _ = m.request(pb::request::Body::AgentInfo(pb::AgentInfoRequest {}));
                None
            }
            18 => {
                let Some(ms) = input.u16() else { break };
                now += Duration::from_millis(u64::from(ms) * 4);
                m.handle_timeout(now).err()
            }
            _ => {
                // Drain output without reading events, so queues can build up.
                h.transmit(&mut m);
                None
            }
        };
        if let Some(err) = step {
            h.out.error.get_or_insert(err);
        }
        h.events(&mut m, &cfg);
        h.transmit(&mut m);
        assert!(
            m.stream_count() <= cfg.max_streams,
            "more streams than max_streams"
        );
        if h.out.error.is_none() {
            h.out.error = m.close_reason().cloned();
        }
    }
    assert_eq!(
        h.out.error.as_ref(),
        m.close_reason(),
        "error not reported as close reason"
    );
    h.out.streams_left = m.stream_count();
    h.out
}

#[derive(Default)]
struct Harness {
    /// Send credit the peer granted per stream (our view of it).
    granted: HashMap<StreamId, u64>,
    sent: HashMap<StreamId, u64>,
    /// Data delivered to the application and not released yet.
    unreleased: HashMap<StreamId, u64>,
    out: MuxOutcome,
}

impl Harness {
    fn note_peer_frame(&mut self, f: &Frame, cfg: &MuxConfig) {
        match &f.kind {
            Some(frame::Kind::Open(o)) => {
                let w = if o.initial_window == 0 {
                    cfg.peer_initial_window
                } else {
                    o.initial_window
                };
                self.granted.entry(o.stream_id).or_insert(w.into());
            }
            Some(frame::Kind::Accept(a)) if a.stream_id % 2 == 1 => {
                // An accept replaces the credit; before it we can have sent nothing.
                let sent = self.sent.get(&a.stream_id).copied().unwrap_or(0);
                let g = self.granted.entry(a.stream_id).or_insert(0);
                *g = (*g).max(sent + u64::from(a.initial_window));
            }
            Some(frame::Kind::Window(w)) => {
                *self.granted.entry(w.stream_id).or_insert(0) += u64::from(w.increment);
            }
            _ => {}
        }
    }

    fn release(&mut self, m: &mut Mux, id: StreamId, n: usize, now: Instant) {
        let held = self.unreleased.entry(id).or_insert(0);
        let n = n.min(usize::try_from(*held).unwrap_or(usize::MAX));
        *held -= n as u64;
        m.release(id, n, now);
    }

    fn events(&mut self, m: &mut Mux, cfg: &MuxConfig) {
        while let Some(ev) = m.poll_event() {
            match ev {
                Event::Data { id, data } => {
                    assert!(!data.is_empty(), "empty data event");
                    self.out.bytes_delivered += data.len() as u64;
                    let held = self.unreleased.entry(id).or_insert(0);
                    *held += data.len() as u64;
                    // A window may have grown, never beyond `max_window`.
                    let bound = cfg.initial_window.max(cfg.max_window);
                    assert!(
                        *held <= u64::from(bound),
                        "stream {id}: {held} bytes delivered unreleased, window at most {bound}"
                    );
                }
                Event::Closed { id, .. } | Event::Refused { id, .. } => {
                    self.unreleased.remove(&id);
                }
                _ => {}
            }
        }
    }

    fn transmit(&mut self, m: &mut Mux) {
        while let Some(f) = m.poll_transmit() {
            self.out.frames_out += 1;
            let mut buf = BytesMut::new();
            codec::encode_frame(&f, codec::DEFAULT_MAX_FRAME_LEN, &mut buf)
                .expect("our own frames always encode");
            if m.close_reason().is_some() {
                assert!(
                    matches!(f.kind, Some(frame::Kind::GoAway(_))),
                    "sent {} after the connection failed",
                    codec::kind_name(&f)
                );
            }
            if let Some(frame::Kind::Data(d)) = &f.kind {
                let sent = self.sent.entry(d.stream_id).or_insert(0);
                *sent += d.data.len() as u64;
                let granted = self.granted.get(&d.stream_id).copied().unwrap_or(0);
                assert!(
                    *sent <= granted,
                    "stream {}: sent {sent} bytes with {granted} granted",
                    d.stream_id
                );
            }
        }
    }
}

/// Builds one frame from the peer out of the input; `None` when it ran out.
fn peer_frame(op: u8, input: &mut Input<'_>) -> Option<Frame> {
    let kind = match op % 9 {
        0 => {
            // Raw bytes that may or may not be a valid frame.
            let len = usize::from(input.byte()?);
            let raw = input.take(len);
            let f = Frame::decode(raw).ok()?;
            f.kind.is_some().then_some(f)?.kind?
        }
        1 => frame::Kind::Open(pb::StreamOpen {
            stream_id: input.id()?,
            kind: i32::from(input.byte()? % 3),
            target: "10.0.0.5:5900".into(),
            initial_window: u32::from(input.u16()?),
            auth: None,
        }),
        2 => frame::Kind::Accept(pb::StreamAccept {
            stream_id: input.id()?,
            initial_window: u32::from(input.u16()?),
        }),
        3 => frame::Kind::Refuse(pb::StreamRefuse {
            stream_id: input.id()?,
            code: i32::from(input.byte()?),
            message: "refused".into(),
            error_code: String::new(),
        }),
        4 | 5 => {
            let stream_id = input.id()?;
            let b = input.byte()?;
            let len = usize::from(b & 0x7F) * 9;
            frame::Kind::Data(pb::StreamData {
                stream_id,
                data: Bytes::from(vec![b; len]),
                fin: b & 0x80 != 0,
            })
        }
        6 => {
            let stream_id = input.id()?;
            let b = input.byte()?;
            let increment = if b == 0xFF {
                u32::MAX
            } else {
                u32::from(b) * 8
            };
            // Mostly plain grants; sometimes a raised window (version 3), from far
            // too small to far too large.
            let w = input.byte()?;
            let window = if w < 0xC0 {
                0
            } else {
                u32::from(w - 0xC0) << 19
            };
            frame::Kind::Window(pb::WindowUpdate {
                stream_id,
                increment,
                window,
            })
        }
        7 => frame::Kind::Close(pb::StreamClose {
            stream_id: input.id()?,
            code: i32::from(input.byte()? % 6),
            message: String::new(),
        }),
        _ => match input.byte()? % 6 {
            0 => frame::Kind::Heartbeat(pb::Heartbeat {
                seq: 7,
                reply: false,
            }),
            1 => frame::Kind::Heartbeat(pb::Heartbeat {
                seq: 7,
                reply: true,
            }),
            2 => frame::Kind::Request(pb::Request {
                request_id: 9,
                body: Some(pb::request::Body::AgentInfo(pb::AgentInfoRequest {})),
            }),
            3 => frame::Kind::Reply(pb::Reply {
                request_id: 1,
                body: None,
            }),
            4 => frame::Kind::Inventory(pb::InventoryReport::default()),
            _ => frame::Kind::GoAway(pb::GoAway {
                reason: "bye".into(),
            }),
        },
    };
    Some(Frame { kind: Some(kind) })
}
