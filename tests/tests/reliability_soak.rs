//! Soak: thousands of jobs of every script type through a real `Supervisor` and real
//! runner processes, each runner told per job (seeded RNG, seed printed) to succeed,
//! fail, fail once, ask for a retry, ask for one retry, be invalid or time out. Every
//! job must reach the terminal status its runner was told to produce, with the right
//! error type and attempt count; the runner's own ledger proves no attempt ran twice,
//! none ran after the job ended, and no job finished twice.
//!
//! Over one Redis, over a Redis Cluster (`--redis-cluster`, the jobs spread over six
//! numbered contexts, so over every master) and over the in-memory store.
//!
//! `HERO_SOAK_SEED=<n>` replays a run; `HERO_SOAK_JOBS=<n>` changes the size of the
//! Redis soak (default 20,000), `HERO_SOAK_CLUSTER_JOBS=<n>` the cluster's (default
//! 3,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Outcome, Rng};
use hero_supervisor::clock::SystemClock;
use hero_supervisor::job::{JobParams, JobStatus, ScriptType};
use hero_supervisor::store::{JobStore, MemoryStore, RedisStore, StoreConfig};
use hero_supervisor::{Supervisor, SupervisorConfig};
use hero_testkit::{RedisCluster, RedisServer};

/// Picks an outcome: mostly successes, every other kind well represented, few timeouts
/// (each costs a runner slot for a whole second).
fn pick(rng: &mut Rng) -> (Outcome, u32) {
    let outcome = match rng.below(1000) {
        0..=579 => Outcome::Ok,
        580..=679 => Outcome::Fail,
        680..=769 => Outcome::Flaky,
        770..=829 => Outcome::Retry,
        830..=909 => Outcome::RetryOnce,
        910..=969 => Outcome::Invalid,
        _ => Outcome::Timeout,
    };
    let retries = match outcome {
        Outcome::Timeout => rng.below(2) as u32,
        _ => rng.below(3) as u32,
    };
    (outcome, retries)
}

struct Plan {
    params: Vec<JobParams>,
    outcomes: Vec<(Outcome, u32)>,
}

fn plan(rng: &mut Rng, jobs: usize, ledger: &std::path::Path) -> Plan {
    let mut params = Vec::with_capacity(jobs);
    let mut outcomes = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let (outcome, retries) = pick(rng);
        let script_type = ScriptType::ALL[rng.below(4) as usize];
        // Timeout jobs get 1 s; the others a deadline they never meet on a loaded box.
        let timeout = if outcome == Outcome::Timeout { 1 } else { 60 };
        params.push(common::params(
            outcome.script(ledger, 0),
            script_type,
            timeout,
            retries,
        ));
        outcomes.push((outcome, retries));
    }
    Plan { params, outcomes }
}

/// Runs `jobs` planned jobs (their params passed through `spread`) through a supervisor
/// over `store` and checks every one.
async fn soak(
    store: Arc<dyn JobStore>,
    jobs: usize,
    processes: usize,
    what: &str,
    spread: impl Fn(Vec<JobParams>) -> Vec<JobParams>,
) {
    let mut rng = Rng::from_env("HERO_SOAK_SEED", what);
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let plan = plan(&mut rng, jobs, &ledger);

    let config = SupervisorConfig {
        pools: common::pool_per_type(processes, None),
        limits: Default::default(),
        dispatch: common::fast_dispatch(),
    };
    let sup = Supervisor::start(config, store.clone());
    let started = Instant::now();
    let events = store.subscribe();
    let ids = common::submit_all(&sup, spread(plan.params), 32).await;
    let submitted = started.elapsed();
    common::wait_all_terminal(&store, events, &ids, Duration::from_secs(150)).await;
    let elapsed = started.elapsed();

    let jobs_read = common::get_all(&store, &ids).await;
    let ledger = common::read_ledger(&ledger);
    let mut wrong = Vec::new();
    let mut by_outcome: std::collections::BTreeMap<&str, usize> = Default::default();
    let (mut finished, mut failed, mut executions) = (0, 0, 0);
    for (job, (outcome, retries)) in jobs_read.iter().zip(&plan.outcomes) {
        let job = job
            .as_ref()
            .expect("every accepted job is still in the store");
        *by_outcome.entry(outcome.word()).or_default() += 1;
        match job.status {
            JobStatus::Finished => finished += 1,
            _ => failed += 1,
        }
        let runs = ledger
            .get(&job.id.to_string())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        executions += runs.len();
        if let Err(e) = common::check_job(job, &outcome.expected(*retries))
            .and_then(|()| common::check_executions(job, runs, *outcome))
        {
            wrong.push(e);
        }
    }
    let unknown = ledger.len().saturating_sub(ids.len());
    common::report(format!(
        "{what}: {jobs} jobs ({by_outcome:?}) in {elapsed:.1?} (submitted in {submitted:.1?}): \
         {:.0} jobs/s; {finished} finished, {failed} failed as told, {executions} executions, \
         {} wrong, 0 lost",
        jobs as f64 / elapsed.as_secs_f64(),
        wrong.len(),
    ));
    assert!(
        wrong.is_empty(),
        "{} of {jobs} jobs did not end as told; first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(ledger.len(), ids.len(), "{unknown} unknown jobs ran");
    assert_eq!(finished + failed, jobs);
    sup.shutdown().await;
}

/// 20,000 jobs through a private Redis, one pool of two runners per script type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_redis_every_job_ends_as_its_runner_was_told() {
    let jobs = std::env::var("HERO_SOAK_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), StoreConfig::default(), Arc::new(SystemClock))
        .await
        .expect("connect to the test redis");
    soak(Arc::new(store), jobs, 2, "soak over redis", |p| p).await;
}

/// The same, smaller, over the shared Redis Cluster: 3,000 jobs over six contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_cluster_every_job_ends_as_its_runner_was_told() {
    let jobs = std::env::var("HERO_SOAK_CLUSTER_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000);
    let target = common::StoreTarget::cluster(RedisCluster::shared(), "soak");
    let store = target.connect().await;
    soak(store, jobs, 2, "soak over a cluster", |p| target.spread(p)).await;
}

/// The same, smaller, over the in-memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory_every_job_ends_as_its_runner_was_told() {
    let store = MemoryStore::new(StoreConfig::default(), Arc::new(SystemClock));
    soak(Arc::new(store), 3_000, 1, "soak over memory", |p| p).await;
}
