//! The dispatcher: from the queues to the runners and back.
//!
//! Per pool, one claim loop takes ready jobs only while a live runner connection has a
//! free request slot (reserved per job, sized by the runner's own `max_in_flight`, so
//! nothing is prefetched without bound and no runner is sent more than it takes), and
//! runs each claimed job as a task: build the request, send it, wait for the outcome, the
//! job's deadline, or a stop; then decide what that makes of the job (DESIGN.md,
//! "Outcome mapping") and hand the completion to the recorder, which writes every
//! outcome in batches. Beside them: lease renewal for the jobs running here, promotion of
//! delayed jobs and reclaim of expired leases (any instance's), and the log writer.
//!
//! - `mod.rs` (here): [`DispatchConfig`], the shared `Dispatcher` state, start and drain.
//! - `claim.rs`: the claim loop.
//! - `attempt.rs`: one attempt: the request, its deadline, cancel escalation.
//! - `outcome.rs`: the policy, a pure function of (job, verdict, now, jitter).
//! - `recorder.rs`: writes completions in batches, retrying an unavailable store.
//! - `upkeep.rs`: lease renewal, remote stops, promotion and reclaim, retention, the log
//!   writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, SystemClock};
use crate::job::{JobId, ScriptType};
use crate::metrics::Metrics;
use crate::pool::RunnerPool;
use crate::store::{Completion, JobStore};

mod attempt;
mod claim;
mod outcome;
mod recorder;
mod upkeep;

pub(crate) use self::upkeep::log_writer;

/// Timing and retry settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// This instance's id: the lease owner and the request's `worker_id`.
    pub instance_id: String,
    /// Lease of a claimed job; renewed every third of it while the job runs. Default 30 s.
    pub lease: Duration,
    /// First retry delay after an `error`/`timeout`/lost runner; doubles per attempt,
    /// with ±25% jitter. Default 250 ms.
    pub backoff_base: Duration,
    /// Largest retry delay, also the cap on a runner's `retry_after_seconds`. Default 30 s.
    pub backoff_max: Duration,
    /// After a cancel frame (stop, deadline), how long the runner has to answer before
    /// the request is hard-killed and the runner restarted. Default 5 s.
    pub cancel_grace: Duration,
    /// On shutdown, how long running jobs may finish before they are handed back to the
    /// queue. Default 10 s.
    pub shutdown_grace: Duration,
    /// How often delayed jobs are promoted and expired leases reclaimed. Default 200 ms.
    pub maintenance_interval: Duration,
    /// Safety net: a claim loop with no wake-up event tries again after this. Default 1 s.
    pub idle_poll: Duration,
    /// How often ended jobs past the store's retention (`StoreConfig::keep_finished`,
    /// `keep_finished_count`) are removed, in bounded calls. Default 1 s.
    pub retention_interval: Duration,
    /// "Now" for outcomes (retry times, backoff jitter) and request deadlines. Default
    /// the system clock; a test may share a [`crate::clock::ManualClock`] with its store.
    /// A field here rather than a parameter of its own, so callers that build a
    /// `DispatchConfig` from its default need no change.
    pub clock: Arc<dyn Clock>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            instance_id: format!("hero-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            maintenance_interval: Duration::from_millis(200),
            idle_poll: Duration::from_secs(1),
            retention_interval: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A job running on this instance.
#[derive(Debug)]
struct Running {
    /// The lease owner: `<instance id>/<pool name>`.
    owner: Arc<str>,
    /// Fired by `stop_job`.
    stop: CancellationToken,
    /// Fired on shutdown after the grace period: hand the job back.
    release: CancellationToken,
}

/// Shared state of the dispatcher.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) config: DispatchConfig,
    running: Mutex<HashMap<JobId, Running>>,
    /// The tasks running claimed jobs: `drain` waits on it.
    jobs: TaskTracker,
    /// Stops claiming.
    claiming: CancellationToken,
    /// Completed attempts (with their job's script type, for the metrics) on their way
    /// to the recorder, which writes them in batches.
    completed: mpsc::Sender<(Completion, ScriptType)>,
    /// The recorder's end, until `start` hands it to the recorder task.
    completed_rx: Mutex<Option<mpsc::Receiver<(Completion, ScriptType)>>>,
    /// What this process counts.
    pub(crate) metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        config: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Dispatcher> {
        let (completed, completed_rx) = mpsc::channel(recorder::COMPLETE_QUEUE);
        Arc::new(Dispatcher {
            store,
            config,
            running: Mutex::default(),
            jobs: TaskTracker::new(),
            claiming: CancellationToken::new(),
            completed,
            completed_rx: Mutex::new(Some(completed_rx)),
            metrics,
        })
    }

    /// Starts a claim loop per pool, the recorder, the lease renewer, the cancel
    /// listener, the maintenance loop and the retention loop.
    pub(crate) fn start(
        self: &Arc<Self>,
        pools: &[Arc<RunnerPool>],
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        for pool in pools {
            self.start_pool(pool.clone(), tracker, self.claiming.clone());
        }
        if let Some(rx) = self.completed_rx.lock().ok().and_then(|mut rx| rx.take()) {
            tracker.spawn(self.clone().record_loop(rx));
        }
        tracker.spawn(self.clone().renew_loop(shutdown.clone()));
        tracker.spawn(self.clone().cancel_loop(shutdown.clone()));
        tracker.spawn(self.clone().maintenance_loop(shutdown.clone()));
        tracker.spawn(self.clone().retention_loop(shutdown.clone()));
    }

    /// Starts the claim loop of `pool`, until `stop` (or the dispatcher's drain, when
    /// `stop` is a child of it: [`Dispatcher::pool_token`]).
    pub(crate) fn start_pool(
        self: &Arc<Self>,
        pool: Arc<RunnerPool>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) {
        let owner = self.owner_of(&pool.config.name);
        tracker.spawn(self.clone().claim_loop(pool, owner, stop));
    }

    /// The lease owner of the jobs a pool named `pool` runs here.
    pub(crate) fn owner_of(&self, pool: &str) -> Arc<str> {
        format!("{}/{}", self.config.instance_id, pool).into()
    }

    /// A token that stops one pool's claim loop alone; the dispatcher's drain stops it
    /// too.
    pub(crate) fn pool_token(&self) -> CancellationToken {
        self.claiming.child_token()
    }

    /// How many jobs run here for `owner`.
    pub(crate) fn running_for(&self, owner: &str) -> usize {
        match self.running.lock() {
            Ok(map) => map.values().filter(|r| &*r.owner == owner).count(),
            Err(_) => 0,
        }
    }

    /// Hands the jobs running here for `owner` back to their queues (attempt not
    /// counted), as a drain does after its grace period.
    pub(crate) fn release_for(&self, owner: &str) {
        if let Ok(map) = self.running.lock() {
            for r in map.values().filter(|r| &*r.owner == owner) {
                r.release.cancel();
            }
        }
    }

    /// Asks the local task running `id` to stop it. Returns false when it does not run here.
    pub(crate) fn stop_local(&self, id: JobId) -> bool {
        match self.running.lock() {
            Ok(map) => map.get(&id).map(|r| r.stop.cancel()).is_some(),
            Err(_) => false,
        }
    }

    /// Graceful shutdown: stop claiming, give running jobs `shutdown_grace`, then hand
    /// the rest back to their queues without counting the attempt. The recorder ends by
    /// itself once every job task has, after writing what it holds; `Supervisor::shutdown`
    /// waits for it with the other tasks.
    pub(crate) async fn drain(&self) {
        self.claiming.cancel();
        // Claim loops stop at once; no job task is added after this.
        self.jobs.close();
        if tokio::time::timeout(self.config.shutdown_grace, self.jobs.wait())
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(map) = self.running.lock() {
            for r in map.values() {
                r.release.cancel();
            }
        }
        let grace = self.config.cancel_grace + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, self.jobs.wait()).await;
    }
}
