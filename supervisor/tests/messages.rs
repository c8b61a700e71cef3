//! Messages (`message.create/load`) against a real server over HTTP, with SAL and
//! Python jobs run by the built-in runner: a message's jobs run in dependency order and
//! it goes Dispatched -> Acknowledged -> Processed with its jobs' logs; a failing job
//! makes it Error; `timeout_ack` and `timeout_result` end it Error server-side and stop
//! its jobs; bad input and roles. On the memory store and on Redis, where a deadline
//! set before a restart is enforced after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
const EXECUTOR: &str = "t-executor"; // actor 2
const READER: &str = "t-reader"; // actor 3
const OUTSIDER: &str = "t-outsider"; // actor 4
const CONTEXT: u32 = 7;

/// A server whose SAL and Python jobs run on the built-in runner (nothing serves
/// OSIS: those jobs stay queued).
async fn start(redis: Option<&RedisServer>) -> RunningServer {
    let builtin = PoolConfig::new(
        "builtin",
        vec![ScriptType::Sal, ScriptType::Python],
        Transport::Stdio {
            program: env!("CARGO_BIN_EXE_hero-supervisor").to_owned(),
            args: vec!["runner".to_owned(), "--stdio".to_owned()],
        },
    );
    let tokens = [(2, EXECUTOR), (3, READER), (4, OUTSIDER)]
        .iter()
        .map(|(id, t)| TokenGrant::from_token(t, Grant::Actor(*id)).expect("a token"))
        .collect();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis.map(RedisServer::url),
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

async fn call(c: &HttpClient, method: &str, params: Value) -> Result<Value, ClientError> {
    let mut p = ArrayParams::new();
    p.insert(params).expect("serializable");
    c.request(method, p).await
}

/// The error answer's code and `data.code`.
#[track_caller]
fn refused(r: Result<Value, ClientError>) -> (i32, String) {
    match r {
        Err(ClientError::Call(e)) => {
            let data: Value = e
                .data()
                .map(|d| serde_json::from_str(d.get()).expect("json data"))
                .unwrap_or(Value::Null);
            (
                e.code(),
                data["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn job(id: u32, script: &str, script_type: &str, depends: &[u32]) -> Value {
    json!({"id": id, "caller_id": 0, "context_id": CONTEXT, "script": script,
        "script_type": script_type, "timeout": 0, "retries": 0, "env_vars": {},
        "prerequisites": [], "depends": depends})
}

fn message(id: u32, jobs: Vec<Value>, timeout_ack: u32, timeout_result: u32) -> Value {
    json!({"context_id": CONTEXT, "message": {"id": id, "caller_id": 0,
        "context_id": CONTEXT, "message": "run these", "message_type": "Sal",
        "message_format_type": "Text", "timeout": 30, "timeout_ack": timeout_ack,
        "timeout_result": timeout_result, "job": jobs, "logs": ["sent by the test"]}})
}

fn key(id: u32) -> Value {
    json!({"context_id": CONTEXT, "caller_id": 0, "id": id})
}

/// Polls `message.load` until `check` holds (30 s at most).
async fn wait_message(
    c: &HttpClient,
    id: u32,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = call(c, "message.load", key(id))
            .await
            .expect("message.load");
        if check(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {id} never {what}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_up(admin: &HttpClient) {
    call(
        admin,
        "context.create",
        json!({"context": {"id": CONTEXT, "admins": [1], "executors": [2], "readers": [3]}}),
    )
    .await
    .expect("context.create");
}

async fn check_messages(server: &RunningServer) {
    let admin = client(server, ADMIN);
    let executor = client(server, EXECUTOR);
    let reader = client(server, READER);
    let outsider = client(server, OUTSIDER);
    set_up(&admin).await;

    // Two jobs, the second after the first: delivered, then processed, with logs.
    let created = call(
        &executor,
        "message.create",
        message(
            1,
            vec![
                job(11, "print(\"first\"); 40 + 2", "Sal", &[]),
                job(12, "print(\"second\"); \"done\"", "sal", &[11]),
            ],
            10,
            30,
        ),
    )
    .await
    .expect("message.create");
    assert_eq!(created["caller_id"], 2, "the caller's actor id");
    assert_eq!(created["job"].as_array().map(Vec::len), Some(2));
    assert_eq!(created["job"][1]["depends"], json!([11]));
    assert_eq!(created["job"][0]["timeout"], 30, "the message's timeout");
    // Log lines are written beside the outcome, not with it: wait for both.
    let done = wait_message(&reader, 1, "processed with its logs", |m| {
        m["status"] == "Processed" && m["logs"].as_array().is_some_and(|l| l.len() == 3)
    })
    .await;
    assert_eq!(done["transport_status"], "Read");
    assert_eq!(done["job"][0]["result"], json!({"output": "42"}));
    assert_eq!(done["job"][1]["result"], json!({"output": "done"}));
    let logs: Vec<&str> = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        logs,
        ["sent by the test", "[job 11] first", "[job 12] second"],
        "{done}"
    );
    // The jobs are coordinator jobs of the context.
    let j = call(&reader, "job.load", key(12)).await.expect("job.load");
    assert_eq!(j["status"], "Finished");
    let first = call(&reader, "job.load", key(11)).await.expect("job.load");
    let second_backing = call(&admin, "get_job", j["job_id"].clone())
        .await
        .expect("get_job");
    assert!(
        time(&second_backing, "started_at") >= time_of_finish(&admin, &first).await,
        "the dependent started after its dependency finished"
    );

    // A job that fails makes the message Error.
    call(
        &executor,
        "message.create",
        message(2, vec![job(21, "throw \"boom\"", "Sal", &[])], 0, 0),
    )
    .await
    .expect("message.create");
    let failed = wait_message(&reader, 2, "failed", |m| m["status"] == "Error").await;
    assert_eq!(failed["transport_status"], "Failed");
    assert_eq!(failed["job"][0]["status"], "Error");

    // timeout_ack: nothing serves OSIS, so no runner takes the job within 1 s.
    call(
        &executor,
        "message.create",
        message(3, vec![job(31, "1", "Osis", &[])], 1, 0),
    )
    .await
    .expect("message.create");
    let early = call(&reader, "message.load", key(3))
        .await
        .expect("message.load");
    assert_eq!(early["status"], "Dispatched");
    assert_eq!(early["transport_status"], "Sent", "queued for a runner");
    // The server stops the jobs, then records why: wait for the reason.
    let late = wait_message(&reader, 3, "timed out", |m| {
        m["status"] == "Error" && m.to_string().contains("[message] timeout_ack")
    })
    .await;
    assert_eq!(late["transport_status"], "Failed");
    let last = late["logs"].as_array().and_then(|l| l.last()).cloned();
    assert!(
        last.as_ref()
            .and_then(Value::as_str)
            .is_some_and(|l| l.starts_with("[message] timeout_ack")),
        "{late}"
    );
    let stopped = call(&reader, "job.load", key(31)).await.expect("job.load");
    assert_eq!(stopped["status"], "Error", "its job was stopped: {stopped}");
    assert_eq!(stopped["result"]["error_type"], "cancelled");

    // timeout_result: taken at once (Acknowledged), still running after 3 s.
    call(
        &executor,
        "message.create",
        message(
            4,
            vec![job(41, "import time\ntime.sleep(20)", "Python", &[])],
            5,
            3,
        ),
    )
    .await
    .expect("message.create");
    wait_message(&reader, 4, "acknowledged", |m| {
        m["status"] == "Acknowledged"
    })
    .await;
    let late = wait_message(&reader, 4, "timed out", |m| {
        m["status"] == "Error" && m.to_string().contains("[message] timeout_result")
    })
    .await;
    assert_eq!(late["transport_status"], "Failed");
    let stopped = wait_message(&reader, 4, "stopped its job", |m| {
        m["job"][0]["status"] == "Error"
    })
    .await;
    assert_eq!(stopped["job"][0]["result"]["error_type"], "cancelled");

    // Bad input, conflicts and roles.
    let (c, d) = refused(
        call(
            &executor,
            "message.create",
            message(1, vec![job(51, "1", "Sal", &[])], 0, 0),
        )
        .await,
    );
    assert_eq!(
        (c, d.as_str()),
        (-32004, "conflict"),
        "a message is dispatched once"
    );
    let cases = [
        (
            message(
                5,
                vec![job(52, "1", "Sal", &[]), job(52, "2", "Sal", &[])],
                0,
                0,
            ),
            -32602,
        ),
        (message(5, vec![job(53, "1", "Sal", &[99])], 0, 0), -32020),
        (
            message(
                5,
                vec![job(54, "1", "Sal", &[55]), job(55, "1", "Sal", &[54])],
                0,
                0,
            ),
            -32021,
        ),
        (message(5, vec![job(56, "1", "Cobol", &[])], 0, 0), -32602),
        (message(5, vec![job(11, "1", "Sal", &[])], 0, 0), -32004),
    ];
    for (params, want) in cases {
        let (c, _) = refused(call(&executor, "message.create", params.clone()).await);
        assert_eq!(c, want, "{params}");
    }
    let mut bad_format = message(5, vec![], 0, 0);
    bad_format["message"]["message_format_type"] = json!("Pdf");
    assert_eq!(
        refused(call(&executor, "message.create", bad_format).await).0,
        -32602
    );
    let mut other_context = message(5, vec![], 0, 0);
    other_context["message"]["context_id"] = json!(8);
    assert_eq!(
        refused(call(&executor, "message.create", other_context).await).0,
        -32602
    );
    assert!(
        call(&admin, "message.load", key(5)).await.is_err(),
        "nothing of a refused message was stored"
    );
    assert_eq!(
        refused(call(&reader, "message.create", message(6, vec![], 0, 0)).await).0,
        -32006
    );
    assert_eq!(
        refused(call(&outsider, "message.create", message(6, vec![], 0, 0)).await).0,
        -32001
    );
    assert_eq!(
        refused(call(&outsider, "message.load", key(1)).await).0,
        -32001
    );
    assert_eq!(
        refused(call(&reader, "message.load", key(99)).await).0,
        -32001
    );
    // A message without jobs has nothing to wait for.
    let empty = call(&executor, "message.create", message(6, vec![], 0, 0))
        .await
        .expect("an empty message");
    assert_eq!(empty["status"], "Processed");
}

fn time(job: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    serde_json::from_value(job[field].clone()).unwrap_or_else(|e| panic!("{field}: {e} {job}"))
}

async fn time_of_finish(
    admin: &HttpClient,
    coordinator_job: &Value,
) -> chrono::DateTime<chrono::Utc> {
    let j = call(admin, "get_job", coordinator_job["job_id"].clone())
        .await
        .expect("get_job");
    time(&j, "finished_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_deliver_their_jobs_and_keep_their_deadlines_in_memory() {
    let server = start(None).await;
    check_messages(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_deliver_their_jobs_and_keep_their_deadlines_on_redis() {
    let redis = RedisServer::start();
    let server = start(Some(&redis)).await;
    check_messages(&server).await;
    server.stop().await;
}

/// A deadline is the store's, not one process's: set before a restart, enforced after
/// it, and the message reads the same from the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_set_before_a_restart_is_enforced_after_it() {
    let redis = RedisServer::start();
    let first = start(Some(&redis)).await;
    let admin = client(&first, ADMIN);
    set_up(&admin).await;
    let created = call(
        &admin,
        "message.create",
        message(7, vec![job(71, "1", "Osis", &[])], 2, 0),
    )
    .await
    .expect("message.create");
    assert_eq!(created["status"], "Dispatched");
    first.stop().await;

    let second = start(Some(&redis)).await;
    let reader = client(&second, READER);
    let m = wait_message(&reader, 7, "timed out after the restart", |m| {
        m["status"] == "Error" && m.to_string().contains("[message] timeout_ack")
    })
    .await;
    assert_eq!(m["message"], "run these");
    assert_eq!(m["job"][0]["result"]["error_type"], "cancelled");
    second.stop().await;
}
