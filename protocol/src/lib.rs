//! # hero-protocol: the runner wire protocol, v1
//!
//! The hero supervisor and its runner processes exchange **frames** over one byte
//! stream: a TCP connection, or a child's stdin/stdout pair. This crate owns that wire
//! format: the message types, their exact JSON shapes, and the frame codec. It knows
//! nothing of Redis, JSON-RPC or jobs; both sides of the wire build on it.
//!
//! ```text
//! +---- length: u32, big-endian ----+---- payload: `length` bytes of UTF-8 JSON ----+
//! | \x00\x00\x00\x2a                 | {"type":"cancel","payload":{...}}               |
//! +----------------------------------+-------------------------------------------------+
//! ```
//!
//! - `length` counts the payload only, never the 4 header bytes.
//! - `length == 0` is invalid; `length > max_frame_len` is invalid and is rejected before
//!   any buffer of that size is reserved ([`DEFAULT_MAX_FRAME_LEN`]: 16 MiB).
//! - A stream that ends between frames is a clean close; one that ends inside a frame is
//!   [`FrameError::ClosedMidFrame`].
//! - Any invalid frame is a typed [`FrameError`]; the peer that sent it loses its
//!   connection, never more.
//!
//! v1 is the format of the `rrq-protocol` crate at 0.9.9: frames written by either
//! implementation decode in the other, byte for byte where the JSON is the same.
//!
//! ## Messages
//!
//! Every payload is `{"type": <snake_case name>, "payload": {..}}`:
//!
//! | `type` | direction | body |
//! |---|---|---|
//! | `request` | supervisor -> runner | [`ExecutionRequest`] |
//! | `response` | runner -> supervisor | [`ExecutionOutcome`] |
//! | `cancel` | supervisor -> runner | [`CancelRequest`] |
//! | `hello` | either (extension) | [`Hello`] |
//! | `log` | runner -> supervisor (extension) | [`LogLine`] |
//!
//! Extension messages travel only between peers that agreed to them: see [`Hello`].
//! A plain v1 peer never receives one.
//!
//! ## Reading and writing frames
//!
//! With tokio, wrap the stream in a `Framed` with [`FrameCodec`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hero_protocol::FrameError> {
//! use futures::{SinkExt, StreamExt};
//! use hero_protocol::{ExecutionOutcome, FrameCodec, Message};
//! use tokio_util::codec::Framed;
//!
//! let (runner_end, supervisor_end) = tokio::io::duplex(64 * 1024);
//! let mut runner = Framed::new(runner_end, FrameCodec::new());
//! let mut supervisor = Framed::new(supervisor_end, FrameCodec::new());
//!
//! let outcome = ExecutionOutcome::success("job-1", "req-1", "42".into());
//! runner.send(Message::Response(outcome.clone())).await?;
//! assert_eq!(supervisor.next().await.transpose()?, Some(Message::Response(outcome)));
//! # Ok(())
//! # }
//! ```
//!
//! Without tokio, use [`encode_frame`] / [`decode_frame`] on whole frames, or
//! [`write_frame`] / [`read_frame`] on blocking streams.

mod frame;
mod message;
mod rfc3339;

pub use frame::{
    DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN, FrameCodec, FrameError, decode_frame,
    decode_frame_with_limit, encode_frame, read_frame, write_frame,
};
pub use message::{
    CancelRequest, ExecutionContext, ExecutionError, ExecutionOutcome, ExecutionRequest, Hello,
    LogLine, LogStream, MESSAGE_TYPES, Message, OutcomeStatus, PROTOCOL_VERSION, error_type,
};
