//! WebSocket as a byte stream: the client upgrade (optional subprotocol and one extra
//! header for a session token; see [`crate::ws_upgrade`]), then binary messages in
//! both directions, framed by tungstenite.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::{ByteWriter, WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::Stream as _;
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::target::Endpoint;
use crate::ws_upgrade::{Request, Upgrade, UpgradeError};

/// The largest WebSocket message (and frame) accepted from a BMC. A raw 1920x1200
/// framebuffer update at 32 bits per pixel is 9.2 MB, and QEMU sends an update as one
/// message; anything larger is refused before it is buffered.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The largest message we send: what goes toward a BMC is input events and
/// keystrokes, small; a larger write is split.
const MAX_WRITE: usize = 64 * 1024;

/// Upgrade options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WsOptions<'a> {
    /// `Sec-WebSocket-Protocol` to ask for (`binary` for VNC).
    pub(crate) subprotocol: Option<&'static str>,
    /// One extra request header (session token or cookie); marked sensitive.
    pub(crate) header: Option<(&'a str, &'a str)>,
    /// Whether text messages are data too (serial consoles) or a protocol error (VNC).
    pub(crate) accept_text: bool,
}

/// A WebSocket connection read and written as a byte stream: every write is one
/// binary message; reads return message payloads in order. Ping and pong are handled
/// (tungstenite answers pings); a close ends the stream.
pub struct WsStream<S> {
    rx: WebSocketReceiver<S>,
    tx: ByteWriter<WebSocketSender<S>>,
    pending: Bytes,
    accept_text: bool,
    eof: bool,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("pending", &self.pending.len())
            .field("accept_text", &self.accept_text)
            .field("eof", &self.eof)
            .finish()
    }
}

/// Runs the client upgrade over `stream` (plain TCP or TLS): our request, the
/// server's head checked by [`crate::ws_upgrade`], then binary messages.
pub(crate) async fn connect<S>(
    mut stream: S,
    ep: &Endpoint,
    opts: WsOptions<'_>,
) -> Result<WsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |status: Option<u16>, reason: String| Error::WebSocket {
        endpoint: ep.authority(),
        status,
        reason,
    };
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| fail(None, "no randomness for the key".into()))?;
    let host = ep.authority();
    let req = Request {
        host: &host,
        path: &ep.path,
        subprotocol: opts.subprotocol,
        header: opts.header,
    };
    let (upgrade, request) = Upgrade::start(&req, nonce).map_err(|e| fail(None, e.to_string()))?;
    // The request may carry a session token.
    let request = Zeroizing::new(request);
    let io = |e: io::Error| fail(None, e.to_string());
    stream.write_all(&request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_len = loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(fail(None, "connection closed during the upgrade".into()));
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        match upgrade.handle_response(&head) {
            Ok(Some(len)) => break len,
            Ok(None) => {}
            Err(UpgradeError::Status { status, reason }) => return Err(fail(Some(status), reason)),
            Err(e) => return Err(fail(None, e.to_string())),
        }
    };
    // Bytes after the head are already frames (QEMU sends its RFB greeting at once).
    let frames = head.split_off(head_len);
    // write_buffer_size 0: every message goes to the socket at once, so an interactive
    // relay that does not flush after each write still moves keystrokes.
    let config = WebSocketConfig::default()
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_WRITE);
    let ws = WebSocketStream::from_partially_read(stream, frames, Role::Client, Some(config)).await;
    let (tx, rx) = ws.split();
    Ok(WsStream {
        rx,
        tx: ByteWriter::new(tx),
        pending: Bytes::new(),
        accept_text: opts.accept_text,
        eof: false,
    })
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A message that met a full socket waits in tungstenite's buffer until the
        // next write or flush. A relay that does not flush (and has nothing more to
        // write) still keeps reading: push the tail out from here. Nothing to send
        // costs no syscall; errors surface on the write side.
        let _ = Pin::new(&mut this.tx).poll_flush(cx);
        loop {
            if !this.pending.is_empty() {
                let n = buf.len().min(this.pending.len());
                let chunk = this.pending.split_to(n);
                buf.get_mut(..n)
                    .ok_or_else(|| io::Error::other("short buffer"))?
                    .copy_from_slice(&chunk);
                return Poll::Ready(Ok(n));
            }
            if this.eof || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match ready!(Pin::new(&mut this.rx).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_io_error(e))),
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(m @ Message::Text(_))) if this.accept_text => {
                    this.pending = m.into_data();
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message on a binary console",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // One message per write; the previous one is flushed first (poll_ready), so
        // at most one message waits in tungstenite's buffer.
        let n = buf.len().min(MAX_WRITE);
        Pin::new(&mut self.tx).poll_write(cx, buf.get(..n).unwrap_or(buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tx).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tx).poll_close(cx)
    }
}

fn ws_io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}
