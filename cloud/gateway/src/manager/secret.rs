//! Secrets from and for the manager: the registration credential and the gateway
//! token. Never logged (`***` in Debug), zeroized on drop.

use zeroize::Zeroizing;

/// A secret string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The secret itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads a registration credential file: the first line, trimmed. Errors name the
/// file, never its content.
pub fn read_credential_file(path: &std::path::Path) -> Result<Secret, String> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        format!(
            "reading registration credential file {}: {e}",
            path.display()
        )
    })?);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() || line.len() > 128 || !line.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "registration credential file {}: expected one line of 1-128 printable characters",
            path.display()
        ));
    }
    Ok(Secret::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_and_file_is_checked() {
        let s = Secret::new("obgr_topsecret".into());
        assert_eq!(format!("{s:?}"), "***");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cred");
        std::fs::write(&p, "  obgr_topsecret \nignored\n").unwrap();
        assert_eq!(read_credential_file(&p).unwrap().expose(), "obgr_topsecret");
        std::fs::write(&p, "\n").unwrap();
        let err = read_credential_file(&p).unwrap_err();
        assert!(err.contains("expected one line"), "{err}");
        std::fs::write(&p, "obgr_with space").unwrap();
        let err = read_credential_file(&p).unwrap_err();
        assert!(!err.contains("obgr_"), "never echoes the content: {err}");
        let err = read_credential_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
