//! The gateway token from registration, kept in the state directory
//! (`manager-token.json`, mode 0600, written atomically) and reused across restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::secret::Secret;

/// File name in the state directory.
pub const TOKEN_FILE: &str = "manager-token.json";

/// A stored registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The manager base URL it was issued by (a token is not sent to another manager).
    pub manager_url: String,
    /// This gateway's id at the manager.
    pub gateway_id: String,
    /// The bearer token.
    pub token: Secret,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    manager_url: String,
    gateway_id: String,
    gateway_token: String,
}

/// Path of the token file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// Loads the stored token; `Ok(None)` when there is none. Errors name the file,
/// never the token.
pub fn load(state_dir: &Path) -> Result<Option<StoredToken>, String> {
    let p = path(state_dir);
    let text = match std::fs::read(&p) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", p.display())),
    };
    let d: OnDisk = serde_json::from_slice(&text)
        .map_err(|_| format!("{} is not a valid token file", p.display()))?;
    Ok(Some(StoredToken {
        manager_url: d.manager_url,
        gateway_id: d.gateway_id,
        token: Secret::new(d.gateway_token),
    }))
}

/// Stores `t` (0600, atomic rename).
pub fn store(state_dir: &Path, t: &StoredToken) -> Result<(), String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("creating {}: {e}", state_dir.display()))?;
    let d = OnDisk {
        manager_url: t.manager_url.clone(),
        gateway_id: t.gateway_id.clone(),
        gateway_token: t.token.expose().to_owned(),
    };
    let json = Zeroizing::new(serde_json::to_vec_pretty(&d).map_err(|e| e.to_string())?);
    let result = crate::pki::write_atomic(&path(state_dir), &json, 0o600);
    let mut d = d;
    zeroize::Zeroize::zeroize(&mut d.gateway_token);
    result.map_err(|e| format!("{:#}", anyhow::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let t = StoredToken {
            manager_url: "http://127.0.0.1:8090".into(),
            gateway_id: "gw_1".into(),
            token: Secret::new("obg_secret".into()),
        };
        store(dir.path(), &t).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap(), Some(t.clone()));
        // Replaced atomically, no temp file left behind.
        store(
            dir.path(),
            &StoredToken {
                gateway_id: "gw_2".into(),
                ..t
            },
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().gateway_id, "gw_2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(path(dir.path()), "{\"gateway_token\":\"obg_x\"").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            err.contains("not a valid token file") && !err.contains("obg_x"),
            "{err}"
        );
    }
}
