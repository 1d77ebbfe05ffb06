//! Opening the byte stream to a BMC: TCP, WebSocket over TCP, or WebSocket over
//! pinned TLS, all behind one deadline.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use smol::net::TcpStream;

use crate::error::Error;
use crate::target::{Endpoint, Scheme};
use crate::tls::{self, Trust};
use crate::ws::{self, WsOptions, WsStream};

/// The open byte stream to a BMC.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Raw TCP.
    Tcp(TcpStream),
    /// WebSocket over TCP.
    Ws(WsStream<TcpStream>),
    /// WebSocket over TLS.
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

/// What the open was doing, for timeout messages.
#[derive(Debug, Default)]
pub(crate) struct Phase(AtomicU8);

impl Phase {
    pub(crate) const CONNECT: u8 = 0;
    pub(crate) const TLS: u8 = 1;
    pub(crate) const WEBSOCKET: u8 = 2;
    pub(crate) const RFB: u8 = 3;

    pub(crate) fn set(&self, p: u8) {
        self.0.store(p, Ordering::Relaxed);
    }

    fn name(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::CONNECT => "connecting",
            Self::TLS => "TLS handshake",
            Self::WEBSOCKET => "WebSocket handshake",
            _ => "RFB handshake",
        }
    }
}

/// Runs `open` with a deadline; on expiry reports what was in progress.
pub(crate) async fn with_deadline<T>(
    ep: &Endpoint,
    timeout: Duration,
    phase: &Phase,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let deadline = async {
        smol::Timer::after(timeout).await;
        Err(Error::Timeout {
            endpoint: ep.authority(),
            after: timeout,
            phase: phase.name(),
        })
    };
    futures_lite::future::or(work, deadline).await
}

/// Dials `ep` and, for `ws`/`wss`, runs TLS and the WebSocket upgrade. Returns the
/// transport and the certificate fingerprint for `wss`.
pub(crate) async fn open(
    ep: &Endpoint,
    trust: Option<Trust>,
    ws_opts: WsOptions<'_>,
    phase: &Phase,
) -> Result<(Transport, Option<[u8; 32]>), Error> {
    phase.set(Phase::CONNECT);
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|source| Error::Unreachable {
            endpoint: ep.authority(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    match ep.scheme {
        Scheme::Tcp => Ok((Transport::Tcp(tcp), None)),
        Scheme::Ws => {
            phase.set(Phase::WEBSOCKET);
            let ws = ws::connect(tcp, ep, ws_opts).await?;
            Ok((Transport::Ws(ws), None))
        }
        Scheme::Wss => {
            phase.set(Phase::TLS);
            let trust = trust.ok_or_else(|| Error::NoPin {
                endpoint: ep.authority(),
            })?;
            let (tls, fp) = tls::connect(tcp, ep, trust).await?;
            phase.set(Phase::WEBSOCKET);
            let ws = ws::connect(tls, ep, ws_opts).await?;
            Ok((Transport::Wss(Box::new(ws)), Some(fp)))
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Transport::Tcp($s) => $e,
            Transport::Ws($s) => $e,
            Transport::Wss($s) => $e,
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_close(cx))
    }
}
