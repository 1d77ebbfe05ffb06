//! One multiplexed stream as `AsyncRead + AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use outband_proto::mux::{StreamError, StreamId};
use outband_proto::pb::CloseCode;

use crate::Shared;

/// A multiplexed stream. Reads end with `Ok(0)` when the peer finished (half-close);
/// `poll_close` half-closes our side.
///
/// Dropping the stream after `poll_close` still delivers everything written and the
/// fin; if the peer has not finished by then, the stream is closed with `CANCELLED`
/// (like a TCP close with the peer still sending). Dropping it without `poll_close`
/// aborts both directions at once (`StreamClose` with `CANCELLED`), discarding
/// unsent data.
#[derive(Debug)]
pub struct Stream {
    id: StreamId,
    shared: Arc<Shared>,
    forgotten: bool,
}

impl Stream {
    pub(crate) fn new(id: StreamId, shared: Arc<Shared>) -> Self {
        Self {
            id,
            shared,
            forgotten: false,
        }
    }

    /// Drops the handle without touching the multiplexer (the id is already gone).
    pub(crate) fn forget(mut self) {
        self.forgotten = true;
        self.shared.lock().streams.remove(&self.id);
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Aborts the stream with a code and a reason for the peer.
    pub fn abort(mut self, code: CloseCode, message: &str) {
        self.close_with(code, message);
        self.forgotten = true;
    }

    /// The next received bytes without copying them: a chunk as it arrived (or
    /// several small ones coalesced), `Ok(None)` once the peer finished. Nothing is
    /// taken until [`Stream::consume`] says how much of it was used, so a chunk that
    /// could only partly be passed on is offered again. A relay writes chunks
    /// straight to its socket this way instead of copying them into a buffer first.
    pub fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let Some(rs) = st.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "stream is closed",
            )));
        };
        if let Some(chunk) = rs.front() {
            return Poll::Ready(Ok(Some(chunk)));
        }
        input_ended(rs, st.closed.as_ref(), cx).map(|r| r.map(|()| None))
    }

    /// Takes `n` bytes of what [`Stream::poll_chunk`] offered (at most its length)
    /// and returns them to the peer as credit.
    pub fn consume(&self, n: usize) {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let Some(rs) = st.streams.get_mut(&self.id) else {
            return;
        };
        let n = rs.advance(n);
        if n > 0 {
            st.mux.release(self.id, n, Instant::now());
            if st.mux.has_transmit() {
                st.wake_driver();
            }
        }
    }

    fn close_with(&mut self, code: CloseCode, message: &str) {
        let mut st = self.shared.lock();
        st.streams.remove(&self.id);
        st.opening.remove(&self.id);
        st.mux.close(self.id, code, message);
        st.wake_driver();
    }
}

fn stream_err(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::ConnectionClosed => io::ErrorKind::ConnectionAborted,
        StreamError::NotWritable(_) => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, e)
}

/// With nothing buffered: `Ok(())` if the peer finished, an error if the stream or
/// the connection was closed, else pending (the reader's waker is kept).
fn input_ended(
    rs: &mut crate::RecvState,
    closed: Option<&outband_proto::mux::ConnError>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if rs.fin {
        return Poll::Ready(Ok(()));
    }
    if let Some((code, msg)) = &rs.reset {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("stream closed by peer ({code:?}): {msg}"),
        )));
    }
    if let Some(err) = closed {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            err.to_string(),
        )));
    }
    rs.read_waker = Some(cx.waker().clone());
    Poll::Pending
}

impl futures_io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let Some(rs) = st.streams.get_mut(&id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "stream is closed",
            )));
        };
        let n = rs.read_into(buf);
        if n > 0 {
            st.mux.release(id, n, Instant::now());
            if st.mux.has_transmit() {
                st.wake_driver();
            }
            return Poll::Ready(Ok(n));
        }
        input_ended(rs, st.closed.as_ref(), cx).map(|r| r.map(|()| 0))
    }
}

impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Some((code, msg)) = st.streams.get(&id).and_then(|rs| rs.reset.as_ref()) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("stream closed by peer ({code:?}): {msg}"),
            )));
        }
        match st.mux.send(id, buf) {
            Ok(0) => {
                if let Some(rs) = st.streams.get_mut(&id) {
                    rs.write_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(stream_err(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if let Some((code, msg)) = st.streams.get(&self.id).and_then(|rs| rs.reset.as_ref()) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("stream closed by peer ({code:?}): {msg}"),
            )));
        }
        match st.mux.finish(self.id) {
            Ok(()) => {
                st.wake_driver();
                Poll::Ready(Ok(()))
            }
            // Already fully finished and forgotten by the multiplexer: nothing to do.
            Err(StreamError::Unknown(_)) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(stream_err(e))),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.forgotten {
            let mut st = self.shared.lock();
            st.streams.remove(&self.id);
            st.opening.remove(&self.id);
            st.mux.detach(self.id);
            st.wake_driver();
        }
    }
}
