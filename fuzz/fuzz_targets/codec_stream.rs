//! The streaming codec fed arbitrary bytes in arbitrary chunks: it never panics, never
//! reserves more than its limit, and stops at the first error as a connection would.
#![no_main]

use bytes::BytesMut;
use hero_protocol::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// A small limit so that oversized headers are common in the corpus.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, the rest is the stream.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = FrameCodec::with_max_frame_len(MAX);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= MAX + 4 + stream.len(), "over-reserved");
    }
    let _ = codec.decode_eof(&mut buf);
});
