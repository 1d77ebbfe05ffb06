//! Hostile peers against a gateway that also serves a real agent: malformed frames,
//! bad client certificates and stalled handshakes. Each must end only its own
//! connection with a logged reason; the real agent keeps working and the gateway
//! never panics.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outband_e2e::fake_agent::{ClientCert, FakeAgent, client_hello_bytes, go_away_reason};
use outband_e2e::net::{EchoServer, echo_roundtrip, read_until_closed};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, TestContext};
use outband_proto::pb::{self, Frame, frame};

const T: Duration = Duration::from_secs(15);
const SLACK: Duration = Duration::from_secs(4);

/// A gateway with one real agent relaying to an echo server.
struct Bed {
    gw: Gateway,
    agent: Agent,
    echo: EchoServer,
    agent_id: String,
}

impl Bed {
    fn start(ctx: &TestContext, opts: GatewayOptions) -> anyhow::Result<Bed> {
        let echo = EchoServer::start()?;
        let gw = Gateway::start(ctx, opts)?;
        let agent_opts = AgentOptions {
            allow: vec![echo.addr().to_string()],
            backoff_base_ms: Some(100),
            backoff_cap_ms: Some(1000),
            ..Default::default()
        };
        let agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &agent_opts)?;
        let agent_id = gw.wait_first_agent(T)?;
        Ok(Bed {
            gw,
            agent,
            echo,
            agent_id,
        })
    }

    /// The real agent still relays, the gateway still runs and never panicked.
    fn check_healthy(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.gw.proc_mut().is_running(), "gateway exited");
        let (status, body) = self.gw.get("/health")?;
        anyhow::ensure!(status == 200, "GET /health: {status} {body}");
        self.gw.wait_agent(&self.agent_id, T)?;
        let relay = self
            .gw
            .create_relay(&self.agent_id, &self.echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"still relaying", T).context("real agent's relay")?;
        self.gw.assert_no_panic()
    }
}

fn open(id: u32) -> Frame {
    Frame {
        kind: Some(frame::Kind::Open(pb::StreamOpen {
            stream_id: id,
            kind: pb::StreamKind::Tcp as i32,
            target: "127.0.0.1:9".into(),
            initial_window: 0,
            auth: None,
        })),
    }
}

fn data(id: u32) -> Frame {
    Frame {
        kind: Some(frame::Kind::Data(pb::StreamData {
            stream_id: id,
            data: b"x".to_vec().into(),
            fin: false,
        })),
    }
}

fn close(id: u32) -> Frame {
    Frame {
        kind: Some(frame::Kind::Close(pb::StreamClose {
            stream_id: id,
            code: pb::CloseCode::Normal as i32,
            message: String::new(),
        })),
    }
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for f in frames {
        outband_proto::codec::encode_frame(
            f,
            outband_proto::codec::DEFAULT_MAX_FRAME_LEN,
            &mut out,
        )
        .expect("encode test frame");
    }
    out.to_vec()
}

fn with_len(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Random bytes from a fixed seed (reproducible failures).
fn random_bytes(n: usize) -> Vec<u8> {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0b7b_a2d0);
    (0..n).map(|_| rng.random()).collect()
}

/// One malformed input after a successful hello, and the reason the gateway must
/// give for closing.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// We close our side (clean TLS close) right after sending.
    then_close: bool,
    reason: &'static str,
}

#[test]
fn malformed_frames_close_only_that_connection() {
    TestContext::run("bad_frames", |ctx| {
        let mut bed = Bed::start(ctx, GatewayOptions::default())?;
        let cases = [
            Case {
                name: "length 0",
                bytes: with_len(0, &[]),
                then_close: false,
                reason: "frame length 0",
            },
            Case {
                name: "length 0xFFFFFFFF",
                bytes: with_len(u32::MAX, &[]),
                then_close: false,
                reason: "exceeds maximum",
            },
            Case {
                name: "over the limit",
                bytes: with_len(300_000, &[0; 64]),
                then_close: false,
                reason: "exceeds maximum",
            },
            Case {
                name: "truncated",
                bytes: with_len(100, &[0x0a; 10]),
                then_close: true,
                reason: "ended inside a frame",
            },
            Case {
                name: "random bytes",
                bytes: random_bytes(512),
                then_close: false,
                reason: "protocol violation",
            },
            Case {
                name: "body not protobuf",
                bytes: with_len(32, &[0xff; 32]),
                then_close: false,
                reason: "malformed frame body",
            },
            // A Frame with only field 99 (varint 1): valid protobuf, no known kind.
            Case {
                name: "unknown message",
                bytes: with_len(3, &[0x98, 0x06, 0x01]),
                then_close: false,
                reason: "no known message kind",
            },
            Case {
                name: "data for unknown stream",
                bytes: encoded(&[data(4)]),
                then_close: false,
                reason: "unknown stream 4",
            },
            Case {
                name: "data for closed stream",
                bytes: encoded(&[open(2), close(2), data(2)]),
                then_close: false,
                reason: "closed stream 2",
            },
            Case {
                name: "duplicate open",
                bytes: encoded(&[open(2), open(2)]),
                then_close: false,
                reason: "duplicate or reused stream id 2",
            },
            Case {
                name: "second hello",
                bytes: encoded(&[outband_proto::handshake::hello("x", "", 65536)]),
                then_close: false,
                reason: "hello after the handshake",
            },
        ];
        for case in &cases {
            run_case(&bed, case).with_context(|| format!("case {:?}", case.name))?;
        }
        let protocol = bed
            .gw
            .metric_or_zero("outband_gateway_agent_disconnects_total{reason_kind=\"protocol\"}")?;
        assert!(protocol >= 10.0, "protocol disconnects counted: {protocol}");
        bed.check_healthy()
    });
}

fn run_case(bed: &Bed, case: &Case) -> anyhow::Result<()> {
    let gw = &bed.gw;
    let mut fake = FakeAgent::connect(gw.agent_addr(), gw.ca_file(), ClientCert::Valid, T)?;
    let ack = fake.hello(T)?;
    assert_eq!(
        ack.agent_id, fake.agent_id,
        "gateway derived another agent id from our key"
    );
    gw.wait_agent(&fake.agent_id, T)?;

    let log_start = gw.proc().stderr_len();
    fake.send_raw(&case.bytes)?;
    if case.then_close {
        fake.close()?;
    }
    let started = Instant::now();
    let (frames, _how) = fake.expect_closed(T)?;
    assert!(
        started.elapsed() <= SLACK,
        "closing took {:?}",
        started.elapsed()
    );
    let line =
        gw.proc()
            .wait_stderr_line("agent disconnected with a reason", log_start, T, |l| {
                l.contains("agent disconnected") && l.contains(&fake.agent_id)
            })?;
    assert!(
        line.contains(case.reason),
        "disconnect reason does not mention {:?}: {line}",
        case.reason
    );
    if !case.then_close {
        let goaway = go_away_reason(&frames).context("no GoAway before the close")?;
        assert!(goaway.contains(case.reason), "GoAway reason {goaway:?}");
    }
    gw.wait_agent_gone(&fake.agent_id, T)?;
    Ok(())
}

#[test]
fn bad_client_certificates_are_rejected() {
    TestContext::run("bad_certs", |ctx| {
        let mut bed = Bed::start(ctx, GatewayOptions::default())?;
        let gw = &bed.gw;
        // Control: the fake agent's valid certificate is accepted.
        let mut ok = FakeAgent::connect(gw.agent_addr(), gw.ca_file(), ClientCert::Valid, T)?;
        ok.hello(T).context("valid certificate")?;
        drop(ok);

        for (cert, reason) in [
            (ClientCert::None, "certificate"),
            (ClientCert::WrongKey, "signature"),
            (ClientCert::BadSelfSignature, "signature"),
            (ClientCert::Garbage, "encoding"),
            (ClientCert::Expired, "expired"),
        ] {
            let log_start = gw.proc().stderr_len();
            let outcome = match FakeAgent::connect(gw.agent_addr(), gw.ca_file(), cert, T) {
                // TLS 1.3: the client finishes first; the rejection shows on the read.
                Ok(mut fake) => match fake.hello(T) {
                    Ok(_) => panic!("{cert:?}: gateway accepted the connection"),
                    Err(e) => {
                        let ids = gw.agent_ids()?;
                        assert!(
                            !ids.contains(&fake.agent_id),
                            "{cert:?}: listed as an agent"
                        );
                        format!("{e:#}")
                    }
                },
                Err(e) => format!("{e:#}"),
            };
            let line = gw
                .proc()
                .wait_stderr_line("connection rejected", log_start, T, |l| {
                    l.contains("rejected")
                })
                .with_context(|| format!("{cert:?} (client saw: {outcome})"))?;
            assert!(
                line.to_ascii_lowercase().contains(reason),
                "{cert:?}: rejection does not mention {reason:?}: {line}"
            );
        }
        let bad = gw.metric_or_zero("outband_gateway_handshakes_total{result=\"bad_cert\"}")?
            + gw.metric_or_zero("outband_gateway_handshakes_total{result=\"no_client_cert\"}")?;
        assert!(bad >= 5.0, "rejected certificates counted: {bad}");
        bed.check_healthy()
    });
}

#[test]
fn stalled_handshakes_time_out_and_block_no_one() {
    TestContext::run("stalled", |ctx| {
        let opts = GatewayOptions {
            handshake_timeout_ms: Some(1000),
            ..Default::default()
        };
        let mut bed = Bed::start(ctx, opts)?;
        let addr = bed.gw.agent_addr();
        let ca = bed.gw.ca_file().to_owned();

        // Three kinds of stall, each must be dropped after about the timeout.
        let log_start = bed.gw.proc().stderr_len();
        let t0 = Instant::now();
        let mut silent = TcpStream::connect_timeout(&addr, T)?;
        let mut half = TcpStream::connect_timeout(&addr, T)?;
        let hello = client_hello_bytes(&ca)?;
        half.write_all(&hello[..hello.len() / 2])?;
        let mut no_hello = FakeAgent::connect(addr, &ca, ClientCert::Valid, T)?;

        for (name, s) in [
            ("silent TCP", &mut silent),
            ("half a ClientHello", &mut half),
        ] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            let closed = read_until_closed(s, T).with_context(|| name.to_owned())?;
            assert!(closed.bytes().is_empty(), "{name}: gateway sent {closed:?}");
            check_timeout(name, t0.elapsed())?;
        }
        no_hello.expect_closed(T).context("TLS without hello")?;
        check_timeout("TLS without hello", t0.elapsed())?;
        // The log lines may trail the closes by a moment.
        outband_e2e::wait::wait_until("3 handshake timeouts in the gateway log", T, || {
            bed.gw
                .proc()
                .stderr_since(log_start)
                .lines()
                .filter(|l| l.contains("rejected") && l.contains("handshake timeout"))
                .count()
                >= 3
        })?;
        let counted = bed
            .gw
            .metric_or_zero("outband_gateway_handshakes_total{result=\"timeout\"}")?;
        assert!(counted >= 3.0, "handshake timeouts counted: {counted}");

        // Peers that keep stalling meanwhile do not keep the real agent out.
        let stop = Arc::new(AtomicBool::new(false));
        let staller = std::thread::spawn({
            let stop = stop.clone();
            move || keep_stalling(addr, 8, &stop)
        });
        std::thread::sleep(Duration::from_millis(300));
        bed.agent.proc_mut().kill()?;
        bed.gw.wait_agent_gone(&bed.agent_id, T)?;
        bed.agent.restart(ctx)?;
        let restarted = Instant::now();
        let res = bed.gw.wait_agent(&bed.agent_id, T);
        stop.store(true, Ordering::Relaxed);
        let stalls = staller.join().expect("staller thread");
        res?;
        assert!(stalls >= 8, "only {stalls} stalled connections were made");
        assert!(
            restarted.elapsed() <= SLACK,
            "agent took {:?} to come back",
            restarted.elapsed()
        );
        bed.check_healthy()
    });
}

fn check_timeout(name: &str, took: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        took >= Duration::from_millis(800),
        "{name}: dropped after {took:?}, before the 1 s timeout"
    );
    anyhow::ensure!(
        took <= Duration::from_millis(1000) + SLACK,
        "{name}: dropped only after {took:?}"
    );
    Ok(())
}

/// Keeps `n` idle TCP connections open to `addr` (replacing them as the gateway
/// drops them) until `stop`; returns how many it opened.
fn keep_stalling(addr: SocketAddr, n: usize, stop: &AtomicBool) -> usize {
    let mut conns: Vec<(Instant, TcpStream)> = Vec::new();
    let mut opened = 0;
    while !stop.load(Ordering::Relaxed) {
        conns.retain(|(t, _)| t.elapsed() < Duration::from_millis(1500));
        while conns.len() < n {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => {
                    conns.push((Instant::now(), s));
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    opened
}

/// With every handshake slot held by stalled peers, a real agent gets in once their
/// handshake timeout frees the slots: the stalls delay it, they cannot lock it out.
#[test]
fn full_handshake_slots_free_up_after_the_timeout() {
    TestContext::run("slots", |ctx| {
        let opts = GatewayOptions {
            handshake_timeout_ms: Some(1000),
            max_handshakes: Some(2),
            ..Default::default()
        };
        let mut bed = Bed::start(ctx, opts)?;
        let addr = bed.gw.agent_addr();
        bed.agent.proc_mut().kill()?;
        bed.gw.wait_agent_gone(&bed.agent_id, T)?;

        let log_start = bed.gw.proc().stderr_len();
        let stalls: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect_timeout(&addr, T))
            .collect::<Result<_, _>>()?;
        // Both slots are taken once the gateway has accepted the two stalls.
        std::thread::sleep(Duration::from_millis(200));
        bed.agent.restart(ctx)?;
        let restarted = Instant::now();
        bed.gw.wait_agent(&bed.agent_id, T)?;
        let took = restarted.elapsed();
        assert!(
            took <= Duration::from_millis(1000 + 1000) + SLACK,
            "agent took {took:?} (handshake timeout 1 s, backoff cap 1 s)"
        );
        bed.gw
            .proc()
            .wait_stderr_line("stalls timed out", log_start, T, |l| {
                l.contains("rejected") && l.contains("handshake timeout")
            })?;
        // The slots really were full: the agent got in only after a stall was dropped.
        let log = bed.gw.proc().stderr_since(log_start);
        let lines: Vec<&str> = log.lines().collect();
        let first_timeout = lines
            .iter()
            .position(|l| l.contains("handshake timeout"))
            .context("timeout line")?;
        let connected = lines
            .iter()
            .position(|l| l.contains("agent connected") && l.contains(&bed.agent_id))
            .context("agent connected line")?;
        assert!(
            connected > first_timeout,
            "agent connected while the slots were held:\n{log}"
        );
        drop(stalls);
        bed.check_healthy()
    });
}
