//! WebSocket as a byte stream: the client upgrade (optional subprotocol and one extra
//! header for a session token), then binary messages in both directions.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::{ByteWriter, WebSocketReceiver, WebSocketSender};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::Stream as _;

use crate::error::Error;
use crate::target::Endpoint;

/// The largest WebSocket message (and frame) accepted from a BMC. A raw 1920x1200
/// framebuffer update at 32 bits per pixel is 9.2 MB, and QEMU sends an update as one
/// message; anything larger is refused before it is buffered.
pub const MAX_MESSAGE: usize = 16 << 20;

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

/// Why an upgrade failed.
#[derive(Debug)]
pub(crate) enum WsFail {
    /// We asked for a subprotocol and the server chose none. RFC 6455 allows that,
    /// tungstenite does not: the caller retries on a new connection without asking.
    NoSubprotocol,
    /// Anything else.
    Other(Error),
}

impl From<Error> for WsFail {
    fn from(e: Error) -> Self {
        WsFail::Other(e)
    }
}

/// Runs the client upgrade over `stream` (plain TCP or TLS).
pub(crate) async fn connect<S>(
    stream: S,
    ep: &Endpoint,
    opts: WsOptions<'_>,
) -> Result<WsStream<S>, WsFail>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let fail = |status: Option<u16>, reason: String| Error::WebSocket {
        endpoint: ep.authority(),
        status,
        reason,
    };
    let mut request = ep
        .ws_url()
        .into_client_request()
        .map_err(|e| fail(None, e.to_string()))?;
    if let Some(p) = opts.subprotocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(p));
    }
    if let Some((name, value)) = opts.header {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(None, "invalid auth header name".into()))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| fail(None, "invalid auth header value".into()))?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    // write_buffer_size 0: every message goes to the socket at once, so an interactive
    // relay that does not flush after each write still moves keystrokes.
    let config = WebSocketConfig::default()
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_MESSAGE);
    let (ws, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(resp) => {
                    let status = resp.status();
                    WsFail::Other(fail(
                        Some(status.as_u16()),
                        status.canonical_reason().unwrap_or("refused").to_owned(),
                    ))
                }
                WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                    SubProtocolError::NoSubProtocol,
                )) => WsFail::NoSubprotocol,
                e => WsFail::Other(fail(None, e.to_string())),
            })?;
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
        // One message per write, bounded like what we accept.
        let n = buf.len().min(MAX_MESSAGE);
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
