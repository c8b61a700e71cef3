//! The coordinator methods (`job.create/load`, `flow.create/load/dag`, the extension
//! `flow.start`) on [`RpcHandler`]; see [`crate::coordination`] for the model.
//!
//! Decisions:
//! - A coordinator job is created or replaced while its supervisor job is `Created`;
//!   once started, `job.create` is -32004 `conflict`. A flow likewise until
//!   `flow.start`. A replacement creates a new supervisor job, swaps the record
//!   (compare-and-set) and deletes the old supervisor job.
//! - `depends` become supervisor prerequisites: at `job.create` those already created
//!   are mapped; `flow.start` checks every job still `Created` and, where its
//!   prerequisites differ from its `depends` as they map now (a dependency created
//!   later, or replaced), replaces its supervisor job with one that has them. Then it
//!   starts the jobs level by level; the store's prerequisite machinery does the rest.
//! - Outsiders of the context get -32001 (as for an unknown job or flow); readers
//!   trying to create or start get -32006.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jsonrpsee::Extensions;
use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;

use super::{RpcHandler, Who, directory_error, now_secs};
use crate::access::{self, Caller, Denied, Role};
use crate::coordination::deadlines;
use crate::coordination::{
    CoordinationError, FlowDag, FlowRecord, JobRecord, MAX_DEPENDS, MAX_FLOW_JOBS, SpecFlow,
    SpecJob, SpecJobStatus, job_result,
};
use crate::job::{self, JobId, JobParams, JobStatus};
use crate::rpc::error::{
    JOB_NOT_FOUND, conflict, context_not_found, coordinator_not_found, dag_error, forbidden,
    invalid_params, invalid_params_with, to_rpc_error,
};
use crate::rpc::types::{
    FlowCreateParams, FlowLoadParams, JobCreate, JobCreateParams, JobLoadParams, parse_job_ids,
    parse_script_type,
};
use crate::service::SupervisorError;
use crate::trace::TraceParent;

/// Compare-and-set writes that lose a race start over, at most this often.
pub(super) const UPSERT_ATTEMPTS: usize = 8;

pub(super) fn store_error(e: CoordinationError) -> ErrorObjectOwned {
    to_rpc_error(deadlines::store_error(e))
}

pub(super) fn kept_changing(what: &str) -> ErrorObjectOwned {
    to_rpc_error(SupervisorError::Storage(format!(
        "{what}: the record kept changing"
    )))
}

/// `ids` without repeats, in their first order.
pub(super) fn unique(ids: Vec<u32>) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// Who the record names as its creator: the caller's actor id, or (a server admin) the
/// given one.
pub(super) fn creator(who: &Who, given: u32) -> u32 {
    match who.caller {
        Caller::Actor { id, .. } => id,
        Caller::ServerAdmin => given,
    }
}

impl RpcHandler {
    /// Whether `caller` has `need` in context `context`; server admins everywhere. An
    /// outsider gets `missing()`, exactly what an unknown thing answers.
    pub(super) async fn in_context(
        &self,
        caller: &Caller,
        context: u32,
        need: Role,
        missing: impl FnOnce() -> ErrorObjectOwned,
    ) -> RpcResult<()> {
        if *caller == Caller::ServerAdmin {
            return Ok(());
        }
        let ctx = self
            .directory
            .context(context)
            .await
            .map_err(directory_error)?;
        match access::check(caller, ctx.as_ref(), need) {
            Ok(()) => Ok(()),
            Err(Denied::NotFound) => Err(missing()),
            Err(Denied::Forbidden) => Err(forbidden(format!(
                "your role in context {context} does not allow this"
            ))),
        }
    }

    /// The supervisor job behind `record` (a deleted one reads as failed).
    pub(super) async fn backing_job(&self, record: &JobRecord) -> RpcResult<job::Job> {
        deadlines::backing_job(&self.supervisor, self.coordination.as_ref(), record)
            .await
            .map_err(to_rpc_error)
    }

    pub(super) async fn spec_job(&self, record: JobRecord) -> RpcResult<SpecJob> {
        let j = self.backing_job(&record).await?;
        Ok(SpecJob::new(record, j.status.into(), job_result(&j)))
    }

    /// Deletes a supervisor job no record points at any more.
    pub(super) async fn discard(&self, id: JobId) {
        match self.supervisor.delete_job(id).await {
            Ok(()) | Err(SupervisorError::NotFound(_)) => {}
            Err(e) => tracing::warn!(job = %id, error = %e, "an unused supervisor job stays"),
        }
    }

    /// The supervisor prerequisites of `record`: its own `prerequisites`, then the
    /// supervisor jobs of its `depends` (from `known`, else the store; those not
    /// created yet are left out).
    async fn prerequisites_of(
        &self,
        record: &JobRecord,
        known: &HashMap<u32, JobId>,
    ) -> RpcResult<Vec<JobId>> {
        let mut ids = parse_job_ids(&record.prerequisites)?;
        for d in &record.depends {
            if *d == record.id {
                continue; // a self-loop: flows refuse it as a cycle
            }
            let id = match known.get(d) {
                Some(id) => Some(*id),
                None => self
                    .coordination
                    .job(record.context_id, *d)
                    .await
                    .map_err(store_error)?
                    .map(|r| r.job_id),
            };
            ids.extend(id);
        }
        let mut seen = BTreeSet::new();
        ids.retain(|id| seen.insert(*id));
        Ok(ids)
    }

    /// The job records of `ids` in `context`; unknown ids are -32602 naming them.
    async fn flow_jobs(&self, context: u32, ids: &[u32]) -> RpcResult<Vec<JobRecord>> {
        let mut records = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match self
                .coordination
                .job(context, *id)
                .await
                .map_err(store_error)?
            {
                Some(r) => records.push(r),
                None => unknown.push(*id),
            }
        }
        if !unknown.is_empty() {
            return Err(invalid_params_with(
                format!("jobs {unknown:?} are not in context {context}"),
                json!({ "unknown_jobs": unknown }),
            ));
        }
        Ok(records)
    }

    async fn spec_flow(&self, record: FlowRecord) -> RpcResult<SpecFlow> {
        let mut jobs = Vec::with_capacity(record.jobs.len());
        for id in &record.jobs {
            if let Some(r) = self
                .coordination
                .job(record.context_id, *id)
                .await
                .map_err(store_error)?
            {
                jobs.push((*id, self.backing_job(&r).await?));
            }
        }
        Ok(SpecFlow::new(record, &jobs))
    }

    async fn flow_record(&self, context: u32, id: u32) -> RpcResult<FlowRecord> {
        self.coordination
            .flow(context, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| coordinator_not_found("flow", context, id))
    }

    pub(super) async fn coordinator_job_create(
        &self,
        ext: &Extensions,
        params: JobCreateParams,
    ) -> RpcResult<SpecJob> {
        let who = self.who(ext).await?;
        let context = params.context_id;
        self.in_context(&who.caller, context, Role::Executor, || {
            context_not_found(&context.to_string())
        })
        .await?;
        let trace = ext.get::<TraceParent>().map(TraceParent::to_string);
        let record = self.put_job(&who, context, params.job, trace).await?;
        Ok(SpecJob::new(
            record,
            SpecJobStatus::Dispatched,
            BTreeMap::new(),
        ))
    }

    /// Creates or replaces (while its supervisor job is `Created`) coordinator job
    /// `input` of `context` for `who`, who may execute there; returns its record.
    pub(super) async fn put_job(
        &self,
        who: &Who,
        context: u32,
        input: JobCreate,
        trace: Option<String>,
    ) -> RpcResult<JobRecord> {
        if input.context_id != context {
            return Err(invalid_params(format!(
                "job.context_id {} differs from context_id {context}",
                input.context_id
            )));
        }
        let script_type = parse_script_type(&input.script_type)?;
        if input.depends.len() > MAX_DEPENDS || input.prerequisites.len() > MAX_DEPENDS {
            return Err(invalid_params(format!(
                "at most {MAX_DEPENDS} depends and {MAX_DEPENDS} prerequisites"
            )));
        }
        for id in parse_job_ids(&input.prerequisites)? {
            // A prerequisite the caller may not read answers like an unknown one.
            self.job_for(&who.caller, id, Role::Reader)
                .await
                .map_err(|e| {
                    if e.code() == JOB_NOT_FOUND {
                        invalid_params(format!("prerequisite {id} not found"))
                    } else {
                        e
                    }
                })?;
        }
        let now = now_secs();
        let mut record = JobRecord {
            id: input.id,
            caller_id: creator(who, input.caller_id),
            context_id: context,
            script: input.script,
            script_type,
            timeout: input.timeout,
            retries: input.retries,
            env_vars: input.env_vars,
            prerequisites: input.prerequisites,
            depends: unique(input.depends),
            created_at: now,
            updated_at: now,
            job_id: JobId::new(),
            started: false,
            ended: None,
        };
        let stamp = who
            .stamp
            .clone()
            .unwrap_or_else(|| format!("actor:{}", record.caller_id));
        for _ in 0..UPSERT_ATTEMPTS {
            let previous = self
                .coordination
                .job(context, record.id)
                .await
                .map_err(store_error)?;
            if let Some(prev) = &previous {
                if prev.started || self.backing_job(prev).await?.status != JobStatus::Created {
                    return Err(conflict(format!(
                        "job {} of context {context} has started: it can no longer be changed",
                        record.id
                    )));
                }
                record.created_at = prev.created_at;
            }
            let prerequisites = self.prerequisites_of(&record, &HashMap::new()).await?;
            let params = supervisor_params(&record, prerequisites, stamp.clone(), trace.clone());
            record.job_id = self
                .supervisor
                .create_job(params)
                .await
                .map_err(to_rpc_error)?;
            if self
                .coordination
                .put_job(&record, previous.as_ref())
                .await
                .map_err(store_error)?
            {
                if let Some(prev) = previous {
                    self.discard(prev.job_id).await;
                }
                return Ok(record);
            }
            self.discard(record.job_id).await;
        }
        Err(kept_changing("job.create"))
    }

    pub(super) async fn coordinator_job_load(
        &self,
        ext: &Extensions,
        params: JobLoadParams,
    ) -> RpcResult<SpecJob> {
        let who = self.who(ext).await?;
        let (context, id) = (params.context_id, params.id);
        let missing = || coordinator_not_found("job", context, id);
        self.in_context(&who.caller, context, Role::Reader, missing)
            .await?;
        let record = self
            .coordination
            .job(context, id)
            .await
            .map_err(store_error)?
            .ok_or_else(missing)?;
        self.spec_job(record).await
    }

    pub(super) async fn coordinator_flow_create(
        &self,
        ext: &Extensions,
        params: FlowCreateParams,
    ) -> RpcResult<SpecFlow> {
        let who = self.who(ext).await?;
        let (context, input) = (params.context_id, params.flow);
        self.in_context(&who.caller, context, Role::Executor, || {
            context_not_found(&context.to_string())
        })
        .await?;
        if input.context_id != context {
            return Err(invalid_params(format!(
                "flow.context_id {} differs from context_id {context}",
                input.context_id
            )));
        }
        let jobs = unique(input.jobs);
        if jobs.is_empty() || jobs.len() > MAX_FLOW_JOBS {
            return Err(invalid_params(format!(
                "a flow has 1 to {MAX_FLOW_JOBS} jobs, not {}",
                jobs.len()
            )));
        }
        let now = now_secs();
        let mut record = FlowRecord {
            id: input.id,
            caller_id: creator(&who, input.caller_id),
            context_id: context,
            jobs,
            env_vars: input.env_vars,
            created_at: now,
            updated_at: now,
            started: false,
        };
        let records = self.flow_jobs(context, &record.jobs).await?;
        FlowDag::build(&record, &records).map_err(|e| dag_error(&e))?;
        for _ in 0..UPSERT_ATTEMPTS {
            let previous = self
                .coordination
                .flow(context, record.id)
                .await
                .map_err(store_error)?;
            if let Some(prev) = &previous {
                if prev.started {
                    return Err(conflict(format!(
                        "flow {} of context {context} has started: it can no longer be changed",
                        record.id
                    )));
                }
                record.created_at = prev.created_at;
            }
            if self
                .coordination
                .put_flow(&record, previous.as_ref())
                .await
                .map_err(store_error)?
            {
                return self.spec_flow(record).await;
            }
        }
        Err(kept_changing("flow.create"))
    }

    pub(super) async fn coordinator_flow_load(
        &self,
        ext: &Extensions,
        params: FlowLoadParams,
    ) -> RpcResult<SpecFlow> {
        let record = self.flow_for(ext, params, Role::Reader).await?;
        self.spec_flow(record).await
    }

    /// The flow `params` names, when the caller has `need` in its context; else the
    /// answer of an unknown flow.
    async fn flow_for(
        &self,
        ext: &Extensions,
        params: FlowLoadParams,
        need: Role,
    ) -> RpcResult<FlowRecord> {
        let who = self.who(ext).await?;
        let (context, id) = (params.context_id, params.id);
        self.in_context(&who.caller, context, need, || {
            coordinator_not_found("flow", context, id)
        })
        .await?;
        self.flow_record(context, id).await
    }

    pub(super) async fn coordinator_flow_dag(
        &self,
        ext: &Extensions,
        params: FlowLoadParams,
    ) -> RpcResult<FlowDag> {
        let record = self.flow_for(ext, params, Role::Reader).await?;
        let context = record.context_id;
        // Recomputed from the jobs as they are now: a job replaced since `flow.create`
        // may have made the graph invalid, and this says so.
        let records = self.flow_jobs(context, &record.jobs).await?;
        FlowDag::build(&record, &records).map_err(|e| dag_error(&e))
    }

    pub(super) async fn coordinator_flow_start(
        &self,
        ext: &Extensions,
        params: FlowLoadParams,
    ) -> RpcResult<SpecFlow> {
        let flow = self.flow_for(ext, params, Role::Executor).await?;
        let (context, id) = (flow.context_id, flow.id);
        let records = self.flow_jobs(context, &flow.jobs).await?;
        let dag = FlowDag::build(&flow, &records).map_err(|e| dag_error(&e))?;
        let flow = self.mark_started(flow).await?;
        self.start_jobs(records, &dag.levels, &format!("flow {id}"))
            .await?;
        self.spec_flow(flow).await
    }

    /// Starts the jobs `records`, level by level of `dag_levels` (dependencies first), each
    /// with its `depends` as supervisor prerequisites: a job still `Created` whose
    /// prerequisites differ from what its `depends` map to now gets a new supervisor job
    /// that has them. `what` names the caller's thing (a flow, a message) in errors.
    pub(super) async fn start_jobs(
        &self,
        records: Vec<JobRecord>,
        dag_levels: &[Vec<u32>],
        what: &str,
    ) -> RpcResult<()> {
        let mut by_id: HashMap<u32, JobRecord> = records.into_iter().map(|r| (r.id, r)).collect();
        let mut current: HashMap<u32, JobId> =
            by_id.iter().map(|(id, r)| (*id, r.job_id)).collect();
        // Dependencies first, so each job's prerequisites name the supervisor jobs its
        // dependencies have now.
        for job in dag_levels.iter().flatten() {
            let Some(record) = by_id.get(job).cloned() else {
                continue;
            };
            let backing = self.backing_job(&record).await?;
            if backing.status != JobStatus::Created {
                continue; // started already (by another flow): it keeps what it has
            }
            let want = self.prerequisites_of(&record, &current).await?;
            let have: BTreeSet<JobId> = backing.prerequisites.iter().copied().collect();
            if have == want.iter().copied().collect() {
                continue;
            }
            let params = supervisor_params(&record, want, backing.caller_id, backing.traceparent);
            let new_id = self
                .supervisor
                .create_job(params)
                .await
                .map_err(to_rpc_error)?;
            let mut updated = record.clone();
            updated.job_id = new_id;
            updated.updated_at = now_secs();
            if !self
                .coordination
                .put_job(&updated, Some(&record))
                .await
                .map_err(store_error)?
            {
                self.discard(new_id).await;
                return Err(conflict(format!(
                    "job {job} changed while {what} was starting; start it again"
                )));
            }
            self.discard(record.job_id).await;
            current.insert(*job, new_id);
            by_id.insert(*job, updated);
        }
        for job in dag_levels.iter().flatten() {
            let Some(record) = by_id.remove(job) else {
                continue;
            };
            let id = self.mark_job_started(record).await?;
            match self.supervisor.start_job(id).await {
                // Conflict: started already; NotFound: deleted, reads as failed.
                Ok(_) | Err(SupervisorError::Conflict(_) | SupervisorError::NotFound(_)) => {}
                Err(e) => return Err(to_rpc_error(e)),
            }
        }
        Ok(())
    }

    /// Marks job `record` started (compare-and-set) and answers the supervisor job to
    /// start: the record's, or the one of a replacement that won the race, so the job
    /// started is always the one the record names and `job.create` never deletes it.
    async fn mark_job_started(&self, mut record: JobRecord) -> RpcResult<JobId> {
        for _ in 0..UPSERT_ATTEMPTS {
            if record.started {
                return Ok(record.job_id);
            }
            let mut next = record.clone();
            next.started = true;
            next.updated_at = now_secs();
            if self
                .coordination
                .put_job(&next, Some(&record))
                .await
                .map_err(store_error)?
            {
                return Ok(next.job_id);
            }
            record = self
                .coordination
                .job(record.context_id, record.id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    crate::rpc::error::internal(format!(
                        "job {} vanished while it was started",
                        record.id
                    ))
                })?;
        }
        Err(kept_changing("starting a job"))
    }

    /// Marks `flow` started (from then on it can no longer be replaced).
    async fn mark_started(&self, mut flow: FlowRecord) -> RpcResult<FlowRecord> {
        for _ in 0..UPSERT_ATTEMPTS {
            if flow.started {
                return Ok(flow);
            }
            let mut next = flow.clone();
            next.started = true;
            next.updated_at = now_secs();
            if self
                .coordination
                .put_flow(&next, Some(&flow))
                .await
                .map_err(store_error)?
            {
                return Ok(next);
            }
            flow = self.flow_record(flow.context_id, flow.id).await?;
        }
        Err(kept_changing("flow.start"))
    }
}

/// The supervisor job that runs `record`.
fn supervisor_params(
    record: &JobRecord,
    prerequisites: Vec<JobId>,
    caller_id: String,
    traceparent: Option<String>,
) -> JobParams {
    JobParams {
        script: record.script.clone(),
        script_type: record.script_type,
        caller_id,
        context_id: record.context_id.to_string(),
        timeout: (record.timeout > 0).then_some(u64::from(record.timeout)),
        prerequisites,
        retries: Some(u32::from(record.retries)),
        env_vars: record.env_vars.clone(),
        traceparent,
    }
}
