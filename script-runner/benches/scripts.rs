//! The built-in runner's cost per script, in process (no supervisor, no frames): what a
//! trivial `SAL` and `OSIS` script costs the `RhaiHandler`, from the request to its
//! result, on a multi-threaded tokio runtime like the runner's.
//!
//! `cargo bench -p hero-script-runner --bench scripts`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hero_protocol::{ExecutionContext, ExecutionRequest};
use hero_runner::{Handler, HandlerContext};
use hero_script_runner::scripts::{OsisStore, RhaiFlavor, RhaiHandler, RhaiLimits};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

fn request(function: &str, script: &str) -> ExecutionRequest {
    let mut kwargs = Map::new();
    kwargs.insert("env".to_owned(), json!(HashMap::<String, String>::new()));
    kwargs.insert("context_id".to_owned(), json!("bench"));
    ExecutionRequest {
        protocol_version: "1".to_owned(),
        request_id: "r".to_owned(),
        job_id: "j".to_owned(),
        function_name: function.to_owned(),
        args: vec![Value::String(script.to_owned())],
        kwargs,
        context: ExecutionContext {
            job_id: "j".to_owned(),
            attempt: 1,
            enqueue_time: chrono::Utc::now(),
            queue_name: "hero:q:work:type:SAL".to_owned(),
            deadline: None,
            trace_context: None,
            worker_id: None,
        },
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = OsisStore::default();
    let cases = [
        ("sal: 40 + 2", RhaiFlavor::Sal, "SAL", "40 + 2"),
        (
            "osis: set + get",
            RhaiFlavor::Osis,
            "OSIS",
            "osis_set(\"k\", 41); osis_get(\"k\") + 1",
        ),
        (
            "sal: loop of 1,000 + print",
            RhaiFlavor::Sal,
            "SAL",
            "let t = 0; for i in 0..1000 { t += i; } print(t); t",
        ),
    ];
    for (name, flavor, function, script) in cases {
        let handler = RhaiHandler::new(flavor, RhaiLimits::default(), store.clone());
        let req = request(function, script);
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let ctx = HandlerContext::detached("j", "r", CancellationToken::new());
                let call = handler.call(req.clone(), ctx);
                async move { black_box(call.await.expect("the script runs")) }
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
