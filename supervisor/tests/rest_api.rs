//! The REST face (`/v1`, `rpc/rest.rs`) over a real socket: every route with and
//! without the token (the JSON 401), a job's life through REST on the memory store and
//! on a private Redis, the error statuses from real bad input, roles (403, and 404 for a
//! job the caller may not see), the body limit, transcript paging, the event WebSocket
//! (snapshot, backlog from a cursor, live events, resume, `cursor_expired`, the end),
//! and CORS preflights.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rest_support;
mod rpc_support;

use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::job::{JobId, ScriptType};
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::auth::{Grant, TokenGrant};
use hero_supervisor::store::{Completion, JobStore};
use hero_testkit::RedisServer;
use rest_support::{events, get, post, request, request_with};
use rpc_support::TestServer;
use serde_json::{Value, json};

const LEASE: Duration = Duration::from_secs(60);
const ADMIN: &str = "rest-admin-token";
/// Actor tokens: 1 admin of context 7, 2 its executor, 3 its reader, 4 in no role.
const ACTORS: [(u32, &str); 4] = [
    (1, "t-ctx-admin"),
    (2, "t-executor"),
    (3, "t-reader"),
    (4, "t-outsider"),
];

fn with_tokens() -> RpcConfig {
    RpcConfig {
        auth_token: Some(ADMIN.to_owned()),
        tokens: ACTORS
            .iter()
            .map(|(id, t)| TokenGrant::from_token(t, Grant::Actor(*id)).unwrap())
            .collect(),
        ..RpcConfig::default()
    }
}

/// Claims the one queued SAL job like a runner would.
async fn claim(store: &Arc<dyn JobStore>) -> hero_supervisor::job::Job {
    store
        .claim(ScriptType::Sal, 1, "test-runner", LEASE)
        .await
        .unwrap()
        .into_iter()
        .next()
        .and_then(|c| c.into_job())
        .expect("a queued job")
}

fn lines(r: std::ops::Range<u64>) -> Vec<String> {
    r.map(|i| format!("line {i}")).collect()
}

#[tokio::test]
async fn every_route_without_the_token_is_a_json_401() {
    let server = TestServer::with_config(with_tokens()).await;
    let id = JobId::new().to_string();
    let routes = [
        ("GET", "/v1/runtime".to_owned()),
        ("GET", "/v1/openapi.json".to_owned()),
        ("GET", "/v1/jobs".to_owned()),
        ("POST", "/v1/jobs".to_owned()),
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/stop")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("GET", format!("/v1/jobs/{id}/transcript")),
        ("GET", format!("/v1/jobs/{id}/events/ws")),
        ("GET", "/v1/nothing-here".to_owned()),
        // JSON-RPC too.
        ("POST", "/".to_owned()),
    ];
    for (method, path) in &routes {
        for token in [None, Some("wrong-token")] {
            let body = (*method == "POST").then(|| json!({}).to_string());
            let answer = request(server.addr, method, path, token, body).await;
            answer.expect_error(401, "unauthorized");
            assert_eq!(answer.header("www-authenticate").as_deref(), Some("Bearer"));
            assert_eq!(
                answer.header("content-type").as_deref(),
                Some("application/json"),
                "{method} {path}"
            );
        }
    }
    // The WebSocket upgrade is refused the same way.
    assert_eq!(
        events(server.addr, &format!("/v1/jobs/{id}/events/ws"), None)
            .await
            .err(),
        Some(401)
    );
    // With the token each answers something else than 401.
    for (method, path) in &routes {
        let body = (*method == "POST").then(|| json!({}).to_string());
        let answer = request(server.addr, method, path, Some(ADMIN), body).await;
        assert_ne!(answer.status, 401, "{method} {path}: {}", answer.text);
    }
}

/// Create (without and with start), get, list, stop, cancel and the runtime, as a
/// server admin, on the store `server` runs on.
async fn a_job_through_rest(server: &TestServer, token: Option<&str>) {
    let addr = server.addr;
    let created = post(
        addr,
        "/v1/jobs",
        token,
        json!({"script": "40 + 2", "script_type": "sal", "start": false, "env_vars": {"A": "1"}}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let body = created.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "Created");
    assert_eq!(
        created.header("location").as_deref(),
        Some(format!("/v1/jobs/{id}").as_str())
    );

    let job = get(addr, &format!("/v1/jobs/{id}"), token).await;
    assert_eq!(job.status, 200, "{}", job.text);
    let job = job.json();
    assert_eq!(job["id"], id);
    assert_eq!(job["status"], "Created");
    assert_eq!(job["params"]["script"], "40 + 2");
    assert_eq!(job["params"]["script_type"], "SAL");
    assert_eq!(job["params"]["env_vars"]["A"], "1");

    // Started by default: queued.
    let started = post(
        addr,
        "/v1/jobs",
        token,
        json!({"script": "1", "script_type": "SAL", "context_id": "rest"}),
    )
    .await;
    assert_eq!(started.status, 201, "{}", started.text);
    let started_id = started.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(started.json()["status"], "Dispatched");

    // Listed, filtered and paged.
    let page = get(
        addr,
        "/v1/jobs?status=Dispatched&context_id=rest&limit=10",
        token,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let page = page.json();
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [started_id.as_str()]);
    assert_eq!(page["next_cursor"], Value::Null);
    let first = get(addr, "/v1/jobs?limit=1", token).await.json();
    assert_eq!(first["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(first["jobs"][0]["id"], id);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = get(
        addr,
        &format!("/v1/jobs?limit=1&cursor={}", urlencode(cursor)),
        token,
    )
    .await
    .json();
    assert_eq!(second["jobs"][0]["id"], started_id);

    // The runtime counts them.
    let runtime = get(addr, "/v1/runtime", token).await;
    assert_eq!(runtime.status, 200, "{}", runtime.text);
    let runtime = runtime.json();
    assert_eq!(runtime["server_admin"], true);
    assert_eq!(runtime["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(runtime["jobs_by_status"]["Created"], 1);
    assert_eq!(runtime["jobs_by_status"]["Dispatched"], 1);
    assert!(runtime["runners"].is_array());

    // Stop the queued one (with a reason), cancel the created one.
    let stopped = post(
        addr,
        &format!("/v1/jobs/{started_id}/stop"),
        token,
        json!({"reason": "operator says so"}),
    )
    .await;
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(stopped.json(), json!({"id": started_id, "status": "Error"}));
    let cancelled = request(addr, "POST", &format!("/v1/jobs/{id}/cancel"), token, None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json()["status"], "Error");
    let job = get(addr, &format!("/v1/jobs/{id}"), token).await.json();
    assert_eq!(job["error"]["type"], "cancelled");
    // Stopping an ended job changes nothing.
    let again = post(addr, &format!("/v1/jobs/{id}/stop"), token, json!({})).await;
    assert_eq!(again.json()["status"], "Error");
}

/// A raw HTTP/1.1 POST with a chunked body of `chunks` chunks of `size` bytes each
/// (no Content-Length); answers the status.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, chunks: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
        // The server may answer and close before it read everything.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_job_through_rest_on_the_memory_store() {
    let server = TestServer::start().await;
    a_job_through_rest(&server, None).await;
}

#[tokio::test]
async fn a_job_through_rest_on_redis_with_a_token() {
    let redis = RedisServer::start();
    let server = TestServer::with_redis(with_tokens(), redis.url()).await;
    a_job_through_rest(&server, Some(ADMIN)).await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_code() {
    let mut config = rpc_support::serve_config(RpcConfig::default(), None);
    config.rpc.max_request_body_bytes = 4096;
    let server = TestServer::serve(config).await;
    let addr = server.addr;
    let unknown = JobId::new();

    get(addr, "/v1/jobs/not-a-uuid", None)
        .await
        .expect_error(400, "invalid_job_id");
    get(addr, "/v1/jobs/not-a-uuid/transcript", None)
        .await
        .expect_error(400, "invalid_job_id");
    post(addr, "/v1/jobs/not-a-uuid/stop", None, json!({}))
        .await
        .expect_error(400, "invalid_job_id");
    let missing = get(addr, &format!("/v1/jobs/{unknown}"), None).await;
    missing.expect_error(404, "not_found");
    assert_eq!(missing.json()["error"]["job_id"], unknown.to_string());
    post(addr, &format!("/v1/jobs/{unknown}/stop"), None, json!({}))
        .await
        .expect_error(404, "not_found");
    get(addr, &format!("/v1/jobs/{unknown}/transcript"), None)
        .await
        .expect_error(404, "not_found");

    // Routes and methods.
    get(addr, "/v1/jobs/x/y/z", None)
        .await
        .expect_error(404, "not_found");
    get(addr, "/v1", None).await.expect_error(404, "not_found");
    let wrong = request(addr, "DELETE", "/v1/jobs", None, None).await;
    wrong.expect_error(405, "method_not_allowed");
    assert_eq!(wrong.header("allow").as_deref(), Some("GET, POST"));
    let wrong = get(addr, &format!("/v1/jobs/{unknown}/stop"), None).await;
    wrong.expect_error(405, "method_not_allowed");
    assert_eq!(wrong.header("allow").as_deref(), Some("POST"));
    request(addr, "PUT", "/v1/runtime", None, None)
        .await
        .expect_error(405, "method_not_allowed");

    // Bodies.
    request(addr, "POST", "/v1/jobs", None, Some("{not json".into()))
        .await
        .expect_error(400, "invalid_request");
    post(addr, "/v1/jobs", None, json!(["a", "list"]))
        .await
        .expect_error(400, "invalid_request");
    post(
        addr,
        "/v1/jobs",
        None,
        json!({"script": "1", "script_type": "rust"}),
    )
    .await
    .expect_error(400, "invalid_params");
    post(
        addr,
        "/v1/jobs",
        None,
        json!({"script": "1", "script_type": "SAL", "start": "yes"}),
    )
    .await
    .expect_error(400, "invalid_params");
    post(addr, "/v1/jobs", None, json!({"script_type": "SAL"}))
        .await
        .expect_error(400, "invalid_params");
    let big = json!({"script": "x".repeat(5000), "script_type": "SAL"});
    post(addr, "/v1/jobs", None, big)
        .await
        .expect_error(413, "payload_too_large");
    // Without a Content-Length (chunked), the limit holds while reading.
    assert_eq!(chunked_post(addr, "/v1/jobs", 10, 1000).await, 413);
    assert_eq!(chunked_post(addr, "/v1/jobs", 1, 10).await, 400);
    let reason = json!({"reason": "r".repeat(2000)});
    post(addr, &format!("/v1/jobs/{unknown}/stop"), None, reason)
        .await
        .expect_error(400, "invalid_params");
    post(
        addr,
        &format!("/v1/jobs/{unknown}/stop"),
        None,
        json!({"why": "x"}),
    )
    .await
    .expect_error(400, "invalid_request");

    // Queries.
    get(addr, "/v1/jobs?colour=red", None)
        .await
        .expect_error(400, "invalid_request");
    get(addr, "/v1/jobs?limit=abc", None)
        .await
        .expect_error(400, "invalid_params");
    get(addr, "/v1/jobs?limit=0", None)
        .await
        .expect_error(400, "invalid_params");
    get(addr, "/v1/jobs?status=Sleeping", None)
        .await
        .expect_error(400, "invalid_params");
    get(addr, "/v1/jobs?limit=1&limit=2", None)
        .await
        .expect_error(400, "invalid_request");
    get(addr, "/v1/jobs?created_after=yesterday", None)
        .await
        .expect_error(400, "invalid_params");
    get(
        addr,
        &format!("/v1/jobs/{unknown}/transcript?start=-1"),
        None,
    )
    .await
    .expect_error(400, "invalid_params");
    // A plain GET of the WebSocket route.
    get(addr, &format!("/v1/jobs/{unknown}/events/ws"), None)
        .await
        .expect_error(400, "websocket_required");

    // The JSON-RPC port still serves JSON-RPC.
    let v = rpc_support::call_raw(addr, "whoami", json!([])).await;
    assert_eq!(v["result"], "anonymous");
}

#[tokio::test]
async fn roles_decide_as_for_json_rpc() {
    let server = TestServer::with_config(with_tokens()).await;
    let addr = server.addr;
    let context = json!({"context": {"id": 7, "admins": [1], "executors": [2], "readers": [3]}});
    let v = rpc_call(addr, Some(ADMIN), "context.create", json!([context])).await;
    assert!(v.get("result").is_some(), "{v}");
    let token = |i: usize| Some(ACTORS[i].1);

    // The executor creates a job in context 7; the reader may not.
    let submit = json!({"script": "1", "script_type": "SAL", "context_id": "7", "start": false});
    let created = post(addr, "/v1/jobs", token(1), submit.clone()).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    post(addr, "/v1/jobs", token(2), submit.clone())
        .await
        .expect_error(403, "forbidden");
    post(addr, "/v1/jobs", token(3), submit)
        .await
        .expect_error(404, "not_found");

    // The reader sees it, may not stop it; the outsider does not even see it.
    assert_eq!(
        get(addr, &format!("/v1/jobs/{id}"), token(2)).await.status,
        200
    );
    post(addr, &format!("/v1/jobs/{id}/stop"), token(2), json!({}))
        .await
        .expect_error(403, "forbidden");
    get(addr, &format!("/v1/jobs/{id}"), token(3))
        .await
        .expect_error(404, "not_found");
    post(addr, &format!("/v1/jobs/{id}/cancel"), token(3), json!({}))
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        events(addr, &format!("/v1/jobs/{id}/events/ws"), token(3))
            .await
            .err(),
        Some(404)
    );
    // Listing shows each caller only its contexts' jobs.
    let listed = |t| async move {
        get(addr, "/v1/jobs", t).await.json()["jobs"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(listed(token(2)).await, 1);
    assert_eq!(listed(token(3)).await, 0);

    // The runtime: who, and the server's figures only for server admins.
    let runtime = get(addr, "/v1/runtime", token(3)).await.json();
    assert_eq!(runtime["server_admin"], false);
    assert!(runtime.get("jobs_by_status").is_none(), "{runtime}");
    assert_eq!(
        get(addr, "/v1/runtime", Some(ADMIN)).await.json()["server_admin"],
        true
    );

    // The executor stops it.
    let stopped = post(addr, &format!("/v1/jobs/{id}/stop"), token(1), json!({})).await;
    assert_eq!(stopped.status, 200, "{}", stopped.text);
}

/// A raw JSON-RPC call with a bearer token.
async fn rpc_call(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    request(addr, "POST", "/", token, Some(body.to_string()))
        .await
        .json()
}

/// Transcript pages by sequence number, on a store whose log cap is 300 lines: 400
/// lines logged, so 0..100 are gone.
async fn transcript_pages(server: &TestServer) {
    let addr = server.addr;
    let created = post(
        addr,
        "/v1/jobs",
        None,
        json!({"script": "1", "script_type": "SAL"}),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let job = claim(&server.store).await;
    let page = |q: &str| {
        let path = format!("/v1/jobs/{id}/transcript{q}");
        async move {
            let a = get(addr, &path, None).await;
            assert_eq!(a.status, 200, "{path}: {}", a.text);
            a.json()
        }
    };
    // Nothing logged yet.
    assert_eq!(
        page("").await,
        json!({"job_id": id, "start": 0, "next": 0, "lines": [], "dropped": null})
    );
    server
        .store
        .append_logs(job.id, &lines(0..400))
        .await
        .unwrap();

    // The dropped part of the asked range is named; the page starts at the oldest kept
    // line and holds `limit` lines from there.
    let first = page("?start=90&limit=15").await;
    assert_eq!(first["start"], 100);
    assert_eq!(first["next"], 115);
    assert_eq!(first["dropped"], json!({"from": 90, "to": 100}));
    let seqs: Vec<u64> = first["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (100..115).collect::<Vec<_>>());
    assert_eq!(first["lines"][0]["line"], "line 100");

    // Walking the pages from `next` gives every kept line once, in order, each its own.
    let mut next = 100;
    let mut seen = Vec::new();
    loop {
        let p = page(&format!("?start={next}&limit=7")).await;
        assert_eq!(p["start"], next);
        assert_eq!(p["dropped"], Value::Null);
        let got = p["lines"].as_array().unwrap();
        for l in got {
            let seq = l["seq"].as_u64().unwrap();
            assert_eq!(l["line"], format!("line {seq}"));
            seen.push(seq);
        }
        let after = p["next"].as_u64().unwrap();
        assert_eq!(after, next + got.len() as u64);
        if got.is_empty() {
            break;
        }
        next = after;
    }
    assert_eq!(seen, (100..400).collect::<Vec<_>>());
    assert_eq!(next, 400);

    // The default limit is 256; a larger one is served, up to 10,000.
    let default = page("?start=100").await;
    assert_eq!(default["lines"].as_array().unwrap().len(), 256);
    assert_eq!(default["next"], 356);
    let big = page("?start=100&limit=1000000").await;
    assert_eq!(big["lines"].as_array().unwrap().len(), 300);
    assert_eq!(big["next"], 400);
    // Past the end: nothing.
    let past = page("?start=500").await;
    assert_eq!(past["lines"], json!([]));
    get(addr, &format!("/v1/jobs/{id}/transcript?limit=0"), None)
        .await
        .expect_error(400, "invalid_params");
    get(addr, &format!("/v1/jobs/{id}/transcript?begin=1"), None)
        .await
        .expect_error(400, "invalid_request");
}

#[tokio::test]
async fn transcript_pages_are_exact_on_the_memory_store() {
    let mut config = rpc_support::serve_config(RpcConfig::default(), None);
    config.store.max_log_lines = 300;
    transcript_pages(&TestServer::serve(config).await).await;
}

#[tokio::test]
async fn transcript_pages_are_exact_on_redis() {
    let redis = RedisServer::start();
    let mut config = rpc_support::serve_config(RpcConfig::default(), Some(redis.url()));
    config.store.max_log_lines = 300;
    transcript_pages(&TestServer::serve(config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ws_snapshot_backlog_live_resume_and_end() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let created = post(
        addr,
        "/v1/jobs",
        None,
        json!({"script": "1", "script_type": "SAL"}),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let job = claim(&server.store).await;
    server
        .store
        .append_logs(job.id, &lines(0..5))
        .await
        .unwrap();

    // From cursor 2: the snapshot, lines 2..5, the status.
    let mut ws = events(addr, &format!("/v1/jobs/{id}/events/ws?cursor=2"), None)
        .await
        .unwrap();
    let snapshot = ws.frame().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["job"]["id"], id);
    assert_eq!(snapshot["job"]["status"], "Started");
    assert_eq!(snapshot["cursor"], 2);
    for i in 2..5u64 {
        let f = ws.frame().await;
        assert_eq!(f["type"], "log", "{f}");
        assert_eq!(f["index"], i);
        assert_eq!(f["line"], format!("line {i}"));
        assert_eq!(f["cursor"], i + 1);
        assert_eq!(f["event_id"], format!("log:{i}"));
        assert_eq!(f["job_id"], id);
    }
    let status = ws.frame().await;
    assert_eq!(
        (status["type"].as_str(), status["status"].as_str()),
        (Some("status"), Some("Started"))
    );
    assert_eq!(status["cursor"], 5);

    // Live: two more lines, then the end.
    server
        .store
        .append_logs(job.id, &lines(5..7))
        .await
        .unwrap();
    let f = ws.frame().await;
    assert_eq!(
        (f["index"].as_u64(), f["cursor"].as_u64()),
        (Some(5), Some(6))
    );
    let resume_at = f["cursor"].as_u64().unwrap();
    // A second client resumes from the cursor of line 5: it gets line 6 first.
    let mut resumed = events(
        addr,
        &format!("/v1/jobs/{id}/events/ws?cursor={resume_at}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(resumed.frame().await["type"], "snapshot");
    let f2 = resumed.frame().await;
    assert_eq!(
        (f2["type"].as_str(), f2["index"].as_u64()),
        (Some("log"), Some(6))
    );
    assert_eq!(ws.frame().await["index"], 6);

    server
        .store
        .complete_one(Completion::finish(job.id, job.attempt, "42"))
        .await
        .unwrap();
    for client in [&mut ws, &mut resumed] {
        let mut f = client.frame().await;
        if f["type"] == "status" && f["status"] == "Started" {
            f = client.frame().await;
        }
        assert_eq!(
            (f["type"].as_str(), f["status"].as_str()),
            (Some("status"), Some("Finished")),
            "{f}"
        );
        let end = client.frame().await;
        assert_eq!(end["type"], "end");
        assert_eq!(end["status"], "Finished");
        assert_eq!(end["cursor"], 7);
        assert!(client.next().await.is_none(), "closed after the end");
    }

    // An ended job: snapshot, the whole backlog, the status, the end.
    let mut late = events(addr, &format!("/v1/jobs/{id}/events/ws"), None)
        .await
        .unwrap();
    let mut types = Vec::new();
    while let Some(f) = late.next().await {
        types.push(f["type"].as_str().unwrap().to_owned());
    }
    let mut expected = vec!["snapshot".to_owned()];
    expected.extend(std::iter::repeat_n("log".to_owned(), 7));
    expected.extend(["status".to_owned(), "end".to_owned()]);
    assert_eq!(types, expected);

    // Errors before the upgrade: a bad cursor, an unknown job, a bad id.
    assert_eq!(
        events(addr, &format!("/v1/jobs/{id}/events/ws?cursor=x"), None)
            .await
            .err(),
        Some(400)
    );
    assert_eq!(
        events(addr, &format!("/v1/jobs/{}/events/ws", JobId::new()), None)
            .await
            .err(),
        Some(404)
    );
    assert_eq!(
        events(addr, "/v1/jobs/nope/events/ws", None).await.err(),
        Some(400)
    );
}

/// A cursor whose lines the log cap dropped gets a `cursor_expired` frame, then the
/// lines kept; on Redis, where the cap is a LTRIM. A shutdown ends the stream with an
/// `error` frame and the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ws_expired_cursor_is_announced_on_redis() {
    let redis = RedisServer::start();
    let mut config = rpc_support::serve_config(RpcConfig::default(), Some(redis.url()));
    config.store.max_log_lines = 10;
    let server = TestServer::serve(config).await;
    let created = post(
        server.addr,
        "/v1/jobs",
        None,
        json!({"script": "1", "script_type": "SAL"}),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let job = claim(&server.store).await;
    server
        .store
        .append_logs(job.id, &lines(0..25))
        .await
        .unwrap();

    let mut ws = events(
        server.addr,
        &format!("/v1/jobs/{id}/events/ws?cursor=3"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(ws.frame().await["type"], "snapshot");
    let expired = ws.frame().await;
    assert_eq!(expired["type"], "cursor_expired", "{expired}");
    assert_eq!(expired["requested"], 3);
    assert_eq!(expired["resumed_at"], 15);
    assert_eq!(expired["cursor"], 15);
    for i in 15..25u64 {
        let f = ws.frame().await;
        assert_eq!(
            (f["index"].as_u64(), f["line"].as_str()),
            (Some(i), Some(format!("line {i}").as_str()))
        );
    }
    assert_eq!(ws.frame().await["type"], "status");
    // A server shutting down ends the stream with an error frame, not silence.
    let stopping = tokio::spawn(server.server.stop());
    let f = ws.frame().await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["error"]["code"], "shutting_down");
    assert_eq!(f["cursor"], 25);
    assert!(ws.next().await.is_none());
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the server stops with an event stream open")
        .unwrap();
}

#[tokio::test]
async fn cors_preflight_is_answered_before_auth_for_listed_origins_only() {
    let origin = "https://ops.example.com";
    let config = RpcConfig {
        cors_origins: vec![origin.to_owned()],
        ..with_tokens()
    };
    let server = TestServer::with_config(config).await;
    let preflight = |origin: &'static str, path: &'static str| {
        let addr = server.addr;
        async move {
            request_with(
                addr,
                "OPTIONS",
                path,
                None,
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
            )
            .await
        }
    };
    for path in ["/v1/jobs", "/"] {
        let allowed = preflight(origin, path).await;
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.text);
        assert_eq!(
            allowed.header("access-control-allow-origin").as_deref(),
            Some(origin)
        );
        let methods = allowed.header("access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let headers = allowed
            .header("access-control-allow-headers")
            .unwrap()
            .to_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        assert_eq!(allowed.header("access-control-allow-credentials"), None);

        let refused = preflight("https://evil.example.com", path).await;
        assert_eq!(
            refused.header("access-control-allow-origin"),
            None,
            "{path}"
        );
    }
    // The real request carries the header too, also its 401.
    let answer = request_with(
        server.addr,
        "GET",
        "/v1/runtime",
        Some(ADMIN),
        None,
        &[("origin", origin)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let denied = request_with(
        server.addr,
        "GET",
        "/v1/runtime",
        None,
        None,
        &[("origin", origin)],
    )
    .await;
    denied.expect_error(401, "unauthorized");
    assert_eq!(
        denied.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    // Another site: refused outright (the origin guard), token or not.
    let other = request_with(
        server.addr,
        "GET",
        "/v1/runtime",
        Some(ADMIN),
        None,
        &[("origin", "https://evil.example.com")],
    )
    .await;
    other.expect_error(403, "forbidden_origin");
    assert_eq!(other.header("access-control-allow-origin"), None);

    // Without CORS configured: no CORS headers, and a preflight from another site is
    // refused like any request from there; one from the server's own origin is just a
    // request (here without the token: 401).
    let plain = TestServer::with_config(with_tokens()).await;
    let answer = request_with(
        plain.addr,
        "OPTIONS",
        "/v1/jobs",
        None,
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    answer.expect_error(403, "forbidden_origin");
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let own = format!("http://{}", plain.addr);
    let answer = request_with(
        plain.addr,
        "OPTIONS",
        "/v1/jobs",
        None,
        None,
        &[("origin", &own), ("access-control-request-method", "POST")],
    )
    .await;
    answer.expect_error(401, "unauthorized");
}

/// The status line of a WebSocket upgrade of `path` sent with `origin` (none: no
/// header), over a raw socket.
async fn upgrade_status(addr: std::net::SocketAddr, path: &str, origin: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut head))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The embedded default (loopback, no token: the local user is a server admin) does
/// not let a web page of another site in: browsers apply no CORS to WebSocket upgrades,
/// so without the origin guard any page could open `ws://127.0.0.1:<port>` and run
/// scripts. Tools without `Origin`, and pages of the server's own origin, still get in.
#[tokio::test]
async fn pages_of_other_sites_cannot_open_a_websocket_on_the_default_server() {
    let server = TestServer::start().await;
    let own = format!("http://{}", server.addr);
    for path in [
        "/",
        "/v1/jobs/00000000-0000-4000-8000-000000000000/events/ws",
    ] {
        let refused = upgrade_status(server.addr, path, Some("https://evil.example.com")).await;
        assert!(refused.contains(" 403 "), "{path}: {refused}");
        let null = upgrade_status(server.addr, path, Some("null")).await;
        assert!(null.contains(" 403 "), "{path}: {null}");
    }
    let tool = upgrade_status(server.addr, "/", None).await;
    assert!(tool.contains(" 101 "), "{tool}");
    let page = upgrade_status(server.addr, "/", Some(&own)).await;
    assert!(page.contains(" 101 "), "{page}");
    // A cross-site POST (a "simple" request, no preflight) is refused before it runs.
    let answer = request_with(
        server.addr,
        "POST",
        "/v1/jobs",
        None,
        Some(r#"{"script": "1", "script_type": "SAL"}"#.to_owned()),
        &[("origin", "https://evil.example.com")],
    )
    .await;
    answer.expect_error(403, "forbidden_origin");
    let listed = hero_supervisor::rpc::HeroApiClient::list_jobs(&server.http(), None)
        .await
        .unwrap();
    assert_eq!(listed.into_ids().len(), 0, "nothing was created");
}

#[test]
fn cors_origins_are_checked_at_startup() {
    use hero_supervisor::rpc::{StartError, cors_layer};
    let check =
        |origins: &[&str]| cors_layer(&origins.iter().map(|o| o.to_string()).collect::<Vec<_>>());
    assert!(check(&[]).unwrap().is_none());
    assert!(check(&["*"]).unwrap().is_some());
    assert!(
        check(&["https://a.example", "http://127.0.0.1:8080"])
            .unwrap()
            .is_some()
    );
    for bad in [
        &["*", "https://a.example"][..],
        &["https://a.example/path"],
        &["a.example"],
        &["ftp://a.example"],
        &["https://user@a.example"],
    ] {
        let err = check(bad).unwrap_err();
        assert!(
            matches!(err, StartError::CorsOrigin { .. }),
            "{bad:?}: {err}"
        );
    }
}
