//! Two multiplexers wired back to back, with a virtual clock (after quinn-proto's
//! test `Pair`). Frames travel through the real codec: `poll_transmit` → encode →
//! bytes → `FrameDecoder` → `handle_frame`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};
use outband_proto::mux::{ConnError, Event, Mux, MuxConfig, Role};
use outband_proto::pb::{Frame, frame::Kind};

/// Which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Gw,
    Ag,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Gw => Side::Ag,
            Side::Ag => Side::Gw,
        }
    }
}

/// One end: its multiplexer, the decoder for what the peer sends it, and what it saw.
pub struct End {
    pub mux: Mux,
    pub decoder: FrameDecoder,
    /// Events not yet taken by the test.
    pub events: VecDeque<Event>,
    /// Every frame this end sent, in order.
    pub sent: Vec<Frame>,
    /// The error that ended this end's connection.
    pub error: Option<ConnError>,
    /// Encoded frames on the wire towards the peer, not delivered yet.
    pub in_flight: VecDeque<BytesMut>,
}

pub struct Pair {
    pub gw: End,
    pub ag: End,
    pub now: Instant,
}

pub fn cfg(role: Role) -> MuxConfig {
    MuxConfig {
        role,
        initial_window: 64 * 1024,
        peer_initial_window: 64 * 1024,
        max_streams: 16,
        max_chunk: 4096,
        heartbeat_interval: Duration::from_secs(5),
        dead_after_intervals: 3,
        shared_window: 64 * 1024,
        shared_rate: outband_proto::mux::DEFAULT_SHARED_RATE,
        max_window: 0,
    }
}

impl Pair {
    pub fn new() -> Self {
        Self::with(cfg(Role::Gateway), cfg(Role::Agent))
    }

    pub fn with(gw: MuxConfig, ag: MuxConfig) -> Self {
        let now = Instant::now();
        let end = |cfg| End {
            mux: Mux::new(cfg, now),
            decoder: FrameDecoder::default(),
            events: VecDeque::new(),
            sent: Vec::new(),
            error: None,
            in_flight: VecDeque::new(),
        };
        Pair {
            gw: end(gw),
            ag: end(ag),
            now,
        }
    }

    pub fn end(&mut self, side: Side) -> &mut End {
        match side {
            Side::Gw => &mut self.gw,
            Side::Ag => &mut self.ag,
        }
    }

    pub fn mux(&mut self, side: Side) -> &mut Mux {
        &mut self.end(side).mux
    }

    /// Moves at most one frame from `side`'s multiplexer onto the wire.
    pub fn transmit_one(&mut self, side: Side) -> Option<Frame> {
        let end = self.end(side);
        let f = end.mux.poll_transmit()?;
        let mut buf = BytesMut::new();
        encode_frame(&f, DEFAULT_MAX_FRAME_LEN, &mut buf).expect("own frames encode");
        end.in_flight.push_back(buf);
        end.sent.push(f.clone());
        Some(f)
    }

    /// Delivers the oldest frame `side` put on the wire to its peer.
    pub fn deliver_one(&mut self, side: Side) -> bool {
        let Some(bytes) = self.end(side).in_flight.pop_front() else {
            return false;
        };
        let now = self.now;
        let to = self.end(side.other());
        to.decoder.extend(&bytes);
        while let Some(f) = to.decoder.decode().expect("own frames decode") {
            if let Err(e) = to.mux.handle_frame(f, now) {
                to.error.get_or_insert(e);
            }
        }
        while let Some(ev) = to.mux.poll_event() {
            to.events.push_back(ev);
        }
        true
    }

    /// Sends and delivers one frame from `side`; false if it had nothing to send.
    pub fn step(&mut self, side: Side) -> bool {
        if self.transmit_one(side).is_none() {
            return false;
        }
        self.deliver_one(side)
    }

    /// Moves frames both ways until neither end has anything to send.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            let a = self.flush_wire(Side::Gw) | self.step(Side::Gw);
            let b = self.flush_wire(Side::Ag) | self.step(Side::Ag);
            if !a && !b {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// Sends and delivers everything `side` has, without letting the peer answer.
    pub fn drive_one_way(&mut self, side: Side) {
        while self.step(side) {}
    }

    /// Delivers everything already on the wire from `side`.
    pub fn flush_wire(&mut self, side: Side) -> bool {
        let mut any = false;
        while self.deliver_one(side) {
            any = true;
        }
        any
    }

    /// Advances the virtual clock and lets both ends handle their timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for side in [Side::Gw, Side::Ag] {
            let end = self.end(side);
            if end.mux.poll_timeout().is_some_and(|t| t <= now)
                && let Err(e) = end.mux.handle_timeout(now)
            {
                end.error.get_or_insert(e);
            }
        }
    }

    /// Takes all pending events of `side`.
    pub fn events(&mut self, side: Side) -> Vec<Event> {
        self.end(side).events.drain(..).collect()
    }

    /// Data delivered to `side` on `id`, concatenated, releasing it as it is read.
    pub fn read_all(&mut self, side: Side, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        let now = self.now;
        let end = self.end(side);
        while let Some(ev) = end.events.pop_front() {
            match ev {
                Event::Data { id: i, data } if i == id => {
                    out.extend_from_slice(&data);
                    end.mux.release(id, data.len(), now);
                }
                other => keep.push_back(other),
            }
        }
        end.events = keep;
        out
    }

    /// Kinds of the frames `side` sent, as short names.
    pub fn sent_kinds(&self, side: Side) -> Vec<&'static str> {
        let end = match side {
            Side::Gw => &self.gw,
            Side::Ag => &self.ag,
        };
        end.sent
            .iter()
            .map(outband_proto::codec::kind_name)
            .collect()
    }

    /// Opens a stream from `side` and has the peer accept it.
    pub fn open_accepted(&mut self, side: Side) -> u32 {
        let id = self
            .mux(side)
            .open(outband_proto::pb::StreamKind::Tcp, "10.0.0.5:5900")
            .expect("open");
        self.drive();
        let evs = self.events(side.other());
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::Opened { id: i, .. } if *i == id)),
            "no Opened for {id}: {evs:?}"
        );
        self.mux(side.other()).accept(id).expect("accept");
        self.drive();
        let evs = self.events(side);
        assert!(
            evs.contains(&Event::Accepted { id }),
            "no Accepted for {id}: {evs:?}"
        );
        id
    }
}

/// Data payload of a frame, if it is a data frame.
pub fn data_of(f: &Frame) -> Option<(u32, usize, bool)> {
    match &f.kind {
        Some(Kind::Data(d)) => Some((d.stream_id, d.data.len(), d.fin)),
        _ => None,
    }
}
