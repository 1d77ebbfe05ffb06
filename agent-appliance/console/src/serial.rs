//! WebSocket serial consoles (OpenBMC `wss://bmc/console0` style): the host's serial
//! bytes in WebSocket messages, authenticated by a session token header or cookie.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

use crate::error::Error;
use crate::target::{Endpoint, Scheme};
use crate::tls::Trust;
use crate::transport::{self, Phase, Transport};
use crate::ws::WsOptions;

/// An open WebSocket serial console: read the host's output, write keystrokes.
#[derive(Debug)]
pub struct SerialConsole {
    transport: Transport,
    cert_sha256: Option<[u8; 32]>,
}

impl SerialConsole {
    /// For `wss://`: the SHA-256 fingerprint of the certificate the BMC presented.
    pub fn observed_cert_sha256(&self) -> Option<[u8; 32]> {
        self.cert_sha256
    }
}

/// Opens a WebSocket serial console at `url` (`ws://` or `wss://`) within `timeout`.
///
/// `auth_header` is sent with the upgrade request, e.g. `("X-Auth-Token", token)` or
/// `("Cookie", "SESSION=...")`, or `("Sec-WebSocket-Protocol", token)` for servers
/// that take the token as subprotocol (as a browser must send it) and echo it; a
/// 401/403 answer is `bmc_auth_failed`. `wss://` needs
/// `cert_sha256`, the pin of the BMC's leaf certificate. No subprotocol is requested;
/// text messages are accepted as data (some BMCs send them).
pub async fn connect_serial_ws(
    url: &str,
    auth_header: Option<(&str, &str)>,
    cert_sha256: Option<[u8; 32]>,
    timeout: Duration,
) -> Result<SerialConsole, Error> {
    let ep = Endpoint::parse(url)?;
    let trust = match ep.scheme {
        Scheme::Wss => Some(Trust::from_target(cert_sha256, false, &ep)?),
        Scheme::Ws => None,
        Scheme::Tcp => {
            return Err(Error::BadTarget {
                url: url.to_owned(),
                reason: "a WebSocket serial console needs ws:// or wss://",
            });
        }
    };
    let opts = WsOptions {
        subprotocol: None,
        header: auth_header,
        accept_text: true,
    };
    let phase = Phase::default();
    let work = async {
        let (transport, cert_sha256) = transport::open(&ep, trust, opts, &phase).await?;
        Ok(SerialConsole {
            transport,
            cert_sha256,
        })
    };
    transport::with_deadline(&ep, timeout, &phase, work).await
}

impl AsyncRead for SerialConsole {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.transport).poll_read(cx, buf)
    }
}

impl AsyncWrite for SerialConsole {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.transport).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.transport).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.transport).poll_close(cx)
    }
}
