//! Loopback helpers: free ports, a TCP echo target, and reading until a peer closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Ports [`free_port`] picks from: below Linux's ephemeral range (32768–60999 by
/// default), so no outgoing connection of another test can take the port between
/// our check and the program's bind, or while a restarted program is down.
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A TCP port on 127.0.0.1 that was free a moment ago, for programs that cannot bind
/// port 0 themselves or that must come back on the same port after a restart. It is
/// drawn at random from [`FIXED_PORTS`] and checked with a bind (TCP and UDP, for
/// programs like ipmi_sim), so two tests running at once rarely draw the same one.
pub fn free_port() -> u16 {
    use rand::Rng as _;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(FIXED_PORTS);
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIXED_PORTS:?} after 1000 tries")
}

/// Connects to `addr`, retrying until `timeout` (the listener may not be up yet).
pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    crate::wait::wait_for(&format!("TCP connect to {addr}"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
    })
}

/// How a read that expects the peer to close ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Clean end of stream, after these bytes.
    Eof(Vec<u8>),
    /// Reset or other error (the peer is gone too), after these bytes.
    Error(Vec<u8>, String),
}

impl Closed {
    /// The bytes received before the close.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Closed::Eof(b) | Closed::Error(b, _) => b,
        }
    }
}

/// Reads from `r` until end of stream or an error other than a read timeout; fails if
/// the peer keeps the connection open past `timeout`. `r` must have a read timeout set
/// (so the deadline is checked).
pub fn read_until_closed(r: &mut impl Read, timeout: Duration) -> anyhow::Result<Closed> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(Closed::Eof(got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Ok(Closed::Error(got, e.to_string())),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "peer did not close the connection within {timeout:?} ({} bytes received)",
                got.len()
            );
        }
    }
}

/// A TCP echo server on 127.0.0.1 (a stand-in BMC endpoint), one thread per
/// connection. Counts the connections it accepted. Stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds a free port and starts serving.
    pub fn start() -> anyhow::Result<EchoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind echo server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        acc.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || echo(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(EchoServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// Sends `payload` through a relay at `addr` to an echo server and checks that the
/// same bytes come back.
pub fn echo_roundtrip(addr: SocketAddr, payload: &[u8], timeout: Duration) -> anyhow::Result<()> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(payload).context("write payload")?;
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back)
        .with_context(|| format!("read {} echoed bytes through {addr}", payload.len()))?;
    anyhow::ensure!(back == payload, "echoed bytes differ from what was sent");
    Ok(())
}
