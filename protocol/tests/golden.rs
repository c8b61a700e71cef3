//! Golden vectors: one JSON fixture per message kind under `tests/data/`, checked both
//! ways. The fixture decodes to the expected value, and the value encodes to JSON equal
//! to the fixture (or to its `.canonical.json` twin, for fixtures that rely on defaults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use hero_protocol::{
    CancelRequest, ExecutionContext, ExecutionError, ExecutionOutcome, ExecutionRequest, Hello,
    LogLine, LogStream, Message, OutcomeStatus, decode_frame, encode_frame,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid RFC 3339 time")
}

/// Checks `name` both ways: it decodes to `expected`, and `expected` encodes to the JSON
/// of `canonical` (the fixture itself unless its defaults are spelled out elsewhere).
fn check(name: &str, canonical: Option<&str>, expected: Message) {
    let text = fixture(name);
    let decoded: Message = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded, expected, "{name}: decoded value");

    let canonical_text = canonical.map(fixture).unwrap_or(text);
    let want: Value = serde_json::from_str(&canonical_text).expect("fixture is JSON");
    let got = serde_json::to_value(&expected).expect("encodes");
    assert_eq!(got, want, "{name}: encoded JSON");

    // Through the frame functions too: same value after a whole-frame round trip.
    let frame = encode_frame(&expected).expect("frame encodes");
    assert_eq!(decode_frame(&frame).expect("frame decodes"), expected);
}

fn outcome(status: OutcomeStatus) -> ExecutionOutcome {
    ExecutionOutcome {
        job_id: Some("j1".into()),
        request_id: Some("r1".into()),
        status,
        result: None,
        error: None,
        retry_after_seconds: None,
    }
}

#[test]
fn request_full() {
    let job = "0d3c4f1e-6a2b-4c8d-9e7f-1a2b3c4d5e6f";
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("caller_id".into(), json!("alice"));
    kwargs.insert("context_id".into(), json!("ctx-1"));
    kwargs.insert("env".into(), json!({"HOME": "/tmp"}));
    let trace = BTreeMap::from([(
        "traceparent".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
    )]);
    let expected = Message::Request(ExecutionRequest {
        protocol_version: "1".into(),
        request_id: "5b1f8a52-8d7e-4a57-9b0e-3f6c2d1a9e11".into(),
        job_id: job.into(),
        function_name: "SAL".into(),
        args: vec![json!("print(\"hi\"); 40 + 2")],
        kwargs,
        context: ExecutionContext {
            job_id: job.into(),
            attempt: 2,
            enqueue_time: time("2026-11-22T03:00:00Z"),
            queue_name: "hero:q:work:type:SAL".into(),
            deadline: Some(time("2026-11-22T03:05:00.250Z")),
            trace_context: Some(trace),
            worker_id: Some("supervisor-1".into()),
        },
    });
    check("request.json", None, expected);
}

#[test]
fn request_minimal_gets_defaults() {
    let expected = Message::Request(ExecutionRequest {
        protocol_version: "1".into(),
        request_id: "r1".into(),
        job_id: "j1".into(),
        function_name: "Python".into(),
        args: vec![],
        kwargs: serde_json::Map::new(),
        context: ExecutionContext {
            job_id: "j1".into(),
            attempt: 1,
            enqueue_time: time("2026-11-22T03:00:00Z"),
            queue_name: "hero:q:work:type:Python".into(),
            deadline: None,
            trace_context: None,
            worker_id: None,
        },
    });
    check(
        "request_minimal.json",
        Some("request_minimal.canonical.json"),
        expected,
    );
}

#[test]
fn response_success_string() {
    let expected = ExecutionOutcome::success("j1", "r1", json!("42"));
    check("response_success.json", None, Message::Response(expected));
}

#[test]
fn response_success_object() {
    let result = json!({"rows": [1, 2, 3], "ok": true, "note": null});
    let expected = ExecutionOutcome::success("j1", "r1", result);
    check(
        "response_success_object.json",
        None,
        Message::Response(expected),
    );
}

#[test]
fn response_retry() {
    let expected = ExecutionOutcome::retry("j1", "r1", "database locked", Some(2.5));
    check("response_retry.json", None, Message::Response(expected));
}

#[test]
fn response_timeout() {
    let expected = ExecutionOutcome::timeout("j1", "r1", "deadline passed");
    check("response_timeout.json", None, Message::Response(expected));
}

#[test]
fn response_error_with_every_error_field() {
    let expected = ExecutionOutcome {
        error: Some(ExecutionError {
            message: "exit status 3".into(),
            error_type: Some("script_failed".into()),
            code: Some("E3".into()),
            details: Some(json!({"stderr_tail": "boom"})),
        }),
        ..outcome(OutcomeStatus::Error)
    };
    check("response_error.json", None, Message::Response(expected));
}

#[test]
fn response_handler_not_found() {
    let expected = ExecutionOutcome::handler_not_found("j1", "r1", "no handler for `Ruby`");
    assert_eq!(expected.error_type(), Some("handler_not_found"));
    check(
        "response_handler_not_found.json",
        None,
        Message::Response(expected),
    );
}

#[test]
fn response_cancelled() {
    let expected = ExecutionOutcome::cancelled("j1", "r1", "cancelled by the supervisor");
    check("response_cancelled.json", None, Message::Response(expected));
}

#[test]
fn response_minimal_has_no_ids() {
    let expected = ExecutionOutcome {
        job_id: None,
        request_id: None,
        ..outcome(OutcomeStatus::Success)
    };
    check("response_minimal.json", None, Message::Response(expected));
}

#[test]
fn cancel_full() {
    let expected = CancelRequest::request("j1", "r1").hard();
    check("cancel.json", None, Message::Cancel(expected));
}

#[test]
fn cancel_minimal_gets_defaults() {
    check(
        "cancel_minimal.json",
        Some("cancel_minimal.canonical.json"),
        Message::Cancel(CancelRequest::job("j1")),
    );
}

#[test]
fn hello_from_runner() {
    let expected = Hello {
        version: Some("0.1.0".into()),
        functions: vec!["SAL".into(), "OSIS".into(), "Python".into(), "V".into()],
        max_in_flight: Some(64),
        extensions: vec!["log".into()],
        ..Hello::new("hero-runner")
    };
    assert!(expected.accepts("log"));
    check("hello_runner.json", None, Message::Hello(expected));
}

#[test]
fn hello_from_supervisor() {
    let expected = Hello {
        extensions: vec!["log".into()],
        auth_token: Some("s3cret".into()),
        ..Hello::new("hero-supervisor")
    };
    check("hello_supervisor.json", None, Message::Hello(expected));
}

#[test]
fn log_line() {
    let expected = LogLine {
        job_id: "j1".into(),
        request_id: "r1".into(),
        stream: LogStream::Stderr,
        line: "warming up".into(),
    };
    check("log.json", None, Message::Log(expected));
}

#[test]
fn payload_before_type_decodes_too() {
    let text = r#"{"payload":{"job_id":"j1"},"type":"cancel"}"#;
    let decoded: Message = serde_json::from_str(text).expect("decodes");
    assert_eq!(decoded, Message::Cancel(CancelRequest::job("j1")));
}

#[test]
fn unknown_fields_are_ignored() {
    let text = r#"{"type":"cancel","payload":{"job_id":"j1","future":1},"trace":true}"#;
    let decoded: Message = serde_json::from_str(text).expect("decodes");
    assert_eq!(decoded, Message::Cancel(CancelRequest::job("j1")));
}

#[test]
fn core_and_extension_messages_are_told_apart() {
    let cases = [
        ("request_minimal.json", "request", true),
        ("response_success.json", "response", true),
        ("cancel.json", "cancel", true),
        ("hello_runner.json", "hello", false),
        ("log.json", "log", false),
    ];
    for (name, type_name, core) in cases {
        let msg: Message = serde_json::from_str(&fixture(name)).expect("decodes");
        assert_eq!(msg.type_name(), type_name, "{name}");
        assert_eq!(msg.is_v1_core(), core, "{name}");
    }
}
