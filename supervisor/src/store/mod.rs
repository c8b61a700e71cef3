//! Job stores: the [`JobStore`] trait, its errors and events, and two backends.
//!
//! - [`MemoryStore`]: the embedded default, plain maps behind a mutex.
//! - [`RedisStore`]: the shared store; every multi-key change is one Lua script.
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
mod redis;

pub use self::memory::MemoryStore;
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            prefix: "hero".to_owned(),
            max_log_lines: 10_000,
            max_log_line_len: 16 * 1024,
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
    /// frame to the runner and later calls `fail(id, attempt, cancelled)`.
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

/// A successful attempt to record: an item of [`JobStore::finish_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The job.
    pub id: JobId,
    /// The attempt that succeeded (the CAS compares it).
    pub attempt: u32,
    /// The runner's result.
    pub output: String,
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
    /// Events may have been lost (the store's event connection was replaced after a
    /// failure): like a lagged receiver, re-read whatever you wait for.
    Resync,
}

/// The operations the dispatcher and the API need, each atomic.
///
/// The CAS operations (`finish`, `fail`, `retry_later`, `release`) apply only when the
/// job is `Started` on the caller's `attempt`: otherwise they change nothing and return
/// [`StoreError::InvalidTransition`] (not `Started`) or [`StoreError::Conflict`] (another
/// attempt), so a late answer from an old attempt can't overwrite a newer one.
#[async_trait]
pub trait JobStore: Send + Sync + Debug + 'static {
    /// Stores `job` as `Created` and adds it to the index. Fails with
    /// [`StoreError::PrerequisiteNotFound`] if a prerequisite does not exist.
    async fn create(&self, job: &Job) -> Result<(), StoreError>;

    /// `Created` -> `Dispatched` (queued), or `WaitingForPrerequisites` when some
    /// prerequisite has not finished, or `Error(prerequisite_failed)` when one already
    /// ended in error or no longer exists. Returns the new status.
    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError>;

    /// Pops up to `max` ready jobs of `script_type` (FIFO); each becomes `Started` with
    /// `attempt + 1` and a lease held by `owner` until now + `lease`; its `runner` field
    /// records `owner` (and keeps it after the job ends). A claimed job whose stored
    /// fields do not decode is returned as [`ClaimedJob::Undecodable`], in its place, so
    /// one bad job holds up neither the others nor the queue.
    async fn claim(
        &self,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends `owner`'s leases on `ids` to now + `lease`. Returns the ids whose lease
    /// `owner` no longer holds (finished, reclaimed, deleted, ...).
    async fn renew(
        &self,
        owner: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Vec<JobId>, StoreError>;

    /// CAS `Started`(attempt) -> `Finished` with `output`; releases dependents whose
    /// prerequisites are now all finished.
    async fn finish(&self, id: JobId, attempt: u32, output: String) -> Result<(), StoreError>;

    /// [`JobStore::finish`] for many jobs in one store call (one Lua script on Redis, one
    /// lock on the memory store): the dispatcher's hot path. One result per item, in
    /// order; each item is its own CAS, so one stale answer does not fail the others.
    async fn finish_many(&self, items: &[Finished]) -> Vec<Result<(), StoreError>>;

    /// CAS `Started`(attempt) -> `Error(error)`; every dependent, transitively, ends in
    /// `Error(prerequisite_failed)`.
    async fn fail(&self, id: JobId, attempt: u32, error: JobError) -> Result<(), StoreError>;

    /// CAS `Started`(attempt) -> `Dispatched`, scheduled at `not_before` (delayed set, not
    /// ready until [`JobStore::promote_due`] moves it). Keeps `last_error` for inspection.
    async fn retry_later(
        &self,
        id: JobId,
        attempt: u32,
        not_before: DateTime<Utc>,
        last_error: Option<JobError>,
    ) -> Result<(), StoreError>;

    /// Graceful shutdown: CAS `Started`(attempt) -> `Dispatched` at the front of its queue;
    /// the attempt does not count (decremented).
    async fn release(&self, id: JobId, attempt: u32) -> Result<(), StoreError>;

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

    /// Removes the job and everything about it (queues, leases, logs, index). Jobs
    /// waiting on it end in `Error(prerequisite_failed)`. A running job may be deleted:
    /// its later `finish` fails with [`StoreError::NotFound`].
    async fn delete(&self, id: JobId) -> Result<(), StoreError>;

    /// Removes every job (in bounded batches) and every queue.
    async fn clear_all(&self) -> Result<(), StoreError>;

    /// Appends log lines (long lines truncated; only the newest
    /// [`StoreConfig::max_log_lines`] kept).
    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError>;

    /// The job's log lines, oldest first.
    async fn logs(&self, id: JobId) -> Result<Vec<String>, StoreError>;

    /// A receiver of every later [`StoreEvent`]. Subscribe first, then read the state.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// The name of `script_type`'s ready queue, as a runner sees it in a request's
    /// `context.queue_name`: `<prefix>:q:work:type:<ScriptType>`, the Redis key (the
    /// memory store names its queues the same way, with its configured prefix).
    fn queue_name(&self, script_type: ScriptType) -> String;
}

/// `<prefix>:q:work:type:<ScriptType>`: a ready queue's name in both stores.
pub(crate) fn queue_name(prefix: &str, script_type: ScriptType) -> String {
    format!("{prefix}:q:work:type:{script_type}")
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
