//! The connection driver: one future per connection that moves frames between the
//! transport and the multiplexer and ticks its clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_io::{AsyncRead, AsyncWrite};
use outband_proto::codec::{self, FrameDecoder};
use outband_proto::mux::ConnError;

use crate::thread_buf::Lender;
use crate::{Shared, Timer};

/// Write buffer high-water mark: frames are encoded until this much is pending.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Bytes read from the transport per read call, into a buffer per thread
/// ([`READ_BUF`]), so an idle connection holds no read buffer at all.
const READ_CHUNK: usize = 32 * 1024;
/// How long a closing connection may take to flush its `GoAway`.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Reads per round of the poll loop.
const READS_PER_POLL: usize = 8;
/// Rounds of the poll loop before the driver yields to the executor, so one busy
/// connection (e.g. a peer flooding heartbeats) cannot starve the thread.
const ROUNDS_PER_POLL: usize = 32;
/// Bytes read plus written per poll before the driver yields to the executor. The
/// stream tasks this connection feeds run on the same executor (on one thread in
/// the agent): moving a whole bulk window per poll would make a keystroke's stream
/// wait for it. A few frames' worth keeps the per-poll overhead small.
const BYTES_PER_POLL: u64 = 256 * 1024;

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// The read buffer of every connection this thread drives. A buffer in each
    /// driver would cost every idle agent connection 32 KiB at the gateway; one on the
    /// stack of each poll had to be zeroed on every poll (32 KiB of `memset` per
    /// wake-up, a few percent of a small round trip's CPU).
    static READ_BUF: Lender = const { Lender::new(READ_CHUNK) };
}

/// Runs `f` with this thread's read buffer. A transport whose read drives another
/// connection (re-entry) gets a buffer of its own for the inner one.
fn with_read_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ_BUF.with(Lender::take);
    let res = f(&mut buf);
    READ_BUF.with(|l| l.put(buf));
    res
}

/// A thread that read nothing for this long frees its read buffers (96 KiB): an idle
/// agent gives them back, a gateway thread serving busy agents keeps them.
const BUFFERS_IDLE: Duration = Duration::from_millis(100);

/// Frees this thread's read buffers if no connection used them for [`BUFFERS_IDLE`].
fn release_idle_buffers(now: Instant) {
    READ_BUF.with(|l| l.release_if_idle(now, BUFFERS_IDLE));
    crate::read_ahead::release_idle_spare(now, BUFFERS_IDLE);
}

/// The waker the transport's reads get: it notes that the transport may be readable
/// again, then wakes the driver's task. The driver is also woken for other reasons
/// (a stream wrote, a window opened); on those wake-ups it does not try a read that
/// it knows would find nothing (on the agent every such try is a `recvfrom` and an
/// `epoll_ctl`).
#[derive(Debug, Default)]
struct ReadWake {
    ready: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl ReadWake {
    fn set_task(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Drives one connection. Completes with the reason the connection ended.
pub struct Driver<IO> {
    io: IO,
    shared: Arc<Shared>,
    timer: Box<dyn Timer>,
    sleep: Option<(Instant, Sleep)>,
    decoder: FrameDecoder,
    write_buf: BytesMut,
    max_frame: usize,
    /// Set once the connection failed; the driver flushes and closes the transport.
    closing: Option<(ConnError, Instant)>,
    finished: bool,
    /// Since when the transport has refused every byte we had to write.
    write_stalled_since: Option<Instant>,
    /// The last read found nothing (the transport holds `read_wake`'s waker).
    read_blocked: bool,
    read_wake: Arc<ReadWake>,
    read_waker: Waker,
}

impl<IO> std::fmt::Debug for Driver<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    pub(crate) fn new(
        io: IO,
        shared: Arc<Shared>,
        timer: Box<dyn Timer>,
        max_frame: usize,
    ) -> Self {
        let read_wake = Arc::new(ReadWake::default());
        Self {
            io,
            shared,
            timer,
            sleep: None,
            decoder: FrameDecoder::new(max_frame),
            write_buf: BytesMut::new(),
            max_frame,
            closing: None,
            finished: false,
            write_stalled_since: None,
            read_blocked: false,
            read_waker: Waker::from(read_wake.clone()),
            read_wake,
        }
    }

    fn start_closing(&mut self, err: ConnError, now: Instant) {
        if self.closing.is_none() {
            match &err {
                ConnError::Transport(_) | ConnError::GoAway(_) => {}
                _ => tracing::debug!(reason = %err, "closing agent connection"),
            }
            self.shared.lock().set_closed(err.clone());
            self.closing = Some((err, now + CLOSE_GRACE));
        }
    }

    /// Arms the sleep for `deadline` unless it is already armed for it.
    fn poll_sleep(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if self.sleep.as_ref().is_none_or(|(d, _)| *d != deadline) {
            self.sleep = Some((deadline, self.timer.sleep_until(deadline)));
        }
        let (_, sleep) = self.sleep.as_mut().expect("armed above");
        let res = sleep.as_mut().poll(cx);
        if res.is_ready() {
            self.sleep = None;
        }
        res
    }

    /// Reads what is available and feeds the multiplexer. Skips the read if the last
    /// one found nothing and the transport has not woken us since.
    fn poll_reads(&mut self, cx: &mut Context<'_>) -> bool {
        self.read_wake.set_task(cx.waker());
        if self.read_blocked && !self.read_wake.ready.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.read_wake.ready.store(false, Ordering::Release);
        self.read_blocked = false;
        with_read_buf(|read_buf| self.poll_reads_into(read_buf))
    }

    fn poll_reads_into(&mut self, read_buf: &mut [u8]) -> bool {
        let mut progress = false;
        let waker = self.read_waker.clone();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..READS_PER_POLL {
            match Pin::new(&mut self.io).poll_read(&mut cx, read_buf) {
                Poll::Pending => {
                    self.read_blocked = true;
                    break;
                }
                Poll::Ready(Ok(0)) => {
                    let reason = match self.decoder.finish() {
                        Ok(()) => "peer closed the connection".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let err = self.shared.lock().mux.fail_transport(reason);
                    self.start_closing(err, Instant::now());
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    let err = self.shared.lock().mux.fail_transport(e.to_string());
                    self.start_closing(err, Instant::now());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    self.shared
                        .stats
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.decoder.extend(&read_buf[..n]);
                    if let Err(err) = self.decode_all() {
                        self.start_closing(err, Instant::now());
                        return true;
                    }
                }
            }
        }
        progress
    }

    fn decode_all(&mut self) -> Result<(), ConnError> {
        let now = Instant::now();
        let mut st = self.shared.lock();
        loop {
            let frame = match self.decoder.decode() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(st.mux.fail_protocol(e.to_string())),
            };
            self.shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
            let res = st.mux.handle_frame(frame, now);
            st.dispatch_events();
            res?;
        }
        Ok(())
    }

    /// Encodes queued frames and writes them. Returns true on progress.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        let mut written = 0u64;
        loop {
            if written >= BYTES_PER_POLL {
                // The caller's budget check yields; the rest goes on the next poll.
                break;
            }
            if self.write_buf.len() < WRITE_HIGH_WATER {
                let mut st = self.shared.lock();
                while self.write_buf.len() < WRITE_HIGH_WATER {
                    let Some(frame) = st.mux.poll_transmit() else {
                        break;
                    };
                    if let Err(e) = codec::encode_frame(&frame, self.max_frame, &mut self.write_buf)
                    {
                        // Our own frames are bounded by construction; this is a bug.
                        tracing::error!(error = %e, kind = codec::kind_name(&frame), "dropping unencodable frame");
                        continue;
                    }
                    self.shared.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            if self.write_buf.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.write_buf)? {
                Poll::Pending => {
                    if !progress && self.write_stalled_since.is_none() {
                        self.write_stalled_since = Some(Instant::now());
                    }
                    return Ok(progress);
                }
                Poll::Ready(0) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(n) => {
                    progress = true;
                    written += n as u64;
                    self.write_stalled_since = None;
                    self.shared
                        .stats
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                    // `advance` keeps the buffer unshared, so once drained its whole
                    // capacity is reused instead of reallocated.
                    bytes::Buf::advance(&mut self.write_buf, n);
                }
            }
        }
        if progress {
            // Nothing more to write right now: push it out (TLS record, socket).
            match Pin::new(&mut self.io).poll_flush(cx)? {
                Poll::Ready(()) | Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<ConnError> {
        let (err, deadline) = self.closing.clone().expect("closing");
        let flushed = match self.poll_writes(cx) {
            Ok(_) => self.write_buf.is_empty(),
            Err(_) => true,
        };
        let timed_out = self.poll_sleep(deadline, cx).is_ready();
        if flushed || timed_out {
            let _ = Pin::new(&mut self.io).poll_close(cx);
            self.finished = true;
            return Poll::Ready(err);
        }
        Poll::Pending
    }
}

impl<IO> Drop for Driver<IO> {
    /// A driver dropped before it finished (its task was cancelled) ends the
    /// connection, so nothing waits for it forever.
    fn drop(&mut self) {
        if !self.finished {
            let mut st = self.shared.lock();
            let err = st.mux.fail_transport("connection driver dropped".into());
            st.set_closed(err);
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Driver<IO> {
    type Output = ConnError;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ConnError> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(
                this.closing
                    .as_ref()
                    .map(|c| c.0.clone())
                    .unwrap_or_else(|| ConnError::Closed("driver finished".into())),
            );
        }
        let moved = |shared: &Shared| {
            shared.stats.bytes_in.load(Ordering::Relaxed)
                + shared.stats.bytes_out.load(Ordering::Relaxed)
        };
        let moved_before = moved(&this.shared);
        for _ in 0..ROUNDS_PER_POLL {
            if this.closing.is_some() {
                return this.poll_closing(cx);
            }
            if moved(&this.shared) - moved_before >= BYTES_PER_POLL {
                break;
            }
            let now = Instant::now();
            let deadline = {
                let mut st = this.shared.lock();
                st.driver_waker = Some(cx.waker().clone());
                if let Some(err) = st.mux.close_reason().cloned() {
                    drop(st);
                    this.start_closing(err, now);
                    continue;
                }
                let mut deadline = st.mux.poll_timeout();
                if deadline.is_some_and(|d| d <= now) {
                    // A timer tick (heartbeat interval): free buffers that sit empty,
                    // so idle connections hold none while busy ones keep reusing theirs.
                    this.decoder.shrink_if_empty();
                    release_idle_buffers(now);
                    st.shrink_idle();
                    // A peer that keeps sending (so it never looks silent) but reads
                    // nothing would hold this connection and its streams forever.
                    let cfg = st.mux.config();
                    let limit = cfg.heartbeat_interval * cfg.dead_after_intervals;
                    if let Some(since) = this.write_stalled_since
                        && now.saturating_duration_since(since) >= limit
                    {
                        let err = st.mux.fail_transport(format!(
                            "peer has read nothing for {:?} (write stalled)",
                            now.saturating_duration_since(since)
                        ));
                        drop(st);
                        this.start_closing(err, now);
                        continue;
                    }
                    if this.write_buf.is_empty() && this.write_buf.capacity() > 0 {
                        this.write_buf = BytesMut::new();
                    }
                    let res = st.mux.handle_timeout(now);
                    st.dispatch_events();
                    if let Err(err) = res {
                        drop(st);
                        this.start_closing(err, now);
                        continue;
                    }
                    deadline = st.mux.poll_timeout();
                }
                deadline
            };
            let mut progress = false;
            if let Some(deadline) = deadline
                && this.poll_sleep(deadline, cx).is_ready()
            {
                progress = true;
            }
            progress |= this.poll_reads(cx);
            if this.closing.is_some() {
                continue;
            }
            match this.poll_writes(cx) {
                Ok(p) => progress |= p,
                Err(e) => {
                    let err = this.shared.lock().mux.fail_transport(e.to_string());
                    this.start_closing(err, now);
                    continue;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
