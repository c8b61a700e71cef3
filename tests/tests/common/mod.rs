//! Helpers shared by the reliability suite (`reliability_*.rs`): a seeded RNG, the
//! `soak` script of `hero-test-runner` and what each of its outcomes must end in, the
//! runner's execution ledger, bulk submission and bulk waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hero_supervisor::clock::SystemClock;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::dispatch::DispatchConfig;
use hero_supervisor::job::{Job, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::pool::{PoolConfig, Transport};
use hero_supervisor::store::{JobStore, RedisStore, StoreConfig, StoreEvent};
use hero_supervisor::{Supervisor, SupervisorError};
use tokio::sync::broadcast;

pub(crate) const TEST_RUNNER: &str = env!("CARGO_BIN_EXE_hero-test-runner");

/// Prints a line of the suite's report (seed, figures) on stderr, which `cargo test`
/// shows with `--nocapture` and for a failing test.
pub(crate) fn report(line: impl AsRef<str>) {
    #[expect(
        clippy::print_stderr,
        reason = "the suite reports its seed and figures"
    )]
    {
        eprintln!("{}", line.as_ref());
    }
}

/// SplitMix64: small, seedable, good enough to pick outcomes. No dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from `$var` when set (to replay a failure), else from the
    /// clock; the seed is reported either way.
    pub(crate) fn from_env(var: &str, what: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        report(format!("{what}: seed {seed} (replay with {var}={seed})"));
        Rng(seed)
    }

    /// An independent generator for another task, derived from this one.
    pub(crate) fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Dispatcher timings small enough for thousands of retries in seconds.
pub(crate) fn fast_dispatch() -> DispatchConfig {
    DispatchConfig {
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        cancel_grace: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(50),
        idle_poll: Duration::from_millis(200),
        ..DispatchConfig::default()
    }
}

/// Requests in flight per runner as the pools here are configured: at most half of what
/// `hero-test-runner` accepts (32), so that with two slots and one of them down the live
/// runner still has room for the whole pool's capacity. (The pool's capacity does not
/// follow the runner's `hello` nor its live slots: see the suite's bug report.)
pub(crate) const POOL_MAX_IN_FLIGHT: usize = 16;

/// A pool of `processes` `hero-test-runner`s over stdio. `tag` is passed as an extra
/// argument (the runner ignores it) so a test can find its own runner processes.
pub(crate) fn runner_pool(
    name: &str,
    script_types: Vec<ScriptType>,
    processes: usize,
    tag: Option<&str>,
) -> PoolConfig {
    let args = tag.map(|t| vec!["--tag".to_owned(), t.to_owned()]);
    let mut pool = PoolConfig::new(
        name,
        script_types,
        Transport::Stdio {
            program: TEST_RUNNER.to_owned(),
            args: args.unwrap_or_default(),
        },
    );
    pool.processes = processes;
    pool.max_in_flight = POOL_MAX_IN_FLIGHT;
    pool
}

/// One pool per script type, `processes` runners each.
pub(crate) fn pool_per_type(processes: usize, tag: Option<&str>) -> Vec<PoolConfig> {
    ScriptType::ALL
        .iter()
        .map(|t| runner_pool(t.as_str(), vec![*t], processes, tag))
        .collect()
}

pub(crate) fn params(
    script: String,
    script_type: ScriptType,
    timeout: u64,
    retries: u32,
) -> JobParams {
    JobParams {
        traceparent: None,
        script,
        script_type,
        caller_id: "reliability".to_owned(),
        context_id: "ctx".to_owned(),
        timeout: Some(timeout),
        prerequisites: vec![],
        retries: Some(retries),
        env_vars: BTreeMap::new(),
    }
}

/// What the `soak` script of `hero-test-runner` is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Ok,
    Fail,
    Flaky,
    Retry,
    RetryOnce,
    Timeout,
    Invalid,
}

/// The end a job must reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) status: JobStatus,
    pub(crate) attempt: u32,
    /// `Some` for `Error`.
    pub(crate) error_type: Option<&'static str>,
    /// `Some` for `Finished`.
    pub(crate) output: Option<String>,
}

impl Outcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Flaky => "flaky",
            Outcome::Retry => "retry",
            Outcome::RetryOnce => "retry-once",
            Outcome::Timeout => "timeout",
            Outcome::Invalid => "invalid",
        }
    }

    /// The script that tells the runner to act this out, recording to `ledger`.
    pub(crate) fn script(self, ledger: &Path, delay_ms: u64) -> String {
        format!("soak {} {} {delay_ms}", ledger.display(), self.word())
    }

    /// Where a job with this outcome and `retries` must end.
    pub(crate) fn expected(self, retries: u32) -> Expected {
        let attempts = retries + 1;
        let finished = |attempt: u32| Expected {
            status: JobStatus::Finished,
            attempt,
            error_type: None,
            output: Some(format!("ok {attempt}")),
        };
        let error = |attempt: u32, error_type: &'static str| Expected {
            status: JobStatus::Error,
            attempt,
            error_type: Some(error_type),
            output: None,
        };
        match self {
            Outcome::Ok => finished(1),
            Outcome::Fail => error(attempts, "error"),
            Outcome::Flaky if retries == 0 => error(1, "error"),
            Outcome::Flaky => finished(2),
            Outcome::Retry => error(attempts, "retries_exhausted"),
            Outcome::RetryOnce if retries == 0 => error(1, "retries_exhausted"),
            Outcome::RetryOnce => finished(2),
            Outcome::Timeout => error(attempts, "timeout"),
            Outcome::Invalid => error(1, "invalid_request"),
        }
    }
}

/// Checks a terminal job against what it must be; `Err` says what differs.
pub(crate) fn check_job(job: &Job, expected: &Expected) -> Result<(), String> {
    let actual = Expected {
        status: job.status,
        attempt: job.attempt,
        error_type: None,
        output: job
            .output
            .clone()
            .filter(|_| job.status == JobStatus::Finished),
    };
    let error_type = job.error.as_ref().map(|e| e.error_type.as_str());
    let error_ok = match job.status {
        JobStatus::Error => error_type == expected.error_type,
        _ => true,
    };
    if actual.status != expected.status
        || actual.attempt != expected.attempt
        || actual.output != expected.output
        || !error_ok
    {
        return Err(format!(
            "job {}: expected {expected:?}, got status {:?} attempt {} output {:?} error {:?}",
            job.id, job.status, job.attempt, job.output, job.error
        ));
    }
    Ok(())
}

/// One line of the runner's ledger: an execution it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Execution {
    pub(crate) attempt: u32,
    pub(crate) outcome: String,
    pub(crate) pid: u32,
}

/// The ledger by job id (as the runner saw it), in the order written.
pub(crate) fn read_ledger(path: &Path) -> HashMap<String, Vec<Execution>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_job: HashMap<String, Vec<Execution>> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [job, attempt, outcome, pid] = parts[..] else {
            panic!("torn ledger line {line:?}");
        };
        by_job.entry(job.to_owned()).or_default().push(Execution {
            attempt: attempt.parse().expect("ledger attempt"),
            outcome: outcome.to_owned(),
            pid: pid.parse().expect("ledger pid"),
        });
    }
    by_job
}

/// The executions of one job are attempts 1..=`job.attempt`, each exactly once (no
/// attempt delivered twice, none after the last), and for a finished job exactly one
/// execution was a success: the last.
pub(crate) fn check_executions(
    job: &Job,
    runs: &[Execution],
    outcome: Outcome,
) -> Result<(), String> {
    let mut attempts: Vec<u32> = runs.iter().map(|r| r.attempt).collect();
    attempts.sort_unstable();
    let want: Vec<u32> = (1..=job.attempt).collect();
    if attempts != want {
        return Err(format!(
            "job {} (attempt {}, {outcome:?}): the runner executed attempts {attempts:?}",
            job.id, job.attempt
        ));
    }
    if runs.iter().any(|r| r.outcome != outcome.word()) {
        return Err(format!("job {}: ledger outcomes {runs:?}", job.id));
    }
    Ok(())
}

/// Submits every params with `concurrency` tasks: create, then start. Returns the ids in
/// the order of `all`. Panics on any error.
pub(crate) async fn submit_all(
    sup: &Supervisor,
    all: Vec<JobParams>,
    concurrency: usize,
) -> Vec<JobId> {
    let all = Arc::new(all);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (sup, all, next) = (sup.clone(), all.clone(), next.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = all.get(i) else { break };
                let id = sup.create_job(p.clone()).await.expect("create_job");
                sup.start_job(id).await.expect("start_job");
                mine.push((i, id));
            }
            mine
        });
    }
    let mut ids = vec![None; all.len()];
    while let Some(done) = tasks.join_next().await {
        for (i, id) in done.expect("submitter task") {
            ids[i] = Some(id);
        }
    }
    ids.into_iter()
        .map(|id| id.expect("every job submitted"))
        .collect()
}

/// Waits until every job of `ids` is terminal, following store events (subscribed by
/// the caller *before* submitting) and re-reading the stragglers when events were
/// missed or quiet. Panics with the stragglers' statuses after `deadline`.
pub(crate) async fn wait_all_terminal(
    store: &Arc<dyn JobStore>,
    mut events: broadcast::Receiver<StoreEvent>,
    ids: &[JobId],
    deadline: Duration,
) {
    let until = Instant::now() + deadline;
    let mut pending: HashSet<JobId> = ids.iter().copied().collect();
    let mut last_sweep = Instant::now();
    while !pending.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        let sweep =
            match tokio::time::timeout(Duration::from_millis(500).min(left), events.recv()).await {
                Ok(Ok(StoreEvent::JobChanged { id, status })) => {
                    if status.is_terminal() {
                        pending.remove(&id);
                    }
                    last_sweep.elapsed() > Duration::from_secs(3)
                }
                Ok(Ok(_)) => last_sweep.elapsed() > Duration::from_secs(3),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => true,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => true,
            };
        if sweep && !pending.is_empty() {
            last_sweep = Instant::now();
            let jobs = get_all(store, &pending.iter().copied().collect::<Vec<_>>()).await;
            for job in jobs.into_iter().flatten() {
                if job.status.is_terminal() {
                    pending.remove(&job.id);
                }
            }
            if !pending.is_empty() && Instant::now() >= until {
                let sample: Vec<_> = pending.iter().take(10).collect();
                let statuses =
                    get_all(store, &sample.iter().map(|i| **i).collect::<Vec<_>>()).await;
                panic!(
                    "{} jobs not terminal after {deadline:?}; some: {:?}",
                    pending.len(),
                    statuses
                        .iter()
                        .map(|j| j.as_ref().map(|j| (j.id, j.status, j.attempt)))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

/// Reads every job, 16 at a time; `Err` where the store failed.
pub(crate) async fn get_all(store: &Arc<dyn JobStore>, ids: &[JobId]) -> Vec<Result<Job, String>> {
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, ids, next) = (store.clone(), ids.clone(), next.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                mine.push((i, store.get(*id).await.map_err(|e| e.to_string())));
            }
            mine
        });
    }
    let mut out: Vec<Option<Result<Job, String>>> = vec![None; ids.len()];
    while let Some(done) = tasks.join_next().await {
        for (i, job) in done.expect("reader task") {
            out[i] = Some(job);
        }
    }
    out.into_iter()
        .map(|j| j.expect("every job read"))
        .collect()
}

/// Runs `f` and fails if it takes longer than `bound`: an API call during an outage
/// must answer, not hang.
pub(crate) async fn bounded<T>(
    bound: Duration,
    what: &str,
    f: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(bound, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not answer within {bound:?}"),
    }
}

/// Whether the error is the storage-unavailable error of the API.
pub(crate) fn is_storage(e: &SupervisorError) -> bool {
    matches!(e, SupervisorError::Storage(_))
}

/// `target/<profile>/hero-supervisor`, beside this test's own `deps/` directory.
pub(crate) fn supervisor_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join("hero-supervisor");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hero-supervisor` first (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// The hash slot of `key` (CRC16/XMODEM of its hash tag, mod 16384), as Redis Cluster
/// computes it.
pub(crate) fn slot(key: &str) -> u16 {
    let tag = match (key.find('{'), key.find('}')) {
        (Some(a), Some(b)) if b > a + 1 => &key[a + 1..b],
        _ => key,
    };
    let mut crc: u16 = 0;
    for &byte in tag.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Contexts a cluster scenario spreads its jobs over: numbered, so each context is its
/// own hash slot (`{c<N>}`) and the jobs land on every master.
pub(crate) const CLUSTER_CONTEXTS: usize = 6;

/// Where a scenario keeps its jobs: one private `redis-server`, or a Redis Cluster under
/// a key prefix of the test's own (the shared cluster serves the other tests of the
/// binary at the same time).
#[derive(Debug, Clone)]
pub(crate) struct StoreTarget {
    /// The URL: one Redis's, or the cluster's seed nodes joined by commas.
    pub(crate) url: String,
    /// Cluster mode (`--redis-cluster`).
    pub(crate) cluster: bool,
    /// Key prefix (`--redis-prefix`).
    pub(crate) prefix: String,
}

impl StoreTarget {
    /// One Redis, under the default prefix.
    pub(crate) fn redis(server: &hero_testkit::RedisServer) -> StoreTarget {
        StoreTarget {
            url: server.url(),
            cluster: false,
            prefix: StoreConfig::default().prefix,
        }
    }

    /// A Redis Cluster, under a fresh prefix naming `what`.
    pub(crate) fn cluster(cluster: &hero_testkit::RedisCluster, what: &str) -> StoreTarget {
        StoreTarget {
            url: cluster.urls().join(","),
            cluster: true,
            prefix: format!("{what}-{}", &JobId::new().to_string()[..8]),
        }
    }

    /// Which one, in a report line.
    pub(crate) fn name(&self) -> &'static str {
        if self.cluster { "cluster" } else { "redis" }
    }

    /// The store's settings: the default ones under this target's prefix.
    pub(crate) fn store_config(&self) -> StoreConfig {
        StoreConfig {
            prefix: self.prefix.clone(),
            ..StoreConfig::default()
        }
    }

    /// A store on the target, as the supervisor's would be.
    pub(crate) async fn connect(&self) -> Arc<dyn JobStore> {
        let clock = Arc::new(SystemClock);
        let store = if self.cluster {
            let nodes: Vec<String> = self.url.split(',').map(str::to_owned).collect();
            RedisStore::connect_cluster(&nodes, self.store_config(), clock).await
        } else {
            RedisStore::connect(&self.url, self.store_config(), clock).await
        };
        Arc::new(store.expect("connect to the test store"))
    }

    /// The `hero-supervisor serve` flags naming the target.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--redis-url".to_owned(),
            self.url.clone(),
            "--redis-prefix".to_owned(),
            self.prefix.clone(),
        ];
        if self.cluster {
            args.push("--redis-cluster".to_owned());
        }
        args
    }

    /// `config` with the store on the target (the library server's `ServeConfig`).
    pub(crate) fn serve_config(&self, config: ServeConfig) -> ServeConfig {
        ServeConfig {
            redis_url: Some(self.url.clone()),
            redis_cluster: self.cluster,
            store: self.store_config(),
            ..config
        }
    }

    /// On a cluster, spreads `params` over [`CLUSTER_CONTEXTS`] numbered contexts (so
    /// over every master); on one Redis, leaves them as they are.
    pub(crate) fn spread(&self, mut params: Vec<JobParams>) -> Vec<JobParams> {
        if self.cluster {
            for (i, p) in params.iter_mut().enumerate() {
                p.context_id = (i % CLUSTER_CONTEXTS + 1).to_string();
            }
        }
        params
    }
}
