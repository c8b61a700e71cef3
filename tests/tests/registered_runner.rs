//! A runner built on the SDK (`hero-test-runner`, listening on TCP) registered over
//! JSON-RPC (`runner.create`) with a server that has no runner pools at all: it serves
//! jobs at once, again after the server restarts on the same Redis, and a replacement
//! of the registration lets the job the old runner runs finish there exactly once
//! (the runner's own ledger, `once DIR`, says so) while new jobs go to the new one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::SupervisorConfig;
use hero_testkit::RedisServer;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::http_client::HttpClient;
use serde_json::{Value, json};

const TEST_RUNNER: &str = env!("CARGO_BIN_EXE_hero-test-runner");

/// `hero-test-runner --tcp-socket 127.0.0.1:<free port>`, killed on drop.
struct TcpRunner {
    child: Child,
    port: u16,
}

impl TcpRunner {
    fn start() -> TcpRunner {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(TEST_RUNNER)
            .args(["--tcp-socket", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn hero-test-runner");
        TcpRunner { child, port }
    }
}

impl Drop for TcpRunner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on `redis` without any configured runner pool (no token: the caller is
/// the local server admin).
async fn start(redis: &RedisServer) -> RunningServer {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        redis_url: Some(redis.url()),
        rpc: RpcConfig::default(),
        supervisor: SupervisorConfig {
            pools: Vec::new(),
            ..SupervisorConfig::with_runner_command("unused", Vec::new())
        },
        ..ServeConfig::default()
    };
    server::start(config).await.expect("start the server")
}

async fn call(c: &HttpClient, method: &str, params: Vec<Value>) -> Value {
    let mut p = ArrayParams::new();
    for v in params {
        p.insert(v).expect("serializable");
    }
    c.request(method, p)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn register(port: u16) -> Value {
    json!({"context_id": 3, "runner": {"id": 8, "pubkey": "", "address": "127.0.0.1",
        "topic": "v", "local": true, "port": port, "script_types": ["V"]}})
}

/// `run_job` of a V script (only the registered runner serves V), 20 s at most.
async fn run_v(c: &HttpClient, script: &str) -> Value {
    call(
        c,
        "run_job",
        vec![json!(script), json!("V"), json!(null), json!(20)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_runner_registered_over_rpc_serves_jobs_across_restarts_and_replacement() {
    let redis = RedisServer::start();
    let ledger = tempfile::tempdir().expect("a temp dir");
    let first = TcpRunner::start();
    let server = start(&redis).await;
    let c = http_client(&format!("http://{}", server.addr()), None).expect("client");
    call(&c, "runner.create", vec![register(first.port)]).await;
    assert_eq!(run_v(&c, "echo registered").await, "registered");

    server.stop().await;
    let server = start(&redis).await;
    let c = http_client(&format!("http://{}", server.addr()), None).expect("client");
    assert_eq!(run_v(&c, "echo restarted").await, "restarted");

    // A job that runs 1.5 s on the first runner; the registration moves meanwhile.
    let slow = call(
        &c,
        "create_job",
        vec![json!({"script": "sleep 1.5", "script_type": "V", "timeout": 30, "retries": 0})],
    )
    .await;
    call(&c, "start_job", vec![slow.clone()]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while call(&c, "get_job_status", vec![slow.clone()]).await != "Started" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = TcpRunner::start();
    call(&c, "runner.create", vec![register(second.port)]).await;
    // New work goes to the new runner while the old one finishes its job: `once`
    // fails if a job runs twice.
    let dir = ledger.path().display();
    assert!(
        run_v(&c, &format!("once {dir}"))
            .await
            .as_str()
            .is_some_and(|w| w.starts_with("hero-")),
        "a worker id"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = call(&c, "get_job", vec![slow.clone()]).await;
        if job["status"] == "Finished" {
            assert_eq!(job["output"], "slept");
            assert_eq!(job["attempt"], 1, "not lost, not run again: {job}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow job never finished: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    assert_eq!(run_v(&c, "echo second").await, "second");
    server.stop().await;
}
