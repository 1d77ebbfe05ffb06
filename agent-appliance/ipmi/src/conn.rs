//! The sans-IO session core: establishes an RMCP+ session (Get Channel Authentication
//! Capabilities → Get Channel Cipher Suites or fallback → Open Session → RAKP 1-4 →
//! Set Session Privilege Level), runs one command at a time with retransmission,
//! carries SOL payloads, and closes the session. With the IPMI 1.5 opt-in, the
//! 1.5 session steps of [`ipmi15`](self) replace Open Session and RAKP.
//!
//! No sockets, clock or randomness inside: datagrams go in through
//! [`Connection::handle_datagram`], come out of [`Connection::poll_transmit`]; time
//! goes in as `Instant`s ([`Connection::poll_timeout`] says when to call
//! [`Connection::handle_timeout`]); random bytes come from the [`Entropy`] given at
//! construction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::commands::{self, AuthCaps, Command, Privilege};
use crate::error::{Error, ErrorKind};
use crate::message::{self, Response};
use crate::packet::{self, Packet, Security, payload};
use crate::rakp::{self, CipherSuite, Rakp2, RakpError, RakpParams};
use crate::sol::SolState;

mod ipmi15;

/// A source of random bytes (session ids, RAKP random numbers, AES IVs).
pub type Entropy = Box<dyn FnMut(&mut [u8]) + Send>;

/// Longest user name IPMI allows.
pub const MAX_USERNAME: usize = 16;
/// Longest password IPMI 2.0 allows.
pub const MAX_PASSWORD: usize = 20;

/// What the session core needs to know.
#[derive(Clone)]
pub struct Config {
    /// User name (1..=16 bytes; anonymous/null user names are refused).
    pub username: Zeroizing<Vec<u8>>,
    /// Password (at most 20 bytes).
    pub password: Zeroizing<Vec<u8>>,
    /// Privilege level to request.
    pub privilege: Privilege,
    /// Acceptable cipher suites, most preferred first (only 3 and 17 are supported).
    pub cipher_suites: Vec<u8>,
    /// Allow IPMI 1.5 sessions (authenticated, never encrypted) with a BMC that does
    /// not offer IPMI 2.0.
    pub allow_ipmi15: bool,
    /// Use IPMI 1.5 even when the BMC offers IPMI 2.0 (for testing; requires
    /// `allow_ipmi15`).
    pub force_ipmi15: bool,
    /// Time to wait for each answer before retransmitting.
    pub timeout: Duration,
    /// Retransmissions after the first try.
    pub retries: u32,
    /// How long to wait for Get Channel Cipher Suites before falling back to trying
    /// the suites in order (some BMCs never answer it).
    pub cipher_query_timeout: Duration,
    /// While SOL is active, send a keepalive command after this long without traffic
    /// (BMCs close idle sessions, and it detects a BMC that went away).
    pub keepalive: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"***")
            .field("privilege", &self.privilege)
            .field("cipher_suites", &self.cipher_suites)
            .field("allow_ipmi15", &self.allow_ipmi15)
            .field("force_ipmi15", &self.force_ipmi15)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Establishing the session.
    Opening,
    /// Open: commands may be sent.
    Active,
    /// Close Session sent, waiting for the answer.
    Closing,
    /// Closed (normally or after an error; see [`Connection::error`]).
    Closed,
}

#[derive(Debug)]
enum Phase {
    AuthCaps,
    CipherSuites {
        index: u8,
        records: Vec<u8>,
    },
    OpenSession {
        suite: CipherSuite,
        rest: Vec<CipherSuite>,
    },
    Rakp1 {
        params: RakpParams,
    },
    Rakp3 {
        params: RakpParams,
        r2: Rakp2,
    },
    /// IPMI 1.5: Get Session Challenge sent.
    Challenge15,
    /// IPMI 1.5: Activate Session sent.
    Activate15 {
        initial_in: u32,
    },
    SetPrivilege,
    Active,
    Closing,
    Closed,
}

/// What is waiting for an answer.
#[derive(Debug)]
struct Pending {
    /// For session commands: the command, re-encoded on each retransmission with a
    /// fresh session sequence number. None: `bytes` are resent as they are.
    cmd: Option<Command>,
    rq_seq: u8,
    bytes: Vec<u8>,
    deadline: Instant,
    tries_left: u32,
    timeout: Duration,
}

/// An IPMI 2.0 session, sans IO.
pub struct Connection {
    cfg: Config,
    entropy: Entropy,
    phase: Phase,
    out: VecDeque<Vec<u8>>,
    pending: Option<Pending>,
    error: Option<Error>,
    last_reject: Option<String>,
    tag: u8,
    rq_seq: u8,
    console_sid: u32,
    bmc_sid: u32,
    sec: Option<Security>,
    suite: Option<CipherSuite>,
    out_seq: u32,
    in_max: u32,
    in_mask: u64,
    response: Option<Result<Vec<u8>, Error>>,
    user_cmd: bool,
    sol: Option<SolState>,
    last_activity: Option<Instant>,
    v15: Option<ipmi15::V15State>,
    caps_retried: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("phase", &self.phase)
            .field("suite", &self.suite.map(|s| s.id))
            .field("console_sid", &self.console_sid)
            .field("bmc_sid", &self.bmc_sid)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Starts establishing a session; the first datagram is ready in
    /// [`poll_transmit`](Self::poll_transmit). A configuration this crate refuses
    /// (null user name, no acceptable suite, over-long credentials) gives a closed
    /// connection whose [`error`](Self::error) says why.
    pub fn new(cfg: Config, entropy: Entropy, now: Instant) -> Connection {
        let mut c = Connection {
            cfg,
            entropy,
            phase: Phase::AuthCaps,
            out: VecDeque::new(),
            pending: None,
            error: None,
            last_reject: None,
            tag: 0,
            rq_seq: 0,
            console_sid: 0,
            bmc_sid: 0,
            sec: None,
            suite: None,
            out_seq: 0,
            in_max: 0,
            in_mask: 0,
            response: None,
            user_cmd: false,
            sol: None,
            last_activity: None,
            v15: None,
            caps_retried: false,
        };
        if let Err(e) = c.check_config() {
            c.error = Some(e);
            c.phase = Phase::Closed;
            return c;
        }
        let mut sid = [0u8; 4];
        (c.entropy)(&mut sid);
        // Never 0: that means "no session".
        c.console_sid = u32::from_le_bytes(sid).max(1);
        let cmd = commands::get_channel_auth_caps(c.cfg.privilege);
        let msg = message::encode_request(cmd.netfn, cmd.cmd, c.next_rq_seq(), &cmd.data);
        match packet::encode_v15(&msg) {
            Ok(bytes) => c.send_handshake(bytes, now, c.cfg.timeout),
            Err(e) => c.fail(Error::protocol(e.to_string())),
        }
        c
    }

    fn check_config(&self) -> Result<(), Error> {
        let cfg = &self.cfg;
        if cfg.username.is_empty() {
            return Err(Error::new(
                ErrorKind::AuthFailed,
                "refusing an anonymous/null user name",
            ));
        }
        if cfg.username.len() > MAX_USERNAME || cfg.password.len() > MAX_PASSWORD {
            return Err(Error::new(
                ErrorKind::AuthFailed,
                format!(
                    "user name longer than {MAX_USERNAME} or password longer than {MAX_PASSWORD} bytes"
                ),
            ));
        }
        if cfg.force_ipmi15 && !cfg.allow_ipmi15 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "force_ipmi15 requires allow_ipmi15 (IPMI 1.5 has no encryption)",
            ));
        }
        if self.candidates().is_empty() {
            return Err(Error::new(
                ErrorKind::CipherRefused,
                format!(
                    "no acceptable cipher suite in {:?} (this client supports 17 and 3; suites without authentication, integrity and encryption are refused)",
                    cfg.cipher_suites
                ),
            ));
        }
        Ok(())
    }

    fn candidates(&self) -> Vec<CipherSuite> {
        let mut v: Vec<CipherSuite> = Vec::new();
        for id in &self.cfg.cipher_suites {
            if let Some(s) = CipherSuite::by_id(*id)
                && !v.contains(&s)
            {
                v.push(s);
            }
        }
        v
    }

    /// The session state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Active => State::Active,
            Phase::Closing => State::Closing,
            Phase::Closed => State::Closed,
            _ => State::Opening,
        }
    }

    /// Why the session failed, if it did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The cipher suite negotiated.
    pub fn cipher_suite(&self) -> Option<u8> {
        self.suite.map(|s| s.id)
    }

    /// The IPMI 1.5 auth type in use, when the session is an IPMI 1.5 one.
    pub fn ipmi15(&self) -> Option<crate::v15::AuthType> {
        self.v15.as_ref().map(|v| v.auth)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.as_ref().map(|p| p.deadline);
        let s = self.sol.as_ref().and_then(|s| s.poll_timeout());
        [p, s, self.keepalive_due()].into_iter().flatten().min()
    }

    fn keepalive_due(&self) -> Option<Instant> {
        if self.sol.is_some() && self.pending.is_none() {
            self.last_activity.map(|t| t + self.cfg.keepalive)
        } else {
            None
        }
    }

    fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.rq_seq
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    fn send_handshake(&mut self, bytes: Vec<u8>, now: Instant, timeout: Duration) {
        self.send_handshake_tries(bytes, now, timeout, self.cfg.retries);
    }

    fn send_handshake_tries(
        &mut self,
        bytes: Vec<u8>,
        now: Instant,
        timeout: Duration,
        retries: u32,
    ) {
        self.out.push_back(bytes.clone());
        self.pending = Some(Pending {
            cmd: None,
            rq_seq: self.rq_seq,
            bytes,
            deadline: now + timeout,
            tries_left: retries,
            timeout,
        });
    }

    /// Sends a pre-session IPMI request in an unauthenticated RMCP+ packet.
    fn send_presession_v2(&mut self, cmd: &Command, now: Instant, timeout: Duration, retries: u32) {
        let seq = self.next_rq_seq();
        let msg = message::encode_request(cmd.netfn, cmd.cmd, seq, &cmd.data);
        match packet::encode_v2(payload::IPMI, 0, 0, &msg, None, &[0; 16]) {
            Ok(b) => self.send_handshake_tries(b, now, timeout, retries),
            Err(e) => self.fail(Error::protocol(e.to_string())),
        }
    }

    fn send_clear(&mut self, ptype: u8, body: &[u8], now: Instant) {
        match packet::encode_v2(ptype, 0, 0, body, None, &[0; 16]) {
            Ok(b) => self.send_handshake(b, now, self.cfg.timeout),
            Err(e) => self.fail(Error::protocol(e.to_string())),
        }
    }

    /// Encodes a session packet with the next outbound sequence number.
    fn seal(&mut self, ptype: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        if let Some(v) = self.v15.as_ref() {
            return crate::v15::encode(v.auth, &v.pw, self.bmc_sid, self.out_seq, body)
                .map_err(|e| Error::protocol(e.to_string()));
        }
        let mut iv = [0u8; 16];
        if self.sec.as_ref().is_some_and(|s| s.aes_key.is_some()) {
            (self.entropy)(&mut iv);
        }
        packet::encode_v2(
            ptype,
            self.bmc_sid,
            self.out_seq,
            body,
            self.sec.as_ref(),
            &iv,
        )
        .map_err(|e| Error::protocol(e.to_string()))
    }

    fn send_session_cmd(&mut self, cmd: Command, now: Instant) {
        let rq_seq = self.next_rq_seq();
        let msg = message::encode_request(cmd.netfn, cmd.cmd, rq_seq, &cmd.data);
        match self.seal(payload::IPMI, &msg) {
            Ok(b) => {
                self.out.push_back(b);
                self.pending = Some(Pending {
                    cmd: Some(cmd),
                    rq_seq,
                    bytes: Vec::new(),
                    deadline: now + self.cfg.timeout,
                    tries_left: self.cfg.retries,
                    timeout: self.cfg.timeout,
                });
            }
            Err(e) => self.fail(e),
        }
    }

    /// Sends a command in the open session. One at a time: the answer (response data
    /// after the completion code, or an error) comes from
    /// [`poll_response`](Self::poll_response).
    pub fn send_command(&mut self, cmd: Command, now: Instant) -> Result<(), Error> {
        if !matches!(self.phase, Phase::Active) {
            return Err(self
                .error
                .clone()
                .unwrap_or_else(|| Error::protocol("session is not open")));
        }
        // A command still pending here was abandoned by its caller (or is a
        // keepalive): its late answer will not match the new rqSeq and is dropped.
        self.response = None;
        self.user_cmd = true;
        self.send_session_cmd(cmd, now);
        Ok(())
    }

    /// Whether a command is waiting for its answer.
    pub fn command_pending(&self) -> bool {
        self.user_cmd && self.pending.is_some()
    }

    /// The answer to the last [`send_command`](Self::send_command), once there.
    pub fn poll_response(&mut self) -> Option<Result<Vec<u8>, Error>> {
        self.response.take()
    }

    /// Starts closing the session: Deactivate is up to the caller; this sends Close
    /// Session (any command in progress is abandoned).
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Active => {
                self.sol = None;
                self.user_cmd = false;
                self.phase = Phase::Closing;
                self.send_session_cmd(commands::close_session(self.bmc_sid), now);
            }
            Phase::Closing | Phase::Closed => {}
            _ => {
                self.pending = None;
                self.phase = Phase::Closed;
                if self.error.is_none() {
                    self.error = Some(Error::protocol("closed before the session was open"));
                }
            }
        }
    }

    /// Fails the session: records `e`, and if the BMC has a session for us, sends
    /// one Close Session (not waited for) so its slot is freed.
    fn fail(&mut self, e: Error) {
        tracing::debug!(error = %e, "ipmi session failed");
        if self.error.is_none() {
            self.error = Some(e.clone());
        }
        if self.user_cmd && self.pending.is_some() {
            self.response = Some(Err(e));
        }
        let had_session = matches!(self.phase, Phase::Active | Phase::SetPrivilege);
        self.pending = None;
        self.user_cmd = false;
        self.sol = None;
        self.phase = Phase::Closed;
        if had_session {
            let cmd = commands::close_session(self.bmc_sid);
            let seq = self.next_rq_seq();
            let msg = message::encode_request(cmd.netfn, cmd.cmd, seq, &cmd.data);
            if let Ok(b) = self.seal(payload::IPMI, &msg) {
                self.out.push_back(b);
            }
        }
    }

    /// Handles the passing of time: retransmits, or fails with a timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(sol) = self.sol.as_mut() {
            sol.handle_timeout(now);
            if let Some(e) = sol.take_error() {
                self.fail(e);
                return;
            }
            self.flush_sol(now);
        }
        if self.keepalive_due().is_some_and(|t| now >= t) {
            // Get Device ID as keepalive; its answer is discarded.
            self.last_activity = Some(now);
            self.send_session_cmd(commands::get_device_id(), now);
            return;
        }
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if now < p.deadline {
            return;
        }
        if p.tries_left > 0 {
            p.tries_left -= 1;
            p.deadline = now + p.timeout;
            if let Some(cmd) = p.cmd.clone() {
                let rq_seq = p.rq_seq;
                let msg = message::encode_request(cmd.netfn, cmd.cmd, rq_seq, &cmd.data);
                match self.seal(payload::IPMI, &msg) {
                    Ok(b) => self.out.push_back(b),
                    Err(e) => self.fail(e),
                }
            } else {
                let b = p.bytes.clone();
                self.out.push_back(b);
            }
            return;
        }
        // Out of tries.
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::CipherSuites { .. } => {
                // The BMC does not answer Get Channel Cipher Suites (OpenIPMI's
                // ipmi_sim does not): try the suites in order of preference.
                tracing::debug!("no answer to Get Channel Cipher Suites; trying suites in order");
                self.pending = None;
                let c = self.candidates();
                self.start_open_session(c, now);
            }
            Phase::OpenSession { rest, suite } if !rest.is_empty() => {
                tracing::debug!(
                    suite = suite.id,
                    "no answer to Open Session; trying next suite"
                );
                self.pending = None;
                self.start_open_session(rest, now);
            }
            Phase::Closing => {
                self.pending = None;
                self.phase = Phase::Closed;
                if self.error.is_none() {
                    self.error = Some(Error::new(
                        ErrorKind::Timeout,
                        "Close Session: no answer from the BMC",
                    ));
                }
            }
            Phase::Activate15 { .. } if self.last_reject.is_none() => {
                // The BMC answered Get Session Challenge, so it is there; an IPMI 1.5
                // BMC silently drops an Activate Session whose AuthCode does not
                // match (ipmi_sim does): the password is wrong.
                let total = self.cfg.timeout * (self.cfg.retries + 1);
                self.fail(Error::new(
                    ErrorKind::AuthFailed,
                    format!(
                        "Activate Session: no answer within {total:?} although the BMC answered Get Session Challenge; an IPMI 1.5 BMC ignores an AuthCode made with a wrong password"
                    ),
                ));
            }
            phase => {
                let step = self.step_name(&phase);
                self.phase = phase;
                let total = self.cfg.timeout * (self.cfg.retries + 1);
                let e = match self.last_reject.take() {
                    Some(r) => Error::protocol(format!(
                        "{step}: no valid answer within {total:?}; the BMC sent only packets that were rejected (last: {r})"
                    )),
                    None => Error::new(
                        ErrorKind::Timeout,
                        format!("{step}: no answer from the BMC within {total:?}"),
                    ),
                };
                self.fail(e);
            }
        }
    }

    fn step_name(&self, phase: &Phase) -> String {
        match phase {
            Phase::AuthCaps => "Get Channel Authentication Capabilities".into(),
            Phase::CipherSuites { .. } => "Get Channel Cipher Suites".into(),
            Phase::OpenSession { .. } => "Open Session".into(),
            Phase::Rakp1 { .. } => "RAKP 1".into(),
            Phase::Rakp3 { .. } => "RAKP 3".into(),
            Phase::Challenge15 => "Get Session Challenge".into(),
            Phase::Activate15 { .. } => "Activate Session".into(),
            Phase::SetPrivilege => "Set Session Privilege Level".into(),
            _ => match self.pending.as_ref().and_then(|p| p.cmd.as_ref()) {
                Some(c) => c.name.into(),
                None => "command".into(),
            },
        }
    }

    fn start_open_session(&mut self, mut suites: Vec<CipherSuite>, now: Instant) {
        if suites.is_empty() {
            self.fail(Error::new(
                ErrorKind::CipherRefused,
                format!(
                    "the BMC accepts none of the cipher suites {:?} (17 and 3 are the ones with authentication, integrity and encryption this client supports)",
                    self.cfg.cipher_suites
                ),
            ));
            return;
        }
        let suite = suites.remove(0);
        let tag = self.next_tag();
        let body =
            rakp::open_session_request(tag, self.cfg.privilege.number(), self.console_sid, &suite);
        self.phase = Phase::OpenSession {
            suite,
            rest: suites,
        };
        self.send_clear(payload::OPEN_SESSION_REQ, &body, now);
    }

    /// Handles a datagram from the BMC. Invalid datagrams are dropped (and counted
    /// towards the error reported if nothing valid ever comes).
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) {
        if let Err(reason) = self.handle_inner(data, now) {
            tracing::debug!(%reason, "dropped datagram from BMC");
            self.last_reject = Some(reason);
        }
    }

    fn handle_inner(&mut self, data: &[u8], now: Instant) -> Result<(), String> {
        if matches!(self.phase, Phase::Closed) {
            return Ok(());
        }
        if self.v15.is_some() {
            return self.on_datagram15(data, now);
        }
        let in_session = matches!(
            self.phase,
            Phase::SetPrivilege | Phase::Active | Phase::Closing
        );
        let sec = if in_session { self.sec.as_ref() } else { None };
        let pkt = packet::decode(data, sec).map_err(|e| e.to_string())?;
        match pkt {
            Packet::V15(msg) => self.on_v15(&msg, now),
            Packet::V2(p) if !in_session => self.on_presession_v2(p, now),
            Packet::V2(p) => {
                if p.session_id != self.console_sid {
                    return Err(format!("session id {:#x} is not ours", p.session_id));
                }
                self.check_inbound_seq(p.seq)?;
                self.last_activity = Some(now);
                match p.payload_type {
                    payload::IPMI => self.on_session_response(&p.payload, now),
                    payload::SOL => match self.sol.as_mut() {
                        Some(sol) => {
                            sol.handle_payload(&p.payload, now);
                            self.flush_sol(now);
                            Ok(())
                        }
                        None => Err("SOL payload while SOL is not active".into()),
                    },
                    t => Err(format!("unexpected payload type {t:#04x} in session")),
                }
            }
        }
    }

    /// Sliding window of 64 on the BMC's sequence numbers: replays and numbers too far
    /// behind are rejected.
    fn check_inbound_seq(&mut self, seq: u32) -> Result<(), String> {
        if seq == 0 {
            return Err("session sequence number 0".into());
        }
        if seq > self.in_max {
            let shift = seq - self.in_max;
            if self.in_max != 0 && shift > 1024 {
                return Err(format!(
                    "sequence number {seq} jumps too far ahead of {}",
                    self.in_max
                ));
            }
            self.in_mask = if shift >= 64 {
                0
            } else {
                self.in_mask << shift
            };
            self.in_mask |= 1;
            self.in_max = seq;
            return Ok(());
        }
        let back = self.in_max - seq;
        if back >= 64 {
            return Err(format!(
                "sequence number {seq} is too old (newest {})",
                self.in_max
            ));
        }
        if self.in_mask & (1 << back) != 0 {
            return Err(format!("replayed sequence number {seq}"));
        }
        self.in_mask |= 1 << back;
        Ok(())
    }

    fn parse_response(&self, msg: &[u8]) -> Result<Response, String> {
        let r = message::decode_response(msg).map_err(|e| e.to_string())?;
        let Some(p) = self.pending.as_ref() else {
            return Err("response while nothing is pending".into());
        };
        if r.seq != p.rq_seq {
            return Err(format!(
                "response rqSeq {} does not match {}",
                r.seq, p.rq_seq
            ));
        }
        Ok(r)
    }

    fn on_v15(&mut self, msg: &[u8], now: Instant) -> Result<(), String> {
        if !matches!(self.phase, Phase::AuthCaps) {
            return Err("IPMI 1.5 packet outside the capabilities exchange".into());
        }
        let r = self.parse_response(msg)?;
        if r.cmd != 0x38 {
            return Err(format!(
                "unexpected command {:#04x} in IPMI 1.5 response",
                r.cmd
            ));
        }
        self.pending = None;
        if r.completion != 0 && self.cfg.allow_ipmi15 && !self.caps_retried {
            // An IPMI 1.5 BMC may reject the request for extended data: ask again
            // without it.
            self.caps_retried = true;
            let mut cmd = commands::get_channel_auth_caps(self.cfg.privilege);
            cmd.data[0] = 0x0e;
            let msg = message::encode_request(cmd.netfn, cmd.cmd, self.next_rq_seq(), &cmd.data);
            match packet::encode_v15(&msg) {
                Ok(bytes) => self.send_handshake(bytes, now, self.cfg.timeout),
                Err(e) => self.fail(Error::protocol(e.to_string())),
            }
            return Ok(());
        }
        if r.completion != 0 {
            // BMCs without IPMI 2.0 reject the request for extended capabilities.
            let e = Error::completion("Get Channel Authentication Capabilities", r.completion);
            self.fail(Error::new(
                ErrorKind::Unsupported,
                format!("{e}: the BMC rejects the IPMI 2.0 capabilities query (IPMI 1.5 only?)"),
            ));
            return Ok(());
        }
        let caps: AuthCaps = match commands::parse_auth_caps(&r.data) {
            Ok(c) => c,
            Err(e) => {
                self.fail(e);
                return Ok(());
            }
        };
        if self.cfg.allow_ipmi15 && caps.ipmi15 && (!caps.ipmi20 || self.cfg.force_ipmi15) {
            let support = r.data.get(1).copied().unwrap_or(0);
            self.start_v15(support, now);
            return Ok(());
        }
        if !caps.ipmi20 {
            let msg = if self.cfg.allow_ipmi15 {
                "the BMC supports neither IPMI 2.0 (RMCP+) nor IPMI 1.5 sessions"
            } else {
                "the BMC does not support IPMI 2.0 (RMCP+) sessions; IPMI 1.5 is not enabled (Options::allow_ipmi15)"
            };
            self.fail(Error::new(ErrorKind::Unsupported, msg));
            return Ok(());
        }
        let candidates = self.candidates();
        if candidates.len() == 1 {
            // Nothing to choose: go straight to Open Session (as ipmitool -C does).
            self.start_open_session(candidates, now);
        } else {
            self.phase = Phase::CipherSuites {
                index: 0,
                records: Vec::new(),
            };
            let t = self.cfg.cipher_query_timeout.min(self.cfg.timeout);
            self.send_presession_v2(&commands::get_cipher_suites(0), now, t, 0);
        }
        Ok(())
    }

    fn on_presession_v2(&mut self, p: packet::V2Packet, now: Instant) -> Result<(), String> {
        if p.session_id != 0 && p.payload_type == payload::IPMI {
            return Err("pre-session IPMI response with a session id".into());
        }
        match (&mut self.phase, p.payload_type) {
            (Phase::CipherSuites { .. }, payload::IPMI) => self.on_cipher_suites(&p.payload, now),
            (Phase::OpenSession { .. }, payload::OPEN_SESSION_RESP) => {
                self.on_open_session(&p.payload, now)
            }
            (Phase::Rakp1 { .. }, payload::RAKP2) => self.on_rakp2(&p.payload, now),
            (Phase::Rakp3 { .. }, payload::RAKP4) => self.on_rakp4(&p.payload, now),
            (_, t) => Err(format!(
                "unexpected payload type {t:#04x} during session setup"
            )),
        }
    }

    fn on_cipher_suites(&mut self, msg: &[u8], now: Instant) -> Result<(), String> {
        let r = self.parse_response(msg)?;
        if r.cmd != 0x54 {
            return Err(format!("unexpected command {:#04x}", r.cmd));
        }
        self.pending = None;
        let Phase::CipherSuites { index, records } = &mut self.phase else {
            return Ok(());
        };
        if r.completion != 0 || r.data.is_empty() {
            // Treat as "cannot list": fall back to trying in order.
            let c = self.candidates();
            self.start_open_session(c, now);
            return Ok(());
        }
        let chunk = r.data.get(1..).unwrap_or_default();
        records.extend_from_slice(chunk);
        if chunk.len() == 16 && *index < 63 && records.len() < 1024 {
            *index += 1;
            let i = *index;
            let t = self.cfg.cipher_query_timeout.min(self.cfg.timeout);
            self.send_presession_v2(&commands::get_cipher_suites(i), now, t, 0);
            return Ok(());
        }
        let ids = commands::parse_cipher_suite_records(records);
        tracing::debug!(?ids, "BMC cipher suites");
        let usable: Vec<CipherSuite> = self
            .candidates()
            .into_iter()
            .filter(|s| ids.contains(&s.id))
            .collect();
        if usable.is_empty() {
            self.fail(Error::new(
                ErrorKind::CipherRefused,
                format!(
                    "the BMC offers cipher suites {ids:?}, none of which is acceptable (wanted one of {:?}; suites without authentication, integrity and encryption are refused)",
                    self.cfg.cipher_suites
                ),
            ));
        } else {
            self.start_open_session(usable, now);
        }
        Ok(())
    }

    fn on_open_session(&mut self, body: &[u8], now: Instant) -> Result<(), String> {
        let Phase::OpenSession { suite, rest } = &self.phase else {
            return Ok(());
        };
        let (suite, rest) = (*suite, rest.clone());
        match rakp::parse_open_session_response(body, self.tag, self.console_sid, &suite) {
            Ok(r) => {
                self.pending = None;
                self.bmc_sid = r.bmc_sid;
                let mut rm = [0u8; 16];
                (self.entropy)(&mut rm);
                let params = RakpParams {
                    suite,
                    console_sid: self.console_sid,
                    bmc_sid: r.bmc_sid,
                    rm,
                    // Name-only lookup, requested privilege.
                    role: 0x10 | self.cfg.privilege.number(),
                    username: self.cfg.username.to_vec(),
                };
                let tag = self.next_tag();
                let m = rakp::rakp1(tag, &params);
                self.phase = Phase::Rakp1 { params };
                self.send_clear(payload::RAKP1, &m, now);
                Ok(())
            }
            Err(RakpError::Status { code, .. }) if rakp::status_is_cipher_refusal(code) => {
                self.pending = None;
                tracing::debug!(suite = suite.id, code, "BMC refused cipher suite");
                self.start_open_session(rest, now);
                Ok(())
            }
            Err(e @ (RakpError::Status { .. } | RakpError::Algorithms(..))) => {
                self.fail(open_error(e));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn on_rakp2(&mut self, body: &[u8], now: Instant) -> Result<(), String> {
        let Phase::Rakp1 { params } = &self.phase else {
            return Ok(());
        };
        let params = params.clone();
        match rakp::parse_rakp2(body, self.tag, &params, &self.cfg.password) {
            Ok(r2) => {
                self.pending = None;
                let keys = rakp::session_keys(&params, &self.cfg.password, &r2);
                let tag = self.next_tag();
                let m = rakp::rakp3(tag, 0, &params, &self.cfg.password, &r2);
                self.sec = Some(Security {
                    integrity: params.suite.integrity,
                    k1: keys.k1.clone(),
                    aes_key: params.suite.aes.then(|| Zeroizing::new(keys.aes_key())),
                });
                self.suite = Some(params.suite);
                self.phase = Phase::Rakp3 { params, r2 };
                self.send_clear(payload::RAKP3, &m, now);
                Ok(())
            }
            Err(RakpError::Rakp2Hmac) => {
                // Tell the BMC (RAKP 3 with "invalid integrity check value") so it
                // frees the session slot, then fail.
                let tag = self.next_tag();
                let mut m = vec![tag, 0x0f, 0, 0];
                m.extend_from_slice(&params.bmc_sid.to_le_bytes());
                if let Ok(b) = packet::encode_v2(payload::RAKP3, 0, 0, &m, None, &[0; 16]) {
                    self.out.push_back(b);
                }
                self.fail(Error::new(
                    ErrorKind::AuthFailed,
                    "authentication failed: the BMC's RAKP 2 proof does not match this password",
                ));
                Ok(())
            }
            Err(e @ RakpError::Status { .. }) => {
                self.fail(open_error(e));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn on_rakp4(&mut self, body: &[u8], now: Instant) -> Result<(), String> {
        let Phase::Rakp3 { params, r2 } = &self.phase else {
            return Ok(());
        };
        let keys = rakp::session_keys(params, &self.cfg.password, r2);
        match rakp::parse_rakp4(body, self.tag, params, &keys, r2) {
            Ok(()) => {
                self.pending = None;
                self.phase = Phase::SetPrivilege;
                self.send_session_cmd(commands::set_session_privilege(self.cfg.privilege), now);
                Ok(())
            }
            Err(e @ (RakpError::Status { .. } | RakpError::Rakp4Icv)) => {
                self.fail(open_error(e));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn on_session_response(&mut self, msg: &[u8], _now: Instant) -> Result<(), String> {
        let r = self.parse_response(msg)?;
        let Some(p) = self.pending.as_ref() else {
            return Err("response while nothing is pending".into());
        };
        let Some(cmd) = p.cmd.as_ref() else {
            return Err("session response while a handshake message is pending".into());
        };
        if r.cmd != cmd.cmd || r.netfn != cmd.netfn + 1 {
            return Err(format!(
                "response netFn {:#04x} cmd {:#04x} does not answer {}",
                r.netfn, r.cmd, cmd.name
            ));
        }
        let name = cmd.name;
        self.pending = None;
        match self.phase {
            Phase::SetPrivilege => {
                if r.completion != 0 {
                    let e = Error::completion(name, r.completion);
                    let e = if matches!(r.completion, 0x80 | 0x81 | 0xd4) {
                        Error::new(
                            ErrorKind::AuthFailed,
                            format!(
                                "the BMC does not grant privilege {:?}: {e}",
                                self.cfg.privilege
                            ),
                        )
                    } else {
                        e
                    };
                    self.fail(e);
                } else {
                    tracing::debug!(suite = ?self.suite.map(|s| s.id), "ipmi session open");
                    self.phase = Phase::Active;
                }
            }
            Phase::Active if !self.user_cmd => {} // a keepalive's answer
            Phase::Active => {
                self.user_cmd = false;
                self.response = Some(if r.completion == 0 {
                    Ok(r.data)
                } else {
                    Err(Error::completion(name, r.completion))
                });
            }
            Phase::Closing => {
                self.phase = Phase::Closed;
                if r.completion != 0 && self.error.is_none() {
                    self.error = Some(Error::completion(name, r.completion));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Attaches SOL state after a successful Activate Payload.
    pub fn start_sol(&mut self, sol: SolState, now: Instant) {
        self.sol = Some(sol);
        self.last_activity = Some(now);
    }

    /// The SOL state, when active.
    pub fn sol_mut(&mut self) -> Option<&mut SolState> {
        self.sol.as_mut()
    }

    /// Stops carrying SOL payloads (after Deactivate Payload or on close).
    pub fn stop_sol(&mut self) -> Option<SolState> {
        self.sol.take()
    }

    /// Moves any SOL payloads ready to go into sealed datagrams.
    pub fn flush_sol(&mut self, now: Instant) {
        while let Some(p) = self.sol.as_mut().and_then(|s| s.poll_payload(now)) {
            match self.seal(payload::SOL, &p) {
                Ok(b) => self.out.push_back(b),
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// Fails the session from outside (the shell's socket reported an error).
    pub fn abort(&mut self, e: Error) {
        if !matches!(self.phase, Phase::Closed) {
            self.fail(e);
        }
    }
}

fn open_error(e: RakpError) -> Error {
    let kind = match &e {
        RakpError::Status { code, .. } if rakp::status_is_auth_refusal(*code) => {
            ErrorKind::AuthFailed
        }
        RakpError::Status { code, .. } if rakp::status_is_cipher_refusal(*code) => {
            ErrorKind::CipherRefused
        }
        RakpError::Algorithms(..) => ErrorKind::CipherRefused,
        RakpError::Rakp4Icv => ErrorKind::AuthFailed,
        _ => ErrorKind::Protocol,
    };
    Error::new(kind, format!("session setup: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::checksum;

    fn cfg(suites: Vec<u8>) -> Config {
        Config {
            username: Zeroizing::new(b"admin".to_vec()),
            password: Zeroizing::new(b"password".to_vec()),
            privilege: Privilege::Administrator,
            cipher_suites: suites,
            allow_ipmi15: false,
            force_ipmi15: false,
            timeout: Duration::from_secs(1),
            retries: 1,
            cipher_query_timeout: Duration::from_millis(300),
            keepalive: Duration::from_secs(20),
        }
    }

    fn fixed_entropy() -> Entropy {
        Box::new(|b: &mut [u8]| b.fill(0x11))
    }

    /// A response message to request rqSeq `seq`.
    fn resp(netfn: u8, seq: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut m = vec![0x81, (netfn + 1) << 2];
        m.push(checksum(&m));
        m.extend_from_slice(&[0x20, seq << 2, cmd, 0x00]);
        m.extend_from_slice(data);
        m.push(checksum(&m[3..]));
        m
    }

    #[test]
    fn first_packet_retransmit_and_timeout_on_virtual_time() {
        let t0 = Instant::now();
        let mut c = Connection::new(cfg(vec![17, 3]), fixed_entropy(), t0);
        let first = c.poll_transmit().unwrap();
        assert_eq!(
            first,
            [
                0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81,
                0x04, 0x38, 0x8e, 0x04, 0xb1
            ]
        );
        assert_eq!(c.poll_transmit(), None);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        c.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(c.poll_transmit(), None, "not due yet");
        c.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(c.poll_transmit().unwrap(), first, "retransmitted as is");
        c.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(c.state(), State::Closed);
        let e = c.error().unwrap();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(
            e.to_string()
                .starts_with("Get Channel Authentication Capabilities: no answer"),
            "{e}"
        );
        assert_eq!(c.poll_timeout(), None, "nothing more to wait for");
    }

    #[test]
    fn cipher_query_unanswered_then_suite_17_refused_then_3() {
        let t0 = Instant::now();
        let mut c = Connection::new(cfg(vec![17, 3]), fixed_entropy(), t0);
        c.poll_transmit().unwrap();
        let caps = resp(0x06, 1, 0x38, &[0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0]);
        c.handle_datagram(&packet::encode_v15(&caps).unwrap(), t0);
        // Get Channel Cipher Suites, pre-session RMCP+, index 0.
        let q = c.poll_transmit().unwrap();
        assert_eq!(&q[4..6], &[0x06, 0x00]);
        assert_eq!(&q[16 + 5..16 + 9], &[0x54, 0x0e, 0x00, 0x80]);
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(
            c.poll_timeout(),
            Some(t1),
            "short query timeout, no retries"
        );
        c.handle_timeout(t1);
        // Falls back: Open Session proposing suite 17 (auth 3, integrity 4, AES).
        let o = c.poll_transmit().unwrap();
        assert_eq!(o[5], payload::OPEN_SESSION_REQ);
        let body = &o[16..];
        assert_eq!((body[12], body[20], body[28]), (3, 4, 1));
        assert_eq!(
            &body[4..8],
            &0x1111_1111u32.to_le_bytes(),
            "console sid from entropy"
        );
        // Refused with "invalid authentication algorithm" (as ipmi_sim does): suite 3.
        let mut r = vec![body[0], 0x04, 0, 0];
        r.extend_from_slice(&body[4..8]);
        c.handle_datagram(
            &packet::encode_v2(payload::OPEN_SESSION_RESP, 0, 0, &r, None, &[0; 16]).unwrap(),
            t1,
        );
        let o = c.poll_transmit().unwrap();
        let body = &o[16..];
        assert_eq!((body[12], body[20], body[28]), (1, 1, 1));
        assert_eq!(c.state(), State::Opening);
    }

    #[test]
    fn refuses_unsafe_config_before_sending() {
        let t0 = Instant::now();
        for (suites, user) in [(vec![0u8, 1, 2], "admin"), (vec![3], "")] {
            let mut cf = cfg(suites);
            cf.username = Zeroizing::new(user.as_bytes().to_vec());
            let mut c = Connection::new(cf, fixed_entropy(), t0);
            assert_eq!(c.poll_transmit(), None, "nothing sent");
            assert_eq!(c.state(), State::Closed);
            assert!(c.error().is_some());
        }
    }

    #[test]
    fn config_debug_hides_password() {
        let s = format!("{:?}", cfg(vec![3]));
        assert!(!s.contains("password\""), "{s}");
        assert!(s.contains("***"));
    }
}
