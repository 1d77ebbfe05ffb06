//! Socket options for the TCP connection that carries a tunnel.

/// Most bytes the kernel keeps unsent on a tunnel socket. Beyond that the socket
/// reports "not writable", so queued frames wait in the multiplexer, where control
/// frames and other streams can still overtake a bulk stream, instead of in a
/// multi-megabyte kernel buffer where nothing can. This is what keeps a keystroke's
/// latency low while another stream on the same agent moves a disk image.
pub const NOTSENT_LOWAT: u32 = 32 * 1024;

/// Tunes a tunnel's TCP socket: `TCP_NODELAY` (frames are written whole, never
/// wait for Nagle) and a small `TCP_NOTSENT_LOWAT`. Failures are ignored: the
/// tunnel works without them, only with worse latency.
pub fn tune_tunnel_socket(sock: socket2::SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
}
