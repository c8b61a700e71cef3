//! The `Supervisor` facade: the operations of the reference API, which the JSON-RPC
//! layer calls one to one. It owns the store, the runner pools and the dispatcher.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hero_protocol::LogLine;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod waiters;

use self::waiters::{Waiters, Watch};
use crate::dispatch::{DispatchConfig, Dispatcher, log_writer};
use crate::job::{Job, JobId, JobParams, JobStatus, Limits, ScriptType};
use crate::metrics::Metrics;
use crate::pool::{HelloMode, PoolConfig, RunnerInfo, RunnerPool, Transport};
use crate::store::{CancelOutcome, JobStore, Metered, StoreError, StoreEvent};
use crate::trace::TraceParent;

/// Jobs one `create_jobs` call takes at most: one store call (one Redis script) each.
pub const MAX_BATCH_JOBS: usize = 1000;

/// Everything the supervisor needs besides its store.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The runner pools. Every script type should be served by some pool; jobs of a
    /// type no pool serves stay queued.
    pub pools: Vec<PoolConfig>,
    /// Limits on job params.
    pub limits: Limits,
    /// Dispatcher timing and retries.
    pub dispatch: DispatchConfig,
}

impl SupervisorConfig {
    /// One pool running the built-in runner (`<this executable> runner --stdio`) for all
    /// four script types: what `hero-supervisor` with no flags uses. It speaks the
    /// extensions, so its pool always opens with `hello`.
    pub fn with_builtin_runners() -> Self {
        let program = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "hero-supervisor".to_owned());
        let mut config =
            Self::with_runner_command(program, vec!["runner".to_owned(), "--stdio".to_owned()]);
        for pool in &mut config.pools {
            pool.hello = HelloMode::On;
        }
        config
    }

    /// One pool running `program args..` over stdio for all four script types.
    pub fn with_runner_command(program: impl Into<String>, args: Vec<String>) -> Self {
        let transport = Transport::Stdio {
            program: program.into(),
            args,
        };
        SupervisorConfig {
            pools: vec![PoolConfig::new(
                "builtin",
                ScriptType::ALL.to_vec(),
                transport,
            )],
            limits: Limits::default(),
            dispatch: DispatchConfig::default(),
        }
    }
}

/// Why an operation failed, in the terms the API reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    /// Bad input: params, script type, job id.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// A wait ran out; the job keeps its own state and goes on.
    #[error("job {id} did not finish within {waited_secs}s")]
    Timeout {
        /// The job.
        id: JobId,
        /// How long we waited.
        waited_secs: u64,
    },
    /// The job ended in `Error`.
    #[error("job {id} failed ({}): {}", error.error_type, error.message)]
    JobFailed {
        /// The job.
        id: JobId,
        /// Why.
        error: crate::job::JobError,
    },
    /// The job is not in a state that allows the operation.
    #[error("{0}")]
    Conflict(String),
    /// The store is unreachable or failing.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// A bug or a corrupt record.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SupervisorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => SupervisorError::NotFound(id),
            StoreError::PrerequisiteNotFound(id) => {
                SupervisorError::InvalidParams(format!("prerequisite {id} not found"))
            }
            e @ (StoreError::InvalidTransition { .. }
            | StoreError::Conflict { .. }
            | StoreError::AlreadyExists(_)) => SupervisorError::Conflict(e.to_string()),
            StoreError::Unavailable(why) => SupervisorError::Storage(why),
            e @ StoreError::Corrupt { .. } => SupervisorError::Internal(e.to_string()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn JobStore>,
    limits: Limits,
    /// The configured pools.
    pools: Vec<Arc<RunnerPool>>,
    /// Pools attached at run time ([`Supervisor::attach_pool`]), by name.
    attached: Mutex<BTreeMap<String, Attached>>,
    /// The log writer's sender for attached pools; taken at shutdown so the writer ends.
    logs: Mutex<Option<mpsc::Sender<LogLine>>>,
    dispatcher: Arc<Dispatcher>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// When it started (for `stats`).
    started: std::time::Instant,
    /// What this process counts (`/metrics`).
    metrics: Arc<Metrics>,
    /// The waits for jobs to end, woken by one reader of the store's events.
    waiters: Arc<Waiters>,
}

/// A pool attached at run time and what stops it.
#[derive(Debug)]
struct Attached {
    pool: Arc<RunnerPool>,
    /// Stops its claim loop.
    claiming: CancellationToken,
    /// Stops its runner slots.
    slots: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoned only if a holder panicked; nothing here panics while holding it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The supervisor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Starts the runner pools and the dispatcher over `store`: spawns their tasks and
    /// returns at once (runners connect in the background), so it cannot fail. Call it
    /// inside a tokio runtime.
    pub fn start(config: SupervisorConfig, store: Arc<dyn JobStore>) -> Supervisor {
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn JobStore> = Arc::new(Metered::new(store, metrics.clone()));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (log_tx, log_rx) = mpsc::channel(crate::pool::LOG_QUEUE);
        tracker.spawn(log_writer(store.clone(), log_rx));
        let pools: Vec<_> = config
            .pools
            .into_iter()
            .map(|p| RunnerPool::start(p, &tracker, shutdown.clone(), log_tx.clone()))
            .collect();
        let dispatcher = Dispatcher::new(store.clone(), config.dispatch, metrics.clone());
        dispatcher.start(&pools, &tracker, &shutdown);
        let waiters = Arc::new(Waiters::default());
        tracker.spawn(waiters.clone().forward(store.subscribe(), shutdown.clone()));
        Supervisor {
            inner: Arc::new(Inner {
                store,
                limits: config.limits,
                pools,
                attached: Mutex::default(),
                logs: Mutex::new(Some(log_tx)),
                dispatcher,
                shutdown,
                tracker,
                started: std::time::Instant::now(),
                metrics,
                waiters,
            }),
        }
    }

    /// The limits on job params.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// This instance's id (lease owner).
    pub fn instance_id(&self) -> &str {
        &self.inner.dispatcher.config.instance_id
    }

    /// What this process counts, served as `GET /metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The store (counted into [`Supervisor::metrics`]: the store given to
    /// [`Supervisor::start`] inside a [`Metered`]).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// Validates and stores a job as `Created`.
    pub async fn create_job(&self, params: JobParams) -> Result<JobId, SupervisorError> {
        params
            .validate(&self.inner.limits)
            .map_err(|e| SupervisorError::InvalidParams(e.to_string()))?;
        let job = new_job(params);
        self.inner.store.create(&job).await?;
        Ok(job.id)
    }

    /// Creates the jobs of `params` (at most [`MAX_BATCH_JOBS`], all of one key
    /// namespace: one numbered context, or none) and, with `start`, starts them: all or
    /// nothing, one store call. Returns their ids in order.
    pub async fn create_jobs(
        &self,
        params: Vec<JobParams>,
        start: bool,
    ) -> Result<Vec<JobId>, SupervisorError> {
        if params.is_empty() || params.len() > MAX_BATCH_JOBS {
            return Err(SupervisorError::InvalidParams(format!(
                "create_jobs takes 1 to {MAX_BATCH_JOBS} jobs, not {}",
                params.len()
            )));
        }
        let namespace = crate::job::context_number(&params[0].context_id);
        for (i, p) in params.iter().enumerate() {
            p.validate(&self.inner.limits)
                .map_err(|e| SupervisorError::InvalidParams(format!("job {i}: {e}")))?;
            if crate::job::context_number(&p.context_id) != namespace {
                return Err(SupervisorError::InvalidParams(format!(
                    "job {i}: create_jobs takes jobs of one context namespace per call (one \
                     numbered context, or only unnumbered context ids); job 0's is {}, this one's is {:?}",
                    params[0].context_id, p.context_id
                )));
            }
        }
        let jobs: Vec<Job> = params.into_iter().map(new_job).collect();
        self.inner.store.create_many(&jobs, start).await?;
        Ok(jobs.iter().map(|j| j.id).collect())
    }

    /// Queues a `Created` job (or parks it until its prerequisites finish).
    pub async fn start_job(&self, id: JobId) -> Result<JobStatus, SupervisorError> {
        Ok(self.inner.store.start(id).await?)
    }

    /// Creates, starts and waits for a job; returns its output. A job that ends in
    /// `Error` is [`SupervisorError::JobFailed`]; one still running after its timeout
    /// (plus a little slack for the runner's own answer) is [`SupervisorError::Timeout`].
    pub async fn submit_and_wait(&self, params: JobParams) -> Result<String, SupervisorError> {
        params
            .validate(&self.inner.limits)
            .map_err(|e| SupervisorError::InvalidParams(e.to_string()))?;
        let job = new_job(params);
        let id = job.id;
        // Retries may run the job up to max_attempts times, each up to its timeout.
        let wait = Duration::from_secs(
            job.timeout_secs
                .saturating_mul(u64::from(job.max_attempts())),
        ) + Duration::from_secs(2);
        // Register before starting, so the end cannot slip past us; then the terminal
        // event itself says when to read the job: two store calls in all on the
        // happy path (create and start in one, get).
        let watch = self.inner.waiters.watch(id);
        let status = self.inner.store.create_started(&job).await?;
        job_result(self.wait_terminal(id, watch, wait, Some(status)).await?)
    }

    /// Waits up to `wait` for the job to reach a terminal status and returns it.
    pub async fn wait_for_job(&self, id: JobId, wait: Duration) -> Result<Job, SupervisorError> {
        let watch = self.inner.waiters.watch(id);
        self.wait_terminal(id, watch, wait, None).await
    }

    /// Waits for the job to end, woken through `watch` (registered before the job
    /// could change). `known` is its status when the caller just learned it (then no
    /// read is needed until it may have ended); `None` reads it first. Reads the job only
    /// when it may have ended: a terminal event, or missed events.
    async fn wait_terminal(
        &self,
        id: JobId,
        mut watch: Watch,
        wait: Duration,
        known: Option<JobStatus>,
    ) -> Result<Job, SupervisorError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut read = known.is_none_or(JobStatus::is_terminal);
        loop {
            if read {
                let job = self.inner.store.get(id).await?;
                if job.status.is_terminal() {
                    return Ok(job);
                }
            }
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                return Err(SupervisorError::Timeout {
                    id,
                    waited_secs: wait.as_secs(),
                });
            }
            read = true;
        }
    }

    /// The whole job.
    pub async fn get_job(&self, id: JobId) -> Result<Job, SupervisorError> {
        Ok(self.inner.store.get(id).await?)
    }

    /// The job's status.
    pub async fn get_job_status(&self, id: JobId) -> Result<JobStatus, SupervisorError> {
        Ok(self.inner.store.get(id).await?.status)
    }

    /// The job's output: empty until it finished.
    pub async fn get_job_output(&self, id: JobId) -> Result<String, SupervisorError> {
        let job = self.inner.store.get(id).await?;
        Ok(match job.status {
            JobStatus::Finished => job.output.unwrap_or_default(),
            _ => String::new(),
        })
    }

    /// The job's log lines joined with newlines; `None` when it has none.
    pub async fn get_job_logs(&self, id: JobId) -> Result<Option<String>, SupervisorError> {
        let lines = self.job_log_lines(id).await?;
        Ok((!lines.is_empty()).then(|| lines.join("\n")))
    }

    /// The job's log lines, oldest first.
    pub async fn job_log_lines(&self, id: JobId) -> Result<Vec<String>, SupervisorError> {
        // Existence first: an unknown job is NotFound, not "no logs".
        self.inner.store.get(id).await?;
        Ok(self.inner.store.logs(id).await?)
    }

    /// Every job id, oldest first.
    pub async fn list_jobs(&self) -> Result<Vec<JobId>, SupervisorError> {
        Ok(self.inner.store.list_ids().await?)
    }

    /// One page of the jobs matching `filter` (see [`JobStore::list`]), looking at no
    /// more than `budget` index entries.
    pub async fn list_jobs_page(
        &self,
        filter: &crate::store::JobFilter,
        budget: usize,
    ) -> Result<crate::store::JobPage, SupervisorError> {
        Ok(self.inner.store.list(filter, budget).await?)
    }

    /// Job counts per status and script type, queue depths.
    pub async fn job_counts(&self) -> Result<crate::store::JobCounts, SupervisorError> {
        Ok(self.inner.store.counts().await?)
    }

    /// How long ago this supervisor started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Stops a job: a queued or waiting one ends in `Error(cancelled)` at once; a running
    /// one gets a cancel frame, then a hard kill after the grace period, and ends in
    /// `Error(cancelled)`. A finished job is left as it is.
    pub async fn stop_job(&self, id: JobId) -> Result<(), SupervisorError> {
        match self.inner.store.cancel(id).await? {
            CancelOutcome::Cancelled | CancelOutcome::AlreadyTerminal(_) => Ok(()),
            CancelOutcome::Running { owner, .. } => {
                // The store published `CancelRequested`: the owning instance's dispatcher
                // (this one or another) stops the run. Stopping here too is immediate.
                if !self.inner.dispatcher.stop_local(id) {
                    tracing::info!(job = %id, %owner, "stop requested for a job running elsewhere");
                }
                Ok(())
            }
        }
    }

    /// Deletes a job and everything about it.
    pub async fn delete_job(&self, id: JobId) -> Result<(), SupervisorError> {
        // Stop it first if it runs here, so no runner keeps working for nobody.
        self.inner.dispatcher.stop_local(id);
        Ok(self.inner.store.delete(id).await?)
    }

    /// Deletes every job.
    pub async fn clear_all_jobs(&self) -> Result<(), SupervisorError> {
        Ok(self.inner.store.clear_all().await?)
    }

    /// The runner pools and their state: the configured ones, then those attached at
    /// run time by name.
    pub fn list_runners(&self) -> Vec<RunnerInfo> {
        let mut infos: Vec<RunnerInfo> = self.inner.pools.iter().map(|p| p.info()).collect();
        infos.extend(lock(&self.inner.attached).values().map(|a| a.pool.info()));
        infos
    }

    /// Starts a pool at run time (a runner registered through `runner.create`): its
    /// runners connect and its claim loop takes jobs of its script types beside the
    /// configured pools. `false` when a pool of that name is attached already, or the
    /// supervisor is shutting down.
    pub fn attach_pool(&self, config: PoolConfig) -> bool {
        if self.inner.shutdown.is_cancelled() {
            return false;
        }
        let Some(logs) = lock(&self.inner.logs).clone() else {
            return false;
        };
        let mut attached = lock(&self.inner.attached);
        if attached.contains_key(&config.name) {
            return false;
        }
        let name = config.name.clone();
        let slots = self.inner.shutdown.child_token();
        let pool = RunnerPool::start(config, &self.inner.tracker, slots.clone(), logs);
        let claiming = self.inner.dispatcher.pool_token();
        self.inner
            .dispatcher
            .start_pool(pool.clone(), &self.inner.tracker, claiming.clone());
        attached.insert(
            name,
            Attached {
                pool,
                claiming,
                slots,
            },
        );
        true
    }

    /// Detaches the pool `name` attached at run time, without losing a job: it stops
    /// claiming at once (queued jobs stay queued for the other pools), the jobs it runs
    /// get the dispatcher's `shutdown_grace` to finish, the rest are handed back to
    /// their queues (attempt not counted), then its runners are disconnected. Returns
    /// once that is done; `false` when no such pool is attached.
    pub async fn detach_pool(&self, name: &str) -> bool {
        let Some(a) = lock(&self.inner.attached).remove(name) else {
            return false;
        };
        a.claiming.cancel();
        let dispatcher = &self.inner.dispatcher;
        let owner = dispatcher.owner_of(name);
        let wait_empty = async |limit: Duration| {
            let deadline = tokio::time::Instant::now() + limit;
            while dispatcher.running_for(&owner) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        wait_empty(dispatcher.config.shutdown_grace).await;
        dispatcher.release_for(&owner);
        wait_empty(dispatcher.config.cancel_grace + Duration::from_secs(1)).await;
        a.slots.cancel();
        drop(a.pool);
        true
    }

    /// Runs `task` on the supervisor's tracker: [`Supervisor::shutdown`] cancels
    /// `token`'s future (given to `task`) and waits for it.
    pub(crate) fn spawn_background<F, Fut>(&self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(task(self.inner.shutdown.clone()));
    }

    /// Store events: job status changes, new work, new log lines.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.store.subscribe()
    }

    /// Graceful shutdown: stop claiming, let running jobs finish within the grace period,
    /// hand the rest back to the queue, stop the runners.
    pub async fn shutdown(&self) {
        self.inner.dispatcher.drain().await;
        self.inner.shutdown.cancel();
        // The log writer ends once every sender is gone: the pools' (their slots end
        // now) and this one.
        lock(&self.inner.logs).take();
        lock(&self.inner.attached).clear();
        self.inner.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some supervisor tasks did not stop within 10 s");
        }
    }
}

/// A terminal job as the result of `run_job`.
pub(crate) fn job_result(job: Job) -> Result<String, SupervisorError> {
    match job.status {
        JobStatus::Finished => Ok(job.output.unwrap_or_default()),
        _ => Err(SupervisorError::JobFailed {
            id: job.id,
            error: job
                .error
                .unwrap_or_else(|| crate::job::JobError::new("error", "job failed")),
        }),
    }
}

/// A new job from validated params, with a fresh id and its trace: the span it is
/// created in when that span is exported (OTLP on: the `rpc.call` span, itself a child
/// of the caller's `traceparent`), else the caller's `traceparent` when it is valid,
/// else a new trace (every job has one).
fn new_job(mut params: JobParams) -> Job {
    let trace = crate::trace::of_span(&tracing::Span::current())
        .or_else(|| params.traceparent.as_deref().and_then(TraceParent::parse))
        .unwrap_or_else(TraceParent::generate);
    params.traceparent = Some(trace.to_string());
    Job::new(
        JobId::for_context_id(&params.context_id),
        params,
        chrono::Utc::now(),
    )
}
