//! Authentication services, independent of HTTP: login, refresh, logout, password
//! change, and issuing tokens for a session.

mod login;
mod password;
mod refresh;
mod tokens;

pub use login::login;
pub(crate) use login::throttle_source;
pub use password::change_password;
pub use refresh::{logout, refresh};
pub use tokens::access_claims;

/// Lower-cases and trims an email (the canonical form stored and throttled on).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
