//! The agent's executor: one thread runs every task and the I/O reactor.
//!
//! `smol::spawn` puts tasks on a global executor served by threads of its own, while
//! the reactor (epoll) is polled by whichever thread is idle, usually the one in
//! `block_on`. Every socket event then crossed threads (a futex wake and a context
//! switch) before the task that wanted it ran: on the tunnel's path that is one hop
//! per readiness, per direction. The agent's work is small (a few relays, TLS to one
//! gateway), so one thread that both polls the reactor and runs the tasks is faster
//! and smaller. Blocking work (the Redfish client) still goes to `smol::unblock`.
//!
//! Use [`spawn`] for agent tasks and [`block_on`] to drive them (the binary's `main`,
//! and tests that run agent code).

use std::future::Future;

use smol::{Executor, Task};

static EXECUTOR: Executor<'static> = Executor::new();

/// Spawns a task on the agent's executor. It runs only while some thread is inside
/// [`block_on`].
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    EXECUTOR.spawn(future)
}

/// Runs `future` to completion on this thread, running the agent's tasks and polling
/// the I/O reactor while it waits.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    smol::block_on(EXECUTOR.run(future))
}
