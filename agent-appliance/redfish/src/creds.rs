//! BMC credentials: the password is zeroized on drop and never printed.

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

/// A BMC user name and password. `Debug` prints `***` for the password; the
/// password's memory is wiped on drop.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: Zeroizing<String>,
}

impl Credentials {
    /// Credentials from a user name and a password (taken over, wiped on drop).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The `Authorization: Basic …` header value (wiped on drop).
    pub(crate) fn basic_header(&self) -> Zeroizing<String> {
        let plain = Zeroizing::new(format!("{}:{}", self.username, self.password.as_str()));
        let mut out = Zeroizing::new(String::from("Basic "));
        base64::engine::general_purpose::STANDARD.encode_string(plain.as_bytes(), &mut out);
        out
    }

    /// The session login body `{"UserName": …, "Password": …}` (wiped on drop).
    pub(crate) fn login_body(&self) -> Zeroizing<Vec<u8>> {
        #[derive(serde::Serialize)]
        struct Login<'a> {
            #[serde(rename = "UserName")]
            user: &'a str,
            #[serde(rename = "Password")]
            password: &'a str,
        }
        let v = Login {
            user: &self.username,
            password: &self.password,
        };
        let mut out = Zeroizing::new(Vec::with_capacity(64 + self.password.len() * 6));
        // Serialising a Value of strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &v);
        out
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::new("admin", "s3cret-pw");
        let d = format!("{c:?} {c:#?}");
        assert!(!d.contains("s3cret-pw"), "{d}");
        assert!(d.contains("***") && d.contains("admin"), "{d}");
    }

    #[test]
    fn basic_header_is_rfc7617() {
        // RFC 7617 section 2's example.
        let c = Credentials::new("Aladdin", "open sesame");
        assert_eq!(
            c.basic_header().as_str(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn login_body_escapes() {
        let c = Credentials::new("a\"b", "p\\w");
        let v: serde_json::Value = serde_json::from_slice(&c.login_body()).unwrap();
        assert_eq!(v["UserName"], "a\"b");
        assert_eq!(v["Password"], "p\\w");
    }
}
