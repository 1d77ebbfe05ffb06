//! TCP on the agent's own reactor: the sockets on the tunnel's path (the gateway
//! connection and the relays' BMC connections).

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use socket2::{Domain, Socket, Type};

use super::reactor::{Dir, Reactor, Source};

/// A non-blocking TCP connection registered with the agent's reactor.
#[derive(Debug)]
pub struct TcpStream {
    io: std::net::TcpStream,
    source: Arc<Source>,
}

impl TcpStream {
    fn register(io: std::net::TcpStream) -> io::Result<TcpStream> {
        io.set_nonblocking(true)?;
        let source = Reactor::get().register(&io)?;
        Ok(TcpStream { io, source })
    }

    /// Connects to `host:port`, trying each resolved address in turn (an IP literal
    /// needs no lookup; a name is resolved on smol's blocking pool). Returns the last
    /// address's error if none accepts.
    pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => smol::net::resolve((host, port)).await?,
        };
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_addr(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no address"),
            )
        }))
    }

    /// Connects to one address without blocking the thread.
    async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        let in_progress = match socket.connect(&addr.into()) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
                true
            }
            Err(e) => return Err(e),
        };
        let stream = TcpStream::register(socket.into())?;
        if in_progress {
            // Writable once the handshake finished or failed; `SO_ERROR` says which.
            std::future::poll_fn(|cx| {
                stream.source.poll_io(
                    Dir::Write,
                    cx,
                    || match stream.io.take_error()? {
                        Some(e) => Err(e),
                        None => match stream.io.peer_addr() {
                            Ok(_) => Ok(()),
                            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                                Err(io::ErrorKind::WouldBlock.into())
                            }
                            Err(e) => Err(e),
                        },
                    },
                    |_| false,
                )
            })
            .await?;
        }
        Ok(stream)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.set_nodelay(on)
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        Reactor::get().deregister(&self.io, &self.source);
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        let this = &*self;
        this.source.poll_io(
            Dir::Read,
            cx,
            || (&this.io).read(buf),
            |&n| n > 0 && n < len,
        )
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &*self;
        this.source
            .poll_io(Dir::Write, cx, || (&this.io).write(buf), |&n| n < buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let this = &*self;
        this.source.poll_io(
            Dir::Write,
            cx,
            || (&this.io).write_vectored(bufs),
            |&n| n < total,
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::TcpStream;

    /// A blocking echo server on a thread: echoes until EOF, then closes.
    fn echo_server() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut s, &mut w);
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        addr
    }

    /// More than the kernel buffers hold, both ways at once, through one socket that
    /// a reader task and a writer task share: every edge must reach its task, and
    /// the fin that arrives with the last bytes must end the read (a short read
    /// before it must not make the reader wait for an edge that never comes).
    #[test]
    fn bulk_both_ways_through_an_echo() {
        let addr = echo_server();
        let payload: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let back = super::super::block_on(async {
            let tcp = TcpStream::connect("127.0.0.1", addr.port()).await.unwrap();
            let (mut rd, mut wr) = futures_lite::io::split(tcp);
            let writer = super::super::spawn({
                let payload = payload.clone();
                async move {
                    wr.write_all(&payload).await.unwrap();
                    wr.close().await.unwrap();
                }
            });
            let mut back = Vec::new();
            let read = rd.read_to_end(&mut back);
            let stalled = async {
                smol::Timer::after(Duration::from_secs(20)).await;
                panic!("stalled");
            };
            futures_lite::future::or(read, stalled).await.unwrap();
            writer.await;
            back
        });
        assert!(back == payload, "echo differs");
    }

    #[test]
    fn connect_errors_are_reported() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = super::super::block_on(TcpStream::connect("127.0.0.1", port))
            .expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}
