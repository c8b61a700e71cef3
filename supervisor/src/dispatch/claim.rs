//! The claim loop: one per pool; claims only with free runner capacity.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::job::{JobError, JobId, ScriptType};
use crate::pool::RunnerPool;
use crate::store::{ClaimedJob, Completion, StoreEvent};

/// Jobs claimed in one store call at most.
const CLAIM_BATCH: usize = 256;
/// How long a claim loop waits after the store failed a claim.
const STORE_DOWN_PAUSE: Duration = Duration::from_millis(500);

impl Dispatcher {
    /// Claims as `owner` (`<instance id>/<pool name>`: the job's `runner` says which
    /// instance and pool ran it) until `stop` (the dispatcher's own claiming token, or a
    /// child of it for a pool that may be detached alone).
    pub(super) async fn claim_loop(
        self: Arc<Self>,
        pool: Arc<RunnerPool>,
        owner: Arc<str>,
        stop: CancellationToken,
    ) {
        let types = pool.config.script_types.clone();
        let mut next_type = 0usize;
        // Subscribed before looking, so a job queued meanwhile still wakes us; kept
        // across rounds, so no announcement is missed while we are busy.
        let mut events = self.store.subscribe();
        // The types whose queues may hold work: a claim that got fewer jobs than it
        // asked for found its queue empty, and only an announcement of work for the
        // type (or a resync, a lag, the idle poll, a store error) makes it worth asking
        // again. An idle wake-up then costs one claim, not one per type.
        let mut maybe = vec![true; types.len()];
        loop {
            // A free request slot on a live connection first: no runner, no claim.
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                slot = pool.reserve_slot() => slot,
            };
            let mut permits = vec![first];
            while permits.len() < CLAIM_BATCH {
                match pool.try_reserve_slot() {
                    Some(slot) => permits.push(slot),
                    None => break,
                }
            }
            note_work(&mut events, &types, &mut maybe);
            let mut claimed = Vec::new();
            let mut store_down = false;
            for i in 0..types.len() {
                let want = permits.len() - claimed.len();
                if want == 0 {
                    break;
                }
                let slot = (next_type + i) % types.len();
                if !maybe[slot] {
                    continue;
                }
                let st = types[slot];
                let lease = self.config.lease;
                let claim = match pool.config.context {
                    Some(context) => self.store.claim_lane(context, st, want, &owner, lease),
                    None => self.store.claim(st, want, &owner, lease),
                };
                match claim.await {
                    Ok(jobs) => {
                        maybe[slot] = jobs.len() >= want;
                        claimed.extend(jobs.into_iter().map(|job| (st, job)));
                    }
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
                    STORE_DOWN_PAUSE
                } else {
                    self.config.idle_poll
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wait_for_work(&mut events, &types, &mut maybe) => {}
                    _ = tokio::time::sleep(wait) => maybe.fill(true),
                }
                continue;
            }
            for (st, claimed) in claimed {
                let job = match claimed {
                    ClaimedJob::Job(job) => job,
                    ClaimedJob::Undecodable { id, attempt, why } => {
                        self.fail_undecodable(id, st, attempt, why).await;
                        continue;
                    }
                };
                let Some(permit) = permits.pop() else { break };
                // The queue it came from, as the runner is told (`context.queue_name`).
                let queue = match job.id.context() {
                    Some(context) => self.store.lane_queue_name(context, job.script_type),
                    None => self.store.queue_name(job.script_type),
                };
                self.jobs
                    .spawn(self.clone().run_attempt(owner.clone(), job, queue, permit));
            }
        }
    }

    /// A claimed job that does not decode cannot be run: it ends now in
    /// `Error(corrupt)`, rather than waiting for its lease to expire and being claimed
    /// again, attempt after attempt. The store only reports it; this is the policy.
    async fn fail_undecodable(&self, id: JobId, st: ScriptType, attempt: u32, why: String) {
        tracing::error!(job = %id, reason = %why, "claimed a job that does not decode; failing it");
        let error = JobError::new(JobError::CORRUPT, why);
        self.submit(Completion::fail(id, attempt, error), st).await;
    }
}

/// Marks in `maybe` what `event` says may have work: its type, or every type when
/// something may have been missed. Whether it concerned one of `types`.
fn mark(
    event: Result<StoreEvent, broadcast::error::RecvError>,
    types: &[ScriptType],
    maybe: &mut [bool],
) -> bool {
    match event {
        Ok(StoreEvent::WorkAvailable { script_type }) => {
            match types.iter().position(|&t| t == script_type) {
                Some(i) => {
                    maybe[i] = true;
                    true
                }
                None => false,
            }
        }
        Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
            maybe.fill(true);
            true
        }
        Ok(_) | Err(broadcast::error::RecvError::Closed) => false,
    }
}

/// Takes in the announcements received so far, without waiting.
fn note_work(
    events: &mut broadcast::Receiver<StoreEvent>,
    types: &[ScriptType],
    maybe: &mut [bool],
) {
    loop {
        match events.try_recv() {
            Ok(event) => {
                mark(Ok(event), types, maybe);
            }
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                mark(Err(broadcast::error::RecvError::Lagged(n)), types, maybe);
            }
            Err(_) => return,
        }
    }
}

/// Resolves when the store announces work on one of `types` (or when events lagged:
/// something may have been missed), marked in `maybe`.
async fn wait_for_work(
    events: &mut broadcast::Receiver<StoreEvent>,
    types: &[ScriptType],
    maybe: &mut [bool],
) {
    loop {
        let event = events.recv().await;
        if matches!(event, Err(broadcast::error::RecvError::Closed)) {
            std::future::pending::<()>().await;
        }
        if mark(event, types, maybe) {
            return;
        }
    }
}
