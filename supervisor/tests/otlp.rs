//! OpenTelemetry export (`--otlp-endpoint`): the real `hero-supervisor` binary sends its
//! spans over OTLP/HTTP with JSON bodies to a collector served in this test (a plain
//! HTTP/1.1 server on a private port), while a real runner (the Python SDK's, in a child
//! process) runs a job. The spans of one `run_job` call form one trace with the caller's
//! `traceparent`: `rpc.call` (child of the caller's span) -> `store.create_started` and
//! `dispatch.attempt` -> `runner.request`, and the runner is told the traceparent of
//! `runner.request`, so its own spans would join it too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hero_testkit::free_tcp_port;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The `hero-supervisor` process; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the collector received: each POST's path, content type and JSON body.
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A minimal OTLP/HTTP collector: answers every POST with `200 {}` and keeps what it got.
async fn collector() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let keep = received.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let keep = keep.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                // Requests one after another on the connection (keep-alive).
                loop {
                    let mut request_line = String::new();
                    if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_owned();
                    let (mut length, mut content_type) = (0usize, String::new());
                    loop {
                        let mut line = String::new();
                        read.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap(),
                            "content-type" => content_type = value.trim().to_owned(),
                            "transfer-encoding" => panic!("the exporter sent a chunked body"),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body))
                    });
                    keep.lock().unwrap().push((path, content_type, body));
                    write
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                        .await
                        .unwrap();
                }
            });
        }
    });
    (port, received)
}

/// Every span received, flattened, with `service.name` of its resource.
fn spans(received: &Received) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (_, _, body) in received.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                .unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_form_one_trace_from_the_caller_to_the_runner() {
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 not found: this test's runner is the Python SDK's; install it (apt-get install python3)"
    );
    let dir = tempfile::tempdir().unwrap();
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python");
    let runner = dir.path().join("trace_echo_runner.py");
    // A runner answering each SAL job with the traceparent its request carried.
    std::fs::write(
        &runner,
        format!(
            "import sys\nsys.path.insert(0, {sdk:?})\nfrom hero_runner import Runner\n\
             runner = Runner(name='trace-echo')\n\
             @runner.handler('SAL')\n\
             def sal(request, ctx):\n    \
                 return (request.get('context') or {{}}).get('trace_context', {{}}).get('traceparent')\n\
             runner.serve_stdio()\n"
        ),
    )
    .unwrap();

    let (collector_port, received) = collector().await;
    let port = free_tcp_port();
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--runner")
            .arg(format!("SAL=stdio:python3 {}", runner.display()))
            .args([
                "--otlp-endpoint",
                &format!("http://127.0.0.1:{collector_port}"),
            ])
            // Its server key in the test's own directory.
            .env("XDG_DATA_HOME", dir.path())
            .env_remove("HERO_SERVER_KEY")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_SERVICE_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hero-supervisor"),
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let call = |method: &str, params: Value| {
        client
            .post(&url)
            .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while call("whoami", json!([])).await.is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer: Value = call("run_job", json!(["anything", "SAL"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen_by_runner = answer["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {answer}"))
        .to_owned();

    // SIGTERM: the server stops, then the exporter sends what it holds.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for (path, content_type, _) in received.lock().unwrap().iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/json");
    }
    let spans = spans(&received);
    let names: Vec<String> = spans
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "hero-supervisor"),
        "{spans:?}"
    );
    let find = |name: &str, pick: &dyn Fn(&Value) -> bool| -> Value {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s["name"] == name && pick(s))
            .unwrap_or_else(|| panic!("no {name} span among {names:?}"))
            .clone()
    };
    let rpc = find("rpc.call", &|s| {
        attribute(s, "rpc.method").is_some_and(|v| v["stringValue"] == "run_job")
    });
    // run_job creates and starts its job in one store call.
    let create = find("store.create_started", &|_| true);
    let dispatch = find("dispatch.attempt", &|_| true);
    let request = find("runner.request", &|_| true);

    // One trace, the caller's.
    for span in [&rpc, &create, &dispatch, &request] {
        assert_eq!(span["traceId"], TRACE, "{span}");
    }
    // The chain of parents.
    assert_eq!(rpc["parentSpanId"], CALLER_SPAN, "{rpc}");
    assert_eq!(create["parentSpanId"], rpc["spanId"]);
    assert_eq!(dispatch["parentSpanId"], rpc["spanId"]);
    assert_eq!(request["parentSpanId"], dispatch["spanId"]);
    assert_eq!(
        attribute(&dispatch, "job.script_type").map(|v| &v["stringValue"]),
        Some(&json!("SAL"))
    );
    // The runner got the traceparent of `runner.request`.
    assert_eq!(
        seen_by_runner,
        format!("00-{TRACE}-{}-01", request["spanId"].as_str().unwrap())
    );
    // The background loops (promotion, leases, retention) make no spans of their own.
    let roots: Vec<&Value> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s["parentSpanId"].as_str().is_none_or(str::is_empty))
        .collect();
    assert!(roots.is_empty(), "spans without a parent: {roots:?}");
}
