//! An in-process fake Redfish service for faults the real emulator (sushy-tools)
//! cannot produce: a SessionService that counts sessions, oversized or garbage
//! bodies, foreign redirects, slow peers. HTTP/1.1 with keep-alive, optionally TLS.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use outband_redfish::Fingerprint;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// What to answer.
pub enum Answer {
    /// Status, extra headers, JSON body.
    Json(u16, Vec<(String, String)>, String),
    /// Raw bytes written as they are, then the connection is closed.
    Raw(Vec<u8>),
    /// Written byte by byte with this pause between bytes.
    Trickle(Vec<u8>, Duration),
}

pub fn json(status: u16, body: impl Into<String>) -> Answer {
    Answer::Json(status, Vec::new(), body.into())
}

/// The fake's behaviour and bookkeeping.
#[derive(Debug, Default)]
pub struct State {
    pub with_sessions: bool,
    pub password: String,
    pub power: String,
    pub allowed_resets: Option<Vec<String>>,
    pub live_sessions: BTreeSet<String>,
    pub created: usize,
    pub deleted: usize,
    pub next_token: usize,
    pub requests: Vec<Req>,
    /// Bytes of plaintext received over all connections.
    pub plaintext_bytes: usize,
    /// TCP connections accepted.
    pub connections: usize,
}

pub type Override = dyn Fn(&Req, &mut State) -> Option<Answer> + Send + Sync;

pub struct FakeBmc {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub fingerprint: Option<Fingerprint>,
}

impl FakeBmc {
    /// A plain-HTTP fake with a SessionService (or not), user admin/`password`.
    pub fn start(with_sessions: bool) -> Self {
        Self::start_with(
            with_sessions,
            false,
            Arc::new(|_: &Req, _: &mut State| None),
        )
    }

    /// Full control: TLS or not, and a per-request override (None: default answer).
    pub fn start_with(with_sessions: bool, tls: bool, over: Arc<Override>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            with_sessions,
            password: "password".into(),
            power: "Off".into(),
            allowed_resets: Some(vec!["On".into(), "ForceOff".into(), "ForceRestart".into()]),
            ..State::default()
        }));
        let (tls_config, fingerprint) = if tls {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let fp = Fingerprint::of_der(cert.der());
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
            (Some(Arc::new(cfg)), Some(fp))
        } else {
            (None, None)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        st.lock().unwrap().connections += 1;
                        let (st, over, tls) = (st.clone(), over.clone(), tls_config.clone());
                        std::thread::spawn(move || serve(conn, st, over, tls));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
            fingerprint,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Requests seen with this method.
    pub fn count(&self, method: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(
    conn: TcpStream,
    state: Arc<Mutex<State>>,
    over: Arc<Override>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let stream: Box<dyn Stream> = match tls {
        Some(cfg) => Box::new(rustls::StreamOwned::new(
            rustls::ServerConnection::new(cfg).unwrap(),
            conn,
        )),
        None => Box::new(conn),
    };
    let mut r = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut r, &state) else {
            return;
        };
        let answer = {
            let mut st = state.lock().unwrap();
            st.requests.push(req.clone());
            over(&req, &mut st).unwrap_or_else(|| default_answer(&req, &mut st))
        };
        let w = r.get_mut();
        match answer {
            Answer::Json(status, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if w.write_all(head.as_bytes()).is_err() || w.write_all(body.as_bytes()).is_err() {
                    return;
                }
                let _ = w.flush();
            }
            Answer::Raw(bytes) => {
                let _ = w.write_all(&bytes);
                let _ = w.flush();
                return;
            }
            Answer::Trickle(bytes, pause) => {
                for b in bytes {
                    if w.write_all(&[b]).and_then(|_| w.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
                return;
            }
        }
    }
}

fn read_request(r: &mut BufReader<Box<dyn Stream>>, state: &Mutex<State>) -> Option<Req> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut total = line.len();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        total += h.len();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    state.lock().unwrap().plaintext_bytes += total + len;
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

const SYS: &str = "/redfish/v1/Systems/1";

/// A small Redfish service: root, Systems with one member, sessions, reset.
pub fn default_answer(req: &Req, st: &mut State) -> Answer {
    let path = req.path.trim_end_matches('/');
    if path == "/redfish/v1" && req.method == "GET" {
        let sessions = if st.with_sessions {
            r#", "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
               "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}"#
        } else {
            ""
        };
        return json(
            200,
            format!(
                r#"{{"@odata.id": "/redfish/v1/", "RedfishVersion": "1.11.0",
                   "Systems": {{"@odata.id": "/redfish/v1/Systems"}}{sessions}}}"#
            ),
        );
    }
    if path == "/redfish/v1/SessionService/Sessions" && req.method == "POST" && st.with_sessions {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        if v["UserName"] != "admin" || v["Password"] != st.password.as_str() {
            return json(401, r#"{"error": {"message": "bad credentials"}}"#);
        }
        st.next_token += 1;
        st.created += 1;
        let token = format!("tok{}", st.next_token);
        st.live_sessions.insert(token.clone());
        let loc = format!("/redfish/v1/SessionService/Sessions/{}", st.next_token);
        return Answer::Json(
            201,
            vec![
                ("X-Auth-Token".into(), token),
                ("Location".into(), loc.clone()),
            ],
            format!(r#"{{"@odata.id": "{loc}"}}"#),
        );
    }
    // Everything else needs authentication.
    let authed = match (req.header("x-auth-token"), req.header("authorization")) {
        (Some(t), _) => st.live_sessions.contains(t),
        (None, Some(b)) if !st.with_sessions => {
            use base64::Engine as _;
            let want =
                base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", st.password));
            b == format!("Basic {want}")
        }
        _ => false,
    };
    if !authed {
        return json(401, "{}");
    }
    if let Some(n) = path.strip_prefix("/redfish/v1/SessionService/Sessions/")
        && req.method == "DELETE"
    {
        let token = format!("tok{n}");
        return if st.live_sessions.remove(&token) {
            st.deleted += 1;
            Answer::Json(204, Vec::new(), String::new())
        } else {
            json(404, "{}")
        };
    }
    match (req.method.as_str(), path) {
        ("GET", "/redfish/v1/Systems") => json(
            200,
            format!(r#"{{"Members@odata.count": 1, "Members": [{{"@odata.id": "{SYS}"}}]}}"#),
        ),
        ("GET", SYS) => {
            let allowed = st
                .allowed_resets
                .as_ref()
                .map(|a| format!(r#", "ResetType@Redfish.AllowableValues": {a:?}"#))
                .unwrap_or_default();
            json(
                200,
                format!(
                    r##"{{"@odata.id": "{SYS}", "Id": "1", "PowerState": "{}",
                       "Actions": {{"#ComputerSystem.Reset": {{
                         "target": "{SYS}/Actions/ComputerSystem.Reset"{allowed}}}}}}}"##,
                    st.power
                ),
            )
        }
        ("POST", p) if p == format!("{SYS}/Actions/ComputerSystem.Reset") => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            match v["ResetType"].as_str() {
                Some("On") => st.power = "On".into(),
                Some("ForceOff") => st.power = "Off".into(),
                _ => {}
            }
            Answer::Json(204, Vec::new(), String::new())
        }
        _ => json(404, r#"{"error": {"message": "no such resource"}}"#),
    }
}
