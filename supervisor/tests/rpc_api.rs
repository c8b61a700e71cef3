//! Every API method over HTTP and over WebSocket with the generated client, each error
//! code from a real bad input, the job-events subscription, limits and the OpenRPC doc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rpc_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::job::{Job, JobId, JobStatus, ScriptType};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::types::{
    CreateJobParams, JobEvent, ListJobsFilter, ListJobsResult, LogRange,
};
use hero_supervisor::rpc::{HeroApiClient, OPENRPC_JSON, RpcConfig, error, rpc_module};
use hero_supervisor::store::{Completion, JobStore};
use hero_testkit::RedisServer;
use jsonrpsee::ws_client::WsClient;
use rpc_support::{TestServer, call_raw, expect_code, post};
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(60);

/// Plays the runner: claims the (only) queued SAL job, logs `lines`, finishes it.
async fn run_like_a_runner(store: &Arc<dyn JobStore>, lines: &[&str], output: &str) -> JobId {
    let claimed = store
        .claim(ScriptType::Sal, 1, "test-runner", LEASE)
        .await
        .unwrap();
    let job = claimed
        .into_iter()
        .next()
        .and_then(|c| c.into_job())
        .expect("a queued job");
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    store.append_logs(job.id, &lines).await.unwrap();
    store
        .complete_one(Completion::finish(job.id, job.attempt, output.to_owned()))
        .await
        .unwrap();
    job.id
}

/// Every method but those that need a runner (run_job, play: see `cli_serve.rs`).
async fn exercise(client: &(impl HeroApiClient + Sync), server: &TestServer) {
    assert_eq!(client.whoami().await.unwrap(), "anonymous");
    assert!(
        client
            .fetch_nonce(PUBKEY.into())
            .await
            .unwrap()
            .starts_with("hero-auth:")
    );

    let mut params = CreateJobParams::new("print(40 + 2)", "sal");
    params.context_id = Some("ctx".into());
    params.env_vars.insert("A".into(), "1".into());
    let id = client.create_job(params).await.unwrap();
    let job_id: JobId = id.parse().unwrap();
    assert_eq!(
        client.get_job_status(id.clone()).await.unwrap(),
        JobStatus::Created
    );
    let job = client.get_job(id.clone()).await.unwrap();
    assert_eq!(job.id, job_id);
    assert_eq!(job.params.script_type, ScriptType::Sal);
    assert_eq!(job.params.caller_id, "anonymous");
    assert_eq!(job.params.context_id, "ctx");
    assert_eq!(job.status, JobStatus::Created);
    assert_eq!(client.get_job_output(id.clone()).await.unwrap(), "");
    assert_eq!(
        client
            .get_job_logs(id.clone(), None, None)
            .await
            .unwrap()
            .logs,
        None
    );

    assert!(client.start_job(id.clone()).await.unwrap().success);
    assert_eq!(
        client.get_job_status(id.clone()).await.unwrap(),
        JobStatus::Dispatched
    );
    run_like_a_runner(&server.store, &["one", "two"], "42").await;
    assert_eq!(
        client.get_job_status(id.clone()).await.unwrap(),
        JobStatus::Finished
    );
    assert_eq!(client.get_job_output(id.clone()).await.unwrap(), "42");
    assert_eq!(
        client
            .get_job_logs(id.clone(), None, None)
            .await
            .unwrap()
            .logs
            .as_deref(),
        Some("one\ntwo")
    );
    assert_eq!(
        client.get_job(id.clone()).await.unwrap().output.as_deref(),
        Some("42")
    );

    let other = client
        .create_job(CreateJobParams::new("x", "Python"))
        .await
        .unwrap();
    assert_eq!(
        client.list_jobs(None).await.unwrap().into_ids(),
        vec![id.clone(), other.clone()]
    );
    client.start_job(other.clone()).await.unwrap();
    client.stop_job(other.clone()).await.unwrap();
    assert_eq!(
        client.get_job_status(other.clone()).await.unwrap(),
        JobStatus::Error
    );
    let stopped = client.get_job(other.clone()).await.unwrap();
    assert_eq!(stopped.error.unwrap().error_type, "cancelled");
    client.delete_job(other.clone()).await.unwrap();
    expect_code(client.get_job_status(other).await, -32001, "job_not_found");

    client.list_runners().await.unwrap();
    let doc = client.discover().await.unwrap();
    assert_eq!(doc, serde_json::from_str::<Value>(OPENRPC_JSON).unwrap());

    client.clear_all_jobs().await.unwrap();
    assert!(client.list_jobs(None).await.unwrap().into_ids().is_empty());
}

/// A valid compressed secp256k1 public key (of the secret key [7; 32]).
const PUBKEY: &str = "02989c0b76cb563971fdc9bef31ec06c3560f3249d6ee9e5d83c57625596e05f6f";

#[tokio::test]
async fn every_method_over_http() {
    let server = TestServer::start().await;
    exercise(&server.http(), &server).await;
}

#[tokio::test]
async fn every_method_over_websocket() {
    let server = TestServer::start().await;
    exercise(&server.ws().await, &server).await;
}

#[tokio::test]
async fn named_params_and_case_insensitive_script_types() {
    let server = TestServer::start().await;
    let created = call_raw(
        server.addr,
        "create_job",
        json!({"params": {"script": "1", "script_type": "osis", "caller_id": "me", "context_id": "c"}}),
    )
    .await;
    let id = created["result"].as_str().expect("an id").to_owned();
    let status = call_raw(server.addr, "get_job_status", json!({"job_id": id})).await;
    assert_eq!(status["result"], "Created");
    let job = call_raw(server.addr, "get_job", json!([id])).await;
    assert_eq!(job["result"]["params"]["script_type"], "OSIS");
    assert_eq!(job["result"]["params"]["caller_id"], "me");
    let started = call_raw(server.addr, "start_job", json!({"job_id": id})).await;
    assert_eq!(started["result"], json!({"success": true}));
    let logs = call_raw(server.addr, "get_job_logs", json!([id])).await;
    assert_eq!(logs["result"], json!({"logs": null}));
}

/// A job of numbered context N gets an id that says N (its key namespace); a job may
/// wait only on jobs of its own context: another one's is -32602 with a message that
/// says why, and nothing is created.
#[tokio::test]
async fn jobs_of_a_context_get_its_ids_and_wait_only_on_its_jobs() {
    let server = TestServer::start().await;
    let c = server.http();
    let in_context = |context: &str, prerequisites: Vec<String>| {
        let mut p = CreateJobParams::new("print(1)", "SAL");
        p.context_id = Some(context.into());
        p.prerequisites = prerequisites;
        p
    };
    let seven = c.create_job(in_context("7", vec![])).await.unwrap();
    assert!(seven.starts_with("00000007-"), "{seven}");
    assert_eq!(JobId::parse(&seven).unwrap().context(), Some(7));
    let plain = c.create_job(in_context("team-a", vec![])).await.unwrap();
    assert_eq!(JobId::parse(&plain).unwrap().context(), None);
    // Same context: fine.
    let after = c
        .create_job(in_context("7", vec![seven.clone()]))
        .await
        .unwrap();
    assert_eq!(JobId::parse(&after).unwrap().context(), Some(7));
    let before = c.list_jobs(None).await.unwrap();
    for (context, prerequisite) in [("8", &seven), ("team-a", &seven), ("7", &plain)] {
        let err = c
            .create_job(in_context(context, vec![prerequisite.clone()]))
            .await
            .expect_err("a prerequisite of another context");
        let answer = ErrorAnswer::from_client_error(&err).expect("a JSON-RPC error");
        assert_eq!(
            (answer.code, answer.data_code()),
            (-32602, "invalid_params")
        );
        assert!(
            answer.message.contains("only on jobs of its own context"),
            "{}",
            answer.message
        );
    }
    assert_eq!(
        c.list_jobs(None).await.unwrap(),
        before,
        "nothing was created"
    );
}

/// `create_jobs`: many jobs in one call, started unless asked not to, ids in order; a
/// bad batch (a bad job, two namespaces, too many, none, an idempotency key) is -32602
/// naming the job, and creates nothing.
#[tokio::test]
async fn create_jobs_creates_a_batch_all_or_nothing() {
    let server = TestServer::start().await;
    let c = server.http();
    let job = |script: &str, context: &str| {
        let mut p = CreateJobParams::new(script, "V");
        p.context_id = Some(context.into());
        p
    };
    let ids = c
        .create_jobs(vec![job("a", "9"), job("b", "9"), job("c", "9")], None)
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    for (id, script) in ids.iter().zip(["a", "b", "c"]) {
        let stored = c.get_job(id.clone()).await.unwrap();
        assert_eq!(stored.params.script, script);
        assert_eq!(stored.status, JobStatus::Dispatched);
        assert_eq!(JobId::parse(id).unwrap().context(), Some(9));
    }
    let created = c
        .create_jobs(vec![job("d", "team"), job("e", "other")], Some(false))
        .await
        .unwrap();
    for id in &created {
        assert_eq!(
            c.get_job_status(id.clone()).await.unwrap(),
            JobStatus::Created
        );
    }
    let before = c.list_jobs(None).await.unwrap();
    let mut keyed = job("k", "9");
    keyed.idempotency_key = Some("once".into());
    let bad: Vec<(Vec<CreateJobParams>, &str)> = vec![
        (vec![job("x", "9"), job("  ", "9")], "job 1:"),
        (vec![job("x", "9"), job("y", "10")], "one context namespace"),
        (
            vec![job("x", "team"), job("y", "9")],
            "one context namespace",
        ),
        ((0..1001).map(|_| job("x", "9")).collect(), "at most 1000"),
        (vec![], "1 to 1000"),
        (vec![job("x", "9"), keyed], "idempotency_key"),
    ];
    for (batch, says) in bad {
        let err = c.create_jobs(batch, None).await.expect_err("a bad batch");
        let answer = ErrorAnswer::from_client_error(&err).expect("a JSON-RPC error");
        assert_eq!(
            (answer.code, answer.data_code()),
            (-32602, "invalid_params")
        );
        assert!(answer.message.contains(says), "{says}: {}", answer.message);
    }
    assert_eq!(
        c.list_jobs(None).await.unwrap(),
        before,
        "nothing was created"
    );
}

#[tokio::test]
async fn error_codes_from_real_bad_inputs() {
    let server = TestServer::start().await;
    let c = server.http();
    // -32602: bad job id, empty script, bad script type, oversize script, bad prerequisite.
    expect_code(
        c.get_job_status("../etc/passwd".into()).await,
        -32602,
        "invalid_job_id",
    );
    expect_code(c.start_job("".into()).await, -32602, "invalid_job_id");
    expect_code(
        c.create_job(CreateJobParams::new("  ", "SAL")).await,
        -32602,
        "invalid_params",
    );
    expect_code(
        c.create_job(CreateJobParams::new("x", "rust")).await,
        -32602,
        "invalid_params",
    );
    let big = "x".repeat(1024 * 1024 + 1);
    expect_code(
        c.create_job(CreateJobParams::new(big, "SAL")).await,
        -32602,
        "invalid_params",
    );
    expect_code(
        c.run_job(
            "x".into(),
            "SAL".into(),
            Some(vec!["nope".into()]),
            None,
            None,
        )
        .await,
        -32602,
        "invalid_job_id",
    );
    expect_code(c.play("".into(), None).await, -32602, "invalid_params");
    expect_code(
        c.fetch_nonce("not hex".into()).await,
        -32602,
        "invalid_params",
    );
    // -32001: unknown job.
    let unknown = JobId::new().to_string();
    expect_code(
        c.get_job_status(unknown.clone()).await,
        -32001,
        "job_not_found",
    );
    expect_code(
        c.get_job_output(unknown.clone()).await,
        -32001,
        "job_not_found",
    );
    expect_code(
        c.get_job_logs(unknown.clone(), None, None).await,
        -32001,
        "job_not_found",
    );
    expect_code(c.get_job(unknown.clone()).await, -32001, "job_not_found");
    expect_code(c.start_job(unknown.clone()).await, -32001, "job_not_found");
    expect_code(c.stop_job(unknown.clone()).await, -32001, "job_not_found");
    expect_code(c.delete_job(unknown.clone()).await, -32001, "job_not_found");
    // -32004: starting a job twice.
    let id = c
        .create_job(CreateJobParams::new("x", "SAL"))
        .await
        .unwrap();
    c.start_job(id.clone()).await.unwrap();
    expect_code(c.start_job(id.clone()).await, -32004, "conflict");
    // -32002: nothing runs the job within its timeout (no runner pools here).
    let err = c
        .run_job("x".into(), "SAL".into(), None, Some(1), None)
        .await;
    expect_code(err, -32002, "timeout");
    // -32003: the job ends in Error (its prerequisite is cancelled).
    let prereq = c
        .create_job(CreateJobParams::new("x", "SAL"))
        .await
        .unwrap();
    let waiting = {
        let c = server.http();
        let prereq = prereq.clone();
        tokio::spawn(async move {
            c.run_job("y".into(), "sal".into(), Some(vec![prereq]), Some(30), None)
                .await
        })
    };
    wait_for_jobs(&c, 4).await;
    c.stop_job(prereq).await.unwrap();
    let err = waiting.await.unwrap().expect_err("the job failed");
    let answer = error::ErrorAnswer::from_client_error(&err).expect("an error answer");
    assert_eq!(answer.code, error::JOB_FAILED);
    assert_eq!(answer.data_code(), "job_failed");
    assert_eq!(answer.error_type.as_deref(), Some("prerequisite_failed"));
    assert!(answer.job_id.is_some());
}

async fn wait_for_jobs(c: &(impl HeroApiClient + Sync), n: usize) {
    for _ in 0..500 {
        if c.list_jobs(None).await.unwrap().into_ids().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {n} jobs");
}

#[tokio::test]
async fn storage_and_internal_errors_from_redis() {
    let redis = RedisServer::start();
    let server = TestServer::with_redis(RpcConfig::default(), redis.url()).await;
    let c = server.http();
    let id = c
        .create_job(CreateJobParams::new("x", "SAL"))
        .await
        .unwrap();

    // -32603: a corrupt job hash (a field the store can't decode).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("hero:job:{id}"))
        .arg("status")
        .arg("Exploded")
        .query_async(&mut conn)
        .await
        .unwrap();
    expect_code(c.get_job(id.clone()).await, -32603, "internal");

    // -32010: redis is gone.
    drop(conn);
    drop(redis);
    expect_code(c.list_jobs(None).await, -32010, "storage_unavailable");
}

/// A SAL job created and started over `ws`, then claimed straight from the store (the
/// test plays the runner): its id as the API shows it, and the claimed job.
async fn running_sal_job(server: &TestServer, ws: &WsClient) -> (String, Job) {
    let id = ws
        .create_job(CreateJobParams::new("x", "SAL"))
        .await
        .unwrap();
    ws.start_job(id.clone()).await.unwrap();
    let job = server
        .store
        .claim(ScriptType::Sal, 1, "t", LEASE)
        .await
        .unwrap()
        .remove(0)
        .into_job()
        .expect("a decodable job");
    assert_eq!(job.id.to_string(), id);
    (id, job)
}

#[tokio::test]
async fn subscription_replays_from_cursor_streams_live_and_ends() {
    let server = TestServer::start().await;
    let ws = server.ws().await;
    let (id, job) = running_sal_job(&server, &ws).await;
    let job_id = job.id;
    let lines = |ls: &[&str]| ls.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    server
        .store
        .append_logs(job_id, &lines(&["a", "b", "c"]))
        .await
        .unwrap();

    let mut sub = ws.subscribe_job_events(id.clone(), Some(1)).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event in time")
    };
    let log = |index, line: &str| JobEvent::Log {
        job_id,
        index,
        line: line.into(),
    };
    // A status event's cursor: the number of the next line not sent yet.
    let status = |status, cursor| JobEvent::Status {
        job_id,
        status,
        cursor,
    };
    // Replay from the cursor, then the current status.
    assert_eq!(next().await.unwrap().unwrap(), log(1, "b"));
    assert_eq!(next().await.unwrap().unwrap(), log(2, "c"));
    assert_eq!(
        next().await.unwrap().unwrap(),
        status(JobStatus::Started, 3)
    );
    // Live.
    server
        .store
        .append_logs(job_id, &lines(&["d"]))
        .await
        .unwrap();
    assert_eq!(next().await.unwrap().unwrap(), log(3, "d"));
    server
        .store
        .append_logs(job_id, &lines(&["e"]))
        .await
        .unwrap();
    server
        .store
        .complete_one(Completion::finish(job_id, job.attempt, "out"))
        .await
        .unwrap();
    assert_eq!(next().await.unwrap().unwrap(), log(4, "e"));
    assert_eq!(
        next().await.unwrap().unwrap(),
        status(JobStatus::Finished, 5)
    );
    // End: the server closes the subscription.
    assert!(next().await.is_none());

    // A finished job replays everything and ends at once. The subscription id is a
    // string, as openrpc.json declares.
    let mut sub = ws.subscribe_job_events(id.clone(), None).await.unwrap();
    assert!(
        matches!(
            sub.kind(),
            jsonrpsee::core::client::SubscriptionKind::Subscription(
                jsonrpsee::types::SubscriptionId::Str(_)
            )
        ),
        "{:?}",
        sub.kind()
    );
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
    {
        seen.push(ev.unwrap());
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.last(), Some(&status(JobStatus::Finished, 5)));
    // Resuming from a status event's cursor sends only what came after it.
    let mut sub = ws.subscribe_job_events(id.clone(), Some(5)).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        status(JobStatus::Finished, 5)
    );

    // Unknown and malformed ids are refused.
    expect_code(
        ws.subscribe_job_events(JobId::new().to_string(), None)
            .await,
        -32001,
        "job_not_found",
    );
    expect_code(
        ws.subscribe_job_events("x".into(), None).await,
        -32602,
        "invalid_job_id",
    );
}

#[tokio::test]
async fn unsubscribe_and_subscription_limit_per_connection() {
    let config = RpcConfig {
        max_subscriptions_per_connection: 2,
        ..RpcConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let ws = server.ws().await;
    let id = ws
        .create_job(CreateJobParams::new("x", "SAL"))
        .await
        .unwrap();
    let first = ws.subscribe_job_events(id.clone(), None).await.unwrap();
    let _second = ws.subscribe_job_events(id.clone(), None).await.unwrap();
    assert!(
        ws.subscribe_job_events(id.clone(), None).await.is_err(),
        "a third is refused"
    );
    first.unsubscribe().await.unwrap();
    let _third = ws.subscribe_job_events(id, None).await.unwrap();
}

#[tokio::test]
async fn request_body_limit_is_enforced() {
    let config = RpcConfig {
        max_request_body_bytes: 4096,
        ..RpcConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"play","params":["x".repeat(8192)]});
    let (status, _) = post(server.addr, &body.to_string(), &[]).await;
    assert_eq!(status, 413);
    let ok = json!({"jsonrpc":"2.0","id":1,"method":"whoami","params":[]});
    assert_eq!(post(server.addr, &ok.to_string(), &[]).await.0, 200);
}

#[tokio::test]
async fn openrpc_document_lists_exactly_the_served_methods() {
    let server = TestServer::start().await;
    let doc: Value = serde_json::from_str(OPENRPC_JSON).expect("openrpc.json is json");
    let module = rpc_module(server.supervisor.clone(), &RpcConfig::default());
    let served: BTreeSet<String> = module.method_names().map(str::to_owned).collect();
    let methods = doc["methods"].as_array().expect("methods");
    let documented: BTreeSet<String> = methods
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(served, documented);

    let errors = doc["components"]["errors"].as_object().expect("errors");
    let listed: BTreeSet<(i64, String)> = errors
        .values()
        .map(|e| {
            let code = e["code"].as_i64().unwrap();
            let data = &e["data"]["properties"]["code"];
            let name = data["const"].as_str().or(data["enum"][0].as_str()).unwrap();
            (code, name.to_owned())
        })
        .collect();
    let expected: BTreeSet<(i64, String)> = error::ERROR_CODES
        .iter()
        .map(|(c, n)| (i64::from(*c), n.to_string()))
        .collect();
    assert_eq!(listed, expected);
    for m in methods {
        let name = m["name"].as_str().unwrap();
        assert!(m["params"].is_array(), "{name}: params");
        assert!(m["result"]["schema"].is_object(), "{name}: result");
        for e in m["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: errors"))
        {
            let r = e["$ref"].as_str().unwrap();
            let key = r.strip_prefix("#/components/errors/").unwrap();
            assert!(errors.contains_key(key), "{name}: unknown error {r}");
        }
    }
    // Served over the wire, identical to the file.
    let served_doc = call_raw(server.addr, "rpc.discover", json!([])).await;
    assert_eq!(served_doc["result"], doc);
}

/// The filtered `list_jobs` with the typed client, over both stores: pages, filters,
/// bad filters (-32602), and `stats` counting what is there.
async fn filtered_list_and_stats(server: TestServer) {
    let c = server.http();
    let mut python = Vec::new();
    for i in 0..45 {
        let script_type = if i % 3 == 0 { "Python" } else { "SAL" };
        let id = c
            .create_job(CreateJobParams::new("x", script_type))
            .await
            .unwrap();
        if i % 3 == 0 {
            c.start_job(id.clone()).await.unwrap();
            python.push(id);
        }
    }
    let mut filter = ListJobsFilter {
        script_type: Some("python".into()),
        limit: Some(4),
        ..ListJobsFilter::default()
    };
    let mut got = Vec::new();
    loop {
        let ListJobsResult::Page(page) = c.list_jobs(Some(filter.clone())).await.unwrap() else {
            panic!("a filter answers a page");
        };
        assert!(page.jobs.len() <= 4);
        for j in &page.jobs {
            assert_eq!(j.script_type, ScriptType::Python);
            assert_eq!(j.status, JobStatus::Dispatched);
        }
        got.extend(page.jobs.iter().map(|j| j.id.to_string()));
        match page.next_cursor {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    let (mut got, mut want) = (got, python.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let created = ListJobsFilter {
        status: Some("Created".into()),
        limit: Some(1000),
        ..ListJobsFilter::default()
    };
    assert_eq!(
        c.list_jobs(Some(created)).await.unwrap().into_ids().len(),
        30
    );
    let window = ListJobsFilter {
        created_after: Some("2000-01-01T00:00:00Z".into()),
        created_before: Some("2001-01-01T00:00:00Z".into()),
        ..ListJobsFilter::default()
    };
    assert!(
        c.list_jobs(Some(window))
            .await
            .unwrap()
            .into_ids()
            .is_empty()
    );
    for bad in [
        ListJobsFilter {
            status: Some("Done".into()),
            ..ListJobsFilter::default()
        },
        ListJobsFilter {
            script_type: Some("rust".into()),
            ..ListJobsFilter::default()
        },
        ListJobsFilter {
            limit: Some(0),
            ..ListJobsFilter::default()
        },
        ListJobsFilter {
            limit: Some(1001),
            ..ListJobsFilter::default()
        },
        ListJobsFilter {
            cursor: Some("not-a-cursor".into()),
            ..ListJobsFilter::default()
        },
        ListJobsFilter {
            created_after: Some("yesterday".into()),
            ..ListJobsFilter::default()
        },
    ] {
        expect_code(c.list_jobs(Some(bad)).await, -32602, "invalid_params");
    }
    // Unknown filter fields are refused, not ignored.
    let (status, body) = post(
        server.addr,
        r#"{"jsonrpc":"2.0","id":1,"method":"list_jobs","params":[{"statu":"Error"}]}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("-32602"), "{body}");

    let stats = c.stats().await.unwrap();
    assert_eq!(stats.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(stats.jobs_by_status.get("Created"), Some(&30));
    assert_eq!(stats.jobs_by_status.get("Dispatched"), Some(&15));
    assert_eq!(stats.jobs_by_status.get("Finished"), Some(&0));
    assert_eq!(stats.jobs_by_status.len(), 6);
    assert_eq!(stats.jobs_by_script_type.get("Python"), Some(&15));
    assert_eq!(stats.jobs_by_script_type.get("SAL"), Some(&30));
    assert_eq!(stats.queued.get("Python"), Some(&15));
    assert_eq!(stats.delayed, 0);
    assert_eq!(stats.runners, c.list_runners().await.unwrap());
}

#[tokio::test]
async fn filtered_list_and_stats_on_memory() {
    filtered_list_and_stats(TestServer::start().await).await;
}

#[tokio::test]
async fn filtered_list_and_stats_on_redis() {
    let redis = RedisServer::start();
    filtered_list_and_stats(TestServer::with_redis(RpcConfig::default(), redis.url()).await).await;
}

/// Past the log cap (here 50 lines) a subscriber neither stalls nor skips silently:
/// indexes are sequence numbers for good, lines dropped before they could be sent are
/// announced by one `cursor_expired`, and every line logged after the subscriber caught
/// up arrives (the bug: 9,000 lines, a pause, 3,000 more, and the stream stopped at the
/// cap with the indexes no longer naming their lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_past_the_log_cap_keeps_every_later_line() {
    let mut config = rpc_support::serve_config(RpcConfig::default(), None);
    config.store.max_log_lines = 50;
    let server = TestServer::serve(config).await;
    let ws = server.ws().await;
    let (id, job) = running_sal_job(&server, &ws).await;
    let job_id = job.id;
    let lines = |r: std::ops::Range<u64>| r.map(|i| format!("line {i}")).collect::<Vec<_>>();
    // 90 lines before anyone listens: 0..40 are gone.
    server
        .store
        .append_logs(job_id, &lines(0..90))
        .await
        .unwrap();
    let mut sub = ws.subscribe_job_events(id.clone(), None).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event in time")
            .expect("not ended")
            .expect("an event")
    };
    assert_eq!(
        next().await,
        JobEvent::CursorExpired {
            job_id,
            requested: 0,
            resumed_at: 40
        }
    );
    for i in 40..90 {
        assert_eq!(
            next().await,
            JobEvent::Log {
                job_id,
                index: i,
                line: format!("line {i}")
            }
        );
    }
    assert_eq!(
        next().await,
        JobEvent::Status {
            job_id,
            status: JobStatus::Started,
            cursor: 90
        }
    );
    // Far past the cap while the subscriber listens, in small batches: every line, in
    // order, with its own number.
    for chunk in (90..300).step_by(10) {
        server
            .store
            .append_logs(job_id, &lines(chunk..chunk + 10))
            .await
            .unwrap();
    }
    let mut want = 90;
    while want < 300 {
        match next().await {
            JobEvent::Log { index, line, .. } => {
                assert_eq!((index, line), (want, format!("line {want}")));
                want += 1;
            }
            // Under load the stream may fall behind the cap; then it says so.
            JobEvent::CursorExpired {
                requested,
                resumed_at,
                ..
            } => {
                assert_eq!(requested, want);
                assert!(resumed_at > want);
                want = resumed_at;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    server
        .store
        .complete_one(Completion::finish(job_id, job.attempt, "out"))
        .await
        .unwrap();
    assert_eq!(
        next().await,
        JobEvent::Status {
            job_id,
            status: JobStatus::Finished,
            cursor: 300
        }
    );
}

/// A transcript of 12,000 lines with the default cap of 10,000: every page of
/// `get_job_logs` and every resumed subscription is exact, by sequence number, and the
/// lines the cap dropped are named, not skipped silently.
async fn a_transcript_pages_and_resumes_exactly(server: TestServer) {
    let ws = server.ws().await;
    let (id, job) = running_sal_job(&server, &ws).await;
    let job_id = job.id;
    let line = |i: u64| format!("line {i}");
    for chunk in (0..12_000u64).step_by(1_000) {
        let batch: Vec<String> = (chunk..chunk + 1_000).map(line).collect();
        server.store.append_logs(job_id, &batch).await.unwrap();
    }
    let c = server.http();
    // The whole log as before: the 10,000 kept lines.
    let all = c.get_job_logs(id.clone(), None, None).await.unwrap();
    assert_eq!(all.page, None);
    let all = all.logs.unwrap();
    assert_eq!(all.lines().count(), 10_000);
    assert!(all.starts_with("line 2000\n"));

    // Paged from 0 with the default limit: the first page names the dropped range.
    let first = c.get_job_logs(id.clone(), Some(0), None).await.unwrap();
    let page = first.page.unwrap();
    assert_eq!(page.dropped, Some(LogRange { from: 0, to: 2_000 }));
    assert_eq!(
        (page.start, page.next, page.lines.len()),
        (2_000, 2_256, 256)
    );
    assert_eq!(first.logs, Some(page.lines.join("\n")));
    // Every page after it, with an odd limit: no gap, no duplicate, every number right.
    let mut next = page.next;
    let mut seen: Vec<String> = page.lines;
    loop {
        let page = c
            .get_job_logs(id.clone(), Some(next), Some(999))
            .await
            .unwrap()
            .page
            .unwrap();
        assert_eq!(page.start, next);
        assert_eq!(page.dropped, None);
        assert_eq!(page.next, next + page.lines.len() as u64);
        next = page.next;
        let done = page.lines.len() < 999;
        seen.extend(page.lines);
        if done {
            break;
        }
    }
    assert_eq!(next, 12_000);
    assert_eq!(seen, (2_000..12_000).map(line).collect::<Vec<_>>());
    // Past the end: empty, and `next` stays where the log goes on.
    let past = c
        .get_job_logs(id.clone(), Some(20_000), Some(5))
        .await
        .unwrap();
    assert_eq!(past.logs, None);
    let past = past.page.unwrap();
    assert_eq!(
        (past.start, past.next, past.lines.len()),
        (20_000, 20_000, 0)
    );
    // A limit above the maximum is cut to it; zero is refused.
    let big = c
        .get_job_logs(id.clone(), Some(2_000), Some(1_000_000))
        .await
        .unwrap()
        .page
        .unwrap();
    assert_eq!(big.lines.len(), 10_000);
    expect_code(
        c.get_job_logs(id.clone(), Some(0), Some(0)).await,
        -32602,
        "invalid_params",
    );
    // Named params work too.
    let named = call_raw(
        server.addr,
        "get_job_logs",
        json!({"job_id": id, "start": 11_998, "limit": 10}),
    )
    .await;
    assert_eq!(
        named["result"],
        json!({"logs": "line 11998\nline 11999", "lines": ["line 11998", "line 11999"],
               "start": 11_998, "next": 12_000, "dropped": null})
    );

    // Subscriptions resumed from several cursors: exactly the lines from there, then
    // the status with the cursor after the last line.
    for cursor in [0u64, 2_000, 7_777, 11_999, 12_000] {
        let mut sub = ws
            .subscribe_job_events(id.clone(), Some(cursor))
            .await
            .unwrap();
        let mut next_event = async || {
            tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .unwrap()
        };
        let mut want = cursor;
        if cursor < 2_000 {
            assert_eq!(
                next_event().await,
                JobEvent::CursorExpired {
                    job_id,
                    requested: cursor,
                    resumed_at: 2_000
                }
            );
            want = 2_000;
        }
        while want < 12_000 {
            assert_eq!(
                next_event().await,
                JobEvent::Log {
                    job_id,
                    index: want,
                    line: line(want)
                }
            );
            want += 1;
        }
        assert_eq!(
            next_event().await,
            JobEvent::Status {
                job_id,
                status: JobStatus::Started,
                cursor: 12_000
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_pages_and_resumes_exactly_on_memory() {
    a_transcript_pages_and_resumes_exactly(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_pages_and_resumes_exactly_on_redis() {
    let redis = RedisServer::start();
    a_transcript_pages_and_resumes_exactly(
        TestServer::with_redis(RpcConfig::default(), redis.url()).await,
    )
    .await;
}

/// Deleting a job ends whoever follows it at once, on both stores: a subscriber's
/// stream closes (with `job_not_found`) and a `get_job`-style waiter on a job nobody
/// runs (`run_job` of a type without runners) answers `job_not_found`, neither waiting
/// for its timeout. Also for `clear_all_jobs`.
async fn deleting_a_job_ends_its_followers(server: TestServer) {
    let ws = server.ws().await;
    for clear in [false, true] {
        let id = ws
            .create_job(CreateJobParams::new("x", "SAL"))
            .await
            .unwrap();
        ws.start_job(id.clone()).await.unwrap();
        let mut sub = ws.subscribe_job_events(id.clone(), None).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the status in time");
        assert!(
            matches!(first, Some(Ok(JobEvent::Status { .. }))),
            "{first:?}"
        );
        // A run_job of a type nobody serves waits for its job.
        let c = server.http();
        let waiter = tokio::spawn(async move {
            c.run_job("y".into(), "V".into(), None, Some(3600), None)
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        if clear {
            ws.clear_all_jobs().await.unwrap();
        } else {
            ws.delete_job(id.clone()).await.unwrap();
            // The waiter's job: the one V job there is.
            let ListJobsResult::Page(page) = ws
                .list_jobs(Some(ListJobsFilter {
                    script_type: Some("V".into()),
                    ..ListJobsFilter::default()
                }))
                .await
                .unwrap()
            else {
                panic!("a page");
            };
            assert_eq!(page.jobs.len(), 1);
            ws.delete_job(page.jobs[0].id.to_string()).await.unwrap();
        }
        let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the stream ends in time, not at the job's timeout");
        assert!(end.is_none(), "{end:?}");
        let answer = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("run_job answers in time")
            .unwrap();
        expect_code(answer, -32001, "job_not_found");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_ends_its_followers_on_memory() {
    deleting_a_job_ends_its_followers(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_ends_its_followers_on_redis() {
    let redis = RedisServer::start();
    deleting_a_job_ends_its_followers(
        TestServer::with_redis(RpcConfig::default(), redis.url()).await,
    )
    .await;
}
