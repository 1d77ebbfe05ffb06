//! VNC relay throughput: a client reads a bulk "framebuffer" stream from an
//! in-process RFB server, directly and through the agent's VNC path in miniature
//! (`connect_bmc` toward the server, `serve_front` toward the client, a copy both
//! ways), over TCP and over WebSocket. Prints MB/s and the relayed/direct ratio.
//!
//! `cargo bench -p outband-console --bench vnc_relay` (OUTBAND_BENCH_MB sets the
//! volume, default 256).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::handshake::server::{Request, Response};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use outband_console::{BmcConsole, VncTarget, connect_bmc, serve_front};
use smol::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// An RFB server (None only) that sends `bytes` after ClientInit, over TCP or as
/// binary WebSocket messages.
async fn bulk_server(bytes: usize, ws: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    smol::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            smol::spawn(async move {
                if ws {
                    // Choose the `binary` subprotocol, as QEMU and websockify do.
                    #[allow(clippy::result_large_err)] // tungstenite's callback signature
                    let choose = |_: &Request, mut resp: Response| {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", "binary".parse().expect("value"));
                        Ok(resp)
                    };
                    let ws = async_tungstenite::accept_hdr_async(s, choose)
                        .await
                        .expect("ws accept");
                    serve(ws_bytes(ws), bytes).await;
                } else {
                    serve(s, bytes).await;
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

/// A server-side WebSocket as a byte stream (every write one binary message).
fn ws_bytes(
    ws: async_tungstenite::WebSocketStream<TcpStream>,
) -> impl futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {
    let (tx, rx) = ws.split();
    let reader = async_tungstenite::ByteReader::new(rx);
    let writer = async_tungstenite::ByteWriter::new(tx);
    Duplex(reader, writer)
}

struct Duplex<R, W>(R, W);

impl<R: futures_lite::AsyncRead + Unpin, W: Unpin> futures_lite::AsyncRead for Duplex<R, W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: futures_lite::AsyncWrite + Unpin> futures_lite::AsyncWrite for Duplex<R, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.1).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_close(cx)
    }
}

async fn serve<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
    mut s: S,
    bytes: usize,
) {
    if serve_front(&mut s).await.is_err() {
        return;
    }
    let mut init = [0u8; 1];
    s.read_exact(&mut init).await.expect("ClientInit");
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        if s.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        left -= n;
    }
    let _ = s.flush().await;
}

/// The relay: connect_bmc, serve_front, copy both ways.
async fn relay(target: VncTarget) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    smol::spawn(async move {
        while let Ok((mut front, _)) = l.accept().await {
            let target = target.clone();
            smol::spawn(async move {
                let bmc = connect_bmc(&target, T).await.expect("connect_bmc");
                serve_front(&mut front).await.expect("serve_front");
                copy_both_ways(bmc, front).await;
            })
            .detach();
        }
    })
    .detach();
    addr
}

async fn copy_both_ways(bmc: BmcConsole, front: TcpStream) {
    let (mut br, mut bw) = futures_lite::io::split(bmc);
    let (mut fr, mut fw) = (front.clone(), front);
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = fr.read(&mut buf).await {
            if bw.write_all(&buf[..n]).await.is_err() || bw.flush().await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = br.read(&mut buf).await {
            if fw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    futures_lite::future::or(up, down).await;
}

/// Opens a session at `url`, sends ClientInit, reads `bytes`; returns MB/s.
async fn measure(url: String, bytes: usize) -> f64 {
    let start = Instant::now();
    let mut c = connect_bmc(&VncTarget::new(url), T).await.expect("client");
    c.write_all(&[1]).await.expect("ClientInit");
    c.flush().await.expect("flush");
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < bytes {
        let n = c.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {got} bytes");
        got += n;
    }
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn main() {
    let mb: usize = std::env::var("OUTBAND_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let bytes = mb << 20;
    smol::block_on(async {
        for ws in [false, true] {
            let server = bulk_server(bytes, ws).await;
            let url = if ws {
                format!("ws://{server}/")
            } else {
                format!("vnc://{server}")
            };
            let via = relay(VncTarget::new(url.clone())).await;
            // Warm up both paths, then take the best of three.
            measure(url.clone(), bytes / 8).await;
            measure(format!("vnc://{via}"), bytes / 8).await;
            let mut direct: f64 = 0.0;
            let mut relayed: f64 = 0.0;
            for _ in 0..3 {
                direct = direct.max(measure(url.clone(), bytes).await);
                relayed = relayed.max(measure(format!("vnc://{via}"), bytes).await);
            }
            let kind = if ws { "ws " } else { "tcp" };
            println!(
                "vnc_relay {kind}: direct {direct:7.0} MB/s, relayed {relayed:7.0} MB/s, ratio {:.2} ({mb} MiB, best of 3)",
                relayed / direct
            );
        }
    });
}
