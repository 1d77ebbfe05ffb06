//! Faults with real processes: a gateway killed and restarted, an agent killed, and
//! an agent frozen (SIGSTOP) so its link goes silent without closing.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outband_e2e::net::{EchoServer, echo_roundtrip, free_port, read_until_closed};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, TestContext};

/// Generous: the machine has 2 cores shared with other test processes.
const T: Duration = Duration::from_secs(15);
/// Added to every protocol deadline before calling it missed.
const SLACK: Duration = Duration::from_secs(4);

fn agent_opts(echo: &EchoServer, cap_ms: u64) -> AgentOptions {
    AgentOptions {
        allow: vec![echo.addr().to_string()],
        backoff_base_ms: Some(100),
        backoff_cap_ms: Some(cap_ms),
        ..Default::default()
    }
}

/// SIGKILL the gateway, restart it on the same ports and state dir: it keeps its CA,
/// and the agent is back within its backoff cap (2 s) plus slack, with working relays.
#[test]
fn agent_reconnects_after_gateway_restart() {
    TestContext::run("gateway_restart", |ctx| {
        let echo = EchoServer::start()?;
        let opts = GatewayOptions {
            agent_port: free_port(),
            http_port: free_port(),
            ..Default::default()
        };
        let mut gw = Gateway::start(ctx, opts)?;
        let ca_before = std::fs::read(gw.ca_file())?;
        let _agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &agent_opts(&echo, 2000),
        )?;
        let id = gw.wait_first_agent(T)?;
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"before restart", T)?;

        gw.kill()?;
        // The agent keeps redialling a closed port meanwhile; let it back off.
        std::thread::sleep(Duration::from_millis(1500));
        gw.restart(ctx)?;
        let ready = Instant::now();
        assert_eq!(
            std::fs::read(gw.ca_file())?,
            ca_before,
            "restart replaced the dev CA"
        );
        gw.wait_agent(&id, T)?;
        let took = ready.elapsed();
        assert!(
            took <= Duration::from_millis(2000) + SLACK,
            "agent took {took:?} to come back (backoff cap 2 s)"
        );
        // Relays are per gateway process: a new one works through the new connection.
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"after restart", T)?;
        gw.assert_no_panic()
    });
}

/// SIGKILL the agent: the gateway drops it at once, logs why, and a relay to it fails
/// with a clear error (HTTP for a new relay, a closed connection plus a log line for an
/// existing one).
#[test]
fn killed_agent_is_dropped_and_relays_fail_cleanly() {
    TestContext::run("agent_killed", |ctx| {
        let echo = EchoServer::start()?;
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let mut agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &agent_opts(&echo, 2000),
        )?;
        let id = gw.wait_first_agent(T)?;
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"hello", T)?;

        let log_start = gw.proc().stderr_len();
        agent.proc_mut().kill()?;
        let killed = Instant::now();
        gw.wait_agent_gone(&id, T)?;
        let took = killed.elapsed();
        assert!(
            took <= SLACK,
            "gateway took {took:?} to notice a killed agent"
        );
        gw.proc()
            .wait_stderr_line("agent disconnected", log_start, T, |l| {
                l.contains("agent disconnected") && l.contains(&id)
            })?;
        assert!(
            gw.agent(&id)?.is_none(),
            "GET /api/v1/agents/{id} still finds it"
        );

        // A new relay to the gone agent.
        let (status, body) = gw.post_relay(&id, &echo.addr().to_string())?;
        if status == 201 {
            let listen = body["listen"].as_str().context("listen")?.parse()?;
            expect_relay_closed(listen)?;
        } else {
            assert!(
                (400..500).contains(&status),
                "POST relay answered {status}: {body}"
            );
            assert!(
                body.to_string().contains("not connected"),
                "unclear error: {body}"
            );
        }
        // The relay made while it was connected.
        let before = echo.accepted();
        let log_start = gw.proc().stderr_len();
        expect_relay_closed(relay.listen)?;
        gw.proc()
            .wait_stderr_line("relay to a gone agent", log_start, T, |l| {
                l.contains("not connected")
            })?;
        assert_eq!(echo.accepted(), before, "a connection reached the target");
        gw.assert_no_panic()
    });
}

/// Freeze the agent (SIGSTOP): its TCP connection stays up but goes silent. With
/// 300 ms heartbeats the gateway drops it after about 3 intervals and logs a
/// heartbeat timeout; after SIGCONT the agent reconnects and relays work again.
#[test]
fn frozen_agent_is_dropped_by_heartbeat_and_comes_back() {
    TestContext::run("agent_frozen", |ctx| {
        let echo = EchoServer::start()?;
        let opts = GatewayOptions {
            heartbeat_interval_ms: Some(300),
            ..Default::default()
        };
        let gw = Gateway::start(ctx, opts)?;
        let agent = Agent::start(
            ctx,
            "agent",
            gw.agent_addr(),
            gw.ca_file(),
            &agent_opts(&echo, 1000),
        )?;
        let id = gw.wait_first_agent(T)?;
        // Several intervals pass with the link healthy: heartbeats keep it up.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(gw.agent(&id)?.is_some(), "agent dropped while healthy");

        let log_start = gw.proc().stderr_len();
        agent.proc().stop()?;
        let stopped = Instant::now();
        let res = gw.wait_agent_gone(&id, T);
        let took = stopped.elapsed();
        // Resume before any assertion so a failure does not leave it frozen.
        agent.proc().cont()?;
        res?;
        assert!(
            took >= Duration::from_millis(500),
            "dropped after {took:?}: sooner than a heartbeat timeout can fire"
        );
        assert!(
            took <= Duration::from_millis(900) + SLACK,
            "dropped after {took:?}; expected about 3 x 300 ms"
        );
        let line = gw
            .proc()
            .wait_stderr_line("heartbeat timeout", log_start, T, |l| {
                l.contains("agent disconnected") && l.contains(&id)
            })?;
        assert!(
            line.contains("heartbeat"),
            "disconnect reason is not the heartbeat: {line}"
        );
        let counted = gw.metric_or_zero(
            "outband_gateway_agent_disconnects_total{reason_kind=\"heartbeat_timeout\"}",
        )?;
        assert_eq!(counted, 1.0, "heartbeat timeouts counted");

        gw.wait_agent(&id, T)
            .context("agent reconnects after SIGCONT")?;
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        echo_roundtrip(relay.listen, b"thawed", T)?;
        gw.assert_no_panic()
    });
}

/// Connects to a relay whose agent is gone: the gateway must close it without data.
fn expect_relay_closed(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&listen, T)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let closed = read_until_closed(&mut s, T)?;
    anyhow::ensure!(closed.bytes().is_empty(), "relay sent data: {closed:?}");
    Ok(())
}
