//! [`Metered`]: a [`JobStore`] around another that counts what the store did for this
//! process ([`Metrics`]): jobs created, and calls that failed (by operation and kind).
//! [`crate::Supervisor::start`] puts it around the store it is given, so every path that
//! creates a job (the API, the coordinator, signed calls) is counted once, where it
//! reaches the store. The calls of a request (`create`, `create_started`,
//! `create_many`, `start`, `get`, `cancel`, `delete`, `list`, `complete`) run in `store.<op>` spans when made inside another
//! span ([`crate::trace`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use tracing::Instrument;

use super::{
    CancelOutcome, ClaimedJob, Completion, JobCounts, JobFilter, JobPage, JobStore, StoreError,
    StoreEvent, Trimmed,
};
use crate::job::{Job, JobId, JobStatus, ScriptType};
use crate::metrics::Metrics;
use crate::trace::OTEL_TARGET;

/// A store that counts into [`Metrics`]; every call goes to the inner store.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn JobStore>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// `inner`, counted into `metrics`.
    pub fn new(inner: Arc<dyn JobStore>, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// Runs `call` in a `store.<op>` span when it is made inside another span (an RPC
    /// call, an attempt: the spans for OTLP export, never built without it); background
    /// loops' calls get none.
    async fn traced<T>(op: &'static str, call: impl std::future::Future<Output = T>) -> T {
        if tracing::Span::current().is_none() {
            return call.await;
        }
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "store",
            otel.name = %format_args!("store.{op}"),
            db.operation = op,
        );
        call.instrument(span).await
    }

    /// Counts `result` as a failure of `op` when it is one.
    fn count<T>(&self, op: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.metrics.store_error(op, e);
        }
        result
    }
}

#[async_trait]
impl JobStore for Metered {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let result = self.count(
            "create",
            Self::traced("create", self.inner.create(job)).await,
        );
        if result.is_ok() {
            self.metrics.job_created(job.script_type);
        }
        result
    }

    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError> {
        self.count("start", Self::traced("start", self.inner.start(id)).await)
    }

    async fn create_started(&self, job: &Job) -> Result<JobStatus, StoreError> {
        let result = self.count(
            "create_started",
            Self::traced("create_started", self.inner.create_started(job)).await,
        );
        if result.is_ok() {
            self.metrics.job_created(job.script_type);
        }
        result
    }

    async fn create_many(&self, jobs: &[Job], start: bool) -> Result<Vec<JobStatus>, StoreError> {
        let result = self.count(
            "create_many",
            Self::traced("create_many", self.inner.create_many(jobs, start)).await,
        );
        if result.is_ok() {
            for job in jobs {
                self.metrics.job_created(job.script_type);
            }
        }
        result
    }

    async fn claim(
        &self,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let result = self.inner.claim(script_type, max, owner, lease).await;
        self.count("claim", result)
    }

    async fn claim_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let result = self
            .inner
            .claim_lane(context, script_type, max, owner, lease)
            .await;
        self.count("claim_lane", result)
    }

    async fn set_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        open: bool,
    ) -> Result<(), StoreError> {
        let result = self.inner.set_lane(context, script_type, open).await;
        self.count("set_lane", result)
    }

    async fn lanes(&self) -> Result<Vec<(u32, ScriptType)>, StoreError> {
        self.count("lanes", self.inner.lanes().await)
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Vec<JobId>, StoreError> {
        self.count("renew", self.inner.renew(owner, ids, lease).await)
    }

    async fn complete(&self, items: &[Completion]) -> Vec<Result<(), StoreError>> {
        let results = Self::traced("complete", self.inner.complete(items)).await;
        // One count per call that failed, not per item: a batch fails as a whole when
        // the store is down.
        if let Some(Err(e)) = results
            .iter()
            .find(|r| matches!(r, Err(e) if crate::metrics::store_error_kind(e).is_some()))
        {
            self.metrics.store_error("complete", e);
        }
        results
    }

    async fn promote_due(&self, max: usize) -> Result<usize, StoreError> {
        self.count("promote_due", self.inner.promote_due(max).await)
    }

    async fn reclaim_expired(&self, max: usize) -> Result<Vec<JobId>, StoreError> {
        let result = self.count("reclaim_expired", self.inner.reclaim_expired(max).await);
        if let Ok(ids) = &result {
            self.metrics.jobs_reclaimed(ids.len());
        }
        result
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        self.count(
            "cancel",
            Self::traced("cancel", self.inner.cancel(id)).await,
        )
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        self.count("get", Self::traced("get", self.inner.get(id)).await)
    }

    async fn list_ids(&self) -> Result<Vec<JobId>, StoreError> {
        self.count("list_ids", self.inner.list_ids().await)
    }

    async fn list(&self, filter: &JobFilter, budget: usize) -> Result<JobPage, StoreError> {
        self.count(
            "list",
            Self::traced("list", self.inner.list(filter, budget)).await,
        )
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        self.count("counts", self.inner.counts().await)
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.count(
            "delete",
            Self::traced("delete", self.inner.delete(id)).await,
        )
    }

    async fn trim_finished(&self, max: usize) -> Result<Trimmed, StoreError> {
        self.count("trim_finished", self.inner.trim_finished(max).await)
    }

    async fn backfill_indexes(&self, max: usize) -> Result<usize, StoreError> {
        self.count("backfill_indexes", self.inner.backfill_indexes(max).await)
    }

    async fn clear_all(&self) -> Result<(), StoreError> {
        self.count("clear_all", self.inner.clear_all().await)
    }

    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        self.count("append_logs", self.inner.append_logs(id, lines).await)
    }

    async fn logs(&self, id: JobId) -> Result<Vec<String>, StoreError> {
        self.count("logs", self.inner.logs(id).await)
    }

    async fn logs_from(
        &self,
        id: JobId,
        from: u64,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.count("logs_from", self.inner.logs_from(id, from, limit).await)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.subscribe()
    }

    fn queue_name(&self, script_type: ScriptType) -> String {
        self.inner.queue_name(script_type)
    }

    fn lane_queue_name(&self, context: u32, script_type: ScriptType) -> String {
        self.inner.lane_queue_name(context, script_type)
    }
}
