//! The agent as RFB server toward the browser: security type None only.

use super::{HandshakeError, Input, SEC_NONE, VERSION_LEN, Version, parse_version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's ProtocolVersion.
    ClientVersion,
    /// 3.7+: waiting for the client's one-byte security type choice.
    ClientChoice,
    /// Handshake over (SecurityResult OK sent, or none due): relay from here on.
    Done,
    /// Failed; nothing more is consumed.
    Failed,
}

/// The server side of the RFB security handshake toward the browser: speaks 3.8
/// (accepts 3.3 and 3.7 clients) and offers only security type None, so the browser
/// needs no credential and sees none.
///
/// Created with its ProtocolVersion already queued in [`FrontHandshake::take_output`].
/// After an error, [`FrontHandshake::take_output`] may still hold a failure
/// message for the client: send it before closing.
#[derive(Debug)]
pub struct FrontHandshake {
    state: State,
    input: Input,
    out: Vec<u8>,
    version: Option<Version>,
}

impl Default for FrontHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl FrontHandshake {
    /// A new handshake with `RFB 003.008\n` queued for sending.
    pub fn new() -> Self {
        FrontHandshake {
            state: State::ClientVersion,
            input: Input::default(),
            out: Version::V3_8.wire().to_vec(),
            version: None,
        }
    }

    /// The version the client chose, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// True once the client may send ClientInit.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes the current state still needs (never more than the handshake).
    pub fn wants(&self) -> usize {
        self.need().saturating_sub(self.input.len())
    }

    fn need(&self) -> usize {
        match self.state {
            State::ClientVersion => VERSION_LEN,
            State::ClientChoice => 1,
            State::Done | State::Failed => 0,
        }
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Consumes bytes from the client; returns how many were used.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, HandshakeError> {
        if self.state == State::Failed {
            return Err(HandshakeError::AlreadyFailed);
        }
        let mut pos = 0;
        while !matches!(self.state, State::Done) {
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
            State::ClientVersion => {
                let (major, minor) = parse_version(msg)?;
                let version = match (major, minor) {
                    (3, 3..=6) => Version::V3_3,
                    (3, 7) => Version::V3_7,
                    (3, 8..) => Version::V3_8,
                    _ => return Err(HandshakeError::UnsupportedVersion { major, minor }),
                };
                self.version = Some(version);
                if version == Version::V3_3 {
                    // The server decides: None, no SecurityResult.
                    self.out
                        .extend_from_slice(&u32::from(SEC_NONE).to_be_bytes());
                    State::Done
                } else {
                    self.out.extend_from_slice(&[1, SEC_NONE]);
                    State::ClientChoice
                }
            }
            State::ClientChoice => {
                let choice = msg.first().copied().unwrap_or(0);
                let v38 = self.version == Some(Version::V3_8);
                if choice != SEC_NONE {
                    if v38 {
                        let reason = b"only security type None is offered";
                        self.out.extend_from_slice(&1u32.to_be_bytes());
                        self.out
                            .extend_from_slice(&(reason.len() as u32).to_be_bytes());
                        self.out.extend_from_slice(reason);
                    }
                    return Err(HandshakeError::BadClientChoice(choice));
                }
                if v38 {
                    self.out.extend_from_slice(&0u32.to_be_bytes());
                }
                State::Done
            }
            State::Done | State::Failed => self.state,
        };
        Ok(())
    }
}
