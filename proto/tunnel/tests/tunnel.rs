//! Two tunnels over a real loopback TCP connection under smol.

use std::future::Future;
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use outband_proto::mux::{ConnError, Mux, MuxConfig, Role};
use outband_proto::pb::{self, RefuseCode, StreamKind};
use outband_tunnel::{Incoming, OpenError, Stream, Timer, Tunnel};
use smol::net::{TcpListener, TcpStream};

struct SmolTimer;

impl Timer for SmolTimer {
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
    }
}

/// A transport that can be frozen: while paused it neither reads nor writes, like a
/// peer whose process hangs.
struct Pausable {
    inner: TcpStream,
    paused: Arc<AtomicBool>,
    /// Read calls the driver made.
    reads: Arc<AtomicUsize>,
}

impl futures_io::AsyncRead for Pausable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.paused.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for Pausable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.paused.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.paused.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

struct Setup {
    gw: Tunnel,
    ag: Tunnel,
    gw_driver: smol::Task<ConnError>,
    ag_driver: smol::Task<ConnError>,
    /// Freezes the agent's transport.
    ag_paused: Arc<AtomicBool>,
    /// Read calls on the agent's transport.
    ag_reads: Arc<AtomicUsize>,
}

fn config(role: Role) -> MuxConfig {
    let mut c = MuxConfig::new(role);
    c.heartbeat_interval = Duration::from_millis(200);
    c
}

async fn setup_with(gw_cfg: MuxConfig, ag_cfg: MuxConfig) -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ag_io, gw_io) = future::zip(TcpStream::connect(addr), listener.accept()).await;
    let ag_io = ag_io.expect("connect");
    let (gw_io, _) = gw_io.expect("accept");
    let ag_paused = Arc::new(AtomicBool::new(false));
    let ag_reads = Arc::new(AtomicUsize::new(0));
    let ag_io = Pausable {
        inner: ag_io,
        paused: ag_paused.clone(),
        reads: ag_reads.clone(),
    };
    let now = Instant::now();
    let (gw, gw_driver) = Tunnel::new(gw_io, Mux::new(gw_cfg, now), SmolTimer);
    let (ag, ag_driver) = Tunnel::new(ag_io, Mux::new(ag_cfg, now), SmolTimer);
    Setup {
        gw,
        ag,
        gw_driver: smol::spawn(gw_driver),
        ag_driver: smol::spawn(ag_driver),
        ag_paused,
        ag_reads,
    }
}

async fn setup() -> Setup {
    setup_with(config(Role::Gateway), config(Role::Agent)).await
}

/// Runs a test body with a deadline, so a hang fails instead of blocking CI.
fn run<F: Future<Output = ()>>(body: F) {
    smol::block_on(future::or(body, async {
        smol::Timer::after(Duration::from_secs(60)).await;
        panic!("test timed out");
    }));
}

/// Opens a stream from the gateway and accepts it on the agent.
async fn open_pair(s: &Setup) -> (Stream, Stream) {
    let ag = s.ag.clone();
    let accept = async move {
        match ag.accept().await {
            Some(Incoming::Stream(p)) => {
                assert_eq!(p.target(), "vnc://10.0.0.5:5900");
                assert_eq!(p.kind(), StreamKind::Tcp);
                p.accept().expect("accept")
            }
            other => panic!("expected a stream, got {other:?}"),
        }
    };
    let (g, a) = future::zip(s.gw.open(StreamKind::Tcp, "vnc://10.0.0.5:5900"), accept).await;
    (g.expect("open"), a)
}

fn checksum(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn echo_ten_megabytes() {
    run(async {
        let s = setup().await;
        let (client, server) = open_pair(&s).await;

        // The agent echoes until the gateway finishes, then finishes and drops.
        let echo = smol::spawn(async move {
            let (r, mut w) = futures_lite::io::split(server);
            let n = futures_lite::io::copy(r, &mut w).await.expect("echo copy");
            w.close().await.expect("close");
            n
        });

        let payload = pattern(10 << 20, 1);
        let (mut r, mut w) = futures_lite::io::split(client);
        let write = async {
            for chunk in payload.chunks(100_000) {
                w.write_all(chunk).await.expect("write");
            }
            w.close().await.expect("half-close");
        };
        let read = async {
            let mut got = Vec::with_capacity(payload.len());
            r.read_to_end(&mut got).await.expect("read echo");
            got
        };
        let ((), got) = future::zip(write, read).await;
        assert_eq!(echo.await, payload.len() as u64);
        assert_eq!(got.len(), payload.len());
        assert_eq!(checksum(&got), checksum(&payload));
        assert!(got == payload);
        assert!(outband_tunnel::load(&s.gw.stats().bytes_out) > 10 << 20);
    });
}

/// A driver woken because a stream wrote (not because the transport became
/// readable) does not try a read it knows would find nothing: on the agent every such
/// try is a `recvfrom` and an `epoll_ctl`.
#[test]
fn writes_alone_do_not_make_the_driver_read() {
    run(async {
        let s = setup().await;
        let (mut client, mut server) = open_pair(&s).await;
        // Let the open's frames settle.
        smol::Timer::after(Duration::from_millis(20)).await;
        let before = s.ag_reads.load(Ordering::SeqCst);
        let writes = 200;
        for i in 0..writes {
            server.write_all(&[i as u8; 100]).await.unwrap();
            // Each write wakes the driver, which sends before the next one.
            smol::Timer::after(Duration::from_micros(200)).await;
        }
        let mut got = vec![0u8; writes * 100];
        client.read_exact(&mut got).await.unwrap();
        let reads = s.ag_reads.load(Ordering::SeqCst) - before;
        // 20 KB sent and nothing received (no window update is due below a quarter
        // of the window; a heartbeat or two may arrive): a handful of reads.
        assert!(
            reads < writes / 10,
            "{reads} reads of the agent's transport for {writes} writes and no input"
        );
    });
}

/// `poll_chunk` offers received bytes without a copy until `consume` takes them,
/// and what it takes goes back to the peer as credit: 1 MB (four windows) arrives
/// whole, in order, the coalesced small tail after the big chunks.
#[test]
fn chunks_are_offered_until_consumed_and_consuming_grants_credit() {
    run(async {
        let s = setup().await;
        let (mut client, server) = open_pair(&s).await;
        let big = pattern(1 << 20, 3);
        let write = async {
            client.write_all(&big).await.unwrap();
            client.write_all(b"tail").await.unwrap();
            client.close().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            while let Some(chunk) = std::future::poll_fn(|cx| server.poll_chunk(cx))
                .await
                .unwrap()
            {
                // Take half of each chunk (at least a byte): the rest comes again.
                let n = chunk.len().div_ceil(2);
                got.extend_from_slice(&chunk[..n]);
                server.consume(n);
            }
            got
        };
        let ((), got) = future::zip(write, read).await;
        let mut want = big;
        want.extend_from_slice(b"tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
        // Consuming more than is offered takes only what is there.
        server.consume(10);
    });
}

#[test]
fn half_close_each_direction() {
    run(async {
        let s = setup().await;
        let (mut client, mut server) = open_pair(&s).await;
        client.write_all(b"request").await.unwrap();
        client.close().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The server may still answer after the client's half-close.
        server.write_all(b"response").await.unwrap();
        server.close().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response");
        // Writing after our own half-close fails.
        assert!(client.write_all(b"x").await.is_err());
        drop((client, server));
        // Both fins: the streams are gone on both ends.
        smol::Timer::after(Duration::from_millis(50)).await;
        assert_eq!((s.gw.stream_count(), s.ag.stream_count()), (0, 0));
    });
}

/// Regression: dropping a stream right after `close()` used to abort it and lose
/// the data still queued in the multiplexer.
#[test]
fn drop_after_close_delivers_everything() {
    run(async {
        let s = setup().await;
        let (mut client, mut server) = open_pair(&s).await;
        let payload = pattern(3 << 20, 7);
        let writer = {
            let payload = payload.clone();
            smol::spawn(async move {
                server.write_all(&payload).await.unwrap();
                server.close().await.unwrap();
                drop(server);
            })
        };
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("clean EOF");
        writer.await;
        assert!(
            got == payload,
            "got {} of {} bytes",
            got.len(),
            payload.len()
        );
    });
}

#[test]
fn refuse_surfaces_as_open_error() {
    run(async {
        let s = setup().await;
        let ag = s.ag.clone();
        let refuse = async move {
            let Some(Incoming::Stream(p)) = ag.accept().await else {
                panic!("expected a stream")
            };
            p.refuse(RefuseCode::Forbidden, "not on the inventory");
        };
        let (res, ()) = future::zip(s.gw.open(StreamKind::Tcp, "10.9.9.9:22"), refuse).await;
        match res {
            Err(OpenError::Refused { code, message, .. }) => {
                assert_eq!(code, RefuseCode::Forbidden);
                assert_eq!(message, "not on the inventory");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(s.gw.stream_count(), 0);
    });
}

#[test]
fn request_and_reply() {
    run(async {
        let s = setup().await;
        let ag = s.ag.clone();
        let server = smol::spawn(async move {
            let Some(Incoming::Request(req)) = ag.accept().await else {
                panic!("expected a request")
            };
            assert!(matches!(req.body, Some(pb::request::Body::AgentInfo(_))));
            ag.reply(
                req.request_id,
                pb::reply::Body::AgentInfo(pb::AgentInfoReply {
                    agent_version: "0.1.0".into(),
                    uptime_ms: 42,
                    addresses: vec!["10.0.0.2/24".into()],
                }),
            );
        });
        let reply =
            s.gw.request(pb::request::Body::AgentInfo(pb::AgentInfoRequest {}))
                .await
                .expect("reply");
        server.await;
        match reply.body {
            Some(pb::reply::Body::AgentInfo(info)) => {
                assert_eq!(info.uptime_ms, 42);
                assert_eq!(info.addresses, vec!["10.0.0.2/24".to_owned()]);
            }
            other => panic!("unexpected reply {other:?}"),
        }
    });
}

#[test]
fn inventory_reaches_the_peer() {
    run(async {
        let s = setup().await;
        let report = pb::InventoryReport {
            endpoints: vec![pb::Endpoint {
                url: "vnc://10.0.0.5:5900".into(),
                reachable: true,
                source: 0,
                cert_sha256: Default::default(),
            }],
        };
        s.ag.send_inventory(report.clone());
        match s.gw.accept().await {
            Some(Incoming::Inventory(got)) => assert_eq!(got, report),
            other => panic!("expected inventory, got {other:?}"),
        }
    });
}

#[test]
fn only_the_latest_queued_inventory_is_kept() {
    run(async {
        let s = setup().await;
        let report = |n: usize| pb::InventoryReport {
            endpoints: vec![pb::Endpoint {
                url: format!("vnc://10.0.0.{n}:5900"),
                reachable: false,
                source: 0,
                cert_sha256: Default::default(),
            }],
        };
        for n in 1..=50 {
            s.ag.send_inventory(report(n));
        }
        // A request sent after the reports proves they have all arrived.
        let gw = s.gw.clone();
        let answer = async move {
            let mut inventories = Vec::new();
            while let Some(inc) = gw.accept().await {
                match inc {
                    Incoming::Inventory(r) => inventories.push(r),
                    Incoming::Request(r) => {
                        gw.reply(
                            r.request_id,
                            pb::reply::Body::AgentInfo(pb::AgentInfoReply::default()),
                        );
                        return inventories;
                    }
                    Incoming::Stream(_) => panic!("unexpected stream"),
                }
            }
            inventories
        };
        // Let all reports queue up before the gateway's application reads any.
        smol::Timer::after(Duration::from_millis(200)).await;
        let request =
            s.ag.request(pb::request::Body::AgentInfo(pb::AgentInfoRequest {}));
        let (inventories, reply) = future::zip(answer, request).await;
        reply.expect("reply");
        assert_eq!(inventories, vec![report(50)], "stale reports were queued");
    });
}

#[test]
fn a_slow_reader_does_not_stop_another_stream() {
    run(async {
        let s = setup().await;
        let (mut slow_w, _slow_r) = open_pair(&s).await;
        let (mut fast_w, mut fast_r) = open_pair(&s).await;

        // Nobody reads the slow stream: its writer must block after the window.
        let slow = smol::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            let mut written = 0usize;
            loop {
                slow_w.write_all(&chunk).await.expect("slow write");
                written += chunk.len();
                if written > (16 << 20) {
                    return written;
                }
            }
        });

        let payload = pattern(8 << 20, 3);
        let write = async {
            fast_w.write_all(&payload).await.unwrap();
            fast_w.close().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            fast_r.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = future::zip(write, read).await;
        assert!(got == payload);
        // The slow writer is stuck at about one window, not finished.
        let stuck = future::or(async { Some(slow.await) }, async {
            smol::Timer::after(Duration::from_millis(200)).await;
            None
        })
        .await;
        assert_eq!(stuck, None, "the slow writer got far beyond its window");
    });
}

#[test]
fn dropping_a_stream_aborts_it_at_the_peer() {
    run(async {
        let s = setup().await;
        let (mut client, server) = open_pair(&s).await;
        drop(server);
        let mut buf = [0u8; 16];
        let err = client
            .read(&mut buf)
            .await
            .expect_err("read after peer abort");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        let err = client
            .write_all(b"x")
            .await
            .expect_err("write after peer abort");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        drop(client);
        smol::Timer::after(Duration::from_millis(50)).await;
        assert_eq!((s.gw.stream_count(), s.ag.stream_count()), (0, 0));
    });
}

#[test]
fn closing_the_tunnel_ends_the_drivers_and_fails_pending_opens() {
    run(async {
        let s = setup().await;
        let (mut client, _server) = open_pair(&s).await;
        // The agent never answers this open.
        let pending = smol::spawn({
            let gw = s.gw.clone();
            async move { gw.open(StreamKind::Tcp, "10.0.0.9:5900").await }
        });
        smol::Timer::after(Duration::from_millis(50)).await;
        s.gw.close("gateway shutting down");

        let expected = ConnError::Closed("gateway shutting down".into());
        assert_eq!(s.gw_driver.await, expected);
        match pending.await {
            Err(OpenError::Connection(e)) => assert_eq!(e, expected),
            other => panic!("pending open: {other:?}"),
        }
        assert_eq!(s.gw.closed().await, expected);
        assert_eq!(
            s.ag_driver.await,
            ConnError::GoAway("connection closed locally: gateway shutting down".into())
        );
        let mut buf = [0u8; 4];
        assert_eq!(
            client.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert!(matches!(
            s.gw.open(StreamKind::Tcp, "x").await,
            Err(OpenError::Connection(_))
        ));
        // The agent's app is told there is nothing more to accept (after the open it
        // never answered).
        while s.ag.accept().await.is_some() {}
    });
}

#[test]
fn a_frozen_peer_is_declared_dead() {
    run(async {
        let s = setup().await;
        let (_client, _server) = open_pair(&s).await;
        let start = Instant::now();
        s.ag_paused.store(true, Ordering::SeqCst);
        let err = s.gw_driver.await;
        assert!(matches!(err, ConnError::Dead(_)), "{err:?}");
        let took = start.elapsed();
        // Three 200 ms intervals, plus at most the close grace period.
        assert!(
            took >= Duration::from_millis(400),
            "dead too early: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "dead too late: {took:?}");
        assert!(matches!(s.gw.close_reason(), Some(ConnError::Dead(_))));
    });
}

#[test]
fn a_cancelled_open_leaves_nothing_behind() {
    run(async {
        let s = setup().await;
        let ag = s.ag.clone();
        let cancelled = future::or(
            async { Some(s.gw.open(StreamKind::Tcp, "t").await) },
            async {
                smol::Timer::after(Duration::from_millis(50)).await;
                None
            },
        )
        .await;
        assert!(cancelled.is_none(), "open finished without an answer");
        // The agent answers late; the stream is gone on both ends afterwards.
        let Some(Incoming::Stream(p)) = ag.accept().await else {
            panic!("expected the open")
        };
        let late = p.accept();
        smol::Timer::after(Duration::from_millis(50)).await;
        if let Ok(mut late) = late {
            let mut buf = [0u8; 1];
            assert!(late.read(&mut buf).await.is_err());
        }
        drop(ag);
        smol::Timer::after(Duration::from_millis(50)).await;
        assert_eq!((s.gw.stream_count(), s.ag.stream_count()), (0, 0));
    });
}

#[test]
fn dropping_the_driver_ends_the_connection() {
    run(async {
        let s = setup().await;
        let (mut client, _server) = open_pair(&s).await;
        drop(s.gw_driver);
        assert!(matches!(s.gw.closed().await, ConnError::Transport(_)));
        let mut buf = [0u8; 4];
        let err = client
            .read(&mut buf)
            .await
            .expect_err("read on a dead connection");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        // The agent sees the transport go away.
        assert!(matches!(s.ag_driver.await, ConnError::Transport(_)));
    });
}

#[test]
fn a_peer_that_sends_but_never_reads_is_dropped() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ours, theirs) = future::zip(TcpStream::connect(addr), listener.accept()).await;
        let ours = ours.expect("connect");
        let (mut theirs, _) = theirs.expect("accept");
        // Small buffers, so what we write backs up quickly.
        let _ = socket2::SockRef::from(&theirs).set_recv_buffer_size(4096);
        let _ = socket2::SockRef::from(&ours).set_send_buffer_size(4096);
        let (tunnel, driver) = Tunnel::new(
            ours,
            Mux::new(config(Role::Gateway), Instant::now()),
            SmolTimer,
        );
        let driver = smol::spawn(driver);
        // The hostile peer looks alive (it sends a heartbeat every 50 ms) but never
        // reads a byte.
        let _peer = smol::spawn(async move {
            for seq in 0.. {
                let hb = pb::Frame {
                    kind: Some(pb::frame::Kind::Heartbeat(pb::Heartbeat {
                        seq,
                        reply: false,
                    })),
                };
                if outband_tunnel::write_frame(&mut theirs, &hb, 1024)
                    .await
                    .is_err()
                {
                    break;
                }
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        });
        // Give the driver something to write: opens with large targets.
        let target = "x".repeat(100_000);
        for _ in 0..40 {
            let (t, target) = (tunnel.clone(), target.clone());
            smol::spawn(async move {
                let _ = t.open(StreamKind::Tcp, &target).await;
            })
            .detach();
        }
        let start = Instant::now();
        let err = driver.await;
        assert!(
            matches!(&err, ConnError::Transport(m) if m.contains("read nothing")),
            "{err:?}"
        );
        // Three 200 ms intervals after the stall began, give or take a tick.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    });
}
