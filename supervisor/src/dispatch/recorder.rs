//! The recorder: writes every completed attempt (success or not) to the store in
//! batches, one [`JobStore::complete`] call per batch: whatever arrived while the
//! previous call ran goes in the next one.
//!
//! A write that finds the store unavailable is tried again with backoff for about 8 s
//! ([`retry_delays`]), well inside the 30 s lease, so a short outage does not make a job
//! whose runner has answered run again once its lease expires. The recorder ends only
//! once every job task has ended (after `drain`) and its queue is empty;
//! `Supervisor::shutdown` waits for it, so an outcome received is an outcome written.
//!
//! [`JobStore::complete`]: crate::store::JobStore::complete

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Dispatcher;
use crate::job::{JobId, ScriptType};
use crate::store::{Completion, Outcome, StoreError};

/// Completions recorded per store call at most.
const COMPLETE_BATCH: usize = 256;
/// Completions waiting for the recorder at most; job tasks wait beyond that.
pub(super) const COMPLETE_QUEUE: usize = 4096;
/// Further tries of a write that found the store unavailable; with the delays below,
/// about 8 s in all (a lease is 30 s by default).
const RECORD_RETRIES: usize = 6;
/// First and largest delay between those tries.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

impl Dispatcher {
    /// Hands a completion of a job of type `st` to the recorder; writes it here when the
    /// recorder has stopped.
    pub(super) async fn submit(&self, completion: Completion, st: ScriptType) {
        if let Err(mpsc::error::SendError(item)) = self.completed.send((completion, st)).await {
            self.record(vec![item]).await;
        }
    }

    /// Writes completions in batches. Ends once every job task has ended (after
    /// `drain`) and the queue is empty.
    pub(super) async fn record_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(Completion, ScriptType)>,
    ) {
        let mut batch = Vec::with_capacity(COMPLETE_BATCH);
        loop {
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, COMPLETE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                // Drained: no job task is left to send more.
                _ = self.jobs.wait() => {
                    while batch.len() < COMPLETE_BATCH && let Ok(item) = rx.try_recv() {
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

    /// Writes one batch. Items the store could not take (Redis down, a timeout) are
    /// tried again after each of [`retry_delays`]; any other answer is final. What was
    /// written is counted in the metrics.
    pub(super) async fn record(&self, batch: Vec<(Completion, ScriptType)>) {
        let (mut items, mut types): (Vec<Completion>, Vec<ScriptType>) = batch.into_iter().unzip();
        let mut delays = retry_delays();
        loop {
            let results = self.store.complete(&items).await;
            let delay = delays.next();
            let mut again = Vec::new();
            let mut again_types = Vec::new();
            let mut last_error = None;
            for ((item, st), result) in items.into_iter().zip(types).zip(results) {
                match result {
                    Err(StoreError::Unavailable(why)) if delay.is_some() => {
                        last_error = Some(why);
                        again.push(item);
                        again_types.push(st);
                    }
                    Ok(()) => self.count_written(&item, st),
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
                "could not record the outcome of jobs; trying again"
            );
            tokio::time::sleep(delay).await;
            items = again;
            types = again_types;
        }
    }

    /// Counts a completion the store took.
    fn count_written(&self, item: &Completion, st: ScriptType) {
        match &item.outcome {
            Outcome::Finish(_) => self.metrics.job_finished(st),
            Outcome::Fail(e) => self.metrics.job_failed(st, &e.error_type),
            Outcome::RetryLater { error, .. } => self.metrics.job_retried(
                st,
                // A runner that asked for a retry without saying why.
                error.as_ref().map_or("retry", |e| e.error_type.as_str()),
            ),
            Outcome::Release => {}
        }
    }
}

/// The pauses between tries of a write that found the store unavailable: about 8 s in
/// all, well inside the lease.
pub(super) fn retry_delays() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(RECORD_RETRY_FIRST), |d| {
        Some((*d * 2).min(RECORD_RETRY_MAX))
    })
    .take(RECORD_RETRIES)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_retried_for_about_eight_seconds() {
        let ms = Duration::from_millis;
        let delays: Vec<Duration> = retry_delays().collect();
        assert_eq!(
            delays,
            [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]
        );
        assert_eq!(delays.iter().sum::<Duration>(), ms(7750));
    }
}
