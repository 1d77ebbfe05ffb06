//! Read-ahead under TLS: one socket read fills up to [`READ_AHEAD`] bytes, and the TLS
//! layer's small reads are served from memory.
//!
//! rustls asks its transport for at most 4 KiB per read (`read_tls`), so without this
//! a tunnel moving 5 Gbit/s made about 150,000 `recvfrom` calls a second on each
//! receiving end, each of them far dearer on a VM than copying 4 KiB. With it, a busy
//! connection makes one read per 64 KiB that arrived.
//!
//! Memory stays bounded and idle connections hold none: the buffer is taken from a
//! per-thread spare only for a read, and handed back as soon as everything in it was
//! passed up. A connection keeps a buffer only while it holds bytes the TLS layer has
//! not asked for yet (at most [`READ_AHEAD`]).
//!
//! [`ReadAheadBuf`] is the runtime-free core; [`ReadAhead`] wraps a `futures-io`
//! transport with it (the agent). The gateway wraps tokio's `TcpStream` with the same
//! core.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};

use crate::thread_buf::Lender;

/// Bytes one socket read may fetch ahead of what the TLS layer asked for.
pub const READ_AHEAD: usize = 64 * 1024;

thread_local! {
    /// One buffer per thread, lent to whichever connection reads next.
    static SPARE: Lender = const { Lender::new(READ_AHEAD) };
}

fn take_spare() -> Box<[u8]> {
    SPARE.with(Lender::take)
}

fn put_spare(buf: Box<[u8]>) {
    SPARE.with(|l| l.put(buf));
}

/// Frees this thread's spare buffer if no read borrowed it for `idle`: a thread that
/// drives busy connections keeps it, an idle agent gives its 64 KiB back.
pub(crate) fn release_idle_spare(now: Instant, idle: Duration) {
    SPARE.with(|l| l.release_if_idle(now, idle));
}

/// The read-ahead state of one connection. Holds a buffer only while bytes are
/// buffered in it.
#[derive(Debug, Default)]
pub struct ReadAheadBuf {
    /// `Some` exactly when `start < end`.
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl ReadAheadBuf {
    /// Bytes read from the transport and not yet passed up.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Fills `out` from the buffer, or else by one call of `read` (the transport's
    /// read) into a read-ahead buffer. `read` is not called while bytes are buffered.
    pub fn poll_read_with(
        &mut self,
        out: &mut [u8],
        read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(buf) = &self.buf {
            let n = (self.end - self.start).min(out.len());
            out[..n].copy_from_slice(&buf[self.start..self.start + n]);
            self.start += n;
            if self.start == self.end {
                if let Some(buf) = self.buf.take() {
                    put_spare(buf);
                }
                (self.start, self.end) = (0, 0);
            }
            return Poll::Ready(Ok(n));
        }
        if out.len() >= READ_AHEAD {
            // A big read gains nothing from a detour.
            return read(out);
        }
        let mut buf = take_spare();
        match read(&mut buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                let n = n.min(buf.len());
                let m = n.min(out.len());
                out[..m].copy_from_slice(&buf[..m]);
                if m < n {
                    self.buf = Some(buf);
                    (self.start, self.end) = (m, n);
                } else {
                    put_spare(buf);
                }
                Poll::Ready(Ok(m))
            }
            other => {
                put_spare(buf);
                other
            }
        }
    }
}

/// A `futures-io` transport with read-ahead; writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<IO> {
    io: IO,
    ahead: ReadAheadBuf,
}

impl<IO> ReadAhead<IO> {
    /// Wraps `io`.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            ahead: ReadAheadBuf::default(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadAhead<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = &mut this.io;
        this.ahead
            .poll_read_with(buf, |b| Pin::new(&mut *io).poll_read(cx, b))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadAhead<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_spare() -> bool {
        SPARE.with(Lender::has_spare)
    }

    #[test]
    fn an_idle_threads_spare_is_freed_a_busy_ones_kept() {
        let mut ahead = ReadAheadBuf::default();
        let mut out = [0u8; 16];
        let r = ahead.poll_read_with(&mut out, |b| Poll::Ready(Ok(b.len().min(16))));
        assert!(matches!(r, Poll::Ready(Ok(16))));
        assert!(has_spare(), "handed back after the read");
        release_idle_spare(Instant::now(), Duration::from_secs(60));
        assert!(has_spare(), "used just now: kept");
        release_idle_spare(
            Instant::now() + Duration::from_secs(61),
            Duration::from_secs(60),
        );
        assert!(!has_spare(), "idle: freed");
    }

    /// A transport that hands out its bytes in the read sizes it is asked for, and
    /// counts reads.
    struct Script {
        data: Vec<u8>,
        pos: usize,
        reads: usize,
        pending_next: bool,
    }

    impl Script {
        fn read(&mut self, b: &mut [u8]) -> Poll<io::Result<usize>> {
            if std::mem::take(&mut self.pending_next) {
                return Poll::Pending;
            }
            self.reads += 1;
            let n = (self.data.len() - self.pos).min(b.len());
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    fn drain(ahead: &mut ReadAheadBuf, src: &mut Script, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = vec![0u8; chunk];
        loop {
            match ahead.poll_read_with(&mut b, |x| src.read(x)) {
                Poll::Ready(Ok(0)) => return out,
                Poll::Ready(Ok(n)) => out.extend_from_slice(&b[..n]),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => {}
            }
        }
    }

    #[test]
    fn small_reads_are_served_from_one_big_read() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut src = Script {
            data: data.clone(),
            pos: 0,
            reads: 0,
            pending_next: false,
        };
        let mut ahead = ReadAheadBuf::default();
        let got = drain(&mut ahead, &mut src, 4096);
        assert_eq!(got, data, "bytes pass through unchanged and in order");
        // 200,000 bytes in 64 KiB reads: 4 reads, plus the one that saw the end.
        assert_eq!(src.reads, 200_000usize.div_ceil(READ_AHEAD) + 1);
        assert_eq!(ahead.buffered(), 0);
        assert!(ahead.buf.is_none(), "a drained connection holds no buffer");
    }

    #[test]
    fn big_reads_go_straight_through_and_pending_keeps_nothing() {
        let mut src = Script {
            data: vec![5; 3 * READ_AHEAD],
            pos: 0,
            reads: 0,
            pending_next: true,
        };
        let mut ahead = ReadAheadBuf::default();
        let mut b = vec![0u8; READ_AHEAD];
        assert!(ahead.poll_read_with(&mut b, |x| src.read(x)).is_pending());
        assert!(ahead.buf.is_none());
        let got = drain(&mut ahead, &mut src, READ_AHEAD);
        assert_eq!(got.len(), 3 * READ_AHEAD);
        assert_eq!(src.reads, 4);
    }

    #[test]
    fn buffered_bytes_come_before_any_new_read() {
        let mut src = Script {
            data: b"hello world".to_vec(),
            pos: 0,
            reads: 0,
            pending_next: false,
        };
        let mut ahead = ReadAheadBuf::default();
        let mut b = [0u8; 5];
        let r = ahead.poll_read_with(&mut b, |x| src.read(x));
        assert!(matches!(r, Poll::Ready(Ok(5))));
        assert_eq!(&b, b"hello");
        assert_eq!(ahead.buffered(), 6);
        // The transport would fail now; the buffered bytes still come first.
        let mut b = [0u8; 64];
        let r = ahead.poll_read_with(&mut b, |_| panic!("read while bytes are buffered"));
        assert!(matches!(r, Poll::Ready(Ok(6))));
        assert_eq!(&b[..6], b" world");
        let r = ahead.poll_read_with(&mut b, |_| {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        });
        assert!(matches!(r, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset));
        assert!(ahead.buf.is_none());
    }
}
