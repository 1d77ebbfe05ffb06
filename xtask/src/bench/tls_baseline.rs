//! Baseline: one direct TLS 1.3 connection (rustls, ring) to a sink, no tunnel.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Result;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Bulk throughput over one direct TLS connection, in Gbit/s.
pub fn bulk_tls(total: usize) -> Result<f64> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let cert_der = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)?,
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        if let Ok((tcp, _)) = listener.accept() {
            let _ = tcp.set_nodelay(true);
            let Ok(conn) = rustls::ServerConnection::new(server_cfg) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = vec![0u8; 256 * 1024];
            use std::io::{Read, Write};
            let mut got = 0;
            while got < total {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let _ = tls.write_all(b"k");
            let _ = tls.flush();
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let conn = rustls::ClientConnection::new(client_cfg, ServerName::try_from("localhost")?)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The server counts the bytes, so no close is needed to end the transfer.
    super::net::bulk(&mut tls, total, |_| {})
}
