//! Loopback servers and measurement loops (blocking std sockets: the measuring side
//! should be as simple and cheap as possible).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Starts a server on 127.0.0.1:0 that handles each connection in a thread.
pub fn serve(handler: fn(TcpStream)) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || handler(s));
        }
    });
    Ok(addr)
}

/// Echoes everything back.
pub fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Reads to EOF, then answers one byte.
pub fn sink(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    let _ = s.write_all(b"k");
}

/// Reads and discards until EOF (for background load).
pub fn drain(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

pub fn connect(addr: &str) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends `total` bytes then waits for the sink's ack; returns Gbit/s.
pub fn bulk<S: Read + Write>(
    s: &mut S,
    total: usize,
    shutdown: impl FnOnce(&mut S),
) -> Result<f64> {
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        s.write_all(&chunk[..n])?;
        sent += n;
    }
    s.flush()?;
    shutdown(s);
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)
        .context("waiting for the sink's ack")?;
    let secs = start.elapsed().as_secs_f64();
    Ok(total as f64 * 8.0 / secs / 1e9)
}

/// Bulk throughput over plain TCP to `addr` (a sink).
pub fn bulk_tcp(addr: &str, total: usize) -> Result<f64> {
    let mut s = connect(addr)?;
    bulk(&mut s, total, |s| {
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// Request/response round trips of `size` bytes through an echo; returns the
/// per-iteration latencies in microseconds.
pub fn ping_pong(addr: &str, size: usize, iters: usize) -> Result<Vec<f64>> {
    let mut s = connect(addr)?;
    let msg = vec![0x42u8; size];
    let mut back = vec![0u8; size];
    // Warm up.
    for _ in 0..(iters / 10).max(10) {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Connect, send one byte, receive it back: microseconds per iteration.
pub fn open_to_first_byte(addr: &str, iters: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(iters);
    for i in 0..iters + 5 {
        let t = Instant::now();
        let mut s = connect(addr)?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        if i >= 5 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}

/// Runs a bulk writer to `addr` in the background until the returned flag is set.
pub fn background_bulk(addr: &str) -> Result<(Arc<AtomicBool>, std::thread::JoinHandle<u64>)> {
    let mut s = connect(addr)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let chunk = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while !flag.load(Ordering::Relaxed) {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(200));
    Ok((stop, h))
}

/// Percentile of samples (sorts in place).
pub fn pct(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

/// A plain TCP relay (the baseline the tunnel is held to): every connection to the
/// returned address is copied both ways to `upstream` by two threads.
pub fn plain_relay(upstream: String) -> Result<SocketAddr> {
    relay(upstream, pipe)
}

/// A relay that delivers every byte `one_way` after it arrived, both ways: a long
/// path (propagation delay, no bandwidth limit of its own) in front of `upstream`.
pub fn delay_relay(upstream: String, one_way: Duration) -> Result<SocketAddr> {
    relay(upstream, move |from, to| delayed_pipe(from, to, one_way))
}

fn relay(
    upstream: String,
    pipe: impl Fn(TcpStream, TcpStream) + Clone + Send + 'static,
) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for down in l.incoming().flatten() {
            let Ok(up) = TcpStream::connect(&upstream) else {
                continue;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                continue;
            };
            let (p1, p2) = (pipe.clone(), pipe.clone());
            std::thread::spawn(move || p1(down, up));
            std::thread::spawn(move || p2(up2, down2));
        }
    });
    Ok(addr)
}

fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if bytes.is_empty() || to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
            || n == 0
        {
            break;
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
