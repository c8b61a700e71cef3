//! The background loops beside the claim loops: lease renewal for the jobs running here,
//! stops requested through any instance, promotion of delayed jobs and reclaim of
//! expired leases (any instance's), retention of ended jobs, and the log writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hero_protocol::LogLine;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::job::JobId;
use crate::store::{JobStore, StoreEvent};

/// Promotions and reclaims handled per maintenance tick at most.
const MAINTENANCE_BATCH: usize = 256;
/// Log lines written to the store per call at most.
const LOG_BATCH: usize = 512;
/// Ended jobs looked at per retention call (per terminal status) at most.
pub(crate) const TRIM_BATCH: usize = 500;
/// Retention calls per retention tick at most (while a call says there is more), so a
/// backlog is worked off at up to `TRIM_BATCH * TRIM_ROUNDS` jobs per status and tick
/// without one tick running long.
const TRIM_ROUNDS: usize = 20;

impl Dispatcher {
    pub(super) async fn renew_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
                            // Reclaimed by another instance, deleted, or ended through
                            // another instance: stop running it here so it does not run
                            // twice. A run that ended here while the renewal was on its
                            // way (its completion written meanwhile) is no longer in the
                            // running map: nothing was lost.
                            if self.stop_local(id) {
                                tracing::warn!(job = %id, "lease lost; stopping the local run");
                            } else {
                                tracing::debug!(job = %id, "lease ended with its run");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
            }
        }
    }

    /// Stops local runs whose job was stopped through any instance.
    pub(super) async fn cancel_loop(self: Arc<Self>, shutdown: CancellationToken) {
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

    pub(super) async fn maintenance_loop(self: Arc<Self>, shutdown: CancellationToken) {
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

impl Dispatcher {
    /// Retention: every `retention_interval`, removes ended jobs past the store's
    /// `keep_finished` age or count, in bounded calls.
    pub(super) async fn retention_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.retention_interval) => {}
            }
            // Jobs an older version stored join the indexes first (nothing once done).
            for _ in 0..TRIM_ROUNDS {
                match self.store.backfill_indexes(TRIM_BATCH).await {
                    Ok(seen) if seen == TRIM_BATCH => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "indexing older jobs failed");
                        break;
                    }
                }
            }
            for _ in 0..TRIM_ROUNDS {
                if shutdown.is_cancelled() {
                    return;
                }
                match self.store.trim_finished(TRIM_BATCH).await {
                    Ok(t) => {
                        if t.removed > 0 || t.kept_needed > 0 {
                            tracing::debug!(
                                removed = t.removed,
                                kept_needed = t.kept_needed,
                                "retention removed ended jobs"
                            );
                        }
                        if !t.more {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "retention failed");
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Duration as Span;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::dispatch::{DispatchConfig, Running};
    use crate::job::{Job, JobParams, ScriptType};
    use crate::store::{MemoryStore, StoreConfig};

    fn job(clock: &ManualClock) -> Job {
        let params = JobParams {
            script: "x".to_owned(),
            script_type: ScriptType::Sal,
            caller_id: "c".to_owned(),
            context_id: "ctx".to_owned(),
            timeout: None,
            prerequisites: Vec::new(),
            retries: None,
            env_vars: BTreeMap::new(),
            traceparent: None,
        };
        Job::new(JobId::new(), params, clock.now())
    }

    /// In paused time: each retention tick works off a backlog larger than one call in
    /// bounded calls, and leaves young jobs alone.
    #[tokio::test(start_paused = true)]
    async fn the_retention_loop_removes_ended_jobs_in_rounds() {
        let clock = Arc::new(ManualClock::default());
        let config = StoreConfig {
            keep_finished: Duration::from_secs(3600),
            ..StoreConfig::default()
        };
        let store: Arc<dyn JobStore> = Arc::new(MemoryStore::new(config, clock.clone()));
        let total = TRIM_BATCH * 2 + 10;
        for _ in 0..total {
            let j = job(&clock);
            store.create(&j).await.unwrap();
            store.start(j.id).await.unwrap();
        }
        let claimed = store
            .claim(ScriptType::Sal, total, "me", Duration::from_secs(30))
            .await
            .unwrap();
        let done: Vec<_> = claimed
            .iter()
            .map(|c| crate::store::Completion::finish(c.id(), 1, "ok"))
            .collect();
        assert!(store.complete(&done).await.iter().all(Result::is_ok));
        clock.advance(Span::hours(2));
        let young = job(&clock);
        store.create(&young).await.unwrap();
        store.start(young.id).await.unwrap();
        let claimed = store
            .claim(ScriptType::Sal, 1, "me", Duration::from_secs(30))
            .await
            .unwrap();
        store
            .complete_one(crate::store::Completion::finish(claimed[0].id(), 1, "ok"))
            .await
            .unwrap();

        let config = DispatchConfig {
            retention_interval: Duration::from_secs(1),
            clock: clock.clone(),
            ..DispatchConfig::default()
        };
        let d = Dispatcher::new(store.clone(), config, Arc::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(d.retention_loop(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(store.list_ids().await.unwrap(), vec![young.id]);
        shutdown.cancel();
        task.await.unwrap();
    }

    /// In paused time: every third of the lease, the leases of the jobs running here are
    /// extended from the clock's now; a job whose lease is gone (deleted) is stopped.
    #[tokio::test(start_paused = true)]
    async fn the_renew_loop_extends_leases_and_stops_lost_jobs() {
        let clock = Arc::new(ManualClock::default());
        let store: Arc<dyn JobStore> =
            Arc::new(MemoryStore::new(StoreConfig::default(), clock.clone()));
        let lease = Duration::from_secs(30);
        let owner = "me/pool";
        let (kept, lost) = (job(&clock), job(&clock));
        for j in [&kept, &lost] {
            store.create(j).await.unwrap();
            store.start(j.id).await.unwrap();
        }
        assert_eq!(
            store
                .claim(ScriptType::Sal, 2, owner, lease)
                .await
                .unwrap()
                .len(),
            2
        );
        let config = DispatchConfig {
            lease,
            clock: clock.clone(),
            ..DispatchConfig::default()
        };
        let d = Dispatcher::new(store.clone(), config, Arc::default());
        let mut stops = Vec::new();
        for id in [kept.id, lost.id] {
            let stop = CancellationToken::new();
            d.running.lock().unwrap().insert(
                id,
                Running {
                    owner: owner.into(),
                    stop: stop.clone(),
                    release: CancellationToken::new(),
                },
            );
            stops.push(stop);
        }
        store.delete(lost.id).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(d.clone().renew_loop(shutdown.clone()));

        let t0 = clock.now();
        for round in 1..=3 {
            let now = clock.advance(Span::seconds(10));
            tokio::time::sleep(Duration::from_secs(10)).await;
            tokio::task::yield_now().await;
            let job = store.get(kept.id).await.unwrap();
            assert_eq!(
                job.lease_until,
                Some(now + Span::seconds(30)),
                "round {round}"
            );
        }
        assert_eq!(clock.now() - t0, Span::seconds(30), "no real time passed");
        assert!(!stops[0].is_cancelled());
        assert!(
            stops[1].is_cancelled(),
            "the job whose lease was lost is stopped"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
