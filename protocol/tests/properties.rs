//! Property tests: arbitrary messages survive encode -> decode; a stream of frames split
//! at arbitrary points decodes to the same messages; any header above the limit is
//! rejected without reserving the claimed size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bytes::BytesMut;
use chrono::{DateTime, TimeZone, Utc};
use hero_protocol::{
    CancelRequest, ExecutionContext, ExecutionError, ExecutionOutcome, ExecutionRequest,
    FrameCodec, FrameError, Hello, LogLine, LogStream, Message, OutcomeStatus, decode_frame,
    encode_frame,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// JSON values without floats: serde_json's default float parsing is not exact, and
/// float precision is not what these properties are about.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // 1970 .. 2100, with nanoseconds.
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().expect("in range"))
}

fn context() -> impl Strategy<Value = ExecutionContext> {
    (
        ".*",
        any::<u32>(),
        timestamp(),
        ".*",
        option::of(timestamp()),
        option::of(btree_map(".{0,8}", ".*", 0..3)),
        option::of(".*"),
    )
        .prop_map(
            |(job_id, attempt, enqueue_time, queue_name, deadline, trace_context, worker_id)| {
                ExecutionContext {
                    job_id,
                    attempt,
                    enqueue_time,
                    queue_name,
                    deadline,
                    trace_context: trace_context.map(|m: BTreeMap<String, String>| m),
                    worker_id,
                }
            },
        )
}

fn request() -> impl Strategy<Value = ExecutionRequest> {
    (
        ".{0,4}",
        ".*",
        ".*",
        ".*",
        vec(json_value(), 0..4),
        btree_map(".{0,8}", json_value(), 0..4),
        context(),
    )
        .prop_map(
            |(protocol_version, request_id, job_id, function_name, args, kwargs, context)| {
                ExecutionRequest {
                    protocol_version,
                    request_id,
                    job_id,
                    function_name,
                    args,
                    kwargs: kwargs.into_iter().collect(),
                    context,
                }
            },
        )
}

fn error() -> impl Strategy<Value = ExecutionError> {
    (
        ".*",
        option::of(".*"),
        option::of(".*"),
        option::of(json_value()),
    )
        .prop_map(|(message, error_type, code, details)| ExecutionError {
            message,
            error_type,
            code,
            // `Some(null)` is written as `null` and read back as `None`: not a distinct
            // wire value, so not generated.
            details: details.filter(|d| !d.is_null()),
        })
}

fn outcome() -> impl Strategy<Value = ExecutionOutcome> {
    let status = prop_oneof![
        Just(OutcomeStatus::Success),
        Just(OutcomeStatus::Retry),
        Just(OutcomeStatus::Timeout),
        Just(OutcomeStatus::Error),
    ];
    (
        option::of(".*"),
        option::of(".*"),
        status,
        option::of(json_value()),
        option::of(error()),
        option::of(0u32..100_000),
    )
        .prop_map(
            |(job_id, request_id, status, result, error, retry)| ExecutionOutcome {
                job_id,
                request_id,
                status,
                result: result.filter(|r| !r.is_null()),
                error,
                // Quarter seconds are exact in binary and in decimal.
                retry_after_seconds: retry.map(|q| f64::from(q) / 4.0),
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        request().prop_map(Message::Request),
        outcome().prop_map(Message::Response),
        (".{0,4}", ".*", option::of(".*"), any::<bool>()).prop_map(|(v, job, req, hard)| {
            Message::Cancel(CancelRequest {
                protocol_version: v,
                job_id: job,
                request_id: req,
                hard_kill: hard,
            })
        }),
        (
            ".*",
            option::of(".*"),
            vec(".*", 0..4),
            option::of(any::<u32>()),
            vec(".*", 0..3),
            option::of(".*")
        )
            .prop_map(|(name, version, functions, max, extensions, token)| {
                Message::Hello(Hello {
                    version,
                    functions,
                    max_in_flight: max,
                    extensions,
                    auth_token: token,
                    ..Hello::new(name)
                })
            }),
        (".*", ".*", any::<bool>(), ".*").prop_map(|(job, req, err, line)| {
            Message::Log(LogLine {
                job_id: job,
                request_id: req,
                stream: if err {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                line,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_is_identity(msg in message()) {
        let frame = encode_frame(&msg).unwrap();
        prop_assert_eq!(decode_frame(&frame).unwrap(), msg);
    }

    #[test]
    fn frames_split_anywhere_decode_to_the_same_messages(
        msgs in vec(message(), 1..8),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for m in &msgs {
            codec.encode(m, &mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();

        let mut decoder = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(m) = decoder.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn any_header_above_the_limit_is_rejected_before_allocating(
        max in 1usize..1_000_000,
        excess in 1u64..=u64::from(u32::MAX),
        tail in vec(any::<u8>(), 0..16),
    ) {
        let declared = (max as u64).saturating_add(excess).min(u64::from(u32::MAX));
        prop_assume!(declared > max as u64);
        let mut buf = BytesMut::with_capacity(4 + tail.len());
        buf.extend_from_slice(&(declared as u32).to_be_bytes());
        buf.extend_from_slice(&tail);
        let capacity_before = buf.capacity();
        let mut codec = FrameCodec::with_max_frame_len(max);
        let err = codec.decode(&mut buf).unwrap_err();
        let is_too_large = matches!(err, FrameError::TooLarge { len, max: m } if len == declared && m == max);
        prop_assert!(is_too_large, "{}", err);
        // Nothing was reserved for the claimed body.
        prop_assert_eq!(buf.capacity(), capacity_before);
    }
}
