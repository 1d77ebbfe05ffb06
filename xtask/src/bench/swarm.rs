//! Many simulated idle agents: real TLS with their own client certificates and a
//! real hello, then idle, answering heartbeats, like an agent with no streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use outband_proto::codec::{DEFAULT_MAX_FRAME_LEN, FrameDecoder, encode_frame};
use outband_proto::pb::{Frame, Heartbeat, frame};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connected simulated agent; dropping the runtime closes it.
pub struct Swarm {
    _runtime: tokio::runtime::Runtime,
}

/// Connects `n` simulated agents to `gateway` trusting `ca_pem`.
pub fn connect(n: usize, gateway: &str, ca_pem: &str) -> Result<Swarm> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pem_certs(ca_pem)? {
        roots.add(cert)?;
    }
    let roots = Arc::new(roots);
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // All simulated agents come from 127.0.0.1, and the gateway allows at most 32
    // handshakes in progress per source address (more are shed as a flood): stay under.
    let gate = Arc::new(tokio::sync::Semaphore::new(24));
    runtime.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let roots = roots.clone();
            let gateway = gateway.to_owned();
            let connected = connected.clone();
            let failed = failed.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                match one(&gateway, roots).await {
                    Ok(tls) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                        idle(tls).await;
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("simulated agent failed: {e:#}");
                        }
                    }
                }
            }));
        }
        // Wait until every agent either connected or failed.
        loop {
            let done = connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
            if done >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::mem::forget(tasks);
    });
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        bail!("{f} of {n} simulated agents failed to connect");
    }
    Ok(Swarm { _runtime: runtime })
}

fn rustls_pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the gateway CA")
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn one(gateway: &str, roots: Arc<rustls::RootCertStore>) -> Result<Tls> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let cert = rcgen::CertificateParams::new(vec!["sim-agent".to_string()])?.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der().clone()], key_der)?;
    let tcp = TcpStream::connect(gateway).await?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let hello = outband_proto::handshake::hello("sim 0", "SIMS-SIMS", 256 * 1024);
    send(&mut tls, &hello).await?;
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    match recv(&mut tls, &mut dec).await?.kind {
        Some(frame::Kind::HelloAck(_)) => Ok(tls),
        other => bail!("expected HelloAck, got {other:?}"),
    }
}

async fn send(tls: &mut Tls, f: &Frame) -> Result<()> {
    let mut out = BytesMut::new();
    encode_frame(f, DEFAULT_MAX_FRAME_LEN, &mut out)?;
    tls.write_all(&out).await?;
    tls.flush().await?;
    Ok(())
}

async fn recv(tls: &mut Tls, dec: &mut FrameDecoder) -> Result<Frame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.decode()? {
            return Ok(f);
        }
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            bail!("gateway closed the connection");
        }
        dec.extend(&buf[..n]);
    }
}

/// Answers heartbeats until the connection ends.
async fn idle(mut tls: Tls) {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    while let Ok(f) = recv(&mut tls, &mut dec).await {
        if let Some(frame::Kind::Heartbeat(hb)) = f.kind
            && !hb.reply
        {
            let reply = Frame {
                kind: Some(frame::Kind::Heartbeat(Heartbeat {
                    seq: hb.seq,
                    reply: true,
                })),
            };
            if send(&mut tls, &reply).await.is_err() {
                return;
            }
        }
    }
}
