//! A buffer per thread, lent to one read at a time and freed when the thread has
//! not lent it for a while. The driver's plaintext buffer and the read-ahead's
//! socket buffer are each one of these, so an idle connection holds no read buffer
//! and an idle agent gives them back.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// One thread's spare buffer of `size` bytes. Use it from a `thread_local!`.
pub(crate) struct Lender {
    size: usize,
    spare: Cell<Option<Box<[u8]>>>,
    /// When a read last took the buffer.
    last_lent: Cell<Option<Instant>>,
}

impl Lender {
    pub(crate) const fn new(size: usize) -> Self {
        Self {
            size,
            spare: Cell::new(None),
            last_lent: Cell::new(None),
        }
    }

    /// The spare, or a fresh zeroed buffer if it is lent out already (a read that
    /// re-enters) or was freed. Zeroed once per allocation, not per read.
    pub(crate) fn take(&self) -> Box<[u8]> {
        self.last_lent.set(Some(Instant::now()));
        self.spare
            .take()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    /// Hands a buffer back. Keeps one; a second is freed.
    pub(crate) fn put(&self, buf: Box<[u8]>) {
        drop(self.spare.replace(Some(buf)));
    }

    /// Frees the spare if no read took it for `idle`: a thread that serves busy
    /// connections keeps it.
    pub(crate) fn release_if_idle(&self, now: Instant, idle: Duration) {
        let unused = self
            .last_lent
            .get()
            .is_none_or(|at| now.saturating_duration_since(at) >= idle);
        if unused {
            drop(self.spare.take());
        }
    }

    /// Whether a spare is held (for tests).
    #[cfg(test)]
    pub(crate) fn has_spare(&self) -> bool {
        let buf = self.spare.take();
        let some = buf.is_some();
        self.spare.set(buf);
        some
    }
}
