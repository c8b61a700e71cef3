//! The dispatcher: from the queues to the runners and back.
//!
//! Per pool, one claim loop takes ready jobs only while a live runner connection has a
//! free request slot (reserved per job, sized by the runner's own `max_in_flight`, so
//! nothing is prefetched without bound and no runner is sent more than it takes), and runs each
//! claimed job as a task: build the request, send it, wait for the outcome, the job's
//! deadline, or a stop; then map the outcome onto the store (DESIGN.md, "Outcome
//! mapping"). Beside them: lease renewal for the jobs running here, promotion of delayed
//! jobs and reclaim of expired leases (any instance's), and the log writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hero_protocol::{
    CancelRequest, ExecutionContext, ExecutionOutcome, ExecutionRequest, LogLine, OutcomeStatus,
    error_type,
};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::{Job, JobError, JobId, ScriptType};
use crate::pool::{CallError, Lease, RunnerConnection, RunnerPool};
use crate::store::{ClaimedJob, Finished, JobStore, StoreError, StoreEvent};

/// Jobs claimed in one store call at most.
const CLAIM_BATCH: usize = 256;
/// Promotions and reclaims handled per maintenance tick at most.
const MAINTENANCE_BATCH: usize = 256;
/// The built-in runner's error type for a missing interpreter (`v`, `python3`): as
/// final as `handler_not_found`, retrying cannot install it.
const INTERPRETER_NOT_FOUND: &str = "interpreter_not_found";
/// How long a job answered `runner_busy` waits before it goes back to its queue.
const BUSY_PAUSE: Duration = Duration::from_millis(100);
/// Log lines written to the store per call at most.
const LOG_BATCH: usize = 512;
/// Successful attempts recorded per store call at most.
const FINISH_BATCH: usize = 256;
/// Successful attempts waiting for the recorder at most; job tasks wait beyond that.
const FINISH_QUEUE: usize = 4096;
/// Further tries of a store write (an outcome) that found the store unavailable; with
/// the delays below, about 8 s in all (a lease is 30 s by default).
const RECORD_RETRIES: usize = 6;
/// First and largest delay between those tries.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

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
    /// Successful attempts on their way to the recorder, which writes them in batches.
    finished: mpsc::Sender<Finished>,
    /// The recorder's end, until `start` hands it to the recorder task.
    finished_rx: Mutex<Option<mpsc::Receiver<Finished>>>,
}

impl Dispatcher {
    pub(crate) fn new(store: Arc<dyn JobStore>, config: DispatchConfig) -> Arc<Dispatcher> {
        let (finished, finished_rx) = mpsc::channel(FINISH_QUEUE);
        Arc::new(Dispatcher {
            store,
            config,
            running: Mutex::default(),
            jobs: TaskTracker::new(),
            claiming: CancellationToken::new(),
            finished,
            finished_rx: Mutex::new(Some(finished_rx)),
        })
    }

    /// Starts a claim loop per pool, the lease renewer, the maintenance loop.
    pub(crate) fn start(
        self: &Arc<Self>,
        pools: &[Arc<RunnerPool>],
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        for pool in pools {
            let owner: Arc<str> =
                format!("{}/{}", self.config.instance_id, pool.config.name).into();
            tracker.spawn(self.clone().claim_loop(pool.clone(), owner));
        }
        if let Some(rx) = self.finished_rx.lock().ok().and_then(|mut rx| rx.take()) {
            tracker.spawn(self.clone().record_loop(rx));
        }
        tracker.spawn(self.clone().renew_loop(shutdown.clone()));
        tracker.spawn(self.clone().cancel_loop(shutdown.clone()));
        tracker.spawn(self.clone().maintenance_loop(shutdown.clone()));
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

    /// Claims as `owner` (`<instance id>/<pool name>`: the job's `runner` says which
    /// instance and pool ran it).
    async fn claim_loop(self: Arc<Self>, pool: Arc<RunnerPool>, owner: Arc<str>) {
        let types = pool.config.script_types.clone();
        let mut next_type = 0usize;
        loop {
            // Subscribe before looking, so a job queued meanwhile still wakes us.
            let mut events = self.store.subscribe();
            // A free request slot on a live connection first: no runner, no claim.
            let first = tokio::select! {
                _ = self.claiming.cancelled() => return,
                lease = pool.lease() => lease,
            };
            let mut permits = vec![first];
            while permits.len() < CLAIM_BATCH {
                match pool.try_lease() {
                    Some(lease) => permits.push(lease),
                    None => break,
                }
            }
            let mut claimed = Vec::new();
            let mut store_down = false;
            for i in 0..types.len() {
                let want = permits.len() - claimed.len();
                if want == 0 {
                    break;
                }
                let st = types[(next_type + i) % types.len()];
                match self.store.claim(st, want, &owner, self.config.lease).await {
                    Ok(jobs) => claimed.extend(jobs),
                    Err(e) => {
                        tracing::warn!(error = %e, script_type = %st.as_str(), "claim failed");
                        store_down = true;
                        break;
                    }
                }
            }
            next_type = next_type.wrapping_add(1);
            if claimed.is_empty() {
                drop(permits);
                let wait = if store_down {
                    Duration::from_millis(500)
                } else {
                    self.config.idle_poll
                };
                tokio::select! {
                    _ = self.claiming.cancelled() => return,
                    _ = wait_for_work(&mut events, &types) => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            for claimed in claimed {
                let job = match claimed {
                    ClaimedJob::Job(job) => job,
                    ClaimedJob::Undecodable { id, attempt, why } => {
                        self.fail_undecodable(id, attempt, why);
                        continue;
                    }
                };
                let Some(permit) = permits.pop() else { break };
                self.jobs
                    .spawn(self.clone().run_job(owner.clone(), job, permit));
            }
        }
    }

    /// A claimed job that does not decode cannot be run: it ends now in
    /// `Error(corrupt)`, rather than waiting for its lease to expire and being claimed
    /// again, attempt after attempt. The store only reports it; this is the policy.
    fn fail_undecodable(self: &Arc<Self>, id: JobId, attempt: u32, why: String) {
        tracing::error!(job = %id, reason = %why, "claimed a job that does not decode; failing it");
        let this = self.clone();
        self.jobs.spawn(async move {
            let error = JobError::new(JobError::CORRUPT, why);
            this.write(id, attempt, Write::Fail(error)).await;
        });
    }

    async fn run_job(self: Arc<Self>, owner: Arc<str>, job: Job, lease: Lease) {
        let id = job.id;
        let stop = CancellationToken::new();
        let release = CancellationToken::new();
        if let Ok(mut map) = self.running.lock() {
            map.insert(
                id,
                Running {
                    owner,
                    stop: stop.clone(),
                    release: release.clone(),
                },
            );
        }
        // A stop that raced the claim: honour it now.
        if job.cancel_requested {
            stop.cancel();
        }
        let verdict = self.execute(&lease.conn, &job, &stop, &release).await;
        // The request slot is free again before the store hears of it.
        drop(lease);
        self.apply(&job, verdict).await;
        if let Ok(mut map) = self.running.lock() {
            map.remove(&id);
        }
    }

    /// Runs one attempt; says what happened.
    async fn execute(
        &self,
        conn: &Arc<RunnerConnection>,
        job: &Job,
        stop: &CancellationToken,
        release: &CancellationToken,
    ) -> Verdict {
        let request_id = uuid::Uuid::new_v4().to_string();
        let timeout = Duration::from_secs(job.timeout_secs.max(1));
        let deadline =
            Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let queue_name = self.store.queue_name(job.script_type);
        let request = build_request(
            job,
            &request_id,
            &self.config.instance_id,
            queue_name,
            deadline,
        );
        let call = conn.call(request);
        tokio::pin!(call);
        let why = tokio::select! {
            outcome = &mut call => return match outcome {
                Ok(o) => Verdict::Outcome(o),
                Err(CallError::Lost(why)) => Verdict::Lost(why),
            },
            _ = tokio::time::sleep(timeout) => Interrupt::Deadline,
            _ = stop.cancelled() => Interrupt::Stop,
            _ = release.cancelled() => Interrupt::Release,
        };
        // Ask the runner to stop; give it the grace period to answer, then hard-kill.
        let job_id = job.id.to_string();
        conn.cancel(CancelRequest::request(&job_id, &request_id))
            .await;
        let answered = tokio::time::timeout(self.config.cancel_grace, &mut call).await;
        if answered.is_err() {
            conn.cancel(CancelRequest::request(&job_id, &request_id).hard())
                .await;
            let hard = tokio::time::timeout(Duration::from_secs(1), &mut call).await;
            if hard.is_err() {
                tracing::warn!(job = %job.id, "request ignored its hard cancel; restarting the runner");
                conn.forget(&request_id);
                // Its slot sees the connection close, kills the runner, starts another.
                conn.close("runner restarted: a request did not stop after its cancel");
            }
        }
        match why {
            Interrupt::Deadline => Verdict::Timeout(timeout),
            Interrupt::Stop => Verdict::Stopped,
            Interrupt::Release => Verdict::Release,
        }
    }

    /// Maps a verdict onto the store: what to write is decided first (no I/O), then
    /// written. A success goes to the recorder; any other write that meets an unavailable
    /// store is tried again like the recorder's (see [`Self::retry_delays`]).
    async fn apply(&self, job: &Job, verdict: Verdict) {
        let (id, attempt) = (job.id, job.attempt);
        let write = match self.decide(job, verdict) {
            Write::Finish(output) => {
                let item = Finished {
                    id,
                    attempt,
                    output,
                };
                match self.finished.send(item).await {
                    Ok(()) => return,
                    // No recorder (it has stopped): write it here.
                    Err(mpsc::error::SendError(item)) => Write::Finish(item.output),
                }
            }
            Write::Release { pause: true } => {
                // runner_busy: not the job's fault; back to the head of the queue after a
                // pause, so a full runner is not hammered.
                tokio::time::sleep(BUSY_PAUSE).await;
                Write::Release { pause: false }
            }
            other => other,
        };
        self.write(id, attempt, write).await;
    }

    /// Writes `write` for attempt `attempt` of job `id`; a write that meets an
    /// unavailable store is tried again (see [`Self::retry_delays`]).
    async fn write(&self, id: JobId, attempt: u32, write: Write) {
        let mut delays = self.retry_delays();
        loop {
            let result = match &write {
                Write::Finish(output) => self.store.finish(id, attempt, output.clone()).await,
                Write::Fail(error) => self.store.fail(id, attempt, error.clone()).await,
                Write::RetryLater { not_before, error } => {
                    self.store
                        .retry_later(id, attempt, *not_before, error.clone())
                        .await
                }
                Write::Release { .. } => self.store.release(id, attempt).await,
            };
            match (result, delays.next()) {
                (Err(StoreError::Unavailable(why)), Some(delay)) => {
                    tracing::warn!(job = %id, error = %why, retry_in = ?delay, "could not record the job's outcome; trying again");
                    tokio::time::sleep(delay).await;
                }
                (result, _) => return log_store_result(id, result),
            }
        }
    }

    /// What an attempt's verdict makes of the job (DESIGN.md, "Outcome mapping").
    fn decide(&self, job: &Job, verdict: Verdict) -> Write {
        let attempts_left = job.attempt < job.max_attempts();
        match verdict {
            Verdict::Release => Write::Release { pause: false },
            Verdict::Stopped => Write::Fail(JobError::cancelled("stopped by request")),
            Verdict::Timeout(after) => {
                let error = JobError::timeout(format!("no answer within {}s", after.as_secs()));
                self.retry_or_fail(job, attempts_left, error)
            }
            Verdict::Lost(why) => {
                self.retry_or_fail(job, attempts_left, JobError::runner_lost(why))
            }
            Verdict::Outcome(outcome) => self.decide_outcome(job, attempts_left, outcome),
        }
    }

    fn decide_outcome(&self, job: &Job, attempts_left: bool, outcome: ExecutionOutcome) -> Write {
        let attempt = job.attempt;
        let error = outcome.error.clone().map(|e| {
            JobError::new(
                e.error_type.unwrap_or_else(|| "error".to_owned()),
                e.message,
            )
        });
        match outcome.status {
            OutcomeStatus::Success => Write::Finish(match outcome.result {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            }),
            OutcomeStatus::Retry if !attempts_left => {
                let why = error.map(|e| e.message).unwrap_or_default();
                Write::Fail(JobError::retries_exhausted(format!(
                    "runner asked for a retry after the last attempt ({attempt}): {why}"
                )))
            }
            OutcomeStatus::Retry => {
                let delay = outcome
                    .retry_after_seconds
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(self.config.backoff_max.as_secs_f64())))
                    .unwrap_or_else(|| self.backoff(attempt));
                retry_later(delay, error)
            }
            OutcomeStatus::Timeout => {
                let error = error.unwrap_or_else(|| JobError::timeout("runner reported a timeout"));
                let error = JobError::new(JobError::TIMEOUT, error.message);
                self.retry_or_fail(job, attempts_left, error)
            }
            OutcomeStatus::Error if outcome.error_type() == Some(error_type::RUNNER_BUSY) => {
                // The runner had no room (it serves other clients too, or it lowered its
                // limit): the attempt does not count.
                Write::Release { pause: true }
            }
            OutcomeStatus::Error => {
                let error =
                    error.unwrap_or_else(|| JobError::new("error", "runner reported an error"));
                let fatal = matches!(
                    error.error_type.as_str(),
                    error_type::HANDLER_NOT_FOUND
                        | error_type::INVALID_REQUEST
                        | error_type::CANCELLED
                        | INTERPRETER_NOT_FOUND
                );
                if fatal {
                    Write::Fail(error)
                } else {
                    self.retry_or_fail(job, attempts_left, error)
                }
            }
        }
    }

    /// Writes successful attempts in batches: whatever arrived while the previous store
    /// call ran goes in the next one. Ends once every job task has ended (after `drain`)
    /// and the queue is empty.
    async fn record_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(FINISH_BATCH);
        loop {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, FINISH_BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                // Drained: no job task is left to send more.
                _ = self.jobs.wait() => {
                    while batch.len() < FINISH_BATCH && let Ok(item) = rx.try_recv() {
                        batch.push(item);
                    }
                    if batch.is_empty() {
                        break;
                    }
                }
            }
            self.record(std::mem::take(&mut batch)).await;
        }
    }

    /// Writes one batch of successes. Items the store could not take (Redis down, a
    /// timeout) are tried again with backoff for a few seconds, well within the lease,
    /// so a short outage does not make a finished job run again after its lease expires.
    async fn record(&self, mut items: Vec<Finished>) {
        let mut delays = self.retry_delays();
        loop {
            let results = self.store.finish_many(&items).await;
            let delay = delays.next();
            let mut again = Vec::new();
            let mut last_error = None;
            for (item, result) in items.into_iter().zip(results) {
                match result {
                    Err(StoreError::Unavailable(why)) if delay.is_some() => {
                        last_error = Some(why);
                        again.push(item);
                    }
                    other => log_store_result(item.id, other),
                }
            }
            let (Some(why), Some(delay)) = (last_error, delay) else {
                return;
            };
            tracing::warn!(
                count = again.len(),
                error = %why,
                retry_in = ?delay,
                "could not record finished jobs; trying again"
            );
            tokio::time::sleep(delay).await;
            items = again;
        }
    }

    fn retry_or_fail(&self, job: &Job, attempts_left: bool, error: JobError) -> Write {
        if attempts_left {
            retry_later(self.backoff(job.attempt), Some(error))
        } else {
            Write::Fail(error)
        }
    }

    /// The pauses between tries of a store write that found the store unavailable:
    /// about 8 s in all, well inside the lease, so a short outage does not make a job
    /// whose runner has answered run again once its lease expires.
    fn retry_delays(&self) -> impl Iterator<Item = Duration> {
        std::iter::successors(Some(RECORD_RETRY_FIRST), |d| {
            Some((*d * 2).min(RECORD_RETRY_MAX))
        })
        .take(RECORD_RETRIES)
    }

    /// Exponential backoff with ±25% jitter, capped: base * 2^(attempt-1).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let raw = self.config.backoff_base.saturating_mul(1u32 << exp);
        let capped = raw.min(self.config.backoff_max);
        // Jitter from the clock's nanoseconds: no RNG dependency for a spread this coarse.
        let nanos = Utc::now().timestamp_subsec_nanos();
        let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
        capped.mul_f64(factor).min(self.config.backoff_max)
    }

    async fn renew_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.config.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // One renew call per owner (pool) with all its running jobs.
            let mut by_owner: HashMap<Arc<str>, Vec<JobId>> = HashMap::new();
            match self.running.lock() {
                Ok(map) => {
                    for (id, r) in map.iter() {
                        by_owner.entry(r.owner.clone()).or_default().push(*id);
                    }
                }
                Err(_) => continue,
            }
            for (owner, ids) in by_owner {
                match self.store.renew(&owner, &ids, self.config.lease).await {
                    Ok(lost) => {
                        for id in lost {
                            // Reclaimed by another instance, deleted, or already ended:
                            // stop running it here so it does not run twice.
                            tracing::warn!(job = %id, "lease lost; stopping the local run");
                            self.stop_local(id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
            }
        }
    }

    /// Stops local runs whose job was stopped through any instance.
    async fn cancel_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut events = self.store.subscribe();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(StoreEvent::CancelRequested { id }) => {
                    self.stop_local(id);
                }
                // Missed events: look at the cancel flags of what runs here.
                Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let ids: Vec<JobId> = match self.running.lock() {
                        Ok(map) => map.keys().copied().collect(),
                        Err(_) => continue,
                    };
                    for id in ids {
                        if let Ok(job) = self.store.get(id).await
                            && job.cancel_requested
                        {
                            self.stop_local(id);
                        }
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn maintenance_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.maintenance_interval) => {}
            }
            if let Err(e) = self.store.promote_due(MAINTENANCE_BATCH).await {
                tracing::debug!(error = %e, "promoting delayed jobs failed");
            }
            match self.store.reclaim_expired(MAINTENANCE_BATCH).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(
                        count = ids.len(),
                        "reclaimed jobs whose runner or supervisor was lost"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "reclaiming expired leases failed"),
            }
        }
    }
}

/// Logs what the store said to an attempt's outcome, when it is not a plain success.
fn log_store_result(id: JobId, result: Result<(), StoreError>) {
    match result {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => tracing::debug!(job = %id, "job deleted while it ran"),
        Err(e @ (StoreError::Conflict { .. } | StoreError::InvalidTransition { .. })) => {
            tracing::debug!(job = %id, error = %e, "job moved on while it ran (reclaimed or stopped)")
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "could not record the job's outcome; its lease will expire and it will be retried")
        }
    }
}

/// Writes runner log lines to the store in batches, in arrival order.
pub(crate) async fn log_writer(store: Arc<dyn JobStore>, mut rx: mpsc::Receiver<LogLine>) {
    let mut batch = Vec::with_capacity(LOG_BATCH);
    while rx.recv_many(&mut batch, LOG_BATCH).await > 0 {
        let mut by_job: Vec<(JobId, Vec<String>)> = Vec::new();
        for line in batch.drain(..) {
            let Ok(id) = JobId::parse(&line.job_id) else {
                continue;
            };
            match by_job.last_mut() {
                Some((last, lines)) if *last == id => lines.push(line.line),
                _ => by_job.push((id, vec![line.line])),
            }
        }
        for (id, lines) in by_job {
            if let Err(e) = store.append_logs(id, &lines).await {
                tracing::debug!(job = %id, error = %e, "dropping log lines");
            }
        }
    }
}

/// Resolves when the store announces work on one of `types` (or when events lagged:
/// something may have been missed).
async fn wait_for_work(events: &mut broadcast::Receiver<StoreEvent>, types: &[ScriptType]) {
    loop {
        match events.recv().await {
            Ok(StoreEvent::WorkAvailable { script_type }) if types.contains(&script_type) => return,
            Ok(StoreEvent::Resync) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

enum Interrupt {
    Deadline,
    Stop,
    Release,
}

/// What the store is told about an attempt.
#[derive(Debug)]
enum Write {
    Finish(String),
    Fail(JobError),
    RetryLater {
        not_before: chrono::DateTime<Utc>,
        error: Option<JobError>,
    },
    /// Back to the head of the queue, the attempt not counted; `pause` first when the
    /// runner said it was busy.
    Release {
        pause: bool,
    },
}

/// A retry `delay` from now.
fn retry_later(delay: Duration, error: Option<JobError>) -> Write {
    let not_before =
        Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
    Write::RetryLater { not_before, error }
}

/// How one attempt ended.
#[derive(Debug)]
enum Verdict {
    Outcome(ExecutionOutcome),
    Lost(String),
    Timeout(Duration),
    Stopped,
    Release,
}

fn build_request(
    job: &Job,
    request_id: &str,
    worker_id: &str,
    queue_name: String,
    deadline: chrono::DateTime<Utc>,
) -> ExecutionRequest {
    let mut kwargs = Map::new();
    kwargs.insert("env".to_owned(), json!(job.env_vars));
    kwargs.insert("caller_id".to_owned(), json!(job.caller_id));
    kwargs.insert("context_id".to_owned(), json!(job.context_id));
    let job_id = job.id.to_string();
    ExecutionRequest {
        protocol_version: hero_protocol::PROTOCOL_VERSION.to_owned(),
        request_id: request_id.to_owned(),
        job_id: job_id.clone(),
        function_name: job.script_type.as_str().to_owned(),
        args: vec![Value::String(job.script.clone())],
        kwargs,
        context: ExecutionContext {
            job_id,
            attempt: job.attempt,
            // A job stored before `queued_at` existed has only its creation time.
            enqueue_time: job.queued_at.unwrap_or(job.created_at),
            queue_name,
            deadline: Some(deadline),
            trace_context: job
                .traceparent
                .as_ref()
                .map(|t| std::collections::BTreeMap::from([("traceparent".to_owned(), t.clone())])),
            worker_id: Some(worker_id.to_owned()),
        },
    }
}
