//! Interop with `rrq-protocol` 0.9.9, the reference implementation of v1: frames
//! written by either side decode in the other, and are byte-for-byte identical where the
//! JSON values are the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use hero_protocol::{
    CancelRequest, ExecutionContext, ExecutionOutcome, ExecutionRequest, Message, decode_frame,
    encode_frame,
};
use rrq_protocol as rrq;
use serde_json::json;

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

fn ours_request() -> ExecutionRequest {
    let mut kwargs = serde_json::Map::new();
    // One key: rrq keeps kwargs in a HashMap, whose order is not stable across keys.
    kwargs.insert("env".into(), json!({"A": "1"}));
    ExecutionRequest {
        protocol_version: "1".into(),
        request_id: "r1".into(),
        job_id: "j1".into(),
        function_name: "Python".into(),
        args: vec![json!("print(1)")],
        kwargs,
        context: ExecutionContext {
            job_id: "j1".into(),
            attempt: 3,
            enqueue_time: time("2026-11-22T03:00:00.5Z"),
            queue_name: "hero:q:work:type:Python".into(),
            deadline: Some(time("2026-11-22T03:01:00Z")),
            trace_context: None,
            worker_id: Some("w1".into()),
        },
    }
}

fn rrq_request() -> rrq::ExecutionRequest {
    rrq::ExecutionRequest {
        protocol_version: "1".into(),
        request_id: "r1".into(),
        job_id: "j1".into(),
        function_name: "Python".into(),
        args: vec![json!("print(1)")],
        kwargs: HashMap::from([("env".to_owned(), json!({"A": "1"}))]),
        context: rrq::ExecutionContext {
            job_id: "j1".into(),
            attempt: 3,
            enqueue_time: time("2026-11-22T03:00:00.5Z"),
            queue_name: "hero:q:work:type:Python".into(),
            deadline: Some(time("2026-11-22T03:01:00Z")),
            trace_context: None,
            worker_id: Some("w1".into()),
        },
    }
}

/// The same message built by each implementation.
fn pairs() -> Vec<(&'static str, Message, rrq::RunnerMessage)> {
    use rrq::RunnerMessage as R;
    vec![
        (
            "request",
            Message::Request(ours_request()),
            R::Request {
                payload: rrq_request(),
            },
        ),
        (
            "success",
            Message::Response(ExecutionOutcome::success("j1", "r1", json!({"out": "42"}))),
            R::Response {
                payload: rrq::ExecutionOutcome::success("j1", "r1", json!({"out": "42"})),
            },
        ),
        (
            "retry",
            Message::Response(ExecutionOutcome::retry("j1", "r1", "later", Some(1.5))),
            R::Response {
                payload: rrq::ExecutionOutcome::retry("j1", "r1", "later", Some(1.5)),
            },
        ),
        (
            "timeout",
            Message::Response(ExecutionOutcome {
                error: Some(hero_protocol::ExecutionError::new("too slow")),
                ..ExecutionOutcome::timeout("j1", "r1", "too slow")
            }),
            R::Response {
                payload: rrq::ExecutionOutcome::timeout("j1", "r1", "too slow"),
            },
        ),
        (
            "error",
            Message::Response(ExecutionOutcome::error("j1", "r1", "boom")),
            R::Response {
                payload: rrq::ExecutionOutcome::error("j1", "r1", "boom"),
            },
        ),
        (
            "handler_not_found",
            Message::Response(ExecutionOutcome::handler_not_found("j1", "r1", "no Ruby")),
            R::Response {
                payload: rrq::ExecutionOutcome::handler_not_found("j1", "r1", "no Ruby"),
            },
        ),
        (
            "cancel",
            Message::Cancel(CancelRequest::request("j1", "r1").hard()),
            R::Cancel {
                payload: rrq::CancelRequest {
                    protocol_version: "1".into(),
                    job_id: "j1".into(),
                    request_id: Some("r1".into()),
                    hard_kill: true,
                },
            },
        ),
        (
            "cancel_job",
            Message::Cancel(CancelRequest::job("j1")),
            R::Cancel {
                payload: rrq::CancelRequest {
                    protocol_version: "1".into(),
                    job_id: "j1".into(),
                    request_id: None,
                    hard_kill: false,
                },
            },
        ),
    ]
}

#[test]
fn frames_are_byte_for_byte_identical() {
    for (name, ours, theirs) in pairs() {
        let a = encode_frame(&ours).unwrap();
        let b = rrq::encode_frame(&theirs).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&a[4..]),
            String::from_utf8_lossy(&b[4..]),
            "{name}: payloads differ"
        );
        assert_eq!(a, b, "{name}: frames differ");
    }
}

#[test]
fn rrq_frames_decode_with_ours() {
    for (name, ours, theirs) in pairs() {
        let frame = rrq::encode_frame(&theirs).unwrap();
        assert_eq!(decode_frame(&frame).unwrap(), ours, "{name}");
    }
}

#[test]
fn our_frames_decode_with_rrq() {
    for (name, ours, _) in pairs() {
        let frame = encode_frame(&ours).unwrap();
        let decoded = rrq::decode_frame(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        // rrq's types have no PartialEq: compare their re-encoding with our frame.
        assert_eq!(rrq::encode_frame(&decoded).unwrap(), frame, "{name}");
    }
}

#[test]
fn rrq_sees_outcome_statuses_as_we_wrote_them() {
    use hero_protocol::OutcomeStatus as O;
    use rrq::OutcomeStatus as R;
    for (ours, theirs) in [
        (O::Success, R::Success),
        (O::Retry, R::Retry),
        (O::Timeout, R::Timeout),
        (O::Error, R::Error),
    ] {
        let outcome = ExecutionOutcome {
            status: ours,
            ..ExecutionOutcome::error("j", "r", "m")
        };
        let frame = encode_frame(&Message::Response(outcome)).unwrap();
        match rrq::decode_frame(&frame).unwrap() {
            rrq::RunnerMessage::Response { payload } => assert_eq!(payload.status, theirs),
            other => panic!("decoded as {other:?}"),
        }
    }
}
