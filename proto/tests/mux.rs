//! The multiplexer between two honest ends (a `Pair` with a virtual clock) and
//! against a hostile peer (frames fed in by hand).

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use outband_proto::mux::{ConnError, Event, Mux, Role, StreamError};
use outband_proto::pb::{self, CloseCode, Frame, RefuseCode, StreamKind, frame::Kind};
use util::{Pair, Side, cfg, data_of};

// ---------------------------------------------------------------- open / accept

#[test]
fn open_accept() {
    let mut p = Pair::new();
    let id =
        p.gw.mux
            .open(StreamKind::Tcp, "vnc://10.0.0.5:5900")
            .unwrap();
    assert_eq!(id % 2, 1, "the gateway opens odd ids");
    p.drive();
    assert_eq!(
        p.events(Side::Ag),
        vec![Event::Opened {
            id,
            kind: StreamKind::Tcp,
            target: "vnc://10.0.0.5:5900".into(),
            auth: None,
        }]
    );
    p.ag.mux.accept(id).unwrap();
    p.drive();
    assert_eq!(p.events(Side::Gw), vec![Event::Accepted { id }]);
    // And the agent's own streams get even ids.
    let id2 = p.open_accepted(Side::Ag);
    assert_eq!(id2 % 2, 0);
    assert_eq!(p.gw.mux.stream_count(), 2);
}

#[test]
fn open_refuse() {
    let mut p = Pair::new();
    let id = p.gw.mux.open(StreamKind::Tcp, "10.9.9.9:22").unwrap();
    p.drive();
    p.events(Side::Ag);
    p.ag.mux
        .refuse(id, RefuseCode::Forbidden, "not on the inventory")
        .unwrap();
    p.drive();
    assert_eq!(
        p.events(Side::Gw),
        vec![Event::Refused {
            id,
            code: RefuseCode::Forbidden,
            message: "not on the inventory".into(),
            error_code: String::new(),
        }]
    );
    assert_eq!(p.gw.mux.stream_count(), 0);
    assert_eq!(p.ag.mux.stream_count(), 0);
    assert_eq!(p.gw.mux.send(id, b"x"), Err(StreamError::Unknown(id)));
}

#[test]
fn console_open_carries_credentials_and_refusal_detail() {
    let mut p = Pair::new();
    let auth = pb::BmcAuth {
        username: "admin".into(),
        password: "secret".into(),
        cert_sha256: vec![7; 32].into(),
        ipmi_cipher_suites: vec![3],
        allow_ipmi15: false,
    };
    let id =
        p.gw.mux
            .open_with_auth(StreamKind::Vnc, "vnc://10.0.0.5", Some(auth.clone()))
            .unwrap();
    p.drive();
    assert_eq!(
        p.events(Side::Ag),
        vec![Event::Opened {
            id,
            kind: StreamKind::Vnc,
            target: "vnc://10.0.0.5".into(),
            auth: Some(Box::new(auth)),
        }]
    );
    p.ag.mux
        .refuse_with_code(
            id,
            RefuseCode::AuthFailed,
            "bmc_auth_failed",
            "wrong password",
        )
        .unwrap();
    p.drive();
    assert_eq!(
        p.events(Side::Gw),
        vec![Event::Refused {
            id,
            code: RefuseCode::AuthFailed,
            message: "wrong password".into(),
            error_code: "bmc_auth_failed".into(),
        }]
    );
}

#[test]
fn send_before_accept_is_not_writable() {
    let mut p = Pair::new();
    let id = p.gw.mux.open(StreamKind::Tcp, "t").unwrap();
    assert_eq!(p.gw.mux.send_capacity(id), 0);
    assert_eq!(
        p.gw.mux.send(id, b"early"),
        Err(StreamError::NotWritable(id))
    );
    p.drive();
    // The peer's side is not writable before it answers either.
    assert_eq!(p.ag.mux.send(id, b"x"), Err(StreamError::NotWritable(id)));
}

// ---------------------------------------------------------------- data

#[test]
fn data_both_directions() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    assert_eq!(p.gw.mux.send(id, b"ping from gateway").unwrap(), 17);
    assert_eq!(p.ag.mux.send(id, b"pong from agent").unwrap(), 15);
    p.drive();
    assert_eq!(p.read_all(Side::Ag, id), b"ping from gateway");
    assert_eq!(p.read_all(Side::Gw, id), b"pong from agent");
}

#[test]
fn large_transfer_is_chunked_and_arrives_in_order() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut off = 0;
    let mut got = Vec::new();
    while got.len() < payload.len() {
        off += p.gw.mux.send(id, &payload[off..]).unwrap();
        p.drive();
        got.extend(p.read_all(Side::Ag, id));
        p.drive();
    }
    assert_eq!(got, payload);
    let max_chunk = p.gw.mux.config().max_chunk;
    assert!(
        p.gw.sent
            .iter()
            .filter_map(data_of)
            .all(|(_, n, _)| n <= max_chunk),
        "a data frame exceeded max_chunk"
    );
}

// ---------------------------------------------------------------- flow control

#[test]
fn sender_never_exceeds_window_and_gets_writable_after_release() {
    let mut ag = cfg(Role::Agent);
    ag.initial_window = 1000;
    let mut p = Pair::with(cfg(Role::Gateway), ag);
    let id = p.open_accepted(Side::Gw);

    assert_eq!(p.gw.mux.send_capacity(id), 1000);
    assert_eq!(
        p.gw.mux.send(id, &[1u8; 5000]).unwrap(),
        1000,
        "partial send"
    );
    assert_eq!(p.gw.mux.send(id, &[1u8; 10]).unwrap(), 0);
    p.drive();
    let sent: usize =
        p.gw.sent
            .iter()
            .filter_map(data_of)
            .map(|(_, n, _)| n)
            .sum();
    assert_eq!(sent, 1000);
    assert!(
        p.events(Side::Gw).is_empty(),
        "no Writable before any release"
    );

    // Releasing less than a quarter of the window sends no update yet.
    p.ag.mux.release(id, 100, p.now);
    p.drive();
    assert!(!p.sent_kinds(Side::Ag).contains(&"window"));
    assert_eq!(p.gw.mux.send_capacity(id), 0);

    p.ag.mux.release(id, 900, p.now);
    p.drive();
    assert!(p.sent_kinds(Side::Ag).contains(&"window"));
    assert_eq!(p.events(Side::Gw), vec![Event::Writable { id }]);
    assert_eq!(p.gw.mux.send_capacity(id), 1000);
    assert_eq!(p.gw.mux.send(id, &[2u8; 3000]).unwrap(), 1000);
}

#[test]
fn a_stalled_stream_blocks_only_itself() {
    let mut p = Pair::new();
    let stalled = p.open_accepted(Side::Gw);
    let busy = p.open_accepted(Side::Gw);
    // Fill the stalled stream's window; its reader never releases.
    let window = p.gw.mux.send_capacity(stalled);
    assert_eq!(p.gw.mux.send(stalled, &vec![0u8; 1 << 20]).unwrap(), window);
    p.drive();
    assert_eq!(p.gw.mux.send_capacity(stalled), 0);

    let payload = vec![9u8; 2 << 20];
    let (mut off, mut got) = (0, 0);
    while got < payload.len() {
        off += p.gw.mux.send(busy, &payload[off..]).unwrap();
        p.drive();
        got += p.read_all(Side::Ag, busy).len();
        p.drive();
    }
    assert_eq!(got, payload.len());
    assert_eq!(
        p.gw.mux.send_capacity(stalled),
        0,
        "stalled stream got credit"
    );
}

// ---------------------------------------------------------------- scheduling

#[test]
fn data_is_round_robin_and_control_goes_first() {
    let mut p = Pair::new();
    let a = p.open_accepted(Side::Gw);
    let b = p.open_accepted(Side::Gw);
    let chunk = p.gw.mux.config().max_chunk;
    assert_eq!(p.gw.mux.send(a, &vec![1u8; 8 * chunk]).unwrap(), 8 * chunk);
    assert_eq!(p.gw.mux.send(b, &vec![2u8; 8 * chunk]).unwrap(), 8 * chunk);

    let first = p.transmit_one(Side::Gw).unwrap();
    assert_eq!(data_of(&first).map(|d| d.0), Some(a));

    // Now queue control frames: a heartbeat and a window update.
    p.ag.mux.send(a, &vec![3u8; 40_000]).unwrap();
    p.drive_one_way(Side::Ag);
    let _ = p.read_all(Side::Gw, a); // releases 40 000 bytes → window update
    p.advance(Duration::from_secs(5)); // heartbeat due
    let mut control = Vec::new();
    let first_data = loop {
        let f = p.transmit_one(Side::Gw).unwrap();
        match data_of(&f) {
            Some((id, _, _)) => break id,
            None => control.push(outband_proto::codec::kind_name(&f)),
        }
    };
    assert!(
        control.contains(&"window") && control.contains(&"heartbeat"),
        "control frames queued behind data: {control:?}"
    );
    assert!(control.iter().all(|k| *k == "window" || *k == "heartbeat"));

    // Then data again, alternating between the streams.
    let mut order = vec![first_data];
    order.extend((0..9).map(|_| data_of(&p.transmit_one(Side::Gw).unwrap()).expect("data").0));
    assert_eq!(order, vec![b, a, b, a, b, a, b, a, b, a]);
}

// ---------------------------------------------------------------- fin / close

#[test]
fn half_close_both_directions_and_reaping() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.send(id, b"request").unwrap();
    p.gw.mux.finish(id).unwrap();
    p.drive();
    assert_eq!(p.read_all(Side::Ag, id), b"request");
    assert_eq!(p.events(Side::Ag), vec![Event::Finished { id }]);
    assert_eq!(
        p.gw.mux.send(id, b"more"),
        Err(StreamError::NotWritable(id))
    );

    // The other direction still works after the half-close.
    p.ag.mux.send(id, b"response").unwrap();
    p.drive();
    assert_eq!(p.read_all(Side::Gw, id), b"response");
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (1, 1));

    p.ag.mux.finish(id).unwrap();
    p.drive();
    assert_eq!(p.events(Side::Gw), vec![Event::Finished { id }]);
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
}

#[test]
fn fin_requested_before_accept_is_sent_after_it() {
    let mut p = Pair::new();
    let id = p.gw.mux.open(StreamKind::Tcp, "t").unwrap();
    p.gw.mux.finish(id).unwrap();
    p.drive();
    p.events(Side::Ag);
    p.ag.mux.accept(id).unwrap();
    p.drive();
    assert_eq!(p.events(Side::Ag), vec![Event::Finished { id }]);
}

#[test]
fn close_is_acknowledged_and_the_id_forgotten() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux
        .close(id, CloseCode::PeerError, "browser went away");
    assert_eq!(p.gw.mux.stream_count(), 1, "kept until acknowledged");
    p.drive();
    assert_eq!(
        p.events(Side::Ag),
        vec![Event::Closed {
            id,
            code: CloseCode::PeerError,
            message: "browser went away".into()
        }]
    );
    assert_eq!(p.sent_kinds(Side::Ag).last(), Some(&"close"), "ack");
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
    assert!(p.events(Side::Gw).is_empty(), "the ack is no event");
}

#[test]
fn data_in_flight_after_close_is_ignored() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.ag.mux.send(id, b"late data").unwrap();
    p.ag.mux.finish(id).unwrap();
    p.transmit_one(Side::Ag).unwrap(); // on the wire, not delivered
    p.gw.mux.close(id, CloseCode::Cancelled, "");
    p.deliver_one(Side::Ag);
    assert!(p.gw.error.is_none(), "{:?}", p.gw.error);
    assert!(
        p.events(Side::Gw).is_empty(),
        "data for a closing stream surfaced"
    );
    p.drive();
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
}

#[test]
fn crossing_closes_forget_both_sides() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.close(id, CloseCode::Normal, "");
    p.ag.mux.close(id, CloseCode::Normal, "");
    p.drive();
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
    // Neither side reports a close it started itself as an event.
    assert!(p.events(Side::Gw).is_empty() && p.events(Side::Ag).is_empty());
}

/// Regression: a close that crosses the peer's fin after both fins were sent used to
/// leave the closer waiting forever for an acknowledgement (a leaked stream slot).
#[test]
fn close_crossing_the_last_fin_does_not_leak_the_stream() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.finish(id).unwrap();
    p.drive(); // the agent has the gateway's fin
    p.ag.mux.finish(id).unwrap();
    p.transmit_one(Side::Ag).unwrap(); // agent's fin on the wire; agent reaps
    assert_eq!(p.ag.mux.stream_count(), 0);
    p.gw.mux.close(id, CloseCode::Cancelled, "handle dropped");
    p.drive();
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
    assert_eq!(p.gw.mux.stream_count(), 0, "closing stream leaked");
}

#[test]
fn detach_after_finish_delivers_everything_then_closes() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.send(id, b"last words").unwrap();
    p.gw.mux.finish(id).unwrap();
    p.gw.mux.detach(id);
    p.drive();
    assert_eq!(p.read_all(Side::Ag, id), b"last words");
    let evs = p.events(Side::Ag);
    assert_eq!(evs[0], Event::Finished { id });
    assert!(
        matches!(&evs[1], Event::Closed { id: i, code: CloseCode::Cancelled, .. } if *i == id),
        "{evs:?}"
    );
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
}

#[test]
fn detach_after_both_fins_needs_no_close() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.ag.mux.finish(id).unwrap();
    p.drive();
    p.gw.mux.finish(id).unwrap();
    p.gw.mux.detach(id);
    p.drive();
    assert!(!p.sent_kinds(Side::Gw).contains(&"close"));
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
}

#[test]
fn detach_without_finish_aborts() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.send(id, b"unsent").unwrap();
    p.gw.mux.detach(id);
    p.drive();
    assert!(
        p.read_all(Side::Ag, id).is_empty(),
        "queued data was not dropped"
    );
    assert!(matches!(
        p.events(Side::Ag).as_slice(),
        [Event::Closed {
            code: CloseCode::Cancelled,
            ..
        }]
    ));
    assert_eq!((p.gw.mux.stream_count(), p.ag.mux.stream_count()), (0, 0));
}

// ---------------------------------------------------------------- heartbeats

#[test]
fn heartbeats_every_interval_are_answered() {
    let mut p = Pair::new();
    let start = p.now;
    let interval = Duration::from_secs(5);
    // The first goes out at once (its round trip sizes the shared window), then one
    // per interval.
    assert_eq!(p.gw.mux.poll_timeout(), Some(start));
    for i in 1..=10u64 {
        p.advance(if i == 1 { Duration::ZERO } else { interval });
        p.drive();
        let gw_hb = p.gw.sent.iter().filter(|f| is_heartbeat(f, false)).count();
        let ag_replies = p.ag.sent.iter().filter(|f| is_heartbeat(f, true)).count();
        assert_eq!(gw_hb as u64, i, "one heartbeat per interval");
        assert_eq!(ag_replies as u64, i, "every heartbeat answered");
        assert!(p.gw.mux.poll_timeout().unwrap() > p.now);
    }
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
}

// ------------------------------------------------------------ shared window

/// 256 KiB windows, 16 KiB unacknowledged per stream while streams share the
/// connection, plus 1 MB/s times the idle round trip.
fn shared_cfg(role: Role) -> outband_proto::mux::MuxConfig {
    outband_proto::mux::MuxConfig {
        initial_window: 256 * 1024,
        peer_initial_window: 256 * 1024,
        shared_window: 16 * 1024,
        shared_rate: 1_000_000,
        ..cfg(role)
    }
}

/// Bytes `side` has sent on `id` that the peer has not granted back, from the
/// frames on the record.
fn unacked(p: &Pair, side: Side, id: u32) -> i64 {
    let (sent, granted) = match side {
        Side::Gw => (&p.gw.sent, &p.ag.sent),
        Side::Ag => (&p.ag.sent, &p.gw.sent),
    };
    let out: i64 = sent
        .iter()
        .filter_map(data_of)
        .filter(|(i, _, _)| *i == id)
        .map(|(_, n, _)| n as i64)
        .sum();
    let back: i64 = granted
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Window(w)) if w.stream_id == id => Some(i64::from(w.increment)),
            _ => None,
        })
        .sum();
    out - back
}

#[test]
fn a_lone_stream_uses_its_whole_window() {
    let mut p = Pair::with(shared_cfg(Role::Gateway), shared_cfg(Role::Agent));
    let id = p.open_accepted(Side::Gw);
    assert_eq!(p.gw.mux.send_capacity(id), 256 * 1024);
    let taken = p.gw.mux.send(id, &vec![7u8; 300 * 1024]).unwrap();
    assert_eq!(taken, 256 * 1024);
}

#[test]
fn streams_sharing_the_connection_keep_at_most_the_shared_window_unacknowledged() {
    let mut p = Pair::with(shared_cfg(Role::Gateway), shared_cfg(Role::Agent));
    let bulk = p.open_accepted(Side::Gw);
    let console = p.open_accepted(Side::Gw);
    // No heartbeat has come back yet: the cap is the shared window alone.
    assert_eq!(p.gw.mux.idle_rtt(), None);
    assert_eq!(p.gw.mux.send_capacity(bulk), 16 * 1024);
    let payload = vec![0x42u8; 1024 * 1024];
    let mut sent = 0;
    let mut received = Vec::new();
    let mut most_unacked = 0;
    while received.len() < payload.len() {
        if sent < payload.len() {
            sent += p.gw.mux.send(bulk, &payload[sent..]).unwrap();
        }
        // The keystroke never waits for credit.
        assert_eq!(p.gw.mux.send(console, b"k").unwrap(), 1);
        p.drive_one_way(Side::Gw);
        most_unacked = most_unacked.max(unacked(&p, Side::Gw, bulk));
        assert_eq!(p.read_all(Side::Ag, console).len(), 1);
        received.extend(p.read_all(Side::Ag, bulk));
        p.drive();
        assert!(p.gw.error.is_none() && p.ag.error.is_none());
    }
    assert_eq!(
        received, payload,
        "the bulk stream arrived whole and in order"
    );
    assert_eq!(most_unacked, 16 * 1024);
    // With a quarter of the shared window per update, the sender never stalls a
    // whole cap for credit: 1 MiB took 64 rounds of 16 KiB.
    let updates =
        p.ag.sent
            .iter()
            .filter(|f| matches!(&f.kind, Some(Kind::Window(w)) if w.stream_id == bulk))
            .count();
    assert!(updates >= 1024 / 4, "{updates} window updates for 1 MiB");

    // Once the console closes, the bulk stream has its whole window back, and a
    // writer that was cut short hears so.
    p.events(Side::Gw);
    assert_eq!(p.gw.mux.send(bulk, &payload).unwrap(), 16 * 1024);
    assert_eq!(p.gw.mux.send_capacity(bulk), 0);
    p.gw.mux.close(console, CloseCode::Normal, "");
    p.drive();
    assert!(p.events(Side::Gw).contains(&Event::Writable { id: bulk }));
    assert_eq!(p.gw.mux.send_capacity(bulk), 256 * 1024 - 16 * 1024);
}

/// The receiver batches its window updates by its own idea of the cap; a sender
/// whose cap is far smaller (another configuration, a shorter measured round trip)
/// must still get its credit back, or the stream would stall for good.
#[test]
fn a_sender_capped_below_the_receivers_batch_still_gets_credit() {
    let gw = outband_proto::mux::MuxConfig {
        shared_window: 2 * 1024,
        shared_rate: 0,
        ..shared_cfg(Role::Gateway)
    };
    let ag = outband_proto::mux::MuxConfig {
        shared_window: 1024 * 1024,
        ..shared_cfg(Role::Agent)
    };
    let mut p = Pair::with(gw, ag);
    let bulk = p.open_accepted(Side::Gw);
    // Sent and consumed while the stream was alone: below a quarter window, so the
    // receiver owes this credit until the next release...
    assert_eq!(p.gw.mux.send(bulk, &[5u8; 3000]).unwrap(), 3000);
    p.drive();
    assert_eq!(p.read_all(Side::Ag, bulk).len(), 3000);
    p.drive();
    assert_eq!(unacked(&p, Side::Gw, bulk), 3000);
    // ...and the connection becoming shared puts the sender over its cap. The
    // receiver, caught up, gives the credit back when the second stream arrives.
    let _console = p.open_accepted(Side::Gw);
    assert_eq!(unacked(&p, Side::Gw, bulk), 0);
    let payload = vec![9u8; 100_000];
    let mut sent = 0;
    let mut received = 0;
    for _ in 0..1000 {
        if sent < payload.len() {
            sent += p.gw.mux.send(bulk, &payload[sent..]).unwrap();
        }
        p.drive();
        received += p.read_all(Side::Ag, bulk).len();
        p.drive();
        assert!(unacked(&p, Side::Gw, bulk) <= 2 * 1024);
        if received == payload.len() {
            break;
        }
    }
    assert_eq!(received, payload.len(), "the stream stalled");
}

#[test]
fn the_shared_window_grows_with_the_idle_round_trip() {
    let mut p = Pair::with(shared_cfg(Role::Gateway), shared_cfg(Role::Agent));
    // The first heartbeat goes out at once; its answer comes 20 ms later.
    p.advance(Duration::ZERO);
    p.drive_one_way(Side::Gw);
    p.now += Duration::from_millis(20);
    p.drive();
    assert_eq!(p.gw.mux.idle_rtt(), Some(Duration::from_millis(20)));
    let bulk = p.open_accepted(Side::Gw);
    let _console = p.open_accepted(Side::Gw);
    // 16 KiB + 1 MB/s x 20 ms.
    assert_eq!(p.gw.mux.send_capacity(bulk), 16 * 1024 + 20_000);

    // A heartbeat that leaves behind our own queued data measures the queue, not
    // the path: it is not a sample, however long it takes.
    p.gw.mux.send(bulk, &vec![1u8; 30_000]).unwrap();
    p.advance(Duration::from_secs(5));
    p.drive_one_way(Side::Gw);
    p.now += Duration::from_millis(2);
    p.drive();
    assert_eq!(p.gw.mux.idle_rtt(), Some(Duration::from_millis(20)));

    // Idle heartbeats replace old samples: after eight 1 ms round trips the 20 ms
    // one is gone.
    p.read_all(Side::Ag, bulk);
    p.drive();
    for _ in 0..8 {
        p.advance(Duration::from_secs(5));
        p.drive_one_way(Side::Gw);
        p.now += Duration::from_millis(1);
        p.drive();
    }
    assert_eq!(p.gw.mux.idle_rtt(), Some(Duration::from_millis(1)));
    assert_eq!(p.gw.mux.send_capacity(bulk), 16 * 1024 + 1_000);
}

// ------------------------------------------------------------- window growth

/// 64 KiB windows that may grow to `max_window`, and a 20 ms round trip measured by
/// the receiver (the agent end).
fn growth_pair(max_window: u32) -> Pair {
    growth_pair_rtt(max_window, Duration::from_millis(20))
}

fn growth_pair_rtt(max_window: u32, rtt: Duration) -> Pair {
    let grows = |role| outband_proto::mux::MuxConfig {
        max_window,
        ..cfg(role)
    };
    with_agent_rtt(Pair::with(grows(Role::Gateway), grows(Role::Agent)), rtt)
}

/// Lets the agent end measure an idle round trip of `rtt` with its first heartbeat.
fn with_agent_rtt(mut p: Pair, rtt: Duration) -> Pair {
    p.advance(Duration::ZERO);
    p.drive_one_way(Side::Ag);
    p.now += rtt;
    p.drive();
    assert_eq!(p.ag.mux.idle_rtt(), Some(rtt));
    p
}

/// One round trip of a stream the gateway sends on as fast as its credit allows:
/// it sends all its credit, the data arrives half a round trip later and is
/// released `pieces` bytes at a time, `gap` apart; the grants arrive half a round
/// trip after that. Returns the credit the sender had at the start.
fn send_one_round(p: &mut Pair, id: u32, pieces: usize, gap: Duration) -> usize {
    let credit = p.gw.mux.send_capacity(id);
    assert_eq!(p.gw.mux.send(id, &vec![7u8; credit]).unwrap(), credit);
    p.drive_one_way(Side::Gw);
    p.now += Duration::from_millis(10);
    let mut unreleased = 0;
    for ev in p.events(Side::Ag) {
        if let Event::Data { id: i, data } = ev {
            assert_eq!(i, id);
            unreleased += data.len();
        }
    }
    assert_eq!(unreleased, credit);
    while unreleased > 0 {
        let n = pieces.min(unreleased);
        p.ag.mux.release(id, n, p.now);
        unreleased -= n;
        if unreleased > 0 {
            p.now += gap;
        }
    }
    p.drive_one_way(Side::Ag);
    p.now += Duration::from_millis(10);
    p.drive();
    credit
}

/// The windows the receiver raised on `id`, in order.
fn raised_windows(p: &Pair, id: u32) -> Vec<u32> {
    p.ag.sent
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Window(w)) if w.stream_id == id && w.window != 0 => Some(w.window),
            _ => None,
        })
        .collect()
}

/// A lone stream that moves its whole window every round trip is held back by the
/// window: it doubles each round trip until the largest window, and stays there.
#[test]
fn a_window_limited_stream_doubles_its_window_up_to_the_largest() {
    let mut p = growth_pair(1024 * 1024);
    let id = p.open_accepted(Side::Gw);
    let credits: Vec<usize> = (0..6)
        .map(|_| send_one_round(&mut p, id, 4096, Duration::ZERO))
        .collect();
    assert_eq!(
        credits,
        [64, 128, 256, 512, 1024, 1024].map(|k| k * 1024),
        "credit per round trip"
    );
    assert_eq!(
        raised_windows(&p, id),
        [128, 256, 512, 1024].map(|k| k * 1024)
    );
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
}

/// On a short path (0.1 ms) a window is never what holds a stream back at the rate
/// windows are sized for (1 Gbit/s fills 12.5 KB per round trip): releases that
/// come in bursts (a reader back from a scheduling delay) look fast, but the window
/// stays.
#[test]
fn a_fast_stream_on_a_short_path_keeps_its_window() {
    let mut p = growth_pair_rtt(1024 * 1024, Duration::from_micros(100));
    let id = p.open_accepted(Side::Gw);
    for _ in 0..4 {
        assert_eq!(send_one_round(&mut p, id, 4096, Duration::ZERO), 64 * 1024);
    }
    assert_eq!(raised_windows(&p, id), Vec::<u32>::new());
}

/// A reader that takes longer than two round trips for a window is the limit itself:
/// a larger window would only buffer more, so it stays.
#[test]
fn a_slow_reader_keeps_its_window() {
    let mut p = growth_pair(1024 * 1024);
    let id = p.open_accepted(Side::Gw);
    for _ in 0..4 {
        // 64 KiB in 16 KiB pieces 15 ms apart: 45 ms per window, over 40.
        let credit = send_one_round(&mut p, id, 16 * 1024, Duration::from_millis(15));
        assert_eq!(credit, 64 * 1024);
    }
    assert_eq!(raised_windows(&p, id), Vec::<u32>::new());
}

/// A stream that shares the connection grows only while its window is below the
/// shared cap (here 256 KiB); towards a peer below version 3 windows never grow.
#[test]
fn shared_streams_grow_to_the_cap_and_old_peers_not_at_all() {
    // Cap: 62,144 + 10 MB/s x 20 ms = 256 KiB.
    let shared = |role| outband_proto::mux::MuxConfig {
        max_window: 1024 * 1024,
        shared_window: 62_144,
        shared_rate: 10_000_000,
        ..cfg(role)
    };
    let pair = Pair::with(shared(Role::Gateway), shared(Role::Agent));
    let mut p = with_agent_rtt(pair, Duration::from_millis(20));
    let id = p.open_accepted(Side::Gw);
    let _console = p.open_accepted(Side::Ag);
    let credits: Vec<usize> = (0..5)
        .map(|_| send_one_round(&mut p, id, 4096, Duration::ZERO))
        .collect();
    assert_eq!(credits, [64, 128, 256, 256, 256].map(|k| k * 1024));
    assert_eq!(raised_windows(&p, id), [128, 256].map(|k| k * 1024));

    let old = cfg(Role::Agent).for_peer_version(2);
    assert_eq!(old.max_window, 0);
    let old_peer = outband_proto::mux::MuxConfig {
        max_window: 1024 * 1024,
        ..cfg(Role::Agent)
    }
    .for_peer_version(2);
    let pair = Pair::with(cfg(Role::Gateway), old_peer);
    let mut p = with_agent_rtt(pair, Duration::from_millis(20));
    let id = p.open_accepted(Side::Gw);
    for _ in 0..4 {
        assert_eq!(send_one_round(&mut p, id, 4096, Duration::ZERO), 64 * 1024);
    }
    assert_eq!(raised_windows(&p, id), Vec::<u32>::new());
}

#[test]
fn a_raised_window_must_not_shrink_or_pass_the_limit() {
    let w = |window| {
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 1,
            increment: 0,
            window,
        }))
    };
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![w(1000)], "below its window of 65536");
    let (m, now) = agent_with_stream();
    let over = outband_proto::mux::MAX_WINDOW + 1;
    assert_protocol_error(m, now, vec![w(over)], "over 16777216");
    // Raising it is fine, and the credit may then grow up to the new window.
    let (mut m, now) = agent_with_stream();
    m.handle_frame(w(1 << 20), now).unwrap();
    m.handle_frame(
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 1,
            increment: (1 << 20) - 65536,
            window: 0,
        })),
        now,
    )
    .unwrap();
    assert_eq!(m.send_capacity(1), 1 << 20);
}

fn is_heartbeat(f: &Frame, reply: bool) -> bool {
    matches!(&f.kind, Some(Kind::Heartbeat(h)) if h.reply == reply)
}

#[test]
fn silence_for_three_intervals_is_dead() {
    let now = Instant::now();
    let mut m = Mux::new(cfg(Role::Gateway), now);
    let interval = Duration::from_secs(5);
    m.handle_timeout(now + interval).unwrap();
    m.handle_timeout(now + 2 * interval).unwrap();
    m.handle_timeout(now + 3 * interval - Duration::from_millis(1))
        .unwrap();
    assert_eq!(m.poll_timeout(), Some(now + 3 * interval));
    let err = m.handle_timeout(now + 3 * interval).unwrap_err();
    assert_eq!(err, ConnError::Dead(3 * interval));
    assert_eq!(m.close_reason(), Some(&err));
    assert_eq!(m.poll_timeout(), None);
    assert!(matches!(
        m.poll_transmit().and_then(|f| f.kind),
        Some(Kind::GoAway(_))
    ));
}

#[test]
fn any_frame_keeps_the_peer_alive() {
    let now = Instant::now();
    let mut m = Mux::new(cfg(Role::Gateway), now);
    let hb = || {
        frame(Kind::Heartbeat(pb::Heartbeat {
            seq: 1,
            reply: true,
        }))
    };
    for i in 1..=20u32 {
        let t = now + Duration::from_secs(4) * i;
        m.handle_frame(hb(), t).unwrap();
        m.handle_timeout(t).unwrap();
    }
}

// ---------------------------------------------------------------- connection close

#[test]
fn close_connection_sends_go_away_and_the_peer_sees_it() {
    let mut p = Pair::new();
    let id = p.open_accepted(Side::Gw);
    p.gw.mux.close_connection("maintenance");
    assert_eq!(p.gw.mux.stream_count(), 0);
    assert_eq!(p.gw.mux.send(id, b"x"), Err(StreamError::ConnectionClosed));
    p.drive();
    assert_eq!(
        p.ag.error,
        Some(ConnError::GoAway(
            "connection closed locally: maintenance".into()
        ))
    );
    assert!(!p.ag.mux.has_transmit(), "nothing is sent after a GoAway");
    assert_eq!(p.ag.mux.stream_count(), 0);
}

// ---------------------------------------------------------------- hostile peer

fn frame(kind: Kind) -> Frame {
    Frame { kind: Some(kind) }
}

fn data(id: u32, bytes: &[u8], fin: bool) -> Frame {
    frame(Kind::Data(pb::StreamData {
        stream_id: id,
        data: Bytes::copy_from_slice(bytes),
        fin,
    }))
}

fn open(id: u32) -> Frame {
    frame(Kind::Open(pb::StreamOpen {
        stream_id: id,
        kind: StreamKind::Tcp as i32,
        target: "t".into(),
        initial_window: 0,
        auth: None,
    }))
}

/// An agent-side multiplexer with stream 1 (opened by the "gateway") accepted.
fn agent_with_stream() -> (Mux, Instant) {
    let now = Instant::now();
    let mut m = Mux::new(cfg(Role::Agent), now);
    m.handle_frame(open(1), now).unwrap();
    m.accept(1).unwrap();
    while m.poll_event().is_some() {}
    while m.poll_transmit().is_some() {}
    (m, now)
}

/// Feeds `frames`; the last must fail the connection with a reason containing `why`.
fn assert_protocol_error(mut m: Mux, now: Instant, frames: Vec<Frame>, why: &str) {
    let n = frames.len();
    for (i, f) in frames.into_iter().enumerate() {
        let res = m.handle_frame(f, now);
        if i + 1 < n {
            res.unwrap_or_else(|e| panic!("frame {i} failed early: {e}"));
            continue;
        }
        match res {
            Err(ConnError::Protocol(reason)) => {
                assert!(reason.contains(why), "reason {reason:?} lacks {why:?}")
            }
            other => panic!("expected a protocol error ({why}), got {other:?}"),
        }
    }
    // The GoAway tells the peer why, and nothing else goes out.
    match m.poll_transmit().and_then(|f| f.kind) {
        Some(Kind::GoAway(g)) => assert!(g.reason.contains(why), "{g:?}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert!(m.poll_transmit().is_none());
    assert_eq!(m.stream_count(), 0);
    // The connection stays failed.
    assert!(m.handle_frame(data(1, b"x", false), now).is_err());
    assert_eq!(m.send(1, b"x"), Err(StreamError::ConnectionClosed));
}

#[test]
fn data_on_unknown_stream() {
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![data(9, b"x", false)], "unknown stream 9");
}

#[test]
fn data_after_fin() {
    let (mut m, now) = agent_with_stream();
    m.handle_frame(data(1, b"a", true), now).unwrap();
    assert_protocol_error(m, now, vec![data(1, b"b", false)], "after fin");
}

#[test]
fn data_after_fin_on_a_reaped_stream() {
    let (mut m, now) = agent_with_stream();
    m.finish(1).unwrap();
    while m.poll_transmit().is_some() {}
    m.handle_frame(data(1, b"a", true), now).unwrap();
    assert_eq!(m.stream_count(), 0, "both fins: reaped");
    assert_protocol_error(m, now, vec![data(1, b"b", false)], "closed stream 1");
}

#[test]
fn data_after_the_peers_own_close() {
    let (mut m, now) = agent_with_stream();
    let close = frame(Kind::Close(pb::StreamClose {
        stream_id: 1,
        code: CloseCode::Normal as i32,
        message: String::new(),
    }));
    m.handle_frame(close, now).unwrap();
    assert_protocol_error(m, now, vec![data(1, b"b", false)], "closed stream 1");
}

#[test]
fn duplicate_open() {
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![open(1)], "duplicate or reused stream id 1");
}

#[test]
fn reused_lower_id() {
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![open(7), open(5)], "reused stream id 5");
}

#[test]
fn wrong_parity_open() {
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![open(2)], "wrong parity");
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![open(0)], "wrong parity");
}

#[test]
fn data_exceeding_window() {
    let (mut m, now) = agent_with_stream();
    let window = m.config().initial_window as usize;
    m.handle_frame(data(1, &vec![0; window - 10], false), now)
        .unwrap();
    assert_protocol_error(
        m,
        now,
        vec![data(1, &[0; 11], false)],
        "exceeded its window",
    );
}

#[test]
fn data_before_accept() {
    let now = Instant::now();
    let m = Mux::new(cfg(Role::Agent), now);
    assert_protocol_error(
        m,
        now,
        vec![open(1), data(1, b"x", false)],
        "before it was accepted",
    );
}

#[test]
fn hello_after_handshake() {
    let (m, now) = agent_with_stream();
    let hello = outband_proto::handshake::hello("0.1.0", "ABCD-EFGH", 65536);
    assert_protocol_error(m, now, vec![hello], "hello after the handshake");
    let (m, now) = agent_with_stream();
    let ack = frame(Kind::HelloAck(pb::HelloAck::default()));
    assert_protocol_error(m, now, vec![ack], "hello after the handshake");
}

#[test]
fn window_update_beyond_the_granted_window() {
    let (m, now) = agent_with_stream();
    let w = |inc| {
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 1,
            increment: inc,
            window: 0,
        }))
    };
    // Stream 1's credit starts at the peer's initial window (64 KiB), all of it
    // unused: an honest peer cannot grant more.
    assert_protocol_error(m, now, vec![w(1)], "beyond its window of 65536");
    let (m, now) = agent_with_stream();
    assert_protocol_error(m, now, vec![w(u32::MAX)], "beyond its window");
}

#[test]
fn accept_or_open_with_an_oversized_window() {
    let now = Instant::now();
    let mut gw = Mux::new(cfg(Role::Gateway), now);
    let id = gw.open(StreamKind::Tcp, "x:1").unwrap();
    let accept = frame(Kind::Accept(pb::StreamAccept {
        stream_id: id,
        initial_window: outband_proto::mux::MAX_WINDOW + 1,
    }));
    assert_protocol_error(gw, now, vec![accept], "at most");

    let (m, now) = agent_with_stream();
    let open = frame(Kind::Open(pb::StreamOpen {
        stream_id: 3,
        kind: StreamKind::Tcp as i32,
        target: "x:1".into(),
        initial_window: u32::MAX,
        auth: None,
    }));
    assert_protocol_error(m, now, vec![open], "at most");
}

#[test]
fn accept_for_a_stream_we_did_not_open() {
    let (m, now) = agent_with_stream();
    let acc = frame(Kind::Accept(pb::StreamAccept {
        stream_id: 1,
        initial_window: 1,
    }));
    assert_protocol_error(m, now, vec![acc], "not opening");
}

#[test]
fn control_flood_without_reading_fails_the_connection() {
    let (mut m, now) = agent_with_stream();
    let hb = frame(Kind::Heartbeat(pb::Heartbeat {
        seq: 1,
        reply: false,
    }));
    let mut failed = None;
    for i in 0..100_000 {
        if let Err(e) = m.handle_frame(hb.clone(), now) {
            failed = Some((i, e));
            break;
        }
    }
    let (i, err) = failed.expect("a heartbeat flood must be cut off");
    assert!(i < 10_000, "accepted {i} unanswered heartbeats");
    assert!(matches!(err, ConnError::Protocol(r) if r.contains("floods")));
}

#[test]
fn too_many_streams_is_refused_and_the_connection_survives() {
    let mut ag = cfg(Role::Agent);
    ag.max_streams = 2;
    let mut p = Pair::with(cfg(Role::Gateway), ag);
    let a = p.open_accepted(Side::Gw);
    let _b = p.open_accepted(Side::Gw);
    let c = p.gw.mux.open(StreamKind::Tcp, "t").unwrap();
    p.drive();
    let evs = p.events(Side::Gw);
    assert!(
        matches!(evs.as_slice(), [Event::Refused { id, code: RefuseCode::TooManyStreams, .. }] if *id == c),
        "{evs:?}"
    );
    assert!(
        p.events(Side::Ag).is_empty(),
        "the agent's app never saw stream {c}"
    );
    // The connection still carries data.
    p.gw.mux.send(a, b"still here").unwrap();
    p.drive();
    assert_eq!(p.read_all(Side::Ag, a), b"still here");
    assert!(p.gw.error.is_none() && p.ag.error.is_none());
    // And once a stream ends, a new one fits again.
    p.gw.mux.close(a, CloseCode::Normal, "");
    p.drive();
    p.open_accepted(Side::Gw);
}

#[test]
fn requests_and_replies() {
    let mut p = Pair::new();
    let rid =
        p.gw.mux
            .request(pb::request::Body::AgentInfo(pb::AgentInfoRequest {}))
            .unwrap();
    p.drive();
    let evs = p.events(Side::Ag);
    let [Event::Request(req)] = evs.as_slice() else {
        panic!("{evs:?}")
    };
    assert_eq!(req.request_id, rid);
    let info = pb::AgentInfoReply {
        agent_version: "0.1.0".into(),
        uptime_ms: 5,
        addresses: vec![],
    };
    p.ag.mux
        .reply(rid, pb::reply::Body::AgentInfo(info.clone()));
    p.drive();
    assert_eq!(
        p.events(Side::Gw),
        vec![Event::Reply(pb::Reply {
            request_id: rid,
            body: Some(pb::reply::Body::AgentInfo(info))
        })]
    );
}

#[test]
fn open_and_request_floods_without_reading_fail_the_connection() {
    // The peer opens streams the application refuses, and sends requests it
    // answers, but never reads the refusals and replies.
    let now = Instant::now();
    let mut m = Mux::new(cfg(Role::Agent), now);
    let mut failed = None;
    for i in 0..100_000u32 {
        let id = 2 * i + 1;
        if let Err(e) = m.handle_frame(open(id), now) {
            failed = Some(e);
            break;
        }
        while m.poll_event().is_some() {}
        m.refuse(id, RefuseCode::Forbidden, "no").unwrap();
    }
    assert!(matches!(failed, Some(ConnError::Protocol(r)) if r.contains("floods")));

    let mut m = Mux::new(cfg(Role::Agent), now);
    let req = |id| {
        frame(Kind::Request(pb::Request {
            request_id: id,
            body: Some(pb::request::Body::AgentInfo(pb::AgentInfoRequest {})),
        }))
    };
    let mut failed = None;
    for id in 0..100_000u64 {
        if let Err(e) = m.handle_frame(req(id), now) {
            failed = Some(e);
            break;
        }
        while m.poll_event().is_some() {}
        m.reply(id, pb::reply::Body::Error(pb::ErrorReply::default()));
    }
    assert!(matches!(failed, Some(ConnError::Protocol(r)) if r.contains("floods")));
}

#[test]
fn a_close_the_peer_never_acknowledges_is_forgotten() {
    let (mut m, mut now) = agent_with_stream();
    m.close(1, CloseCode::Normal, "done");
    assert_eq!(
        m.stream_count(),
        1,
        "the id is kept until the peer acknowledges"
    );
    let interval = Duration::from_secs(5);
    let heartbeat = || {
        frame(Kind::Heartbeat(pb::Heartbeat {
            seq: 1,
            reply: true,
        }))
    };
    // The peer stays alive (heartbeats arrive) but never answers the close.
    for _ in 0..6 {
        now += interval;
        m.handle_frame(heartbeat(), now).unwrap();
        m.handle_timeout(now).unwrap();
    }
    assert_eq!(
        m.stream_count(),
        0,
        "an unacknowledged close holds its slot forever"
    );
    // Late frames for the forgotten id: control frames are ignored as for any used id.
    m.handle_frame(
        frame(Kind::Window(pb::WindowUpdate {
            stream_id: 1,
            increment: 10,
            window: 0,
        })),
        now,
    )
    .unwrap();
}

// ---------------------------------------------------------------- memory

#[test]
fn tables_and_queues_shrink_only_when_mostly_empty() {
    use outband_proto::mux::{ShrinkIfSparse, slack};
    use std::collections::{HashMap, VecDeque};

    let mut map: HashMap<u32, [u8; 64]> = (0..1000).map(|i| (i, [0; 64])).collect();
    map.retain(|k, _| *k < 10);
    let grown = map.capacity();
    assert!(grown >= 1000);
    map.shrink_if_sparse();
    assert!(
        map.capacity() < grown && map.capacity() >= 10,
        "{}",
        map.capacity()
    );
    assert_eq!(map.len(), 10, "nothing lost");
    // A table in use keeps its room.
    let mut busy: HashMap<u32, u8> = (0..100).map(|i| (i, 0)).collect();
    let cap = busy.capacity();
    busy.shrink_if_sparse();
    assert_eq!(busy.capacity(), cap);

    let mut q: VecDeque<u64> = (0..4096).collect();
    q.drain(..4090);
    q.shrink_if_sparse();
    assert!(q.capacity() <= slack(q.len()), "{}", q.capacity());
    assert_eq!(
        q.iter().copied().collect::<Vec<_>>(),
        (4090..4096).collect::<Vec<_>>()
    );
    let mut empty: VecDeque<u64> = VecDeque::with_capacity(1024);
    empty.shrink_if_sparse();
    assert_eq!(empty.capacity(), 0, "an empty queue gives back everything");
}

#[test]
fn shrink_idle_keeps_live_streams_working() {
    let mut p = Pair::new();
    let ids: Vec<u32> = (0..15).map(|_| p.open_accepted(Side::Gw)).collect();
    for id in &ids[1..] {
        p.gw.mux.close(*id, CloseCode::Cancelled, "burst over");
    }
    p.drive();
    p.gw.mux.shrink_idle();
    p.ag.mux.shrink_idle();
    assert_eq!(p.gw.mux.stream_count(), 1);
    assert_eq!(p.gw.mux.send(ids[0], b"still here").unwrap(), 10);
    p.drive();
    assert_eq!(p.read_all(Side::Ag, ids[0]), b"still here");
}
