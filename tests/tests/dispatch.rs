//! The dispatcher and runner pools end to end: a real `Supervisor` over a real store
//! (memory, or a private `redis-server`), real runner processes (`hero-test-runner`,
//! told by each script what to do), every outcome mapping, timeouts, stops, runner
//! crashes and garbage, prerequisites, and two supervisors sharing one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::clock::SystemClock;
use hero_supervisor::dispatch::DispatchConfig;
use hero_supervisor::job::{JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::pool::{HelloMode, PoolConfig, Transport};
use hero_supervisor::store::{JobStore, MemoryStore, RedisStore, StoreConfig};
use hero_supervisor::{Supervisor, SupervisorConfig, SupervisorError};
use hero_testkit::RedisServer;

const TEST_RUNNER: &str = env!("CARGO_BIN_EXE_hero-test-runner");

/// A store for one test; keeps its Redis server alive as long as the store is used.
struct Backend {
    store: Arc<dyn JobStore>,
    _redis: Option<RedisServer>,
}

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::new(
            StoreConfig::default(),
            Arc::new(SystemClock),
        )),
        _redis: None,
    }
}

async fn redis() -> Backend {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), StoreConfig::default(), Arc::new(SystemClock))
        .await
        .expect("connect to the test redis");
    Backend {
        store: Arc::new(store),
        _redis: Some(server),
    }
}

fn fast_dispatch() -> DispatchConfig {
    DispatchConfig {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        cancel_grace: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(50),
        ..DispatchConfig::default()
    }
}

fn config(script_types: Vec<ScriptType>) -> SupervisorConfig {
    let transport = Transport::Stdio {
        program: TEST_RUNNER.to_owned(),
        args: vec![],
    };
    SupervisorConfig {
        pools: vec![PoolConfig::new("test", script_types, transport)],
        limits: Default::default(),
        dispatch: fast_dispatch(),
    }
}

async fn supervisor(backend: &Backend) -> Supervisor {
    Supervisor::start(config(ScriptType::ALL.to_vec()), backend.store.clone())
}

fn params(script: &str) -> JobParams {
    JobParams {
        traceparent: None,
        script: script.to_owned(),
        script_type: ScriptType::Sal,
        caller_id: "tester".to_owned(),
        context_id: "ctx".to_owned(),
        timeout: Some(10),
        prerequisites: vec![],
        retries: Some(2),
        env_vars: BTreeMap::new(),
    }
}

async fn submit(sup: &Supervisor, p: JobParams) -> JobId {
    let id = sup.create_job(p).await.expect("create");
    sup.start_job(id).await.expect("start");
    id
}

async fn wait(sup: &Supervisor, id: JobId) -> hero_supervisor::job::Job {
    sup.wait_for_job(id, Duration::from_secs(20))
        .await
        .expect("job reaches a terminal status")
}

/// Runs each listed test body against both stores.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::memory().await).await }) *
        }
        mod redis_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::redis().await).await }) *
        }
    };
}

both_stores!(
    success_finishes_with_output,
    error_is_retried_then_fails_with_the_runners_error,
    flaky_job_finishes_on_a_later_attempt,
    retry_outcome_requeues_then_exhausts,
    invalid_request_is_never_retried,
    deadline_cancels_and_fails_with_timeout,
    stop_of_queued_and_running_jobs,
    runner_crash_mid_job_is_retried_and_finishes,
    garbage_frame_drops_the_connection_not_the_job,
    prerequisites_chain_and_failure_propagation,
    logs_from_the_runner_reach_the_job,
    shutdown_leaves_no_job_started,
    every_type_and_context_wakes_an_idle_pool_without_the_poll,
);

/// An idle pool claims only the types announced to it: with the safety-net poll an
/// hour away, each job of a type whose queue the pool last found empty (in the default
/// namespace or a context's) must still be taken at once, one after the other.
async fn every_type_and_context_wakes_an_idle_pool_without_the_poll(b: Backend) {
    let mut config = config(ScriptType::ALL.to_vec());
    config.dispatch.idle_poll = Duration::from_secs(3600);
    let sup = Supervisor::start(config, b.store.clone());
    for round in 0..2 {
        for script_type in [
            ScriptType::Osis,
            ScriptType::Sal,
            ScriptType::V,
            ScriptType::Python,
        ] {
            for context in ["ctx", "5", "6"] {
                let mut p = params(&format!("echo {round}-{context}"));
                p.script_type = script_type;
                p.context_id = context.to_owned();
                let id = submit(&sup, p).await;
                let job = wait(&sup, id).await;
                assert_eq!(
                    job.status,
                    JobStatus::Finished,
                    "{script_type} in {context}: {job:?}"
                );
                assert_eq!(
                    job.output.as_deref(),
                    Some(format!("{round}-{context}").as_str())
                );
            }
        }
    }
    sup.shutdown().await;
}

/// Successes are written in batches after their job task ended: shutdown must still
/// write every one it received before it returns, and hand back the rest.
async fn shutdown_leaves_no_job_started(b: Backend) {
    let sup = supervisor(&b).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&sup, params("sleep 0.3")).await);
    }
    wait_for_status(&sup, ids[0], JobStatus::Started).await;
    sup.shutdown().await;
    let mut finished = 0;
    for id in ids {
        let job = b.store.get(id).await.unwrap();
        match job.status {
            JobStatus::Finished => {
                assert_eq!(job.output.as_deref(), Some("slept"));
                finished += 1;
            }
            JobStatus::Dispatched => assert_eq!(job.attempt, 0, "released, not counted"),
            other => panic!("job {id} left {other:?} after shutdown"),
        }
    }
    assert!(finished > 0, "the grace period let running jobs finish");
}

async fn success_finishes_with_output(b: Backend) {
    let sup = supervisor(&b).await;
    let out = sup
        .submit_and_wait(params("echo hello world"))
        .await
        .expect("run_job");
    assert_eq!(out, "hello world");
    let id = submit(&sup, params("echo again")).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.attempt, 1);
    assert_eq!(
        job.runner.as_deref(),
        Some(format!("{}/test", sup.instance_id()).as_str()),
        "the job records which instance and pool ran it"
    );
    assert_eq!(sup.get_job_output(id).await.unwrap(), "again");
    sup.shutdown().await;
}

async fn error_is_retried_then_fails_with_the_runners_error(b: Backend) {
    let sup = supervisor(&b).await;
    let id = submit(&sup, params("fail disk on fire")).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.attempt, 3, "retries: 2 means three attempts");
    let err = job.error.expect("typed error");
    assert_eq!(err.message, "disk on fire");
    let res = sup.submit_and_wait(params("fail boom")).await;
    assert!(
        matches!(&res, Err(SupervisorError::JobFailed { error, .. }) if error.message == "boom"),
        "{res:?}"
    );
    sup.shutdown().await;
}

async fn flaky_job_finishes_on_a_later_attempt(b: Backend) {
    let sup = supervisor(&b).await;
    let out = sup
        .submit_and_wait(params("flaky 2"))
        .await
        .expect("third attempt succeeds");
    assert_eq!(out, "ok on attempt 3");
    sup.shutdown().await;
}

async fn retry_outcome_requeues_then_exhausts(b: Backend) {
    let sup = supervisor(&b).await;
    let out = sup
        .submit_and_wait(params("retry 0.05"))
        .await
        .expect("succeeds on the third attempt");
    assert_eq!(out, "ok on attempt 3");

    let mut p = params("retry-forever 0.05");
    p.retries = Some(1);
    let id = submit(&sup, p).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.error.unwrap().error_type, "retries_exhausted");
    sup.shutdown().await;
}

async fn invalid_request_is_never_retried(b: Backend) {
    let sup = supervisor(&b).await;
    let id = submit(&sup, params("invalid nope")).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.error.unwrap().error_type, "invalid_request");
    sup.shutdown().await;
}

async fn deadline_cancels_and_fails_with_timeout(b: Backend) {
    let sup = supervisor(&b).await;
    let mut p = params("sleep 30");
    p.timeout = Some(1);
    p.retries = Some(0);
    let started = std::time::Instant::now();
    let id = submit(&sup, p).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    // The runner is still usable afterwards.
    let out = sup.submit_and_wait(params("echo after")).await;
    assert_eq!(out.unwrap(), "after");
    sup.shutdown().await;
}

async fn stop_of_queued_and_running_jobs(b: Backend) {
    // Only SAL is served: a Python job stays queued.
    let sup = Supervisor::start(config(vec![ScriptType::Sal]), b.store.clone());
    let mut queued = params("echo never");
    queued.script_type = ScriptType::Python;
    let q = submit(&sup, queued).await;
    assert_eq!(sup.get_job_status(q).await.unwrap(), JobStatus::Dispatched);
    sup.stop_job(q).await.unwrap();
    let job = sup.get_job(q).await.unwrap();
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, "cancelled");

    let r = submit(&sup, params("sleep 30")).await;
    wait_for_status(&sup, r, JobStatus::Started).await;
    let stopped_at = std::time::Instant::now();
    sup.stop_job(r).await.unwrap();
    let job = wait(&sup, r).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, "cancelled");
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
    sup.shutdown().await;
}

async fn runner_crash_mid_job_is_retried_and_finishes(b: Backend) {
    let sup = supervisor(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let id = submit(&sup, params(&format!("crash-once {}", marker.display()))).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
    assert_eq!(job.output.as_deref(), Some("survived"));
    assert_eq!(job.attempt, 2);
    assert!(marker.exists());
    assert!(sup.list_runners()[0].restarts >= 1);
    sup.shutdown().await;
}

async fn garbage_frame_drops_the_connection_not_the_job(b: Backend) {
    let sup = supervisor(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("garbage");
    let id = submit(&sup, params(&format!("garbage-once {}", marker.display()))).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
    assert_eq!(job.output.as_deref(), Some("clean"));
    assert_eq!(job.attempt, 2);
    // The supervisor is fine and keeps serving.
    assert_eq!(
        sup.submit_and_wait(params("echo still here"))
            .await
            .unwrap(),
        "still here"
    );
    sup.shutdown().await;
}

async fn prerequisites_chain_and_failure_propagation(b: Backend) {
    let sup = supervisor(&b).await;
    let a = sup.create_job(params("sleep 0.2")).await.unwrap();
    let mut pb = params("echo b");
    pb.prerequisites = vec![a];
    let bj = sup.create_job(pb).await.unwrap();
    let mut pc = params("echo c");
    pc.prerequisites = vec![bj];
    let c = sup.create_job(pc).await.unwrap();
    assert_eq!(
        sup.start_job(c).await.unwrap(),
        JobStatus::WaitingForPrerequisites
    );
    assert_eq!(
        sup.start_job(bj).await.unwrap(),
        JobStatus::WaitingForPrerequisites
    );
    sup.start_job(a).await.unwrap();
    let cj = wait(&sup, c).await;
    assert_eq!(cj.status, JobStatus::Finished);
    let (aj, bjob) = (
        sup.get_job(a).await.unwrap(),
        sup.get_job(bj).await.unwrap(),
    );
    assert!(aj.finished_at <= bjob.started_at && bjob.finished_at <= cj.started_at);

    let mut pf = params("invalid broken");
    pf.retries = Some(0);
    let f = sup.create_job(pf).await.unwrap();
    let mut pd = params("echo d");
    pd.prerequisites = vec![f];
    let d = sup.create_job(pd).await.unwrap();
    sup.start_job(d).await.unwrap();
    sup.start_job(f).await.unwrap();
    let dj = wait(&sup, d).await;
    assert_eq!(dj.status, JobStatus::Error);
    assert_eq!(dj.error.unwrap().error_type, "prerequisite_failed");
    sup.shutdown().await;
}

async fn logs_from_the_runner_reach_the_job(b: Backend) {
    let sup = supervisor(&b).await;
    let id = submit(&sup, params("log warming up")).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Finished);
    // Log lines are written by a task of their own; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let logs = sup.get_job_logs(id).await.unwrap();
        if logs.as_deref() == Some("warming up\nwarming up (stderr)") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "logs: {logs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sup.shutdown().await;
}

/// `redis-cli` on the test Redis: a raw command, as an operator's hand edit would be.
fn redis_cli(b: &Backend, args: &[&str]) -> String {
    let server = b._redis.as_ref().expect("a redis backend");
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(server.socket_path())
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A job whose stored fields no longer decode (edited by hand) cannot run: the store
/// reports it undecodable when it is claimed, and the dispatcher ends it at once in
/// `Error(corrupt)`, while the jobs claimed with it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_is_failed_when_claimed_and_the_others_run() {
    let b = redis().await;
    let sup = supervisor(&b).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(sup.create_job(params(&format!("echo {i}"))).await.unwrap());
    }
    let key = format!("hero:job:{}", ids[1]);
    redis_cli(&b, &["HSET", &key, "env_vars", "not json"]);
    for id in &ids {
        sup.start_job(*id).await.unwrap();
    }
    for i in [0, 2] {
        let job = wait(&sup, ids[i]).await;
        assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
        assert_eq!(job.output.as_deref(), Some(i.to_string().as_str()));
    }
    // `get` cannot decode the spoiled job either: read its fields raw.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if redis_cli(&b, &["HGET", &key, "status"]) == "Error" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spoiled job did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = redis_cli(&b, &["HGET", &key, "error"]);
    assert!(error.contains("\"corrupt\""), "{error}");
    assert!(error.contains("env_vars"), "{error}");
    sup.shutdown().await;
}

/// Two supervisors on one Redis: work is shared, no job runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis_without_running_a_job_twice() {
    let b = redis().await;
    let one = supervisor(&b).await;
    let two = supervisor(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let sup = if i % 2 == 0 { &one } else { &two };
        ids.push(submit(sup, params(&format!("once {}", dir.path().display()))).await);
    }
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for id in ids {
        let job = wait(&one, id).await;
        assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
        *by_worker.entry(job.output.unwrap()).or_default() += 1;
    }
    assert_eq!(by_worker.values().sum::<usize>(), 60);
    assert_eq!(by_worker.len(), 2, "both instances ran jobs: {by_worker:?}");
    one.shutdown().await;
    two.shutdown().await;
}

/// An instance that dies without a word (its runtime dropped: no shutdown, leases left
/// behind): the other reclaims its jobs once their leases expire.
#[test]
fn a_dead_instances_jobs_are_reclaimed_by_another() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(redis());
    let short_lease = |mut c: SupervisorConfig| {
        c.dispatch.lease = Duration::from_secs(1);
        c
    };
    // The doomed instance, on a runtime of its own.
    let doomed_rt = tokio::runtime::Runtime::new().unwrap();
    let doomed = doomed_rt.block_on(async {
        Supervisor::start(short_lease(config(vec![ScriptType::Sal])), b.store.clone())
    });
    let id = doomed_rt
        .block_on(submit(&doomed, params("sleep 3")))
        .to_owned();
    doomed_rt.block_on(async {
        wait_for_status(&doomed, id, JobStatus::Started).await;
    });
    let owner = doomed.instance_id().to_owned();
    // Kill it: every task dropped mid-flight, its runner child killed on drop.
    drop(doomed);
    doomed_rt.shutdown_background();

    rt.block_on(async {
        let survivor =
            Supervisor::start(short_lease(config(vec![ScriptType::Sal])), b.store.clone());
        let job = survivor
            .wait_for_job(id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
        assert_eq!(job.attempt, 2, "the lost attempt counts");
        assert_ne!(survivor.instance_id(), owner);
        survivor.shutdown().await;
    });
}

/// A runner that stops answering altogether (SIGSTOP: not even cancels) is hard-killed
/// and restarted at the job's deadline; the job is retried on the new runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_runner_is_killed_and_restarted_at_the_deadline() {
    let b = memory().await;
    let sup = supervisor(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("frozen");
    let mut p = params(&format!("freeze-once {}", marker.display()));
    p.timeout = Some(1);
    p.retries = Some(1);
    let id = submit(&sup, p).await;
    let job = wait(&sup, id).await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
    assert_eq!(job.output.as_deref(), Some("thawed"));
    assert_eq!(job.attempt, 2);
    assert!(sup.list_runners()[0].restarts >= 1);
    sup.shutdown().await;
}

/// Shutdown with a job still running after the grace period: the job goes back to its
/// queue, the attempt not counted, and another supervisor finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_jobs_back_without_counting_the_attempt() {
    let b = memory().await;
    let mut c = config(ScriptType::ALL.to_vec());
    c.dispatch.shutdown_grace = Duration::from_millis(200);
    let sup = Supervisor::start(c, b.store.clone());
    let id = submit(&sup, params("sleep 1.5")).await;
    wait_for_status(&sup, id, JobStatus::Started).await;
    sup.shutdown().await;
    let job = b.store.get(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Dispatched);
    assert_eq!(job.attempt, 0, "a released attempt does not count");
    assert!(sup.list_runners()[0].connected == 0, "runners stopped");

    let next = supervisor(&b).await;
    let job = wait(&next, id).await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.attempt, 1);
    next.shutdown().await;
}

/// The TCP transports: a managed runner (spawned with `--tcp-socket`) and an external
/// one (already listening); and a pool that never sends `hello`, as for a plain v1 runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_managed_tcp_external_and_plain_v1_pools() {
    let b = memory().await;
    let port = hero_testkit::free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let mut external = std::process::Command::new(TEST_RUNNER)
        .args(["--tcp-socket", &addr])
        .spawn()
        .expect("spawn an external runner");
    let mut managed = PoolConfig::new(
        "managed",
        vec![ScriptType::Sal],
        Transport::TcpManaged {
            program: TEST_RUNNER.to_owned(),
            args: vec![],
        },
    );
    managed.hello = HelloMode::Off;
    let ext = PoolConfig::new(
        "external",
        vec![ScriptType::Python],
        Transport::TcpExternal { addr: addr.clone() },
    );
    let c = SupervisorConfig {
        pools: vec![managed, ext],
        limits: Default::default(),
        dispatch: fast_dispatch(),
    };
    let sup = Supervisor::start(c, b.store.clone());
    let mut py = params("echo over tcp");
    py.script_type = ScriptType::Python;
    assert_eq!(sup.submit_and_wait(py).await.unwrap(), "over tcp");
    assert_eq!(
        sup.submit_and_wait(params("echo managed")).await.unwrap(),
        "managed"
    );
    let runners = sup.list_runners();
    assert_eq!(runners[0].transport, "tcp-managed");
    assert_eq!(runners[1].transport, "tcp");
    assert!(runners.iter().all(|r| r.connected == 1), "{runners:?}");
    sup.shutdown().await;
    let _ = external.kill();
    let _ = external.wait();
}

/// `stop_job` through one instance stops a job running on another (same Redis): the job
/// would sleep 120 s; it ends cancelled within 20 s (loose on purpose, so a loaded
/// machine does not fail it; a stop that is not delivered takes the 120 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_through_one_instance_stops_a_job_running_on_another() {
    let b = redis().await;
    let runner = supervisor(&b).await;
    // The front instance serves no script type: it never runs anything itself.
    let front = Supervisor::start(config(vec![]), b.store.clone());
    let id = submit(&front, params("sleep 120")).await;
    wait_for_status(&front, id, JobStatus::Started).await;
    let stopped_at = std::time::Instant::now();
    front.stop_job(id).await.unwrap();
    let job = wait(&front, id).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, "cancelled");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "took {:?}",
        stopped_at.elapsed()
    );
    front.shutdown().await;
    runner.shutdown().await;
}

/// A runner that announces a lower `max_in_flight` in its `hello` (the test runner says
/// 32) than its pool is configured for (64) is never sent more than it accepts: 64 slow
/// jobs without retries all finish, none is answered `runner_busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_never_sends_a_runner_more_than_its_hello_accepts() {
    let b = memory().await;
    let sup = supervisor(&b).await;
    assert_eq!(sup.list_runners()[0].processes, 1);
    let mut ids = Vec::new();
    for _ in 0..64 {
        let mut p = params("sleep 0.3");
        p.retries = Some(0);
        ids.push(submit(&sup, p).await);
    }
    for id in ids {
        let job = wait(&sup, id).await;
        assert_eq!(job.status, JobStatus::Finished, "{:?}", job.error);
        assert_eq!(job.attempt, 1);
    }
    assert_eq!(
        sup.list_runners()[0].max_in_flight,
        32,
        "negotiated in hello"
    );
    sup.shutdown().await;
}

/// Jobs whose runner answers while Redis is briefly down: the writes are tried again,
/// and each outcome lands once Redis is back (a success through the recorder, a timeout
/// through the same retries), instead of waiting for the lease to expire and running
/// the job a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_during_a_short_redis_outage_are_recorded_when_redis_is_back() {
    let mut server = RedisServer::builder().aof(true).start();
    let store: Arc<dyn JobStore> = Arc::new(
        RedisStore::connect(&server.url(), StoreConfig::default(), Arc::new(SystemClock))
            .await
            .expect("connect to the test redis"),
    );
    let sup = Supervisor::start(config(ScriptType::ALL.to_vec()), store.clone());
    let succeeds = submit(&sup, params("sleep 0.5")).await;
    let mut p = params("sleep 5");
    p.timeout = Some(1);
    p.retries = Some(0);
    let times_out = submit(&sup, p).await;
    for id in [succeeds, times_out] {
        wait_for_status(&sup, id, JobStatus::Started).await;
    }
    server.stop();
    // Both answer meanwhile (the second at its deadline); the first writes fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    let done = wait_for_status(&sup, succeeds, JobStatus::Finished).await;
    assert_eq!(done.attempt, 1, "recorded, not run again");
    assert_eq!(done.output.as_deref(), Some("slept"));
    let failed = wait_for_status(&sup, times_out, JobStatus::Error).await;
    let error = failed.error.expect("an error");
    assert_eq!(error.error_type, "timeout", "{error:?}");
    sup.shutdown().await;
}

/// Waits (10 s at most, through store outages) until job `id` has `status`.
async fn wait_for_status(
    sup: &Supervisor,
    id: JobId,
    status: JobStatus,
) -> hero_supervisor::job::Job {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(job) = sup.get_job(id).await
            && job.status == status
        {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never became {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
