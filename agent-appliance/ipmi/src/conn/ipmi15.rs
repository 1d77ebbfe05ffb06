//! The IPMI 1.5 session steps of [`Connection`] (IPMI 1.5 section 6.12 and chapter
//! 22): Get Session Challenge → Activate Session → (shared) Set Session Privilege
//! Level, then commands and Close Session with per-packet AuthCodes. Used only when
//! the caller opted in.

use std::time::Instant;

use zeroize::Zeroizing;

use super::{Connection, Phase};
use crate::error::{Error, ErrorKind};
use crate::message;
use crate::packet;
use crate::v15::{self, AuthType};

/// The IPMI 1.5 session's authentication.
#[derive(Clone)]
pub(super) struct V15State {
    pub(super) auth: AuthType,
    pub(super) pw: Zeroizing<[u8; 16]>,
}

/// Longest password an IPMI 1.5 session can use.
const MAX_PASSWORD15: usize = 16;

impl Connection {
    /// Starts an IPMI 1.5 session; `support` is the auth type support byte of Get
    /// Channel Authentication Capabilities.
    pub(super) fn start_v15(&mut self, support: u8, now: Instant) {
        if self.cfg.password.len() > MAX_PASSWORD15 {
            self.fail(Error::new(
                ErrorKind::AuthFailed,
                format!("IPMI 1.5 passwords are at most {MAX_PASSWORD15} bytes"),
            ));
            return;
        }
        let Some(auth) = AuthType::choose(support) else {
            self.fail(Error::new(
                ErrorKind::CipherRefused,
                format!(
                    "the BMC offers IPMI 1.5 auth types {:#04x} only; this client uses MD5 or straight password, never none, MD2 or OEM",
                    support & 0x3f
                ),
            ));
            return;
        };
        tracing::debug!(?auth, "opening an IPMI 1.5 session");
        self.v15 = Some(V15State {
            auth,
            pw: v15::password16(&self.cfg.password),
        });
        self.phase = Phase::Challenge15;
        let cmd = v15::get_session_challenge(auth, &self.cfg.username);
        let msg = message::encode_request(cmd.netfn, cmd.cmd, self.next_rq_seq(), &cmd.data);
        match packet::encode_v15(&msg) {
            Ok(b) => self.send_handshake(b, now, self.cfg.timeout),
            Err(e) => self.fail(Error::protocol(e.to_string())),
        }
    }

    /// Handles any datagram once an IPMI 1.5 session is being set up.
    pub(super) fn on_datagram15(&mut self, data: &[u8], now: Instant) -> Result<(), String> {
        let Some(v) = self.v15.clone() else {
            return Err("not an IPMI 1.5 session".into());
        };
        let p = v15::decode(data).map_err(|e| e.to_string())?;
        match self.phase {
            Phase::Challenge15 => {
                if p.sid != 0 || p.seq != 0 {
                    return Err("Get Session Challenge answer with a session".into());
                }
                let r = self.parse_response(&p.msg)?;
                if r.cmd != 0x39 {
                    return Err(format!("unexpected command {:#04x}", r.cmd));
                }
                self.pending = None;
                if r.completion != 0 {
                    let e = Error::completion("Get Session Challenge", r.completion);
                    let kind = match r.completion {
                        0x81..=0x83 => ErrorKind::AuthFailed,
                        _ => e.kind(),
                    };
                    self.fail(Error::new(kind, e.to_string()));
                    return Ok(());
                }
                let (temp_sid, challenge) = match v15::parse_session_challenge(&r.data) {
                    Ok(c) => c,
                    Err(e) => {
                        self.fail(e);
                        return Ok(());
                    }
                };
                let mut b = [0u8; 4];
                (self.entropy)(&mut b);
                // Random, non-zero, and far from wrapping.
                let initial_in = (u32::from_le_bytes(b) & 0x7fff_ffff).max(1);
                let cmd = v15::activate_session(v.auth, self.cfg.privilege, &challenge, initial_in);
                let msg =
                    message::encode_request(cmd.netfn, cmd.cmd, self.next_rq_seq(), &cmd.data);
                self.phase = Phase::Activate15 { initial_in };
                match v15::encode(v.auth, &v.pw, temp_sid, 0, &msg) {
                    Ok(b) => self.send_handshake(b, now, self.cfg.timeout),
                    Err(e) => self.fail(Error::protocol(e.to_string())),
                }
                Ok(())
            }
            Phase::Activate15 { initial_in } => {
                let authentic = p.verify(v.auth, &v.pw);
                let r = self.parse_response(&p.msg)?;
                if r.cmd != 0x3a {
                    return Err(format!("unexpected command {:#04x}", r.cmd));
                }
                if r.completion != 0 {
                    // An error answer need not be authenticated: it ends the attempt.
                    self.pending = None;
                    let e = Error::completion("Activate Session", r.completion);
                    let kind = match r.completion {
                        0x81..=0x86 => ErrorKind::AuthFailed,
                        _ => e.kind(),
                    };
                    self.fail(Error::new(kind, e.to_string()));
                    return Ok(());
                }
                if !authentic {
                    return Err("Activate Session answer with a wrong AuthCode".into());
                }
                self.pending = None;
                let a = match v15::parse_activate_session(&r.data) {
                    Ok(a) => a,
                    Err(e) => {
                        self.fail(e);
                        return Ok(());
                    }
                };
                if a.auth_type != v.auth.number() || a.sid == 0 {
                    self.fail(Error::protocol(format!(
                        "Activate Session: the BMC chose auth type {:#04x} and session id {:#x}",
                        a.auth_type, a.sid
                    )));
                    return Ok(());
                }
                self.bmc_sid = a.sid;
                self.console_sid = a.sid;
                self.out_seq = a.initial_out.wrapping_sub(1);
                self.in_max = initial_in.wrapping_sub(1);
                self.in_mask = 0;
                self.phase = Phase::SetPrivilege;
                let cmd = crate::commands::set_session_privilege(self.cfg.privilege);
                self.send_session_cmd(cmd, now);
                Ok(())
            }
            Phase::SetPrivilege | Phase::Active | Phase::Closing => {
                if !p.verify(v.auth, &v.pw) {
                    return Err("IPMI 1.5 packet without a valid AuthCode".into());
                }
                if p.sid != self.bmc_sid {
                    return Err(format!("session id {:#x} is not ours", p.sid));
                }
                self.check_inbound_seq(p.seq)?;
                self.last_activity = Some(now);
                self.on_session_response(&p.msg, now)
            }
            _ => Err("IPMI 1.5 packet in an unexpected state".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use zeroize::Zeroizing;

    use super::super::{Config, Connection, Entropy, State};
    use crate::commands::{self, Privilege};
    use crate::message::checksum;
    use crate::packet;
    use crate::v15::{self, AuthType};

    fn cfg() -> Config {
        Config {
            username: Zeroizing::new(b"admin".to_vec()),
            password: Zeroizing::new(b"password".to_vec()),
            privilege: Privilege::Administrator,
            cipher_suites: vec![3],
            allow_ipmi15: true,
            force_ipmi15: true,
            timeout: Duration::from_secs(1),
            retries: 1,
            cipher_query_timeout: Duration::from_millis(300),
            keepalive: Duration::from_secs(20),
        }
    }

    /// A response message to the request `req` (an IPMI message).
    fn resp(req: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = vec![0x81, req[1] + 4];
        m.push(checksum(&m));
        m.extend_from_slice(&[0x20, req[4], req[5], 0x00]);
        m.extend_from_slice(data);
        m.push(checksum(&m[3..]));
        m
    }

    const SID: u32 = 0x0102_0304;

    #[test]
    fn md5_session_on_virtual_time_with_replays_and_forgeries_rejected() {
        let t0 = Instant::now();
        let entropy: Entropy = Box::new(|b: &mut [u8]| b.fill(0x11));
        let mut c = Connection::new(cfg(), entropy, t0);
        let pw = v15::password16(b"password");
        let caps = v15::decode(&c.poll_transmit().unwrap()).unwrap().msg;
        // IPMI 2.0 and 1.5; auth types none, MD5 and straight password.
        let r = resp(&caps, &[0x01, 0x95, 0x04, 0x03, 0, 0, 0, 0]);
        c.handle_datagram(&packet::encode_v15(&r).unwrap(), t0);
        // Get Session Challenge, auth type none in the header, MD5 asked for.
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!((p.auth_type, p.sid, p.seq), (0, 0, 0));
        assert_eq!(&p.msg[5..12], &[0x39, 0x02, b'a', b'd', b'm', b'i', b'n']);
        let mut d = 0xaabb_ccddu32.to_le_bytes().to_vec();
        d.extend_from_slice(&[7; 16]);
        c.handle_datagram(&packet::encode_v15(&resp(&p.msg, &d)).unwrap(), t0);
        // Activate Session: MD5 AuthCode over the temporary id and seq 0.
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!((p.auth_type, p.sid, p.seq), (2, 0xaabb_ccdd, 0));
        assert!(p.verify(AuthType::Md5, &pw));
        assert_eq!(&p.msg[5..8], &[0x3a, 0x02, 0x04]);
        assert_eq!(&p.msg[8..24], &[7; 16]);
        assert_eq!(&p.msg[24..28], &0x1111_1111u32.to_le_bytes(), "initial seq");
        // A forged answer (wrong password) is dropped.
        let mut d = vec![0x02];
        d.extend_from_slice(&SID.to_le_bytes());
        d.extend_from_slice(&100u32.to_le_bytes());
        d.push(0x04);
        let r = resp(&p.msg, &d);
        let bad = v15::password16(b"guess");
        c.handle_datagram(&v15::encode(AuthType::Md5, &bad, SID, 0, &r).unwrap(), t0);
        assert_eq!(c.poll_transmit(), None);
        c.handle_datagram(&v15::encode(AuthType::Md5, &pw, SID, 0, &r).unwrap(), t0);
        // Set Session Privilege Level in the session, starting at the BMC's seq.
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!((p.sid, p.seq), (SID, 100));
        assert!(p.verify(AuthType::Md5, &pw));
        let r = resp(&p.msg, &[0x04]);
        c.handle_datagram(
            &v15::encode(AuthType::Md5, &pw, SID, 0x1111_1111, &r).unwrap(),
            t0,
        );
        assert_eq!(c.state(), State::Active);
        assert_eq!(c.ipmi15(), Some(AuthType::Md5));
        c.send_command(commands::get_chassis_status(), t0).unwrap();
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(p.seq, 101);
        let r = resp(&p.msg, &[0x01, 0, 0]);
        // Replayed sequence number, wrong session id, wrong AuthCode: all dropped.
        for (pw_, sid, seq) in [
            (&pw, SID, 0x1111_1111),
            (&pw, SID + 1, 0x1111_1112),
            (&bad, SID, 0x1111_1112),
        ] {
            c.handle_datagram(&v15::encode(AuthType::Md5, pw_, sid, seq, &r).unwrap(), t0);
            assert_eq!(c.poll_response(), None, "sid {sid:#x} seq {seq:#x}");
        }
        c.handle_datagram(
            &v15::encode(AuthType::Md5, &pw, SID, 0x1111_1112, &r).unwrap(),
            t0,
        );
        assert_eq!(c.poll_response(), Some(Ok(vec![0x01, 0, 0])));
        c.close(t0);
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert!(p.verify(AuthType::Md5, &pw));
        assert_eq!(
            &p.msg[5..10],
            &[0x3c, 0x04, 0x03, 0x02, 0x01],
            "Close Session"
        );
    }

    #[test]
    fn silence_after_challenge_is_auth_failure() {
        let t0 = Instant::now();
        let entropy: Entropy = Box::new(|b: &mut [u8]| b.fill(0x22));
        let mut c = Connection::new(cfg(), entropy, t0);
        let caps = v15::decode(&c.poll_transmit().unwrap()).unwrap().msg;
        // IPMI 1.5 only, straight password only.
        let r = resp(&caps, &[0x01, 0x90, 0x04, 0x01, 0, 0, 0, 0]);
        c.handle_datagram(&packet::encode_v15(&r).unwrap(), t0);
        let p = v15::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(p.msg[6], 0x04, "straight password when MD5 is not offered");
        let mut d = 9u32.to_le_bytes().to_vec();
        d.extend_from_slice(&[7; 16]);
        c.handle_datagram(&packet::encode_v15(&resp(&p.msg, &d)).unwrap(), t0);
        assert!(c.poll_transmit().is_some());
        c.handle_timeout(t0 + Duration::from_secs(1));
        assert!(
            c.poll_transmit().is_some(),
            "Activate Session retransmitted"
        );
        c.handle_timeout(t0 + Duration::from_secs(2));
        let e = c.error().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::AuthFailed, "{e}");
    }
}
