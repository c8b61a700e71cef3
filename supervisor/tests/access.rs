//! Actors, contexts and roles against a real server over real sockets: the matrix in
//! `access_matrix.md` (every method x every kind of caller, over HTTP and WebSocket),
//! signature-authenticated actors seeing only their own contexts, two instances on one
//! Redis enforcing the same rules, and hostile input to the directory methods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use hero_supervisor::access::{Directory, MemoryDirectory, RedisDirectory};
use hero_supervisor::clock::SystemClock;
use hero_supervisor::job::ScriptType;
use hero_supervisor::pool::{PoolConfig, Transport};
use hero_supervisor::rpc::auth::{Grant, TokenGrant};
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::{RpcConfig, start_on};
use hero_supervisor::service::{Supervisor, SupervisorConfig};
use hero_supervisor::store::{JobStore, MemoryStore, RedisStore, StoreConfig};
use hero_testkit::{RedisCluster, RedisServer};
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::server::ServerHandle;
use k256::ecdsa::signature::Signer;
use k256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "t-server-admin";
/// Token per actor id: the context admin (1), executor (2), reader (3), outsider (4).
const ACTOR_TOKENS: [(u32, &str); 4] = [
    (1, "t-ctx-admin"),
    (2, "t-executor"),
    (3, "t-reader"),
    (4, "t-outsider"),
];
const CONTEXT: u32 = 7;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid secret key")
}

fn pubkey(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_encoded_point(true).as_bytes())
}

struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    supervisor: Supervisor,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

/// A server whose SAL jobs run on the built-in runner (nothing serves OSIS: those jobs
/// stay queued), with the matrix's tokens, over `store` and `directory`.
async fn server(store: Arc<dyn JobStore>, directory: Arc<dyn Directory>) -> Server {
    let builtin = PoolConfig::new(
        "builtin-sal",
        vec![ScriptType::Sal],
        Transport::Stdio {
            program: env!("CARGO_BIN_EXE_hero-supervisor").to_owned(),
            args: vec!["runner".to_owned(), "--stdio".to_owned()],
        },
    );
    let supervisor = Supervisor::start(
        SupervisorConfig {
            pools: vec![builtin],
            ..SupervisorConfig::with_builtin_runners()
        },
        store,
    );
    let tokens = ACTOR_TOKENS
        .iter()
        .map(|(id, t)| TokenGrant::from_token(t, Grant::Actor(*id)).expect("a token"))
        .collect();
    let config = RpcConfig {
        auth_token: Some(ADMIN_TOKEN.to_owned()),
        tokens,
        directory: Some(directory),
        ..RpcConfig::default()
    };
    let (addr, handle) = start_on(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        supervisor.clone(),
    )
    .await
    .expect("start the rpc server");
    Server {
        addr,
        handle,
        supervisor,
    }
}

async fn memory_server() -> Server {
    let store = Arc::new(MemoryStore::new(
        StoreConfig::default(),
        Arc::new(SystemClock),
    ));
    server(store, Arc::new(MemoryDirectory::new())).await
}

/// A client of either transport, with `token` (or none).
enum Client {
    Http(jsonrpsee::http_client::HttpClient),
    Ws(jsonrpsee::ws_client::WsClient),
}

impl Client {
    async fn new(server: &Server, ws: bool, token: Option<&str>) -> Result<Client, ClientError> {
        let url = format!("http://{}", server.addr);
        Ok(if ws {
            Client::Ws(ws_client(&url, token).await?)
        } else {
            Client::Http(http_client(&url, token)?)
        })
    }

    async fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        let mut p = ArrayParams::new();
        for v in params {
            p.insert(v).expect("serializable");
        }
        match self {
            Client::Http(c) => c.request(method, p).await,
            Client::Ws(c) => c.request(method, p).await,
        }
    }

    async fn subscribe(&self, job_id: &str) -> Result<(), ClientError> {
        let Client::Ws(c) = self else {
            unreachable!("subscriptions are checked over WebSocket only")
        };
        let mut p = ArrayParams::new();
        p.insert(job_id).expect("serializable");
        c.subscribe::<Value, _>("subscribe_job_events", p, "unsubscribe_job_events")
            .await
            .map(drop)
    }
}

/// "ok", the JSON-RPC error code, or "401".
fn outcome<T>(r: Result<T, ClientError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(ClientError::Call(e)) => e.code().to_string(),
        Err(other) if other.to_string().contains("401") => "401".to_owned(),
        Err(other) => format!("unexpected: {other}"),
    }
}

/// Registers actors 1..=4 and context 7 through the API, as a server admin.
async fn set_up(admin: &Client) {
    for (id, _) in ACTOR_TOKENS {
        let actor = json!({"actor": {"id": id, "pubkey": pubkey(&key(id as u8)), "address": ["127.0.0.1"]}});
        admin
            .call("actor.create", vec![actor])
            .await
            .expect("actor.create");
    }
    let context =
        json!({"context": {"id": CONTEXT, "admins": [1], "executors": [2], "readers": [3]}});
    admin
        .call("context.create", vec![context])
        .await
        .expect("context.create");
}

/// A job of context 7 made by the server admin: `Created`, or queued when `start`.
async fn job(admin: &Client, start: bool) -> String {
    let params = json!({"script": "1", "script_type": "OSIS", "context_id": CONTEXT.to_string()});
    let id = admin
        .call("create_job", vec![params])
        .await
        .expect("create_job");
    let id = id.as_str().expect("an id").to_owned();
    if start {
        admin
            .call("start_job", vec![json!(id)])
            .await
            .expect("start_job");
    }
    id
}

/// The matrix file: method -> the expected cell per caller column.
fn matrix() -> Vec<(String, Vec<String>)> {
    let text = include_str!("access_matrix.md");
    let rows: Vec<(String, Vec<String>)> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method") && !l.starts_with("|---"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect();
    assert!(rows.len() >= 20, "the matrix has {} rows", rows.len());
    assert!(
        rows.iter().all(|(_, cells)| cells.len() == 6),
        "six columns per row"
    );
    rows
}

/// One call of `method` as the matrix describes it.
async fn act(method: &str, client: &Client, admin: &Client) -> String {
    let ctx = CONTEXT.to_string();
    match method {
        "whoami" | "list_runners" | "rpc.discover" | "list_jobs" => {
            outcome(client.call(method, vec![]).await)
        }
        "list_jobs(filter)" => {
            let filter = json!({"context_id": ctx, "status": "Dispatched", "limit": 10});
            outcome(client.call("list_jobs", vec![filter]).await)
        }
        "stats" => outcome(client.call(method, vec![]).await),
        "fetch_nonce" => outcome(client.call(method, vec![json!(pubkey(&key(9)))]).await),
        "create_job" => {
            let p = json!({"script": "1", "script_type": "OSIS", "context_id": ctx});
            outcome(client.call(method, vec![p]).await)
        }
        "create_jobs" => {
            let p = json!({"script": "1", "script_type": "OSIS", "context_id": ctx});
            outcome(client.call(method, vec![json!([p.clone(), p])]).await)
        }
        "start_job" => {
            let id = job(admin, false).await;
            outcome(client.call(method, vec![json!(id)]).await)
        }
        "run_job" => outcome(
            client
                .call(method, vec![json!("40 + 2"), json!("SAL")])
                .await,
        ),
        "play" => outcome(client.call(method, vec![json!("40 + 2")]).await),
        "run_job(context)" => outcome(
            client
                .call(
                    "run_job",
                    vec![
                        json!("40 + 2"),
                        json!("SAL"),
                        json!(null),
                        json!(30),
                        json!(ctx),
                    ],
                )
                .await,
        ),
        "play(context)" => outcome(client.call("play", vec![json!("40 + 2"), json!(ctx)]).await),
        "get_job_status" | "get_job_output" | "get_job_logs" | "get_job" | "stop_job"
        | "delete_job" => {
            let id = job(admin, true).await;
            outcome(client.call(method, vec![json!(id)]).await)
        }
        "subscribe_job_events" => {
            let id = job(admin, true).await;
            outcome(client.subscribe(&id).await)
        }
        "clear_all_jobs" => outcome(client.call(method, vec![]).await),
        "actor.create" => {
            let p = json!({"actor": {"id": 99, "pubkey": pubkey(&key(99)), "address": []}});
            outcome(client.call(method, vec![p]).await)
        }
        "actor.load" => outcome(client.call(method, vec![json!({"id": 2})]).await),
        "context.create" => {
            let p = json!({"context": {"id": CONTEXT, "admins": [1], "executors": [2], "readers": [3]}});
            outcome(client.call(method, vec![p]).await)
        }
        "context.load" => outcome(client.call(method, vec![json!({"id": CONTEXT})]).await),
        "job.create" => {
            let id = fresh_id();
            outcome(client.call(method, vec![coordinator_job(id)]).await)
        }
        "job.load" => {
            let id = coordinator_flow(admin, false).await;
            let p = json!({"context_id": CONTEXT, "caller_id": 0, "id": id});
            outcome(client.call(method, vec![p]).await)
        }
        "flow.create" => {
            let id = fresh_id();
            admin
                .call("job.create", vec![coordinator_job(id)])
                .await
                .expect("job.create");
            let p = json!({"context_id": CONTEXT, "flow": {"id": id, "caller_id": 0,
                "context_id": CONTEXT, "jobs": [id], "env_vars": {}}});
            outcome(client.call(method, vec![p]).await)
        }
        "flow.load" | "flow.dag" | "flow.start" => {
            let id = coordinator_flow(admin, true).await;
            let p = json!({"context_id": CONTEXT, "id": id});
            outcome(client.call(method, vec![p]).await)
        }
        "runner.create" => {
            let p = json!({"context_id": CONTEXT, "runner": {"id": fresh_id(), "pubkey": "",
                "address": "127.0.0.1", "topic": "t", "local": true}});
            outcome(client.call(method, vec![p]).await)
        }
        "runner.load" => {
            let id = fresh_id();
            let p = json!({"context_id": CONTEXT, "runner": {"id": id, "pubkey": "",
                "address": "127.0.0.1", "topic": "t", "local": true}});
            admin
                .call("runner.create", vec![p])
                .await
                .expect("runner.create");
            let p = json!({"context_id": CONTEXT, "id": id});
            outcome(client.call(method, vec![p]).await)
        }
        "message.create" => outcome(client.call(method, vec![coordinator_message()]).await),
        "message.load" => {
            let m = coordinator_message();
            let id = m["message"]["id"].clone();
            admin
                .call("message.create", vec![m])
                .await
                .expect("message.create");
            let p = json!({"context_id": CONTEXT, "caller_id": 0, "id": id});
            outcome(client.call(method, vec![p]).await)
        }
        other => panic!("the matrix names {other}, which this test does not know how to call"),
    }
}

/// A coordinator id no other cell of the matrix uses.
fn fresh_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `job.create` params of an OSIS coordinator job `id` of context 7 (no runner serves
/// OSIS: started, it stays queued).
fn coordinator_job(id: u32) -> Value {
    json!({"context_id": CONTEXT, "job": {"id": id, "caller_id": 0, "context_id": CONTEXT,
        "script": "1", "script_type": "Osis", "timeout": 30, "retries": 0, "env_vars": {},
        "prerequisites": [], "depends": []}})
}

/// `message.create` params of a message of context 7 with one OSIS job (fresh ids).
fn coordinator_message() -> Value {
    let job = coordinator_job(fresh_id())["job"].clone();
    json!({"context_id": CONTEXT, "message": {"id": fresh_id(), "caller_id": 0,
        "context_id": CONTEXT, "message": "m", "message_type": "Osis",
        "message_format_type": "Text", "timeout": 30, "timeout_ack": 0,
        "timeout_result": 0, "job": [job]}})
}

/// A coordinator job of context 7 made by the server admin, and (`flow`) a flow of it
/// with the same id; returns the id.
async fn coordinator_flow(admin: &Client, flow: bool) -> u32 {
    let id = fresh_id();
    admin
        .call("job.create", vec![coordinator_job(id)])
        .await
        .expect("job.create");
    if flow {
        let p = json!({"context_id": CONTEXT, "flow": {"id": id, "caller_id": 0,
            "context_id": CONTEXT, "jobs": [id], "env_vars": {}}});
        admin
            .call("flow.create", vec![p])
            .await
            .expect("flow.create");
    }
    id
}

async fn redis_server(redis: &RedisServer) -> Server {
    let store = RedisStore::connect(&redis.url(), StoreConfig::default(), Arc::new(SystemClock))
        .await
        .expect("store");
    let directory = RedisDirectory::connect(&redis.url(), "hero")
        .await
        .expect("directory");
    server(Arc::new(store), Arc::new(directory)).await
}

/// A server whose job store and directory are on the shared Redis Cluster, under a
/// prefix of their own.
async fn redis_cluster_server() -> Server {
    let nodes = RedisCluster::shared().urls();
    let prefix = format!("t{}", &hero_supervisor::job::JobId::new().to_string()[..8]);
    let config = StoreConfig {
        prefix: prefix.clone(),
        ..StoreConfig::default()
    };
    let store = RedisStore::connect_cluster(&nodes, config, Arc::new(SystemClock))
        .await
        .expect("store");
    let directory = RedisDirectory::connect_cluster(&nodes, &prefix)
        .await
        .expect("directory");
    server(Arc::new(store), Arc::new(directory)).await
}

/// Where the matrix runs.
#[derive(Clone, Copy)]
enum Backing<'a> {
    Memory,
    Redis(&'a RedisServer),
    Cluster,
}

async fn check_matrix(ws: bool, redis: Option<&RedisServer>) {
    check_matrix_on(ws, redis.map_or(Backing::Memory, Backing::Redis)).await;
}

async fn check_matrix_on(ws: bool, backing: Backing<'_>) {
    let server = match backing {
        Backing::Redis(redis) => redis_server(redis).await,
        Backing::Memory => memory_server().await,
        Backing::Cluster => redis_cluster_server().await,
    };
    let admin = Client::new(&server, ws, Some(ADMIN_TOKEN))
        .await
        .expect("admin");
    set_up(&admin).await;
    let tokens: [Option<&str>; 6] = [
        Some(ADMIN_TOKEN),
        Some(ACTOR_TOKENS[0].1),
        Some(ACTOR_TOKENS[1].1),
        Some(ACTOR_TOKENS[2].1),
        Some(ACTOR_TOKENS[3].1),
        None,
    ];
    let mut wrong = Vec::new();
    for (method, expected) in matrix() {
        if method == "subscribe_job_events" && !ws {
            continue;
        }
        for (column, (token, want)) in tokens.iter().zip(&expected).enumerate() {
            let got = match Client::new(&server, ws, *token).await {
                Ok(client) => act(&method, &client, &admin).await,
                Err(e) => outcome::<()>(Err(e)),
            };
            if got != *want {
                wrong.push(format!(
                    "{method} column {column}: expected {want}, got {got}"
                ));
            }
        }
    }
    let transport = if ws { "WebSocket" } else { "HTTP" };
    let store = match backing {
        Backing::Memory => "memory",
        Backing::Redis(_) => "Redis",
        Backing::Cluster => "Redis Cluster",
    };
    assert!(
        wrong.is_empty(),
        "{transport}, {store} store:\n{}",
        wrong.join("\n")
    );
    server.supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_holds_over_http() {
    check_matrix(false, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_holds_over_websocket() {
    check_matrix(true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_holds_on_redis_over_http_and_websocket() {
    let redis = RedisServer::start();
    check_matrix(false, Some(&redis)).await;
    check_matrix(true, Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_matrix_holds_on_a_redis_cluster() {
    check_matrix_on(false, Backing::Cluster).await;
    check_matrix_on(true, Backing::Cluster).await;
}

/// A WebSocket client that proves `key` with `fetch_nonce` + `authenticate`.
async fn signed_in(server: &Server, token: &str, key: &SigningKey) -> Client {
    let client = Client::new(server, true, Some(token)).await.expect("ws");
    let pk = pubkey(key);
    let nonce = client
        .call("fetch_nonce", vec![json!(pk)])
        .await
        .expect("nonce");
    let nonce = nonce.as_str().expect("text").to_owned();
    let sig: Signature = key.sign(nonce.as_bytes());
    let ok = client
        .call(
            "authenticate",
            vec![json!(pk), json!(hex::encode(sig.to_bytes())), json!(nonce)],
        )
        .await
        .expect("authenticate");
    assert_eq!(ok, json!(true));
    client
}

fn ids(v: Value) -> Vec<String> {
    serde_json::from_value(v).expect("a list of ids")
}

/// Two keys, two actors, two contexts: each sees and controls only its own jobs, through
/// `list_jobs` and subscriptions too, and another context's job id answers exactly like
/// an unknown one. (The bearer token here is an outsider's: what the key proves decides.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_actors_see_only_their_own_context() {
    let server = memory_server().await;
    let admin = Client::new(&server, false, Some(ADMIN_TOKEN))
        .await
        .expect("admin");
    let (alice_key, bob_key) = (key(21), key(22));
    for (id, k) in [(21, &alice_key), (22, &bob_key)] {
        let actor = json!({"actor": {"id": id, "pubkey": pubkey(k), "address": []}});
        admin
            .call("actor.create", vec![actor])
            .await
            .expect("actor.create");
        let context = json!({"context": {"id": id + 100, "admins": [id]}});
        admin
            .call("context.create", vec![context])
            .await
            .expect("context.create");
    }
    let alice = signed_in(&server, ACTOR_TOKENS[3].1, &alice_key).await;
    let bob = signed_in(&server, ACTOR_TOKENS[3].1, &bob_key).await;
    assert_eq!(
        alice.call("whoami", vec![]).await.unwrap(),
        json!(pubkey(&alice_key))
    );

    let submit = |context: u32| json!({"script": "1", "script_type": "OSIS", "context_id": context.to_string()});
    let a = alice
        .call("create_job", vec![submit(121)])
        .await
        .expect("alice's job");
    let b = bob
        .call("create_job", vec![submit(122)])
        .await
        .expect("bob's job");
    let (a, b) = (
        a.as_str().unwrap().to_owned(),
        b.as_str().unwrap().to_owned(),
    );
    let err = alice
        .call("create_job", vec![submit(122)])
        .await
        .unwrap_err();
    assert_eq!(
        ErrorAnswer::from_client_error(&err).map(|a| a.code),
        Some(-32001),
        "{err:?}"
    );

    assert_eq!(
        ids(alice.call("list_jobs", vec![]).await.unwrap()),
        vec![a.clone()]
    );
    assert_eq!(
        ids(bob.call("list_jobs", vec![]).await.unwrap()),
        vec![b.clone()]
    );
    let all = ids(admin.call("list_jobs", vec![]).await.unwrap());
    assert!(all.contains(&a) && all.contains(&b));

    let job = alice
        .call("get_job", vec![json!(a)])
        .await
        .expect("own job");
    assert_eq!(job["params"]["caller_id"], json!(pubkey(&alice_key)));

    // Bob's job and a job that never existed answer alike, to the byte.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for method in ["get_job", "get_job_status", "stop_job", "delete_job"] {
        let theirs = alice.call(method, vec![json!(b)]).await.unwrap_err();
        let none = alice.call(method, vec![json!(unknown)]).await.unwrap_err();
        let (ClientError::Call(theirs), ClientError::Call(none)) = (theirs, none) else {
            panic!("{method}: expected JSON-RPC errors");
        };
        assert_eq!(theirs.code(), none.code(), "{method}");
        assert_eq!(theirs.message(), none.message(), "{method}");
        let strip = |e: &jsonrpsee::types::ErrorObjectOwned| {
            let mut d: Value = serde_json::from_str(e.data().unwrap().get()).unwrap();
            d["job_id"] = Value::Null;
            d
        };
        assert_eq!(strip(&theirs), strip(&none), "{method}");
    }
    let Client::Ws(ws) = &alice else {
        unreachable!()
    };
    let mut p = ArrayParams::new();
    p.insert(&b).unwrap();
    let refused = ws
        .subscribe::<Value, _>("subscribe_job_events", p, "unsubscribe_job_events")
        .await;
    assert_eq!(outcome(refused), "-32001");
    assert!(alice.subscribe(&a).await.is_ok());
    // Bob's job was not touched by any of that.
    assert_eq!(
        admin.call("get_job_status", vec![json!(b)]).await.unwrap(),
        json!("Created")
    );
    server.supervisor.shutdown().await;
}

/// The directory lives in Redis: what one instance records, another enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_enforce_the_same_rules() {
    let redis = RedisServer::start();
    let servers = [redis_server(&redis).await, redis_server(&redis).await];
    let admin_a = Client::new(&servers[0], false, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    set_up(&admin_a).await;

    let on_b = |token: &'static str| Client::new(&servers[1], false, Some(token));
    let executor = on_b(ACTOR_TOKENS[1].1).await.unwrap();
    let outsider = on_b(ACTOR_TOKENS[3].1).await.unwrap();
    let reader = on_b(ACTOR_TOKENS[2].1).await.unwrap();
    let p = json!({"script": "1", "script_type": "OSIS", "context_id": CONTEXT.to_string()});
    let id = executor
        .call("create_job", vec![p.clone()])
        .await
        .expect("executor on b");
    assert_eq!(
        outcome(outsider.call("create_job", vec![p.clone()]).await),
        "-32001"
    );
    assert_eq!(outcome(reader.call("create_job", vec![p]).await), "-32006");
    assert_eq!(
        outcome(reader.call("get_job", vec![id.clone()]).await),
        "ok"
    );
    assert_eq!(
        outcome(outsider.call("get_job", vec![id.clone()]).await),
        "-32001"
    );
    let loaded = reader
        .call("context.load", vec![json!({"id": CONTEXT})])
        .await
        .unwrap();
    assert_eq!(loaded["executors"], json!([2]));

    // A change made on b (the context admin drops the reader) holds on a at once.
    let admin_on_b = on_b(ACTOR_TOKENS[0].1).await.unwrap();
    let p = json!({"context": {"id": CONTEXT, "admins": [1], "executors": [2], "readers": []}});
    admin_on_b
        .call("context.create", vec![p])
        .await
        .expect("context admin updates");
    let reader_on_a = Client::new(&servers[0], false, Some(ACTOR_TOKENS[2].1))
        .await
        .unwrap();
    assert_eq!(
        outcome(reader_on_a.call("get_job", vec![id]).await),
        "-32001"
    );
    for s in &servers {
        s.supervisor.shutdown().await;
    }
}

/// Hostile or careless input to the directory methods: clear -32602, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_directory_input_is_refused() {
    let server = memory_server().await;
    let admin = Client::new(&server, false, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let k = pubkey(&key(5));
    let too_many: Vec<u32> = (0..1001).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "actor.create",
            json!({"actor": {"id": 1, "pubkey": format!("02{}", "00".repeat(32)), "address": []}}),
            "not a point",
        ),
        (
            "actor.create",
            json!({"actor": {"id": 1, "pubkey": "zz", "address": []}}),
            "not hex",
        ),
        (
            "actor.create",
            json!({"actor": {"id": 4294967296u64, "pubkey": k, "address": []}}),
            "id past u32",
        ),
        (
            "actor.create",
            json!({"actor": {"id": -1, "pubkey": k, "address": []}}),
            "negative id",
        ),
        (
            "actor.create",
            json!({"actor": {"id": 1, "pubkey": k, "address": ["example.com"]}}),
            "not an IP",
        ),
        (
            "actor.create",
            json!({"actor": {"id": 1, "pubkey": k, "address": vec!["::1"; 65]}}),
            "too many addresses",
        ),
        (
            "context.create",
            json!({"context": {"id": 1, "admins": []}}),
            "no admin",
        ),
        (
            "context.create",
            json!({"context": {"id": 1, "admins": too_many}}),
            "1001 admins",
        ),
        (
            "context.create",
            json!({"context": {"id": 1, "admins": [4294967296u64]}}),
            "admin id past u32",
        ),
        ("context.load", json!({"id": "7"}), "id as text"),
        ("actor.load", json!({}), "no id"),
    ];
    for (method, params, why) in cases {
        let got = outcome(admin.call(method, vec![params]).await);
        assert_eq!(got, "-32602", "{method} with {why}");
    }
    assert_eq!(
        outcome(admin.call("actor.load", vec![json!({"id": 1})]).await),
        "-32001"
    );
    assert_eq!(
        outcome(admin.call("context.load", vec![json!({"id": 1})]).await),
        "-32001"
    );

    // One key, one actor: a second actor with the same key (in any form) is refused.
    let uncompressed = hex::encode(key(5).verifying_key().to_encoded_point(false).as_bytes());
    admin
        .call(
            "actor.create",
            vec![json!({"actor": {"id": 1, "pubkey": uncompressed, "address": []}})],
        )
        .await
        .expect("first owner");
    let second = json!({"actor": {"id": 2, "pubkey": k, "address": []}});
    assert_eq!(
        outcome(admin.call("actor.create", vec![second]).await),
        "-32602"
    );
    // Upserting the same actor keeps its created_at and takes a new key.
    let first = admin
        .call("actor.load", vec![json!({"id": 1})])
        .await
        .unwrap();
    assert_eq!(
        first["pubkey"],
        json!(k),
        "stored in canonical (compressed) form"
    );
    let moved = json!({"actor": {"id": 1, "pubkey": pubkey(&key(6)), "address": ["10.0.0.1"]}});
    let again = admin.call("actor.create", vec![moved]).await.unwrap();
    assert_eq!(again["created_at"], first["created_at"]);
    // The old key is free again.
    let freed = json!({"actor": {"id": 2, "pubkey": k, "address": []}});
    assert_eq!(outcome(admin.call("actor.create", vec![freed]).await), "ok");
    server.supervisor.shutdown().await;
}

/// `rpc.discover` serves the directory methods exactly as the contract declares them
/// (`../shared/specs/coordinator.openrpc.json`): same params and result schemas, every
/// schema they reference identical, and the answers validate against those schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_methods_match_the_coordinator_spec() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/specs/coordinator.openrpc.json"
    );
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")),
    )
    .expect("the spec is JSON");
    let server = memory_server().await;
    let admin = Client::new(&server, false, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let served = admin
        .call("rpc.discover", vec![])
        .await
        .expect("rpc.discover");
    let find = |doc: &Value, name: &str| -> Value {
        doc["methods"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    for name in [
        "actor.create",
        "actor.load",
        "context.create",
        "context.load",
    ] {
        let (want, got) = (find(&spec, name), find(&served, name));
        assert_eq!(got["params"], want["params"], "{name} params");
        assert_eq!(got["result"], want["result"], "{name} result");
    }
    for schema in [
        "Actor",
        "ActorCreate",
        "ActorCreateParams",
        "ActorLoadParams",
        "Context",
        "ContextCreate",
        "ContextCreateParams",
        "ContextLoadParams",
        "IpAddr",
    ] {
        assert_eq!(
            served["components"]["schemas"][schema], spec["components"]["schemas"][schema],
            "schema {schema}"
        );
    }
    // The answers have exactly the spec's required fields, with the spec's types.
    set_up(&admin).await;
    let actor = admin
        .call("actor.load", vec![json!({"id": 1})])
        .await
        .unwrap();
    let context = admin
        .call("context.load", vec![json!({"id": CONTEXT})])
        .await
        .unwrap();
    for (value, schema) in [(actor, "Actor"), (context, "Context")] {
        let schema = &spec["components"]["schemas"][schema];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = required.clone();
        want.sort_unstable();
        assert_eq!(keys, want, "{value}");
        for (field, spec_type) in schema["properties"].as_object().unwrap() {
            let ok = match spec_type["type"].as_str() {
                Some("integer") => value[field].is_u64() || value[field].is_i64(),
                Some("string") => value[field].is_string(),
                Some("array") => value[field].is_array(),
                other => panic!("unexpected type {other:?}"),
            };
            assert!(ok, "{field} of {value}");
        }
    }
    server.supervisor.shutdown().await;
}

/// Every page of a filtered `list_jobs` for `client`: the ids, in order.
async fn paged_ids(client: &Client, filter: Value) -> Vec<String> {
    paged(client, filter).await.0
}

/// Every page of a filtered `list_jobs`: the ids in order, and how many calls answered
/// fewer jobs than `limit` with a cursor to go on (calls that stopped at their budget).
async fn paged(client: &Client, filter: Value) -> (Vec<String>, usize) {
    let mut filter = filter;
    let mut out = Vec::new();
    let mut short = 0;
    for _ in 0..1000 {
        let page = client
            .call("list_jobs", vec![filter.clone()])
            .await
            .expect("list_jobs page");
        let jobs = page["jobs"].as_array().expect("jobs");
        for job in jobs {
            out.push(job["id"].as_str().expect("an id").to_owned());
        }
        match &page["next_cursor"] {
            Value::Null => return (out, short),
            next => filter["cursor"] = next.clone(),
        }
        if (jobs.len() as u64) < filter["limit"].as_u64().unwrap_or(100) {
            short += 1;
        }
    }
    panic!("paging never ended");
}

/// A filtered `list_jobs` pages only the jobs of the caller's contexts: a reader of
/// context 7 sees its jobs, all of them, once each; an outsider
/// sees none, even naming the context; the server admin sees every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_lists_only_what_it_may_see() {
    let server = memory_server().await;
    let admin = Client::new(&server, false, Some(ADMIN_TOKEN))
        .await
        .expect("admin");
    set_up(&admin).await;
    let mut ours = Vec::new();
    let mut all = Vec::new();
    for i in 0..240 {
        let context = if i % 3 == 0 {
            "default".to_owned()
        } else {
            CONTEXT.to_string()
        };
        let params = json!({"script": "1", "script_type": "OSIS", "context_id": context});
        let id = admin
            .call("create_job", vec![params])
            .await
            .expect("create_job");
        let id = id.as_str().unwrap().to_owned();
        if i % 3 != 0 {
            ours.push(id.clone());
        }
        all.push(id);
    }
    let reader = Client::new(&server, false, Some(ACTOR_TOKENS[2].1))
        .await
        .expect("reader");
    let outsider = Client::new(&server, false, Some(ACTOR_TOKENS[3].1))
        .await
        .expect("outsider");
    let got = paged_ids(&reader, json!({"limit": 37})).await;
    assert_eq!(got.len(), ours.len(), "every job of context 7 once");
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = ours.clone();
    want.sort();
    assert_eq!(sorted, want);
    let got = paged_ids(
        &reader,
        json!({"limit": 50, "context_id": CONTEXT.to_string(), "status": "Created"}),
    )
    .await;
    assert_eq!(got.len(), ours.len());
    assert!(paged_ids(&outsider, json!({"limit": 50})).await.is_empty());
    assert!(
        paged_ids(&outsider, json!({"context_id": CONTEXT.to_string()}))
            .await
            .is_empty()
    );
    let got = paged_ids(&admin, json!({"limit": 1000})).await;
    let (mut got, mut want) = (got, all.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want, "the server admin sees every job");

    // Beyond one call's budget of jobs it may not see, a call answers what it found
    // with a cursor instead of reading on: here 160 visible jobs among 5,340 take two
    // calls although the limit is 1,000.
    for _ in 0..5100 {
        let params = hero_supervisor::job::JobParams {
            script: "1".into(),
            script_type: ScriptType::Osis,
            caller_id: "admin".into(),
            context_id: "default".into(),
            timeout: None,
            prerequisites: Vec::new(),
            retries: None,
            env_vars: Default::default(),
            traceparent: None,
        };
        server.supervisor.create_job(params).await.expect("create");
    }
    let (got, short) = paged(&reader, json!({"limit": 1000})).await;
    assert_eq!(got.len(), ours.len(), "still every job of context 7, once");
    assert_eq!(short, 1, "one call stopped at its budget");
    server.supervisor.shutdown().await;
}
