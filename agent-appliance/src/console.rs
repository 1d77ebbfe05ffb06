//! Console streams: graphical (VNC over TCP or WebSocket, the BMC login done here) and
//! serial (IPMI SOL or a WebSocket console).
//!
//! The BMC side is opened first; only when it works is the stream accepted, so a
//! wrong password or an unreachable BMC reaches the gateway as a refusal with a stable
//! code, not as a stream that dies.

use std::sync::Arc;
use std::time::Instant;

use outband_console::{VncTarget, Zeroizing};
use outband_proto::pb::{self, RefuseCode};
use outband_tunnel::PendingStream;

use crate::bmc::{self, Failure};
use crate::relay::{RelayContext, relay};
use crate::target::{Scheme, Target};

/// The refusal code for a stable error code.
pub fn refuse_code(code: &str) -> RefuseCode {
    match code {
        "bmc_auth_failed" | "bmc_tls_pin_mismatch" | "bmc_tls_unpinned" => RefuseCode::AuthFailed,
        "bmc_unreachable" => RefuseCode::Unreachable,
        "bmc_timeout" => RefuseCode::Timeout,
        "bmc_bad_target" | "bad_request" => RefuseCode::BadTarget,
        "forbidden" => RefuseCode::Forbidden,
        _ => RefuseCode::BmcError,
    }
}

fn refuse(pending: PendingStream, f: &Failure) {
    let id = pending.id();
    tracing::warn!("stream {id}: refused ({}): {}", f.code, f.message);
    pending.refuse_with_code(refuse_code(f.code), f.code, &f.message);
}

fn pin(auth: &pb::BmcAuth) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(auth.cert_sha256.as_ref()).ok()
}

/// A graphical console: logs in to the BMC's VNC server, then offers the gateway's
/// client security type None and relays the rest.
pub async fn vnc(mut pending: PendingStream, target: Target, ctx: Arc<RelayContext>) {
    let id = pending.id();
    let auth = pending.take_auth().unwrap_or_default();
    if let Err(f) = bmc::check_auth(&auth) {
        return refuse(pending, &f);
    }
    let url = match target.scheme {
        Scheme::Tcp => format!("vnc://{}", target.key()),
        _ => target.to_string(),
    };
    let vt = VncTarget {
        url,
        password: (!auth.password.is_empty()).then(|| Zeroizing::new(auth.password.clone())),
        cert_sha256: pin(&auth),
        trust_on_first_use: false,
    };
    drop(auth);
    let bmc = match outband_console::connect_bmc(&vt, ctx.connect_timeout).await {
        Ok(b) => b,
        Err(e) => return refuse(pending, &Failure::new(e.code(), e.to_string())),
    };
    let mut stream = match pending.accept() {
        Ok(s) => s,
        Err(e) => return tracing::debug!("stream {id}: gone before accept: {e}"),
    };
    if let Err(e) = outband_console::serve_front_within(&mut stream, ctx.connect_timeout).await {
        tracing::info!("stream {id}: the console client failed the RFB handshake: {e}");
        stream.abort(pb::CloseCode::PeerError, &e.to_string());
        return;
    }
    tracing::info!("stream {id}: VNC console to {target}");
    let started = Instant::now();
    match relay(stream, bmc).await {
        Ok((up, down)) => tracing::info!(
            "stream {id}: VNC console closed after {:.1?}; {up} bytes to the BMC, {down} from it",
            started.elapsed()
        ),
        Err(e) => tracing::info!("stream {id}: VNC console to {target} aborted: {e}"),
    }
}

/// A serial console: IPMI SOL for `ipmi://`, a WebSocket console for `ws(s)://`.
pub async fn serial(
    mut pending: PendingStream,
    target: Target,
    ctx: Arc<RelayContext>,
    conn: crate::relay::ConnId,
) {
    let id = pending.id();
    let auth = pending.take_auth().unwrap_or_default();
    if let Err(f) = bmc::check_auth(&auth) {
        return refuse(pending, &f);
    }
    let started = Instant::now();
    match target.scheme {
        Scheme::Ipmi => {
            if auth.username.is_empty() {
                let f = Failure::new(
                    "bad_request",
                    "IPMI SOL needs a BMC user name (anonymous and null users are refused)",
                );
                return refuse(pending, &f);
            }
            let sol = async {
                let session = bmc::open_ipmi(&target, &auth, ctx.connect_timeout).await?;
                Ok::<_, Failure>(session.sol().await?)
            };
            let sol = match sol.await {
                Ok(s) => s,
                Err(f) => return refuse(pending, &f),
            };
            drop(auth);
            let stream = match pending.accept() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("stream {id}: gone before accept: {e}");
                    if let Err(e) = sol.close().await {
                        tracing::warn!("stream {id}: closing SOL: {e}");
                    }
                    return;
                }
            };
            tracing::info!("stream {id}: IPMI SOL console on {target}");
            let (tx, rx) = smol::channel::bounded(1);
            ctx.serial_breaks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((conn, id), tx);
            let res = sol.relay_with_breaks(stream, Some(rx)).await;
            ctx.serial_breaks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(conn, id));
            match res {
                Ok(()) => tracing::info!(
                    "stream {id}: SOL console closed after {:.1?}",
                    started.elapsed()
                ),
                Err(e) => tracing::info!("stream {id}: SOL console on {target} ended: {e}"),
            }
        }
        Scheme::Ws | Scheme::Wss => {
            let basic = (!auth.username.is_empty()).then(|| {
                let pair = Zeroizing::new(format!("{}:{}", auth.username, auth.password));
                Zeroizing::new(format!(
                    "Basic {}",
                    data_encoding::BASE64.encode(pair.as_bytes())
                ))
            });
            let header = basic.as_ref().map(|v| ("Authorization", v.as_str()));
            let url = target.to_string();
            let res =
                outband_console::connect_serial_ws(&url, header, pin(&auth), ctx.connect_timeout)
                    .await;
            drop(basic);
            drop(auth);
            let console = match res {
                Ok(c) => c,
                Err(e) => return refuse(pending, &Failure::new(e.code(), e.to_string())),
            };
            let stream = match pending.accept() {
                Ok(s) => s,
                Err(e) => return tracing::debug!("stream {id}: gone before accept: {e}"),
            };
            tracing::info!("stream {id}: WebSocket serial console on {target}");
            match relay(stream, console).await {
                Ok((up, down)) => tracing::info!(
                    "stream {id}: serial console closed after {:.1?}; {up} bytes in, {down} out",
                    started.elapsed()
                ),
                Err(e) => tracing::info!("stream {id}: serial console on {target} aborted: {e}"),
            }
        }
        _ => refuse(
            pending,
            &Failure::new(
                "bad_request",
                format!("{target}: a serial console needs ipmi://, ws:// or wss://"),
            ),
        ),
    }
}
