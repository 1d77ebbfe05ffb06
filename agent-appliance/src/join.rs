//! The join token: a secret baked into the appliance image (`--join-token-file`,
//! `join_token_file` in the config file) that lets the manager adopt the agent
//! without an operator typing its pairing code.
//!
//! Life of a token:
//! 1. At start the file is read (at most [`MAX_TOKEN_FILE`] bytes; the first line,
//!    trimmed, must look like `objt_…`, at most 128 bytes). An unusable file is an
//!    error in the log and the agent's last error, never fatal: the agent still runs
//!    and can be adopted by its pairing code. The token itself is never logged.
//! 2. It is presented in every hello until the gateway sends a `JoinResult`:
//!    `ACCEPTED`, `REFUSED` or `ALREADY_DECIDED` end it, `NOT_USED` (no manager link,
//!    manager unreachable) keeps it for the next connection.
//! 3. A final outcome is written to `join-token.state` in the state dir (0600) with
//!    the SHA-256 of the token, never the token. At the next start a token with that
//!    hash is not presented again; a different token (a re-flashed image) is.
//!    A refusal stays the agent's last error, also after a restart.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use outband_proto::handshake::{MAX_JOIN_MESSAGE_LEN, check_join_token};
use outband_proto::pb::{JoinOutcome, JoinResult};
use sha2::{Digest as _, Sha256};

/// Largest join token file read (the token is one line of at most 128 bytes).
pub const MAX_TOKEN_FILE: u64 = 1024;
/// The file in the state dir that records what became of a token.
pub const STATE_FILE: &str = "join-token.state";
/// Largest state file read.
const MAX_STATE_FILE: u64 = 4096;
const STATE_HEADER: &str = "outband-join-token-state v1";

/// Why the token file cannot be used. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read (missing, permissions).
    #[error("join token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_TOKEN_FILE`].
    #[error("join token file {path}: larger than {MAX_TOKEN_FILE} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content is not a join token.
    #[error("join token file {path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong (without the content).
        reason: String,
    },
}

/// A join token. `***` in Debug.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(***)")
    }
}

impl JoinToken {
    /// The secret, for the hello.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the token: what the state file records.
    pub fn fingerprint(&self) -> String {
        data_encoding::HEXLOWER.encode(&Sha256::digest(self.0.as_bytes()))
    }
}

/// Reads and checks a token file: the first line, trimmed.
pub fn read_token_file(path: &Path) -> Result<JoinToken, TokenFileError> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_end(&mut buf))
        .map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_TOKEN_FILE {
        return Err(TokenFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bad = |reason: String| TokenFileError::Bad {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(&buf).map_err(|_| bad("not UTF-8 text".into()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(bad("empty".into()));
    }
    check_join_token(line).map_err(bad)?;
    Ok(JoinToken(line.to_owned()))
}

/// A final outcome, as recorded in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The manager adopted the agent with the token.
    Accepted,
    /// The manager refused the token.
    Refused,
    /// The agent was already adopted or rejected; the token was not needed.
    AlreadyDecided,
}

impl Recorded {
    fn as_str(self) -> &'static str {
        match self {
            Recorded::Accepted => "accepted",
            Recorded::Refused => "refused",
            Recorded::AlreadyDecided => "already_decided",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Recorded::Accepted,
            "refused" => Recorded::Refused,
            "already_decided" => Recorded::AlreadyDecided,
            _ => return None,
        })
    }
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// SHA-256 (hex) of the token it is about.
    pub token_sha256: String,
    /// What became of it.
    pub outcome: Recorded,
    /// The gateway's message (one line, bounded).
    pub message: String,
}

impl StateRecord {
    fn render(&self) -> String {
        format!(
            "{STATE_HEADER}\ntoken_sha256={}\noutcome={}\nmessage={}\n",
            self.token_sha256,
            self.outcome.as_str(),
            self.message
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != STATE_HEADER {
            return None;
        }
        let (mut sha, mut outcome, mut message) = (None, None, String::new());
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "token_sha256" => sha = Some(v.to_owned()),
                "outcome" => outcome = Some(Recorded::parse(v)?),
                "message" => message = v.to_owned(),
                _ => {}
            }
        }
        Some(StateRecord {
            token_sha256: sha.filter(|s| s.len() == 64)?,
            outcome: outcome?,
            message,
        })
    }
}

/// Reads the state file; `Ok(None)` if there is none. Errors name the file.
pub fn read_state(state_dir: &Path) -> Result<Option<StateRecord>, String> {
    let path = state_dir.join(STATE_FILE);
    let mut buf = Vec::new();
    match std::fs::File::open(&path) {
        Ok(f) => f
            .take(MAX_STATE_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading {}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if buf.len() as u64 > MAX_STATE_FILE {
        return Err(format!(
            "{} is larger than {MAX_STATE_FILE} bytes",
            path.display()
        ));
    }
    std::str::from_utf8(&buf)
        .ok()
        .and_then(StateRecord::parse)
        .map(Some)
        .ok_or_else(|| format!("{} is not a join token state file", path.display()))
}

/// Writes the state file atomically (temporary file, fsync, rename), mode 0600.
pub fn write_state(state_dir: &Path, record: &StateRecord) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(record.render().as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, state_dir.join(STATE_FILE))
}

/// One line of printable text, at most [`MAX_JOIN_MESSAGE_LEN`] bytes.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_JOIN_MESSAGE_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Default)]
struct Inner {
    token: Option<JoinToken>,
    last_error: Option<String>,
}

/// The agent's join token and what it knows about it. Shared by the dial loop (the
/// hello) and the request handler (`JoinResult`).
#[derive(Debug)]
pub struct Join {
    state_dir: PathBuf,
    inner: Mutex<Inner>,
}

impl Join {
    /// No join token.
    pub fn none(state_dir: &Path) -> Join {
        Join {
            state_dir: state_dir.to_owned(),
            inner: Mutex::default(),
        }
    }

    /// Loads the token from `file` (if configured) unless the state dir says it was
    /// already used up. Problems are logged and kept as the last error; never fatal.
    pub fn load(file: Option<&Path>, state_dir: &Path) -> Join {
        let join = Join::none(state_dir);
        let Some(file) = file else {
            return join;
        };
        let token = match read_token_file(file) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!(
                    "{e}; running without a join token (adopt the agent by its pairing code)"
                );
                tracing::error!("{msg}");
                join.lock().last_error = Some(msg);
                return join;
            }
        };
        match read_state(state_dir) {
            Ok(Some(rec)) if rec.token_sha256 == token.fingerprint() => {
                match rec.outcome {
                    Recorded::Refused => {
                        let msg = format!(
                            "join token refused by the manager: {}; not presenting it again \
                             (put a new token in {})",
                            rec.message,
                            file.display()
                        );
                        tracing::error!("{msg}");
                        join.lock().last_error = Some(msg);
                    }
                    outcome => tracing::info!(
                        "join token already used ({}); not presenting it again",
                        outcome.as_str()
                    ),
                }
                return join;
            }
            Ok(_) => {}
            // Presenting the token again is harmless: the manager refuses a spent one.
            Err(e) => tracing::warn!("{e}; presenting the join token"),
        }
        tracing::info!(
            "join token loaded from {}; presenting it until the gateway reports the outcome",
            file.display()
        );
        join.lock().token = Some(token);
        join
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token to present in the next hello, if any.
    pub fn token(&self) -> Option<JoinToken> {
        self.lock().token.clone()
    }

    /// The last join problem (for the status page), if any.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Takes in the gateway's `JoinResult`. A final outcome stops the token from being
    /// presented again (in this process at once, after a restart through the state
    /// file). `Err` if the state file could not be written (the outcome still holds
    /// in memory).
    pub fn record(&self, result: &JoinResult) -> Result<(), String> {
        let message = one_line(&result.message);
        let outcome = match JoinOutcome::try_from(result.outcome) {
            Ok(JoinOutcome::Accepted) => Recorded::Accepted,
            Ok(JoinOutcome::Refused) => Recorded::Refused,
            Ok(JoinOutcome::AlreadyDecided) => Recorded::AlreadyDecided,
            Ok(JoinOutcome::NotUsed) => {
                let msg = format!(
                    "join token not used: {message}; presenting it again on the next connection"
                );
                tracing::warn!("{msg}");
                self.lock().last_error = Some(msg);
                return Ok(());
            }
            Ok(JoinOutcome::Unspecified) | Err(_) => {
                return Err(format!("unknown join outcome {}", result.outcome));
            }
        };
        let mut inner = self.lock();
        let Some(token) = inner.token.take() else {
            // Nothing presented (or already settled on this connection).
            return Ok(());
        };
        match outcome {
            Recorded::Accepted => {
                let tenant = one_line(&result.tenant_id);
                tracing::info!("join token accepted: adopted into tenant {tenant:?} ({message})");
                inner.last_error = None;
            }
            Recorded::AlreadyDecided => {
                tracing::info!("join token not needed: {message}");
                inner.last_error = None;
            }
            Recorded::Refused => {
                let msg = format!("join token refused by the manager: {message}");
                tracing::error!("{msg}");
                inner.last_error = Some(msg);
            }
        }
        drop(inner);
        let record = StateRecord {
            token_sha256: token.fingerprint(),
            outcome,
            message,
        };
        write_state(&self.state_dir, &record).map_err(|e| {
            let msg = format!(
                "recording the join outcome in {}: {e}; the token would be presented again \
                 after a restart",
                self.state_dir.join(STATE_FILE).display()
            );
            tracing::error!("{msg}");
            msg
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "objt_canary0123456789abcdefghijklmnopqrstuv";

    fn token_file(dir: &Path, content: &[u8]) -> PathBuf {
        let p = dir.join("join-token");
        std::fs::write(&p, content).unwrap();
        p
    }

    fn result(outcome: JoinOutcome, message: &str) -> JoinResult {
        JoinResult {
            outcome: outcome as i32,
            message: message.into(),
            tenant_id: "tn-1".into(),
        }
    }

    #[test]
    fn reads_the_first_line_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = token_file(dir.path(), format!("  {TOKEN}\r\n# comment\n").as_bytes());
        let t = read_token_file(&p).unwrap();
        assert_eq!(t.expose(), TOKEN);
        assert_eq!(format!("{t:?}"), "JoinToken(***)");
        assert_eq!(t.fingerprint().len(), 64);
    }

    #[test]
    fn bad_files_are_named_and_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_token_file(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, TokenFileError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains("nope"), "{missing}");

        let big = token_file(
            dir.path(),
            format!("{TOKEN}\n{}", "x".repeat(2000)).as_bytes(),
        );
        let e = read_token_file(&big).unwrap_err();
        assert!(matches!(e, TokenFileError::TooLarge { .. }), "{e}");

        let cases: [&[u8]; 6] = [
            b"",
            b"\n\n",
            b"obgr_canary-wrong-prefix\n",
            b"objt_canary with space\n",
            b"objt_canary\xff\xfe\n",
            &[
                b'o', b'b', b'j', b't', b'_', b'c', b'a', b'n', b'a', b'r', b'y',
            ]
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', 200))
            .collect::<Vec<u8>>(),
        ];
        for content in cases {
            let p = token_file(dir.path(), content);
            let e = read_token_file(&p).unwrap_err();
            assert!(matches!(e, TokenFileError::Bad { .. }), "{e}");
            let text = format!("{e} {e:?}");
            assert!(!text.contains("canary"), "the content leaked: {text}");
        }
    }

    #[test]
    fn missing_or_bad_file_is_the_last_error_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let join = Join::load(Some(&dir.path().join("absent")), dir.path());
        assert!(join.token().is_none());
        assert!(join.last_error().unwrap().contains("absent"));
        let p = token_file(dir.path(), b"obgr_wrong\n");
        let join = Join::load(Some(&p), dir.path());
        assert!(join.token().is_none());
        assert!(join.last_error().unwrap().contains("objt_"));
        let join = Join::load(None, dir.path());
        assert!(join.token().is_none() && join.last_error().is_none());
    }

    #[test]
    fn accepted_token_is_not_presented_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let p = token_file(dir.path(), TOKEN.as_bytes());
        let join = Join::load(Some(&p), &state);
        assert_eq!(join.token().unwrap().expose(), TOKEN);
        join.record(&result(JoinOutcome::Accepted, "adopted"))
            .unwrap();
        assert!(join.token().is_none());
        assert!(join.last_error().is_none());
        let text = std::fs::read_to_string(state.join(STATE_FILE)).unwrap();
        assert!(
            !text.contains("canary"),
            "the token is in the state file: {text}"
        );
        assert!(text.contains("outcome=accepted"), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restart: the same token stays unused.
        let again = Join::load(Some(&p), &state);
        assert!(again.token().is_none());
        assert!(again.last_error().is_none());
        // A re-flashed image with a new token presents that one.
        let other = "objt_another-token-for-a-new-image";
        std::fs::write(&p, other).unwrap();
        assert_eq!(
            Join::load(Some(&p), &state).token().unwrap().expose(),
            other
        );
    }

    #[test]
    fn refused_token_is_the_last_error_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = token_file(dir.path(), TOKEN.as_bytes());
        let join = Join::load(Some(&p), dir.path());
        join.record(&result(
            JoinOutcome::Refused,
            "the join token is unknown, used or expired\nsecond line",
        ))
        .unwrap();
        assert!(join.token().is_none());
        let err = join.last_error().unwrap();
        assert!(err.contains("refused") && err.contains("expired"), "{err}");
        let again = Join::load(Some(&p), dir.path());
        assert!(again.token().is_none());
        let err = again.last_error().unwrap();
        assert!(err.contains("refused") && err.contains("expired"), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
    }

    #[test]
    fn not_used_keeps_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = token_file(dir.path(), TOKEN.as_bytes());
        let join = Join::load(Some(&p), dir.path());
        join.record(&result(JoinOutcome::NotUsed, "manager unreachable"))
            .unwrap();
        assert_eq!(join.token().unwrap().expose(), TOKEN);
        assert!(join.last_error().unwrap().contains("manager unreachable"));
        assert!(!dir.path().join(STATE_FILE).exists());
        assert!(join.record(&result(JoinOutcome::Unspecified, "")).is_err());
        assert!(join.token().is_some());
        join.record(&result(JoinOutcome::AlreadyDecided, "already adopted"))
            .unwrap();
        assert!(join.token().is_none());
        assert!(join.last_error().is_none());
    }

    #[test]
    fn damaged_state_file_means_present_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = token_file(dir.path(), TOKEN.as_bytes());
        std::fs::write(dir.path().join(STATE_FILE), "garbage").unwrap();
        assert!(Join::load(Some(&p), dir.path()).token().is_some());
        std::fs::write(dir.path().join(STATE_FILE), "x".repeat(5000)).unwrap();
        assert!(read_state(dir.path()).is_err());
        assert!(Join::load(Some(&p), dir.path()).token().is_some());
    }

    #[test]
    fn long_messages_are_cut_to_one_bounded_line() {
        let m = one_line(&format!("a\tb\n{}", "é".repeat(300)));
        assert!(m.len() <= MAX_JOIN_MESSAGE_LEN, "{}", m.len());
        assert!(m.starts_with("a b "), "{m}");
    }
}
