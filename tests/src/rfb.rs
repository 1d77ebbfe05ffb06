//! A minimal blocking RFB 3.8 (VNC) client: handshake with security type None (or
//! VNC Authentication when given a password), ServerInit, and full-screen raw framebuffer updates. Enough to check that a relay
//! carries a real VNC session byte for byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Security type "None".
const SEC_NONE: u8 = 1;
/// Security type "VNC Authentication".
const SEC_VNC_AUTH: u8 = 2;

/// A connected RFB session after ServerInit.
#[derive(Debug)]
pub struct RfbClient {
    s: TcpStream,
    /// The server's 12-byte ProtocolVersion, e.g. `RFB 003.008\n`.
    pub version: String,
    /// The security types the server offered.
    pub security_types: Vec<u8>,
    /// Framebuffer width.
    pub width: u16,
    /// Framebuffer height.
    pub height: u16,
    /// The server's 16-byte PIXEL_FORMAT.
    pub pixel_format: [u8; 16],
    /// The desktop name.
    pub name: String,
}

/// A full framebuffer as the server sent it (server pixel format, row major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes per pixel.
    pub bytes_per_pixel: usize,
    /// `width * height * bytes_per_pixel` bytes.
    pub pixels: Vec<u8>,
    /// How many FramebufferUpdate messages it took.
    pub updates: usize,
}

impl RfbClient {
    /// Connects and runs the handshake up to ServerInit (security None, shared).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<RfbClient> {
        Self::connect_with_password(addr, timeout, None)
    }

    /// Like [`RfbClient::connect`], with VNC Authentication when `password` is given.
    pub fn connect_with_password(
        addr: SocketAddr,
        timeout: Duration,
        password: Option<&str>,
    ) -> anyhow::Result<RfbClient> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        let version = read_n(&mut s, 12).context("read ProtocolVersion")?;
        let version = String::from_utf8_lossy(&version).into_owned();
        anyhow::ensure!(
            version.starts_with("RFB "),
            "not an RFB server: {version:?}"
        );
        s.write_all(b"RFB 003.008\n")?;
        let n = read_n(&mut s, 1).context("read security type count")?[0];
        if n == 0 {
            let reason = read_reason(&mut s)?;
            anyhow::bail!("server refused the connection: {reason}");
        }
        let security_types = read_n(&mut s, n.into()).context("read security types")?;
        match password {
            Some(pw) if security_types.contains(&SEC_VNC_AUTH) => {
                s.write_all(&[SEC_VNC_AUTH])?;
                let challenge: [u8; 16] = read_array(&mut s).context("read VNC challenge")?;
                let response = outband_console::rfb::vnc_auth::response(pw.as_bytes(), &challenge);
                s.write_all(&response)?;
            }
            _ => {
                anyhow::ensure!(
                    security_types.contains(&SEC_NONE),
                    "server offers no security type None: {security_types:?}"
                );
                s.write_all(&[SEC_NONE])?;
            }
        }
        let result = u32::from_be_bytes(read_array(&mut s).context("read SecurityResult")?);
        if result != 0 {
            let reason = read_reason(&mut s).unwrap_or_default();
            anyhow::bail!("security handshake failed ({result}): {reason}");
        }
        // ClientInit: shared flag.
        s.write_all(&[1])?;
        let width = u16::from_be_bytes(read_array(&mut s).context("read ServerInit")?);
        let height = u16::from_be_bytes(read_array(&mut s)?);
        let pixel_format: [u8; 16] = read_array(&mut s)?;
        let name_len = u32::from_be_bytes(read_array(&mut s)?);
        anyhow::ensure!(name_len <= 4096, "desktop name of {name_len} bytes");
        let name = String::from_utf8_lossy(&read_n(&mut s, name_len as usize)?).into_owned();
        Ok(RfbClient {
            s,
            version,
            security_types,
            width,
            height,
            pixel_format,
            name,
        })
    }

    /// Bytes per pixel of the server's pixel format.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.pixel_format[0]).div_ceil(8)
    }

    /// Asks for the whole screen in raw encoding and reads updates until every pixel
    /// arrived.
    pub fn full_frame(&mut self, timeout: Duration) -> anyhow::Result<Framebuffer> {
        // SetEncodings: only Raw (0).
        self.s.write_all(&[2, 0, 0, 1, 0, 0, 0, 0])?;
        // FramebufferUpdateRequest, not incremental, whole screen.
        let mut req = vec![3, 0, 0, 0, 0, 0];
        req.extend_from_slice(&self.width.to_be_bytes());
        req.extend_from_slice(&self.height.to_be_bytes());
        self.s.write_all(&req)?;

        let (w, h, bpp) = (
            usize::from(self.width),
            usize::from(self.height),
            self.bytes_per_pixel(),
        );
        let mut fb = Framebuffer {
            width: w,
            height: h,
            bytes_per_pixel: bpp,
            pixels: vec![0; w * h * bpp],
            updates: 0,
        };
        let mut covered = vec![false; w * h];
        let mut remaining = w * h;
        let deadline = Instant::now() + timeout;
        while remaining > 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "framebuffer incomplete after {timeout:?} ({remaining} pixels missing)"
            );
            let kind = read_n(&mut self.s, 1).context("read server message type")?[0];
            match kind {
                0 => {
                    let hdr: [u8; 3] = read_array(&mut self.s)?;
                    let rects = u16::from_be_bytes([hdr[1], hdr[2]]);
                    for _ in 0..rects {
                        let r: [u8; 12] =
                            read_array(&mut self.s).context("read rectangle header")?;
                        let x = usize::from(u16::from_be_bytes([r[0], r[1]]));
                        let y = usize::from(u16::from_be_bytes([r[2], r[3]]));
                        let rw = usize::from(u16::from_be_bytes([r[4], r[5]]));
                        let rh = usize::from(u16::from_be_bytes([r[6], r[7]]));
                        let enc = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                        anyhow::ensure!(
                            enc == 0,
                            "rectangle in encoding {enc}, asked for raw only"
                        );
                        anyhow::ensure!(
                            x + rw <= w && y + rh <= h,
                            "rectangle {rw}x{rh}+{x}+{y} outside the {w}x{h} screen"
                        );
                        let data = read_n(&mut self.s, rw * rh * bpp).context("read raw pixels")?;
                        for row in 0..rh {
                            let src = &data[row * rw * bpp..(row + 1) * rw * bpp];
                            let start = ((y + row) * w + x) * bpp;
                            fb.pixels[start..start + rw * bpp].copy_from_slice(src);
                            for c in &mut covered[(y + row) * w + x..(y + row) * w + x + rw] {
                                if !*c {
                                    *c = true;
                                    remaining -= 1;
                                }
                            }
                        }
                    }
                    fb.updates += 1;
                }
                1 => {
                    // SetColourMapEntries
                    let hdr: [u8; 5] = read_array(&mut self.s)?;
                    let n = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
                    read_n(&mut self.s, n * 6)?;
                }
                2 => {} // Bell
                3 => {
                    // ServerCutText
                    let hdr: [u8; 7] = read_array(&mut self.s)?;
                    let n = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]);
                    anyhow::ensure!(n <= 1 << 20, "cut text of {n} bytes");
                    read_n(&mut self.s, n as usize)?;
                }
                other => anyhow::bail!("unexpected server message type {other}"),
            }
        }
        Ok(fb)
    }
}

fn read_n(s: &mut impl Read, n: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_array<const N: usize>(s: &mut impl Read) -> anyhow::Result<[u8; N]> {
    let mut buf = [0; N];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_reason(s: &mut impl Read) -> anyhow::Result<String> {
    let len = u32::from_be_bytes(read_array(s)?);
    anyhow::ensure!(len <= 4096, "reason of {len} bytes");
    Ok(String::from_utf8_lossy(&read_n(s, len as usize)?).into_owned())
}
