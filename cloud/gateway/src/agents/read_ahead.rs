//! tokio's `TcpStream` with read-ahead under TLS ([`outband_tunnel::ReadAheadBuf`]:
//! rustls reads 4 KiB at a time; this turns a busy connection's many small reads
//! into one socket read per 64 KiB). Writes, vectored ones included, pass through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use outband_tunnel::ReadAheadBuf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An agent's TCP connection with read-ahead.
#[derive(Debug)]
pub struct ReadAhead {
    tcp: TcpStream,
    ahead: ReadAheadBuf,
}

impl ReadAhead {
    /// Wraps `tcp`.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            ahead: ReadAheadBuf::default(),
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let tcp = &mut this.tcp;
        // rustls hands over initialized memory, so this does not zero anything.
        let out = buf.initialize_unfilled();
        let res = this.ahead.poll_read_with(out, |b| {
            let mut rb = ReadBuf::new(b);
            match Pin::new(&mut *tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        match res {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
