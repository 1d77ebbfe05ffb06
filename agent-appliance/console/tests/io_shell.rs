//! The I/O shell against in-process peers on loopback: our own front handshake as
//! the "BMC", hostile RFB servers, and a WebSocket server that sends text or
//! oversized messages. (The real peers — QEMU, websockify, vncdotool — are in the
//! `outband-e2e` crate's `bmc_vnc` tests.)

use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use outband_console::rfb::{MAX_REASON_LEN, Version};
use outband_console::{VncTarget, Zeroizing, connect_bmc, serve_front};
use smol::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(5);

fn assert_send<T: Send>(_: &T) {}

#[test]
fn futures_are_send() {
    let target = VncTarget::new("vnc://127.0.0.1:1");
    assert_send(&connect_bmc(&target, T));
    let mut s: Option<TcpStream> = None;
    if let Some(s) = s.as_mut() {
        assert_send(&serve_front(s));
    }
    assert_send(&outband_console::connect_serial_ws(
        "ws://x/", None, None, T,
    ));
}

/// One connection served by `serve`, on a fresh listener; returns its address.
async fn one_shot<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    smol::spawn(async move {
        if let Ok((s, _)) = l.accept().await {
            serve(s).await;
        }
    })
    .detach();
    addr
}

#[test]
fn client_and_server_meet_and_leave_the_rest_alone() {
    smol::block_on(async {
        // The "BMC" is our own None-only server; after the handshake it expects the
        // ClientInit byte and answers with a marker.
        let addr = one_shot(|mut s| async move {
            assert_eq!(serve_front(&mut s).await.unwrap(), Version::V3_8);
            let mut init = [0u8; 1];
            s.read_exact(&mut init).await.unwrap();
            assert_eq!(init, [1]);
            s.write_all(b"SERVERINIT").await.unwrap();
        })
        .await;
        let mut bmc = connect_bmc(&VncTarget::new(addr.to_string()), T)
            .await
            .unwrap();
        assert_eq!(bmc.security_type(), 1);
        bmc.write_all(&[1]).await.unwrap();
        let mut got = [0u8; 10];
        bmc.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"SERVERINIT");
    });
}

#[test]
fn hostile_reason_length_is_a_protocol_error() {
    smol::block_on(async {
        let addr = one_shot(|mut s| async move {
            let _ = s.write_all(b"RFB 003.008\n\x00\xff\xff\xff\xff").await;
            // Then keep sending: none of it may be buffered.
            let junk = vec![b'x'; 64 * 1024];
            for _ in 0..16 {
                if s.write_all(&junk).await.is_err() {
                    break;
                }
            }
        })
        .await;
        let e = connect_bmc(&VncTarget::new(format!("vnc://{addr}")), T)
            .await
            .expect_err("accepted a 4 GiB reason");
        assert_eq!(e.code(), "bmc_protocol");
        assert!(e.to_string().contains(&MAX_REASON_LEN.to_string()), "{e}");
    });
}

#[test]
fn bmc_closing_mid_handshake_is_a_protocol_error() {
    smol::block_on(async {
        let addr = one_shot(|mut s| async move {
            let _ = s.write_all(b"RFB 003.008\n\x01").await;
        })
        .await;
        let mut t = VncTarget::new(format!("vnc://{addr}"));
        t.password = Some(Zeroizing::new("pw".into()));
        let e = connect_bmc(&t, T)
            .await
            .expect_err("accepted a truncated handshake");
        assert_eq!(e.code(), "bmc_protocol", "{e}");
    });
}

#[test]
fn front_refuses_vnc_auth_choice_with_a_reason() {
    smol::block_on(async {
        let addr = one_shot(|mut s| async move {
            let e = serve_front(&mut s).await.expect_err("accepted type 2");
            assert_eq!(e.code(), "client_protocol");
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut v = [0u8; 12];
        c.read_exact(&mut v).await.unwrap();
        c.write_all(b"RFB 003.008\n").await.unwrap();
        let mut types = [0u8; 2];
        c.read_exact(&mut types).await.unwrap();
        assert_eq!(types, [1, 1]);
        c.write_all(&[2]).await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert_eq!(&rest[..4], &[0, 0, 0, 1]);
        assert!(String::from_utf8_lossy(&rest[8..]).contains("None"));
    });
}

#[test]
fn silent_client_is_dropped_by_serve_front_within() {
    smol::block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap(); // never answers
        let (mut s, _) = l.accept().await.unwrap();
        let start = Instant::now();
        let e = outband_console::serve_front_within(&mut s, Duration::from_millis(300))
            .await
            .expect_err("silent client accepted");
        assert_eq!(e.code(), "client_protocol");
        assert!(e.to_string().contains("within"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn silent_bmc_times_out_in_the_rfb_phase() {
    smol::block_on(async {
        let addr = one_shot(|s| async move {
            smol::Timer::after(Duration::from_secs(5)).await;
            drop(s);
        })
        .await;
        let start = Instant::now();
        let e = connect_bmc(
            &VncTarget::new(addr.to_string()),
            Duration::from_millis(300),
        )
        .await
        .expect_err("silent BMC");
        assert_eq!(e.code(), "bmc_timeout");
        assert!(e.to_string().contains("RFB handshake"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    });
}

/// A WebSocket server (tungstenite's, no subprotocol chosen) that sends `msg` on
/// every connection.
async fn ws_server(msg: async_tungstenite::tungstenite::Message) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    smol::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let msg = msg.clone();
            smol::spawn(async move {
                let mut ws = async_tungstenite::accept_async(s).await.unwrap();
                let _ = ws.send(msg).await;
                smol::Timer::after(Duration::from_secs(2)).await;
            })
            .detach();
        }
    })
    .detach();
    addr
}

#[test]
fn server_choosing_no_subprotocol_is_accepted() {
    smol::block_on(async {
        let msg =
            async_tungstenite::tungstenite::Message::binary(b"RFB 003.008\n\x01\x01".to_vec());
        let addr = ws_server(msg).await;
        // The handshake gets as far as waiting for SecurityResult.
        let e = connect_bmc(
            &VncTarget::new(format!("ws://{addr}/")),
            Duration::from_millis(500),
        )
        .await
        .expect_err("no SecurityResult sent");
        assert_eq!(e.code(), "bmc_timeout", "{e}");
        assert!(e.to_string().contains("RFB handshake"), "{e}");
    });
}

#[test]
fn text_messages_break_a_vnc_websocket() {
    smol::block_on(async {
        let addr = ws_server(async_tungstenite::tungstenite::Message::text(
            "RFB 003.008\n",
        ))
        .await;
        let e = connect_bmc(&VncTarget::new(format!("ws://{addr}/")), T)
            .await
            .expect_err("text accepted");
        assert_eq!(e.code(), "bmc_protocol", "{e}");
        assert!(e.to_string().contains("text"), "{e}");
    });
}

#[test]
fn oversized_websocket_message_is_refused() {
    smol::block_on(async {
        let mut big = b"RFB 003.008\n".to_vec();
        big.resize(outband_console::MAX_MESSAGE + 1, 0);
        let addr = ws_server(async_tungstenite::tungstenite::Message::binary(big)).await;
        let e = connect_bmc(&VncTarget::new(format!("ws://{addr}/")), T)
            .await
            .expect_err("oversized message accepted");
        assert_eq!(e.code(), "bmc_protocol", "{e}");
        assert!(
            e.to_string().to_lowercase().contains("too long")
                || e.to_string().to_lowercase().contains("size"),
            "{e}"
        );
    });
}

/// A relay that never flushes must still move small writes: every WebSocket message
/// goes to the socket at once (write buffer size 0).
#[test]
fn websocket_writes_go_out_without_flush() {
    smol::block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        smol::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut ws = async_tungstenite::accept_async(s).await.unwrap();
            // Echo each message.
            while let Some(Ok(m)) = futures_lite::StreamExt::next(&mut ws).await {
                if m.is_binary() && ws.send(m).await.is_err() {
                    break;
                }
            }
        })
        .detach();
        let mut con = outband_console::connect_serial_ws(&format!("ws://{addr}/"), None, None, T)
            .await
            .unwrap();
        // Keystrokes, then a paste larger than one message (split into several).
        let paste: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for key in [&b"a"[..], b"bc", b"\r", &paste] {
            con.write_all(key).await.unwrap(); // no flush
            let mut back = vec![0u8; key.len()];
            let read = con.read_exact(&mut back);
            let timeout = async {
                smol::Timer::after(Duration::from_secs(2)).await;
                Err(std::io::ErrorKind::TimedOut.into())
            };
            futures_lite::future::or(read, timeout)
                .await
                .expect("unflushed write did not go out");
            assert_eq!(back, key);
        }
    });
}

/// A relay like the agent's: reads from the BMC side and copies toward it without
/// ever flushing. The browser side goes quiet right when the BMC's socket is full, so
/// the last message sits half-written in a buffer; it must still go out as the relay
/// keeps polling the BMC side for reading (and nothing more is written).
#[test]
fn buffered_tail_goes_out_while_the_relay_only_reads() {
    use futures_lite::{AsyncRead, AsyncWrite};
    use std::task::Poll;
    smol::block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (accepted_tx, accepted_rx) = smol::channel::bounded::<usize>(1);
        let (got_tx, got_rx) = smol::channel::bounded::<usize>(1);
        smol::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut ws = async_tungstenite::accept_async(s).await.unwrap();
            // Read nothing until the client has filled its socket and gone quiet.
            let accepted = accepted_rx.recv().await.unwrap();
            let mut got = 0;
            while got < accepted {
                match futures_lite::StreamExt::next(&mut ws).await {
                    Some(Ok(m)) => got += m.len(),
                    _ => break,
                }
            }
            let _ = got_tx.send(got).await;
        })
        .detach();
        let mut con = outband_console::connect_serial_ws(&format!("ws://{addr}/"), None, None, T)
            .await
            .unwrap();
        let chunk = vec![b'k'; 64 * 1024];
        let mut accepted = 0usize;
        let mut quiet = false;
        let mut down = [0u8; 1024];
        let relay = std::future::poll_fn(|cx| {
            // Down: read from the BMC side (nothing comes).
            if let Poll::Ready(r) = std::pin::Pin::new(&mut con).poll_read(cx, &mut down) {
                return Poll::Ready(r.map(|_| ()));
            }
            // Up: write until the socket is full, then go quiet for good. Never flush.
            while !quiet {
                match std::pin::Pin::new(&mut con).poll_write(cx, &chunk) {
                    Poll::Ready(Ok(n)) => accepted += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        quiet = true;
                        let _ = accepted_tx.try_send(accepted);
                    }
                }
            }
            Poll::Pending
        });
        let relay = async {
            let _ = relay.await;
            None
        };
        let got = async { got_rx.recv().await.ok() };
        let timeout = async {
            smol::Timer::after(Duration::from_secs(10)).await;
            None
        };
        // `got` first: once the server has reported, it drops its end, and the relay's
        // read then fails with a reset; both are ready at the same wake-up.
        let got = futures_lite::future::or(got, futures_lite::future::or(relay, timeout)).await;
        assert!(accepted > 64 * 1024, "the socket never filled");
        assert_eq!(got, Some(accepted), "the tail never left the buffer");
    });
}
