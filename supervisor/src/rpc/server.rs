//! The API implemented on the [`Supervisor`] facade: each method parses its wire params,
//! calls the facade, and maps the result and errors onto the wire.

use std::sync::Arc;

use jsonrpsee::Extensions;
use jsonrpsee::core::{
    RpcResult, SubscriptionError, SubscriptionResult, async_trait, to_json_raw_value,
};
use jsonrpsee::server::PendingSubscriptionSink;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};

mod calls;
mod coordinator;
mod listing;
mod messages;
mod runners;

pub(crate) use calls::CallsHandler;

use super::api::HeroApiServer;
use super::auth::{Grant, NonceStore, Session, authenticate_session, canonical_pubkey};
use super::error::{
    context_not_found, forbidden, internal, invalid_params, not_found, parse_job_id, to_rpc_error,
};
use super::events::stream_job_events;
use super::types::{
    ANONYMOUS, ActorCreateParams, ContextCreateParams, CreateJobParams, DEFAULT_CONTEXT,
    DEFAULT_LOG_PAGE, FlowCreateParams, FlowLoadParams, IdParams, JobCreateParams, JobInfo,
    JobLoadParams, JobLogsResult, LaneDepth, ListJobsFilter, ListJobsResult, LogPage, LogRange,
    MAX_LOG_PAGE, MessageCreateParams, MessageLoadParams, PlayResult, RunnerCreateParams,
    RunnerInfo, RunnerLoadParams, StartJobResult, StatsResult,
};
use crate::access::{
    self, Actor, ActorCreate, Caller, Context, ContextCreate, Denied, Directory, DirectoryError,
    MAX_ADDRESSES, MAX_ROLE_MEMBERS, Role,
};
use crate::coordination::deadlines::MessageDeadlines;
use crate::coordination::registry::RunnerRegistry;
use crate::coordination::{CoordinationStore, FlowDag, SpecFlow, SpecJob, SpecMessage, SpecRunner};
use crate::job::Job;
use crate::job::{JobId, JobStatus, ScriptType};
use crate::service::Supervisor;
use crate::service::SupervisorError;
use crate::trace::TraceParent;

/// State shared by every call.
#[derive(Debug, Clone)]
pub(crate) struct RpcHandler {
    pub(crate) supervisor: Supervisor,
    pub(crate) nonces: Arc<NonceStore>,
    pub(crate) openrpc: Arc<Value>,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) coordination: Arc<dyn CoordinationStore>,
    /// Where `create_job`'s idempotency keys are bound (the signed calls' store).
    pub(crate) call_store: Arc<dyn crate::calls::CallStore>,
    /// This instance's pools of registered runners; `None` without a transport
    /// ([`super::rpc_module`]): registrations are recorded, not connected.
    pub(crate) runners: Option<Arc<RunnerRegistry>>,
    /// Message deadlines.
    pub(crate) deadlines: MessageDeadlines,
}

/// The connection's authenticated key, if any.
fn identity(ext: &Extensions) -> Option<String> {
    ext.get::<Session>().and_then(Session::identity)
}

/// The domain params of a job submitted by `who`: its `caller_id` is who's stamp when
/// it has one, its trace the request's `traceparent` header.
fn submitted(
    params: CreateJobParams,
    who: &Who,
    ext: &Extensions,
) -> RpcResult<crate::job::JobParams> {
    let mut params = params.into_domain(who.stamp.clone())?;
    params.traceparent = ext.get::<TraceParent>().map(TraceParent::to_string);
    Ok(params)
}

/// The caller of one request and the `caller_id` its jobs carry.
#[derive(Debug)]
struct Who {
    caller: Caller,
    stamp: Option<String>,
}

fn directory_error(e: DirectoryError) -> ErrorObjectOwned {
    match e {
        DirectoryError::KeyTaken { owner } => {
            invalid_params(format!("pubkey already belongs to actor {owner}"))
        }
        other => to_rpc_error(SupervisorError::Storage(other.to_string())),
    }
}

/// Unix seconds now.
fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl RpcHandler {
    /// Who the request acts as (see [`crate::access`]): the actor owning the key this
    /// connection proved, else what its bearer token grants, else (no token configured)
    /// the local server admin.
    async fn who(&self, ext: &Extensions) -> RpcResult<Who> {
        let key = identity(ext);
        if let Some(key) = &key
            && let Some(actor) = self
                .directory
                .actor_by_key(key)
                .await
                .map_err(directory_error)?
        {
            return Ok(Who {
                caller: Caller::Actor {
                    id: actor.id,
                    pubkey: Some(actor.pubkey),
                },
                stamp: key.clone().into(),
            });
        }
        let caller = match ext.get::<Grant>() {
            None | Some(Grant::Admin) => Caller::ServerAdmin,
            Some(Grant::Actor(id)) => Caller::Actor {
                id: *id,
                pubkey: self
                    .directory
                    .actor(*id)
                    .await
                    .map_err(directory_error)?
                    .map(|a| a.pubkey),
            },
        };
        let stamp = key.or_else(|| caller.caller_id());
        Ok(Who { caller, stamp })
    }

    /// The context a job's `context_id` names, if registered.
    async fn context_of(&self, context_id: &str) -> RpcResult<Option<Context>> {
        match access::context_number(context_id) {
            Some(n) => self.directory.context(n).await.map_err(directory_error),
            None => Ok(None),
        }
    }

    /// Job `id` when `caller` has `need` in its context. A job of a context the caller
    /// has no role in answers exactly like an unknown one.
    async fn job_for(&self, caller: &Caller, id: JobId, need: Role) -> RpcResult<Job> {
        let job = self.supervisor.get_job(id).await.map_err(to_rpc_error)?;
        if *caller != Caller::ServerAdmin {
            let context = self.context_of(&job.context_id).await?;
            match access::check(caller, context.as_ref(), need) {
                Ok(()) => {}
                Err(Denied::NotFound) => {
                    return Err(to_rpc_error(SupervisorError::NotFound(id)));
                }
                Err(Denied::Forbidden) => {
                    return Err(forbidden(format!(
                        "your role in context {} does not allow this",
                        job.context_id
                    )));
                }
            }
        }
        Ok(job)
    }

    /// Whether `caller` may submit a job to `context_id` (executors and admins).
    async fn may_submit(&self, caller: &Caller, context_id: Option<&str>) -> RpcResult<()> {
        if *caller == Caller::ServerAdmin {
            return Ok(());
        }
        let context_id = context_id.unwrap_or(DEFAULT_CONTEXT);
        let context = self.context_of(context_id).await?;
        match access::check(caller, context.as_ref(), Role::Executor) {
            Ok(()) => Ok(()),
            Err(Denied::NotFound) => Err(context_not_found(context_id)),
            Err(Denied::Forbidden) => Err(forbidden(format!(
                "a reader of context {context_id} cannot create jobs in it"
            ))),
        }
    }

    /// Binds `create_job`'s idempotency `key` (per caller) to just created job `id`; when
    /// it was bound already, deletes `id` (still `Created`, never started) and answers
    /// the first job's id.
    async fn bind_idempotency_key(&self, who: &Who, key: &str, id: JobId) -> RpcResult<String> {
        let scope = who.stamp.clone().unwrap_or_else(|| "admin".into());
        let bound = self
            .call_store
            .bind_idempotency_key(&scope, key, &id.to_string())
            .await
            .map_err(|e| to_rpc_error(SupervisorError::Storage(e.to_string())))?;
        match bound {
            None => Ok(id.to_string()),
            Some(first) => {
                if let Err(e) = self.supervisor.delete_job(id).await {
                    tracing::warn!(error = %e, job = %id, "duplicate job of an idempotency key not deleted");
                }
                Ok(first)
            }
        }
    }

    /// Server-wide operations: server admins only.
    fn server_admin(caller: &Caller, what: &str) -> RpcResult<()> {
        match caller {
            Caller::ServerAdmin => Ok(()),
            Caller::Actor { .. } => Err(forbidden(format!("{what} is a server admin's"))),
        }
    }

    async fn run(&self, params: crate::job::JobParams) -> RpcResult<String> {
        self.supervisor
            .submit_and_wait(params)
            .await
            .map_err(to_rpc_error)
    }
}

/// The close notification's `error`: `value` as JSON.
fn close_with(value: &Value) -> SubscriptionError {
    match to_json_raw_value(value) {
        Ok(raw) => SubscriptionError::from_json(raw),
        Err(_) => SubscriptionError::from("subscription closed"),
    }
}

#[async_trait]
impl HeroApiServer for RpcHandler {
    async fn fetch_nonce(&self, pubkey: String) -> RpcResult<String> {
        self.nonces.issue(&pubkey)
    }

    async fn authenticate(
        &self,
        ext: &Extensions,
        pubkey: String,
        signature: String,
        nonce: String,
    ) -> RpcResult<bool> {
        let Some(session) = ext.get::<Session>() else {
            return Err(internal("no session on this connection"));
        };
        let who = self.nonces.verify(&pubkey, &signature, &nonce)?;
        tracing::info!(pubkey = %who, "connection authenticated");
        authenticate_session(session, who);
        Ok(true)
    }

    async fn whoami(&self, ext: &Extensions) -> RpcResult<String> {
        let who = self.who(ext).await?;
        Ok(who.stamp.unwrap_or_else(|| ANONYMOUS.to_owned()))
    }

    async fn play(
        &self,
        ext: &Extensions,
        script: String,
        context_id: Option<String>,
    ) -> RpcResult<PlayResult> {
        let who = self.who(ext).await?;
        self.may_submit(&who.caller, context_id.as_deref()).await?;
        let mut params = CreateJobParams::new(script, ScriptType::Sal.as_str());
        params.context_id = context_id;
        let output = self.run(submitted(params, &who, ext)?).await?;
        Ok(PlayResult { output })
    }

    async fn create_job(&self, ext: &Extensions, params: CreateJobParams) -> RpcResult<String> {
        let who = self.who(ext).await?;
        self.may_submit(&who.caller, params.context_id.as_deref())
            .await?;
        let idempotency_key = params.idempotency_key.clone();
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control))
        {
            return Err(invalid_params(
                "idempotency_key must be 1 to 128 characters, without control characters",
            ));
        }
        let params = submitted(params, &who, ext)?;
        let id = self
            .supervisor
            .create_job(params)
            .await
            .map_err(to_rpc_error)?;
        let Some(key) = idempotency_key else {
            return Ok(id.to_string());
        };
        self.bind_idempotency_key(&who, &key, id).await
    }

    async fn create_jobs(
        &self,
        ext: &Extensions,
        jobs: Vec<CreateJobParams>,
        start: Option<bool>,
    ) -> RpcResult<Vec<String>> {
        let who = self.who(ext).await?;
        if jobs.len() > crate::service::MAX_BATCH_JOBS {
            return Err(invalid_params(format!(
                "create_jobs takes at most {} jobs, not {}",
                crate::service::MAX_BATCH_JOBS,
                jobs.len()
            )));
        }
        // Each context is checked once: the caller must be an executor in all of them.
        let mut checked = std::collections::HashSet::new();
        for p in &jobs {
            if checked.insert(p.context_id.clone()) {
                self.may_submit(&who.caller, p.context_id.as_deref())
                    .await?;
            }
        }
        let mut params = Vec::with_capacity(jobs.len());
        for (i, p) in jobs.into_iter().enumerate() {
            if p.idempotency_key.is_some() {
                return Err(invalid_params(format!(
                    "job {i}: idempotency_key is create_job's, not create_jobs'"
                )));
            }
            params.push(submitted(p, &who, ext).map_err(|e| {
                ErrorObjectOwned::owned(e.code(), format!("job {i}: {}", e.message()), e.data())
            })?);
        }
        let ids = self
            .supervisor
            .create_jobs(params, start.unwrap_or(true))
            .await
            .map_err(to_rpc_error)?;
        Ok(ids.iter().map(ToString::to_string).collect())
    }

    async fn start_job(&self, ext: &Extensions, job_id: String) -> RpcResult<StartJobResult> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        self.job_for(&who.caller, id, Role::Executor).await?;
        self.supervisor.start_job(id).await.map_err(to_rpc_error)?;
        Ok(StartJobResult { success: true })
    }

    async fn run_job(
        &self,
        ext: &Extensions,
        script: String,
        script_type: String,
        prerequisites: Option<Vec<String>>,
        timeout: Option<u64>,
        context_id: Option<String>,
    ) -> RpcResult<String> {
        let who = self.who(ext).await?;
        self.may_submit(&who.caller, context_id.as_deref()).await?;
        let mut params = CreateJobParams::new(script, script_type);
        params.prerequisites = prerequisites.unwrap_or_default();
        params.timeout = timeout;
        params.context_id = context_id;
        self.run(submitted(params, &who, ext)?).await
    }

    async fn get_job_status(&self, ext: &Extensions, job_id: String) -> RpcResult<JobStatus> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        if who.caller != Caller::ServerAdmin {
            return Ok(self.job_for(&who.caller, id, Role::Reader).await?.status);
        }
        self.supervisor
            .get_job_status(id)
            .await
            .map_err(to_rpc_error)
    }

    async fn get_job_output(&self, ext: &Extensions, job_id: String) -> RpcResult<String> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        if who.caller != Caller::ServerAdmin {
            let job = self.job_for(&who.caller, id, Role::Reader).await?;
            return Ok(job.output.unwrap_or_default());
        }
        self.supervisor
            .get_job_output(id)
            .await
            .map_err(to_rpc_error)
    }

    async fn get_job_logs(
        &self,
        ext: &Extensions,
        job_id: String,
        start: Option<u64>,
        limit: Option<u64>,
    ) -> RpcResult<JobLogsResult> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        self.job_for(&who.caller, id, Role::Reader).await?;
        if start.is_none() && limit.is_none() {
            let logs = self
                .supervisor
                .get_job_logs(id)
                .await
                .map_err(to_rpc_error)?;
            return Ok(JobLogsResult { logs, page: None });
        }
        let start = start.unwrap_or(0);
        let limit = match limit {
            Some(0) => return Err(invalid_params("limit must be at least 1")),
            Some(n) => n.min(MAX_LOG_PAGE),
            None => DEFAULT_LOG_PAGE,
        };
        let (first, lines) = self
            .supervisor
            .store()
            .logs_from(id, start, usize::try_from(limit).unwrap_or(usize::MAX))
            .await
            .map_err(|e| to_rpc_error(e.into()))?;
        let next = first.saturating_add(lines.len() as u64);
        Ok(JobLogsResult {
            logs: (!lines.is_empty()).then(|| lines.join("\n")),
            page: Some(LogPage {
                lines,
                start: first,
                next,
                dropped: (first > start).then_some(LogRange {
                    from: start,
                    to: first,
                }),
            }),
        })
    }

    async fn list_jobs(
        &self,
        ext: &Extensions,
        filter: Option<ListJobsFilter>,
    ) -> RpcResult<ListJobsResult> {
        let who = self.who(ext).await?;
        match filter {
            None => self.list_ids(&who).await.map(ListJobsResult::Ids),
            Some(filter) => {
                let filter = filter.into_domain()?;
                self.list_page(&who, filter).await.map(ListJobsResult::Page)
            }
        }
    }

    async fn stats(&self, ext: &Extensions) -> RpcResult<StatsResult> {
        let who = self.who(ext).await?;
        Self::server_admin(&who.caller, "stats")?;
        let counts = self.supervisor.job_counts().await.map_err(to_rpc_error)?;
        let named = |v: &[(ScriptType, u64)]| v.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        Ok(StatsResult {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.supervisor.uptime().as_secs(),
            jobs_by_status: counts
                .by_status
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            jobs_by_script_type: named(&counts.by_script_type),
            queued: named(&counts.queued),
            lanes: counts
                .lanes
                .iter()
                .map(|&(context_id, t, queued)| LaneDepth {
                    context_id,
                    script_type: t.to_string(),
                    queued,
                })
                .collect(),
            delayed: counts.delayed,
            runners: self.supervisor.list_runners(),
        })
    }

    async fn stop_job(&self, ext: &Extensions, job_id: String) -> RpcResult<()> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        self.job_for(&who.caller, id, Role::Executor).await?;
        self.supervisor.stop_job(id).await.map_err(to_rpc_error)
    }

    async fn delete_job(&self, ext: &Extensions, job_id: String) -> RpcResult<()> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        self.job_for(&who.caller, id, Role::Executor).await?;
        self.supervisor.delete_job(id).await.map_err(to_rpc_error)
    }

    async fn clear_all_jobs(&self, ext: &Extensions) -> RpcResult<()> {
        let who = self.who(ext).await?;
        Self::server_admin(&who.caller, "clear_all_jobs")?;
        self.supervisor.clear_all_jobs().await.map_err(to_rpc_error)
    }

    async fn get_job(&self, ext: &Extensions, job_id: String) -> RpcResult<JobInfo> {
        let id = parse_job_id(&job_id)?;
        let who = self.who(ext).await?;
        let job = self.job_for(&who.caller, id, Role::Reader).await?;
        Ok(JobInfo::from(job))
    }

    async fn actor_create(&self, ext: &Extensions, params: ActorCreateParams) -> RpcResult<Actor> {
        let who = self.who(ext).await?;
        Self::server_admin(&who.caller, "registering actors")?;
        let actor = validate_actor(params.actor)?;
        self.directory
            .put_actor(actor, now_secs())
            .await
            .map_err(directory_error)
    }

    async fn actor_load(&self, ext: &Extensions, params: IdParams) -> RpcResult<Actor> {
        let who = self.who(ext).await?;
        let visible = match who.caller {
            Caller::ServerAdmin => true,
            Caller::Actor { id, .. } => id == params.id,
        };
        let actor = if visible {
            self.directory
                .actor(params.id)
                .await
                .map_err(directory_error)?
        } else {
            None
        };
        actor.ok_or_else(|| not_found("actor", params.id))
    }

    async fn context_create(
        &self,
        ext: &Extensions,
        params: ContextCreateParams,
    ) -> RpcResult<Context> {
        let who = self.who(ext).await?;
        let context = validate_context(params.context)?;
        if let Caller::Actor { id: actor, .. } = who.caller {
            // Creating is a server admin's; changing is also the context's admins'.
            let current = self
                .directory
                .context(context.id)
                .await
                .map_err(directory_error)?;
            if current.and_then(|c| c.role_of(actor)) != Some(Role::Admin) {
                return Err(forbidden(
                    "only server admins create contexts, and only a context's admins change it",
                ));
            }
        }
        self.directory
            .put_context(context, now_secs())
            .await
            .map_err(directory_error)
    }

    async fn context_load(&self, ext: &Extensions, params: IdParams) -> RpcResult<Context> {
        let who = self.who(ext).await?;
        let context = self
            .directory
            .context(params.id)
            .await
            .map_err(directory_error)?;
        let visible = match (&who.caller, &context) {
            (Caller::ServerAdmin, _) => true,
            (Caller::Actor { id, .. }, Some(c)) => c.role_of(*id).is_some(),
            (Caller::Actor { .. }, None) => false,
        };
        context
            .filter(|_| visible)
            .ok_or_else(|| not_found("context", params.id))
    }

    async fn job_create(&self, ext: &Extensions, params: JobCreateParams) -> RpcResult<SpecJob> {
        self.coordinator_job_create(ext, params).await
    }

    async fn job_load(&self, ext: &Extensions, params: JobLoadParams) -> RpcResult<SpecJob> {
        self.coordinator_job_load(ext, params).await
    }

    async fn flow_create(&self, ext: &Extensions, params: FlowCreateParams) -> RpcResult<SpecFlow> {
        self.coordinator_flow_create(ext, params).await
    }

    async fn flow_load(&self, ext: &Extensions, params: FlowLoadParams) -> RpcResult<SpecFlow> {
        self.coordinator_flow_load(ext, params).await
    }

    async fn flow_dag(&self, ext: &Extensions, params: FlowLoadParams) -> RpcResult<FlowDag> {
        self.coordinator_flow_dag(ext, params).await
    }

    async fn flow_start(&self, ext: &Extensions, params: FlowLoadParams) -> RpcResult<SpecFlow> {
        self.coordinator_flow_start(ext, params).await
    }

    async fn runner_create(
        &self,
        ext: &Extensions,
        params: RunnerCreateParams,
    ) -> RpcResult<SpecRunner> {
        self.coordinator_runner_create(ext, params).await
    }

    async fn runner_load(
        &self,
        ext: &Extensions,
        params: RunnerLoadParams,
    ) -> RpcResult<SpecRunner> {
        self.coordinator_runner_load(ext, params).await
    }

    async fn message_create(
        &self,
        ext: &Extensions,
        params: MessageCreateParams,
    ) -> RpcResult<SpecMessage> {
        self.coordinator_message_create(ext, params).await
    }

    async fn message_load(
        &self,
        ext: &Extensions,
        params: MessageLoadParams,
    ) -> RpcResult<SpecMessage> {
        self.coordinator_message_load(ext, params).await
    }

    async fn list_runners(&self) -> RpcResult<Vec<RunnerInfo>> {
        Ok(self.supervisor.list_runners())
    }

    async fn discover(&self) -> RpcResult<Value> {
        Ok(Value::clone(&self.openrpc))
    }

    async fn subscribe_job_events(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        job_id: String,
        cursor: Option<u64>,
    ) -> SubscriptionResult {
        let id = match parse_job_id(&job_id) {
            Ok(id) => id,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let events = self.supervisor.subscribe();
        let allowed = match self.who(ext).await {
            Ok(who) => self.job_for(&who.caller, id, Role::Reader).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = allowed {
            pending.reject(e).await;
            return Ok(());
        }
        let mut sink = pending.accept().await?;
        match stream_job_events(&self.supervisor, id, &mut sink, events, cursor.unwrap_or(0)).await
        {
            Ok(Some(status)) => Err(close_with(
                &json!({ "code": "job_ended", "job_id": id, "status": status }),
            )),
            Ok(None) => Ok(()),
            Err(e) => {
                let data = e
                    .data()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .unwrap_or(Value::Null);
                Err(close_with(&json!({
                    "code": data.get("code").cloned().unwrap_or(Value::Null),
                    "job_id": id,
                    "message": e.message(),
                })))
            }
        }
    }
}

/// An `actor.create` input made canonical: a valid secp256k1 point (its compressed hex),
/// IP addresses, bounded lists.
fn validate_actor(mut actor: ActorCreate) -> RpcResult<ActorCreate> {
    actor.pubkey = canonical_pubkey(&actor.pubkey)?;
    if actor.address.len() > MAX_ADDRESSES {
        return Err(invalid_params(format!(
            "at most {MAX_ADDRESSES} addresses, not {}",
            actor.address.len()
        )));
    }
    for address in &mut actor.address {
        let ip: std::net::IpAddr = address.trim().parse().map_err(|_| {
            invalid_params(format!(
                "address {:?} is not an IPv4 or IPv6 address",
                crate::job::echo(address)
            ))
        })?;
        *address = ip.to_string();
    }
    Ok(actor)
}

/// A `context.create` input checked: at least one admin (a context nobody administers
/// could never be changed again by anyone but a server admin), each role bounded, ids
/// deduplicated in their given order.
fn validate_context(mut context: ContextCreate) -> RpcResult<ContextCreate> {
    for (name, list) in [
        ("admins", &mut context.admins),
        ("readers", &mut context.readers),
        ("executors", &mut context.executors),
    ] {
        if list.len() > MAX_ROLE_MEMBERS {
            return Err(invalid_params(format!(
                "{name}: at most {MAX_ROLE_MEMBERS} actor ids, not {}",
                list.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        list.retain(|id| seen.insert(*id));
    }
    if context.admins.is_empty() {
        return Err(invalid_params(
            "a context needs at least one admin: without one nobody could change it",
        ));
    }
    Ok(context)
}
