//! A runner built on the SDK (`hero-test-runner`, listening on TCP) registered over
//! JSON-RPC (`runner.create`) in context 3: it serves that context's jobs at once, again
//! after the server restarts on the same Redis, and a replacement of the registration
//! lets the job the old runner runs finish there exactly once (the runner's own ledger,
//! `once DIR`, says so) while new jobs go to the new one. And it serves its context
//! only: another context's jobs of its type run on the configured pool, its own never
//! do, and a replacement that drops the type sends the waiting ones back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::ScriptType;
use hero_supervisor::pool::{PoolConfig, Transport};
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
    start_with(Some(redis), Vec::new()).await
}

/// A server on `redis` (or the memory store) with `pools`.
async fn start_with(redis: Option<&RedisServer>, pools: Vec<PoolConfig>) -> RunningServer {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis.map(RedisServer::url),
        rpc: RpcConfig::default(),
        supervisor: SupervisorConfig {
            pools,
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

/// `run_job` of a V script in context 3 (only the registered runner serves V there),
/// 20 s at most.
async fn run_v(c: &HttpClient, script: &str) -> Value {
    run_v_in(c, "3", script).await
}

/// `run_job` of a V script in `context`, 20 s at most.
async fn run_v_in(c: &HttpClient, context: &str, script: &str) -> Value {
    call(
        c,
        "run_job",
        vec![
            json!(script),
            json!("V"),
            json!(null),
            json!(20),
            json!(context),
        ],
    )
    .await
}

/// The pool that ran job `id` (`get_job`'s `runner` is `<instance>/<pool>`).
async fn ran_on(c: &HttpClient, id: &Value) -> String {
    let job = call(c, "get_job", vec![id.clone()]).await;
    let runner = job["runner"].as_str().unwrap_or_default();
    runner.rsplit('/').next().unwrap_or_default().to_owned()
}

/// A created and started V job in `context` running `script`; its id.
async fn submit_v(c: &HttpClient, context: &str, script: &str) -> Value {
    let id = call(
        c,
        "create_job",
        vec![
            json!({"script": script, "script_type": "V", "context_id": context,
            "timeout": 20, "retries": 0}),
        ],
    )
    .await;
    call(c, "start_job", vec![id.clone()]).await;
    id
}

/// Waits for job `id` to end; its `get_job`.
async fn ended(c: &HttpClient, id: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = call(c, "get_job", vec![id.clone()]).await;
        if job["status"] == "Finished" || job["status"] == "Error" {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never ended: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A registered runner serves its own context only, on both stores: context 3's V jobs
/// run on it, context 4's and the default context's on the configured pool. Replaced by
/// a registration without V, context 3's waiting V jobs are handed to the shared claim
/// and the configured pool runs them: nothing is lost.
async fn a_registered_runner_serves_its_context_only(redis: Option<&RedisServer>) {
    let runner = TcpRunner::start();
    let shared = PoolConfig::new(
        "shared",
        vec![ScriptType::V],
        Transport::Stdio {
            program: TEST_RUNNER.to_owned(),
            args: Vec::new(),
        },
    );
    let server = start_with(redis, vec![shared]).await;
    let c = http_client(&format!("http://{}", server.addr()), None).expect("client");
    call(&c, "runner.create", vec![register(runner.port)]).await;
    // Each runner is told the queue the job came from: its context's (a lane for
    // context 3), or the default namespace's.
    assert_eq!(run_v_in(&c, "3", "queue").await, "hero:{c3}:q:work:type:V");
    assert_eq!(run_v_in(&c, "4", "queue").await, "hero:{c4}:q:work:type:V");
    assert_eq!(run_v_in(&c, "", "queue").await, "hero:q:work:type:V");
    for (context, pool) in [("3", "ctx3.runner8."), ("4", "shared"), ("", "shared")] {
        for i in 0..3 {
            let id = submit_v(&c, context, &format!("echo {context}-{i}")).await;
            let job = ended(&c, &id).await;
            assert_eq!(job["output"], format!("{context}-{i}"), "{job}");
            let ran = ran_on(&c, &id).await;
            assert!(ran.starts_with(pool), "context {context:?} ran on {ran}");
        }
    }
    // The registered runner goes away: context 3's V jobs wait on its lane, never
    // taken by the shared pool. Then the registration is replaced by one serving Osis
    // only: the lane closes, the shared pool takes the waiting ones, once each.
    drop(runner);
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(submit_v(&c, "3", &format!("echo w{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &waiting {
        assert_eq!(
            call(&c, "get_job_status", vec![id.clone()]).await,
            "Dispatched"
        );
    }
    let stats = call(&c, "stats", vec![]).await;
    assert_eq!(
        stats["lanes"],
        json!([{"context_id": 3, "script_type": "V", "queued": 3}]),
        "{stats}"
    );
    let mut osis = register(1);
    osis["runner"]["script_types"] = json!(["Osis"]);
    call(&c, "runner.create", vec![osis]).await;
    for (i, id) in waiting.iter().enumerate() {
        let job = ended(&c, id).await;
        assert_eq!(job["status"], "Finished", "{job}");
        assert_eq!(job["output"], format!("w{i}"), "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
        assert_eq!(ran_on(&c, id).await, "shared", "waiting job {i}");
    }
    let stats = call(&c, "stats", vec![]).await;
    assert_eq!(
        stats["lanes"],
        json!([{"context_id": 3, "script_type": "OSIS", "queued": 0}]),
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_runner_serves_its_context_only_on_memory() {
    a_registered_runner_serves_its_context_only(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_runner_serves_its_context_only_on_redis() {
    let redis = RedisServer::start();
    a_registered_runner_serves_its_context_only(Some(&redis)).await;
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
        vec![
            json!({"script": "sleep 1.5", "script_type": "V", "timeout": 30, "retries": 0,
            "context_id": "3"}),
        ],
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
