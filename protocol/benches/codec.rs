//! Frame codec throughput, side by side with `rrq-protocol` 0.9.9 on the same messages.
//!
//! `cargo bench -p hero-protocol --bench codec`
//!
//! Messages: a typical request (~300 bytes of JSON), a response carrying a 64 KiB
//! result, and a cancel. For each, encode, decode, and encode+decode, for `hero` (this
//! crate) and `rrq`. Criterion reports time per message and MiB/s of frame bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hero_protocol::{
    CancelRequest, ExecutionContext, ExecutionOutcome, ExecutionRequest, Message, decode_frame,
    encode_frame,
};
use rrq_protocol as rrq;
use serde_json::{Value, json};

const JOB: &str = "0d3c4f1e-6a2b-4c8d-9e7f-1a2b3c4d5e6f";
const REQ: &str = "5b1f8a52-8d7e-4a57-9b0e-3f6c2d1a9e11";

fn when() -> chrono::DateTime<chrono::Utc> {
    "2026-11-22T03:00:00.123Z".parse().expect("valid time")
}

fn script() -> Value {
    json!("let total = 0; for i in 0..10 { total += i; } print(total); total")
}

fn env() -> Value {
    json!({"HOME": "/home/hero", "LANG": "C.UTF-8"})
}

fn hero_request() -> Message {
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("env".into(), env());
    Message::Request(ExecutionRequest {
        protocol_version: "1".into(),
        request_id: REQ.into(),
        job_id: JOB.into(),
        function_name: "SAL".into(),
        args: vec![script()],
        kwargs,
        context: ExecutionContext {
            job_id: JOB.into(),
            attempt: 1,
            enqueue_time: when(),
            queue_name: "hero:q:work:type:SAL".into(),
            deadline: Some(when()),
            trace_context: None,
            worker_id: Some("supervisor-1".into()),
        },
    })
}

fn rrq_request() -> rrq::RunnerMessage {
    rrq::RunnerMessage::Request {
        payload: rrq::ExecutionRequest {
            protocol_version: "1".into(),
            request_id: REQ.into(),
            job_id: JOB.into(),
            function_name: "SAL".into(),
            args: vec![script()],
            kwargs: HashMap::from([("env".to_owned(), env())]),
            context: rrq::ExecutionContext {
                job_id: JOB.into(),
                attempt: 1,
                enqueue_time: when(),
                queue_name: "hero:q:work:type:SAL".into(),
                deadline: Some(when()),
                trace_context: None,
                worker_id: Some("supervisor-1".into()),
            },
        },
    }
}

/// 64 KiB of script output: text lines, as a script's stdout would be.
fn big_result() -> Value {
    let line = "2026-11-22 03:00:00 processed batch 0042: 128 rows ok\n";
    let mut out = String::with_capacity(64 * 1024);
    while out.len() + line.len() <= 64 * 1024 {
        out.push_str(line);
    }
    Value::String(out)
}

fn cases() -> Vec<(&'static str, Message, rrq::RunnerMessage)> {
    let result = big_result();
    vec![
        ("request", hero_request(), rrq_request()),
        (
            "response_64k",
            Message::Response(ExecutionOutcome::success(JOB, REQ, result.clone())),
            rrq::RunnerMessage::Response {
                payload: rrq::ExecutionOutcome::success(JOB, REQ, result),
            },
        ),
        (
            "cancel",
            Message::Cancel(CancelRequest::request(JOB, REQ)),
            rrq::RunnerMessage::Cancel {
                payload: rrq::CancelRequest {
                    protocol_version: "1".into(),
                    job_id: JOB.into(),
                    request_id: Some(REQ.into()),
                    hard_kill: false,
                },
            },
        ),
    ]
}

fn codec(c: &mut Criterion) {
    for (name, hero_msg, rrq_msg) in cases() {
        let hero_frame = encode_frame(&hero_msg).expect("encodes");
        let rrq_frame = rrq::encode_frame(&rrq_msg).expect("encodes");
        assert_eq!(
            hero_frame, rrq_frame,
            "{name}: both sides must bench the same bytes"
        );

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(hero_frame.len() as u64));
        group.bench_function("hero/encode", |b| {
            b.iter(|| encode_frame(black_box(&hero_msg)).expect("encodes"))
        });
        group.bench_function("rrq/encode", |b| {
            b.iter(|| rrq::encode_frame(black_box(&rrq_msg)).expect("encodes"))
        });
        group.bench_function("hero/decode", |b| {
            b.iter(|| decode_frame(black_box(&hero_frame)).expect("decodes"))
        });
        group.bench_function("rrq/decode", |b| {
            b.iter(|| rrq::decode_frame(black_box(&rrq_frame)).expect("decodes"))
        });
        group.bench_function("hero/roundtrip", |b| {
            b.iter(|| {
                let frame = encode_frame(black_box(&hero_msg)).expect("encodes");
                decode_frame(&frame).expect("decodes")
            })
        });
        group.bench_function("rrq/roundtrip", |b| {
            b.iter(|| {
                let frame = rrq::encode_frame(black_box(&rrq_msg)).expect("encodes");
                rrq::decode_frame(&frame).expect("decodes")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
