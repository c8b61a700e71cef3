//! Signed asynchronous calls end to end: real servers (the library entry point, or the
//! `hero-supervisor` binary where a process must die), the built-in runner running real
//! scripts, a real HTTP receiver started by the test, and signatures made and checked
//! with `k256` here, never through the server's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hero_supervisor::calls::{CallsConfig, ServerKey};
use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::SupervisorConfig;
use hero_testkit::{RedisServer, free_tcp_port};
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod rpc_support;

use rpc_support::expect_code;

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");

// ---------------------------------------------------------------------------------
// A caller: a secp256k1 key that signs calls the way COORDINATION.md §2 says.

struct Caller {
    key: SigningKey,
}

impl Caller {
    fn new(seed: u8) -> Caller {
        Caller {
            key: SigningKey::from_slice(&[seed; 32]).unwrap(),
        }
    }

    fn pubkey(&self) -> String {
        hex::encode(self.key.verifying_key().to_encoded_point(true).as_bytes())
    }

    fn sign(&self, message: &str) -> String {
        let sig: Signature = self.key.sign(message.as_bytes());
        hex::encode(sig.to_bytes())
    }

    /// The `rpc_in` params object, signed.
    fn rpc_in(
        &self,
        rpc_id: &str,
        method: &str,
        params: &Value,
        is_async: bool,
        return_url: Option<&str>,
        topic: Option<&str>,
    ) -> Value {
        let params = params.to_string();
        let signed = format!(
            "{rpc_id}{method}{params}{}{}",
            return_url.unwrap_or_default(),
            topic.unwrap_or_default()
        );
        let mut p = json!({
            "rpc_id": rpc_id, "method_name": method, "params": params,
            "pubkey": self.pubkey(), "signature": self.sign(&signed), "async": is_async,
        });
        if let Some(url) = return_url {
            p["return_url"] = json!(url);
        }
        if let Some(topic) = topic {
            p["return_topic"] = json!(topic);
        }
        p
    }

    /// `rpc_check`'s / `rpc_kill`'s params object, signed.
    fn reference(&self, rpc_id: &str) -> Value {
        json!({"rpc_id": rpc_id, "pubkey": self.pubkey(), "signature": self.sign(rpc_id)})
    }
}

/// Checks an `rpc_return` body with k256: signed by `server_pubkey` over
/// `rpc_id + method_name + params + result`.
fn verify_return(body: &Value, server_pubkey: &str) {
    assert_eq!(
        body["pubkey"],
        json!(server_pubkey),
        "signed by the server's key"
    );
    let signed = format!(
        "{}{}{}{}",
        body["rpc_id"].as_str().unwrap(),
        body["method_name"].as_str().unwrap(),
        body["params"].as_str().unwrap(),
        body["result"].as_str().unwrap()
    );
    let key = VerifyingKey::from_sec1_bytes(&hex::decode(server_pubkey).unwrap()).unwrap();
    let sig =
        Signature::from_slice(&hex::decode(body["signature"].as_str().unwrap()).unwrap()).unwrap();
    key.verify(signed.as_bytes(), &sig)
        .expect("the rpc_return signature verifies");
    let mut tampered = signed.into_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(key.verify(&tampered, &sig).is_err());
}

// ---------------------------------------------------------------------------------
// A receiver: a real HTTP server that records every POST body and answers 503 to the
// first `fail_first` of them.

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    posts: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        Self::on(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            fail_first,
        )
    }

    fn on(listener: tokio::net::TcpListener, fail_first: usize) -> Receiver {
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            bodies: Arc::default(),
            posts: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move { r.serve(stream).await });
            }
        });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/results", self.addr)
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let (head_end, length) = loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while raw.len() < head_end + length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        self.posts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if failing {
            "503 Service Unavailable"
        } else {
            let body: Value = serde_json::from_slice(&raw[head_end..head_end + length]).unwrap();
            self.bodies.lock().unwrap().push(body);
            "200 OK"
        };
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(answer.as_bytes()).await;
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    async fn wait_bodies(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.bodies().len() >= n {
                return self.bodies();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the receiver got {} results, not {n} (posts: {})",
            self.bodies().len(),
            self.posts.load(Ordering::SeqCst)
        );
    }
}

// ---------------------------------------------------------------------------------
// Servers.

/// The built-in runner, spawned from the real executable.
fn builtin_runner() -> SupervisorConfig {
    SupervisorConfig::with_runner_command(BIN, vec!["runner".to_owned(), "--stdio".to_owned()])
}

fn fast_calls() -> CallsConfig {
    CallsConfig {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        delivery_timeout: Duration::from_secs(5),
        ..CallsConfig::default()
    }
}

async fn serve(calls: CallsConfig, redis_url: Option<String>) -> RunningServer {
    server::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url,
        rpc: RpcConfig {
            calls,
            ..RpcConfig::default()
        },
        supervisor: builtin_runner(),
        ..ServeConfig::default()
    })
    .await
    .expect("start the server")
}

fn client(addr: SocketAddr) -> HttpClient {
    http_client(&format!("http://{addr}"), None).unwrap()
}

async fn call(c: &HttpClient, method: &str, params: Value) -> Result<Value, ClientError> {
    c.request(method, rpc_params![params]).await
}

async fn server_pubkey(c: &HttpClient) -> String {
    let info: Value = c.request("server_info", rpc_params![]).await.unwrap();
    info["pubkey"].as_str().unwrap().to_owned()
}

async fn jobs(c: &HttpClient) -> usize {
    let ids: Vec<String> = c.request("list_jobs", rpc_params![]).await.unwrap();
    ids.len()
}

async fn wait_call(
    c: &HttpClient,
    caller: &Caller,
    rpc_id: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = call(c, "rpc_check", caller.reference(rpc_id))
            .await
            .unwrap();
        if want(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "call never got there: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_run_job_is_delivered_once_signed_and_a_replay_runs_nothing() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let receiver = Receiver::start(0).await;
    let alice = Caller::new(7);
    let params = json!(["print(\"side effect\"); 40 + 2", "SAL"]);
    let p = alice.rpc_in(
        "r-1",
        "run_job",
        &params,
        true,
        Some(&receiver.url()),
        Some("sums"),
    );

    let accepted = call(&c, "rpc_in", p.clone()).await.unwrap();
    assert_eq!(accepted, json!({"rpc_id": "r-1", "status": "pending"}));

    let bodies = receiver.wait_bodies(1, Duration::from_secs(30)).await;
    let body = &bodies[0];
    verify_return(body, &server_pubkey(&c).await);
    assert_eq!(body["rpc_id"], json!("r-1"));
    assert_eq!(body["topic"], json!("sums"));
    assert_eq!(body["method_name"], json!("run_job"));
    assert_eq!(body["status"], json!("done"));
    assert_eq!(
        body["result"],
        json!("\"42\""),
        "the result is the JSON text of run_job's answer"
    );
    assert_eq!(body["params"], json!(params.to_string()));

    // Replays, async and not: the first call's state; nothing runs again.
    let again = call(&c, "rpc_in", p.clone()).await.unwrap();
    assert_eq!(again, json!({"rpc_id": "r-1", "status": "done"}));
    let sync_replay = alice.rpc_in(
        "r-1",
        "run_job",
        &params,
        false,
        Some(&receiver.url()),
        Some("sums"),
    );
    assert_eq!(call(&c, "rpc_in", sync_replay).await.unwrap(), json!("42"));
    assert_eq!(
        jobs(&c).await,
        1,
        "the side-effect ledger: one job for one rpc_id"
    );

    let state = wait_call(&c, &alice, "r-1", |s| s["delivery"] == "delivered").await;
    assert_eq!(state["status"], json!("done"));
    assert_eq!(state["result"], json!("42"));
    assert_eq!(state["attempt_count"], json!(1));
    assert_eq!(state["attempts"][0]["http_status"], json!(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.bodies().len(), 1, "delivered exactly once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_acts_as_the_signer_and_answers_like_the_method() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let bob = Caller::new(9);
    let who = call(
        &c,
        "rpc_in",
        bob.rpc_in("w", "whoami", &json!([]), false, None, None),
    )
    .await
    .unwrap();
    assert_eq!(
        who,
        json!(bob.pubkey()),
        "the call acts as the signer's key"
    );
    // A method's error comes back as the call's error, and is kept as its state.
    let bad = bob.rpc_in(
        "e",
        "get_job_status",
        &json!(["not-an-id"]),
        false,
        None,
        None,
    );
    expect_code(call(&c, "rpc_in", bad).await, -32602, "invalid_job_id");
    let state = call(&c, "rpc_check", bob.reference("e")).await.unwrap();
    assert_eq!(state["status"], json!("error"));
    assert_eq!(state["result"]["error"]["code"], json!(-32602));
    // Named params work as well as positional ones.
    let named = json!({"script": "6 * 7", "script_type": "SAL"});
    let out = call(
        &c,
        "rpc_in",
        bob.rpc_in("n", "run_job", &named, false, None, None),
    )
    .await
    .unwrap();
    assert_eq!(out, json!("42"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_clear_errors_and_run_nothing() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let alice = Caller::new(7);
    let mallory = Caller::new(8);
    let job = json!(["1", "SAL"]);

    // Another key's signature.
    let mut p = alice.rpc_in("x1", "run_job", &job, false, None, None);
    p["signature"] = json!(mallory.sign("x1run_job[\"1\",\"SAL\"]"));
    expect_code(call(&c, "rpc_in", p).await, -32005, "unauthorized");
    // One changed byte of params.
    let mut p = alice.rpc_in("x2", "run_job", &job, false, None, None);
    p["params"] = json!("[\"2\",\"SAL\"]");
    expect_code(call(&c, "rpc_in", p).await, -32005, "unauthorized");
    // A return_url outside the allow-list (default: loopback only).
    let p = alice.rpc_in("x3", "run_job", &job, true, Some("http://10.9.8.7/r"), None);
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    let p = alice.rpc_in(
        "x4",
        "run_job",
        &job,
        true,
        Some("file:///etc/passwd"),
        None,
    );
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    // A huge params text (over the 1 MiB limit, under the request limit).
    let huge = json!([format!("\"{}\"", "a".repeat(1_200_000)), "SAL"]);
    let p = alice.rpc_in("x5", "run_job", &huge, false, None, None);
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    // Not a served method; a call method; a subscription; params that are not JSON.
    for method in [
        "no_such_method",
        "rpc_in",
        "rpc_check",
        "subscribe_job_events",
    ] {
        let p = alice.rpc_in("x6", method, &json!([]), false, None, None);
        expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    }
    let mut p = alice.rpc_in("x7", "whoami", &json!([]), false, None, None);
    p["params"] = json!("{not json");
    p["signature"] = json!(alice.sign("x7whoami{not json"));
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    // A pubkey that is not a point, an empty rpc_id.
    let mut p = alice.rpc_in("x8", "whoami", &json!([]), false, None, None);
    p["pubkey"] = json!("02".to_owned() + &"ff".repeat(32));
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");
    let p = alice.rpc_in("", "whoami", &json!([]), false, None, None);
    expect_code(call(&c, "rpc_in", p).await, -32602, "invalid_params");

    assert_eq!(jobs(&c).await, 0, "nothing ran");
    for id in ["x1", "x2", "x3", "x5"] {
        expect_code(
            call(&c, "rpc_check", alice.reference(id)).await,
            -32001,
            "call_not_found",
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_result_once_it_is_back() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let receiver = Receiver::start(3).await;
    let alice = Caller::new(7);
    let p = alice.rpc_in(
        "down",
        "run_job",
        &json!(["1 + 1", "SAL"]),
        true,
        Some(&receiver.url()),
        None,
    );
    call(&c, "rpc_in", p).await.unwrap();
    let bodies = receiver.wait_bodies(1, Duration::from_secs(30)).await;
    verify_return(&bodies[0], &server_pubkey(&c).await);
    let state = wait_call(&c, &alice, "down", |s| s["delivery"] == "delivered").await;
    assert_eq!(state["attempt_count"], json!(4), "three 503s, then the 200");
    let statuses: Vec<Value> = state["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(503), json!(503), json!(503), json!(200)]
    );
    assert!(
        state["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.bodies().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_caller_can_kill_its_call_and_the_job_stops() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let alice = Caller::new(7);
    let mallory = Caller::new(8);
    let slow = json!([
        "import time\ntime.sleep(60)\nprint('never')",
        "Python",
        null,
        120
    ]);
    call(
        &c,
        "rpc_in",
        alice.rpc_in("slow", "run_job", &slow, true, None, None),
    )
    .await
    .unwrap();
    let running = wait_call(&c, &alice, "slow", |s| s["job_id"].is_string()).await;
    let job_id = running["job_id"].as_str().unwrap().to_owned();

    // Someone else sees nothing, and stops nothing.
    expect_code(
        call(&c, "rpc_kill", mallory.reference("slow")).await,
        -32001,
        "call_not_found",
    );
    let mut forged = alice.reference("slow");
    forged["signature"] = json!(mallory.sign("slow"));
    expect_code(call(&c, "rpc_kill", forged).await, -32005, "unauthorized");
    let status: String = c
        .request("get_job_status", rpc_params![&job_id])
        .await
        .unwrap();
    assert_ne!(status, "Error");

    let killed = call(&c, "rpc_kill", alice.reference("slow")).await.unwrap();
    assert_eq!(killed["status"], json!("error"), "{killed}");
    let status: String = c
        .request("get_job_status", rpc_params![&job_id])
        .await
        .unwrap();
    assert_eq!(status, "Error", "the job was stopped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_run_one_rpc_id_once_and_share_idempotency_keys() {
    let redis = RedisServer::start();
    let key = ServerKey::generate();
    let calls = CallsConfig {
        server_key: Some(key.clone()),
        ..fast_calls()
    };
    let a = serve(calls.clone(), Some(redis.url())).await;
    let b = serve(calls, Some(redis.url())).await;
    let (ca, cb) = (client(a.addr()), client(b.addr()));
    let alice = Caller::new(7);
    let p = alice.rpc_in(
        "shared",
        "run_job",
        &json!(["21 * 2", "SAL"]),
        false,
        None,
        None,
    );
    let (ra, rb) = tokio::join!(call(&ca, "rpc_in", p.clone()), call(&cb, "rpc_in", p));
    let answers = [ra.unwrap(), rb.unwrap()];
    assert!(answers.contains(&json!("42")), "{answers:?}");
    for answer in &answers {
        assert!(
            *answer == json!("42") || answer["rpc_id"] == json!("shared"),
            "the loser answers the call's state: {answer}"
        );
    }
    assert_eq!(
        jobs(&ca).await,
        1,
        "one job for one rpc_id across instances"
    );

    // create_job's idempotency key, through either instance.
    let create = json!({"script": "1", "script_type": "SAL", "idempotency_key": "k-1"});
    let first: String = ca
        .request("create_job", rpc_params![create.clone()])
        .await
        .unwrap();
    let second: String = cb.request("create_job", rpc_params![create]).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(jobs(&ca).await, 2);

    // One outbox shared by both: every result delivered, none twice.
    let receiver = Receiver::start(0).await;
    for i in 0..20 {
        let id = format!("out-{i}");
        let via = if i % 2 == 0 { &ca } else { &cb };
        let p = alice.rpc_in(&id, "whoami", &json!([]), true, Some(&receiver.url()), None);
        call(via, "rpc_in", p).await.unwrap();
    }
    receiver.wait_bodies(20, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delivered: Vec<String> = receiver
        .bodies()
        .iter()
        .map(|b| b["rpc_id"].as_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 20);
    assert_eq!(receiver.bodies().len(), 20, "no result delivered twice");
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------
// Through a SIGKILL: the binary on Redis.

struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    async fn start(redis: &RedisServer, key_file: &std::path::Path, port: u16) -> Process {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--redis-url",
                &redis.url(),
            ])
            .arg("--server-key")
            .arg(key_file)
            .env_remove("HERO_AUTH_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hero-supervisor");
        let p = Process { child, addr };
        let c = client(addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        while c
            .request::<Value, _>("server_info", rpc_params![])
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "hero-supervisor did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_waiting_in_the_outbox_survives_a_sigkill() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.key");
    let port = free_tcp_port();
    // The receiver is down (503) until the supervisor has been killed.
    let receiver = Receiver::start(usize::MAX).await;
    let first = Process::start(&redis, &key_file, port).await;
    let c = client(first.addr);
    let pubkey = server_pubkey(&c).await;
    let alice = Caller::new(7);
    let p = alice.rpc_in(
        "k",
        "run_job",
        &json!(["40 + 2", "SAL"]),
        true,
        Some(&receiver.url()),
        None,
    );
    call(&c, "rpc_in", p).await.unwrap();
    // The job ended and a delivery was tried: the result is in the outbox.
    let state = wait_call(&c, &alice, "k", |s| s["attempt_count"].as_u64() >= Some(1)).await;
    assert_eq!(state["status"], json!("done"));
    first.kill();

    receiver.fail_first.store(0, Ordering::SeqCst);
    let second = Process::start(&redis, &key_file, free_tcp_port()).await;
    let c = client(second.addr);
    assert_eq!(
        server_pubkey(&c).await,
        pubkey,
        "the key file kept the server's key"
    );
    let bodies = receiver.wait_bodies(1, Duration::from_secs(30)).await;
    verify_return(&bodies[0], &pubkey);
    assert_eq!(bodies[0]["result"], json!("\"42\""));
    let state = wait_call(&c, &alice, "k", |s| s["delivery"] == "delivered").await;
    assert!(state["attempt_count"].as_u64().unwrap() >= 2);
    assert_eq!(jobs(&c).await, 1, "the job ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_params_and_results_go_both_ways() {
    use hero_supervisor::calls::ecies;

    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let receiver = Receiver::start(0).await;
    let server_key = server_pubkey(&c).await;
    let info: Value = c.request("server_info", rpc_params![]).await.unwrap();
    assert_eq!(info["encryption"], json!(["ecies-secp256k1-aes256gcm"]));
    let alice = Caller::new(7);
    let secret = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let encrypted = |plain: &str| ecies::encrypt_hex(&server_key, plain.as_bytes()).unwrap();
    let envelope = |rpc_id: &str, params_hex: String, is_async: bool, url: Option<&str>| {
        let signed = format!("{rpc_id}run_job{params_hex}{}", url.unwrap_or_default());
        let mut p = json!({
            "rpc_id": rpc_id, "method_name": "run_job", "params": params_hex,
            "pubkey": alice.pubkey(), "signature": alice.sign(&signed), "async": is_async,
            "encryption": "ecies-secp256k1-aes256gcm",
        });
        if let Some(url) = url {
            p["return_url"] = json!(url);
        }
        p
    };
    let decrypt = |text: &Value| -> String {
        let hex: String = serde_json::from_value(text.clone()).unwrap();
        String::from_utf8(ecies::decrypt_hex(&secret, &hex).unwrap()).unwrap()
    };

    // Synchronous: the answer is the result text encrypted to the caller.
    let answer = call(
        &c,
        "rpc_in",
        envelope("e1", encrypted(r#"["6 * 7","SAL"]"#), false, None),
    )
    .await
    .unwrap();
    assert_eq!(decrypt(&answer), "\"42\"");

    // Asynchronous: the delivered result too; the signature covers the ciphertext.
    let p = envelope(
        "e2",
        encrypted(r#"["1 + 2","SAL"]"#),
        true,
        Some(&receiver.url()),
    );
    call(&c, "rpc_in", p).await.unwrap();
    let body = receiver
        .wait_bodies(1, Duration::from_secs(30))
        .await
        .remove(0);
    verify_return(&body, &server_key);
    let result: Value = serde_json::from_str(body["result"].as_str().unwrap()).unwrap();
    assert_eq!(decrypt(&result), "\"3\"");
    assert!(
        !body.to_string().contains("1 + 2"),
        "the params travel encrypted"
    );

    // A failure is encrypted as well.
    let answer = call(
        &c,
        "rpc_in",
        envelope("e3", encrypted(r#"["1","Nope"]"#), false, None),
    )
    .await
    .unwrap();
    let error: Value = serde_json::from_str(&decrypt(&answer)).unwrap();
    assert_eq!(error["error"]["code"], json!(-32602));

    // Params that are not a message to the server's key: refused before anything runs.
    let other = ecies::encrypt_hex(&alice.pubkey(), b"[\"1\",\"SAL\"]").unwrap();
    expect_code(
        call(&c, "rpc_in", envelope("e4", other, false, None)).await,
        -32602,
        "invalid_params",
    );
    expect_code(
        call(&c, "rpc_in", envelope("e5", "zz".into(), false, None)).await,
        -32602,
        "invalid_params",
    );
    assert_eq!(jobs(&c).await, 2, "the two good runs only");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_caller_that_hangs_up_does_not_cut_the_call_short() {
    let server = serve(fast_calls(), None).await;
    let c = client(server.addr());
    let impatient = jsonrpsee::http_client::HttpClientBuilder::default()
        .request_timeout(Duration::from_millis(300))
        .build(format!("http://{}", server.addr()))
        .unwrap();
    let alice = Caller::new(7);
    let slow = json!([
        "import time\ntime.sleep(1.5)\nprint('late')",
        "Python",
        null,
        30
    ]);
    let p = alice.rpc_in("hang-up", "run_job", &slow, false, None, None);
    assert!(
        call(&impatient, "rpc_in", p).await.is_err(),
        "the client gave up"
    );
    drop(impatient);
    let state = wait_call(&c, &alice, "hang-up", |s| s["status"] == "done").await;
    assert_eq!(state["result"], json!("late"));
    server.stop().await;
}
