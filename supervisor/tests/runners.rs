//! Runners registered at run time (`runner.create/load`) against real servers on one
//! private Redis, with real runner processes (the built-in runner listening on TCP,
//! `hero-supervisor runner --tcp-socket`): a registered runner serves jobs of its
//! script types without a restart, again after the supervisor restarts, and on another
//! instance; replacing the registration drains the old runner without losing the job
//! it runs. Plus bad input and who may register what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::ScriptType;
use hero_supervisor::pool::{PoolConfig, Transport};
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::auth::{Grant, TokenGrant};
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::SupervisorConfig;
use hero_testkit::RedisServer;
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::http_client::HttpClient;
use serde_json::{Value, json};

const ADMIN: &str = "t-admin";
const CTX_ADMIN: &str = "t-ctx-admin"; // actor 1
const EXECUTOR: &str = "t-executor"; // actor 2
const CONTEXT: u32 = 7;

/// The built-in runner listening on a free loopback port; killed on drop.
struct RunnerProcess {
    child: Child,
    port: u16,
}

impl RunnerProcess {
    fn start() -> RunnerProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_hero-supervisor"))
            .args(["runner", "--tcp-socket", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the runner");
        RunnerProcess { child, port }
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on `redis` whose only configured pool runs SAL: OSIS and Python jobs run
/// only on registered runners.
async fn start(redis: &RedisServer) -> RunningServer {
    let builtin = PoolConfig::new(
        "builtin-sal",
        vec![ScriptType::Sal],
        Transport::Stdio {
            program: env!("CARGO_BIN_EXE_hero-supervisor").to_owned(),
            args: vec!["runner".to_owned(), "--stdio".to_owned()],
        },
    );
    let tokens = [(1, CTX_ADMIN), (2, EXECUTOR)]
        .iter()
        .map(|(id, t)| TokenGrant::from_token(t, Grant::Actor(*id)).expect("a token"))
        .collect();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        redis_url: Some(redis.url()),
        rpc: RpcConfig {
            auth_token: Some(ADMIN.to_owned()),
            tokens,
            ..RpcConfig::default()
        },
        supervisor: SupervisorConfig {
            pools: vec![builtin],
            ..SupervisorConfig::with_builtin_runners()
        },
        ..ServeConfig::default()
    };
    server::start(config).await.expect("start the server")
}

fn client(server: &RunningServer, token: &str) -> HttpClient {
    http_client(&format!("http://{}", server.addr()), Some(token)).expect("client")
}

async fn call(c: &HttpClient, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
    let mut p = ArrayParams::new();
    for v in params {
        p.insert(v).expect("serializable");
    }
    c.request(method, p).await
}

#[track_caller]
fn code(r: Result<Value, ClientError>) -> i32 {
    match r {
        Err(ClientError::Call(e)) => e.code(),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn registration(id: u32, port: Option<u16>, types: &[&str]) -> Value {
    let mut runner = json!({"id": id, "pubkey": "02aa", "address": "127.0.0.1",
        "topic": "runners", "local": true});
    if let Some(port) = port {
        runner["port"] = json!(port);
        runner["script_types"] = json!(types);
    }
    json!({"context_id": CONTEXT, "runner": runner})
}

/// `run_job` of an OSIS script in the runners' context (only registered runners serve
/// OSIS), 20 s at most.
async fn run_osis(c: &HttpClient) -> Result<Value, ClientError> {
    call(
        c,
        "run_job",
        vec![
            json!("40 + 2"),
            json!("OSIS"),
            json!(null),
            json!(20),
            json!(CONTEXT.to_string()),
        ],
    )
    .await
}

/// The pools of `list_runners` whose name starts with `prefix`.
async fn pools(c: &HttpClient, prefix: &str) -> Vec<Value> {
    let all = call(c, "list_runners", vec![]).await.expect("list_runners");
    all.as_array()
        .expect("an array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .cloned()
        .collect()
}

/// Polls until `check` holds (20 s at most).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_runner_serves_jobs_now_after_a_restart_and_on_other_instances() {
    let redis = RedisServer::start();
    let first = RunnerProcess::start();
    let a = start(&redis).await;
    let admin = client(&a, ADMIN);

    let answer = call(
        &admin,
        "runner.create",
        vec![registration(1, Some(first.port), &["osis", "Python"])],
    )
    .await
    .expect("runner.create");
    assert_eq!(
        answer["endpoint"],
        format!("tcp://127.0.0.1:{}", first.port)
    );
    assert_eq!(answer["script_types"], json!(["Osis", "Python"]));
    assert_eq!(answer["pool"], "ctx7.runner1");
    assert!(answer.get("auth_token").is_none());
    let loaded = call(
        &admin,
        "runner.load",
        vec![json!({"context_id": CONTEXT, "id": 1})],
    )
    .await
    .expect("runner.load");
    assert_eq!(loaded, answer);

    // Served without a restart.
    assert_eq!(run_osis(&admin).await.expect("an OSIS job"), "42");
    let served = pools(&admin, "ctx7.runner1.").await;
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["transport"], "tcp");

    // Another instance on the same Redis connects to it too, by itself.
    let b = start(&redis).await;
    let admin_b = client(&b, ADMIN);
    eventually("instance b attached the runner", || async {
        pools(&admin_b, "ctx7.runner1.").await.len() == 1
    })
    .await;
    assert_eq!(run_osis(&admin_b).await.expect("OSIS on b"), "42");
    b.stop().await;

    // A restart reads the registration back.
    a.stop().await;
    let a = start(&redis).await;
    let admin = client(&a, ADMIN);
    assert_eq!(run_osis(&admin).await.expect("OSIS after a restart"), "42");

    // Replacing it: a job running on the old runner finishes there (not lost, not run
    // twice), new jobs go to the new runner, and the old pool goes away.
    let slow = call(
        &admin,
        "create_job",
        vec![
            json!({"script": "import time\ntime.sleep(2)\nprint('slow')",
            "script_type": "Python", "timeout": 30, "retries": 0,
            "context_id": CONTEXT.to_string()}),
        ],
    )
    .await
    .expect("create_job");
    call(&admin, "start_job", vec![slow.clone()])
        .await
        .expect("start_job");
    eventually("the slow job started", || async {
        call(&admin, "get_job_status", vec![slow.clone()])
            .await
            .ok()
            == Some(json!("Started"))
    })
    .await;
    let second = RunnerProcess::start();
    let replaced = call(
        &admin,
        "runner.create",
        vec![registration(1, Some(second.port), &["Osis", "Python"])],
    )
    .await
    .expect("runner.create again");
    assert_eq!(
        replaced["endpoint"],
        format!("tcp://127.0.0.1:{}", second.port)
    );
    assert_eq!(replaced["created_at"], answer["created_at"]);
    eventually("the slow job finished", || async {
        call(&admin, "get_job_status", vec![slow.clone()])
            .await
            .ok()
            == Some(json!("Finished"))
    })
    .await;
    let job = call(&admin, "get_job", vec![slow.clone()])
        .await
        .expect("get_job");
    assert_eq!(job["output"], "slow");
    assert_eq!(job["attempt"], 1, "ran once: {job}");
    eventually("the old pool was drained away", || async {
        pools(&admin, "ctx7.runner1.").await.len() == 1
    })
    .await;
    drop(first);
    assert_eq!(
        run_osis(&admin).await.expect("OSIS on the new runner"),
        "42"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_checked_and_kept_to_the_context_admins() {
    let redis = RedisServer::start();
    let server = start(&redis).await;
    let admin = client(&server, ADMIN);
    let ctx_admin = client(&server, CTX_ADMIN);
    let executor = client(&server, EXECUTOR);
    call(
        &admin,
        "context.create",
        vec![json!({"context": {"id": CONTEXT, "admins": [1], "executors": [2], "readers": []}})],
    )
    .await
    .expect("context.create");

    // Bad input: -32602 with the reason.
    let mut bad_address = registration(2, Some(9), &["Osis"]);
    bad_address["runner"]["address"] = json!("runner.example");
    let mut no_types = registration(2, Some(9), &[]);
    no_types["runner"]["script_types"] = json!([]);
    let mut bad_type = registration(2, Some(9), &["Cobol"]);
    bad_type["runner"]["script_types"] = json!(["Cobol"]);
    let mut bad_hello = registration(2, Some(9), &["Osis"]);
    bad_hello["runner"]["hello"] = json!("sometimes");
    let mut bad_port = registration(2, Some(9), &["Osis"]);
    bad_port["runner"]["port"] = json!(70000);
    let mut wrong_shape = registration(2, None, &[]);
    wrong_shape["runner"]["local"] = json!("yes");
    for bad in [
        bad_address,
        no_types,
        bad_type,
        bad_hello,
        bad_port,
        wrong_shape,
    ] {
        assert_eq!(
            code(call(&admin, "runner.create", vec![bad.clone()]).await),
            -32602,
            "{bad}"
        );
    }

    // A context admin registers runners without a port (records); one with a port
    // makes the server connect where it says: a server admin's.
    let record = call(
        &ctx_admin,
        "runner.create",
        vec![registration(3, None, &[])],
    )
    .await
    .expect("a record-only runner");
    assert!(record.get("endpoint").is_none() && record.get("port").is_none());
    assert!(pools(&admin, "ctx7.runner3").await.is_empty());
    assert_eq!(
        code(
            call(
                &ctx_admin,
                "runner.create",
                vec![registration(4, Some(9), &["Osis"])]
            )
            .await
        ),
        -32006
    );
    assert_eq!(
        code(call(&executor, "runner.create", vec![registration(5, None, &[])]).await),
        -32006
    );
    assert_eq!(
        code(
            call(
                &executor,
                "runner.load",
                vec![json!({"context_id": CONTEXT, "id": 3})]
            )
            .await
        ),
        -32006
    );
    assert_eq!(
        code(
            call(
                &ctx_admin,
                "runner.load",
                vec![json!({"context_id": CONTEXT, "id": 99})]
            )
            .await
        ),
        -32001
    );
    assert_eq!(
        code(
            call(
                &ctx_admin,
                "runner.load",
                vec![json!({"context_id": 8, "id": 3})]
            )
            .await
        ),
        -32001,
        "an outsider of context 8 learns nothing"
    );
    server.stop().await;
}
