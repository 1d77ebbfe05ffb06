//! Serving what the gateway starts on a connection: stream opens (relayed to BMC
//! endpoints on the allow-list), unary requests, and the agent's inventory report.
//!
//! Invariant: the agent dials a BMC only when the gateway opened a stream to it or
//! sent a BMC request for it, and the endpoint is on the allow-list. The only other
//! traffic to the BMC network is discovery, when configured (`discovery.rs`): presence
//! probes without credentials, whose findings are reported, never allowed.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::rt::net::TcpStream;
use futures_lite::{AsyncRead, AsyncWrite};
use outband_proto::pb::{
    AgentInfoReply, CloseCode, Endpoint, EndpointSource, ErrorReply, InventoryReport,
    JoinResultReply, RefuseCode, SerialBreakReply, StreamKind, reply, request,
};
use outband_tunnel::{Incoming, PendingStream, Stream, Tunnel};
use smol::channel::{Receiver, Sender};

use crate::target::{AllowList, Scheme, Target};

/// Buffer of the BMC-to-gateway direction (the other direction writes the stream's
/// chunks as they arrived, without a buffer of its own).
const RELAY_BUF: usize = 32 * 1024;
/// Bytes one direction of a relay moves per poll before it lets other tasks run.
/// The agent runs every task on one thread and smol has no cooperative budget of its
/// own: a bulk stream with a full receive window and a fast peer would otherwise copy
/// its whole window (megabytes with a large window) in one poll, while a keystroke on
/// another stream waits.
const RELAY_BUDGET: usize = 2 * RELAY_BUF;

/// What stream handling needs, shared by every stream of every connection.
#[derive(Debug)]
pub struct RelayContext {
    /// Endpoints the agent may dial.
    pub allow: AllowList,
    /// BMC connect timeout.
    pub connect_timeout: Duration,
    /// When the agent started (for uptime).
    pub started: Instant,
    /// BMC requests being answered right now (bounded by [`MAX_BMC_REQUESTS`]).
    pub bmc_requests: AtomicUsize,
    /// Endpoints the last discovery scan found.
    pub discovered: Mutex<Vec<Endpoint>>,
    /// Signalled (coalesced) when `discovered` changed, so the live connection sends
    /// a fresh inventory report.
    pub inventory_changed: (Sender<()>, Receiver<()>),
    /// Open IPMI SOL streams by connection and stream id: where a serial break
    /// request goes. Stream ids restart with every gateway connection, so the
    /// connection is part of the key: a SOL stream still winding down on an old
    /// connection must not take a new connection's entry.
    pub serial_breaks: Mutex<HashMap<(ConnId, u32), Sender<()>>>,
    /// The join token and its outcome (`JoinResult` requests land here).
    pub join: crate::join::Join,
}

impl RelayContext {
    /// A context for `allow` with nothing discovered yet.
    pub fn new(allow: AllowList, connect_timeout: Duration) -> Self {
        RelayContext {
            allow,
            connect_timeout,
            started: Instant::now(),
            bmc_requests: AtomicUsize::new(0),
            discovered: Mutex::new(Vec::new()),
            inventory_changed: smol::channel::bounded(1),
            serial_breaks: Mutex::new(HashMap::new()),
            join: crate::join::Join::none(Path::new("")),
        }
    }

    /// Sends a break on the SOL stream `stream_id` of connection `conn`.
    pub fn serial_break(&self, conn: ConnId, stream_id: u32) -> Result<(), (&'static str, String)> {
        let breaks = self.serial_breaks.lock().unwrap_or_else(|e| e.into_inner());
        match breaks.get(&(conn, stream_id)) {
            // A full queue already holds a break nobody has sent yet: one is enough.
            Some(tx) => {
                let _ = tx.try_send(());
                tracing::info!("stream {stream_id}: SOL break requested");
                Ok(())
            }
            None => Err((
                "not_found",
                format!("stream {stream_id} is not an open IPMI SOL console"),
            )),
        }
    }

    /// Replaces the discovered endpoints and tells the live connection.
    pub fn set_discovered(&self, endpoints: Vec<Endpoint>) {
        *self.discovered.lock().unwrap_or_else(|e| e.into_inner()) = endpoints;
        let _ = self.inventory_changed.0.try_send(());
    }

    /// The inventory report: the allow-list (reachable if discovery saw it answer)
    /// and what discovery found beyond it.
    pub fn inventory(&self) -> InventoryReport {
        let found = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = inventory(&self.allow);
        for ep in &mut report.endpoints {
            ep.reachable = found.iter().any(|f| f.url == ep.url);
        }
        for f in found.iter() {
            if !report.endpoints.iter().any(|e| e.url == f.url) {
                report.endpoints.push(f.clone());
            }
        }
        report
    }
}

/// Which gateway connection (since the agent started) a stream belongs to.
pub type ConnId = u64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Most BMC requests answered at once; more get `agent_busy` at once instead of piling
/// up tasks, sockets and BMC sessions.
pub const MAX_BMC_REQUESTS: usize = 64;

/// The inventory report for an allow-list: every endpoint, reachability unknown.
pub fn inventory(allow: &AllowList) -> InventoryReport {
    InventoryReport {
        endpoints: allow
            .entries()
            .iter()
            .map(|t| Endpoint {
                url: t.to_string(),
                reachable: false,
                source: EndpointSource::Config as i32,
                cert_sha256: Default::default(),
            })
            .collect(),
    }
}

/// Answers everything the gateway starts until the connection closes. `addresses`
/// are the agent's own addresses, for `AgentInfo`.
pub async fn serve_incoming(tunnel: Tunnel, ctx: Arc<RelayContext>, addresses: Vec<String>) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    while let Some(incoming) = tunnel.accept().await {
        match incoming {
            Incoming::Stream(pending) => {
                crate::rt::spawn(handle_stream(pending, ctx.clone(), conn)).detach();
            }
            Incoming::Request(req) => match req.body {
                // BMC requests take a while (UDP retransmits, TLS): answer them in
                // their own task so the connection keeps serving everything else.
                Some(
                    body @ (request::Body::Power(_)
                    | request::Body::BmcInfo(_)
                    | request::Body::BootDevice(_)),
                ) => {
                    if ctx.bmc_requests.fetch_add(1, Ordering::AcqRel) >= MAX_BMC_REQUESTS {
                        ctx.bmc_requests.fetch_sub(1, Ordering::AcqRel);
                        let message = format!(
                            "the agent is already answering {MAX_BMC_REQUESTS} BMC requests"
                        );
                        let busy = ErrorReply {
                            code: "agent_busy".into(),
                            message,
                        };
                        tunnel.reply(req.request_id, reply::Body::Error(busy));
                        continue;
                    }
                    let (tunnel, ctx) = (tunnel.clone(), ctx.clone());
                    crate::rt::spawn(async move {
                        let reply = crate::bmc::answer(body, &ctx).await;
                        ctx.bmc_requests.fetch_sub(1, Ordering::AcqRel);
                        tunnel.reply(req.request_id, reply);
                    })
                    .detach();
                }
                body => {
                    let body = answer(body, &ctx, conn, &addresses);
                    tunnel.reply(req.request_id, body);
                }
            },
            Incoming::Inventory(_) => {
                tracing::debug!("ignoring an inventory report from the gateway")
            }
        }
    }
}

fn answer(
    body: Option<request::Body>,
    ctx: &RelayContext,
    conn: ConnId,
    addresses: &[String],
) -> reply::Body {
    match body {
        Some(request::Body::SerialBreak(b)) => match ctx.serial_break(conn, b.stream_id) {
            Ok(()) => reply::Body::SerialBreak(SerialBreakReply {}),
            Err((code, message)) => reply::Body::Error(ErrorReply {
                code: code.into(),
                message,
            }),
        },
        Some(request::Body::JoinResult(r)) => match ctx.join.record(&r) {
            Ok(()) => reply::Body::JoinResult(JoinResultReply {}),
            Err(message) => reply::Body::Error(ErrorReply {
                code: "join_not_recorded".into(),
                message,
            }),
        },
        Some(request::Body::AgentInfo(_)) => reply::Body::AgentInfo(AgentInfoReply {
            agent_version: crate::VERSION.to_owned(),
            uptime_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            addresses: addresses.to_vec(),
        }),
        _ => reply::Body::Error(ErrorReply {
            code: "unsupported".into(),
            message: "this agent does not support that request".into(),
        }),
    }
}

/// Why a stream open is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Refuse code sent to the gateway.
    pub code: RefuseCode,
    /// Reason sent to the gateway and logged.
    pub message: String,
}

/// Decides whether a stream open may be served, before any connection is made.
pub fn check_open(kind: StreamKind, target: &str, allow: &AllowList) -> Result<Target, Refusal> {
    let schemes: &[Scheme] = match kind {
        StreamKind::Tcp => &[Scheme::Tcp, Scheme::Vnc],
        StreamKind::Vnc => &[Scheme::Tcp, Scheme::Vnc, Scheme::Ws, Scheme::Wss],
        StreamKind::Serial => &[Scheme::Ipmi, Scheme::Ws, Scheme::Wss],
        StreamKind::Unspecified => {
            return Err(Refusal {
                code: RefuseCode::UnsupportedKind,
                message: format!("stream kind {} is not supported", kind.as_str_name()),
            });
        }
    };
    let target = Target::parse(target).map_err(|e| Refusal {
        code: RefuseCode::BadTarget,
        message: format!("bad target {:?}: {e}", truncate(target)),
    })?;
    if !schemes.contains(&target.scheme) {
        return Err(Refusal {
            code: RefuseCode::BadTarget,
            message: format!("a {} stream cannot go to {target}", kind.as_str_name()),
        });
    }
    if !allow.permits(&target) {
        return Err(Refusal {
            code: RefuseCode::Forbidden,
            message: format!("{} is not on this agent's allow-list", target.key()),
        });
    }
    Ok(target)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn handle_stream(pending: PendingStream, ctx: Arc<RelayContext>, conn: ConnId) {
    let id = pending.id();
    let kind = pending.kind();
    let target = match check_open(kind, pending.target(), &ctx.allow) {
        Ok(t) => t,
        Err(r) => {
            tracing::warn!(
                "stream {id}: refused ({}): {}",
                r.code.as_str_name(),
                r.message
            );
            pending.refuse(r.code, &r.message);
            return;
        }
    };
    match kind {
        StreamKind::Vnc => return crate::console::vnc(pending, target, ctx).await,
        StreamKind::Serial => return crate::console::serial(pending, target, ctx, conn).await,
        _ => {}
    }
    let tcp = match connect_tcp(&target.host, target.port, ctx.connect_timeout).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::TimedOut {
                RefuseCode::Timeout
            } else {
                RefuseCode::Unreachable
            };
            let message = format!("connecting to {}: {e}", target.key());
            tracing::warn!("stream {id}: refused ({}): {message}", code.as_str_name());
            pending.refuse(code, &message);
            return;
        }
    };
    let stream = match pending.accept() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("stream {id}: gone before accept: {e}");
            return;
        }
    };
    tracing::info!("stream {id}: relaying to {target}");
    let started = Instant::now();
    match relay(stream, tcp).await {
        Ok((up, down)) => tracing::info!(
            "stream {id}: closed after {:.1?}; {up} bytes to {target}, {down} bytes from it",
            started.elapsed()
        ),
        Err(e) => tracing::info!("stream {id} to {target}: aborted: {e}"),
    }
}

/// TCP connect (trying every resolved address) with a timeout, `TCP_NODELAY` set.
/// A timeout is reported as `ErrorKind::TimedOut`.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let connect = TcpStream::connect(host, port);
    let timed_out = async {
        smol::Timer::after(timeout).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {timeout:?}"),
        ))
    };
    let tcp = futures_lite::future::or(connect, timed_out).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// One direction of a relay: read into a buffer, write it all out, and on end of
/// input half-close the output.
struct Half {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    total: u64,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: vec![0; RELAY_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            total: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut moved = 0;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if moved >= RELAY_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.start == self.end && !self.eof {
                match Pin::new(&mut *r).poll_read(cx, &mut self.buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => self.eof = true,
                    Poll::Ready(Ok(n)) => {
                        self.start = 0;
                        self.end = n;
                    }
                }
            }
            while self.start < self.end {
                match Pin::new(&mut *w).poll_write(cx, &self.buf[self.start..self.end]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.total += n as u64;
                        moved += n;
                    }
                }
            }
            if self.eof {
                match Pin::new(&mut *w).poll_close(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => self.done = true,
                }
            }
        }
    }
}

/// The gateway-to-BMC direction of a relay: the stream's received chunks are written
/// to the BMC as they are, with no copy into a relay buffer; on the stream's end the
/// BMC side is half-closed.
struct FromStream {
    done: bool,
    total: u64,
}

impl FromStream {
    fn poll_copy<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &Stream,
        w: &mut W,
    ) -> Poll<io::Result<()>> {
        let mut moved = 0;
        while !self.done {
            if moved >= RELAY_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let chunk = match stream.poll_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(Some(chunk))) => chunk,
                Poll::Ready(Ok(None)) => {
                    match Pin::new(&mut *w).poll_close(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => self.done = true,
                    }
                    continue;
                }
            };
            match Pin::new(&mut *w).poll_write(cx, &chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    stream.consume(n);
                    self.total += n as u64;
                    moved += n;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Relays between a tunnel stream and a BMC connection until both directions ended
/// (each end's EOF is passed on as a half-close) or either failed (the stream is then
/// aborted). Returns the bytes sent to and received from the BMC.
pub async fn relay<B>(mut stream: Stream, mut tcp: B) -> io::Result<(u64, u64)>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut to_bmc = FromStream {
        done: false,
        total: 0,
    };
    let mut from_bmc = Half::new();
    let res = poll_fn(|cx| {
        // The stream first: looking at it costs a lock, a read of the BMC socket that
        // finds nothing costs a system call (and a wake-up for stream data would
        // otherwise always begin with one).
        let up = to_bmc.poll_copy(cx, &stream, &mut tcp);
        if let Poll::Ready(Err(e)) = up {
            return Poll::Ready(Err(io::Error::new(
                e.kind(),
                format!("gateway to BMC: {e}"),
            )));
        }
        let down = from_bmc.poll_copy(cx, &mut tcp, &mut stream);
        if let Poll::Ready(Err(e)) = down {
            return Poll::Ready(Err(io::Error::new(
                e.kind(),
                format!("BMC to gateway: {e}"),
            )));
        }
        if down.is_ready() && up.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    match res {
        // Dropping a finished stream still delivers what was written and the fin.
        Ok(()) => Ok((to_bmc.total, from_bmc.total)),
        Err(e) => {
            stream.abort(CloseCode::PeerError, &e.to_string());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outband_proto::pb;

    fn allow() -> AllowList {
        AllowList::new(vec![Target::parse("vnc://10.0.0.5").unwrap()])
    }

    #[test]
    fn open_checks() {
        let a = allow();
        assert_eq!(
            check_open(StreamKind::Tcp, "10.0.0.5:5900", &a)
                .unwrap()
                .port,
            5900
        );
        assert!(check_open(StreamKind::Tcp, "vnc://10.0.0.5", &a).is_ok());
        let r = check_open(StreamKind::Tcp, "10.0.0.5:22", &a).unwrap_err();
        assert_eq!(r.code, RefuseCode::Forbidden);
        assert!(r.message.contains("10.0.0.5:22"));
        let r = check_open(StreamKind::Tcp, "ssh://10.0.0.5:22", &a).unwrap_err();
        assert_eq!(r.code, RefuseCode::BadTarget);
        let r = check_open(StreamKind::Tcp, &"x".repeat(5000), &a).unwrap_err();
        assert_eq!(r.code, RefuseCode::BadTarget);
        assert!(r.message.len() < 200);
        let r = check_open(StreamKind::Unspecified, "10.0.0.5:5900", &a).unwrap_err();
        assert_eq!(r.code, RefuseCode::UnsupportedKind);
    }

    #[test]
    fn inventory_merges_discovery() {
        let ctx = RelayContext::new(allow(), Duration::from_secs(1));
        assert_eq!(ctx.inventory(), inventory(&allow()));
        let found = |url: &str| Endpoint {
            url: url.into(),
            reachable: true,
            source: EndpointSource::Discovery as i32,
            cert_sha256: Default::default(),
        };
        ctx.set_discovered(vec![
            found("vnc://10.0.0.5:5900"),
            found("ipmi://10.0.0.9:623"),
        ]);
        assert!(
            ctx.inventory_changed.1.try_recv().is_ok(),
            "change signalled"
        );
        let inv = ctx.inventory();
        assert_eq!(inv.endpoints.len(), 2);
        assert_eq!(inv.endpoints[0].url, "vnc://10.0.0.5:5900");
        assert!(inv.endpoints[0].reachable, "seen by discovery");
        assert_eq!(inv.endpoints[0].source, EndpointSource::Config as i32);
        assert_eq!(inv.endpoints[1], found("ipmi://10.0.0.9:623"));
        // Discovery does not widen the allow-list.
        let t = Target::parse("ipmi://10.0.0.9").unwrap();
        assert!(!ctx.allow.permits(&t));
    }

    #[test]
    fn inventory_lists_allow_list() {
        let inv = inventory(&allow());
        assert_eq!(inv.endpoints.len(), 1);
        assert_eq!(inv.endpoints[0].url, "vnc://10.0.0.5:5900");
        assert!(!inv.endpoints[0].reachable);
    }

    #[test]
    fn requests() {
        let ctx = RelayContext::new(allow(), Duration::from_secs(1));
        let addrs = vec!["192.0.2.1".to_owned()];
        match answer(
            Some(request::Body::AgentInfo(pb::AgentInfoRequest {})),
            &ctx,
            1,
            &addrs,
        ) {
            reply::Body::AgentInfo(info) => {
                assert_eq!(info.agent_version, crate::VERSION);
                assert_eq!(info.addresses, addrs);
            }
            other => panic!("{other:?}"),
        }
        match answer(None, &ctx, 1, &addrs) {
            reply::Body::Error(e) => assert_eq!(e.code, "unsupported"),
            other => panic!("{other:?}"),
        }
    }

    /// Stream ids restart on every gateway connection: a break for stream 1 of the
    /// new connection must reach the new connection's console, not an old one still
    /// winding down, and must not be taken by the old one's removal.
    #[test]
    fn serial_breaks_are_per_connection() {
        let ctx = RelayContext::new(allow(), Duration::from_secs(1));
        let breaks = |conn, id| {
            answer(
                Some(request::Body::SerialBreak(pb::SerialBreakRequest {
                    stream_id: id,
                })),
                &ctx,
                conn,
                &[],
            )
        };
        let (old_tx, old_rx) = smol::channel::bounded(1);
        let (new_tx, new_rx) = smol::channel::bounded(1);
        ctx.serial_breaks.lock().unwrap().insert((1, 1), old_tx);
        ctx.serial_breaks.lock().unwrap().insert((2, 1), new_tx);
        assert!(matches!(breaks(2, 1), reply::Body::SerialBreak(_)));
        assert!(
            new_rx.try_recv().is_ok(),
            "the new connection's console got the break"
        );
        assert!(
            old_rx.try_recv().is_err(),
            "the old connection's console got nothing"
        );
        // The old console ends and removes its own entry only.
        ctx.serial_breaks.lock().unwrap().remove(&(1, 1));
        assert!(matches!(breaks(2, 1), reply::Body::SerialBreak(_)));
        assert!(new_rx.try_recv().is_ok());
        match breaks(1, 1) {
            reply::Body::Error(e) => assert_eq!(e.code, "not_found"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_refused_and_timeout_kinds() {
        smol::block_on(async {
            // A port that was just free: connection refused.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            let e = connect_tcp("127.0.0.1", port, Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            // Non-routable address (TEST-NET-1): no answer before the timeout, or an
            // immediate error on a host without a route; either way bounded in time.
            let t0 = Instant::now();
            let e = connect_tcp("192.0.2.1", 9, Duration::from_millis(50))
                .await
                .unwrap_err();
            assert!(t0.elapsed() < Duration::from_secs(2));
            if e.kind() == io::ErrorKind::TimedOut {
                assert!(e.to_string().contains("timed out after 50ms"), "{e}");
            }
        });
    }
}
