//! A Redfish session (`X-Auth-Token`), deleted on every path: explicitly by
//! [`Session::close`] (which reports failure), else by `Drop` (best effort, also
//! while unwinding from a panic).

use std::fmt;

use zeroize::Zeroizing;

use crate::creds::Credentials;
use crate::error::{Error, Result};
use crate::http::{Auth, Http};

#[derive(serde::Deserialize)]
struct OdataId {
    #[serde(rename = "@odata.id")]
    id: Option<String>,
}

/// A live session on the BMC.
pub(crate) struct Session {
    http: Http,
    token: Zeroizing<String>,
    /// The session resource, deleted at the end.
    path: String,
    open: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("path", &self.path)
            .field("token", &"***")
            .field("open", &self.open)
            .finish()
    }
}

/// Why a login did not produce a session.
#[derive(Debug)]
pub(crate) enum Login {
    /// Logged in.
    Ok(Session),
    /// The service has no working SessionService (404/405/501): use Basic auth.
    Unavailable,
}

impl Session {
    /// POSTs the credentials to `sessions_path`.
    pub(crate) fn login(http: &Http, sessions_path: &str, creds: &Credentials) -> Result<Login> {
        let body = creds.login_body();
        let reply = http.send("POST", sessions_path, None, Some(&body), None)?;
        if matches!(reply.status, 404 | 405 | 501) {
            return Ok(Login::Unavailable);
        }
        if !reply.ok() {
            return Err(reply.error());
        }
        // The resource to delete: the Location header, else the body's @odata.id;
        // either must be on the BMC's origin.
        let link = reply.location.clone().or_else(|| {
            serde_json::from_slice::<OdataId>(&reply.body)
                .ok()
                .and_then(|v| v.id)
        });
        let path = link.map(|l| session_path(http, &reply.path, &l));
        let (token, path) = match (reply.token, path) {
            (Some(t), Some(Ok(p))) => (t, p),
            (Some(t), bad) => {
                // A session exists but cannot be located: try the usual place, so it
                // is not left behind, then fail.
                let why = match bad {
                    Some(Err(e)) => e.to_string(),
                    _ => "no Location or @odata.id".into(),
                };
                let _ = http.send("DELETE", sessions_path, Some(&Auth::Token(&t)), None, None);
                return Err(Error::Protocol(format!("session created but {why}")));
            }
            (None, _) => {
                return Err(Error::Protocol(
                    "session created without an X-Auth-Token".into(),
                ));
            }
        };
        Ok(Login::Ok(Session {
            http: http.clone(),
            token,
            path,
            open: true,
        }))
    }

    /// The token, for requests.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Deletes the session; an error if the BMC did not confirm it (a 404 counts as
    /// gone). The guard does not retry after this.
    pub(crate) fn close(mut self) -> Result<()> {
        self.delete()
    }

    fn delete(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let reply = self.http.send(
            "DELETE",
            &self.path,
            Some(&Auth::Token(&self.token)),
            None,
            None,
        )?;
        if reply.ok() || reply.status == 404 {
            Ok(())
        } else {
            Err(reply.error())
        }
    }
}

/// Where the session lives: the link resolved on the BMC's origin. An absolute URL
/// naming another host or port (BMCs often name themselves by a hostname or address
/// other than the one dialled) contributes only its path: the session exists on this
/// BMC, and the token never goes anywhere else.
fn session_path(http: &Http, base: &str, link: &str) -> Result<String> {
    match http.origin().resolve(base, link) {
        Ok(p) => Ok(p),
        Err(e) => {
            let Some((_, path)) = crate::origin::Origin::split(link) else {
                return Err(e);
            };
            http.origin().resolve(base, &path)
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}
