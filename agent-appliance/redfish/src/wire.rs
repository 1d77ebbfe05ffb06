//! A small blocking HTTP/1.1 client for one origin: TCP (+ rustls), requests with
//! `Content-Length` bodies, responses framed by `Content-Length`, chunked encoding or
//! end of stream, every length bounded before it is buffered, every blocking call
//! under the request's deadline. One kept-alive connection is reused for GET and
//! DELETE; POST and PATCH always go on a fresh one (never replayed after a failure).
//!
//! A hand-written client instead of ureq: the agent's 2.5 MiB budget (ureq with the
//! `http` crate cost about 170 KB of it), and a BMC needs only this much HTTP.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

/// Why an exchange failed, before it is mapped to the crate's error codes.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Name resolution failed or gave no address.
    Resolve(String),
    /// TCP connect failed (refused, no route).
    Connect(io::Error),
    /// A deadline passed.
    Timeout(&'static str),
    /// TLS handshake failed (not a deadline).
    Tls(io::Error),
    /// The connection failed after it was set up.
    Io(io::Error),
    /// The peer broke HTTP/1.1 or a bound.
    Protocol(String),
}

/// A response with its body read whole.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Header names lower-cased; values that are not UTF-8 are dropped.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Limits and deadlines of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_header: usize,
    pub(crate) max_body: usize,
    pub(crate) connect: Duration,
    pub(crate) total: Duration,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

/// A connection with its unread input.
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// Sets the socket's timeouts to what is left of `deadline` before each call.
struct Timed<'a, S: ?Sized> {
    inner: &'a mut S,
    tcp: TcpStream,
    deadline: Instant,
}

impl<S: ?Sized> Timed<'_, S> {
    /// Both directions: a TLS read may write and a TLS write may read.
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "deadline passed"));
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl<S: Read + ?Sized> Read for Timed<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.read(buf)
    }
}

impl<S: Write + ?Sized> Write for Timed<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.arm()?;
        self.inner.flush()
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

impl Conn {
    /// Connects to `host:port` (TLS with `tls` when given) before `deadline`.
    pub(crate) fn open(
        host: &str,
        port: u16,
        tls: Option<&Arc<ClientConfig>>,
        limits: &Limits,
        deadline: Instant,
    ) -> Result<Conn, WireError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare, port)
            .to_socket_addrs()
            .map_err(|e| WireError::Resolve(e.to_string()))?
            .take(8)
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WireError::Timeout("connect"));
            }
            match TcpStream::connect_timeout(&addr, left.min(limits.connect)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some(e)) if is_timeout(&e) => return Err(WireError::Timeout("connect")),
            (None, Some(e)) => return Err(WireError::Connect(e)),
            (None, None) => return Err(WireError::Resolve(format!("no address for {host}"))),
        };
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(cfg) => {
                let name = ServerName::try_from(bare)
                    .map_err(|_| WireError::Protocol(format!("not a TLS server name: {bare}")))?
                    .to_owned();
                let mut conn = ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| WireError::Tls(io::Error::other(e)))?;
                let clone = tcp.try_clone().map_err(WireError::Io)?;
                let mut sock = tcp;
                let mut timed = Timed {
                    inner: &mut sock,
                    tcp: clone,
                    deadline,
                };
                while conn.is_handshaking() {
                    if let Err(e) = conn.complete_io(&mut timed) {
                        return Err(if is_timeout(&e) {
                            WireError::Timeout("TLS handshake")
                        } else {
                            WireError::Tls(e)
                        });
                    }
                }
                Stream::Tls(Box::new(StreamOwned::new(conn, sock)))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one request and reads its response. Returns whether the connection can
    /// carry another request.
    pub(crate) fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        limits: &Limits,
        deadline: Instant,
    ) -> Result<(Response, bool), WireError> {
        let tcp = self.stream.tcp().try_clone().map_err(WireError::Io)?;
        let io_err = |e: io::Error| {
            if is_timeout(&e) {
                WireError::Timeout("request")
            } else {
                WireError::Io(e)
            }
        };
        {
            let inner: &mut dyn ReadWrite = match &mut self.stream {
                Stream::Plain(s) => s,
                Stream::Tls(s) => s.as_mut(),
            };
            let mut w = Timed {
                inner,
                tcp: tcp.try_clone().map_err(WireError::Io)?,
                deadline,
            };
            w.write_all(head).map_err(io_err)?;
            w.write_all(body).map_err(io_err)?;
            w.flush().map_err(io_err)?;
        }
        let inner: &mut dyn ReadWrite = match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.as_mut(),
        };
        let mut r = Reader {
            timed: Timed {
                inner,
                tcp,
                deadline,
            },
            buf: &mut self.buf,
        };
        r.response(limits).map_err(|e| match e {
            WireError::Io(e) if is_timeout(&e) => WireError::Timeout("response"),
            e => e,
        })
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

struct Reader<'a, 'b> {
    timed: Timed<'a, dyn ReadWrite + 'b>,
    buf: &'a mut Vec<u8>,
}

impl Reader<'_, '_> {
    /// Reads more input; `Ok(false)` at end of stream.
    fn fill(&mut self, cap: usize) -> Result<bool, WireError> {
        let mut chunk = [0u8; 8192];
        let want = cap.saturating_sub(self.buf.len()).clamp(1, chunk.len());
        let n = loop {
            match self.timed.read(chunk.get_mut(..want).unwrap_or_default()) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A TLS peer that closes without close_notify: treat as end of stream.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break 0,
                Err(e) => return Err(WireError::Io(e)),
            }
        };
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n > 0)
    }

    /// Takes a line ending in CRLF (without it), at most `max` bytes.
    fn line(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..i + 2).take(i).collect();
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err(WireError::Protocol(format!("line over {max} bytes")));
            }
            if !self.fill(max + 2)? {
                return Err(WireError::Protocol("connection closed mid-line".into()));
            }
        }
    }

    fn response(&mut self, limits: &Limits) -> Result<(Response, bool), WireError> {
        // Skip 1xx interim responses (at most a few).
        for _ in 0..4 {
            let (status, headers, http11) = self.head(limits.max_header)?;
            if (100..200).contains(&status) {
                continue;
            }
            let (body, framed) = self.body(status, &headers, limits.max_body)?;
            let close = headers
                .iter()
                .any(|(k, v)| k == "connection" && v.to_ascii_lowercase().contains("close"));
            let reusable = framed && http11 && !close && self.buf.is_empty();
            return Ok((
                Response {
                    status,
                    headers,
                    body,
                },
                reusable,
            ));
        }
        Err(WireError::Protocol("too many interim responses".into()))
    }

    #[allow(clippy::type_complexity)]
    fn head(&mut self, max: usize) -> Result<(u16, Vec<(String, String)>, bool), WireError> {
        let mut used = 0;
        let status_line = self.line(max)?;
        used += status_line.len() + 2;
        let text = std::str::from_utf8(&status_line)
            .map_err(|_| WireError::Protocol("status line is not text".into()))?;
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let http11 = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => {
                return Err(WireError::Protocol(format!(
                    "not an HTTP/1.x response: {:.40}",
                    text
                )));
            }
        };
        let code = parts.next().unwrap_or_default();
        let status = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
            code.parse::<u16>().unwrap_or(0)
        } else {
            return Err(WireError::Protocol(format!("bad status code {code:.10}")));
        };
        let mut headers = Vec::new();
        loop {
            let line = self.line(max.saturating_sub(used))?;
            used += line.len() + 2;
            if used > max {
                return Err(WireError::Protocol(format!(
                    "response header over {max} bytes"
                )));
            }
            if line.is_empty() {
                return Ok((status, headers, http11));
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(WireError::Protocol("header line without a colon".into()));
            };
            let (name, value) = line.split_at(colon);
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if name.is_empty() || name.bytes().any(|b| b <= b' ') {
                return Err(WireError::Protocol("bad header name".into()));
            }
            if let Ok(value) = std::str::from_utf8(value.get(1..).unwrap_or_default()) {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
    }

    /// Reads the body; returns it and whether it was framed (so the connection can be
    /// reused).
    fn body(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        max: usize,
    ) -> Result<(Vec<u8>, bool), WireError> {
        if status == 204 || status == 304 {
            return Ok((Vec::new(), true));
        }
        fn get<'h>(
            headers: &'h [(String, String)],
            name: &'static str,
        ) -> impl Iterator<Item = &'h str> {
            headers
                .iter()
                .filter(move |(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
        let too_big = || WireError::Protocol(format!("response body over {max} bytes"));
        if get(headers, "transfer-encoding").any(|v| v.to_ascii_lowercase().contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = self.line(1024)?;
                let text = std::str::from_utf8(&line).unwrap_or_default();
                let size = text.split(';').next().unwrap_or_default().trim();
                if size.is_empty() || size.len() > 8 {
                    return Err(WireError::Protocol("bad chunk size".into()));
                }
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| WireError::Protocol("bad chunk size".into()))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    for _ in 0..64 {
                        if self.line(1024)?.is_empty() {
                            return Ok((body, true));
                        }
                    }
                    return Err(WireError::Protocol("too many trailers".into()));
                }
                if body.len() + size > max {
                    return Err(too_big());
                }
                self.take_exact(size, &mut body)?;
                if !self.line(0)?.is_empty() {
                    return Err(WireError::Protocol("chunk without CRLF".into()));
                }
            }
        }
        let mut lengths = get(headers, "content-length");
        if let Some(first) = lengths.next() {
            if lengths.any(|l| l != first) {
                return Err(WireError::Protocol("conflicting Content-Length".into()));
            }
            if first.is_empty() || first.len() > 12 || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::Protocol("bad Content-Length".into()));
            }
            let len: usize = first
                .parse()
                .map_err(|_| WireError::Protocol("bad Content-Length".into()))?;
            if len > max {
                return Err(too_big());
            }
            let mut body = Vec::with_capacity(len);
            self.take_exact(len, &mut body)?;
            return Ok((body, true));
        }
        // Until the peer closes.
        while self.fill(max + 1)? {
            if self.buf.len() > max {
                return Err(too_big());
            }
        }
        Ok((std::mem::take(self.buf), false))
    }

    fn take_exact(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
        while self.buf.len() < n {
            if !self.fill(n)? {
                return Err(WireError::Protocol("connection closed mid-body".into()));
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }
}
