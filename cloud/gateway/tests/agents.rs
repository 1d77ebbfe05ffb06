//! Agent connections: hello, listing, replacement, and every kind of rejection.

mod common;

use std::time::{Duration, Instant};

use common::{AgentIdentity, TestGateway, connect_agent, hello_exchange, tls_connect};
use outband_proto::codec::DEFAULT_MAX_FRAME_LEN;
use outband_proto::handshake;
use outband_proto::mux::ConnError;
use outband_proto::pb::{
    self, Endpoint, EndpointSource, InventoryReport, RefuseCode, StreamKind, frame,
};
use outband_tunnel::{OpenError, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn agent_connects_is_listed_and_reports_inventory() {
    let gw = TestGateway::start(|_| {}).await;
    assert_eq!(gw.ready.agent_addr, gw.agent_addr.to_string());
    assert_eq!(gw.ready.http_addr, gw.http_addr.to_string());
    assert!(
        gw.ready
            .ca_fingerprint
            .as_ref()
            .unwrap()
            .starts_with("sha256:")
    );

    let id = AgentIdentity::generate();
    let agent = connect_agent(&gw, &id).await.unwrap();
    assert_eq!(agent.ack.agent_id, id.agent_id);
    assert_eq!(agent.ack.version, outband_proto::PROTOCOL_VERSION);
    assert_eq!(agent.ack.heartbeat_interval_ms, 5000);
    assert_eq!(agent.ack.initial_window, 256 * 1024);
    gw.logs
        .wait_for(&["agent connected", &format!("agent_id={}", id.agent_id)])
        .await;

    let list = gw.json("/api/v1/agents").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["agent_id"], id.agent_id.as_str());
    assert_eq!(list[0]["pairing_code"], id.pairing_code.as_str());
    assert_eq!(list[0]["version"], "test-agent 0.0.1");
    assert!(list[0]["connected_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        list[0]["peer_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    agent.tunnel.send_inventory(InventoryReport {
        endpoints: vec![Endpoint {
            url: "vnc://10.0.0.5:5900".into(),
            reachable: true,
            source: EndpointSource::Config as i32,
            cert_sha256: Default::default(),
        }],
    });
    let view = gw
        .wait_agent(&id.agent_id, |v| {
            !v["inventory"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(
        view["inventory"],
        serde_json::json!([{"url": "vnc://10.0.0.5:5900", "reachable": true, "source": "config"}])
    );
    assert!(view["bytes_in"].as_u64().unwrap() > 0);

    assert_eq!(gw.metric("outband_gateway_agents_connected").await, 1);
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"ok\"}")
            .await,
        1
    );

    // Agents may not open streams to the gateway.
    match agent.tunnel.open(StreamKind::Tcp, "127.0.0.1:22").await {
        Err(OpenError::Refused { code, .. }) => assert_eq!(code, RefuseCode::Forbidden),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Unknown agent: 404 with a JSON error.
    let (status, body) = gw.http("GET", "/api/v1/agents/ag-nope", None).await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "agent_not_found");

    // Agent leaves: it is removed and the reason is logged.
    agent.tunnel.close("test is over");
    gw.logs
        .wait_for(&["agent disconnected", &id.agent_id, "test is over"])
        .await;
    gw.wait_until_no_agents().await;
    gw.stop().await;
}

#[tokio::test]
async fn reconnect_replaces_the_stale_connection() {
    let gw = TestGateway::start(|_| {}).await;
    let id = AgentIdentity::generate();
    let first = connect_agent(&gw, &id).await.unwrap();
    let second = connect_agent(&gw, &id).await.unwrap();

    let reason = tokio::time::timeout(Duration::from_secs(5), first.tunnel.closed())
        .await
        .unwrap();
    assert_eq!(
        reason,
        ConnError::GoAway("connection closed locally: replaced by a new connection".into())
    );
    // The old connection's end must not remove the new entry.
    gw.logs
        .wait_for(&["agent disconnected", "replaced by a new connection"])
        .await;
    let list = gw.json("/api/v1/agents").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(second.tunnel.close_reason().is_none());
    gw.stop().await;
}

#[tokio::test]
async fn missing_or_forged_client_certificate_is_rejected_and_logged() {
    let gw = TestGateway::start(|_| {}).await;
    // In TLS 1.3 the client finishes first; the rejection shows on the first read.
    let res = async {
        let mut io = tls_connect(&gw, None).await?;
        hello_exchange(&mut io, handshake::hello("x", "", 65536))
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    assert!(
        res.is_err(),
        "gateway accepted an agent without a certificate"
    );
    let line = gw
        .logs
        .wait_for(&[
            "agent connection rejected",
            "reason=\"no client certificate\"",
        ])
        .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"no_client_cert\"}")
            .await,
        1
    );

    // A certificate that is not signed by its own key.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), other);
    let cert = rcgen::CertificateParams::new(vec!["agent".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut forged = AgentIdentity::generate();
    forged.cert = cert.der().clone();
    forged.key = std::sync::Arc::new(rustls_pki_types::PrivateKeyDer::Pkcs8(
        key.serialize_der().into(),
    ));
    let res = async {
        let mut io = tls_connect(&gw, Some(&forged)).await?;
        hello_exchange(&mut io, handshake::hello("x", "", 65536))
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    assert!(res.is_err(), "gateway accepted a forged certificate");
    gw.logs
        .wait_for(&[
            "agent connection rejected",
            "reason=\"bad client certificate",
        ])
        .await;
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"bad_cert\"}")
            .await,
        1
    );
    gw.stop().await;
}

#[tokio::test]
async fn stalled_handshakes_do_not_block_others_and_time_out() {
    let timeout = Duration::from_millis(1200);
    let gw = TestGateway::start(|c| c.handshake_timeout = timeout).await;
    // Three peers connect and send nothing.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(TcpStream::connect(gw.agent_addr).await.unwrap());
    }
    let id = AgentIdentity::generate();
    let agent = connect_agent(&gw, &id).await.unwrap();
    assert_eq!(agent.ack.agent_id, id.agent_id);
    // The agent got in while the stalled peers were still pending.
    for s in &stalled {
        let mut buf = [0u8; 1];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("stalled peer already dropped ({other:?}): agent was delayed"),
        }
    }
    assert!(started.elapsed() < timeout);

    // The stalled peers are dropped after the timeout.
    for mut s in stalled {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("stalled connection was not dropped")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert!(started.elapsed() >= timeout);
    gw.logs
        .wait_for(&["agent connection rejected", "reason=\"handshake timeout\""])
        .await;
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"timeout\"}")
            .await,
        3
    );
    // The good agent is unaffected.
    assert!(agent.tunnel.close_reason().is_none());
    gw.stop().await;
}

#[tokio::test]
async fn malformed_or_wrong_first_frame_gets_go_away() {
    let gw = TestGateway::start(|_| {}).await;
    let id = AgentIdentity::generate();

    // Bytes that are not a protobuf frame.
    let mut io = tls_connect(&gw, Some(&id)).await.unwrap();
    let mut raw = io.into_inner();
    raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let reason = read_go_away(&mut raw).await;
    assert!(reason.contains("malformed first frame"), "{reason}");
    gw.logs
        .wait_for(&["agent connection rejected", "malformed first frame"])
        .await;

    // A length beyond the maximum.
    io = tls_connect(&gw, Some(&id)).await.unwrap();
    raw = io.into_inner();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    raw.flush().await.unwrap();
    let reason = read_go_away(&mut raw).await;
    assert!(reason.contains("malformed first frame"), "{reason}");

    // A valid frame that is not a hello.
    io = tls_connect(&gw, Some(&id)).await.unwrap();
    let hb = pb::Frame {
        kind: Some(frame::Kind::Heartbeat(pb::Heartbeat {
            seq: 1,
            reply: false,
        })),
    };
    let answer = hello_exchange(&mut io, hb).await.unwrap();
    assert!(
        matches!(&answer.kind, Some(frame::Kind::GoAway(g)) if g.reason.contains("expected hello")),
        "{answer:?}"
    );

    // A hello without a common version.
    io = tls_connect(&gw, Some(&id)).await.unwrap();
    let mut hello = handshake::hello("x", "", 65536);
    if let Some(frame::Kind::Hello(h)) = &mut hello.kind {
        h.min_version = 7;
        h.max_version = 9;
    }
    let answer = hello_exchange(&mut io, hello).await.unwrap();
    assert!(
        matches!(&answer.kind, Some(frame::Kind::GoAway(g)) if g.reason.contains("version mismatch")),
        "{answer:?}"
    );
    gw.logs
        .wait_for(&["agent connection rejected", "version mismatch"])
        .await;

    // A hello with out-of-bounds fields.
    io = tls_connect(&gw, Some(&id)).await.unwrap();
    let answer = hello_exchange(&mut io, handshake::hello("x", "", 1))
        .await
        .unwrap();
    assert!(
        matches!(&answer.kind, Some(frame::Kind::GoAway(g)) if g.reason.contains("initial_window")),
        "{answer:?}"
    );

    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"bad_hello\"}")
            .await,
        4
    );
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"version_mismatch\"}")
            .await,
        1
    );
    assert!(
        gw.json("/api/v1/agents")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    gw.stop().await;
}

#[tokio::test]
async fn protocol_violation_and_heartbeat_timeout_are_logged_with_reason() {
    let gw = TestGateway::start(|c| c.heartbeat_interval = Duration::from_millis(100)).await;

    // A second hello after the handshake is a protocol violation.
    let id = AgentIdentity::generate();
    let mut io = tls_connect(&gw, Some(&id)).await.unwrap();
    let ack = hello_exchange(&mut io, handshake::hello("x", "", 65536))
        .await
        .unwrap();
    assert!(matches!(ack.kind, Some(frame::Kind::HelloAck(_))));
    write_frame(
        &mut io,
        &handshake::hello("x", "", 65536),
        DEFAULT_MAX_FRAME_LEN,
    )
    .await
    .unwrap();
    gw.logs
        .wait_for(&[
            "agent disconnected",
            &id.agent_id,
            "protocol violation: hello after the handshake",
        ])
        .await;

    // A peer that says hello and then goes silent is dead after 3 intervals.
    let silent = AgentIdentity::generate();
    let mut io = tls_connect(&gw, Some(&silent)).await.unwrap();
    hello_exchange(&mut io, handshake::hello("x", "", 65536))
        .await
        .unwrap();
    gw.logs
        .wait_for(&["agent disconnected", &silent.agent_id, "heartbeat timeout"])
        .await;
    assert_eq!(
        gw.metric("outband_gateway_agent_disconnects_total{reason_kind=\"heartbeat_timeout\"}")
            .await,
        1
    );
    assert_eq!(
        gw.metric("outband_gateway_agent_disconnects_total{reason_kind=\"protocol\"}")
            .await,
        1
    );
    drop(io);
    gw.stop().await;
}

/// Reads frames until a GoAway and returns its reason.
async fn read_go_away(raw: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let mut io = raw.compat();
    let mut dec = outband_proto::codec::FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let frame = tokio::time::timeout(
        Duration::from_secs(5),
        outband_tunnel::read_frame(&mut io, &mut dec),
    )
    .await
    .expect("gateway answered")
    .expect("a frame");
    match frame.kind {
        Some(frame::Kind::GoAway(g)) => g.reason,
        other => panic!("expected GoAway, got {other:?}"),
    }
}

#[tokio::test]
async fn one_address_cannot_hold_every_handshake_slot() {
    use outband_gateway::agents::MAX_PENDING_PER_IP;
    let timeout = Duration::from_secs(5);
    let gw = TestGateway::start(|c| c.handshake_timeout = timeout).await;
    let mut stalled = Vec::new();
    for _ in 0..MAX_PENDING_PER_IP {
        stalled.push(TcpStream::connect(gw.agent_addr).await.unwrap());
    }
    // One more from the same address is closed at once, long before the timeout.
    let started = Instant::now();
    let mut extra = TcpStream::connect(gw.agent_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("the connection over the per-address limit was not closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < timeout);
    gw.logs
        .wait_for(&[
            "agent connection rejected",
            "too many handshakes in progress",
        ])
        .await;
    assert_eq!(
        gw.metric("outband_gateway_handshakes_total{result=\"overloaded\"}")
            .await,
        1
    );
    // Their places come back: once the stalls are gone an agent gets in (the
    // gateway needs a moment to see the stalled connections close).
    drop(stalled);
    let id = AgentIdentity::generate();
    let mut last = String::new();
    for _ in 0..50 {
        match connect_agent(&gw, &id).await {
            Ok(agent) => {
                assert_eq!(agent.ack.agent_id, id.agent_id);
                gw.stop().await;
                return;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("agent could not connect after the stalls closed: {last}");
}
