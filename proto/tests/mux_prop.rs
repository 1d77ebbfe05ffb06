//! Random operation sequences on two honest multiplexers. Between honest ends no
//! protocol error may ever happen, no receiver may hold more than its window, and
//! every byte accepted by `send` arrives in order exactly once (a prefix of it if the
//! stream was closed).

mod util;

use std::collections::HashMap;
use std::time::Duration;

use outband_proto::mux::{Event, Role};
use outband_proto::pb::{CloseCode, StreamKind};
use proptest::prelude::*;
use util::{Pair, Side, cfg};

#[derive(Debug, Clone)]
enum Op {
    Open(Side),
    /// Answer the oldest unanswered open (accept, or refuse if `refuse`).
    Answer(Side, bool),
    Send(Side, usize, usize),
    Finish(Side, usize),
    Release(Side, usize, usize),
    Close(Side, usize),
    Detach(Side, usize),
    /// Move up to n frames from this side and deliver them.
    Step(Side, usize),
    Drive,
    Advance(u64),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Gw), Just(Side::Ag)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => side().prop_map(Op::Open),
        5 => (side(), prop::bool::weighted(0.15)).prop_map(|(s, r)| Op::Answer(s, r)),
        6 => (side(), 0..8usize, 1..20_000usize).prop_map(|(s, i, n)| Op::Send(s, i, n)),
        1 => (side(), 0..8usize).prop_map(|(s, i)| Op::Finish(s, i)),
        5 => (side(), 0..8usize, 1..20_000usize).prop_map(|(s, i, n)| Op::Release(s, i, n)),
        1 => (side(), 0..8usize).prop_map(|(s, i)| Op::Close(s, i)),
        1 => (side(), 0..8usize).prop_map(|(s, i)| Op::Detach(s, i)),
        8 => (side(), 1..6usize).prop_map(|(s, n)| Op::Step(s, n)),
        2 => Just(Op::Drive),
        1 => (0..3000u64).prop_map(Op::Advance),
    ]
}

/// One direction of one stream, as the test sees it.
#[derive(Default)]
struct Dir {
    sent: Vec<u8>,
    received: Vec<u8>,
    /// Delivered to the receiving app and not released yet.
    unreleased: usize,
    /// The sender aborted or detached (the tail may be lost).
    cut: bool,
}

struct Model {
    p: Pair,
    /// Streams by id, in open order.
    ids: Vec<u32>,
    /// (sender side, id) -> direction state.
    dirs: HashMap<(bool, u32), Dir>,
    unanswered: HashMap<bool, Vec<u32>>,
    counter: u8,
}

fn key(s: Side) -> bool {
    s == Side::Gw
}

impl Model {
    fn id(&self, i: usize) -> Option<u32> {
        (!self.ids.is_empty()).then(|| self.ids[i % self.ids.len()])
    }

    fn collect(&mut self, window: usize) {
        for side in [Side::Gw, Side::Ag] {
            for ev in self.p.events(side) {
                match ev {
                    Event::Opened { id, .. } => {
                        self.ids.push(id);
                        self.unanswered.entry(key(side)).or_default().push(id);
                    }
                    Event::Data { id, data } => {
                        let d = self.dirs.entry((key(side.other()), id)).or_default();
                        d.received.extend_from_slice(&data);
                        d.unreleased += data.len();
                        assert!(
                            d.unreleased <= window,
                            "stream {id}: {} unreleased bytes, window {window}",
                            d.unreleased
                        );
                    }
                    Event::Closed { id, .. } | Event::Refused { id, .. } => {
                        self.dirs.entry((key(side), id)).or_default().cut = true;
                    }
                    _ => {}
                }
            }
        }
    }

    fn apply(&mut self, op: Op) {
        let window = 64 * 1024;
        match op {
            Op::Open(s) => {
                if let Ok(id) = self.p.mux(s).open(StreamKind::Tcp, "t") {
                    self.ids.push(id);
                }
            }
            Op::Answer(s, refuse) => {
                let list = self.unanswered.entry(key(s)).or_default();
                if !list.is_empty() {
                    let id = list.remove(0);
                    if refuse {
                        let _ =
                            self.p
                                .mux(s)
                                .refuse(id, outband_proto::pb::RefuseCode::Forbidden, "");
                    } else {
                        let _ = self.p.mux(s).accept(id);
                    }
                }
            }
            Op::Send(s, i, n) => {
                let Some(id) = self.id(i) else { return };
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        self.counter = self.counter.wrapping_add(1);
                        self.counter
                    })
                    .collect();
                let cap = self.p.mux(s).send_capacity(id);
                if let Ok(taken) = self.p.mux(s).send(id, &data) {
                    assert!(taken <= cap, "send took {taken} beyond capacity {cap}");
                    self.dirs
                        .entry((key(s), id))
                        .or_default()
                        .sent
                        .extend_from_slice(&data[..taken]);
                }
            }
            Op::Finish(s, i) => {
                if let Some(id) = self.id(i) {
                    let _ = self.p.mux(s).finish(id);
                }
            }
            Op::Release(s, i, n) => {
                let Some(id) = self.id(i) else { return };
                let d = self.dirs.entry((key(s.other()), id)).or_default();
                let n = n.min(d.unreleased);
                d.unreleased -= n;
                let now = self.p.now;
                self.p.mux(s).release(id, n, now);
            }
            Op::Close(s, i) => {
                if let Some(id) = self.id(i) {
                    self.p.mux(s).close(id, CloseCode::Cancelled, "");
                    self.dirs.entry((key(s), id)).or_default().cut = true;
                    self.dirs.entry((key(s.other()), id)).or_default().cut = true;
                }
            }
            Op::Detach(s, i) => {
                if let Some(id) = self.id(i) {
                    self.p.mux(s).detach(id);
                    // Without a finish this aborts; either way the peer's data is dropped.
                    self.dirs.entry((key(s), id)).or_default().cut = true;
                    self.dirs.entry((key(s.other()), id)).or_default().cut = true;
                }
            }
            Op::Step(s, n) => {
                for _ in 0..n {
                    self.p.step(s);
                }
            }
            Op::Drive => self.p.drive(),
            Op::Advance(ms) => {
                // Keep both ends talking so nobody is declared dead.
                self.p.drive();
                self.p.advance(Duration::from_millis(ms));
                self.p.drive();
            }
        }
        self.collect(window);
        assert!(
            self.p.gw.error.is_none(),
            "gateway failed: {:?}",
            self.p.gw.error
        );
        assert!(
            self.p.ag.error.is_none(),
            "agent failed: {:?}",
            self.p.ag.error
        );
        for side in [Side::Gw, Side::Ag] {
            assert!(self.p.mux(side).stream_count() <= 16);
        }
    }

    /// Releases everything, finishes every stream, lets it all settle and checks
    /// delivery.
    fn settle(&mut self) {
        for _ in 0..100 {
            for ((sender, id), d) in self.dirs.iter_mut() {
                let receiver = if *sender { Side::Ag } else { Side::Gw };
                let n = std::mem::take(&mut d.unreleased);
                let now = self.p.now;
                self.p.mux(receiver).release(*id, n, now);
            }
            self.p.drive();
            self.collect(64 * 1024);
            if self.dirs.values().all(|d| d.unreleased == 0) {
                break;
            }
        }
        for ((sender, id), d) in &self.dirs {
            if d.cut {
                assert!(
                    d.sent.starts_with(&d.received),
                    "stream {id} (from {}): received bytes are not a prefix of sent",
                    if *sender { "gw" } else { "ag" }
                );
            } else {
                assert_eq!(
                    d.received.len(),
                    d.sent.len(),
                    "stream {id} (from {}): lost or duplicated bytes",
                    if *sender { "gw" } else { "ag" }
                );
                assert!(d.received == d.sent, "stream {id}: bytes out of order");
            }
        }
        assert!(self.p.gw.error.is_none() && self.p.ag.error.is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(ops in prop::collection::vec(op(), 1..200)) {
        let mut m = Model {
            p: Pair::with(cfg(Role::Gateway), cfg(Role::Agent)),
            ids: Vec::new(),
            dirs: HashMap::new(),
            unanswered: HashMap::new(),
            counter: 0,
        };
        for op in ops {
            m.apply(op);
        }
        m.settle();
    }
}
