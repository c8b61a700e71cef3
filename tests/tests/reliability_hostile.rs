//! Hostile input on the runner side: a fake runner (a TCP listener this test controls,
//! reached by a `TcpExternal` pool) reads the supervisor's request and answers with
//! random bytes, a 4 GiB length header, a valid frame trickled one byte at a time,
//! 100,000-deep JSON, invalid UTF-8 or a response naming another job. The supervisor
//! must drop that connection (within a bound), retry the job on the next connection
//! (where the fake behaves) or fail it with `runner_lost`, keep serving its other pool,
//! and never allocate what a header claims.
//!
//! Every scenario runs with the supervisor's jobs in the in-memory store and on a Redis
//! Cluster (the shared one, under a key prefix per test): the retry, the `runner_lost`
//! failure and the RPC port's answers go through the cluster store there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Rng;
use hero_protocol::{ExecutionOutcome, Message, decode_frame, encode_frame};
use hero_supervisor::clock::SystemClock;
use hero_supervisor::job::{JobStatus, ScriptType};
use hero_supervisor::pool::{HelloMode, PoolConfig, Transport};
use hero_supervisor::store::{JobStore, MemoryStore, StoreConfig};
use hero_supervisor::{Supervisor, SupervisorConfig};
use hero_testkit::RedisCluster;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostility {
    RandomBytes,
    HugeLengthHeader,
    Trickle,
    DeepNesting,
    InvalidUtf8,
    WrongJobId,
}

/// The request the supervisor sent, as far as the fake needs it.
struct Request {
    job_id: String,
    request_id: String,
    attempt: u32,
}

/// Reads one request frame; `None` on EOF or anything else.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    loop {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes(header) as usize;
        // The supervisor is trusted here; still, do not follow a silly length.
        if len > 16 * 1024 * 1024 {
            return None;
        }
        let mut frame = header.to_vec();
        frame.resize(4 + len, 0);
        stream.read_exact(&mut frame[4..]).await.ok()?;
        if let Ok(Message::Request(r)) = decode_frame(&frame) {
            return Some(Request {
                job_id: r.job_id,
                request_id: r.request_id,
                attempt: r.context.attempt,
            });
        }
        // A cancel or anything else: wait for the next request.
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Writes the hostile answer to `req`. Returns when done writing (the connection stays
/// open: it is up to the supervisor to drop it).
async fn misbehave(stream: &mut TcpStream, how: Hostility, req: &Request, rng: &mut Rng) {
    let bytes = match how {
        Hostility::RandomBytes => {
            let mut body = rng.bytes(4096);
            body[0] = 0xff; // never valid JSON, whatever follows
            frame(&body)
        }
        // 4 GiB - 1 announced, a few bytes given: refused before any buffer is sized.
        Hostility::HugeLengthHeader => vec![0xff, 0xff, 0xff, 0xff, b'{', b'"'],
        Hostility::Trickle => {
            let good = encode_frame(&Message::Response(ExecutionOutcome::success(
                &req.job_id,
                &req.request_id,
                json!("trickled"),
            )))
            .unwrap();
            for b in good {
                if stream.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
        Hostility::DeepNesting => {
            let depth = 100_000;
            let mut body = vec![b'['; depth];
            body.extend(std::iter::repeat_n(b']', depth));
            frame(&body)
        }
        Hostility::InvalidUtf8 => {
            let mut body = format!(
                r#"{{"type":"response","payload":{{"job_id":"{}","request_id":"{}","status":"success","result":""#,
                req.job_id, req.request_id
            )
            .into_bytes();
            body.extend_from_slice(b"\xff\xfe\xc3\x28");
            body.extend_from_slice(br#""}}"#);
            frame(&body)
        }
        Hostility::WrongJobId => encode_frame(&Message::Response(ExecutionOutcome::success(
            hero_supervisor::job::JobId::new().to_string(),
            &req.request_id,
            json!("not yours"),
        )))
        .unwrap(),
    };
    let _ = stream.write_all(&bytes).await;
}

/// Answers every request with success `good <attempt>`, until EOF.
async fn behave(mut stream: TcpStream) {
    while let Some(req) = read_request(&mut stream).await {
        let answer = encode_frame(&Message::Response(ExecutionOutcome::success(
            &req.job_id,
            &req.request_id,
            json!(format!("good {}", req.attempt)),
        )))
        .unwrap();
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A fake runner: its first `hostile` connections misbehave on their first request, the
/// later ones behave. Each hostile connection reports how long the supervisor took to
/// drop it after the hostile bytes.
struct FakeRunner {
    addr: String,
    dropped: mpsc::UnboundedReceiver<Duration>,
    connections: Arc<AtomicUsize>,
}

impl FakeRunner {
    async fn start(how: Hostility, hostile: usize, mut rng: Rng) -> FakeRunner {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, dropped) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n >= hostile {
                    tokio::spawn(behave(stream));
                    continue;
                }
                let (tx, mut rng) = (tx.clone(), rng.fork());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    let sent = Instant::now();
                    misbehave(&mut stream, how, &req, &mut rng).await;
                    // Drain whatever the supervisor still sends (cancels) until it hangs up.
                    let mut sink = [0u8; 1024];
                    let hung_up = tokio::time::timeout(Duration::from_secs(20), async {
                        while let Ok(n) = stream.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    if hung_up.is_ok() {
                        let _ = tx.send(sent.elapsed());
                    }
                });
            }
        });
        FakeRunner {
            addr,
            dropped,
            connections,
        }
    }
}

/// `VmPeak` of this process in KiB: a reservation of 4 GiB would show here even if never
/// touched.
fn vm_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Where a scenario's supervisor keeps its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Memory,
    /// The shared Redis Cluster, under a prefix of the test's own.
    Cluster,
}

impl On {
    /// The store, for the supervisor of the scenario `what`.
    async fn store(self, what: &str) -> Arc<dyn JobStore> {
        match self {
            On::Memory => Arc::new(MemoryStore::new(
                StoreConfig::default(),
                Arc::new(SystemClock),
            )),
            On::Cluster => {
                common::StoreTarget::cluster(RedisCluster::shared(), what)
                    .connect()
                    .await
            }
        }
    }
}

async fn supervisor_with_fake(fake: &FakeRunner, store: Arc<dyn JobStore>) -> Supervisor {
    let mut hostile = PoolConfig::new(
        "fake",
        vec![ScriptType::Sal],
        Transport::TcpExternal {
            addr: fake.addr.clone(),
        },
    );
    // A plain v1 peer: the first frame it gets is the request.
    hostile.hello = HelloMode::Off;
    hostile.max_in_flight = 1;
    let config = SupervisorConfig {
        pools: vec![
            hostile,
            common::runner_pool("good", vec![ScriptType::Python], 1, None),
        ],
        limits: Default::default(),
        dispatch: common::fast_dispatch(),
    };
    Supervisor::start(config, store)
}

/// The hostile answer costs one connection: dropped within `drop_bound`, the job retried
/// on the next connection and finished there; the other pool serves all along.
async fn hostile_answer_costs_one_connection(
    on: On,
    how: Hostility,
    timeout: u64,
    drop_bound: Duration,
) {
    let rng = Rng::from_env(
        "HERO_HOSTILE_SEED",
        &format!("hostile runner {how:?} ({on:?})"),
    );
    let mut fake = FakeRunner::start(how, 1, rng).await;
    let sup = supervisor_with_fake(&fake, on.store("hostile").await).await;
    let peak_before = vm_peak_kib();

    let id = sup
        .create_job(common::params(
            "anything".to_owned(),
            ScriptType::Sal,
            timeout,
            2,
        ))
        .await
        .unwrap();
    sup.start_job(id).await.unwrap();
    // Meanwhile the other pool keeps serving.
    let alive = sup
        .submit_and_wait(common::params(
            "echo alive".to_owned(),
            ScriptType::Python,
            10,
            0,
        ))
        .await;
    assert_eq!(alive.unwrap(), "alive");

    let dropped_after = tokio::time::timeout(drop_bound, fake.dropped.recv())
        .await
        .unwrap_or_else(|_| {
            panic!("{how:?}: the supervisor kept the connection past {drop_bound:?}")
        })
        .expect("the fake reports");
    let job = sup.wait_for_job(id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(job.status, JobStatus::Finished, "{how:?}: {:?}", job.error);
    // After a hard-cancel kick (the trickle case only) the slot may drop its fresh
    // connection once more (a stale `kick` notification: see the suite's bug report),
    // which can cost the retry one more attempt.
    let (attempts, connections) = match how {
        Hostility::Trickle => (2..=3, 2..=3),
        _ => (2..=2, 2..=2),
    };
    assert!(
        attempts.contains(&job.attempt),
        "{how:?}: attempt {}",
        job.attempt
    );
    assert_eq!(job.output, Some(format!("good {}", job.attempt)));
    let seen = fake.connections.load(Ordering::SeqCst);
    assert!(connections.contains(&seen), "{how:?}: {seen} connections");
    let grown_mib = vm_peak_kib().saturating_sub(peak_before) / 1024;
    assert!(grown_mib < 512, "{how:?}: VmPeak grew by {grown_mib} MiB");
    // Still serving after it all.
    let again = sup
        .submit_and_wait(common::params(
            "echo again".to_owned(),
            ScriptType::Sal,
            10,
            0,
        ))
        .await;
    assert_eq!(again.unwrap(), "good 1");
    common::report(format!(
        "hostile runner {how:?} ({on:?}): connection dropped {dropped_after:.1?} after the \
         hostile answer began; job finished on attempt {}; VmPeak +{grown_mib} MiB",
        job.attempt
    ));
    sup.shutdown().await;
}

const PROMPT: Duration = Duration::from_secs(5);

/// One test per store for a hostile answer: `$memory` on the in-memory store, `$cluster`
/// on the shared Redis Cluster.
macro_rules! hostile_answer_tests {
    ($(#[$doc:meta])* $memory:ident, $cluster:ident, $how:expr, $timeout:expr, $bound:expr) => {
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            hostile_answer_costs_one_connection(On::Memory, $how, $timeout, $bound).await;
        }

        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster() {
            hostile_answer_costs_one_connection(On::Cluster, $how, $timeout, $bound).await;
        }
    };
}

hostile_answer_tests!(
    random_bytes_from_a_runner_cost_one_connection,
    random_bytes_from_a_runner_cost_one_connection_on_a_cluster,
    Hostility::RandomBytes,
    10,
    PROMPT
);

hostile_answer_tests!(
    a_4_gib_length_header_is_refused_without_allocating,
    a_4_gib_length_header_is_refused_without_allocating_on_a_cluster,
    Hostility::HugeLengthHeader,
    10,
    PROMPT
);

hostile_answer_tests!(
    deeply_nested_json_from_a_runner_costs_one_connection,
    deeply_nested_json_from_a_runner_costs_one_connection_on_a_cluster,
    Hostility::DeepNesting,
    10,
    PROMPT
);

hostile_answer_tests!(
    invalid_utf8_from_a_runner_costs_one_connection,
    invalid_utf8_from_a_runner_costs_one_connection_on_a_cluster,
    Hostility::InvalidUtf8,
    10,
    PROMPT
);

hostile_answer_tests!(
    a_response_naming_another_job_costs_one_connection,
    a_response_naming_another_job_costs_one_connection_on_a_cluster,
    Hostility::WrongJobId,
    10,
    PROMPT
);

hostile_answer_tests!(
    /// A slow-loris runner (a valid frame, one byte per 100 ms: 15 s) holds its connection
    /// only until the job's deadline (1 s), the cancel grace and the hard-cancel second.
    a_frame_trickled_byte_by_byte_ends_at_the_deadline,
    a_frame_trickled_byte_by_byte_ends_at_the_deadline_on_a_cluster,
    Hostility::Trickle,
    1,
    Duration::from_secs(8)
);

/// A runner hostile on every connection: the job fails with `runner_lost` once its
/// attempts are used up, and the supervisor keeps serving its other pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_hostile_every_time_fails_the_job_with_runner_lost() {
    hostile_every_time(On::Memory).await;
}

/// The same on the shared Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_hostile_every_time_fails_the_job_with_runner_lost_on_a_cluster() {
    hostile_every_time(On::Cluster).await;
}

async fn hostile_every_time(on: On) {
    let rng = Rng::from_env(
        "HERO_HOSTILE_SEED",
        &format!("hostile runner every time ({on:?})"),
    );
    let fake = FakeRunner::start(Hostility::RandomBytes, usize::MAX, rng).await;
    let sup = supervisor_with_fake(&fake, on.store("hostile-every").await).await;
    let id = sup
        .create_job(common::params(
            "anything".to_owned(),
            ScriptType::Sal,
            10,
            2,
        ))
        .await
        .unwrap();
    sup.start_job(id).await.unwrap();
    let job = sup.wait_for_job(id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.attempt, 3);
    assert_eq!(job.error.unwrap().error_type, "runner_lost");
    assert!(fake.connections.load(Ordering::SeqCst) >= 3);
    let alive = sup
        .submit_and_wait(common::params(
            "echo alive".to_owned(),
            ScriptType::Python,
            10,
            0,
        ))
        .await;
    assert_eq!(alive.unwrap(), "alive");
    sup.shutdown().await;
}

/// Sends `request` raw over a fresh connection and returns the status code and body of
/// the answer (`None`: the server hung up without one). Bounded: 10 s.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and hang up) before it has read everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if complete(&answer) {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor hung up within 10 s"
    );
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Whether `answer` holds a whole response with a `content-length` body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .is_some_and(|len| body.len() >= len)
}

fn post(body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The JSON-RPC error code of a 200 answer's body, if it is an error.
fn rpc_error(body: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

/// The JSON-RPC port under hostile requests: each gets an HTTP 4xx or a JSON-RPC error,
/// and the server answers a normal request afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_port_answers_hostile_requests_with_clear_errors() {
    hostile_rpc(On::Memory).await;
}

/// The same with the server on the shared Redis Cluster (`--redis-cluster`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_port_answers_hostile_requests_with_clear_errors_on_a_cluster() {
    hostile_rpc(On::Cluster).await;
}

async fn hostile_rpc(on: On) {
    let mut rng = Rng::from_env("HERO_HOSTILE_SEED", &format!("hostile rpc ({on:?})"));
    let config = SupervisorConfig {
        pools: vec![common::runner_pool(
            "good",
            ScriptType::ALL.to_vec(),
            1,
            None,
        )],
        limits: Default::default(),
        dispatch: common::fast_dispatch(),
    };
    let serve = hero_supervisor::config::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        supervisor: config,
        ..Default::default()
    };
    let serve = match on {
        On::Memory => serve,
        On::Cluster => {
            common::StoreTarget::cluster(RedisCluster::shared(), "hostile-rpc").serve_config(serve)
        }
    };
    let server = hero_supervisor::server::start(serve).await.unwrap();
    let addr = server.addr();
    let call = |method: &str, params: serde_json::Value| {
        post(
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
                .to_string()
                .as_bytes(),
        )
    };

    // Not HTTP at all.
    let mut noise = rng.bytes(4096);
    noise[0] = 0xff;
    match raw_http(addr, &noise).await {
        None => {}
        Some((status, _)) => assert!((400..500).contains(&status), "random bytes: {status}"),
    }
    // A 10 MB body (the limit is 2 MiB).
    let big = vec![b' '; 10 * 1024 * 1024];
    let (status, body) = raw_http(addr, &post(&big))
        .await
        .expect("an answer to 10 MB");
    assert!(
        (400..500).contains(&status) || rpc_error(&body).is_some(),
        "10 MB body: {status} {body}"
    );
    // Invalid UTF-8 inside the JSON.
    let mut bad = br#"{"jsonrpc":"2.0","id":1,"method":"get_job_status","params":[""#.to_vec();
    bad.extend_from_slice(b"\xff\xfe\xc3\x28");
    bad.extend_from_slice(br#""]}"#);
    let (status, body) = raw_http(addr, &post(&bad)).await.expect("an answer");
    assert!(
        // jsonrpsee answers -32600 (invalid request) rather than -32700 (parse error).
        (400..500).contains(&status) || matches!(rpc_error(&body), Some(-32700 | -32600)),
        "invalid utf-8: {status} {body}"
    );
    // Unknown method.
    let (status, body) = raw_http(addr, &call("no_such_method", json!([])))
        .await
        .unwrap();
    assert_eq!((status, rpc_error(&body)), (200, Some(-32601)), "{body}");
    // Wrong param types.
    for (method, params) in [
        ("create_job", json!([5])),
        ("create_job", json!({"params": "not an object"})),
        ("get_job_status", json!([{"id": 1}])),
        ("run_job", json!([1, 2, 3, "four"])),
    ] {
        let (status, body) = raw_http(addr, &call(method, params.clone())).await.unwrap();
        assert_eq!(
            (status, rpc_error(&body)),
            (200, Some(-32602)),
            "{method} {params}: {body}"
        );
    }
    // Hostile job ids: each a clear error, never a result.
    let long = "x".repeat(10 * 1024);
    // Hash tags and server-wide key names too (on a cluster, a key's slot follows its
    // tag), and a well-formed id of a numbered context that holds no such job.
    for id in [
        "*",
        "hero:job:*",
        "a b",
        "a\nb",
        "a:b",
        "{c1}",
        "hero:{s}:spaces",
        "00000001-0000-8000-8000-000000000000",
        long.as_str(),
    ] {
        for method in [
            "get_job_status",
            "get_job",
            "stop_job",
            "delete_job",
            "start_job",
        ] {
            let (status, body) = raw_http(addr, &call(method, json!([id]))).await.unwrap();
            let code = rpc_error(&body);
            assert!(
                status == 200 && code.is_some(),
                "{method}({:?}): {status} {body}",
                &id[..id.len().min(20)]
            );
        }
    }
    // Still serving.
    let (status, body) = raw_http(addr, &call("list_jobs", json!([]))).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!((status, v["result"].is_array()), (200, true), "{body}");
    server.stop().await;
}
