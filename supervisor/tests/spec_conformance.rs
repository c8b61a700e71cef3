//! Conformance to the coordinator contract (`../shared/specs/coordinator.openrpc.json`):
//! every method of the spec is called against a real server over HTTP and over
//! WebSocket, with positional and with named params, and every answer is validated by
//! a JSON-schema validator against the spec's result schema (its `$ref`s resolved into
//! the spec's `components/schemas`, its `uint32`/`int64` formats turned into bounds).
//! `rpc.discover` must declare every spec method with params and result schemas that
//! extend the spec's: the same schema, with at most optional properties added.
//! On the memory store and on Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::ScriptType;
use hero_supervisor::pool::{PoolConfig, Transport};
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::SupervisorConfig;
use hero_testkit::RedisServer;
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::{ArrayParams, ObjectParams};
use k256::ecdsa::SigningKey;
use serde_json::{Map, Value, json};

const CONTEXT: u32 = 7;

fn spec() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/specs/coordinator.openrpc.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("the spec is JSON")
}

/// The spec's formats as bounds a validator checks (formats are annotations only).
fn bound_formats(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let bounds = match map.get("format").and_then(Value::as_str) {
                Some("uint32") => Some((0_i64, i64::from(u32::MAX))),
                Some("int64") => Some((i64::MIN, i64::MAX)),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                map.entry("minimum").or_insert(json!(min));
                map.entry("maximum").or_insert(json!(max));
            }
            map.values_mut().for_each(bound_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_formats),
        _ => {}
    }
}

/// A validator of `schema` (a node of the spec, `$ref`s into its components): one root
/// document with the spec's components embedded, so the refs resolve as written.
fn validator(spec: &Value, schema: &Value) -> jsonschema::Validator {
    let mut components = spec["components"].clone();
    bound_formats(&mut components);
    let mut schema = schema.clone();
    bound_formats(&mut schema);
    let root = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "components": components,
        "allOf": [schema],
    });
    jsonschema::draft7::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Panics with every violation of `schema` by `value`.
#[track_caller]
fn conforms(spec: &Value, what: &str, schema: &Value, value: &Value) {
    let v = validator(spec, schema);
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer breaks the spec's schema:\n{}\nanswer: {value}",
        errors.join("\n")
    );
}

/// `node` with every `$ref` into `doc`'s components replaced by its target.
fn resolve(doc: &Value, node: &Value, depth: usize) -> Value {
    assert!(depth < 32, "$ref nesting too deep");
    match node {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                let target = doc
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                return resolve(doc, target, depth + 1);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve(doc, v, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(doc, v, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

/// `served` says at least what `spec` says: every keyword the same (descriptions
/// aside), every property of the spec there and extended in turn; it may add
/// properties, never a required one (`required` compares equal).
fn extends(spec: &Value, served: &Value, path: &str, wrong: &mut Vec<String>) {
    match (spec, served) {
        (Value::Object(s), Value::Object(d)) => {
            for (k, sv) in s {
                if k == "description" || k == "summary" {
                    continue;
                }
                let here = format!("{path}/{k}");
                match d.get(k) {
                    None => wrong.push(format!("{here}: missing")),
                    Some(dv) if k == "properties" => {
                        let (Some(sp), Some(dp)) = (sv.as_object(), dv.as_object()) else {
                            wrong.push(format!("{here}: not an object"));
                            continue;
                        };
                        for (name, schema) in sp {
                            match dp.get(name) {
                                Some(d) => extends(schema, d, &format!("{here}/{name}"), wrong),
                                None => wrong.push(format!("{here}/{name}: missing")),
                            }
                        }
                    }
                    Some(dv) => extends(sv, dv, &here, wrong),
                }
            }
        }
        (Value::Array(s), Value::Array(d)) if s.len() == d.len() => {
            for (i, (sv, dv)) in s.iter().zip(d).enumerate() {
                extends(sv, dv, &format!("{path}/{i}"), wrong);
            }
        }
        (s, d) if s == d => {}
        (s, d) => wrong.push(format!("{path}: spec {s}, served {d}")),
    }
}

/// A client of either transport; calls with positional or named params.
enum Client {
    Http(jsonrpsee::http_client::HttpClient),
    Ws(jsonrpsee::ws_client::WsClient),
}

impl Client {
    async fn new(server: &RunningServer, ws: bool) -> Client {
        let url = format!("http://{}", server.addr());
        if ws {
            Client::Ws(ws_client(&url, None).await.expect("ws client"))
        } else {
            Client::Http(http_client(&url, None).expect("http client"))
        }
    }

    /// `method` with its one params object, positional or as `{"params": ..}`.
    async fn call(&self, method: &str, params: Value, named: bool) -> Result<Value, ClientError> {
        if named {
            let mut p = ObjectParams::new();
            p.insert("params", params).expect("serializable");
            match self {
                Client::Http(c) => c.request(method, p).await,
                Client::Ws(c) => c.request(method, p).await,
            }
        } else {
            let mut p = ArrayParams::new();
            p.insert(params).expect("serializable");
            match self {
                Client::Http(c) => c.request(method, p).await,
                Client::Ws(c) => c.request(method, p).await,
            }
        }
    }

    async fn discover(&self) -> Value {
        let p = ArrayParams::new();
        match self {
            Client::Http(c) => c.request("rpc.discover", p).await,
            Client::Ws(c) => c.request("rpc.discover", p).await,
        }
        .expect("rpc.discover")
    }
}

/// A server (no token: the caller is the local server admin) whose SAL jobs run on the
/// built-in runner.
async fn start(redis: Option<&RedisServer>) -> RunningServer {
    let builtin = PoolConfig::new(
        "builtin-sal",
        vec![ScriptType::Sal],
        Transport::Stdio {
            program: env!("CARGO_BIN_EXE_hero-supervisor").to_owned(),
            args: vec!["runner".to_owned(), "--stdio".to_owned()],
        },
    );
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis.map(RedisServer::url),
        rpc: RpcConfig::default(),
        supervisor: SupervisorConfig {
            pools: vec![builtin],
            ..SupervisorConfig::with_builtin_runners()
        },
        ..ServeConfig::default()
    };
    server::start(config).await.expect("start the server")
}

fn pubkey(seed: u8) -> String {
    let key = SigningKey::from_slice(&[seed; 32]).expect("a valid secret key");
    hex::encode(key.verifying_key().to_encoded_point(true).as_bytes())
}

/// Ids per round, so rounds (transport x params style) do not collide.
struct Ids {
    base: u32,
}

impl Ids {
    fn job(&self, n: u32) -> u32 {
        self.base + n
    }
}

fn job_create(id: u32, script: &str, depends: &[u32]) -> Value {
    json!({"context_id": CONTEXT, "job": {
        "id": id, "caller_id": 1, "context_id": CONTEXT, "script": script,
        "script_type": "Sal", "timeout": 30, "retries": 0, "env_vars": {"A": "1"},
        "prerequisites": [], "depends": depends,
    }})
}

/// One call: a spec method and its params object.
type Call = (&'static str, Value);

/// The calls of one round: (spec method, params), in an order where each finds what it
/// needs. `later` are loads repeated once the round's work finished, so finished
/// answers (results, statuses) are validated too.
fn round(ids: &Ids) -> (Vec<Call>, Vec<Call>) {
    let (a, b) = (ids.job(1), ids.job(2));
    let flow = ids.base;
    let calls = vec![
        (
            "actor.create",
            json!({"actor": {"id": 1, "pubkey": pubkey(1), "address": ["127.0.0.1", "::1"]}}),
        ),
        ("actor.load", json!({"id": 1})),
        (
            "context.create",
            json!({"context": {"id": CONTEXT, "admins": [1], "readers": [], "executors": []}}),
        ),
        ("context.load", json!({"id": CONTEXT})),
        ("job.create", job_create(a, "40 + 2", &[])),
        ("job.create", job_create(b, "\"b\"", &[a])),
        (
            "job.load",
            json!({"context_id": CONTEXT, "caller_id": 1, "id": a}),
        ),
        (
            "flow.create",
            json!({"context_id": CONTEXT, "flow": {"id": flow, "caller_id": 1,
                "context_id": CONTEXT, "jobs": [a, b], "env_vars": {}}}),
        ),
        ("flow.load", json!({"context_id": CONTEXT, "id": flow})),
        ("flow.dag", json!({"context_id": CONTEXT, "id": flow})),
        // A record-only runner, and one the supervisor connects to (nothing listens on
        // port 9 here: its pool just keeps trying), with the extensions.
        (
            "runner.create",
            json!({"context_id": CONTEXT, "runner": {"id": ids.job(3), "pubkey": "02aa",
                "address": "127.0.0.1", "topic": "t", "local": true}}),
        ),
        (
            "runner.create",
            json!({"context_id": CONTEXT, "runner": {"id": ids.job(4), "pubkey": "",
                "address": "::1", "topic": "t", "local": false, "port": 9,
                "script_types": ["V"]}}),
        ),
        (
            "runner.load",
            json!({"context_id": CONTEXT, "id": ids.job(4)}),
        ),
        (
            "message.create",
            json!({"context_id": CONTEXT, "message": {"id": ids.base, "caller_id": 1,
                "context_id": CONTEXT, "message": "m", "message_type": "Sal",
                "message_format_type": "Md", "timeout": 30, "timeout_ack": 20,
                "timeout_result": 30, "logs": ["l"],
                "job": [job_create(ids.job(5), "1 + 1", &[])["job"]]}}),
        ),
        (
            "message.load",
            json!({"context_id": CONTEXT, "caller_id": 1, "id": ids.base}),
        ),
    ];
    let later = vec![
        (
            "message.load",
            json!({"context_id": CONTEXT, "caller_id": 1, "id": ids.base}),
        ),
        (
            "job.load",
            json!({"context_id": CONTEXT, "caller_id": 1, "id": b}),
        ),
        ("flow.load", json!({"context_id": CONTEXT, "id": flow})),
    ];
    (calls, later)
}

async fn check(redis: Option<&RedisServer>) {
    let spec = spec();
    let server = start(redis).await;
    let methods: Vec<&Value> = spec["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .collect();
    let mut covered = BTreeSet::new();
    let mut base = 100;
    for ws in [false, true] {
        let client = Client::new(&server, ws).await;
        let transport = if ws { "WebSocket" } else { "HTTP" };

        // rpc.discover declares every spec method as the spec does, or a superset.
        let served = client.discover().await;
        let mut wrong = Vec::new();
        for m in &methods {
            let name = m["name"].as_str().expect("a name");
            let Some(got) = served["methods"]
                .as_array()
                .and_then(|ms| ms.iter().find(|s| s["name"] == name))
            else {
                wrong.push(format!("{name}: not in rpc.discover"));
                continue;
            };
            for part in ["params", "result"] {
                extends(
                    &resolve(&spec, &m[part], 0),
                    &resolve(&served, &got[part], 0),
                    &format!("{name}.{part}"),
                    &mut wrong,
                );
            }
        }
        assert!(wrong.is_empty(), "{transport}: {}", wrong.join("\n"));

        for named in [false, true] {
            let ids = Ids { base };
            base += 100;
            let (calls, later) = round(&ids);
            let mut answers = Vec::new();
            for (method, params) in calls {
                let answer = client
                    .call(method, params.clone(), named)
                    .await
                    .unwrap_or_else(|e| panic!("{transport} {method}({params}): {e}"));
                answers.push((method, answer));
            }
            // Run the flow (the extension `flow.start`), then load what it produced.
            let flow = json!({"context_id": CONTEXT, "id": ids.base});
            client
                .call("flow.start", flow.clone(), named)
                .await
                .expect("flow.start");
            wait_until(&client, "flow.load", &flow, "Finished").await;
            let message = json!({"context_id": CONTEXT, "caller_id": 1, "id": ids.base});
            wait_until(&client, "message.load", &message, "Processed").await;
            for (method, params) in later {
                let answer = client.call(method, params, named).await.expect(method);
                answers.push((method, answer));
            }
            for (method, answer) in answers {
                let m = methods
                    .iter()
                    .find(|m| m["name"] == method)
                    .unwrap_or_else(|| panic!("{method} is not a spec method"));
                conforms(
                    &spec,
                    &format!("{transport} {method}"),
                    &m["result"]["schema"],
                    &answer,
                );
                covered.insert(method);
            }
        }
    }
    let all: BTreeSet<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    let missing: Vec<&&str> = all.iter().filter(|m| !covered.contains(**m)).collect();
    assert!(
        missing.is_empty(),
        "spec methods never checked: {missing:?}"
    );
    assert_eq!(all.len(), 13, "the spec has 13 methods");
    assert_eq!(covered.len(), 13, "every one was called and checked");
    server.stop().await;
}

/// Polls `method(params)` until its `status` is `want` (30 s at most).
async fn wait_until(client: &Client, method: &str, params: &Value, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = client
            .call(method, params.clone(), false)
            .await
            .expect(method);
        if v["status"] == want {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method} never reached {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_method_answers_in_the_spec_shape_on_the_memory_store() {
    check(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_method_answers_in_the_spec_shape_on_redis() {
    let redis = RedisServer::start();
    check(Some(&redis)).await;
}

/// The schema check itself refuses what breaks the spec (a validator that accepts
/// everything would make the test above pass vacuously).
#[test]
fn the_validator_refuses_answers_outside_the_spec() {
    let spec = spec();
    let schema = json!({"$ref": "#/components/schemas/Job"});
    let good = json!({"id": 1, "caller_id": 1, "context_id": 7, "script": "1",
        "script_type": "Sal", "timeout": 30, "retries": 0, "env_vars": {}, "result": {},
        "prerequisites": [], "depends": [], "created_at": 1, "updated_at": 1,
        "status": "Dispatched"});
    assert!(validator(&spec, &schema).is_valid(&good));
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |what: &'static str, field: &str, v: Value| {
        let mut bad = good.as_object().cloned().unwrap_or_else(Map::new);
        bad.insert(field.to_owned(), v);
        cases.push((what, Value::Object(bad)));
    };
    with("a status outside the enum", "status", json!("Created"));
    with(
        "a script type outside the enum",
        "script_type",
        json!("SAL"),
    );
    with(
        "a uint32 above its range",
        "id",
        json!(u64::from(u32::MAX) + 1),
    );
    with("a negative uint32", "context_id", json!(-1));
    with("retries above 255", "retries", json!(256));
    with("a non-string result value", "result", json!({"output": 1}));
    let mut missing = good.clone();
    missing.as_object_mut().map(|m| m.remove("depends"));
    cases.push(("a required field missing", missing));
    for (what, bad) in cases {
        assert!(!validator(&spec, &schema).is_valid(&bad), "{what}: {bad}");
    }
    let mut wrong = Vec::new();
    let spec_job = resolve(&spec, &schema, 0);
    let mut narrowed = spec_job.clone();
    narrowed["properties"]["id"] = json!({"type": "string"});
    extends(&spec_job, &narrowed, "Job", &mut wrong);
    assert!(
        wrong.iter().any(|w| w.contains("Job/properties/id/type")),
        "a changed type is no extension: {wrong:?}"
    );
    let mut widened = spec_job.clone();
    widened["properties"]["job_id"] = json!({"type": "string"});
    wrong.clear();
    extends(&spec_job, &widened, "Job", &mut wrong);
    assert!(
        wrong.is_empty(),
        "an added property is an extension: {wrong:?}"
    );
}
