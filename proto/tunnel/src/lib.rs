//! The async shell around [`outband_proto::mux::Mux`], shared by the agent (smol) and
//! the gateway (tokio).
//!
//! It depends on no runtime: the transport is any `futures_io::AsyncRead +
//! AsyncWrite` (tokio streams go through `tokio_util::compat`), and timers come from
//! a [`Timer`] the caller provides. [`Tunnel::new`] returns a cloneable handle and a
//! [`Driver`] future that the caller spawns; the driver reads, writes and ticks the
//! heartbeat clock, and ends with the reason the connection closed.
//!
//! Streams are [`Stream`]s implementing `AsyncRead + AsyncWrite`; their buffers are
//! bounded by the multiplexer's windows, so a slow consumer only stalls itself.

mod driver;
mod frames;
mod read_ahead;
mod socket;
mod stream;
mod thread_buf;

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use outband_proto::mux::{ConnError, Event, Mux, StreamError, StreamId};
use outband_proto::pb::{self, CloseCode, InventoryReport, RefuseCode, StreamKind};

pub use driver::Driver;
pub use frames::{FrameIoError, read_frame, write_frame};
pub use read_ahead::{READ_AHEAD, ReadAhead, ReadAheadBuf};
pub use socket::{NOTSENT_LOWAT, tune_tunnel_socket};
pub use stream::Stream;

/// Source of timers for the driver's heartbeat clock.
pub trait Timer: Send + Sync + 'static {
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Why opening a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The peer refused the stream.
    #[error("refused ({code:?}): {message}")]
    Refused {
        /// Refusal code.
        code: RefuseCode,
        /// Peer's reason.
        message: String,
        /// Stable machine-readable detail (e.g. `bmc_auth_failed`); may be empty.
        error_code: String,
    },
    /// The stream could not be opened locally.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The connection ended.
    #[error("connection closed: {0}")]
    Connection(ConnError),
}

/// Something the peer started.
#[derive(Debug)]
pub enum Incoming {
    /// The peer wants a stream; accept or refuse it.
    Stream(PendingStream),
    /// A unary request; answer with [`Tunnel::reply`].
    Request(pb::Request),
    /// The peer's inventory.
    Inventory(InventoryReport),
}

/// Transfer counters for one connection.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Bytes received (including headers).
    pub bytes_in: AtomicU64,
    /// Bytes sent (including headers).
    pub bytes_out: AtomicU64,
}

/// Payloads smaller than this are copied into [`RecvState::small`] instead of being
/// queued one by one, so a peer sending tiny frames cannot make the queue's per-chunk
/// overhead exceed the window many times over.
const SMALL_CHUNK: usize = 4096;
/// The coalescing buffer is moved into the queue once it holds this much.
const SMALL_BUF: usize = 16 * 1024;
/// Most streams, requests and reports queued for [`Tunnel::accept`] (or twice
/// `max_streams` if that is more) before the peer counts as flooding us.
const MAX_INCOMING: usize = 4096;

#[derive(Debug, Default)]
struct RecvState {
    /// Received payloads in order; `small` logically follows them.
    chunks: VecDeque<Bytes>,
    small: BytesMut,
    fin: bool,
    /// The peer aborted the stream.
    reset: Option<(CloseCode, String)>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

#[derive(Debug)]
enum OpenState {
    Waiting(Option<Waker>),
    Done(Result<(), OpenError>),
}

#[derive(Debug)]
struct State {
    mux: Mux,
    streams: HashMap<StreamId, RecvState>,
    opening: HashMap<StreamId, OpenState>,
    replies: HashMap<u64, (Option<Waker>, Option<pb::Reply>)>,
    incoming: VecDeque<Incoming>,
    incoming_waker: Option<Waker>,
    driver_waker: Option<Waker>,
    closed: Option<ConnError>,
    closed_wakers: Vec<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stats: Stats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the mux in a consistent state (every
        // method is all-or-nothing), so poisoning is not a reason to cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    /// Moves multiplexer events into stream buffers and queues, waking waiters.
    fn dispatch_events(&mut self) {
        while let Some(ev) = self.mux.poll_event() {
            match ev {
                Event::Opened {
                    id,
                    kind,
                    target,
                    auth,
                } => {
                    self.streams.insert(id, RecvState::default());
                    self.push_incoming(Incoming::Stream(PendingStream {
                        id,
                        kind,
                        target,
                        auth,
                        shared: None,
                    }));
                }
                Event::Accepted { id } => self.finish_open(id, Ok(())),
                Event::Refused {
                    id,
                    code,
                    message,
                    error_code,
                } => self.finish_open(
                    id,
                    Err(OpenError::Refused {
                        code,
                        message,
                        error_code,
                    }),
                ),
                Event::Data { id, data } => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.push(data);
                        wake(&mut s.read_waker);
                    }
                }
                Event::Finished { id } => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.fin = true;
                        wake(&mut s.read_waker);
                    }
                }
                Event::Writable { id } => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        wake(&mut s.write_waker);
                    }
                }
                Event::Closed { id, code, message } => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.reset = Some((code, message));
                        wake(&mut s.read_waker);
                        wake(&mut s.write_waker);
                    }
                    self.finish_open(
                        id,
                        Err(OpenError::Refused {
                            code: RefuseCode::Unspecified,
                            message: "closed while opening".into(),
                            error_code: String::new(),
                        }),
                    );
                }
                Event::Request(r) => {
                    self.push_incoming(Incoming::Request(r));
                }
                Event::Reply(r) => {
                    if let Some(slot) = self.replies.get_mut(&r.request_id) {
                        wake(&mut slot.0);
                        slot.1 = Some(r);
                    }
                }
                Event::Inventory(inv) => {
                    // Only the latest report matters: a newer one replaces one still
                    // queued, so reports (up to a frame each) cannot pile up.
                    let queued = self
                        .incoming
                        .iter_mut()
                        .find(|i| matches!(i, Incoming::Inventory(_)));
                    match queued {
                        Some(slot) => *slot = Incoming::Inventory(inv),
                        None => self.push_incoming(Incoming::Inventory(inv)),
                    }
                }
            }
        }
    }

    /// Gives back memory that a burst of streams or frames left in tables and queues.
    fn shrink_idle(&mut self) {
        use outband_proto::mux::ShrinkIfSparse;
        self.mux.shrink_idle();
        self.streams.shrink_if_sparse();
        self.opening.shrink_if_sparse();
        self.replies.shrink_if_sparse();
        self.incoming.shrink_if_sparse();
        self.closed_wakers.shrink_if_sparse();
        for s in self.streams.values_mut() {
            s.chunks.shrink_if_sparse();
            if s.small.is_empty() && s.small.capacity() > 0 {
                s.small = BytesMut::new();
            }
        }
    }

    /// Queues a request or report for [`Tunnel::accept`]; fails the connection if
    /// the peer sends them much faster than they are taken.
    fn push_incoming(&mut self, inc: Incoming) {
        let max = MAX_INCOMING.max(2 * self.mux.config().max_streams);
        if self.incoming.len() >= max {
            self.mux.fail_protocol(format!(
                "peer started more than {max} streams, requests and reports that were not taken yet"
            ));
            return;
        }
        self.incoming.push_back(inc);
        wake(&mut self.incoming_waker);
    }

    fn finish_open(&mut self, id: StreamId, res: Result<(), OpenError>) {
        if let Some(slot) = self.opening.get_mut(&id)
            && let OpenState::Waiting(w) = slot
        {
            wake(w);
            *slot = OpenState::Done(res);
        }
    }

    /// Marks the connection closed and wakes everything that waits on it.
    fn set_closed(&mut self, err: ConnError) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(err);
        for s in self.streams.values_mut() {
            wake(&mut s.read_waker);
            wake(&mut s.write_waker);
        }
        for slot in self.opening.values_mut() {
            if let OpenState::Waiting(w) = slot {
                wake(w);
            }
        }
        for (w, _) in self.replies.values_mut() {
            wake(w);
        }
        wake(&mut self.incoming_waker);
        for w in self.closed_wakers.drain(..) {
            w.wake();
        }
    }
}

impl RecvState {
    fn push(&mut self, data: Bytes) {
        if data.len() < SMALL_CHUNK {
            self.small.extend_from_slice(&data);
            if self.small.len() >= SMALL_BUF {
                self.chunks.push_back(self.small.split().freeze());
            }
        } else {
            if !self.small.is_empty() {
                self.chunks.push_back(self.small.split().freeze());
            }
            self.chunks.push_back(data);
        }
    }

    /// The first received chunk, without taking it. Coalesced small payloads
    /// become a chunk of their own first (they follow every queued chunk).
    fn front(&mut self) -> Option<Bytes> {
        if self.chunks.is_empty() && !self.small.is_empty() {
            self.chunks.push_back(self.small.split().freeze());
        }
        self.chunks.front().cloned()
    }

    /// Drops up to `n` bytes of the first chunk; returns how many.
    fn advance(&mut self, n: usize) -> usize {
        let Some(front) = self.chunks.front_mut() else {
            return 0;
        };
        let n = n.min(front.len());
        front.advance(n);
        if front.is_empty() {
            self.chunks.pop_front();
        }
        n
    }

    /// Copies received bytes into `buf`; returns how many.
    fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let (n, front_done) = if let Some(front) = self.chunks.front_mut() {
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            front.advance(n);
            (n, front.is_empty())
        } else {
            let n = self.small.len().min(buf.len());
            buf[..n].copy_from_slice(&self.small[..n]);
            self.small.advance(n);
            (n, false)
        };
        if front_done {
            self.chunks.pop_front();
        }
        n
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// A handle to one multiplexed connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tunnel {
    shared: Arc<Shared>,
}

impl Tunnel {
    /// Wraps a connected transport whose hello exchange is done. Spawn the returned
    /// driver; it ends when the connection does.
    pub fn new<IO, T>(io: IO, mux: Mux, timer: T) -> (Tunnel, Driver<IO>)
    where
        IO: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
        T: Timer,
    {
        let max_frame = outband_proto::codec::DEFAULT_MAX_FRAME_LEN;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mux,
                streams: HashMap::new(),
                opening: HashMap::new(),
                replies: HashMap::new(),
                incoming: VecDeque::new(),
                incoming_waker: None,
                driver_waker: None,
                closed: None,
                closed_wakers: Vec::new(),
            }),
            stats: Stats::default(),
        });
        let driver = Driver::new(io, shared.clone(), Box::new(timer), max_frame);
        (Tunnel { shared }, driver)
    }

    /// Opens a stream of `kind` to `target` and waits for the peer's answer.
    pub async fn open(&self, kind: StreamKind, target: &str) -> Result<Stream, OpenError> {
        self.open_with_auth(kind, target, None).await
    }

    /// [`Tunnel::open`] with credentials for the endpoint (console streams).
    pub async fn open_with_auth(
        &self,
        kind: StreamKind,
        target: &str,
        auth: Option<pb::BmcAuth>,
    ) -> Result<Stream, OpenError> {
        let id = {
            let mut st = self.shared.lock();
            if let Some(err) = &st.closed {
                return Err(OpenError::Connection(err.clone()));
            }
            let id = st.mux.open_with_auth(kind, target, auth)?;
            st.streams.insert(id, RecvState::default());
            st.opening.insert(id, OpenState::Waiting(None));
            st.wake_driver();
            id
        };
        // If this future is dropped before the answer, the guard cancels the stream.
        let mut guard = Some(Stream::new(id, self.shared.clone()));
        let res = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(err) = &st.closed {
                return Poll::Ready(Err(OpenError::Connection(err.clone())));
            }
            match st.opening.get_mut(&id) {
                Some(OpenState::Waiting(w)) => {
                    *w = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(OpenState::Done(_)) => match st.opening.remove(&id) {
                    Some(OpenState::Done(res)) => Poll::Ready(res),
                    _ => unreachable!("checked above"),
                },
                None => Poll::Ready(Err(OpenError::Stream(StreamError::Unknown(id)))),
            }
        })
        .await;
        match res {
            Ok(()) => Ok(guard.take().expect("guard is set until here")),
            Err(e) => {
                if let Some(s) = guard.take() {
                    s.forget();
                }
                Err(e)
            }
        }
    }

    /// The next stream, request or report the peer started; `None` once the
    /// connection has closed.
    pub async fn accept(&self) -> Option<Incoming> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(mut inc) = st.incoming.pop_front() {
                if let Incoming::Stream(p) = &mut inc {
                    p.shared = Some(self.shared.clone());
                }
                return Poll::Ready(Some(inc));
            }
            if st.closed.is_some() {
                return Poll::Ready(None);
            }
            st.incoming_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends a unary request and waits for its reply.
    pub async fn request(&self, body: pb::request::Body) -> Result<pb::Reply, ConnError> {
        let id = {
            let mut st = self.shared.lock();
            if let Some(err) = &st.closed {
                return Err(err.clone());
            }
            let id = st
                .mux
                .request(body)
                .map_err(|e| ConnError::Closed(e.to_string()))?;
            st.replies.insert(id, (None, None));
            st.wake_driver();
            id
        };
        let shared = self.shared.clone();
        let _cleanup = OnDrop(move || {
            shared.lock().replies.remove(&id);
        });
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(slot) = st.replies.get_mut(&id) {
                if let Some(reply) = slot.1.take() {
                    return Poll::Ready(Ok(reply));
                }
                slot.0 = Some(cx.waker().clone());
            }
            if let Some(err) = &st.closed {
                return Poll::Ready(Err(err.clone()));
            }
            Poll::Pending
        })
        .await
    }

    /// Answers a request the peer sent.
    pub fn reply(&self, request_id: u64, body: pb::reply::Body) {
        let mut st = self.shared.lock();
        st.mux.reply(request_id, body);
        st.wake_driver();
    }

    /// Sends an inventory report.
    pub fn send_inventory(&self, report: InventoryReport) {
        let mut st = self.shared.lock();
        st.mux.send_inventory(report);
        st.wake_driver();
    }

    /// Closes the connection with `reason`; the driver sends a `GoAway` and ends.
    pub fn close(&self, reason: &str) {
        let mut st = self.shared.lock();
        st.mux.close_connection(reason);
        st.wake_driver();
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<ConnError> {
        self.shared.lock().closed.clone()
    }

    /// Waits until the connection has closed and returns why.
    pub async fn closed(&self) -> ConnError {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(err) = &st.closed {
                return Poll::Ready(err.clone());
            }
            if !st.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.closed_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Number of streams holding an id on this connection.
    pub fn stream_count(&self) -> usize {
        self.shared.lock().mux.stream_count()
    }

    /// The connection's round trip when nothing queues on it (see
    /// [`Mux::idle_rtt`](outband_proto::mux::Mux::idle_rtt)); `None` until a
    /// heartbeat came back.
    pub fn idle_rtt(&self) -> Option<std::time::Duration> {
        self.shared.lock().mux.idle_rtt()
    }

    /// Transfer counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

/// A stream the peer asked to open, not answered yet. Dropping it refuses it.
#[derive(Debug)]
pub struct PendingStream {
    id: StreamId,
    kind: StreamKind,
    target: String,
    auth: Option<Box<pb::BmcAuth>>,
    shared: Option<Arc<Shared>>,
}

impl PendingStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }
    /// What kind of stream the peer asks for.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }
    /// The endpoint the peer asks for.
    pub fn target(&self) -> &str {
        &self.target
    }
    /// Takes the credentials the opener sent for the endpoint, if any.
    pub fn take_auth(&mut self) -> Option<Box<pb::BmcAuth>> {
        self.auth.take()
    }

    /// Accepts the stream.
    pub fn accept(mut self) -> Result<Stream, StreamError> {
        let shared = self.shared.take().ok_or(StreamError::Unknown(self.id))?;
        {
            let mut st = shared.lock();
            if let Err(e) = st.mux.accept(self.id) {
                // Closed by the peer meanwhile (or the connection ended).
                st.streams.remove(&self.id);
                return Err(e);
            }
            st.wake_driver();
        }
        Ok(Stream::new(self.id, shared))
    }

    /// Refuses the stream with a code and a reason for the peer.
    pub fn refuse(self, code: RefuseCode, message: &str) {
        self.refuse_with_code(code, "", message)
    }

    /// [`PendingStream::refuse`] with a stable machine-readable detail such as
    /// `bmc_auth_failed`.
    pub fn refuse_with_code(mut self, code: RefuseCode, error_code: &str, message: &str) {
        if let Some(shared) = self.shared.take() {
            refuse(&shared, self.id, code, error_code, message);
        }
    }
}

fn refuse(shared: &Shared, id: StreamId, code: RefuseCode, error_code: &str, message: &str) {
    let mut st = shared.lock();
    let _ = st.mux.refuse_with_code(id, code, error_code, message);
    st.streams.remove(&id);
    st.wake_driver();
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            refuse(
                &shared,
                self.id,
                RefuseCode::Unspecified,
                "",
                "not answered",
            );
        }
    }
}

struct OnDrop<F: FnMut()>(F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tunnel>();
    is::<Stream>();
}

/// Loads a counter.
pub fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
