//! The VNC I/O shell: [`connect_bmc`] opens a BMC's graphical console and runs the
//! RFB security handshake with it; [`serve_front`] runs the None-only server handshake
//! toward the browser. After both, the caller copies bytes both ways unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::error::Error;
use crate::rfb::{BmcHandshake, FrontHandshake, HandshakeError, MAX_REASON_LEN, Version};
use crate::target::{Endpoint, Scheme, VncTarget};
use crate::tls::Trust;
use crate::transport::{self, Phase, Transport};
use crate::ws::WsOptions;

/// A BMC's graphical console with the RFB security handshake done: the next bytes to
/// send are the client's ClientInit, the next to arrive the server's ServerInit.
#[derive(Debug)]
pub struct BmcConsole {
    transport: Transport,
    version: Version,
    security_type: u8,
    cert_sha256: Option<[u8; 32]>,
}

impl BmcConsole {
    /// The RFB version spoken with the BMC.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The security type used with the BMC (1 None, 2 VNC Authentication).
    pub fn security_type(&self) -> u8 {
        self.security_type
    }

    /// For `wss://`: the SHA-256 fingerprint of the certificate the BMC presented (the
    /// pinned one, or under trust on first use the one to store).
    pub fn observed_cert_sha256(&self) -> Option<[u8; 32]> {
        self.cert_sha256
    }
}

/// Opens the console at `target` and authenticates to it, all within `timeout`.
///
/// `wss://` fails closed (`bmc_tls_unpinned`) unless the target has a certificate pin
/// or asks for trust on first use. Errors carry a stable [`Error::code`].
pub async fn connect_bmc(target: &VncTarget, timeout: Duration) -> Result<BmcConsole, Error> {
    let ep = Endpoint::parse(&target.url)?;
    let trust = match ep.scheme {
        Scheme::Wss => Some(Trust::from_target(
            target.cert_sha256,
            target.trust_on_first_use,
            &ep,
        )?),
        Scheme::Tcp | Scheme::Ws => None,
    };
    let opts = WsOptions {
        subprotocol: Some("binary"),
        header: None,
        accept_text: false,
    };
    let phase = Phase::default();
    let work = async {
        let (mut transport, cert_sha256) = transport::open(&ep, trust, opts, &phase).await?;
        phase.set(Phase::RFB);
        let password = target.password.as_ref().map(|p| p.as_bytes());
        let mut hs = BmcHandshake::new(password);
        drive(&mut transport, &mut hs).await.map_err(|e| match e {
            Drive::Protocol(source) => Error::Bmc {
                endpoint: ep.authority(),
                source,
            },
            Drive::Io(source) => Error::BmcIo {
                endpoint: ep.authority(),
                source,
            },
        })?;
        Ok(BmcConsole {
            transport,
            version: hs.version().unwrap_or(Version::V3_8),
            security_type: hs.security_type().unwrap_or(crate::rfb::SEC_NONE),
            cert_sha256,
        })
    };
    transport::with_deadline(&ep, timeout, &phase, work).await
}

/// Runs the server side of the RFB security handshake on `front` (toward the
/// browser): RFB 3.8 (3.3 and 3.7 accepted), security type None only. Returns once
/// the client may send ClientInit; nothing after the handshake is read.
///
/// Put a deadline around it: it waits for the client as long as the client waits.
pub async fn serve_front<S>(front: &mut S) -> Result<Version, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = FrontHandshake::new();
    drive(front, &mut hs).await.map_err(|e| match e {
        Drive::Protocol(e) => Error::Front(e),
        Drive::Io(e) => Error::FrontIo(e),
    })?;
    Ok(hs.version().unwrap_or(Version::V3_8))
}

/// [`serve_front`] with a deadline: a client that does not finish the handshake
/// within `timeout` is dropped (`client_protocol`), so it cannot hold the BMC session
/// (many BMCs allow one or two KVM sessions) open indefinitely.
pub async fn serve_front_within<S>(front: &mut S, timeout: Duration) -> Result<Version, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = async {
        smol::Timer::after(timeout).await;
        Err(Error::FrontIo(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no RFB handshake from the client within {timeout:?}"),
        )))
    };
    futures_lite::future::or(serve_front(front), deadline).await
}

/// The two handshake machines, as the driver sees them.
trait Machine {
    fn take_output(&mut self) -> Vec<u8>;
    fn is_done(&self) -> bool;
    fn wants(&self) -> usize;
    fn handle_input(&mut self, data: &[u8]) -> Result<usize, HandshakeError>;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn take_output(&mut self) -> Vec<u8> {
                <$t>::take_output(self)
            }
            fn is_done(&self) -> bool {
                <$t>::is_done(self)
            }
            fn wants(&self) -> usize {
                <$t>::wants(self)
            }
            fn handle_input(&mut self, data: &[u8]) -> Result<usize, HandshakeError> {
                <$t>::handle_input(self, data)
            }
        }
    };
}
machine!(BmcHandshake);
machine!(FrontHandshake);

enum Drive {
    Protocol(HandshakeError),
    Io(io::Error),
}

/// Sends what the machine has to say and reads exactly what it wants, until done.
async fn drive<S, M>(s: &mut S, m: &mut M) -> Result<(), Drive>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Machine,
{
    let mut buf = [0u8; MAX_REASON_LEN as usize];
    loop {
        let out = m.take_output();
        if !out.is_empty() {
            s.write_all(&out).await.map_err(Drive::Io)?;
            s.flush().await.map_err(Drive::Io)?;
        }
        if m.is_done() {
            return Ok(());
        }
        let want = m.wants().min(buf.len());
        let Some(dst) = buf.get_mut(..want).filter(|d| !d.is_empty()) else {
            return Err(Drive::Protocol(HandshakeError::AlreadyFailed));
        };
        let n = s.read(dst).await.map_err(Drive::Io)?;
        if n == 0 {
            return Err(Drive::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Err(e) = m.handle_input(buf.get(..n).unwrap_or_default()) {
            // A failure message for the peer (front side, 3.8), best effort.
            let out = m.take_output();
            if !out.is_empty() {
                let _ = s.write_all(&out).await;
                let _ = s.flush().await;
            }
            return Err(Drive::Protocol(e));
        }
    }
}

impl AsyncRead for BmcConsole {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.transport).poll_read(cx, buf)
    }
}

impl AsyncWrite for BmcConsole {
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
