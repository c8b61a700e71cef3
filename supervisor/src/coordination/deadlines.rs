//! Server-side message deadlines (`timeout_ack`, `timeout_result`; see `message.rs`).
//!
//! `message.create` schedules each message with a deadline in the store
//! ([`CoordinationStore::schedule_message`]); every instance runs [`MessageDeadlines::run`],
//! which takes the due ones (each goes to one instance) and checks them: one whose
//! deadline passed with its status short of it ends `Error` (the reason kept in its
//! record and shown in its `logs`) and its unfinished jobs are stopped; one that still
//! has a deadline ahead is scheduled again. The schedule lives in the store, so a
//! restart or another instance enforces it too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::message::{JobProgress, MessageStatus, delivery, overdue};
use super::{CoordinationError, CoordinationStore, JobEnd, JobRecord, MessageRecord};
use crate::job::{self, JobError, JobStatus};
use crate::service::{Supervisor, SupervisorError};

/// How often the due messages are taken.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// Messages checked per sweep at most.
const SWEEP_BATCH: usize = 100;
/// A check that failed (store down) is tried again this much later.
const RETRY_MS: i64 = 1000;

/// The store's error in the supervisor's terms.
pub(crate) fn store_error(e: CoordinationError) -> SupervisorError {
    match e {
        CoordinationError::Unavailable(why) => SupervisorError::Storage(why),
        other => SupervisorError::Internal(other.to_string()),
    }
}

/// The supervisor job behind `record`. The first read that sees it ended keeps how it
/// ended in the record (best effort: a lost compare-and-set is left to the next read),
/// so that it still reads the same once retention has removed it; one deleted without
/// that (`delete_job`, or never read before retention) reads as failed, so nothing
/// waits for it forever.
pub(crate) async fn backing_job(
    supervisor: &Supervisor,
    store: &dyn CoordinationStore,
    record: &JobRecord,
) -> Result<job::Job, SupervisorError> {
    match supervisor.get_job(record.job_id).await {
        Ok(j) => {
            if j.status.is_terminal() && record.ended.is_none() {
                let mut ended = record.clone();
                ended.ended = Some(JobEnd {
                    status: j.status,
                    output: j.output.clone(),
                    error: j.error.clone(),
                });
                if let Err(e) = store.put_job(&ended, Some(record)).await {
                    tracing::debug!(error = %e, "a coordinator job's end not kept yet");
                }
            }
            Ok(j)
        }
        Err(SupervisorError::NotFound(_)) => {
            let params = job::JobParams {
                script: record.script.clone(),
                script_type: record.script_type,
                caller_id: String::new(),
                context_id: record.context_id.to_string(),
                timeout: None,
                prerequisites: Vec::new(),
                retries: None,
                env_vars: record.env_vars.clone(),
                traceparent: None,
            };
            let mut j = job::Job::new(record.job_id, params, chrono::Utc::now());
            match &record.ended {
                Some(end) => {
                    j.status = end.status;
                    j.output = end.output.clone();
                    j.error = end.error.clone();
                }
                None => {
                    j.status = JobStatus::Error;
                    j.error = Some(JobError::new(
                        "job_deleted",
                        "its supervisor job was deleted",
                    ));
                }
            }
            Ok(j)
        }
        Err(e) => Err(e),
    }
}

/// The jobs of `message` with their supervisor jobs (a job record missing, replaced
/// by hand, is left out).
pub(crate) async fn message_jobs(
    supervisor: &Supervisor,
    store: &dyn CoordinationStore,
    message: &MessageRecord,
) -> Result<Vec<(JobRecord, job::Job)>, SupervisorError> {
    let mut jobs = Vec::with_capacity(message.jobs.len());
    for id in &message.jobs {
        if let Some(record) = store
            .job(message.context_id, *id)
            .await
            .map_err(store_error)?
        {
            let j = backing_job(supervisor, store, &record).await?;
            jobs.push((record, j));
        }
    }
    Ok(jobs)
}

/// The status of `message` whose jobs are `jobs`.
pub(crate) fn message_status(
    message: &MessageRecord,
    jobs: &[(JobRecord, job::Job)],
) -> MessageStatus {
    let progress: Vec<JobProgress> = jobs.iter().map(|(_, j)| JobProgress::of(j)).collect();
    delivery(message.failed.is_some(), &progress).0
}

/// The deadline keeper.
#[derive(Debug, Clone)]
pub(crate) struct MessageDeadlines {
    supervisor: Supervisor,
    store: Arc<dyn CoordinationStore>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl MessageDeadlines {
    pub(crate) fn new(supervisor: Supervisor, store: Arc<dyn CoordinationStore>) -> Self {
        MessageDeadlines { supervisor, store }
    }

    /// Schedules `message`'s next check, if it has a deadline ahead.
    pub(crate) async fn schedule(
        &self,
        message: &MessageRecord,
        status: MessageStatus,
    ) -> Result<(), SupervisorError> {
        if let Some(at) = message.next_check(status) {
            self.store
                .schedule_message(message.context_id, message.id, at)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Checks message `(context, id)` now (see the module docs).
    pub(crate) async fn check(&self, context: u32, id: u32) -> Result<(), SupervisorError> {
        for _ in 0..8 {
            let Some(message) = self.store.message(context, id).await.map_err(store_error)? else {
                return Ok(());
            };
            let jobs = message_jobs(&self.supervisor, self.store.as_ref(), &message).await?;
            let status = message_status(&message, &jobs);
            let Some(why) = overdue(&message, status, now_ms()) else {
                return self.schedule(&message, status).await;
            };
            // Its jobs are stopped first, so whoever reads the message as Error finds
            // its queued jobs ended too (a running one ends once its runner stops it).
            for (_, j) in &jobs {
                if !j.status.is_terminal() {
                    match self.supervisor.stop_job(j.id).await {
                        Ok(()) | Err(SupervisorError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::warn!(job = %j.id, error = %e, "stopping a job of a failed message");
                        }
                    }
                }
            }
            let mut failed = message.clone();
            failed.failed = Some(why.clone());
            failed.updated_at = chrono::Utc::now().timestamp();
            if !self
                .store
                .put_message(&failed, Some(&message))
                .await
                .map_err(store_error)?
            {
                continue; // changed meanwhile (another instance failed it): look again
            }
            tracing::info!(context, message = id, reason = %why, "message ended in Error");
            return Ok(());
        }
        Err(SupervisorError::Storage(format!(
            "message {id} of context {context}: the record kept changing"
        )))
    }

    /// Takes and checks the due messages every [`SWEEP_INTERVAL`] until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
            let due = match self.store.take_due_messages(now_ms(), SWEEP_BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "reading message deadlines failed");
                    continue;
                }
            };
            for (context, id) in due {
                if let Err(e) = self.check(context, id).await {
                    tracing::warn!(context, message = id, error = %e, "checking a message deadline failed");
                    let _ = self
                        .store
                        .schedule_message(context, id, now_ms() + RETRY_MS)
                        .await;
                }
            }
        }
    }
}
