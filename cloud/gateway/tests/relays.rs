//! Relays: TCP clients reach a target through an agent's tunnel.

mod common;

use std::time::Duration;

use common::{AgentIdentity, TestGateway, connect_agent, connect_agent_speaking, echo_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn create_relay(gw: &TestGateway, agent_id: &str, target: &str) -> serde_json::Value {
    let body = serde_json::json!({ "agent_id": agent_id, "target": target }).to_string();
    let (status, resp) = gw.http("POST", "/api/v1/relays", Some(&body)).await;
    assert_eq!(status, 201, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

/// Sends `payload` through the relay at `listen` to an echo server and half-closes;
/// the echo must come back whole within 10 s (else `stalled`).
async fn echo_through(listen: &str, payload: &[u8], stalled: &str) {
    let mut tcp = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = tcp.split();
    let send = async {
        w.write_all(payload).await.unwrap();
        // Half-close: the echo server sees EOF only if it travels through the stream.
        w.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let recv = r.read_to_end(&mut echoed);
    let (_, n) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(send, recv) })
        .await
        .expect(stalled);
    assert_eq!(n.unwrap(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");
}

#[tokio::test]
async fn relay_carries_bytes_both_ways_and_passes_half_close() {
    let gw = TestGateway::start(|_| {}).await;
    let id = AgentIdentity::generate();
    let _agent = connect_agent(&gw, &id).await.unwrap();
    let echo = echo_server().await;

    let relay = create_relay(&gw, &id.agent_id, &format!("vnc://{echo}")).await;
    let listen = relay["listen"].as_str().unwrap().to_owned();
    assert!(listen.starts_with("127.0.0.1:"), "{relay}");
    assert_eq!(relay["agent_id"], id.agent_id.as_str());

    // More than the windows (64 KiB agent, 256 KiB gateway), so flow control runs.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    echo_through(&listen, &payload, "relay did not finish").await;

    // A second connection on the same relay works too.
    let mut tcp = TcpStream::connect(&listen).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"ping");

    assert_eq!(gw.metric("outband_gateway_streams_opened_total").await, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw
        .metric("outband_gateway_relay_bytes_total{direction=\"from_agent\"}")
        .await
        < payload.len() as u64 + 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "relay bytes not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let relays = gw.json("/api/v1/relays").await;
    assert_eq!(relays.as_array().unwrap().len(), 1);

    // DELETE stops the listener.
    let path = format!("/api/v1/relays/{}", relay["relay_id"]);
    let (status, _) = gw.http("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, body) = gw.http("DELETE", &path, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("relay_not_found"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(&listen).await.is_err(),
        "relay still listening"
    );
    gw.stop().await;
}

/// An agent built before protocol version 2 grants credit only once a quarter of its
/// window is released; a gateway that capped each of two streams at the shared
/// window (32 KiB plus 1 Gbit/s times the round trip) below that would wait for the
/// credit forever. It must negotiate version 1 and send such an agent its whole
/// window. (An 8 MiB window puts the quarter far above any cap a slow test machine's
/// round trip could produce.)
#[tokio::test]
async fn a_protocol_1_agent_gets_its_whole_window_while_streams_share_the_connection() {
    let gw = TestGateway::start(|_| {}).await;
    let id = AgentIdentity::generate();
    let agent = connect_agent_speaking(&gw, &id, 1, 8 * 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(agent.ack.version, 1);
    let echo = echo_server().await;
    let relay = create_relay(&gw, &id.agent_id, &format!("vnc://{echo}")).await;
    let listen = relay["listen"].as_str().unwrap().to_owned();

    // A second stream stays open, so the connection is shared throughout.
    let mut console = TcpStream::connect(&listen).await.unwrap();
    console.write_all(b"k").await.unwrap();
    let mut k = [0u8; 1];
    console.read_exact(&mut k).await.unwrap();

    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    echo_through(
        &listen,
        &payload,
        "bulk beside a console stalled: the gateway held a version-1 agent's stream",
    )
    .await;

    // The console stream still answers.
    console.write_all(b"x").await.unwrap();
    console.read_exact(&mut k).await.unwrap();
    assert_eq!(&k, b"x");
    gw.stop().await;
}

#[tokio::test]
async fn refused_stream_closes_the_client_and_logs_the_reason() {
    let gw = TestGateway::start(|_| {}).await;
    let id = AgentIdentity::generate();
    let _agent = connect_agent(&gw, &id).await.unwrap();
    // A port nobody listens on: the test agent refuses with Unreachable.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let relay = create_relay(&gw, &id.agent_id, &closed.to_string()).await;
    let mut tcp = TcpStream::connect(relay["listen"].as_str().unwrap())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("client connection closed");
    assert!(buf.is_empty() && res.map(|n| n == 0).unwrap_or(true));
    gw.logs
        .wait_for(&["relay stream open failed", "unreachable", &id.agent_id])
        .await;
    assert_eq!(gw.metric("outband_gateway_streams_refused_total").await, 1);

    // The agent goes away: further connections fail with "not connected".
    _agent.tunnel.close("bye");
    gw.wait_until_no_agents().await;
    let mut tcp = TcpStream::connect(relay["listen"].as_str().unwrap())
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("client connection closed");
    gw.logs
        .wait_for(&["relay stream open failed", "is not connected"])
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn relay_api_validates_requests() {
    let gw = TestGateway::start(|_| {}).await;
    let (status, body) = gw.http("POST", "/api/v1/relays", Some("{not json")).await;
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");

    let (status, body) = gw
        .http(
            "POST",
            "/api/v1/relays",
            Some(r#"{"agent_id":"ag-x","target":"vnc://127.0.0.1:5901"}"#),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("agent_not_found"));

    let (status, body) = gw
        .http("POST", "/api/v1/relays", Some(r#"{"agent_id":"ag-x"}"#))
        .await;
    assert_eq!(status, 400, "{body}");
    gw.stop().await;
}
