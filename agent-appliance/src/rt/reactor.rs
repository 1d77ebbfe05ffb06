//! The agent's own I/O reactor: one epoll instance, edge-triggered registrations, an
//! eventfd to wake a thread that waits in it.
//!
//! async-io's reactor (behind smol) pays four system calls of its own on every wait
//! (`timerfd_settime`, `epoll_ctl` on the timerfd, a read and a re-arm of its
//! eventfd) and one `epoll_ctl` per event (oneshot registrations), and its "async-io"
//! thread takes the reactor over after quiet spells, after which every event crosses
//! threads. On the tunnel's path (the gateway connection and the relays' BMC sockets)
//! a 64-byte round trip paid about 19 system calls at the agent. Here a socket is
//! registered once, edge-triggered, for both directions; a wait is one `epoll_wait`;
//! and only the thread in [`super::block_on`] waits.
//!
//! Everything else (timers, UDP, the status page, DNS) stays on smol: async-io's own
//! thread drives those and wakes our tasks through their wakers, which reach a thread
//! waiting here through the eventfd ([`Signal`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use rustix::event::{EventfdFlags, Timespec, epoll};

/// The epoll key of the wake-up eventfd; sources count from 1.
const NOTIFY_KEY: u64 = 0;

/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 64;

/// How long a thread that finds another one waiting in the reactor parks before it
/// looks again (only tests run more than one [`super::block_on`] at a time).
const PARK_WHILE_OTHER_WAITS: Duration = Duration::from_millis(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's reactor.
pub(crate) struct Reactor {
    epoll: OwnedFd,
    notify: OwnedFd,
    sources: Mutex<HashMap<u64, Arc<Source>>>,
    next_key: AtomicU64,
    /// Held by the one thread that waits in `epoll_wait`.
    waiter: Mutex<()>,
}

thread_local! {
    /// The events one wait takes from the kernel (`epoll::Event` is not `Send`, so
    /// the buffer stays with the thread).
    static EVENTS: std::cell::RefCell<Vec<epoll::Event>> = std::cell::RefCell::new(vec![
        epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        EVENTS_PER_WAIT
    ]);
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").finish_non_exhaustive()
    }
}

impl Reactor {
    /// The reactor, created on first use.
    pub(crate) fn get() -> &'static Reactor {
        static REACTOR: OnceLock<Reactor> = OnceLock::new();
        REACTOR.get_or_init(|| Reactor::new().expect("creating the agent's epoll reactor"))
    }

    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notify = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &notify,
            epoll::EventData::new_u64(NOTIFY_KEY),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(Reactor {
            epoll,
            notify,
            sources: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(NOTIFY_KEY + 1),
            waiter: Mutex::new(()),
        })
    }

    /// Registers `fd` for both directions, edge-triggered. Until the first event the
    /// source counts as ready both ways, so the first read or write is simply tried.
    pub(crate) fn register(&self, fd: impl AsFd) -> io::Result<Arc<Source>> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let source = Arc::new(Source {
            key,
            state: Mutex::new(Readiness::default()),
        });
        lock(&self.sources).insert(key, source.clone());
        let flags = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        if let Err(e) = epoll::add(&self.epoll, fd, epoll::EventData::new_u64(key), flags) {
            lock(&self.sources).remove(&key);
            return Err(e.into());
        }
        Ok(source)
    }

    /// Removes `fd` (call before closing it). Events already taken for it are ignored.
    pub(crate) fn deregister(&self, fd: impl AsFd, source: &Source) {
        // Fails only if the fd was never added or is closed; either way it is gone.
        let _ = epoll::delete(&self.epoll, fd);
        lock(&self.sources).remove(&source.key);
    }

    /// Wakes the thread waiting in [`Reactor::wait`].
    fn notify(&self) {
        // A full counter (it never is: each wait drains it) would only mean that a
        // wake-up is pending already.
        let _ = rustix::io::write(&self.notify, &1u64.to_ne_bytes());
    }

    /// Waits for I/O and wakes the tasks it is for, unless `signal` says the caller
    /// was woken meanwhile (then it only collects what is ready). A thread that finds
    /// another one waiting here parks instead, briefly.
    pub(crate) fn wait(&self, signal: &Signal) {
        let Ok(_waiting) = self.waiter.try_lock() else {
            signal.state.store(PARKED, Ordering::SeqCst);
            if !signal.woken.load(Ordering::SeqCst) {
                std::thread::park_timeout(PARK_WHILE_OTHER_WAITS);
            }
            signal.state.store(RUNNING, Ordering::SeqCst);
            return;
        };
        signal.state.store(IN_REACTOR, Ordering::SeqCst);
        const NOW: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timeout = if signal.woken.load(Ordering::SeqCst) {
            Some(&NOW)
        } else {
            None
        };
        EVENTS.with(|events| {
            let mut events = events.borrow_mut();
            let res = epoll::wait(&self.epoll, &mut events[..], timeout);
            // Wakes from here on are this thread's own (dispatching below), so they need
            // no eventfd write.
            signal.state.store(RUNNING, Ordering::SeqCst);
            let n = match res {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => 0,
                Err(e) => {
                    tracing::error!("epoll_wait failed: {e}");
                    std::thread::sleep(PARK_WHILE_OTHER_WAITS);
                    0
                }
            };
            for ev in &events[..n] {
                let (flags, key) = (ev.flags, ev.data.u64());
                if key == NOTIFY_KEY {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(&self.notify, &mut buf);
                    continue;
                }
                let Some(source) = lock(&self.sources).get(&key).cloned() else {
                    continue;
                };
                source.dispatch(flags);
            }
        });
    }
}

const RUNNING: u8 = 0;
const PARKED: u8 = 1;
const IN_REACTOR: u8 = 2;

/// How a [`super::block_on`] thread is woken: a flag, and whichever of unpark or an
/// eventfd write reaches the thread where it sleeps.
#[derive(Debug)]
pub(crate) struct Signal {
    pub(crate) woken: AtomicBool,
    state: AtomicU8,
    thread: Thread,
}

impl Signal {
    /// A signal for the calling thread, woken (so the first poll happens).
    pub(crate) fn for_current_thread() -> Arc<Signal> {
        Arc::new(Signal {
            woken: AtomicBool::new(true),
            state: AtomicU8::new(RUNNING),
            thread: std::thread::current(),
        })
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.woken.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.state.load(Ordering::SeqCst) {
            IN_REACTOR => Reactor::get().notify(),
            PARKED => self.thread.unpark(),
            _ => {}
        }
    }
}

/// One registered file descriptor's readiness.
#[derive(Debug)]
pub(crate) struct Source {
    key: u64,
    state: Mutex<Readiness>,
}

#[derive(Debug, Default)]
struct Readiness {
    read: Direction,
    write: Direction,
}

#[derive(Debug)]
struct Direction {
    /// No `EAGAIN` (or short transfer) since the last edge.
    ready: bool,
    /// The peer closed this direction or the socket failed (`RDHUP`, `HUP`, `ERR`):
    /// sticky, because no edge follows it. A short read before a fin that had
    /// already arrived must not make the next read wait for one.
    closed: bool,
    /// Counts edges, so an edge that arrives during a system call is not lost.
    seq: u64,
    waker: Option<Waker>,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            ready: true,
            closed: false,
            seq: 0,
            waker: None,
        }
    }
}

impl Direction {
    fn edge(&mut self, closed: bool) -> Option<Waker> {
        self.ready = true;
        self.closed |= closed;
        self.seq = self.seq.wrapping_add(1);
        self.waker.take()
    }

    /// After a short transfer: the socket is likely drained (or full), and the
    /// next edge will say when it is not. A closed direction sees no more edges, so
    /// it stays ready.
    fn drained(&mut self) {
        self.ready = self.closed;
    }

    /// After `EAGAIN`: waits for the next edge.
    fn park(&mut self, cx: &Context<'_>) {
        self.ready = false;
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// Which way an operation moves bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dir {
    Read,
    Write,
}

impl Readiness {
    fn dir(&mut self, d: Dir) -> &mut Direction {
        match d {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

impl Source {
    fn dispatch(&self, flags: epoll::EventFlags) {
        use epoll::EventFlags as F;
        let (r, w) = {
            let mut st = lock(&self.state);
            let r = flags
                .intersects(F::IN | F::PRI | F::RDHUP | F::HUP | F::ERR)
                .then(|| st.read.edge(flags.intersects(F::RDHUP | F::HUP | F::ERR)))
                .flatten();
            let w = flags
                .intersects(F::OUT | F::HUP | F::ERR)
                .then(|| st.write.edge(flags.intersects(F::HUP | F::ERR)))
                .flatten();
            (r, w)
        };
        if let Some(w) = r {
            w.wake();
        }
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Runs the non-blocking `op` if the direction may be ready. On `WouldBlock`, or
    /// when `drained` says the transfer emptied the socket's buffer (a short read or
    /// write: edge-triggered epoll reports the next change), the direction is marked
    /// not ready and the task waits for the next edge.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Dir,
        cx: &Context<'_>,
        mut op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        loop {
            let seq = {
                let mut st = lock(&self.state);
                let d = st.dir(dir);
                if !d.ready {
                    d.park(cx);
                    return Poll::Pending;
                }
                d.seq
            };
            match op() {
                Ok(r) => {
                    if drained(&r) {
                        let mut st = lock(&self.state);
                        let d = st.dir(dir);
                        if d.seq == seq {
                            d.drained();
                        }
                    }
                    return Poll::Ready(Ok(r));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut st = lock(&self.state);
                    let d = st.dir(dir);
                    if d.seq == seq {
                        d.park(cx);
                        return Poll::Pending;
                    }
                    // An edge arrived during the call: try again.
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
