//! `GET /metrics`: a real server on a real Redis with the built-in runner (spawned from
//! the real executable) runs real jobs, and every scrape is read with a Prometheus
//! text-format parser (`prometheus-parse`): the counters move as the jobs run, the
//! store's gauges say what waits, a store outage shows as store errors, and the route is
//! behind the API's tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rpc_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::ScriptType;
use hero_supervisor::pool::{HelloMode, PoolConfig, Transport};
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::auth::{Grant, TokenGrant};
use hero_supervisor::server;
use hero_supervisor::{Supervisor, SupervisorConfig};
use hero_testkit::RedisServer;
use prometheus_parse::{Scrape, Value};
use serde_json::json;

use rpc_support::{call_raw, serve_config};

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");

/// One scrape, parsed.
struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    /// The value of the sample `name` whose labels include `labels`; `None` when there
    /// is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                Value::Summary(_) => panic!("no summaries are served"),
            })
    }

    /// [`Metrics::get`], which must be there.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }

    /// The sum over every sample `name` with `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                _ => 0.0,
            })
            .sum()
    }
}

/// `GET /metrics` with `token`: the status and, for a 200, the parsed text.
async fn scrape_with(addr: SocketAddr, token: Option<&str>) -> (u16, Option<Metrics>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.get(format!("http://{addr}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (status, Some(Metrics { text, scrape }))
}

async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, metrics) = scrape_with(addr, None).await;
    assert_eq!(status, 200);
    metrics.unwrap()
}

/// Waits until `check` holds on a scrape; returns that scrape.
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(addr).await;
        if check(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The built-in runner for SAL and OSIS only: a V job waits in its queue.
fn sal_and_osis() -> SupervisorConfig {
    let mut config =
        SupervisorConfig::with_runner_command(BIN, vec!["runner".into(), "--stdio".into()]);
    config.pools = vec![{
        let mut pool = PoolConfig::new(
            "builtin",
            vec![ScriptType::Sal, ScriptType::Osis],
            Transport::Stdio {
                program: BIN.to_owned(),
                args: vec!["runner".into(), "--stdio".into()],
            },
        );
        pool.hello = HelloMode::On;
        pool
    }];
    config
}

async fn wait_terminal(addr: SocketAddr, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = call_raw(addr, "get_job_status", json!([id])).await["result"]
            .as_str()
            .unwrap()
            .to_owned();
        if status == "Finished" || status == "Error" {
            return status;
        }
        assert!(Instant::now() < deadline, "job {id} still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_jobs_run_and_gauges_read_the_store() {
    let mut redis = RedisServer::start();
    let config = ServeConfig {
        supervisor: sal_and_osis(),
        ..serve_config(RpcConfig::default(), Some(redis.url()))
    };
    let running = server::start(config).await.expect("start");
    let addr = running.addr();
    let sal = [("script_type", "SAL")];

    // Before any job: every per-type counter is there, at zero; the runner connects.
    let before = scrape_until(addr, "the runner's connection", |m| {
        m.get("hero_runner_connections", &[("pool", "builtin")]) == Some(1.0)
    })
    .await;
    for t in ["SAL", "OSIS", "V", "Python"] {
        let l = [("script_type", t)];
        assert_eq!(before.value("hero_jobs_created_total", &l), 0.0);
        assert_eq!(before.value("hero_jobs_started_total", &l), 0.0);
        assert_eq!(before.value("hero_jobs_finished_total", &l), 0.0);
        assert_eq!(before.value("hero_queue_depth", &l), 0.0);
    }
    assert_eq!(
        before.value("hero_runner_processes", &[("pool", "builtin")]),
        1.0
    );
    assert_eq!(
        before.value("hero_runner_restarts_total", &[("pool", "builtin")]),
        0.0
    );
    assert_eq!(before.value("hero_calls_outbox", &[]), 0.0);
    assert_eq!(before.value("hero_jobs", &[("status", "Finished")]), 0.0);
    assert!(before.get("hero_uptime_seconds", &[]).is_some());

    // One job that finishes, one that fails on its only attempt, one nobody serves.
    let ok = call_raw(addr, "run_job", json!(["40 + 2", "SAL"])).await;
    assert_eq!(ok["result"], "42", "{ok}");
    let failing = call_raw(
        addr,
        "create_job",
        json!([{"script": "throw \"boom\"", "script_type": "SAL", "retries": 0}]),
    )
    .await["result"]
        .as_str()
        .unwrap()
        .to_owned();
    call_raw(addr, "start_job", json!([failing])).await;
    assert_eq!(wait_terminal(addr, &failing).await, "Error");
    let waiting = call_raw(
        addr,
        "create_job",
        json!([{"script": "println(\"never\")", "script_type": "V"}]),
    )
    .await["result"]
        .as_str()
        .unwrap()
        .to_owned();
    call_raw(addr, "start_job", json!([waiting])).await;
    let unknown = call_raw(addr, "no_such_method", json!([])).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    // The failure is counted when its outcome is written, a moment after the status a
    // waiter sees may be read: wait for it.
    let after = scrape_until(addr, "the failed job's count", |m| {
        m.sum("hero_jobs_failed_total", &sal) >= 1.0
    })
    .await;
    assert_eq!(after.value("hero_jobs_created_total", &sal), 2.0);
    assert_eq!(
        after.value("hero_jobs_created_total", &[("script_type", "V")]),
        1.0
    );
    assert_eq!(after.value("hero_jobs_started_total", &sal), 2.0);
    assert_eq!(after.value("hero_jobs_finished_total", &sal), 1.0);
    assert_eq!(after.sum("hero_jobs_failed_total", &sal), 1.0);
    assert_eq!(after.sum("hero_jobs_retried_total", &[]), 0.0);
    assert_eq!(
        after.value("hero_jobs_started_total", &[("script_type", "V")]),
        0.0
    );
    // Two attempts timed, two waits in the queue measured.
    assert_eq!(
        after.value("hero_job_attempt_duration_seconds_count", &sal),
        2.0
    );
    assert_eq!(after.value("hero_job_queue_wait_seconds_count", &sal), 2.0);
    assert_eq!(
        after.value("hero_job_attempt_duration_seconds", &sal),
        2.0,
        "the +Inf bucket holds every attempt"
    );
    // The store's figures: the V job waits in its queue; the other two ended.
    assert_eq!(
        after.value("hero_queue_depth", &[("script_type", "V")]),
        1.0
    );
    assert_eq!(after.value("hero_queue_depth", &sal), 0.0);
    assert_eq!(after.value("hero_jobs", &[("status", "Dispatched")]), 1.0);
    assert_eq!(after.value("hero_jobs", &[("status", "Finished")]), 1.0);
    assert_eq!(after.value("hero_jobs", &[("status", "Error")]), 1.0);
    // JSON-RPC calls by method and code.
    let calls = |method: &str, code: &str| {
        after.sum(
            "hero_rpc_calls_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(calls("run_job", "ok"), 1.0);
    assert_eq!(calls("create_job", "ok"), 2.0);
    assert_eq!(calls("start_job", "ok"), 2.0);
    assert_eq!(calls("other", "-32601"), 1.0);
    assert!(calls("get_job_status", "ok") >= 1.0);
    assert_eq!(after.sum("hero_store_errors_total", &[]), 0.0);

    // A batch counts each of its calls.
    let (status, _) = rpc_support::post(
        addr,
        r#"[{"jsonrpc":"2.0","id":1,"method":"whoami","params":[]},
            {"jsonrpc":"2.0","id":2,"method":"get_job_status","params":["not-a-job"]}]"#,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let batch = scrape(addr).await;
    assert_eq!(
        batch.sum(
            "hero_rpc_calls_total",
            &[("method", "whoami"), ("code", "ok")]
        ),
        1.0
    );
    assert_eq!(
        batch.sum(
            "hero_rpc_calls_total",
            &[("method", "get_job_status"), ("code", "-32602")]
        ),
        1.0,
        "{}",
        batch.text
    );

    // Redis goes away: the scrape still answers, without the store's gauges, and the
    // failed reads are counted.
    redis.stop();
    let down = scrape_until(addr, "a store error", |m| {
        m.sum(
            "hero_store_errors_total",
            &[("op", "counts"), ("kind", "unavailable")],
        ) >= 1.0
    })
    .await;
    assert!(down.value("hero_scrape_errors_total", &[("source", "jobs")]) >= 1.0);
    assert!(
        down.get("hero_queue_depth", &[("script_type", "V")])
            .is_none(),
        "{}",
        down.text
    );
    // The counters are the process's own and stay.
    assert_eq!(down.value("hero_jobs_finished_total", &sal), 1.0);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_behind_the_tokens_and_a_server_admins() {
    let config = RpcConfig {
        auth_token: Some("admin-secret".into()),
        tokens: vec![TokenGrant::from_token("actor-secret", Grant::Actor(7)).unwrap()],
        ..RpcConfig::default()
    };
    let mut serve = serve_config(config, None);
    serve.supervisor = {
        let mut c = SupervisorConfig::with_builtin_runners();
        c.pools.clear();
        c
    };
    let running = server::start(serve).await.expect("start");
    let addr = running.addr();
    assert_eq!(scrape_with(addr, None).await.0, 401);
    assert_eq!(scrape_with(addr, Some("wrong")).await.0, 401);
    assert_eq!(scrape_with(addr, Some("actor-secret")).await.0, 403);
    let (status, metrics) = scrape_with(addr, Some("admin-secret")).await;
    assert_eq!(status, 200);
    let metrics = metrics.unwrap();
    assert_eq!(
        metrics.value("hero_jobs_created_total", &[("script_type", "SAL")]),
        0.0
    );
    // Only GET and HEAD.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/metrics"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    running.stop().await;
}

/// Two supervisors in one process count apart: the metrics are per supervisor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_supervisor_counts_for_itself() {
    use hero_supervisor::clock::SystemClock;
    use hero_supervisor::job::JobParams;
    use hero_supervisor::store::{MemoryStore, StoreConfig};
    use std::sync::Arc;
    let store = || {
        Arc::new(MemoryStore::new(
            StoreConfig::default(),
            Arc::new(SystemClock),
        ))
    };
    let a = Supervisor::start(sal_and_osis(), store());
    let b = Supervisor::start(sal_and_osis(), store());
    let params = JobParams {
        traceparent: None,
        script: "1 + 1".into(),
        script_type: ScriptType::Sal,
        caller_id: "t".into(),
        context_id: "c".into(),
        timeout: Some(20),
        prerequisites: vec![],
        retries: Some(0),
        env_vars: Default::default(),
    };
    assert_eq!(a.submit_and_wait(params).await.unwrap(), "2");
    assert_eq!(a.metrics().started_total(), 1);
    assert_eq!(b.metrics().started_total(), 0);
    a.shutdown().await;
    b.shutdown().await;
}
