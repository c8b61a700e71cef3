//! Compatibility with runners nobody here wrote: `rrq-test-runner` runs on `rrq-runner`
//! 0.9.9's own runtime (protocol v1, no extension frames; it closes a connection on a
//! frame type it does not know, such as `hello`). Each test starts the real
//! `hero-supervisor` binary with a plain `--runner` spec and no `hello` setting, as a
//! user would, and talks to it over JSON-RPC on a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hero_supervisor::job::JobStatus;
use hero_supervisor::rpc::HeroApiClient;
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::types::{CreateJobParams, JobInfo, RunnerInfo};
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use serde_json::Value;

const RRQ_RUNNER: &str = env!("CARGO_BIN_EXE_rrq-test-runner");

/// A child process killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An rrq runner listening on `port`, told where by `RRQ_RUNNER_TCP_SOCKET` (rrq's way).
fn rrq_tcp_runner(port: u16) -> KillOnDrop {
    let child = Command::new(RRQ_RUNNER)
        .env("RRQ_RUNNER_TCP_SOCKET", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn rrq-test-runner");
    KillOnDrop(child)
}

/// Waits until something accepts connections on `port`.
async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `hero-supervisor serve` process (memory store) with `extra` flags.
struct Server {
    _child: KillOnDrop,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("supervisor.log");
        let port = hero_testkit::free_tcp_port();
        let child = Command::new(common::supervisor_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn hero-supervisor");
        let server = Server {
            _child: KillOnDrop(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        wait_listening(port, "hero-supervisor").await;
        server
    }

    fn client(&self) -> HttpClient {
        http_client(&self.url, None).expect("http client")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The one pool serving `script_type`.
    async fn pool(&self, script_type: &str) -> RunnerInfo {
        let runners = self.client().list_runners().await.expect("list_runners");
        runners
            .into_iter()
            .find(|r| r.script_types.iter().any(|t| t == script_type))
            .unwrap_or_else(|| panic!("no pool serves {script_type}"))
    }

    /// Waits until `script_type`'s pool has a live connection.
    async fn wait_connected(&self, script_type: &str) -> RunnerInfo {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pool = self.pool(script_type).await;
            if pool.connected > 0 {
                return pool;
            }
            assert!(
                Instant::now() < deadline,
                "{script_type} pool never connected: {pool:?}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn params(script: &str, timeout: u64, retries: u32) -> CreateJobParams {
    CreateJobParams {
        timeout: Some(timeout),
        retries: Some(retries),
        ..CreateJobParams::new(script, "Python")
    }
}

async fn submit(client: &HttpClient, params: CreateJobParams) -> String {
    let id = client.create_job(params).await.expect("create_job");
    client.start_job(id.clone()).await.expect("start_job");
    id
}

/// Polls `get_job` until the job is terminal (the test's own wait; the server never polls).
async fn wait_terminal(client: &HttpClient, id: &str) -> JobInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = client.get_job(id.to_owned()).await.expect("get_job");
        if job.status.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "job never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_status(client: &HttpClient, id: &str, status: JobStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get_job_status(id.to_owned()).await.expect("status") != status {
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Over `tcp://`, with no `hello` setting: the first connection's `hello` is refused
/// (rrq closes it), the pool falls back to plain v1 and remembers it, and every outcome
/// of the protocol maps as it does for hero's own runners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rrq_runner_over_tcp_serves_every_outcome_with_no_flag() {
    let port = hero_testkit::free_tcp_port();
    let _runner = rrq_tcp_runner(port);
    wait_listening(port, "rrq-test-runner").await;
    let server = Server::start(&["--runner", &format!("Python=tcp://127.0.0.1:{port}")]).await;
    let client = server.client();

    // success
    let out = client
        .run_job(
            "echo hi from rrq".into(),
            "Python".into(),
            None,
            Some(10),
            None,
        )
        .await
        .expect("run_job");
    assert_eq!(out, "hi from rrq");
    let pool = server.pool("Python").await;
    assert_eq!(
        (
            pool.hello.as_str(),
            pool.protocol.as_deref(),
            pool.connected
        ),
        ("auto", Some("v1"), 1),
        "{pool:?}"
    );
    assert!(
        server.log().contains("runner refused hello"),
        "the fallback is logged:\n{}",
        server.log()
    );

    // error: not retried past its retries, message kept
    let id = submit(&client, params("fail boom", 10, 0)).await;
    let job = wait_terminal(&client, &id).await;
    assert_eq!(job.status, JobStatus::Error);
    let error = job.error.expect("an error");
    assert!(error.message.contains("boom"), "{error:?}");
    assert_eq!(job.attempt, 1);

    // retry with retry_after_seconds: honoured, then success on the next attempt
    let id = submit(&client, params("retry 0.4", 10, 2)).await;
    let job = wait_terminal(&client, &id).await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    assert_eq!(job.output.as_deref(), Some("ok on attempt 2"));
    let took = job.finished_at.expect("finished_at") - job.created_at;
    assert!(
        took >= chrono::Duration::milliseconds(400),
        "retry_after_seconds not honoured: {took}"
    );

    // timeout: rrq answers `timeout` at the request's deadline
    let id = submit(&client, params("sleep 30", 1, 0)).await;
    let job = wait_terminal(&client, &id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.expect("error").error_type, "timeout");

    // cancel: stop_job sends a cancel frame, rrq answers `cancelled`
    let id = submit(&client, params("sleep 30", 60, 0)).await;
    wait_status(&client, &id, JobStatus::Started).await;
    let stopped = Instant::now();
    client.stop_job(id.clone()).await.expect("stop_job");
    let job = wait_terminal(&client, &id).await;
    assert_eq!(job.error.expect("error").error_type, "cancelled");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );

    // 50 jobs at once on the one connection, each gets its own answer
    let calls = (0..50).map(|i| {
        let client = client.clone();
        async move {
            let out = client
                .run_job(
                    format!("echo job {i}"),
                    "Python".into(),
                    None,
                    Some(20),
                    None,
                )
                .await
                .expect("run_job");
            assert_eq!(out, format!("job {i}"));
        }
    });
    futures::future::join_all(calls).await;
    let pool = server.pool("Python").await;
    assert_eq!(pool.connected, 1, "still the same one connection: {pool:?}");
    assert_eq!(
        pool.restarts, 1,
        "one refused hello, then no reconnect: {pool:?}"
    );
}

/// The request frame as a v1 runner reads it: the caller's `traceparent` in
/// `trace_context`, the queue under the configured prefix, the time the job was queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_carries_the_callers_trace_the_prefix_and_the_enqueue_time() {
    let port = hero_testkit::free_tcp_port();
    let _runner = rrq_tcp_runner(port);
    wait_listening(port, "rrq-test-runner").await;
    let server = Server::start(&[
        "--redis-prefix",
        "tenant7",
        "--runner",
        &format!("Python=tcp://127.0.0.1:{port}"),
    ])
    .await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(traceparent));
    let traced = HttpClientBuilder::default()
        .set_headers(headers)
        .build(&server.url)
        .expect("client");

    let before = Utc::now() - chrono::Duration::milliseconds(5);
    let out = traced
        .run_job("context".into(), "Python".into(), None, Some(10), None)
        .await
        .expect("run_job");
    let after = Utc::now() + chrono::Duration::milliseconds(5);
    let seen: Value = serde_json::from_str(&out).expect("the runner answers JSON");
    let context = &seen["context"];
    assert_eq!(
        context["trace_context"]["traceparent"], traceparent,
        "{seen}"
    );
    assert_eq!(
        context["queue_name"], "tenant7:q:work:type:Python",
        "{seen}"
    );
    assert_eq!(context["attempt"], 1);
    let enqueued: DateTime<Utc> = context["enqueue_time"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("enqueue_time is RFC 3339");
    assert!(
        before <= enqueued && enqueued <= after,
        "{enqueued} not in [{before}, {after}]"
    );
    let job_id = context["job_id"].as_str().expect("job_id").to_owned();
    let job = server.client().get_job(job_id).await.expect("get_job");
    assert_eq!(
        job.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(job.queued_at, Some(enqueued));

    // Without a header (or with an invalid one) the job starts a trace of its own.
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static("00-not-a-trace-01"));
    let untraced = HttpClientBuilder::default()
        .set_headers(headers)
        .build(&server.url)
        .expect("client");
    let out = untraced
        .run_job("context".into(), "Python".into(), None, Some(10), None)
        .await
        .expect("run_job");
    let seen: Value = serde_json::from_str(&out).expect("JSON");
    let own = seen["context"]["trace_context"]["traceparent"]
        .as_str()
        .expect("a generated traceparent");
    assert!(own.starts_with("00-") && own.len() == 55, "{own}");
    assert!(!own.contains("0af7651916cd43dd8448eb211c80319c"));
}

/// The managed TCP transport: the supervisor spawns the rrq runner with
/// `--tcp-socket 127.0.0.1:PORT` and `RRQ_RUNNER_TCP_SOCKET`, then connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rrq_runner_spawned_by_the_managed_tcp_transport() {
    let server = Server::start(&["--runner", &format!("Python=tcp-managed:{RRQ_RUNNER}")]).await;
    let client = server.client();
    let out = client
        .run_job("echo managed".into(), "Python".into(), None, Some(10), None)
        .await
        .expect("run_job");
    assert_eq!(out, "managed");
    let id = submit(&client, params("retry 0.1", 10, 2)).await;
    assert_eq!(
        wait_terminal(&client, &id).await.output.as_deref(),
        Some("ok on attempt 2")
    );
    let pool = server.pool("Python").await;
    assert_eq!(pool.transport, "tcp-managed");
    assert_eq!(pool.protocol.as_deref(), Some("v1"), "{pool:?}");
}

/// A plain v1 runner over stdio that dies on an unknown frame: the first child exits on
/// `hello`, the pool respawns it without, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_v1_runner_over_stdio_that_dies_on_hello() {
    let server = Server::start(&["--runner", &format!("SAL=stdio:{RRQ_RUNNER} --stdio")]).await;
    let client = server.client();
    let out = client
        .run_job("echo over stdio".into(), "SAL".into(), None, Some(10), None)
        .await
        .expect("run_job");
    assert_eq!(out, "over stdio");
    let pool = server.pool("SAL").await;
    assert_eq!(
        (pool.protocol.as_deref(), pool.restarts),
        (Some("v1"), 1),
        "{pool:?}"
    );
    // An explicit `hello=off` never sends it: no refused start at all.
    let server = Server::start(&[
        "--runner",
        &format!("SAL=stdio:{RRQ_RUNNER} --stdio;hello=off"),
    ])
    .await;
    let out = server
        .client()
        .run_job("echo off".into(), "SAL".into(), None, Some(10), None)
        .await
        .expect("run_job");
    assert_eq!(out, "off");
    let pool = server.pool("SAL").await;
    assert_eq!(
        (pool.hello.as_str(), pool.restarts, pool.failures),
        ("off", 0, 0),
        "{pool:?}"
    );
}

/// The runner killed: jobs submitted meanwhile stay queued; it comes back on the same
/// port, the supervisor reconnects (still plain v1) and runs them, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rrq_runner_killed_and_restarted_runs_the_queued_jobs() {
    let port = hero_testkit::free_tcp_port();
    let runner = rrq_tcp_runner(port);
    wait_listening(port, "rrq-test-runner").await;
    let server = Server::start(&["--runner", &format!("Python=tcp://127.0.0.1:{port}")]).await;
    let client = server.client();
    server.wait_connected("Python").await;
    drop(runner);

    let deadline = Instant::now() + Duration::from_secs(10);
    while server.pool("Python").await.connected > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead runner still shows connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(&client, params(&format!("echo queued {i}"), 10, 0)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let job = client.get_job(id.clone()).await.expect("get_job");
        assert_eq!(
            (job.status, job.attempt),
            (JobStatus::Dispatched, 0),
            "{job:?}"
        );
    }
    let pool = server.pool("Python").await;
    assert!(pool.last_error.is_some() && pool.failures >= 1, "{pool:?}");

    let _runner = rrq_tcp_runner(port);
    for (i, id) in ids.iter().enumerate() {
        let job = wait_terminal(&client, id).await;
        assert_eq!(job.status, JobStatus::Finished, "{job:?}");
        assert_eq!(job.output, Some(format!("queued {i}")));
        assert_eq!(job.attempt, 1);
    }
}

/// A runner that keeps breaking the protocol (it writes text, not frames, and exits) is
/// reported by `list_runners` with the reason, and its jobs stay queued, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_refuses_the_protocol_is_reported_and_loses_no_job() {
    let echo = which("echo");
    let server = Server::start(&[
        "--runner",
        &format!("V=stdio:{} this is not a frame", echo.display()),
    ])
    .await;
    let client = server.client();
    let id = submit(
        &client,
        CreateJobParams {
            retries: Some(0),
            ..CreateJobParams::new("println('hi')", "V")
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool = loop {
        let pool = server.pool("V").await;
        if pool.failures >= 3 {
            break pool;
        }
        assert!(Instant::now() < deadline, "{pool:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pool.connected, 0, "{pool:?}");
    let why = pool.last_error.expect("a reason");
    assert!(!why.is_empty());
    let job = client.get_job(id.clone()).await.expect("get_job");
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Dispatched, 0),
        "{job:?}"
    );
    // A caller waiting on such a job gets the timeout answer; the job stays queued.
    let err = client
        .run_job("println('x')".into(), "V".into(), None, Some(1), None)
        .await
        .expect_err("no runner serves V");
    assert_eq!(
        ErrorAnswer::from_client_error(&err).map(|a| a.code),
        Some(-32002),
        "{err:?}"
    );
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| Path::is_file(p))
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
}
