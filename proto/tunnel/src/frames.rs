//! Reading and writing single frames on a transport, for the hello exchange before
//! the driver takes over.

use bytes::BytesMut;
use futures_io::{AsyncRead, AsyncWrite};
use outband_proto::codec::{self, DecodeError, FrameDecoder};
use outband_proto::pb::Frame;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;

/// Error reading or writing one frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// Transport error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid frame.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The peer closed the connection between frames.
    #[error("connection closed by peer")]
    Eof,
}

/// Reads exactly one frame. Reads no further than the frame's end, so the driver
/// can take over the transport afterwards with nothing lost.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Frame, FrameIoError> {
    loop {
        if let Some(frame) = decoder.decode()? {
            return Ok(frame);
        }
        let mut buf = vec![0u8; decoder.wanted()];
        let n = poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut buf)).await?;
        if n == 0 {
            decoder.finish()?;
            return Err(FrameIoError::Eof);
        }
        decoder.extend(&buf[..n]);
    }
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    max_len: usize,
) -> Result<(), FrameIoError> {
    let mut out = BytesMut::new();
    codec::encode_frame(frame, max_len, &mut out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut off = 0;
    while off < out.len() {
        let n = poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, &out[off..])).await?;
        if n == 0 {
            return Err(FrameIoError::Io(io::ErrorKind::WriteZero.into()));
        }
        off += n;
    }
    poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await?;
    Ok(())
}
