//! The agent as RFB client toward the BMC, up to and including SecurityResult.

use zeroize::Zeroizing;

use super::vnc_auth::{self, CHALLENGE_LEN};
use super::{
    HandshakeError, Input, MAX_REASON_LEN, SEC_NONE, SEC_VNC_AUTH, VERSION_LEN, Version, be_u32,
    parse_version, sanitize,
};

/// What a failure reason string, once read, turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connection refused before authentication.
    Refused,
    /// SecurityResult non-zero with this status.
    Auth(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the server's 12-byte ProtocolVersion.
    ServerVersion,
    /// 3.3: the server's chosen security type, a u32.
    ServerChosenType,
    /// 3.7+: the number of security types.
    TypeCount,
    /// 3.7+: the list of security types.
    Types(u8),
    /// A u32 reason length.
    ReasonLen(Failure),
    /// The reason string itself.
    Reason(Failure, u32),
    /// The 16-byte VNC Authentication challenge.
    Challenge,
    /// The u32 SecurityResult.
    SecurityResult,
    /// SecurityResult OK (or none due): the caller relays everything from here on.
    Done,
    /// A failure was reported; nothing more is consumed.
    Failed,
}

/// The client side of the RFB security handshake (agent toward BMC).
///
/// Feed it what the BMC sends with [`BmcHandshake::handle_input`], send what
/// [`BmcHandshake::take_output`] returns, until [`BmcHandshake::is_done`]. Read at
/// most [`BmcHandshake::wants`] bytes at a time from the BMC, so nothing beyond the
/// handshake is ever read (the caller then relays ClientInit and the rest unchanged).
pub struct BmcHandshake {
    state: State,
    input: Input,
    out: Vec<u8>,
    password: Option<Zeroizing<Vec<u8>>>,
    version: Option<Version>,
    security: Option<u8>,
}

impl std::fmt::Debug for BmcHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcHandshake")
            .field("state", &self.state)
            .field("buffered", &self.input.len())
            .field("out", &self.out.len())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("version", &self.version)
            .field("security", &self.security)
            .finish()
    }
}

impl BmcHandshake {
    /// A handshake that will use VNC Authentication with `password` if the BMC asks
    /// for it (only the first 8 bytes count), or security type None.
    pub fn new(password: Option<&[u8]>) -> Self {
        BmcHandshake {
            state: State::ServerVersion,
            input: Input::default(),
            out: Vec::new(),
            password: password.map(|p| Zeroizing::new(p.to_vec())),
            version: None,
            security: None,
        }
    }

    /// The version negotiated with the BMC, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The security type in use, once chosen (1 None, 2 VNC Authentication).
    pub fn security_type(&self) -> Option<u8> {
        self.security
    }

    /// True once SecurityResult OK (or its absence) ended the handshake.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes the current state still needs; reading no more than this from
    /// the BMC never reads past the handshake. Zero once done or failed.
    pub fn wants(&self) -> usize {
        self.need().saturating_sub(self.input.len())
    }

    fn need(&self) -> usize {
        match self.state {
            State::ServerVersion => VERSION_LEN,
            State::ServerChosenType | State::ReasonLen(_) | State::SecurityResult => 4,
            State::TypeCount => 1,
            State::Types(n) => usize::from(n),
            // Bounded by MAX_REASON_LEN before this state is entered.
            State::Reason(_, len) => len as usize,
            State::Challenge => CHALLENGE_LEN,
            State::Done | State::Failed => 0,
        }
    }

    /// Bytes to send to the BMC, in order. Empty when there is nothing to send.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Consumes bytes from the BMC; returns how many were used (all of them unless the
    /// handshake ended in the middle of `data`). On error the handshake is over.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, HandshakeError> {
        if self.state == State::Failed {
            return Err(HandshakeError::AlreadyFailed);
        }
        let mut pos = 0;
        while self.state != State::Done {
            // States needing 0 bytes (an empty reason) complete without input.
            let Some(msg) = self.input.fill(self.need(), data, &mut pos) else {
                break;
            };
            if let Err(e) = self.step(&msg) {
                self.state = State::Failed;
                return Err(e);
            }
        }
        Ok(pos)
    }

    fn step(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        self.state = match self.state {
            State::ServerVersion => self.on_version(msg)?,
            State::ServerChosenType => match be_u32(msg) {
                0 => State::ReasonLen(Failure::Refused),
                t => self.choose(&[t])?,
            },
            State::TypeCount => match msg.first() {
                Some(0) | None => State::ReasonLen(Failure::Refused),
                Some(&n) => State::Types(n),
            },
            State::Types(_) => {
                let offered: Vec<u32> = msg.iter().map(|&t| u32::from(t)).collect();
                self.choose(&offered)?
            }
            State::ReasonLen(failure) => {
                let len = be_u32(msg);
                if len > MAX_REASON_LEN {
                    return Err(HandshakeError::TooLong {
                        what: "failure reason",
                        len,
                        max: MAX_REASON_LEN,
                    });
                }
                State::Reason(failure, len)
            }
            State::Reason(failure, _) => {
                // QEMU counts the C string's NUL terminator in the length.
                let text = msg.strip_suffix(b"\0").unwrap_or(msg);
                let reason = sanitize(text);
                return Err(match failure {
                    Failure::Refused => HandshakeError::Refused { reason },
                    Failure::Auth(status) => HandshakeError::AuthFailed {
                        status,
                        reason: Some(reason),
                    },
                });
            }
            State::Challenge => {
                let challenge: &[u8; CHALLENGE_LEN] =
                    msg.try_into().map_err(|_| HandshakeError::AlreadyFailed)?;
                let password = self.password.as_deref().map_or(&[][..], |p| &p[..]);
                self.out
                    .extend_from_slice(&vnc_auth::response(password, challenge));
                State::SecurityResult
            }
            State::SecurityResult => match be_u32(msg) {
                0 => State::Done,
                status if self.version.is_some_and(Version::reason_after_failure) => {
                    State::ReasonLen(Failure::Auth(status))
                }
                status => {
                    return Err(HandshakeError::AuthFailed {
                        status,
                        reason: None,
                    });
                }
            },
            State::Done | State::Failed => self.state,
        };
        Ok(())
    }

    fn on_version(&mut self, msg: &[u8]) -> Result<State, HandshakeError> {
        let (major, minor) = parse_version(msg)?;
        let version = match (major, minor) {
            (3, 3..=6) => Version::V3_3,
            (3, 7) => Version::V3_7,
            // 3.8, Apple's 3.889, and anything newer: answered as 3.8.
            (3, 8..) | (4.., _) => Version::V3_8,
            _ => return Err(HandshakeError::UnsupportedVersion { major, minor }),
        };
        self.version = Some(version);
        self.out.extend_from_slice(version.wire());
        Ok(if version == Version::V3_3 {
            State::ServerChosenType
        } else {
            State::TypeCount
        })
    }

    /// Picks a security type among `offered` (one server-chosen type in 3.3): None
    /// when offered (it cannot fail), else VNC Authentication when a password is set.
    fn choose(&mut self, offered: &[u32]) -> Result<State, HandshakeError> {
        let version = self.version.unwrap_or(Version::V3_8);
        let has = |t: u8| offered.contains(&u32::from(t));
        let chosen = if has(SEC_NONE) {
            SEC_NONE
        } else if has(SEC_VNC_AUTH) {
            if self.password.is_none() {
                return Err(HandshakeError::PasswordRequired);
            }
            SEC_VNC_AUTH
        } else {
            return Err(HandshakeError::UnsupportedSecurity {
                offered: offered.to_vec(),
            });
        };
        self.security = Some(chosen);
        if version != Version::V3_3 {
            self.out.push(chosen);
        }
        Ok(match chosen {
            SEC_VNC_AUTH => State::Challenge,
            _ if version.result_after_none() => State::SecurityResult,
            _ => State::Done,
        })
    }
}
