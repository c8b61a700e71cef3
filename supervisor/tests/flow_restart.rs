//! A flow survives its supervisor: the `hero-supervisor` binary on a private Redis runs a
//! diamond flow of real Python jobs on its built-in runner, is SIGKILLed while the two
//! middle jobs run, and a new process on the same Redis finishes the flow. A ledger the
//! jobs append to at their end proves that no job was lost and none that had finished
//! ran again. A job cut short by the kill is run again (a lost lease counts an attempt,
//! DESIGN.md: hence `retries: 1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hero_supervisor::rpc::client::http_client;
use hero_testkit::{RedisServer, free_tcp_port};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");
const CONTEXT: u32 = 7;

struct Process {
    child: Child,
    client: HttpClient,
}

impl Process {
    /// `hero-supervisor serve` on `redis`, with a 2 s job lease so that the jobs of a
    /// killed instance are taken over quickly.
    async fn start(redis: &RedisServer, dir: &std::path::Path) -> Process {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--redis-url",
                &redis.url(),
            ])
            .args(["--lease-secs", "2"])
            .arg("--server-key")
            .arg(dir.join("server.key"))
            .env_remove("HERO_AUTH_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hero-supervisor");
        let client = http_client(&format!("http://{addr}"), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client
            .request::<String, _>("whoami", rpc_params![])
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "hero-supervisor did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Process { child, client }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.client
            .request(method, rpc_params![params])
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python job that sleeps `secs`, then appends its name to the ledger.
fn job(id: u32, secs: f64, depends: &[u32], ledger: &std::path::Path) -> Value {
    let script = format!(
        "import os, time\ntime.sleep({secs})\n\
         with open(os.environ['LEDGER'], 'a') as f:\n    f.write('{id}\\n')\nprint('job {id}')"
    );
    json!({"context_id": CONTEXT, "job": {
        "id": id, "caller_id": 1, "context_id": CONTEXT, "script": script,
        "script_type": "Python", "timeout": 60, "retries": 1,
        "env_vars": {"LEDGER": ledger.display().to_string()},
        "prerequisites": [], "depends": depends,
    }})
}

async fn job_status(p: &Process, id: u32) -> String {
    let j = p
        .call(
            "job.load",
            json!({"context_id": CONTEXT, "caller_id": 1, "id": id}),
        )
        .await;
    j["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_supervisor_mid_flow_is_finished_by_the_next_one() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let first = Process::start(&redis, dir.path()).await;

    let actor = json!({"actor": {"id": 1, "pubkey": format!("02{}", "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"), "address": ["127.0.0.1"]}});
    first.call("actor.create", actor).await;
    let context =
        json!({"context": {"id": CONTEXT, "admins": [1], "executors": [], "readers": []}});
    first.call("context.create", context).await;
    // The diamond: 1, then 2 and 3 (long), then 4.
    for (id, secs, depends) in [
        (1, 0.2, vec![]),
        (2, 4.0, vec![1]),
        (3, 4.0, vec![1]),
        (4, 0.2, vec![2, 3]),
    ] {
        first
            .call("job.create", job(id, secs, &depends, &ledger))
            .await;
    }
    let flow = json!({"context_id": CONTEXT, "flow": {
        "id": 10, "caller_id": 1, "context_id": CONTEXT, "jobs": [1, 2, 3, 4], "env_vars": {},
    }});
    first.call("flow.create", flow).await;
    first
        .call("flow.start", json!({"context_id": CONTEXT, "id": 10}))
        .await;

    // Kill it while 2 and 3 run (1 finished, 4 waits).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s2, s3) = (job_status(&first, 2).await, job_status(&first, 3).await);
        if s2 == "Started" && s3 == "Started" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "2 and 3 never ran together: {s2} {s3}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&ledger).unwrap(), "1\n");
    first.sigkill();

    let second = Process::start(&redis, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let f = second
            .call("flow.load", json!({"context_id": CONTEXT, "id": 10}))
            .await;
        if f["status"] == "Finished" || f["status"] == "Error" {
            break f;
        }
        assert!(Instant::now() < deadline, "the flow never ended: {f}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished["status"], json!("Finished"), "{finished}");
    let mut runs: Vec<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(runs[0], "1", "1 ran first");
    assert_eq!(runs[3], "4", "4 ran last");
    runs.sort();
    assert_eq!(
        runs,
        ["1", "2", "3", "4"],
        "every job ran to its end exactly once"
    );
    for id in [2, 3] {
        assert_eq!(
            finished["result"][id.to_string()],
            json!(format!("job {id}")),
            "{finished}"
        );
    }
}
