//! The smol shell: a UDP socket and timers around the sans-IO [`Connection`].
//! Every await has a deadline (the core's retransmission deadlines), so no call can
//! hang on a silent BMC.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use ring::rand::{SecureRandom as _, SystemRandom};
use smol::{Async, Timer};
use zeroize::Zeroizing;

use crate::commands::{
    self, BootDevice, ChassisAction, ChassisStatus, Command, DeviceId, Privilege,
};
use crate::conn::{Config, Connection, State};
use crate::error::{Error, ErrorKind};
use crate::packet::MAX_PACKET;
use crate::sol::SolState;

/// BMC credentials. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// User name (1-16 bytes).
    pub username: String,
    /// Password (at most 20 bytes).
    pub password: Zeroizing<String>,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Session options. The defaults are the safe ones.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for each answer before retransmitting.
    pub timeout: Duration,
    /// Retransmissions after the first try: a step fails after
    /// `timeout * (retries + 1)`.
    pub retries: u32,
    /// Cipher suites to accept, most preferred first. Only 17 and 3 are supported;
    /// others are ignored (suite 0 and suites without integrity never are used).
    pub cipher_suites: Vec<u8>,
    /// Allow IPMI 1.5 sessions with a BMC that does not offer IPMI 2.0 (off by
    /// default). IPMI 1.5 authenticates packets (MD5, else straight password; never
    /// auth type none) but does not encrypt them, and has no SOL. A BMC that offers
    /// IPMI 2.0 is always used over RMCP+ unless `force_ipmi15` is also set.
    pub allow_ipmi15: bool,
    /// Use IPMI 1.5 even with a BMC that offers IPMI 2.0 (for testing). Only valid
    /// together with `allow_ipmi15`; alone it is refused before anything is sent.
    pub force_ipmi15: bool,
    /// Privilege level for the session.
    pub privilege: Privilege,
    /// How long to wait for Get Channel Cipher Suites before trying the suites in
    /// order (skipped when only one suite is acceptable).
    pub cipher_query_timeout: Duration,
    /// While SOL is active, send a keepalive after this long without traffic: keeps
    /// the BMC from closing an idle session and notices a BMC that went away
    /// (a pending SOL read then fails with a timeout instead of waiting forever).
    pub keepalive: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: Duration::from_secs(1),
            retries: 2,
            cipher_suites: vec![17, 3],
            allow_ipmi15: false,
            force_ipmi15: false,
            privilege: Privilege::Administrator,
            cipher_query_timeout: Duration::from_millis(300),
            keepalive: Duration::from_secs(20),
        }
    }
}

fn entropy() -> crate::conn::Entropy {
    let rng = SystemRandom::new();
    Box::new(move |buf: &mut [u8]| {
        // The system RNG (getrandom) does not fail on supported Linux kernels.
        rng.fill(buf).expect("system random number generator");
    })
}

/// An open IPMI 2.0 session with a BMC.
#[derive(Debug)]
pub struct Session {
    sock: Async<StdUdp>,
    conn: Connection,
    opts: Options,
}

enum Wake {
    Datagram(usize),
    SocketError(std::io::Error),
    Timer,
}

impl Session {
    /// Opens a session: one UDP socket connected to `addr`, the RMCP+ handshake, and
    /// the privilege level. Fails within about `timeout * (retries + 1)` per step.
    pub async fn open(
        addr: SocketAddr,
        creds: &Credentials,
        opts: &Options,
    ) -> Result<Session, Error> {
        let io = |e: std::io::Error| {
            Error::new(
                ErrorKind::Unreachable,
                format!("UDP socket for {addr}: {e}"),
            )
        };
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let std_sock = StdUdp::bind(local).map_err(io)?;
        std_sock.connect(addr).map_err(io)?;
        let sock = Async::new(std_sock).map_err(io)?;
        let cfg = Config {
            username: Zeroizing::new(creds.username.as_bytes().to_vec()),
            password: Zeroizing::new(creds.password.as_bytes().to_vec()),
            privilege: opts.privilege,
            cipher_suites: opts.cipher_suites.clone(),
            allow_ipmi15: opts.allow_ipmi15,
            force_ipmi15: opts.force_ipmi15,
            timeout: opts.timeout,
            retries: opts.retries,
            cipher_query_timeout: opts.cipher_query_timeout,
            keepalive: opts.keepalive,
        };
        let conn = Connection::new(cfg, entropy(), Instant::now());
        let mut s = Session {
            sock,
            conn,
            opts: opts.clone(),
        };
        s.drive(|c| match c.state() {
            State::Active => Some(Ok(())),
            State::Opening => None,
            _ => Some(Err(closed_error(c))),
        })
        .await
        .map_err(|e| e.context(&format!("open IPMI session with {addr}")))?;
        Ok(s)
    }

    /// The cipher suite in use (0 for an IPMI 1.5 session, which has none).
    pub fn cipher_suite(&self) -> u8 {
        self.conn.cipher_suite().unwrap_or(0)
    }

    /// The IPMI 1.5 auth type, when this is an IPMI 1.5 session (only with
    /// [`Options::allow_ipmi15`]).
    pub fn ipmi15(&self) -> Option<crate::v15::AuthType> {
        self.conn.ipmi15()
    }

    /// Moves datagrams and time through the core until `done` has an answer.
    async fn drive<T>(
        &mut self,
        mut done: impl FnMut(&mut Connection) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut buf = vec![0u8; MAX_PACKET + 1];
        loop {
            self.flush().await;
            if let Some(r) = done(&mut self.conn) {
                self.flush().await;
                return r;
            }
            if self.conn.state() == State::Closed {
                return Err(closed_error(&self.conn));
            }
            // Always a deadline: the core has one whenever it waits for something.
            let deadline = self
                .conn
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + self.opts.timeout);
            let wake = future::or(
                async {
                    match self.sock.recv(&mut buf).await {
                        Ok(n) => Wake::Datagram(n),
                        Err(e) => Wake::SocketError(e),
                    }
                },
                async {
                    Timer::at(deadline).await;
                    Wake::Timer
                },
            )
            .await;
            self.wake(wake, &buf);
        }
    }

    fn wake(&mut self, wake: Wake, buf: &[u8]) {
        match wake {
            Wake::Datagram(n) => self
                .conn
                .handle_datagram(&buf[..n.min(buf.len())], Instant::now()),
            Wake::SocketError(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.conn.abort(Error::new(
                    ErrorKind::Unreachable,
                    format!("BMC port unreachable (ICMP): {e}"),
                ));
            }
            Wake::SocketError(e) => self.conn.abort(Error::new(
                ErrorKind::Unreachable,
                format!("UDP receive: {e}"),
            )),
            Wake::Timer => self.conn.handle_timeout(Instant::now()),
        }
    }

    async fn flush(&mut self) {
        while let Some(p) = self.conn.poll_transmit() {
            // A send error (e.g. ECONNREFUSED from an earlier ICMP) shows up again on
            // receive, or as a timeout: the core decides.
            if let Err(e) = self.sock.send(&p).await {
                tracing::debug!(error = %e, "UDP send to BMC failed");
            }
        }
    }

    /// Sends a raw command and returns the response data after the completion code.
    pub async fn command(&mut self, cmd: Command) -> Result<Vec<u8>, Error> {
        self.conn.send_command(cmd, Instant::now())?;
        self.drive(|c| c.poll_response()).await
    }

    /// Get Device ID.
    pub async fn device_id(&mut self) -> Result<DeviceId, Error> {
        let d = self.command(commands::get_device_id()).await?;
        commands::parse_device_id(&d)
    }

    /// Get Chassis Status.
    pub async fn chassis_status(&mut self) -> Result<ChassisStatus, Error> {
        let d = self.command(commands::get_chassis_status()).await?;
        commands::parse_chassis_status(&d)
    }

    /// Chassis Control: power on/off/cycle, hard reset, soft shutdown.
    pub async fn chassis_control(&mut self, a: ChassisAction) -> Result<(), Error> {
        self.command(commands::chassis_control(a)).await.map(drop)
    }

    /// Sets the boot device override, for the next boot or persistently.
    pub async fn set_boot_device(&mut self, d: BootDevice, persistent: bool) -> Result<(), Error> {
        self.command(commands::set_boot_device(d, persistent))
            .await
            .map(drop)
    }

    /// Reads the boot device override back: (device, persistent).
    pub async fn boot_device(&mut self) -> Result<(BootDevice, bool), Error> {
        let d = self.command(commands::get_boot_flags()).await?;
        commands::parse_boot_flags(&d)
    }

    /// Activates Serial over LAN on this session. If the BMC says SOL is already
    /// active (completion code 0x80, e.g. a stale session), deactivates it first.
    pub async fn sol(mut self) -> Result<Sol, Error> {
        if self.conn.ipmi15().is_some() {
            let _ = self.close_inner().await;
            return Err(Error::new(
                ErrorKind::Unsupported,
                "Serial over LAN needs an IPMI 2.0 (RMCP+) session; this is an IPMI 1.5 session",
            ));
        }
        let enc = self.conn.cipher_suite().is_some();
        let act = match self.command(commands::activate_sol(enc)).await {
            Err(e)
                if e.kind()
                    == (ErrorKind::Bmc {
                        completion_code: 0x80,
                    }) =>
            {
                self.command(commands::deactivate_sol()).await?;
                self.command(commands::activate_sol(enc)).await
            }
            r => r,
        };
        let act = match act.and_then(|d| commands::parse_activate_sol(&d)) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.close_inner().await;
                return Err(e.context("activate SOL"));
            }
        };
        tracing::debug!(?act, "SOL active");
        self.conn.start_sol(
            SolState::new(act.inbound_max, self.opts.timeout, self.opts.retries),
            Instant::now(),
        );
        Ok(Sol { session: self })
    }

    async fn close_inner(&mut self) -> Result<(), Error> {
        self.conn.close(Instant::now());
        self.drive(|c| match c.state() {
            State::Closed => Some(match c.error() {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }),
            _ => None,
        })
        .await
    }

    /// Closes the session (Close Session, waited for).
    pub async fn close(mut self) -> Result<(), Error> {
        self.close_inner().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Not closed by the caller (or cancelled): send Close Session once, without
        // waiting, so the BMC frees the slot.
        if self.conn.state() == State::Active {
            self.conn.close(Instant::now());
            while let Some(p) = self.conn.poll_transmit() {
                let _ = self.sock.get_ref().send(&p);
            }
        }
    }
}

fn closed_error(c: &Connection) -> Error {
    c.error()
        .cloned()
        .unwrap_or_else(|| Error::protocol("session closed"))
}

/// An active Serial over LAN session: a bidirectional byte stream to the host's
/// serial console.
#[derive(Debug)]
pub struct Sol {
    session: Session,
}

impl Sol {
    fn state(&mut self) -> Result<&mut SolState, Error> {
        if self.session.conn.state() == State::Closed {
            return Err(closed_error(&self.session.conn));
        }
        self.session
            .conn
            .sol_mut()
            .ok_or_else(|| Error::protocol("SOL is not active"))
    }

    /// Reads serial output; 0 means the BMC deactivated SOL.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.session
            .drive(|c| {
                let s = c.sol_mut()?;
                if s.readable() > 0 {
                    return Some(Ok(s.read(buf)));
                }
                s.deactivating().then_some(Ok(0))
            })
            .await
    }

    /// Queues all of `data` for the serial input (waits while the send buffer is
    /// full; see [`flush`](Self::flush) to wait for the acknowledgements).
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let n = self.state()?.write(data);
            data = &data[n..];
            self.session.conn.flush_sol(Instant::now());
            if !data.is_empty() {
                self.session
                    .drive(|c| {
                        let s = c.sol_mut()?;
                        (s.unacked() < 8 * 1024).then_some(Ok(()))
                    })
                    .await?;
            }
        }
        self.session.flush().await;
        Ok(())
    }

    /// Waits until the BMC acknowledged everything written.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.session.conn.flush_sol(Instant::now());
        self.session
            .drive(|c| {
                let s = c.sol_mut()?;
                (s.unacked() == 0).then_some(Ok(()))
            })
            .await
    }

    /// Sends a serial break.
    pub async fn send_break(&mut self) -> Result<(), Error> {
        self.state()?.send_break();
        self.flush().await
    }

    /// Relays between SOL and `stream` until either side ends (the stream reaches
    /// EOF or SOL is deactivated), then closes the session.
    pub async fn relay<S>(self, stream: S) -> Result<(), Error>
    where
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
    {
        self.relay_with_breaks(stream, None).await
    }

    /// [`Sol::relay`], also sending a serial break each time `breaks` yields (a
    /// closed channel just stops asking).
    pub async fn relay_with_breaks<S>(
        mut self,
        mut stream: S,
        breaks: Option<smol::channel::Receiver<()>>,
    ) -> Result<(), Error>
    where
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
    {
        let r = self.relay_inner(&mut stream, breaks).await;
        let c = self.close().await;
        r.and(c)
    }

    async fn relay_inner<S>(
        &mut self,
        stream: &mut S,
        mut breaks: Option<smol::channel::Receiver<()>>,
    ) -> Result<(), Error>
    where
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
    {
        let mut net = vec![0u8; MAX_PACKET + 1];
        let mut inbuf = vec![0u8; 1024];
        let mut outbuf = vec![0u8; 4096];
        let mut stream_open = true;
        loop {
            self.session.conn.flush_sol(Instant::now());
            self.session.flush().await;
            if self.session.conn.state() == State::Closed {
                return Err(closed_error(&self.session.conn));
            }
            // Deliver what the BMC sent.
            let n = self.state()?.read(&mut outbuf);
            if n > 0 {
                stream
                    .write_all(&outbuf[..n])
                    .await
                    .map_err(|e| Error::protocol(format!("SOL relay: write to stream: {e}")))?;
                continue;
            }
            if self.state()?.deactivating() {
                return Ok(());
            }
            if !stream_open && self.state()?.unacked() == 0 {
                return Ok(());
            }
            let room = self.state()?.unacked() < 8 * 1024 && stream_open;
            let deadline = self
                .session
                .conn
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            enum Ev {
                Net(Wake),
                Input(std::io::Result<usize>),
                Break(bool),
            }
            let break_rx = breaks.clone();
            let sock = &self.session.sock;
            let ev = future::or(
                async {
                    match sock.recv(&mut net).await {
                        Ok(n) => Ev::Net(Wake::Datagram(n)),
                        Err(e) => Ev::Net(Wake::SocketError(e)),
                    }
                },
                future::or(
                    async {
                        Timer::at(deadline).await;
                        Ev::Net(Wake::Timer)
                    },
                    future::or(
                        async {
                            if room {
                                Ev::Input(stream.read(&mut inbuf).await)
                            } else {
                                future::pending().await
                            }
                        },
                        async {
                            match &break_rx {
                                Some(rx) => Ev::Break(rx.recv().await.is_ok()),
                                None => future::pending().await,
                            }
                        },
                    ),
                ),
            )
            .await;
            match ev {
                Ev::Net(w) => self.session.wake(w, &net),
                Ev::Input(Ok(0)) => stream_open = false,
                Ev::Input(Ok(n)) => {
                    let _ = self.state()?.write(&inbuf[..n]);
                }
                Ev::Input(Err(e)) => {
                    return Err(Error::protocol(format!("SOL relay: read from stream: {e}")));
                }
                Ev::Break(true) => self.state()?.send_break(),
                Ev::Break(false) => breaks = None,
            }
        }
    }

    /// Deactivates SOL and closes the session.
    pub async fn close(mut self) -> Result<(), Error> {
        let _ = self.flush().await;
        self.session.conn.stop_sol();
        let d = self.session.command(commands::deactivate_sol()).await;
        let c = self.session.close_inner().await;
        // 0x80: already deactivated (e.g. by the BMC).
        match d {
            Err(e)
                if e.kind()
                    != (ErrorKind::Bmc {
                        completion_code: 0x80,
                    }) =>
            {
                Err(e)
            }
            _ => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The agent spawns these on a multi-threaded executor: they must be Send.
    /// (Compiled, never called.)
    #[allow(dead_code)]
    fn futures_are_send(s: &mut Session, sol: &mut Sol) {
        assert_send(&s.chassis_status());
        assert_send(&s.chassis_control(ChassisAction::PowerOn));
        assert_send(&Session::open(
            "127.0.0.1:623".parse().unwrap(),
            &Credentials::new("a", "b"),
            &Options::default(),
        ));
        let mut buf = [0u8; 4];
        assert_send(&sol.read(&mut buf));
    }

    #[allow(dead_code)]
    fn relay_is_send(sol: Sol, stream: smol::net::TcpStream) {
        assert_send(&sol.relay(stream));
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials::new("admin", "hunter2");
        let s = format!("{c:?}");
        assert!(
            s.contains("admin") && s.contains("***") && !s.contains("hunter2"),
            "{s}"
        );
    }
}
