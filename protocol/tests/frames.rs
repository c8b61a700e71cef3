//! Frame-level behaviour: bad input gets a clear, typed error; partial I/O is waited
//! out; a clean end between frames is not an error, an end inside one is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use hero_protocol::{
    CancelRequest, DEFAULT_MAX_FRAME_LEN, ExecutionOutcome, FrameCodec, FrameError, Message,
    decode_frame, decode_frame_with_limit, encode_frame, read_frame, write_frame,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

fn cancel() -> Message {
    Message::Cancel(CancelRequest::request("j1", "r1"))
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Decodes `bytes` as one whole frame and checks the error's text contains `want`.
fn check_bad(bytes: &[u8], want: &str) -> FrameError {
    let err = decode_frame(bytes).expect_err("must be rejected");
    let text = err.to_string();
    assert!(
        text.contains(want),
        "error `{text}` should contain `{want}`"
    );
    // The streaming codec gives the same verdict.
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(bytes);
    let streamed = codec.decode_eof(&mut buf);
    assert!(streamed.is_err(), "codec accepted {bytes:?}");
    err
}

#[test]
fn zero_length_is_rejected() {
    let err = check_bad(&[0, 0, 0, 0], "zero length");
    assert!(matches!(err, FrameError::ZeroLength));
}

#[test]
fn oversize_length_is_rejected_with_the_limit() {
    let err = check_bad(&[0xff, 0xff, 0xff, 0xff], "exceeds the limit of 16777216");
    assert!(
        matches!(err, FrameError::TooLarge { len: 4_294_967_295, max } if max == DEFAULT_MAX_FRAME_LEN)
    );
}

#[test]
fn oversize_respects_a_configured_limit() {
    let frame = encode_frame(&cancel()).unwrap();
    let err = decode_frame_with_limit(&frame, 8).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max: 8, .. }), "{err}");

    let mut codec = FrameCodec::with_max_frame_len(8);
    let mut buf = BytesMut::from(&frame[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max: 8, .. }), "{err}");
    // The limit applies to writing as well; a refused write leaves the buffer untouched.
    let mut out = BytesMut::from(&b"xy"[..]);
    let err = codec.encode(cancel(), &mut out).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max: 8, .. }), "{err}");
    assert_eq!(&out[..], b"xy");
}

#[test]
fn truncated_header_is_rejected() {
    let err = check_bad(&[0, 0], "truncated header (2 of 4 bytes)");
    assert!(matches!(err, FrameError::TruncatedHeader { got: 2 }));
}

#[test]
fn truncated_body_is_rejected() {
    let frame = encode_frame(&cancel()).unwrap();
    let cut = &frame[..frame.len() - 5];
    let err = check_bad(cut, "body has");
    assert!(matches!(err, FrameError::LengthMismatch { .. }), "{err}");
}

#[test]
fn trailing_bytes_after_a_whole_frame_are_rejected() {
    let mut frame = encode_frame(&cancel()).unwrap();
    frame.push(b' ');
    let err = decode_frame(&frame).unwrap_err();
    assert!(matches!(err, FrameError::LengthMismatch { .. }), "{err}");
}

#[test]
fn invalid_utf8_is_rejected_as_such() {
    let err = check_bad(
        &frame_of(b"{\"type\":\"cancel\",\"payload\":{\"job_id\":\"\xff\xfe\"}}"),
        "not UTF-8",
    );
    assert!(matches!(err, FrameError::Utf8(_)));
}

#[test]
fn not_json_is_rejected() {
    let err = check_bad(&frame_of(b"hello there"), "invalid frame");
    assert!(matches!(err, FrameError::Json(_)), "{err}");
}

#[test]
fn json_of_the_wrong_shape_is_rejected_with_the_missing_field() {
    let err = check_bad(
        &frame_of(br#"{"type":"cancel","payload":{"request_id":"r1"}}"#),
        "missing field `job_id`",
    );
    assert!(matches!(err, FrameError::Json(_)), "{err}");
    let err = check_bad(&frame_of(br#"[1,2,3]"#), "invalid frame");
    assert!(matches!(err, FrameError::Json(_)), "{err}");
    let err = check_bad(
        &frame_of(br#"{"type":"response","payload":{"status":"maybe"}}"#),
        "unknown variant `maybe`",
    );
    assert!(matches!(err, FrameError::Json(_)), "{err}");
}

#[test]
fn unknown_type_is_named() {
    let err = check_bad(
        &frame_of(br#"{"type":"subscribe","payload":{}}"#),
        "unknown message type `subscribe`",
    );
    assert!(matches!(err, FrameError::UnknownType(t) if t == "subscribe"));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let mut payload = br#"{"type":"response","payload":{"status":"success","result":"#.to_vec();
    payload.extend(std::iter::repeat_n(b'[', 100_000));
    let err = decode_frame(&frame_of(&payload)).unwrap_err();
    assert!(matches!(err, FrameError::Json(_)), "{err}");
}

#[test]
fn brackets_inside_strings_do_not_count_as_nesting() {
    // 300 brackets and escaped quotes inside strings: flat JSON, decoded normally.
    let text = format!("{}\\\"{}", "[".repeat(150), "{".repeat(150));
    let payload = format!(
        r#"{{"type":"response","payload":{{"request_id":"r","status":"success","result":"{text}"}}}}"#
    );
    let msg = decode_frame(&frame_of(payload.as_bytes())).unwrap();
    let Message::Response(outcome) = msg else {
        panic!("not a response: {msg:?}")
    };
    let want = format!("{}\\\"{}", "[".repeat(150), "{".repeat(150));
    let want = serde_json::from_str::<String>(&format!("\"{want}\"")).unwrap();
    assert_eq!(outcome.result, Some(serde_json::Value::String(want)));
}

#[test]
fn nesting_up_to_the_limit_decodes_and_beyond_is_an_error() {
    let nested = |depth: usize| {
        format!(
            r#"{{"type":"response","payload":{{"request_id":"r","status":"success","result":{}1{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // The envelope and the payload are two levels of their own.
    assert!(decode_frame(&frame_of(nested(100).as_bytes())).is_ok());
    let err = decode_frame(&frame_of(nested(5_000).as_bytes())).unwrap_err();
    assert!(matches!(err, FrameError::Json(_)), "{err}");
}

#[test]
fn header_split_across_reads_waits_for_the_rest() {
    let frame = encode_frame(&cancel()).unwrap();
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for (i, byte) in frame.iter().enumerate() {
        buf.put_u8(*byte);
        let got = codec.decode(&mut buf).unwrap();
        if i + 1 < frame.len() {
            assert_eq!(got, None, "decoded early at byte {i}");
        } else {
            assert_eq!(got, Some(cancel()));
        }
    }
}

#[test]
fn eof_between_frames_is_clean_and_inside_one_is_an_error() {
    let frame = encode_frame(&cancel()).unwrap();
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&frame[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(cancel()));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);

    // A header and nothing more: the inner codec consumed it, the buffer is empty, and
    // that is still mid-frame.
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&frame[..4]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(err, FrameError::ClosedMidFrame { buffered: 4 }),
        "{err}"
    );

    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&frame[..2]);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(err.to_string().contains("closed mid-frame"), "{err}");
}

#[tokio::test]
async fn stream_ending_mid_frame_yields_an_error_after_the_good_frames() {
    let (mut tx, rx) = tokio::io::duplex(1024);
    let frame = encode_frame(&cancel()).unwrap();
    tx.write_all(&frame).await.unwrap();
    tx.write_all(&frame[..7]).await.unwrap();
    drop(tx);
    let mut reader = FramedRead::new(rx, FrameCodec::new());
    assert_eq!(reader.next().await.unwrap().unwrap(), cancel());
    let err = reader.next().await.unwrap().unwrap_err();
    assert!(matches!(err, FrameError::ClosedMidFrame { .. }), "{err}");
}

#[test]
fn blocking_read_and_write() {
    let outcome = Message::Response(ExecutionOutcome::success("j1", "r1", json!({"n": 1})));
    let mut wire = Vec::new();
    write_frame(&mut wire, &cancel(), DEFAULT_MAX_FRAME_LEN).unwrap();
    write_frame(&mut wire, &outcome, DEFAULT_MAX_FRAME_LEN).unwrap();
    let mut reader = &wire[..];
    assert_eq!(
        read_frame(&mut reader, DEFAULT_MAX_FRAME_LEN).unwrap(),
        Some(cancel())
    );
    assert_eq!(
        read_frame(&mut reader, DEFAULT_MAX_FRAME_LEN).unwrap(),
        Some(outcome)
    );
    assert_eq!(
        read_frame(&mut reader, DEFAULT_MAX_FRAME_LEN).unwrap(),
        None
    );

    let mut cut = &wire[..wire.len() - 1];
    read_frame(&mut cut, DEFAULT_MAX_FRAME_LEN).unwrap();
    let err = read_frame(&mut cut, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(err, FrameError::ClosedMidFrame { .. }), "{err}");

    let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff, b'{'];
    let err = read_frame(&mut huge, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
}
