//! Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
//!
//! Decoding goes through tokio-util's [`LengthDelimitedCodec`], which checks the length
//! against the limit *before* it reserves any buffer for the body. Encoding writes the
//! header and serializes the message straight into the output buffer, then patches the
//! length in: one pass, no intermediate `Vec`.

use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::message::{MESSAGE_TYPES, Message};

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default largest payload accepted or written: 16 MiB. Large enough for any script
/// and its output; small enough that a hostile length header cannot make a peer
/// reserve gigabytes. Configurable on both sides.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// What was wrong with a frame. Any of these closes the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header declared an empty payload.
    #[error("invalid frame: zero length")]
    ZeroLength,
    /// The header declared (or the message needs) more than the limit.
    #[error("invalid frame: length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared or needed length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// Fewer than 4 bytes where a header was expected.
    #[error("invalid frame: truncated header ({got} of 4 bytes)")]
    TruncatedHeader {
        /// Bytes present.
        got: usize,
    },
    /// A whole-frame buffer whose body length disagrees with its header.
    #[error("invalid frame: header says {declared} bytes, body has {actual}")]
    LengthMismatch {
        /// Length in the header.
        declared: u64,
        /// Bytes after the header.
        actual: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame ({buffered} bytes of an unfinished frame)")]
    ClosedMidFrame {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// The payload is not UTF-8.
    #[error("invalid frame: payload is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The payload's `type` is not one this crate knows.
    #[error("invalid frame: unknown message type `{0}`")]
    UnknownType(String),
    /// The payload is not JSON of a known message shape.
    #[error("invalid frame: {0}")]
    Json(#[source] serde_json::Error),
    /// Reading or writing the stream failed.
    #[error("frame i/o error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Classifies a payload that failed to decode: not UTF-8, an unknown `type`, or
    /// another JSON error. Runs on the error path only, so valid frames pay nothing.
    fn from_payload(payload: &[u8], err: serde_json::Error) -> FrameError {
        if let Err(utf8) = std::str::from_utf8(payload) {
            return FrameError::Utf8(utf8);
        }
        #[derive(serde::Deserialize)]
        struct TypeOnly {
            #[serde(rename = "type")]
            type_name: String,
        }
        match serde_json::from_slice::<TypeOnly>(payload) {
            Ok(t) if !MESSAGE_TYPES.contains(&t.type_name.as_str()) => {
                FrameError::UnknownType(t.type_name)
            }
            _ => FrameError::Json(err),
        }
    }
}

/// Decodes one payload (the bytes after the header).
///
/// Decoding uses `serde_json`, not `sonic-rs`: serde_json bounds nesting depth (128), so a
/// hostile `[[[[...` costs an error rather than the process's stack.
fn decode_payload(payload: &[u8]) -> Result<Message, FrameError> {
    serde_json::from_slice(payload).map_err(|err| FrameError::from_payload(payload, err))
}

/// Appends `message` as one frame (header + payload) to `out`, refusing payloads above
/// `max_frame_len`. On error `out` is left as it was.
///
/// Messages with long text (a script, a result) are serialized with `sonic-rs`, whose
/// SIMD string escaping writes a 64 KiB result several times faster than `serde_json`;
/// small ones with `serde_json`, whose fixed cost per call is lower. The JSON is the
/// same either way: both write fields in declaration order, with the same escapes.
/// Both write into a `Vec`, whose many tiny appends are cheaper than a `BytesMut`'s.
fn encode_into(
    message: &Message,
    out: &mut Vec<u8>,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let result = if has_long_text(message) {
        sonic_rs::to_writer(&mut *out, message)
            .map_err(|e| serde_json::Error::io(io::Error::other(e)))
    } else {
        serde_json::to_writer(&mut *out, message)
    };
    let len = out.len() - start - FRAME_HEADER_LEN;
    let checked = match result {
        Err(err) => Err(FrameError::Json(err)),
        Ok(()) if len > max_frame_len => Err(FrameError::TooLarge {
            len: len as u64,
            max: max_frame_len,
        }),
        Ok(()) => u32::try_from(len).map_err(|_| FrameError::TooLarge {
            len: len as u64,
            max: max_frame_len,
        }),
    };
    match checked {
        Ok(len) => {
            out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// Text at least this long is escaped faster by `sonic-rs`; below it, `serde_json`'s
/// lower fixed cost per call wins (measured with the codec benchmark).
const LONG_TEXT: usize = 1024;

/// Whether `message` carries a long script or a large result: then `sonic-rs` encodes it.
fn has_long_text(message: &Message) -> bool {
    use serde_json::Value;
    let long = |v: &Value| match v {
        Value::String(s) => s.len() >= LONG_TEXT,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    };
    match message {
        Message::Request(r) => r.args.iter().any(long),
        Message::Response(o) => o.result.as_ref().is_some_and(long),
        Message::Log(l) => l.line.len() >= LONG_TEXT,
        Message::Cancel(_) | Message::Hello(_) => false,
    }
}

/// Encodes `message` as one frame (header + payload), with the default limit.
///
/// ```
/// use hero_protocol::{encode_frame, decode_frame, CancelRequest, Message};
///
/// let msg = Message::Cancel(CancelRequest::job("j1"));
/// let frame = encode_frame(&msg).unwrap();
/// assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
/// assert_eq!(decode_frame(&frame).unwrap(), msg);
/// ```
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(256);
    encode_into(message, &mut buf, DEFAULT_MAX_FRAME_LEN)?;
    Ok(buf)
}

/// Decodes exactly one whole frame (header + payload), with the default limit.
///
/// The buffer must hold the frame and nothing else: a short buffer is
/// [`FrameError::TruncatedHeader`] or [`FrameError::LengthMismatch`], and so are
/// trailing bytes.
pub fn decode_frame(frame: &[u8]) -> Result<Message, FrameError> {
    decode_frame_with_limit(frame, DEFAULT_MAX_FRAME_LEN)
}

/// [`decode_frame`] with an explicit limit on the payload length.
pub fn decode_frame_with_limit(frame: &[u8], max_frame_len: usize) -> Result<Message, FrameError> {
    let Some((header, payload)) = frame.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::TruncatedHeader { got: frame.len() });
    };
    let declared = u32::from_be_bytes(*header);
    check_len(declared, max_frame_len)?;
    if payload.len() as u64 != u64::from(declared) {
        return Err(FrameError::LengthMismatch {
            declared: u64::from(declared),
            actual: payload.len(),
        });
    }
    decode_payload(payload)
}

fn check_len(declared: u32, max_frame_len: usize) -> Result<(), FrameError> {
    if declared == 0 {
        return Err(FrameError::ZeroLength);
    }
    if u64::from(declared) > max_frame_len as u64 {
        return Err(FrameError::TooLarge {
            len: u64::from(declared),
            max: max_frame_len,
        });
    }
    Ok(())
}

/// Reads one frame from a blocking reader, for callers without tokio.
///
/// `Ok(None)` is a clean end of stream between frames; an end inside a frame is
/// [`FrameError::ClosedMidFrame`]. The body buffer is sized only after the length has
/// passed the limit.
pub fn read_frame<R: Read>(
    reader: &mut R,
    max_frame_len: usize,
) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::ClosedMidFrame { buffered: got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let declared = u32::from_be_bytes(header);
    check_len(declared, max_frame_len)?;
    let mut payload = Vec::new();
    let read = reader
        .take(u64::from(declared))
        .read_to_end(&mut payload)
        .map_err(FrameError::Io)?;
    if read as u64 != u64::from(declared) {
        return Err(FrameError::ClosedMidFrame {
            buffered: FRAME_HEADER_LEN + read,
        });
    }
    decode_payload(&payload).map(Some)
}

/// Writes one frame to a blocking writer and flushes it.
pub fn write_frame<W: Write>(
    writer: &mut W,
    message: &Message,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(256);
    encode_into(message, &mut buf, max_frame_len)?;
    writer.write_all(&buf)?;
    writer.flush()?;
    Ok(())
}

/// A tokio-util codec of [`Message`]s: use it with `Framed`, `FramedRead`, `FramedWrite`.
///
/// ```
/// use bytes::BytesMut;
/// use hero_protocol::{CancelRequest, FrameCodec, Message};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::new();
/// let msg = Message::Cancel(CancelRequest::request("j1", "r1"));
/// codec.encode(msg.clone(), &mut buf).unwrap();
///
/// // Bytes may arrive in any pieces: the codec waits for a whole frame.
/// let mut wire = BytesMut::new();
/// wire.extend_from_slice(&buf[..3]);
/// assert!(codec.decode(&mut wire).unwrap().is_none());
/// wire.extend_from_slice(&buf[3..]);
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(msg));
/// ```
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max_frame_len: usize,
    /// The inner codec has consumed a header and waits for the body: an end of stream
    /// now is mid-frame even when no body byte is buffered.
    in_frame: bool,
    /// Reused serialization buffer.
    scratch: Vec<u8>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        FrameCodec::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses payloads longer than `max_frame_len`, in both directions.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(FRAME_HEADER_LEN)
            .big_endian()
            .max_frame_length(max_frame_len)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_len,
            in_frame: false,
            scratch: Vec::new(),
        }
    }

    /// The limit on payload length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Serializes into the reused scratch buffer, then copies the frame into `dst` once.
    fn encode_to(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.scratch.clear();
        let result = encode_into(item, &mut self.scratch, self.max_frame_len);
        if result.is_ok() {
            dst.extend_from_slice(&self.scratch);
        }
        // Do not keep a large result's buffer around for a connection's lifetime.
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        result
    }
}

/// Largest scratch buffer a codec keeps between frames.
const SCRATCH_KEEP: usize = 64 * 1024;

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        let before = src.len();
        match self.inner.decode(src) {
            Ok(Some(payload)) => {
                self.in_frame = false;
                if payload.is_empty() {
                    return Err(FrameError::ZeroLength);
                }
                decode_payload(&payload).map(Some)
            }
            Ok(None) => {
                self.in_frame |= src.len() < before;
                Ok(None)
            }
            // The only error the inner codec raises on decode is an oversized length; it
            // has not consumed the header, so the declared length is still readable.
            Err(err)
                if err.kind() == io::ErrorKind::InvalidData && src.len() >= FRAME_HEADER_LEN =>
            {
                Err(FrameError::TooLarge {
                    len: u64::from((&src[..FRAME_HEADER_LEN]).get_u32()),
                    max: self.max_frame_len,
                })
            }
            Err(err) => Err(FrameError::Io(err)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() && !self.in_frame => Ok(None),
            None => Err(FrameError::ClosedMidFrame {
                buffered: src.len() + if self.in_frame { FRAME_HEADER_LEN } else { 0 },
            }),
        }
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_to(&item, dst)
    }
}

impl Encoder<&Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_to(item, dst)
    }
}
