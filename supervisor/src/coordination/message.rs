//! Messages (`message.create/load`): an envelope that delivers coordinator jobs for
//! execution and tracks the delivery.
//!
//! - Its `job` entries become coordinator jobs of the context (as `job.create` makes
//!   them; a job's `timeout` of 0 takes the message's `timeout`), started at once, each
//!   waiting for its `depends` (jobs of the same message) as a flow's do.
//! - Its `status` and `transport_status` derive from its jobs ([`delivery`]), never
//!   stored, except an `Error` the server decided: a deadline passed ([`overdue`]).
//! - `timeout_ack` (seconds from creation, 0: none): by then a runner must have taken
//!   one of its jobs, else the message ends `Error` and its jobs are stopped.
//!   `timeout_result` (likewise): by then every job must have finished. Enforced by the
//!   server (`deadlines.rs`), whoever loads the message or not.

use serde::{Deserialize, Serialize};

use super::{SpecJob, spec_script_type};
use crate::job::{self, ScriptType};

/// The spec's `MessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageStatus {
    /// Its jobs are submitted; no runner took one yet.
    Dispatched,
    /// A runner took one of its jobs.
    Acknowledged,
    /// A job failed, or a deadline passed.
    Error,
    /// Every job finished.
    Processed,
}

/// The spec's `TransportStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportStatus {
    /// No job of it is in a runner queue yet (created, or waiting for its `depends`).
    Queued,
    /// A job of it is in a runner queue.
    Sent,
    /// A runner took a job of it.
    Delivered,
    /// Every job finished: its results are there to read.
    Read,
    /// It ended in `Error`.
    Failed,
}

/// The spec's `MessageFormatType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageFormatType {
    /// HTML.
    Html,
    /// Plain text.
    Text,
    /// Markdown.
    Md,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// Who created it.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// The message text.
    pub message: String,
    /// The spec types it `ScriptType`.
    pub message_type: ScriptType,
    /// How `message` is formatted.
    pub message_format_type: MessageFormatType,
    /// Seconds per attempt of its jobs that give 0.
    pub timeout: u32,
    /// Seconds from creation for a runner to take a job (0: no bound).
    pub timeout_ack: u32,
    /// Seconds from creation for every job to finish (0: no bound).
    pub timeout_result: u32,
    /// Its jobs (coordinator job ids of the context), in the given order.
    pub jobs: Vec<u32>,
    /// Lines given with it.
    pub logs: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Unix milliseconds of creation: what the deadlines count from.
    pub created_ms: i64,
    /// Set when the server ended it in `Error` (a deadline passed): why.
    #[serde(default)]
    pub failed: Option<String>,
}

/// The spec's `Message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecMessage {
    /// Client-chosen id.
    pub id: u32,
    /// Who created it.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// The message text.
    pub message: String,
    /// Spec spelling.
    #[serde(with = "spec_script_type")]
    pub message_type: ScriptType,
    /// Format.
    pub message_format_type: MessageFormatType,
    /// Seconds.
    pub timeout: u32,
    /// Seconds.
    pub timeout_ack: u32,
    /// Seconds.
    pub timeout_result: u32,
    /// Its jobs as `job.load` shows them.
    pub job: Vec<SpecJob>,
    /// The lines given with it, then each job's log lines (`[job <id>] <line>`), then
    /// why the server ended it, if it did.
    pub logs: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Derived from its jobs ([`delivery`]).
    pub status: MessageStatus,
    /// Derived from its jobs ([`delivery`]).
    pub transport_status: TransportStatus,
}

/// What one job of a message is at, for [`delivery`]: its supervisor status, and
/// whether a runner ever took it (an attempt was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    /// The supervisor status.
    pub status: job::JobStatus,
    /// Attempts made (a runner took it that often).
    pub attempt: u32,
}

impl JobProgress {
    /// Of `job`.
    pub fn of(job: &job::Job) -> Self {
        JobProgress {
            status: job.status,
            attempt: job.attempt,
        }
    }

    fn taken(self) -> bool {
        self.attempt > 0
            || matches!(
                self.status,
                job::JobStatus::Started | job::JobStatus::Finished
            )
    }
}

/// A message's status and transport status, from whether the server failed it and
/// where its jobs are: `Error`/`Failed` once failed or a job failed;
/// `Processed`/`Read` when every job finished; `Acknowledged`/`Delivered` once a runner
/// took a job; `Dispatched`/`Sent` while a job waits in a runner queue;
/// `Dispatched`/`Queued` before.
pub fn delivery(failed: bool, jobs: &[JobProgress]) -> (MessageStatus, TransportStatus) {
    use job::JobStatus as S;
    if failed || jobs.iter().any(|j| j.status == S::Error) {
        (MessageStatus::Error, TransportStatus::Failed)
    } else if jobs.iter().all(|j| j.status == S::Finished) {
        (MessageStatus::Processed, TransportStatus::Read)
    } else if jobs.iter().any(|j| j.taken()) {
        (MessageStatus::Acknowledged, TransportStatus::Delivered)
    } else if jobs.iter().any(|j| j.status == S::Dispatched) {
        (MessageStatus::Dispatched, TransportStatus::Sent)
    } else {
        (MessageStatus::Dispatched, TransportStatus::Queued)
    }
}

impl MessageRecord {
    fn ack_deadline(&self) -> Option<i64> {
        (self.timeout_ack > 0).then(|| self.created_ms + i64::from(self.timeout_ack) * 1000)
    }

    fn result_deadline(&self) -> Option<i64> {
        (self.timeout_result > 0).then(|| self.created_ms + i64::from(self.timeout_result) * 1000)
    }

    /// When the server must look at it next (unix ms), given its status now: the
    /// `timeout_ack` deadline while not acknowledged, then the `timeout_result` one;
    /// `None` once it ended or has no deadline left.
    pub fn next_check(&self, status: MessageStatus) -> Option<i64> {
        match status {
            MessageStatus::Error | MessageStatus::Processed => None,
            MessageStatus::Dispatched => match (self.ack_deadline(), self.result_deadline()) {
                (Some(a), Some(r)) => Some(a.min(r)),
                (a, r) => a.or(r),
            },
            MessageStatus::Acknowledged => self.result_deadline(),
        }
    }
}

/// Why the message must end in `Error` at `now_ms` (unix ms), if it must: a deadline
/// passed with its status still short of it.
pub fn overdue(record: &MessageRecord, status: MessageStatus, now_ms: i64) -> Option<String> {
    match status {
        MessageStatus::Error | MessageStatus::Processed => None,
        _ if status == MessageStatus::Dispatched
            && record.ack_deadline().is_some_and(|d| now_ms >= d) =>
        {
            Some(format!(
                "timeout_ack: no runner took a job of message {} within {} s",
                record.id, record.timeout_ack
            ))
        }
        _ if record.result_deadline().is_some_and(|d| now_ms >= d) => Some(format!(
            "timeout_result: message {} was not processed within {} s",
            record.id, record.timeout_result
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobStatus as S;

    fn p(status: S, attempt: u32) -> JobProgress {
        JobProgress { status, attempt }
    }

    #[test]
    fn delivery_derives_from_the_jobs() {
        use MessageStatus as M;
        use TransportStatus as T;
        let cases: [(bool, Vec<JobProgress>, (M, T)); 8] = [
            (false, vec![p(S::Created, 0)], (M::Dispatched, T::Queued)),
            (
                false,
                vec![p(S::WaitingForPrerequisites, 0), p(S::Dispatched, 0)],
                (M::Dispatched, T::Sent),
            ),
            (
                false,
                vec![p(S::Started, 1), p(S::WaitingForPrerequisites, 0)],
                (M::Acknowledged, T::Delivered),
            ),
            // Taken once, retried: still acknowledged.
            (
                false,
                vec![p(S::Dispatched, 1)],
                (M::Acknowledged, T::Delivered),
            ),
            (
                false,
                vec![p(S::Finished, 1), p(S::Finished, 1)],
                (M::Processed, T::Read),
            ),
            (
                false,
                vec![p(S::Finished, 1), p(S::Error, 1)],
                (M::Error, T::Failed),
            ),
            (true, vec![p(S::Dispatched, 0)], (M::Error, T::Failed)),
            (false, vec![], (M::Processed, T::Read)),
        ];
        for (failed, jobs, want) in cases {
            assert_eq!(delivery(failed, &jobs), want, "{failed} {jobs:?}");
        }
    }

    fn record(ack: u32, result: u32) -> MessageRecord {
        MessageRecord {
            id: 5,
            caller_id: 1,
            context_id: 7,
            message: "m".to_owned(),
            message_type: ScriptType::Sal,
            message_format_type: MessageFormatType::Text,
            timeout: 0,
            timeout_ack: ack,
            timeout_result: result,
            jobs: vec![1],
            logs: vec![],
            created_at: 1,
            updated_at: 1,
            created_ms: 1_000,
            failed: None,
        }
    }

    #[test]
    fn deadlines_apply_while_the_status_falls_short() {
        use MessageStatus as M;
        let r = record(2, 10);
        assert_eq!(r.next_check(M::Dispatched), Some(3_000));
        assert_eq!(r.next_check(M::Acknowledged), Some(11_000));
        assert_eq!(r.next_check(M::Processed), None);
        assert_eq!(overdue(&r, M::Dispatched, 2_999), None);
        assert!(overdue(&r, M::Dispatched, 3_000).is_some_and(|w| w.contains("timeout_ack")));
        assert_eq!(overdue(&r, M::Acknowledged, 10_999), None);
        assert!(overdue(&r, M::Acknowledged, 11_000).is_some_and(|w| w.contains("timeout_result")));
        assert_eq!(overdue(&r, M::Processed, 99_000), None);
        let none = record(0, 0);
        assert_eq!(none.next_check(M::Dispatched), None);
        assert_eq!(overdue(&none, M::Dispatched, i64::MAX), None);
        let ack_only = record(0, 4);
        assert_eq!(ack_only.next_check(M::Dispatched), Some(5_000));
        assert!(
            overdue(&ack_only, M::Dispatched, 5_000).is_some_and(|w| w.contains("timeout_result"))
        );
    }
}
