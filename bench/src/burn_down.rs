//! Burn-down: N no-op jobs queued first, then a supervisor starts and drains them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use hero_supervisor::clock::SystemClock;
use hero_supervisor::dispatch::DispatchConfig;
use hero_supervisor::job::{Job, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::pool::{HelloMode, PoolConfig, Transport};
use hero_supervisor::store::{JobStore, MemoryStore, RedisStore, StoreConfig, StoreEvent};
use hero_supervisor::{Supervisor, SupervisorConfig};
use hero_testkit::{RedisCluster, RedisServer};
use tokio::sync::broadcast::error::RecvError;

use crate::commandstats::{Snapshot, Work};

/// Store calls in flight while queuing.
const QUEUE_CONCURRENCY: usize = 64;

/// Which store a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Memory,
    Redis,
    /// A private Redis Cluster (three masters, three replicas), `--redis-cluster` mode.
    Cluster,
}

impl StoreKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
            StoreKind::Cluster => "redis cluster (3 masters + 3 replicas)",
        }
    }
}

/// A store for one run; keeps its private Redis alive as long as it is used.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn JobStore>,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Backend {
    /// The private Redis' URL (none for the memory store).
    pub(crate) fn redis_url(&self) -> Option<String> {
        self._redis.as_ref().map(RedisServer::url)
    }

    pub(crate) async fn new(kind: StoreKind) -> Result<Backend> {
        Ok(match kind {
            StoreKind::Memory => Backend {
                store: Arc::new(MemoryStore::new(
                    StoreConfig::default(),
                    Arc::new(SystemClock),
                )),
                _redis: None,
                _cluster: None,
            },
            StoreKind::Redis => {
                let server = RedisServer::start();
                let store = connect_redis(&server.url()).await?;
                Backend {
                    store,
                    _redis: Some(server),
                    _cluster: None,
                }
            }
            StoreKind::Cluster => {
                let cluster = RedisCluster::start();
                let store = RedisStore::connect_cluster(
                    &cluster.urls(),
                    StoreConfig::default(),
                    Arc::new(SystemClock),
                )
                .await
                .context("connect to the private redis cluster")?;
                Backend {
                    store: Arc::new(store),
                    _redis: None,
                    _cluster: Some(cluster),
                }
            }
        })
    }
}

pub(crate) async fn connect_redis(url: &str) -> Result<Arc<dyn JobStore>> {
    let store = RedisStore::connect(url, StoreConfig::default(), Arc::new(SystemClock))
        .await
        .with_context(|| format!("connect to {url}"))?;
    Ok(Arc::new(store))
}

/// The path of `hero-noop-runner`, next to this executable.
pub(crate) fn noop_runner() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .context("locate the current executable")?
        .with_file_name("hero-noop-runner");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p hero-bench` \
             (the bench runs it as the runner process)",
            path.display()
        );
    }
    Ok(path)
}

/// The supervisor's config: one pool of `processes` no-op runners serving every type.
pub(crate) fn config(runner: &Path, processes: usize, in_flight: usize) -> SupervisorConfig {
    let transport = Transport::Stdio {
        program: runner.to_string_lossy().into_owned(),
        args: vec![],
    };
    let mut pool = PoolConfig::new("noop", ScriptType::ALL.to_vec(), transport);
    pool.processes = processes;
    pool.max_in_flight = in_flight;
    pool.hello = HelloMode::On;
    SupervisorConfig {
        pools: vec![pool],
        limits: Default::default(),
        dispatch: DispatchConfig::default(),
    }
}

/// A no-op job's params.
pub(crate) fn params() -> JobParams {
    JobParams {
        traceparent: None,
        script: "noop".to_owned(),
        script_type: ScriptType::Sal,
        caller_id: "bench".to_owned(),
        context_id: "bench".to_owned(),
        timeout: Some(60),
        prerequisites: vec![],
        retries: Some(0),
        env_vars: BTreeMap::new(),
    }
}

/// Creates and starts `n` jobs through the store (no dispatcher runs). Returns their
/// ids when `keep`, else an empty list (the memory probe keeps nothing).
pub(crate) async fn queue(store: &Arc<dyn JobStore>, n: usize, keep: bool) -> Result<Vec<JobId>> {
    queue_in(store, n, keep, 0).await
}

/// [`queue`] with the jobs spread round-robin over numbered contexts `1..=contexts`
/// (each its own key namespace; `0`: none, the default namespace).
pub(crate) async fn queue_in(
    store: &Arc<dyn JobStore>,
    n: usize,
    keep: bool,
    contexts: u32,
) -> Result<Vec<JobId>> {
    let ids = futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let context = (contexts > 0).then(|| (i as u32 % contexts) + 1);
                let mut p = params();
                if let Some(c) = context {
                    p.context_id = c.to_string();
                }
                let job = Job::new(JobId::new_in(context), p, Utc::now());
                store.create(&job).await?;
                let status = store.start(job.id).await?;
                if status != JobStatus::Dispatched {
                    bail!("job {} started as {status:?}, not Dispatched", job.id);
                }
                Ok(job.id)
            }
        })
        .buffered(QUEUE_CONCURRENCY)
        .try_fold(Vec::new(), |mut ids, id| async move {
            if keep {
                ids.push(id);
            }
            Ok(ids)
        })
        .await?;
    Ok(ids)
}

/// One burn-down run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) jobs: usize,
    pub(crate) queue_secs: f64,
    pub(crate) drain_secs: f64,
    /// Events the counter missed (broadcast lag); those jobs were checked with `get`.
    pub(crate) lagged: u64,
    /// Redis' counters over the queueing and the drain (Redis store only).
    pub(crate) work: Option<Work>,
}

impl Run {
    pub(crate) fn jobs_per_sec(&self) -> f64 {
        self.jobs as f64 / self.drain_secs
    }
}

/// Queues `jobs` no-op jobs on a fresh `kind` store, then times a supervisor with
/// `processes` runner processes draining them until every one is `Finished`.
pub(crate) async fn run(
    kind: StoreKind,
    jobs: usize,
    processes: usize,
    in_flight: usize,
    runner: &Path,
) -> Result<Run> {
    run_in(kind, jobs, processes, in_flight, runner, 0).await
}

/// [`run`] with the jobs spread over `contexts` numbered contexts ([`queue_in`]).
pub(crate) async fn run_in(
    kind: StoreKind,
    jobs: usize,
    processes: usize,
    in_flight: usize,
    runner: &Path,
    contexts: u32,
) -> Result<Run> {
    let backend = Backend::new(kind).await?;
    let store = backend.store.clone();
    let url = backend.redis_url();
    let before_queue = match &url {
        Some(url) => Some(Snapshot::read(url).await?),
        None => None,
    };
    let queued_at = Instant::now();
    let ids = queue_in(&store, jobs, true, contexts).await?;
    let queue_secs = queued_at.elapsed().as_secs_f64();
    let before_drain = match &url {
        Some(url) => Some(Snapshot::read(url).await?),
        None => None,
    };
    let index: HashMap<JobId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut done = vec![false; ids.len()];
    let mut remaining = ids.len();
    crate::output::progress(&format!(
        "queued {jobs} jobs on the {} store in {queue_secs:.1} s; starting the supervisor",
        kind.name()
    ));

    // Subscribe before the dispatcher starts, so no Finished slips past.
    let mut events = store.subscribe();
    let started: DateTime<Utc> = Utc::now();
    // The supervisor alone, not `hero_supervisor::server`: it must drain the store the
    // jobs were queued on (the memory store is in this process) and start after the
    // subscription above, with no JSON-RPC server in the measurement.
    let supervisor = Supervisor::start(config(runner, processes, in_flight), store.clone());
    let mut last = started;
    let mut lagged = 0u64;
    let give_up = Instant::now() + Duration::from_secs(60) + Duration::from_millis(jobs as u64);
    while remaining > 0 {
        if Instant::now() > give_up {
            supervisor.shutdown().await;
            bail!("{remaining} of {jobs} jobs still not Finished");
        }
        match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            Ok(Ok(StoreEvent::JobChanged {
                id,
                status: JobStatus::Finished,
            })) => {
                if let Some(&i) = index.get(&id)
                    && !done[i]
                {
                    done[i] = true;
                    remaining -= 1;
                    last = Utc::now();
                }
            }
            Ok(Ok(StoreEvent::JobChanged {
                id,
                status: status @ JobStatus::Error,
            })) => bail!("job {id} ended in {status:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => lagged += n,
            Ok(Err(RecvError::Closed)) => bail!("the store's event channel closed"),
            // Quiet: if events were lost, read the jobs not seen finishing.
            Err(_) if lagged > 0 => {
                for (i, id) in ids.iter().enumerate() {
                    if done[i] {
                        continue;
                    }
                    let job = store.get(*id).await?;
                    if job.status == JobStatus::Finished {
                        done[i] = true;
                        remaining -= 1;
                        last = last.max(job.finished_at.unwrap_or(last));
                    }
                }
            }
            Err(_) => {}
        }
    }
    let drain_secs = (last - started)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-3);
    // Read before the shutdown: the drain's work, not the pool's stopping.
    let work = match (&url, before_queue, before_drain) {
        (Some(url), Some(q), Some(d)) => {
            let after = Snapshot::read(url).await?;
            Some(Work {
                jobs: jobs as u64,
                runs: 1,
                queue: d.since(&q),
                drain: after.since(&d),
            })
        }
        _ => None,
    };
    supervisor.shutdown().await;
    drop(store);
    drop(backend);
    Ok(Run {
        jobs,
        queue_secs,
        drain_secs,
        lagged,
        work,
    })
}
