//! Sans-IO stream multiplexer.
//!
//! One [`Mux`] per agent connection. Frames that arrive go into
//! [`Mux::handle_frame`]; the application opens, accepts, writes, releases and closes
//! streams through methods; [`Mux::poll_transmit`] yields the frames to send and
//! [`Mux::poll_event`] what happened. Time goes in through [`Mux::handle_timeout`]
//! and [`Mux::poll_timeout`] tells when to call it.
//!
//! Flow control is per stream and credit based: a receiver grants a window (bytes it
//! is ready to buffer) and re-grants bytes with `WindowUpdate` once the application
//! [`released`](Mux::release) them. A sender never queues more than its credit, so the
//! memory held per stream on either side is bounded by the window, and a stream whose
//! consumer is slow stops only itself. Data frames of different streams are
//! interleaved round robin in chunks of at most `max_chunk` bytes, and control frames
//! (window updates, heartbeats, opens, closes) go before any queued data.
//!
//! Stream lifecycle: `Open` → `Accept` | `Refuse`; then `Data`* (the last may carry
//! `fin`, a half-close); `Close` aborts both directions and is acknowledged by a
//! `Close` from the peer, after which the id is forgotten. Ids are never reused:
//! the gateway opens odd ids, the agent even ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::pb::{
    self, CloseCode, Frame, GoAway, Heartbeat, InventoryReport, RefuseCode, StreamKind, frame,
};

/// Which end of the connection this is. Determines stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids.
    Gateway,
    /// Opens even stream ids.
    Agent,
}

/// Tunables for one connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// This end's role.
    pub role: Role,
    /// The receive window this end grants per stream.
    pub initial_window: u32,
    /// The receive window the peer granted per stream (from the hello exchange); used
    /// for streams the peer opens.
    pub peer_initial_window: u32,
    /// Most streams open at once (both directions together).
    pub max_streams: usize,
    /// Most payload bytes in one data frame. Clamped to
    /// `1..=`[`MAX_CHUNK`] so a data frame always fits the codec's default maximum.
    pub max_chunk: usize,
    /// Interval between heartbeats (at least 1 ms).
    pub heartbeat_interval: Duration,
    /// The peer is dead after this many intervals without any frame from it (at
    /// least 1).
    pub dead_after_intervals: u32,
    /// While the connection carries more than one stream, the most bytes one stream
    /// may have unacknowledged (queued here, in flight, or not yet released by the
    /// peer), however large its window. All streams share one TCP connection, so a
    /// stream's bytes wait behind every byte queued ahead of them in both kernels:
    /// a bulk stream with its full window in flight holds a keystroke back by a
    /// window's worth of transfer. A lone stream still uses its whole window.
    /// The cap grows by what [`shared_rate`](Self::shared_rate) fills in one idle
    /// round trip of the connection (measured with heartbeats), so on a long path
    /// it gets out of the way of throughput: a queue builds up only where the cap
    /// exceeds what the path holds. Clamped to at least 1 KiB; at or above the
    /// window it changes nothing. 0 turns the cap off, as it must be towards a peer
    /// that speaks protocol version 1 (see [`MuxConfig::for_peer_version`]).
    pub shared_window: u32,
    /// The rate, in bytes per second, one stream is sized for: the shared window
    /// grows by it times the idle round trip, and a lone stream's window grows (see
    /// [`max_window`](Self::max_window)) only while it is below twice what this
    /// rate fills in a round trip.
    pub shared_rate: u64,
    /// The largest receive window a stream grows to. A lone stream whose receiver
    /// releases a whole window within two idle round trips of the connection is
    /// held back by its window, not by the path or the application: its window
    /// doubles (sent with the next grant), up to this, and only while it is below
    /// twice what [`shared_rate`](Self::shared_rate) fills in a round trip: on a
    /// short path the window is not what limits a stream (bursts of releases after
    /// a scheduling delay look fast there, and a grown window would only queue
    /// bytes ahead of other streams). A slow consumer releases slowly and never
    /// grows its window, so the bytes buffered per stream stay bounded by what the
    /// application keeps up with. While streams share the connection a window grows
    /// only while it is below the shared cap. At or below
    /// [`initial_window`](Self::initial_window) windows stay fixed, as they must
    /// towards a peer below protocol version 3.
    pub max_window: u32,
}

/// Largest `max_chunk`: a data frame with this much payload still fits in
/// [`DEFAULT_MAX_FRAME_LEN`](crate::codec::DEFAULT_MAX_FRAME_LEN) with room for its
/// fields.
pub const MAX_CHUNK: usize = crate::codec::DEFAULT_MAX_FRAME_LEN - 64;

/// Largest per-stream window a peer may grant (16 MiB, as in the hello).
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;

/// Most frames the peer may make us queue as answers (heartbeat replies, close
/// acknowledgements, refusals) while it does not read what we send. Beyond that the
/// peer is flooding us (the HTTP/2 "ping flood" pattern) and the connection fails.
const MAX_QUEUED_CONTROL: usize = 4096;

impl MuxConfig {
    /// Defaults for `role`: 256 KiB windows (while streams share the connection,
    /// 32 KiB unacknowledged per stream plus 1 Gbit/s times the idle round trip),
    /// 1024 streams, 32 KiB chunks, 5 s heartbeats, dead after 3 silent intervals.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            initial_window: 256 * 1024,
            peer_initial_window: 256 * 1024,
            max_streams: 1024,
            max_chunk: 32 * 1024,
            heartbeat_interval: Duration::from_secs(5),
            dead_after_intervals: 3,
            shared_window: DEFAULT_SHARED_WINDOW,
            shared_rate: DEFAULT_SHARED_RATE,
            max_window: DEFAULT_MAX_WINDOW,
        }
    }
}

impl MuxConfig {
    /// This configuration for a connection whose hello settled on protocol
    /// `version`: towards a version-1 peer the shared window is off, because that
    /// peer grants credit only once a quarter of its window is released and a sender
    /// capped below that would stall (see [`crate::SHARED_WINDOW_VERSION`]).
    /// Windows stay fixed towards a peer below version 3 (it would count the raised
    /// credit as a violation, see [`crate::WINDOW_GROWTH_VERSION`]).
    #[must_use]
    pub fn for_peer_version(mut self, version: u32) -> Self {
        if version < crate::SHARED_WINDOW_VERSION {
            self.shared_window = 0;
        }
        if version < crate::WINDOW_GROWTH_VERSION {
            self.max_window = 0;
        }
        self
    }
}

/// Default [`MuxConfig::max_window`]: 8 MiB, a stream's worth of 1.3 Gbit/s over a
/// 50 ms round trip.
pub const DEFAULT_MAX_WINDOW: u32 = 8 * 1024 * 1024;

/// Default [`MuxConfig::shared_window`].
pub const DEFAULT_SHARED_WINDOW: u32 = 32 * 1024;

/// Default [`MuxConfig::shared_rate`]: 1 Gbit/s.
pub const DEFAULT_SHARED_RATE: u64 = 125_000_000;

/// Round-trip samples [`Mux`] keeps; the smallest of them is the idle round trip.
const RTT_SAMPLES: usize = 8;

/// An empty slot in [`Mux`]'s round-trip samples.
const NO_SAMPLE: u32 = u32::MAX;

/// Smallest [`MuxConfig::shared_window`].
const MIN_SHARED_WINDOW: u32 = 1024;

/// Identifies a stream on one connection.
pub type StreamId = u32;

/// Something the application must know about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer asks to open a stream; answer with [`Mux::accept`] or [`Mux::refuse`].
    Opened {
        /// Stream id.
        id: StreamId,
        /// What kind of stream.
        kind: StreamKind,
        /// The requested endpoint.
        target: String,
        /// Credentials for the endpoint, if the opener sent any.
        auth: Option<Box<pb::BmcAuth>>,
    },
    /// A stream we opened was accepted.
    Accepted {
        /// Stream id.
        id: StreamId,
    },
    /// A stream we opened was refused; the id is gone.
    Refused {
        /// Stream id.
        id: StreamId,
        /// Why.
        code: RefuseCode,
        /// Human-readable reason.
        message: String,
        /// Stable machine-readable detail (e.g. `bmc_auth_failed`); may be empty.
        error_code: String,
    },
    /// Payload arrived. Call [`Mux::release`] once it has been consumed.
    Data {
        /// Stream id.
        id: StreamId,
        /// The bytes.
        data: Bytes,
    },
    /// The peer will send no more data on this stream.
    Finished {
        /// Stream id.
        id: StreamId,
    },
    /// Send credit became available on a stream whose last write was cut short.
    Writable {
        /// Stream id.
        id: StreamId,
    },
    /// The peer closed (aborted) the stream; the id is gone.
    Closed {
        /// Stream id.
        id: StreamId,
        /// Why.
        code: CloseCode,
        /// Human-readable reason.
        message: String,
    },
    /// A unary request from the peer; answer with [`Mux::reply`].
    Request(pb::Request),
    /// A reply to one of our requests.
    Reply(pb::Reply),
    /// The peer's inventory.
    Inventory(InventoryReport),
}

/// The connection must be closed. A `GoAway` explaining it has been queued where it
/// makes sense; flush [`Mux::poll_transmit`] before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer said goodbye.
    #[error("peer went away: {0}")]
    GoAway(String),
    /// Nothing arrived for too long.
    #[error("peer silent for {0:?} (heartbeat timeout)")]
    Dead(Duration),
    /// We closed the connection.
    #[error("connection closed locally: {0}")]
    Closed(String),
    /// The transport failed or ended without a `GoAway`.
    #[error("transport: {0}")]
    Transport(String),
}

/// An operation on one stream failed; the connection is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No such stream (never opened, or already closed).
    #[error("no such stream {0}")]
    Unknown(StreamId),
    /// The stream is not accepted yet, or was already finished for writing.
    #[error("stream {0} is not writable")]
    NotWritable(StreamId),
    /// Too many streams are open.
    #[error("too many open streams (max {0})")]
    TooMany(usize),
    /// The connection is closed.
    #[error("connection closed")]
    ConnectionClosed,
}

#[derive(Debug)]
struct Stream {
    /// Opened by us and not answered yet.
    pending_accept: bool,
    /// Opened by the peer and not answered by us yet.
    awaiting_our_answer: bool,
    /// We sent Close and wait for the peer's Close to forget the id.
    closing: bool,
    /// First heartbeat tick that saw the stream closing; a peer that has not
    /// acknowledged the close a few intervals later never will, and the id is dropped
    /// so it does not hold a stream slot forever.
    closing_since: Option<Instant>,
    /// Bytes we may still accept into the send queue.
    send_credit: u64,
    /// The window the peer granted for this stream: credit never exceeds it for an
    /// honest peer, so more is a violation (and would let us queue without bound).
    send_window: u64,
    send_queue: VecDeque<Bytes>,
    send_queued: usize,
    fin_requested: bool,
    fin_sent: bool,
    write_blocked: bool,
    /// Bytes the peer may still send before our next WindowUpdate.
    recv_remaining: u64,
    /// Released bytes not yet re-granted.
    recv_to_grant: u64,
    recv_window: u32,
    /// When this stream's current window-growth epoch began (its first grant after
    /// the last check), and how much it has granted since.
    tune_since: Option<Instant>,
    tune_granted: u64,
    recv_fin: bool,
    /// The application let go of the stream after finishing it: deliver the queued
    /// data and fin, drop incoming data, then close unless the peer finished too.
    detached: bool,
}

impl Stream {
    /// Bytes that may be queued now: the credit, and while streams share the
    /// connection (`cap`), no more than brings the unacknowledged bytes to `cap`.
    fn usable_credit(&self, cap: Option<u64>) -> u64 {
        match cap {
            None => self.send_credit,
            Some(cap) => {
                let unacked = self.send_window.saturating_sub(self.send_credit);
                self.send_credit.min(cap.saturating_sub(unacked))
            }
        }
    }

    /// The window update due now, if any. Updates are batched: one goes out once a
    /// quarter of the window was released (of the cap while streams share the
    /// connection, see [`MuxConfig::shared_window`]), or once everything the peer
    /// sent is released and the peer can send no more: its window is used up, or
    /// streams share the connection and the peer may be held at its own cap, which
    /// may be smaller than ours.
    fn take_grant(
        &mut self,
        id: StreamId,
        cap: Option<u64>,
        growth: Option<Growth>,
    ) -> Option<Frame> {
        let window = u64::from(self.recv_window);
        let outstanding = window.saturating_sub(self.recv_remaining);
        let grant = self.recv_to_grant.min(outstanding);
        let quantum = cap.map_or(window, |c| c.min(window)) / 4;
        let caught_up = grant == outstanding && (self.recv_remaining == 0 || cap.is_some());
        if grant == 0 || grant < quantum && !caught_up {
            return None;
        }
        self.recv_remaining += grant;
        self.recv_to_grant -= grant;
        // A stream sharing the connection is held by the shared cap once its window
        // reaches it: it grows only while the window is below the cap (a long
        // path, where the cap has grown with the round trip).
        let raised = growth
            .filter(|_| cap.is_none_or(|c| u64::from(self.recv_window) < c))
            .and_then(|g| self.grow(grant, g));
        let raise = raised.map_or(0, |w| {
            let raise = w - self.recv_window;
            self.recv_window = w;
            self.recv_remaining += u64::from(raise);
            raise
        });
        Some(Frame {
            kind: Some(frame::Kind::Window(pb::WindowUpdate {
                stream_id: id,
                increment: u32::try_from(grant + u64::from(raise)).unwrap_or(u32::MAX),
                window: raised.unwrap_or(0),
            })),
        })
    }

    /// Counts `granted` bytes into the growth epoch; once a whole window was granted,
    /// returns the doubled window if that took less than two round trips (the
    /// sender moved a window per round trip: the window held it back), and starts a
    /// new epoch.
    fn grow(&mut self, granted: u64, g: Growth) -> Option<u32> {
        let since = *self.tune_since.get_or_insert(g.now);
        self.tune_granted += granted;
        if self.tune_granted < u64::from(self.recv_window) {
            return None;
        }
        self.tune_since = Some(g.now);
        self.tune_granted = 0;
        let fast = g.now.saturating_duration_since(since) < 2 * g.rtt;
        (fast
            && self.recv_window < g.max_window
            && u64::from(self.recv_window) < g.worth_growing_below)
            .then(|| self.recv_window.saturating_mul(2).min(g.max_window))
    }

    fn new(recv_window: u32, send_credit: u32) -> Self {
        Self {
            pending_accept: false,
            awaiting_our_answer: false,
            closing: false,
            closing_since: None,
            send_credit: send_credit.into(),
            send_window: send_credit.into(),
            send_queue: VecDeque::new(),
            send_queued: 0,
            fin_requested: false,
            fin_sent: false,
            write_blocked: false,
            recv_remaining: recv_window.into(),
            recv_to_grant: 0,
            recv_window,
            tune_since: None,
            tune_granted: 0,
            recv_fin: false,
            detached: false,
        }
    }
}

/// What a receiver needs to grow a stream's window: the time, the connection's idle
/// round trip, the largest window, and the window below which growth may still
/// help (twice what the sized-for rate fills in a round trip).
#[derive(Debug, Clone, Copy)]
struct Growth {
    now: Instant,
    rtt: Duration,
    max_window: u32,
    worth_growing_below: u64,
}

/// The multiplexer state machine for one connection.
#[derive(Debug)]
pub struct Mux {
    cfg: MuxConfig,
    streams: HashMap<StreamId, Stream>,
    next_local_id: StreamId,
    /// Highest id the peer has opened so far.
    peer_max_id: StreamId,
    control: VecDeque<Frame>,
    /// Streams with queued data or a pending fin, served round robin.
    ready: VecDeque<StreamId>,
    in_ready: HashSet<StreamId>,
    events: VecDeque<Event>,
    last_recv: Instant,
    next_heartbeat: Instant,
    heartbeat_seq: u64,
    /// The heartbeat in flight: its seq, when it went out, and whether our send
    /// queues were nearly empty then (only such a heartbeat measures the idle path).
    heartbeat_out: Option<(u64, Instant, bool)>,
    /// Round trips of heartbeats sent while idle, in microseconds (`NO_SAMPLE`:
    /// none yet), newest at `rtt_next - 1`. Microseconds in a `u32` keep the
    /// samples at 32 bytes per connection (a gateway holds thousands).
    rtt: [u32; RTT_SAMPLES],
    rtt_next: usize,
    next_request_id: u64,
    closed: Option<ConnError>,
}

impl Mux {
    /// A new multiplexer; `now` starts the heartbeat clock.
    pub fn new(mut cfg: MuxConfig, now: Instant) -> Self {
        cfg.max_chunk = cfg.max_chunk.clamp(1, MAX_CHUNK);
        cfg.heartbeat_interval = cfg.heartbeat_interval.max(Duration::from_millis(1));
        cfg.dead_after_intervals = cfg.dead_after_intervals.max(1);
        if cfg.shared_window != 0 {
            cfg.shared_window = cfg.shared_window.max(MIN_SHARED_WINDOW);
        }
        cfg.max_window = cfg.max_window.min(MAX_WINDOW);
        let next_local_id = match cfg.role {
            Role::Gateway => 1,
            Role::Agent => 2,
        };
        Self {
            // The first heartbeat goes out at once: its round trip sizes the shared
            // window from the start.
            next_heartbeat: now,
            cfg,
            streams: HashMap::new(),
            next_local_id,
            peer_max_id: 0,
            control: VecDeque::new(),
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            events: VecDeque::new(),
            last_recv: now,
            heartbeat_seq: 0,
            heartbeat_out: None,
            rtt: [NO_SAMPLE; RTT_SAMPLES],
            rtt_next: 0,
            next_request_id: 1,
            closed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MuxConfig {
        &self.cfg
    }

    /// Gives back the memory of tables and queues that grew for a burst of streams
    /// or frames and are mostly empty now (call it now and then, e.g. on a
    /// heartbeat tick, not per frame).
    pub fn shrink_idle(&mut self) {
        self.streams.shrink_if_sparse();
        self.in_ready.shrink_if_sparse();
        self.ready.shrink_if_sparse();
        self.control.shrink_if_sparse();
        self.events.shrink_if_sparse();
        for s in self.streams.values_mut() {
            s.send_queue.shrink_if_sparse();
        }
    }

    /// Number of streams that hold an id (open, opening or closing).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<&ConnError> {
        self.closed.as_ref()
    }

    fn is_peer_id(&self, id: StreamId) -> bool {
        let odd = id % 2 == 1;
        match self.cfg.role {
            Role::Gateway => !odd,
            Role::Agent => odd,
        }
    }

    fn fail(&mut self, err: ConnError) -> ConnError {
        // Whatever was queued is moot; the GoAway tells the peer why.
        self.control.clear();
        if !matches!(err, ConnError::GoAway(_) | ConnError::Transport(_)) {
            self.control.push_back(go_away(&err.to_string()));
        }
        self.streams.clear();
        self.ready.clear();
        self.in_ready.clear();
        self.closed = Some(err.clone());
        err
    }

    /// Queues a frame the peer's input asks for (an answer). Fails if the peer
    /// keeps asking without reading the answers.
    fn push_answer(&mut self, f: Frame) -> Result<(), String> {
        self.check_backlog()?;
        self.control.push_back(f);
        Ok(())
    }

    /// Refuses more frames that need answers (also from the application: accepts,
    /// refusals, replies) while the peer leaves our answers unread.
    fn check_backlog(&self) -> Result<(), String> {
        if self.control.len() >= MAX_QUEUED_CONTROL {
            return Err(format!(
                "peer floods us with frames that need answers but does not read them \
                 ({MAX_QUEUED_CONTROL} queued)"
            ));
        }
        Ok(())
    }

    /// Fails the connection for a protocol violation found outside the multiplexer
    /// (e.g. by the frame decoder); queues a `GoAway` with the reason.
    pub fn fail_protocol(&mut self, reason: String) -> ConnError {
        match &self.closed {
            Some(err) => err.clone(),
            None => self.fail(ConnError::Protocol(reason)),
        }
    }

    /// Fails the connection because the transport broke; nothing is queued.
    pub fn fail_transport(&mut self, reason: String) -> ConnError {
        match &self.closed {
            Some(err) => err.clone(),
            None => self.fail(ConnError::Transport(reason)),
        }
    }

    /// Closes the whole connection with `reason` (queues a `GoAway`).
    pub fn close_connection(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.fail(ConnError::Closed(reason.to_owned()));
        }
    }

    /// Feeds one received frame.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<(), ConnError> {
        if let Some(err) = &self.closed {
            return Err(err.clone());
        }
        self.last_recv = now;
        let Some(kind) = frame.kind else {
            return Err(self.fail(ConnError::Protocol("frame without a kind".into())));
        };
        let res = match kind {
            frame::Kind::Heartbeat(hb) => {
                if hb.reply {
                    self.on_heartbeat_reply(hb.seq, now);
                    Ok(())
                } else {
                    self.push_answer(Frame {
                        kind: Some(frame::Kind::Heartbeat(Heartbeat {
                            seq: hb.seq,
                            reply: true,
                        })),
                    })
                }
            }
            frame::Kind::Open(open) => self.on_open(open),
            frame::Kind::Accept(acc) => self.on_accept(acc),
            frame::Kind::Refuse(r) => self.on_refuse(r),
            frame::Kind::Data(d) => self.on_data(d),
            frame::Kind::Window(w) => self.on_window(w),
            frame::Kind::Close(c) => self.on_close(c),
            frame::Kind::Request(r) => self.check_backlog().map(|()| {
                self.events.push_back(Event::Request(r));
            }),
            frame::Kind::Reply(r) => {
                self.events.push_back(Event::Reply(r));
                Ok(())
            }
            frame::Kind::Inventory(inv) => {
                self.events.push_back(Event::Inventory(inv));
                Ok(())
            }
            frame::Kind::GoAway(g) => return Err(self.fail(ConnError::GoAway(g.reason))),
            frame::Kind::Hello(_) | frame::Kind::HelloAck(_) => {
                Err("hello after the handshake".to_owned())
            }
        };
        res.map_err(|reason| self.fail(ConnError::Protocol(reason)))
    }

    /// Looks up a live stream for a frame from the peer. `Ok(None)` means the frame
    /// is for a stream we closed ourselves and is to be ignored.
    fn peer_stream(&mut self, id: StreamId, what: &str) -> Result<Option<&mut Stream>, String> {
        let used = self.was_used(id);
        match self.streams.get_mut(&id) {
            Some(s) if s.closing => Ok(None),
            Some(s) => Ok(Some(s)),
            // Control frames can cross a close or a refusal in flight: ignore them.
            None if used && what != "data" => Ok(None),
            None if used => Err(format!("data for closed stream {id}")),
            None => Err(format!("{what} for unknown stream {id}")),
        }
    }

    /// Whether `id` was ever allocated on this connection.
    fn was_used(&self, id: StreamId) -> bool {
        id != 0
            && if self.is_peer_id(id) {
                id <= self.peer_max_id
            } else {
                id < self.next_local_id
            }
    }

    /// Forgets a stream once both directions have finished.
    fn reap_if_done(&mut self, id: StreamId) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| s.fin_sent && s.recv_fin && !s.closing)
        {
            self.remove_stream(id);
        }
    }

    fn on_open(&mut self, mut open: pb::StreamOpen) -> Result<(), String> {
        let id = open.stream_id;
        if id == 0 || !self.is_peer_id(id) {
            return Err(format!("open with stream id {id} of the wrong parity"));
        }
        if id <= self.peer_max_id {
            return Err(format!("duplicate or reused stream id {id}"));
        }
        self.peer_max_id = id;
        self.check_backlog()?;
        let window = if open.initial_window == 0 {
            self.cfg.peer_initial_window
        } else {
            open.initial_window
        };
        if window > MAX_WINDOW {
            return Err(format!(
                "open for stream {id} grants a window of {window} bytes (at most {MAX_WINDOW})"
            ));
        }
        if self.streams.len() >= self.cfg.max_streams {
            return self.push_answer(Frame {
                kind: Some(frame::Kind::Refuse(pb::StreamRefuse {
                    stream_id: id,
                    code: RefuseCode::TooManyStreams as i32,
                    message: format!("at most {} streams per connection", self.cfg.max_streams),
                    error_code: String::new(),
                })),
            });
        }
        let mut s = Stream::new(self.cfg.initial_window, window);
        s.awaiting_our_answer = true;
        self.streams.insert(id, s);
        self.on_stream_added();
        self.events.push_back(Event::Opened {
            id,
            kind: StreamKind::try_from(open.kind).unwrap_or(StreamKind::Unspecified),
            target: std::mem::take(&mut open.target),
            auth: open.auth.take(),
        });
        Ok(())
    }

    fn on_accept(&mut self, acc: pb::StreamAccept) -> Result<(), String> {
        let id = acc.stream_id;
        let Some(s) = self.peer_stream(id, "accept")? else {
            return Ok(());
        };
        if !s.pending_accept {
            return Err(format!("accept for stream {id} that is not opening"));
        }
        if acc.initial_window > MAX_WINDOW {
            return Err(format!(
                "accept for stream {id} grants a window of {} bytes (at most {MAX_WINDOW})",
                acc.initial_window
            ));
        }
        s.pending_accept = false;
        s.send_credit = acc.initial_window.into();
        s.send_window = acc.initial_window.into();
        if s.send_credit > 0 {
            s.write_blocked = false;
        }
        let schedule = s.fin_requested;
        self.events.push_back(Event::Accepted { id });
        if schedule {
            self.schedule(id);
        }
        Ok(())
    }

    fn on_refuse(&mut self, r: pb::StreamRefuse) -> Result<(), String> {
        let id = r.stream_id;
        let Some(s) = self.peer_stream(id, "refuse")? else {
            // We cancelled it meanwhile; the refusal ends it as a close would.
            self.remove_stream(id);
            return Ok(());
        };
        if !s.pending_accept {
            return Err(format!("refuse for stream {id} that is not opening"));
        }
        self.remove_stream(id);
        self.events.push_back(Event::Refused {
            id,
            code: RefuseCode::try_from(r.code).unwrap_or(RefuseCode::Unspecified),
            message: r.message,
            error_code: r.error_code,
        });
        Ok(())
    }

    fn on_data(&mut self, d: pb::StreamData) -> Result<(), String> {
        let id = d.stream_id;
        if d.fin
            && self
                .streams
                .get(&id)
                .is_some_and(|s| s.closing && s.fin_sent)
        {
            // We closed after our fin went out, and now the peer's fin arrives: it has
            // both fins and forgets the stream without answering our close (or its own
            // close crosses ours), so no acknowledgement will come. Forget it too.
            self.remove_stream(id);
            return Ok(());
        }
        let Some(s) = self.peer_stream(id, "data")? else {
            return Ok(());
        };
        if s.pending_accept || s.awaiting_our_answer {
            return Err(format!("data on stream {id} before it was accepted"));
        }
        if s.recv_fin {
            return Err(format!("data on stream {id} after fin"));
        }
        let len = d.data.len() as u64;
        if len > s.recv_remaining {
            return Err(format!(
                "stream {id} exceeded its window ({len} bytes with {} left)",
                s.recv_remaining
            ));
        }
        s.recv_remaining -= len;
        s.recv_fin = d.fin;
        if !s.detached {
            if !d.data.is_empty() {
                self.events.push_back(Event::Data { id, data: d.data });
            }
            if d.fin {
                self.events.push_back(Event::Finished { id });
            }
        }
        if d.fin {
            self.reap_if_done(id);
        }
        Ok(())
    }

    fn on_window(&mut self, w: pb::WindowUpdate) -> Result<(), String> {
        let id = w.stream_id;
        let cap = self.shared_cap();
        let Some(s) = self.peer_stream(id, "window update")? else {
            return Ok(());
        };
        if w.window != 0 {
            // A raised window (version 3): never smaller, never over the limit.
            let raised = u64::from(w.window);
            if raised < s.send_window || w.window > MAX_WINDOW {
                return Err(format!(
                    "stream {id} window set to {} bytes: below its window of {} or over {MAX_WINDOW}",
                    w.window, s.send_window
                ));
            }
            s.send_window = raised;
        }
        s.send_credit = s.send_credit.saturating_add(w.increment.into());
        // Credit beyond the granted window would let us queue without bound.
        if s.send_credit > s.send_window {
            return Err(format!(
                "stream {id} credit grew to {} bytes, beyond its window of {}",
                s.send_credit, s.send_window
            ));
        }
        if s.write_blocked && s.usable_credit(cap) > 0 && !s.detached {
            s.write_blocked = false;
            self.events.push_back(Event::Writable { id });
        }
        Ok(())
    }

    fn on_close(&mut self, c: pb::StreamClose) -> Result<(), String> {
        let id = c.stream_id;
        match self.streams.get(&id) {
            Some(s) if s.closing => {
                // The acknowledgement of our own close.
                self.remove_stream(id);
                Ok(())
            }
            Some(s) => {
                let detached = s.detached;
                self.remove_stream(id);
                if !detached {
                    self.events.push_back(Event::Closed {
                        id,
                        code: CloseCode::try_from(c.code).unwrap_or(CloseCode::Unspecified),
                        message: c.message,
                    });
                }
                self.push_answer(close_frame(id, CloseCode::Normal, ""))
            }
            None if self.was_used(id) => Ok(()),
            None => Err(format!("close for unknown stream {id}")),
        }
    }

    fn remove_stream(&mut self, id: StreamId) {
        self.streams.remove(&id);
        if self.in_ready.remove(&id) {
            self.ready.retain(|r| *r != id);
        }
        if self.streams.len() == 1 {
            // The last stream no longer shares the connection: its whole window is
            // usable again.
            for (&id, s) in &mut self.streams {
                if s.write_blocked && s.send_credit > 0 && !s.detached && !s.closing {
                    s.write_blocked = false;
                    self.events.push_back(Event::Writable { id });
                }
            }
        }
    }

    /// The cap on unacknowledged bytes per stream while streams share the
    /// connection ([`MuxConfig::shared_window`] plus [`MuxConfig::shared_rate`] times
    /// the idle round trip), or `None` for a lone stream.
    fn shared_cap(&self) -> Option<u64> {
        if self.streams.len() < 2 || self.cfg.shared_window == 0 {
            return None;
        }
        let extra = self.idle_rtt().map_or(0, |rtt| self.rate_times(rtt));
        Some(u64::from(self.cfg.shared_window).saturating_add(extra))
    }

    /// What [`MuxConfig::shared_rate`] moves in `rtt`, in bytes.
    fn rate_times(&self, rtt: Duration) -> u64 {
        let bytes = u128::from(self.cfg.shared_rate) * rtt.as_nanos() / 1_000_000_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// What window growth needs now, if windows may grow and a round trip has been
    /// measured.
    fn growth(&self, now: Instant) -> Option<Growth> {
        if self.cfg.max_window <= self.cfg.initial_window {
            return None;
        }
        let rtt = self.idle_rtt()?;
        Some(Growth {
            now,
            rtt,
            max_window: self.cfg.max_window,
            worth_growing_below: self.rate_times(rtt).saturating_mul(2),
        })
    }

    /// The connection's round trip when nothing queues on it: the smallest of the
    /// recent heartbeat round trips measured while our send side was idle.
    pub fn idle_rtt(&self) -> Option<Duration> {
        let min = *self.rtt.iter().min().expect("RTT_SAMPLES > 0");
        (min != NO_SAMPLE).then(|| Duration::from_micros(min.into()))
    }

    /// Whether the bytes we have unacknowledged, over all streams, are few enough
    /// that a heartbeat sent now does not wait behind our own data.
    fn send_side_idle(&self) -> bool {
        let limit = u64::from(self.cfg.shared_window);
        let mut unacked = 0u64;
        for s in self.streams.values() {
            unacked += s.send_window.saturating_sub(s.send_credit);
            if unacked > limit {
                return false;
            }
        }
        true
    }

    fn on_heartbeat_reply(&mut self, seq: u64, now: Instant) {
        if let Some((sent_seq, at, idle)) = self.heartbeat_out
            && sent_seq == seq
        {
            self.heartbeat_out = None;
            if idle {
                let micros = now.saturating_duration_since(at).as_micros();
                self.rtt[self.rtt_next] = u32::try_from(micros).unwrap_or(NO_SAMPLE - 1);
                self.rtt_next = (self.rtt_next + 1) % RTT_SAMPLES;
            }
        }
    }

    fn schedule(&mut self, id: StreamId) {
        if self.in_ready.insert(id) {
            self.ready.push_back(id);
        }
    }

    fn live(&mut self, id: StreamId) -> Result<&mut Stream, StreamError> {
        if self.closed.is_some() {
            return Err(StreamError::ConnectionClosed);
        }
        match self.streams.get_mut(&id) {
            Some(s) if !s.closing => Ok(s),
            _ => Err(StreamError::Unknown(id)),
        }
    }

    /// Opens a stream to `target`. Wait for [`Event::Accepted`] or [`Event::Refused`].
    pub fn open(&mut self, kind: StreamKind, target: &str) -> Result<StreamId, StreamError> {
        self.open_with_auth(kind, target, None)
    }

    /// [`Mux::open`] with credentials for the endpoint (console streams).
    pub fn open_with_auth(
        &mut self,
        kind: StreamKind,
        target: &str,
        auth: Option<pb::BmcAuth>,
    ) -> Result<StreamId, StreamError> {
        if self.closed.is_some() {
            return Err(StreamError::ConnectionClosed);
        }
        if self.streams.len() >= self.cfg.max_streams {
            return Err(StreamError::TooMany(self.cfg.max_streams));
        }
        let id = self.next_local_id;
        self.next_local_id = self
            .next_local_id
            .checked_add(2)
            .ok_or(StreamError::TooMany(0))?;
        let mut s = Stream::new(self.cfg.initial_window, 0);
        s.pending_accept = true;
        self.streams.insert(id, s);
        self.on_stream_added();
        self.control.push_back(Frame {
            kind: Some(frame::Kind::Open(pb::StreamOpen {
                stream_id: id,
                kind: kind as i32,
                target: target.to_owned(),
                initial_window: self.cfg.initial_window,
                auth: auth.map(Box::new),
            })),
        });
        Ok(id)
    }

    /// Accepts a stream the peer opened.
    pub fn accept(&mut self, id: StreamId) -> Result<(), StreamError> {
        let window = self.cfg.initial_window;
        let s = self.live(id)?;
        if !s.awaiting_our_answer {
            return Err(StreamError::Unknown(id));
        }
        s.awaiting_our_answer = false;
        self.control.push_back(Frame {
            kind: Some(frame::Kind::Accept(pb::StreamAccept {
                stream_id: id,
                initial_window: window,
            })),
        });
        Ok(())
    }

    /// Refuses a stream the peer opened; the id is gone.
    pub fn refuse(
        &mut self,
        id: StreamId,
        code: RefuseCode,
        message: &str,
    ) -> Result<(), StreamError> {
        self.refuse_with_code(id, code, "", message)
    }

    /// [`Mux::refuse`] with a stable machine-readable detail (`error_code`).
    pub fn refuse_with_code(
        &mut self,
        id: StreamId,
        code: RefuseCode,
        error_code: &str,
        message: &str,
    ) -> Result<(), StreamError> {
        let s = self.live(id)?;
        if !s.awaiting_our_answer {
            return Err(StreamError::Unknown(id));
        }
        self.remove_stream(id);
        self.control.push_back(Frame {
            kind: Some(frame::Kind::Refuse(pb::StreamRefuse {
                stream_id: id,
                code: code as i32,
                message: message.to_owned(),
                error_code: error_code.to_owned(),
            })),
        });
        Ok(())
    }

    /// Bytes that [`Mux::send`] would accept now on `id`.
    pub fn send_capacity(&self, id: StreamId) -> usize {
        let cap = self.shared_cap();
        match self.streams.get(&id) {
            Some(s) if !s.closing && !s.pending_accept && !s.fin_requested => {
                usize::try_from(s.usable_credit(cap)).unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }

    /// Queues up to the stream's credit of `data`; returns how many bytes were taken.
    /// When that is less than `data.len()`, an [`Event::Writable`] follows once the
    /// peer grants more.
    pub fn send(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let cap = self.shared_cap();
        let s = self.live(id)?;
        if s.awaiting_our_answer || s.pending_accept || s.fin_requested || s.detached {
            return Err(StreamError::NotWritable(id));
        }
        let n = usize::try_from(s.usable_credit(cap))
            .unwrap_or(usize::MAX)
            .min(data.len());
        if n < data.len() {
            s.write_blocked = true;
        }
        if n > 0 {
            s.send_credit -= n as u64;
            s.send_queue.push_back(Bytes::copy_from_slice(&data[..n]));
            s.send_queued += n;
            self.schedule(id);
        }
        Ok(n)
    }

    /// Half-closes the stream: no more data from us after what is queued.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self.live(id)?;
        if s.awaiting_our_answer || s.detached {
            return Err(StreamError::NotWritable(id));
        }
        if !s.fin_requested {
            s.fin_requested = true;
            if !s.pending_accept {
                self.schedule(id);
            }
        }
        Ok(())
    }

    /// Returns `n` bytes the application consumed at `now` to the peer as credit, in
    /// batched window updates (see `Stream::take_grant`); a stream that consumes a
    /// whole window per round trip gets a larger one ([`MuxConfig::max_window`]).
    pub fn release(&mut self, id: StreamId, n: usize, now: Instant) {
        let cap = self.shared_cap();
        let growth = self.growth(now);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closing || s.recv_fin || s.detached {
            return;
        }
        s.recv_to_grant = (s.recv_to_grant + n as u64).min(u64::from(s.recv_window));
        if let Some(f) = s.take_grant(id, cap, growth) {
            self.control.push_back(f);
        }
    }

    /// Called when a stream joins: from two streams on, the connection is shared,
    /// and a peer stream that is caught up gets its released bytes back now (see
    /// [`Stream::take_grant`]), or it might wait for a release that never comes.
    fn on_stream_added(&mut self) {
        if self.streams.len() != 2 {
            return;
        }
        let cap = self.shared_cap();
        for (&id, s) in &mut self.streams {
            if !(s.closing || s.recv_fin || s.detached)
                && let Some(f) = s.take_grant(id, cap, None)
            {
                self.control.push_back(f);
            }
        }
    }

    /// Aborts a stream in both directions. The id is kept until the peer
    /// acknowledges, so frames already in flight are recognised and dropped.
    pub fn close(&mut self, id: StreamId, code: CloseCode, message: &str) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closing {
            return;
        }
        s.closing = true;
        s.send_queue.clear();
        s.send_queued = 0;
        if self.in_ready.remove(&id) {
            self.ready.retain(|r| *r != id);
        }
        self.control.push_back(close_frame(id, code, message));
    }

    /// The application let go of a stream. If it [finished](Mux::finish) the stream,
    /// the queued data and the fin are still delivered; data the peer sends meanwhile
    /// is dropped, and once the fin is out the stream is closed with `CANCELLED`
    /// unless the peer finished too (then it simply ends). Without a finish, this is
    /// [`Mux::close`] with `CANCELLED`. No more events are reported for the stream.
    pub fn detach(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closing || s.detached {
            return;
        }
        if s.fin_requested && !s.fin_sent && !s.pending_accept && !s.awaiting_our_answer {
            s.detached = true;
            return;
        }
        self.close(id, CloseCode::Cancelled, "stream handle dropped");
    }

    /// Sends a unary request; the reply arrives as [`Event::Reply`] with the returned id.
    pub fn request(&mut self, body: pb::request::Body) -> Result<u64, StreamError> {
        if self.closed.is_some() {
            return Err(StreamError::ConnectionClosed);
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.control.push_back(Frame {
            kind: Some(frame::Kind::Request(pb::Request {
                request_id: id,
                body: Some(body),
            })),
        });
        Ok(id)
    }

    /// Answers a request.
    pub fn reply(&mut self, request_id: u64, body: pb::reply::Body) {
        if self.closed.is_none() {
            self.control.push_back(Frame {
                kind: Some(frame::Kind::Reply(pb::Reply {
                    request_id,
                    body: Some(body),
                })),
            });
        }
    }

    /// Sends an inventory report.
    pub fn send_inventory(&mut self, report: InventoryReport) {
        if self.closed.is_none() {
            self.control.push_back(Frame {
                kind: Some(frame::Kind::Inventory(report)),
            });
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        free_if_idle(&mut self.events, self.streams.is_empty());
        ev
    }

    /// The next frame to send: control frames first, then data round robin.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        if let Some(f) = self.control.pop_front() {
            free_if_idle(&mut self.control, self.streams.is_empty());
            return Some(f);
        }
        while let Some(id) = self.ready.pop_front() {
            self.in_ready.remove(&id);
            let max_chunk = self.cfg.max_chunk;
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.closing || s.fin_sent || s.pending_accept {
                continue;
            }
            let data = take_chunk(s, max_chunk);
            let fin = s.fin_requested && s.send_queued == 0;
            if data.is_empty() && !fin {
                continue;
            }
            if fin {
                s.fin_sent = true;
                if s.detached && !s.recv_fin {
                    s.closing = true;
                    self.control.push_back(close_frame(
                        id,
                        CloseCode::Cancelled,
                        "stream handle dropped",
                    ));
                }
                self.reap_if_done(id);
            } else if s.send_queued > 0 || s.fin_requested {
                self.schedule(id);
            }
            return Some(Frame {
                kind: Some(frame::Kind::Data(pb::StreamData {
                    stream_id: id,
                    data,
                    fin,
                })),
            });
        }
        None
    }

    /// True if [`Mux::poll_transmit`] would return a frame.
    pub fn has_transmit(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// When [`Mux::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        Some(self.next_heartbeat.min(self.dead_deadline()))
    }

    fn dead_deadline(&self) -> Instant {
        self.last_recv + self.cfg.heartbeat_interval * self.cfg.dead_after_intervals
    }

    /// Advances the clock: sends due heartbeats, and fails the connection if the peer
    /// has been silent for too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        if let Some(err) = &self.closed {
            return Err(err.clone());
        }
        if now >= self.dead_deadline() {
            let silent = now.saturating_duration_since(self.last_recv);
            return Err(self.fail(ConnError::Dead(silent)));
        }
        if now >= self.next_heartbeat {
            self.heartbeat_seq += 1;
            self.heartbeat_out = Some((self.heartbeat_seq, now, self.send_side_idle()));
            self.control.push_back(Frame {
                kind: Some(frame::Kind::Heartbeat(Heartbeat {
                    seq: self.heartbeat_seq,
                    reply: false,
                })),
            });
            self.next_heartbeat = now + self.cfg.heartbeat_interval;
            self.expire_unacknowledged_closes(now);
        }
        Ok(())
    }

    /// Forgets streams whose close the peer has not acknowledged within the dead-peer
    /// interval (while the peer was otherwise alive).
    fn expire_unacknowledged_closes(&mut self, now: Instant) {
        let limit = self.cfg.heartbeat_interval * self.cfg.dead_after_intervals;
        let mut expired = Vec::new();
        for (id, s) in &mut self.streams {
            if !s.closing {
                continue;
            }
            match s.closing_since {
                None => s.closing_since = Some(now),
                Some(t) if now.saturating_duration_since(t) >= limit => expired.push(*id),
                Some(_) => {}
            }
        }
        for id in expired {
            self.remove_stream(id);
        }
    }
}

/// Capacity above which a collection of `len` items is shrunk: a table or queue keeps
/// room for twice what it holds (at least 8), so a steady load does not shrink and
/// grow it over and over.
pub fn slack(len: usize) -> usize {
    4 * len.max(8)
}

/// A collection that can give back capacity a burst left behind.
pub trait ShrinkIfSparse {
    /// Shrinks to twice the length if it holds far less than its capacity
    /// ([`slack`]).
    fn shrink_if_sparse(&mut self);
}

macro_rules! shrink_if_sparse {
    ($($ty:ty => [$($bound:tt)*]),* $(,)?) => {$(
        impl<$($bound)*> ShrinkIfSparse for $ty {
            fn shrink_if_sparse(&mut self) {
                if self.capacity() > slack(self.len()) {
                    self.shrink_to(2 * self.len());
                }
            }
        }
    )*};
}

shrink_if_sparse! {
    HashMap<K, V> => [K: std::hash::Hash + Eq, V],
    HashSet<T> => [T: std::hash::Hash + Eq],
    VecDeque<T> => [T],
    Vec<T> => [T],
}

/// Frees `queue` once it is empty on a connection without streams: an idle
/// connection (a gateway holds thousands) would otherwise keep room for four frames
/// or events from each heartbeat exchange.
fn free_if_idle<T>(queue: &mut VecDeque<T>, no_streams: bool) {
    if no_streams && queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

fn take_chunk(s: &mut Stream, max: usize) -> Bytes {
    let Some(front) = s.send_queue.front_mut() else {
        return Bytes::new();
    };
    if front.len() >= max {
        let chunk = front.split_to(max);
        if front.is_empty() {
            s.send_queue.pop_front();
        }
        s.send_queued -= chunk.len();
        return chunk;
    }
    if s.send_queue.len() == 1 {
        let chunk = s.send_queue.pop_front().unwrap_or_default();
        s.send_queued -= chunk.len();
        return chunk;
    }
    // Coalesce small writes into one frame.
    let mut out = BytesMut::with_capacity(max.min(s.send_queued));
    while let Some(front) = s.send_queue.front_mut() {
        let room = max - out.len();
        if room == 0 {
            break;
        }
        if front.len() <= room {
            out.extend_from_slice(front);
            s.send_queue.pop_front();
        } else {
            out.extend_from_slice(&front.split_to(room));
        }
    }
    s.send_queued -= out.len();
    out.freeze()
}

fn close_frame(id: StreamId, code: CloseCode, message: &str) -> Frame {
    Frame {
        kind: Some(frame::Kind::Close(pb::StreamClose {
            stream_id: id,
            code: code as i32,
            message: message.to_owned(),
        })),
    }
}

/// A `GoAway` frame.
pub fn go_away(reason: &str) -> Frame {
    Frame {
        kind: Some(frame::Kind::GoAway(GoAway {
            reason: reason.to_owned(),
        })),
    }
}
