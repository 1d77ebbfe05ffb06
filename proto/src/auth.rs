//! Hygiene for the messages that carry secrets. [`pb::BmcAuth`]: its `Debug` never
//! shows the password, and the password is overwritten when the message is dropped
//! (best effort: copies made by the transport's buffers are not reached).
//! [`pb::Hello`]: its `Debug` shows `***` for a join token.

use std::fmt;

use zeroize::Zeroize;

use crate::pb;

impl fmt::Debug for pb::BmcAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcAuth")
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("cert_sha256", &HexBytes(&self.cert_sha256))
            .field("ipmi_cipher_suites", &self.ipmi_cipher_suites)
            .field("allow_ipmi15", &self.allow_ipmi15)
            .finish()
    }
}

impl fmt::Debug for pb::Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .field("capabilities", &self.capabilities)
            .field("agent_version", &self.agent_version)
            .field("pairing_code", &self.pairing_code)
            .field("initial_window", &self.initial_window)
            .field(
                "join_token",
                &if self.join_token.is_empty() {
                    ""
                } else {
                    "***"
                },
            )
            .finish()
    }
}

impl Drop for pb::BmcAuth {
    fn drop(&mut self) {
        self.password.zeroize();
    }
}

struct HexBytes<'a>(&'a [u8]);

impl fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_everywhere_it_is_nested() {
        let auth = pb::BmcAuth {
            username: "admin".into(),
            password: "canary-Pa55word".into(),
            cert_sha256: vec![0xab; 32].into(),
            ipmi_cipher_suites: vec![17, 3],
            allow_ipmi15: false,
        };
        let open = pb::StreamOpen {
            stream_id: 1,
            kind: pb::StreamKind::Vnc as i32,
            target: "vnc://10.0.0.5".into(),
            initial_window: 0,
            auth: Some(Box::new(auth.clone())),
        };
        let req = pb::Request {
            request_id: 7,
            body: Some(pb::request::Body::Power(pb::PowerRequest {
                endpoint: "ipmi://10.0.0.5".into(),
                auth: Some(Box::new(auth)),
                action: pb::PowerAction::Status as i32,
            })),
        };
        for text in [
            format!("{open:?}"),
            format!("{open:#?}"),
            format!("{req:?}"),
        ] {
            assert!(!text.contains("canary"), "{text}");
            assert!(text.contains("***"), "{text}");
            assert!(text.contains("admin"), "{text}");
        }
        let empty = format!("{:?}", pb::BmcAuth::default());
        assert!(!empty.contains("***"), "{empty}");
    }

    #[test]
    fn debug_hides_the_join_token() {
        let hello = pb::Hello {
            pairing_code: "ABCD-EFGH".into(),
            join_token: "objt_canary-join-token".into(),
            ..Default::default()
        };
        let frame = pb::Frame {
            kind: Some(pb::frame::Kind::Hello(hello.clone())),
        };
        for text in [format!("{hello:?}"), format!("{frame:#?}")] {
            assert!(!text.contains("canary"), "{text}");
            assert!(text.contains("***"), "{text}");
            assert!(text.contains("ABCD-EFGH"), "{text}");
        }
        let none = format!("{:?}", pb::Hello::default());
        assert!(!none.contains("***"), "{none}");
    }
}
