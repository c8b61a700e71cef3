//! Job stores: the [`JobStore`] trait, its errors and events, and two backends.
//!
//! - [`MemoryStore`]: the embedded default, plain maps behind a mutex.
//! - [`RedisStore`]: the shared store; every multi-key change is one Lua script.
//! - [`Metered`]: any store, counted into the process's [`crate::metrics::Metrics`].
//!
//! Both pass the same conformance suite (`supervisor/tests/store_conformance.rs`).
//!
//! # Waiting for a change
//! [`JobStore::subscribe`] returns a broadcast receiver of [`StoreEvent`]s. A waiter must
//! **subscribe first, then read** the job's state with [`JobStore::get`]: a change that
//! happens between a `get` and a later `subscribe` would otherwise be missed. Events are
//! wake-ups, not a log: a receiver that lags loses events (`RecvError::Lagged`) and must
//! re-read the state it cares about.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::job::{Job, JobError, JobId, JobStatus, ScriptType};

mod memory;
mod metered;
mod redis;
pub(crate) use self::redis::records;

pub use self::memory::MemoryStore;
pub use self::metered::Metered;
pub use self::redis::RedisStore;

/// Capacity of the event broadcast channel; slower receivers see `Lagged`.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Settings shared by both stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Prefix of every Redis key (`<prefix>:job:<id>`, ...). Default `"hero"`.
    pub prefix: String,
    /// Log lines kept per job; older lines are dropped first. Default 10,000.
    pub max_log_lines: usize,
    /// Longer log lines are truncated to this many bytes. Default 16 KiB.
    pub max_log_line_len: usize,
    /// Retention: a `Finished` or `Error` job is removed (with its logs and index
    /// entries) once it ended longer ago than this. Default 24 h.
    pub keep_finished: Duration,
    /// Retention: beyond this many jobs per terminal status (`Finished`, `Error`), the
    /// oldest are removed whatever their age. Default 100,000.
    pub keep_finished_count: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            prefix: "hero".to_owned(),
            max_log_lines: 10_000,
            max_log_line_len: 16 * 1024,
            keep_finished: Duration::from_secs(24 * 3600),
            keep_finished_count: 100_000,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No job with this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job is not in a state that allows `op`; nothing was changed.
    #[error("cannot {op} job {id}: it is {from}")]
    InvalidTransition {
        /// The job.
        id: JobId,
        /// Its current status.
        from: JobStatus,
        /// The rejected operation.
        op: &'static str,
    },
    /// The job is `Started` but on another attempt than the caller's (a late answer);
    /// nothing was changed.
    #[error("job {id} is on attempt {current}, not {expected}")]
    Conflict {
        /// The job.
        id: JobId,
        /// The attempt the caller named.
        expected: u32,
        /// The job's current attempt.
        current: u32,
    },
    /// A job with this id already exists.
    #[error("job {0} already exists")]
    AlreadyExists(JobId),
    /// `create` named a prerequisite that does not exist.
    #[error("prerequisite {0} not found")]
    PrerequisiteNotFound(JobId),
    /// The store is unreachable or failing (Redis down, timeout, ...). The RPC layer
    /// maps it to -32010.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored job could not be decoded.
    #[error("job {id} is corrupt: {reason}")]
    Corrupt {
        /// The job.
        id: JobId,
        /// What was wrong.
        reason: String,
    },
}

/// What [`JobStore::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued or waiting: it is now `Error(cancelled)`.
    Cancelled,
    /// The job is running: `cancel_requested` is set; the dispatcher sends the cancel
    /// frame to the runner and later completes the attempt with `Error(cancelled)`.
    Running {
        /// The lease owner (supervisor instance) running it.
        owner: String,
        /// The running attempt.
        attempt: u32,
    },
    /// The job had already ended with this status; nothing was changed.
    AlreadyTerminal(JobStatus),
}

/// One job taken by [`JobStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
// The large variant is the common one (the rare undecodable job wastes the space, not
// the others); boxing it would allocate per claimed job on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum ClaimedJob {
    /// The job, `Started` under the caller's lease.
    Job(Job),
    /// A job the store claimed (it is `Started` on `attempt` under the caller's lease)
    /// but could not decode: its stored fields were edited by hand or are damaged. The
    /// store decides nothing about it; the caller does (the dispatcher ends it at once in
    /// `Error(corrupt)`, rather than letting its lease expire and claiming it again,
    /// attempt after attempt). Only the Redis store can report one.
    Undecodable {
        /// The job.
        id: JobId,
        /// The attempt the claim started (the CAS of a later write names it).
        attempt: u32,
        /// What did not decode.
        why: String,
    },
}

impl ClaimedJob {
    /// The job's id.
    pub fn id(&self) -> JobId {
        match self {
            ClaimedJob::Job(job) => job.id,
            ClaimedJob::Undecodable { id, .. } => *id,
        }
    }

    /// The decoded job, or `None` when it is [`ClaimedJob::Undecodable`].
    pub fn into_job(self) -> Option<Job> {
        match self {
            ClaimedJob::Job(job) => Some(job),
            ClaimedJob::Undecodable { .. } => None,
        }
    }
}

/// What becomes of a job whose attempt ended: the one vocabulary of every outcome the
/// dispatcher writes (an item of [`JobStore::complete`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Finished` with the runner's result; dependents whose prerequisites are now all
    /// finished are queued.
    Finish(String),
    /// `Error(error)`; every dependent, transitively, ends in
    /// `Error(prerequisite_failed)`.
    Fail(JobError),
    /// `Dispatched`, scheduled at `not_before` (delayed set, not ready until
    /// [`JobStore::promote_due`] moves it); `error`, when given, is kept as the job's
    /// last error for inspection.
    RetryLater {
        /// Earliest time of the next attempt.
        not_before: DateTime<Utc>,
        /// The attempt's error.
        error: Option<JobError>,
    },
    /// `Dispatched` at the front of its queue, the attempt not counted (decremented):
    /// graceful shutdown, or a runner that had no room.
    Release,
}

impl Outcome {
    /// The operation's name in [`StoreError::InvalidTransition`].
    pub fn op(&self) -> &'static str {
        match self {
            Outcome::Finish(_) => "finish",
            Outcome::Fail(_) => "fail",
            Outcome::RetryLater { .. } => "retry_later",
            Outcome::Release => "release",
        }
    }
}

/// An attempt's [`Outcome`], for the job's `attempt` (the compare-and-set names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The job.
    pub id: JobId,
    /// The attempt that ended.
    pub attempt: u32,
    /// What becomes of the job.
    pub outcome: Outcome,
}

impl Completion {
    /// [`Outcome::Finish`].
    pub fn finish(id: JobId, attempt: u32, output: impl Into<String>) -> Self {
        Completion {
            id,
            attempt,
            outcome: Outcome::Finish(output.into()),
        }
    }

    /// [`Outcome::Fail`].
    pub fn fail(id: JobId, attempt: u32, error: JobError) -> Self {
        Completion {
            id,
            attempt,
            outcome: Outcome::Fail(error),
        }
    }

    /// [`Outcome::RetryLater`].
    pub fn retry_later(
        id: JobId,
        attempt: u32,
        not_before: DateTime<Utc>,
        error: Option<JobError>,
    ) -> Self {
        Completion {
            id,
            attempt,
            outcome: Outcome::RetryLater { not_before, error },
        }
    }

    /// [`Outcome::Release`].
    pub fn release(id: JobId, attempt: u32) -> Self {
        Completion {
            id,
            attempt,
            outcome: Outcome::Release,
        }
    }
}

/// What one [`JobStore::trim_finished`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Jobs removed (with their logs and index entries).
    pub removed: usize,
    /// Jobs past retention kept because a job that has not ended names them as a
    /// prerequisite; they are looked at again one retention age later (or sooner, when
    /// the count pushes them out again).
    pub kept_needed: usize,
    /// The call stopped at its `max`: more jobs may be past retention now.
    pub more: bool,
}

/// Where a listing page ended: the `(created_at ms, id)` of the last index entry it
/// looked at. The next page starts after it, whether or not that job still exists or
/// still has the filtered status. On the wire it is an opaque string
/// ([`ListCursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListCursor {
    /// The entry's `created_at`, epoch ms.
    pub created_ms: i64,
    /// The entry's job.
    pub id: JobId,
}

/// A string that is not a cursor this server gave out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor {0:?}")]
pub struct BadCursor(pub String);

impl ListCursor {
    /// The opaque text form: `c1` then the time and the id, all hex.
    pub fn encode(&self) -> String {
        format!("c1{:x}g{}", self.created_ms, self.id.as_uuid().simple())
    }

    /// Inverse of [`ListCursor::encode`]; anything else is refused.
    pub fn decode(text: &str) -> Result<ListCursor, BadCursor> {
        let bad = || BadCursor(truncate_line(text, 80));
        let rest = text.strip_prefix("c1").ok_or_else(bad)?;
        let (ms, id) = rest.split_once('g').ok_or_else(bad)?;
        if ms.is_empty() || ms.len() > 16 || id.len() != 32 {
            return Err(bad());
        }
        let created_ms = i64::from_str_radix(ms, 16).map_err(|_| bad())?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| bad())?;
        let id = JobId::parse(&id.to_string()).map_err(|_| bad())?;
        Ok(ListCursor { created_ms, id })
    }
}

/// What [`JobStore::list`] returns jobs for; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs with this status (a status index: no other job is looked at).
    pub status: Option<JobStatus>,
    /// Only jobs of this script type.
    pub script_type: Option<ScriptType>,
    /// Only jobs of this context.
    pub context_id: Option<String>,
    /// Only jobs of this caller.
    pub caller_id: Option<String>,
    /// Only jobs created strictly after this time (ms resolution).
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created strictly before this time (ms resolution).
    pub created_before: Option<DateTime<Utc>>,
    /// Start after this position (from a previous page's `next`).
    pub after: Option<ListCursor>,
    /// Jobs per page at most (at least 1).
    pub limit: usize,
}

/// A job's listing summary: what a list shows, without script, output or logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// Its script type.
    pub script_type: ScriptType,
    /// Its context.
    pub context_id: String,
    /// Who created it.
    pub caller_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
    /// When its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts so far.
    pub attempt: u32,
}

impl From<&Job> for JobSummary {
    fn from(j: &Job) -> Self {
        JobSummary {
            id: j.id,
            status: j.status,
            script_type: j.script_type,
            context_id: j.context_id.clone(),
            caller_id: j.caller_id.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            attempt: j.attempt,
        }
    }
}

/// One page of [`JobStore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPage {
    /// The matching jobs, in `(created_at, id)` order.
    pub jobs: Vec<JobSummary>,
    /// Where the next page starts; `None` when nothing is left to look at.
    pub next: Option<ListCursor>,
    /// Index entries looked at (at most the call's budget).
    pub looked_at: usize,
}

/// Job counts for `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs per status (every status, zeros included).
    pub by_status: Vec<(JobStatus, u64)>,
    /// Jobs stored per script type (every type, zeros included).
    pub by_script_type: Vec<(ScriptType, u64)>,
    /// Ready jobs per script type, in every namespace's queue of the type (the open
    /// lanes' included).
    pub queued: Vec<(ScriptType, u64)>,
    /// Ready jobs on each open lane (a context's queue served by its registered runner):
    /// `(context, script type, jobs)`, sorted.
    pub lanes: Vec<(u32, ScriptType, u64)>,
    /// Jobs scheduled for a later attempt.
    pub delayed: u64,
}

/// A change, for waiters that must not poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The job's status changed to `status`.
    JobChanged {
        /// The job.
        id: JobId,
        /// Its new status.
        status: JobStatus,
    },
    /// A job became ready on the queue of `script_type`.
    WorkAvailable {
        /// The queue's script type.
        script_type: ScriptType,
    },
    /// Log lines were appended to the job.
    LogAppended {
        /// The job.
        id: JobId,
    },
    /// `cancel` was called on a `Started` job: the instance running it must stop it.
    CancelRequested {
        /// The job.
        id: JobId,
    },
    /// The job was deleted (`delete`, `clear_all`): whoever follows it stops.
    JobDeleted {
        /// The job.
        id: JobId,
    },
    /// Events may have been lost (the store's event connection was replaced after a
    /// failure): like a lagged receiver, re-read whatever you wait for.
    Resync,
}

/// The operations the dispatcher and the API need, each atomic.
///
/// [`JobStore::complete`] applies an outcome only when the job is `Started` on the
/// caller's `attempt` (a compare-and-set): otherwise it changes nothing and returns
/// [`StoreError::InvalidTransition`] (not `Started`) or [`StoreError::Conflict`] (another
/// attempt), so a late answer from an old attempt can't overwrite a newer one.
#[async_trait]
pub trait JobStore: Send + Sync + Debug + 'static {
    /// Stores `job` as `Created` and adds it to the index. Fails with
    /// [`StoreError::PrerequisiteNotFound`] if a prerequisite does not exist.
    async fn create(&self, job: &Job) -> Result<(), StoreError>;

    /// Creates `jobs` (all of one key namespace: the caller groups them) and, with
    /// `start`, starts each: all or nothing (one script on Redis). Refused like
    /// [`JobStore::create`] when an id exists (or repeats) or a prerequisite is missing,
    /// and then nothing is stored. Returns each job's status, in order.
    async fn create_many(&self, jobs: &[Job], start: bool) -> Result<Vec<JobStatus>, StoreError>;

    /// [`JobStore::create`] then [`JobStore::start`], in one store call where the store
    /// can (Redis: one script): what `run_job` does.
    async fn create_started(&self, job: &Job) -> Result<JobStatus, StoreError> {
        self.create(job).await?;
        self.start(job.id).await
    }

    /// `Created` -> `Dispatched` (queued), or `WaitingForPrerequisites` when some
    /// prerequisite has not finished, or `Error(prerequisite_failed)` when one already
    /// ended in error or no longer exists. Returns the new status.
    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError>;

    /// Pops up to `max` ready jobs of `script_type`; each becomes `Started` with
    /// `attempt + 1` and a lease held by `owner` until now + `lease`; its `runner` field
    /// records `owner` (and keeps it after the job ends). A claimed job whose stored
    /// fields do not decode is returned as [`ClaimedJob::Undecodable`], in its place, so
    /// one bad job holds up neither the others nor the queue.
    ///
    /// Every namespace has its own queue per type: the default one
    /// (`<prefix>:q:work:type:<T>`) and each numbered context's
    /// (`<prefix>:{c<N>}:q:work:type:<T>`). A claim takes from the default queue and
    /// from every context queue with ready jobs that no lane routes to a registered
    /// runner ([`JobStore::set_lane`]), FIFO within a queue, starting each call at the
    /// next namespace in turn, so a flood in one context does not starve the others.
    async fn claim(
        &self,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// [`JobStore::claim`] from context `context`'s queue of `script_type` alone: what a
    /// registered runner serving that lane takes.
    async fn claim_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Opens (`open`) or closes the lane of context `context`'s jobs of `script_type`:
    /// while it is open, [`JobStore::claim`] leaves that queue alone and only
    /// [`JobStore::claim_lane`] takes from it. The jobs stay on their context's queue
    /// either way, so closing hands them back to `claim` in order (and wakes claimers);
    /// none waits on a lane nobody serves. Idempotent.
    async fn set_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        open: bool,
    ) -> Result<(), StoreError>;

    /// The open lanes, `(context, script type)`, sorted.
    async fn lanes(&self) -> Result<Vec<(u32, ScriptType)>, StoreError>;

    /// Extends `owner`'s leases on `ids` to now + `lease`. Returns the ids whose lease
    /// `owner` no longer holds (finished, reclaimed, deleted, ...).
    async fn renew(
        &self,
        owner: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Records attempt outcomes, many in one store call (one Lua script on Redis, one
    /// lock on the memory store): every outcome the dispatcher writes goes through here.
    /// Each item is its own compare-and-set: it applies only when the job is `Started` on
    /// the item's `attempt` (see the trait docs), so one stale answer does not fail the
    /// others. One result per item, in order.
    async fn complete(&self, items: &[Completion]) -> Vec<Result<(), StoreError>>;

    /// [`JobStore::complete`] of one item.
    async fn complete_one(&self, item: Completion) -> Result<(), StoreError> {
        let id = item.id;
        self.complete(std::slice::from_ref(&item))
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable(format!("no reply for job {id}"))))
    }

    /// Moves up to `max` delayed jobs whose `not_before <= now` to their ready queue.
    /// Returns how many moved.
    async fn promote_due(&self, max: usize) -> Result<usize, StoreError>;

    /// Handles up to `max` `Started` jobs whose lease expired (`lease_until < now`):
    /// re-queued (the attempt counts), or `Error(runner_lost)` with dependents failed when
    /// it was the last attempt. Each expired lease is handled exactly once even with
    /// several instances racing. Returns the ids handled.
    async fn reclaim_expired(&self, max: usize) -> Result<Vec<JobId>, StoreError>;

    /// Cancels a job; see [`CancelOutcome`].
    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError>;

    /// The job.
    async fn get(&self, id: JobId) -> Result<Job, StoreError>;

    /// Every job id, oldest first.
    async fn list_ids(&self) -> Result<Vec<JobId>, StoreError>;

    /// One page of the jobs matching `filter`, in `(created_at, id)` order, after
    /// `filter.after`. At most `budget` index entries are looked at (a status filter
    /// looks only at that status' index), so a page may hold fewer than `limit` jobs
    /// while [`JobPage::next`] says where to go on; a job that changes status between
    /// pages is listed at most once per status it is found in, and no job that keeps
    /// matching is skipped.
    async fn list(&self, filter: &JobFilter, budget: usize) -> Result<JobPage, StoreError>;

    /// Counts per status and script type, queue depths.
    async fn counts(&self) -> Result<JobCounts, StoreError>;

    /// Removes the job and everything about it (queues, leases, logs, index). Jobs
    /// waiting on it end in `Error(prerequisite_failed)`. A running job may be deleted:
    /// its later completion fails with [`StoreError::NotFound`].
    async fn delete(&self, id: JobId) -> Result<(), StoreError>;

    /// Retention: removes up to `max` jobs per terminal status (`Finished`, `Error`), the
    /// earliest ended first, that ended longer ago than [`StoreConfig::keep_finished`] or
    /// that are beyond [`StoreConfig::keep_finished_count`] of their status; with them
    /// their logs, dependents, prerequisite links and index entries. A job that a job
    /// which has not ended (`Created`, waiting, queued, running) names as a prerequisite
    /// is kept while that is so ([`Trimmed::kept_needed`]). Bounded work per call: the
    /// upkeep task calls it again while [`Trimmed::more`].
    async fn trim_finished(&self, max: usize) -> Result<Trimmed, StoreError>;

    /// Upgrade: indexes up to `max` more jobs an older version stored without the status
    /// and retention indexes (Redis: a walk over the job index, resumed where the last
    /// call stopped). Returns how many index entries it looked at: 0 once there is
    /// nothing left to do (at once for the memory store, which starts empty).
    async fn backfill_indexes(&self, max: usize) -> Result<usize, StoreError> {
        let _ = max;
        Ok(0)
    }

    /// Removes every job (in bounded batches) and every queue.
    async fn clear_all(&self) -> Result<(), StoreError>;

    /// Appends log lines (long lines truncated; only the newest
    /// [`StoreConfig::max_log_lines`] kept).
    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError>;

    /// The job's log lines, oldest first.
    async fn logs(&self, id: JobId) -> Result<Vec<String>, StoreError>;

    /// At most `limit` (at least 1) of the job's kept log lines from sequence number
    /// `from` on, with the sequence number of the first one. Every line appended gets
    /// the next number for good (the first is 0), also once older lines are trimmed by
    /// the cap; when `from` was trimmed (or never kept), the answer starts at the oldest
    /// kept line, above `from`.
    async fn logs_from(
        &self,
        id: JobId,
        from: u64,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError>;

    /// A receiver of every later [`StoreEvent`]. Subscribe first, then read the state.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// The name of `script_type`'s ready queue, as a runner sees it in a request's
    /// `context.queue_name`: `<prefix>:q:work:type:<ScriptType>`, the Redis key (the
    /// memory store names its queues the same way, with its configured prefix).
    fn queue_name(&self, script_type: ScriptType) -> String;

    /// The name of context `context`'s queue of `script_type`
    /// (`<prefix>:{c<N>}:q:work:type:<ScriptType>`), as a runner serving it sees it in a
    /// request's `context.queue_name`.
    fn lane_queue_name(&self, context: u32, script_type: ScriptType) -> String;
}

/// `<prefix>:q:work:type:<ScriptType>`: a ready queue's name in both stores.
pub(crate) fn queue_name(prefix: &str, script_type: ScriptType) -> String {
    format!("{prefix}:q:work:type:{script_type}")
}

/// `<prefix>:{c<N>}:q:work:type:<ScriptType>`: context N's queue of a type, in its
/// namespace (hash tag `{c<N>}`); a lane when a registered runner serves it.
pub(crate) fn lane_name(prefix: &str, context: u32, script_type: ScriptType) -> String {
    format!("{prefix}:{{c{context}}}:q:work:type:{script_type}")
}

/// One page out of pages of the same filter and cursor taken in several namespaces
/// (each in `(created_at, id)` order): every page is complete up to where it stopped
/// (its `next`; `None`: to the end), so the merge is exact up to the earliest of those
/// positions. The jobs up to there, in order, cut at `limit`; the next page starts
/// after the last job given when cut, else at that position.
pub(crate) fn merge_pages(pages: Vec<JobPage>, limit: usize) -> JobPage {
    let bound = pages.iter().filter_map(|p| p.next).min();
    let looked_at = pages.iter().map(|p| p.looked_at).sum();
    let position = |j: &JobSummary| ListCursor {
        created_ms: to_ms(j.created_at),
        id: j.id,
    };
    let mut jobs: Vec<JobSummary> = pages
        .into_iter()
        .flat_map(|p| p.jobs)
        .filter(|j| bound.is_none_or(|b| position(j) <= b))
        .collect();
    jobs.sort_unstable_by_key(|j| position(j));
    let next = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(position)
    } else {
        bound
    };
    JobPage {
        jobs,
        next,
        looked_at,
    }
}

/// Epoch milliseconds: the resolution both stores keep.
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Inverse of [`to_ms`].
pub(crate) fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// `t` truncated to whole milliseconds.
pub(crate) fn trunc_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    from_ms(to_ms(t)).unwrap_or(t)
}

/// `now + lease`, saturating.
pub(crate) fn deadline(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(lease)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Cuts text to at most `max` bytes, on a char boundary (for messages quoting input).
pub(crate) fn truncate_text(text: &str, max: usize) -> String {
    truncate_line(text, max)
}

/// Cuts a log line to at most `max` bytes, on a char boundary.
pub(crate) fn truncate_line(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_line_respects_char_boundaries() {
        assert_eq!(truncate_line("hello", 10), "hello");
        assert_eq!(truncate_line("hello", 3), "hel");
        assert_eq!(truncate_line("héllo", 2), "h");
        assert_eq!(truncate_line("", 0), "");
    }
}
