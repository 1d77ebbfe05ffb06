//! Length-prefixed frame codec: a 4-byte big-endian length, then one protobuf
//! [`Frame`](crate::pb::Frame).
//!
//! [`FrameDecoder`] is fed whatever bytes arrived and yields whole frames. It never
//! buffers more than one maximal frame plus its header, and it rejects a bad length
//! before reading the body, so a hostile peer cannot make it allocate.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;

use crate::pb::{Frame, frame};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;
/// Default hard maximum for the body of one frame (256 KiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;

/// Why a byte stream could not be decoded. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is zero: a frame must carry a message kind.
    #[error("frame length 0 (empty frame)")]
    Empty,
    /// The length prefix exceeds the maximum.
    #[error("frame length {len} exceeds maximum {max}")]
    TooLong {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The body is not a valid protobuf `Frame`.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The body decoded but carries no message kind this version knows.
    #[error("frame has no known message kind")]
    UnknownKind,
    /// The stream ended inside a frame.
    #[error("connection ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
}

/// Incremental decoder of length-prefixed frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
    failed: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frame bodies longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len,
            failed: false,
        }
    }

    /// The maximum body length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (avoids a copy). Reserve with
    /// [`FrameDecoder::reserve`] first; then use `BytesMut::put` or `chunk_mut`.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// How many more bytes are needed to complete the current frame (at least 1).
    /// Never more than one maximal frame.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        (HEADER_LEN + len.min(self.max_len))
            .saturating_sub(self.buf.len())
            .max(1)
    }

    /// Frees the buffer if it holds nothing, so an idle connection keeps no
    /// allocation. Call it when the connection has been quiet for a while, not after
    /// every frame: a busy connection reuses its buffer instead of asking the
    /// allocator again (musl's returns large blocks to the kernel on every free).
    pub fn shrink_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next whole frame, if one is buffered. After an error the decoder
    /// stays failed: the connection must be closed.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Malformed("decoder already failed".into()));
        }
        let res = self.decode_inner();
        if res.is_err() {
            self.failed = true;
            self.buf = BytesMut::new();
        }
        res
    }

    fn decode_inner(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len as usize > self.max_len {
            return Err(DecodeError::TooLong {
                len: len.into(),
                max: self.max_len,
            });
        }
        let total = HEADER_LEN + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        // Decode from a slice, which copies payloads into allocations of their own.
        // Decoding from a shared `Bytes` would let one small payload the application
        // holds on to pin the whole read buffer, so a peer could make us hold far more
        // memory than the flow-control windows allow (e.g. one byte of data padded to
        // a maximal frame with an unknown field).
        let frame = Frame::decode(&self.buf[HEADER_LEN..total])
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        self.buf.advance(total);
        if frame.kind.is_none() {
            return Err(DecodeError::UnknownKind);
        }
        Ok(Some(frame))
    }

    /// Call when the transport reached end of stream: an error if a frame was cut off.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

/// Error from [`encode_frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds maximum {max}")]
pub struct EncodeError {
    /// Encoded body length.
    pub len: usize,
    /// Maximum allowed.
    pub max: usize,
}

/// Appends one frame (header and body) to `out`.
pub fn encode_frame(frame: &Frame, max_len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
    let len = frame.encoded_len();
    if len > max_len || len == 0 {
        return Err(EncodeError { len, max: max_len });
    }
    out.reserve(HEADER_LEN + len);
    out.put_u32(len as u32);
    frame
        .encode(out)
        .expect("reserved capacity for the whole frame");
    Ok(())
}

/// Short name of a frame's kind, for logs and metrics.
pub fn kind_name(frame: &Frame) -> &'static str {
    match &frame.kind {
        None => "none",
        Some(frame::Kind::Hello(_)) => "hello",
        Some(frame::Kind::HelloAck(_)) => "hello_ack",
        Some(frame::Kind::Heartbeat(_)) => "heartbeat",
        Some(frame::Kind::Open(_)) => "open",
        Some(frame::Kind::Accept(_)) => "accept",
        Some(frame::Kind::Refuse(_)) => "refuse",
        Some(frame::Kind::Data(_)) => "data",
        Some(frame::Kind::Window(_)) => "window",
        Some(frame::Kind::Close(_)) => "close",
        Some(frame::Kind::Request(_)) => "request",
        Some(frame::Kind::Reply(_)) => "reply",
        Some(frame::Kind::Inventory(_)) => "inventory",
        Some(frame::Kind::GoAway(_)) => "go_away",
    }
}
