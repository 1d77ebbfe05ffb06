//! The agent's executor: one thread runs every task and the I/O reactor.
//!
//! `smol::spawn` puts tasks on a global executor served by threads of its own, while
//! the reactor (epoll) is polled by whichever thread is idle, usually the one in
//! `block_on`. Every socket event then crossed threads (a futex wake and a context
//! switch) before the task that wanted it ran: on the tunnel's path that is one hop
//! per readiness, per direction. The agent's work is small (a few relays, TLS to one
//! gateway), so one thread that both polls the reactor and runs the tasks avoids
//! that hop and one thread's stack (latency A/B runs on the 2-core VM were within its
//! noise; see docs/benchmarks.md). Blocking work (the Redfish client) still goes to `smol::unblock`.
//!
//! The sockets on the tunnel's path ([`net::TcpStream`]: the gateway connection and
//! the relays' BMC connections) are registered with a reactor of our own
//! ([`reactor`]), which this thread waits in. The rest (timers, UDP, the status page)
//! stays on smol's types, driven by async-io's own thread, which wakes our tasks.
//!
//! Use [`spawn`] for agent tasks and [`block_on`] to drive them (the binary's `main`,
//! and tests that run agent code).

pub mod net;
mod reactor;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use smol::{Executor, Task};

static EXECUTOR: Executor<'static> = Executor::new();

/// Spawns a task on the agent's executor. It runs only while some thread is inside
/// [`block_on`].
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    EXECUTOR.spawn(future)
}

/// Task polls between two looks at the I/O reactor while tasks keep being runnable.
/// `Executor::run` looks only every 200 polls: with a bulk relay and the connection
/// driver always runnable (each yields after its byte budget), a socket that became
/// readable for a keystroke's stream waited for 200 polls of bulk work.
const TICKS_PER_REACTOR_POLL: usize = 4;

/// Runs `future` to completion on this thread, running the agent's tasks and waiting
/// in the agent's reactor while nothing is runnable.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    let tasks = async {
        let mut since_reactor = 0;
        loop {
            // A tick that finds no runnable task is pending: `block_on` then waits on
            // the reactor anyway, so the count starts again. Only a run of ticks that
            // never waited needs the extra look below.
            let mut tick = std::pin::pin!(EXECUTOR.tick());
            std::future::poll_fn(|cx| {
                let res = tick.as_mut().poll(cx);
                if res.is_pending() {
                    since_reactor = 0;
                }
                res
            })
            .await;
            since_reactor += 1;
            if since_reactor >= TICKS_PER_REACTOR_POLL {
                since_reactor = 0;
                // Pending once, woken at once: `block_on` then processes ready I/O
                // events (a zero-timeout wait) before it polls us again.
                futures_lite::future::yield_now().await;
            }
        }
    };
    let mut main = pin!(futures_lite::future::or(future, tasks));
    let signal = reactor::Signal::for_current_thread();
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let reactor = reactor::Reactor::get();
    loop {
        if signal.woken.swap(false, Ordering::SeqCst)
            && let Poll::Ready(v) = main.as_mut().poll(&mut cx)
        {
            return v;
        }
        reactor.wait(&signal);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::{Duration, Instant};

    use futures_lite::AsyncReadExt as _;

    /// Two tasks that stay runnable (each poll takes 1 ms of CPU, as a bulk relay's
    /// budget does, then yields) must not keep I/O and timers waiting: the reactor is
    /// looked at every few polls. With `Executor::run` (every 200 polls) the connect,
    /// the 20 ms timer and the read took 444 ms here; now about 26 ms.
    #[test]
    fn io_is_noticed_while_other_tasks_stay_busy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let waited = super::block_on(async move {
            let busy: Vec<_> = (0..2)
                .map(|_| {
                    super::spawn(async {
                        loop {
                            std::thread::sleep(Duration::from_millis(1));
                            futures_lite::future::yield_now().await;
                        }
                    })
                })
                .collect();
            let mut conn = smol::net::TcpStream::connect(addr).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            // Let the busy tasks run for a while first.
            smol::Timer::after(Duration::from_millis(20)).await;
            let sent = Instant::now();
            peer.write_all(b"k").unwrap();
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await.unwrap();
            drop(busy);
            sent.elapsed()
        });
        let total = started.elapsed();
        eprintln!("read waited {waited:?}; connect, 20 ms timer and read took {total:?}");
        assert!(
            waited < Duration::from_millis(60) && total < Duration::from_millis(150),
            "a readable socket waited {waited:?} for busy tasks, the whole sequence {total:?}"
        );
    }
}
