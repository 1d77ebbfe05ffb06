//! The gateway's HTTP API with a real agent: what it reports about the agent, relay
//! lifecycle, and errors for what does not exist.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context as _;
use outband_e2e::net::{EchoServer, echo_roundtrip};
use outband_e2e::{Agent, AgentOptions, Gateway, GatewayOptions, Proc, TestContext};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

#[test]
fn agent_entry_relay_lifecycle_and_errors() {
    TestContext::run("api", |ctx| {
        let echo = EchoServer::start()?;
        let gw = Gateway::start(ctx, GatewayOptions::default())?;
        let opts = AgentOptions {
            allow: vec![echo.addr().to_string()],
            ..Default::default()
        };
        let agent = Agent::start(ctx, "agent", gw.agent_addr(), gw.ca_file(), &opts)?;
        // After the agent is up: two processes creating the key at once race.
        let id = gw.wait_first_agent(T)?;

        // The id and pairing code the agent derives from its key (its own
        // `--print-identity`) are the ones the gateway derives from its certificate.
        let mut ident = Proc::spawn(
            ctx,
            "agent-identity",
            &outband_e2e::bins::bin("outband-agent")?,
            [
                "--gateway".to_owned(),
                gw.agent_addr().to_string(),
                "--ca-file".to_owned(),
                gw.ca_file().display().to_string(),
                "--state-dir".to_owned(),
                agent.state_dir().display().to_string(),
                "--print-identity".to_owned(),
            ],
        )?;
        assert_eq!(ident.wait_exit(T)?, Some(0), "--print-identity failed");
        let printed = ident.stdout();
        assert!(
            printed.contains(&format!("agent_id={id}")),
            "agent prints {printed:?}, gateway lists {id}"
        );

        let entry = gw.agent(&id)?.context("GET /api/v1/agents/{id}")?;
        let code = entry["pairing_code"].as_str().context("pairing_code")?;
        assert!(
            printed.contains(&format!("pairing_code={code}")),
            "{printed:?} vs {entry}"
        );
        assert!(
            entry["peer_addr"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{entry}"
        );
        assert!(
            entry["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{entry}"
        );
        assert_eq!(entry["streams"].as_u64(), Some(0), "{entry}");
        // The agent reports its allow-list as inventory.
        let inventory = gw.wait_agent(&id, T).and_then(|_| {
            outband_e2e::wait::wait_for("inventory in the agent entry", T, || {
                let e = gw.agent(&id).ok()??;
                let inv = e["inventory"].as_array()?.clone();
                (!inv.is_empty()).then_some(inv)
            })
        })?;
        // The first heartbeat goes out when the connection starts; its round trip
        // (loopback: well under a second) is the agent's idle round trip.
        let rtt = outband_e2e::wait::wait_for("rtt_ms in the agent entry", T, || {
            gw.agent(&id).ok()??["rtt_ms"].as_f64()
        })?;
        assert!(
            rtt > 0.0 && rtt < 1000.0,
            "idle round trip {rtt} ms on loopback"
        );
        let port = echo.addr().port().to_string();
        assert!(
            inventory.iter().any(|e| e.to_string().contains(&port)),
            "inventory {inventory:?} lacks {}",
            echo.addr()
        );

        // Relay lifecycle.
        let relay = gw.create_relay(&id, &echo.addr().to_string())?;
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        echo_roundtrip(relay.listen, &payload, T)?;
        let entry = gw.agent(&id)?.context("agent entry")?;
        let (bytes_in, bytes_out) = (
            entry["bytes_in"].as_u64().unwrap_or(0),
            entry["bytes_out"].as_u64().unwrap_or(0),
        );
        assert!(
            bytes_in >= 200_000 && bytes_out >= 200_000,
            "byte counters: {entry}"
        );
        let status = gw.delete_relay(&relay)?;
        assert!(
            (200..300).contains(&status),
            "DELETE relay answered {status}"
        );
        outband_e2e::wait::wait_until("relay port to close", T, || {
            TcpStream::connect_timeout(&relay.listen, Duration::from_secs(1)).is_err()
        })?;
        let status = gw.delete_relay(&relay)?;
        assert_eq!(status, 404, "second DELETE of a relay");

        // Errors for what does not exist, as JSON.
        let (status, body) = gw.get("/api/v1/agents/ag-doesnotexist")?;
        assert_eq!(status, 404, "{body}");
        let err: Value =
            serde_json::from_str(&body).with_context(|| format!("404 body is not JSON: {body}"))?;
        assert!(err.is_object(), "{err}");
        let (status, body) = gw.post_relay("ag-doesnotexist", &echo.addr().to_string())?;
        assert_eq!(status, 404, "{body}");

        let (status, _) = gw.get("/health")?;
        assert_eq!(status, 200);
        assert_eq!(gw.metric("outband_gateway_agents_connected")?, Some(1.0));
        gw.assert_no_panic()
    });
}
