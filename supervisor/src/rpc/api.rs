//! The API as one trait: jsonrpsee generates the server trait (`HeroApiServer`) and the
//! typed client (`HeroApiClient`, implemented by jsonrpsee's HTTP and WebSocket clients)
//! from it, so they can't drift. Params are positional in this order; named params (an
//! object with these names) work too.

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use serde_json::Value;

use super::types::{
    ActorCreateParams, ContextCreateParams, CreateJobParams, FlowCreateParams, FlowLoadParams,
    IdParams, JobCreateParams, JobEvent, JobInfo, JobLoadParams, JobLogsResult, ListJobsFilter,
    ListJobsResult, MessageCreateParams, MessageLoadParams, PlayResult, RunnerCreateParams,
    RunnerInfo, RunnerLoadParams, StartJobResult, StatsResult,
};
use crate::access::{Actor, Context};
use crate::coordination::{FlowDag, SpecFlow, SpecJob, SpecMessage, SpecRunner};
use crate::job::JobStatus;

/// The supervisor's JSON-RPC API (see `RPC.md` and `openrpc.json`).
#[rpc(server, client)]
pub trait HeroApi {
    /// A fresh single-use nonce for `pubkey` (hex SEC1), to sign for `authenticate`.
    #[method(name = "fetch_nonce")]
    async fn fetch_nonce(&self, pubkey: String) -> RpcResult<String>;

    /// Checks the signature over the nonce; on success this connection acts as `pubkey`.
    #[method(name = "authenticate", with_extensions)]
    async fn authenticate(
        &self,
        pubkey: String,
        signature: String,
        nonce: String,
    ) -> RpcResult<bool>;

    /// The caller's identity: the authenticated public key, or `"anonymous"`.
    #[method(name = "whoami", with_extensions)]
    async fn whoami(&self) -> RpcResult<String>;

    /// Runs `script` as SAL and waits for its output; in context `context_id`
    /// (extension) when given.
    #[method(name = "play", with_extensions)]
    async fn play(&self, script: String, context_id: Option<String>) -> RpcResult<PlayResult>;

    /// Stores a job as `Created` (not queued); returns its id.
    #[method(name = "create_job", with_extensions)]
    async fn create_job(&self, params: CreateJobParams) -> RpcResult<String>;

    /// Creates many jobs (at most 1,000, of one context namespace) and, unless `start`
    /// is false, starts them: all or nothing, one store call. Returns their ids, in
    /// order. Extension method (bulk enqueue).
    #[method(name = "create_jobs", with_extensions)]
    async fn create_jobs(
        &self,
        jobs: Vec<CreateJobParams>,
        start: Option<bool>,
    ) -> RpcResult<Vec<String>>;

    /// Queues a `Created` job (or parks it until its prerequisites finish).
    #[method(name = "start_job", with_extensions)]
    async fn start_job(&self, job_id: String) -> RpcResult<StartJobResult>;

    /// Creates, starts and waits for a job; returns its output. `timeout` (seconds, an
    /// extension) bounds the job and the wait; default 300. `context_id` (extension):
    /// the context the job runs in (default: the default context); the caller must be
    /// one of its executors.
    #[method(name = "run_job", with_extensions)]
    async fn run_job(
        &self,
        script: String,
        script_type: String,
        prerequisites: Option<Vec<String>>,
        timeout: Option<u64>,
        context_id: Option<String>,
    ) -> RpcResult<String>;

    /// The job's status.
    #[method(name = "get_job_status", with_extensions)]
    async fn get_job_status(&self, job_id: String) -> RpcResult<JobStatus>;

    /// The job's output; empty until it finished.
    #[method(name = "get_job_output", with_extensions)]
    async fn get_job_output(&self, job_id: String) -> RpcResult<String>;

    /// The job's log lines joined with `\n`, or `null`. With `start` (a sequence
    /// number, default 0) or `limit` (default 256, at most 10,000) (extension): one page
    /// `{logs, lines, start, next, dropped}` (see [`JobLogsResult`]).
    #[method(name = "get_job_logs", with_extensions)]
    async fn get_job_logs(
        &self,
        job_id: String,
        start: Option<u64>,
        limit: Option<u64>,
    ) -> RpcResult<JobLogsResult>;

    /// Without `filter`: every visible job id, oldest first. With one (extension): a page
    /// `{jobs: [summary], next_cursor}` of the visible jobs matching it, ordered by
    /// `(created_at, id)`; pass `next_cursor` back as `cursor` for the next page.
    #[method(name = "list_jobs", with_extensions)]
    async fn list_jobs(&self, filter: Option<ListJobsFilter>) -> RpcResult<ListJobsResult>;

    /// Cancels a queued or running job (it ends in `Error` with type `cancelled`).
    #[method(name = "stop_job", with_extensions)]
    async fn stop_job(&self, job_id: String) -> RpcResult<()>;

    /// Deletes the job and everything about it.
    #[method(name = "delete_job", with_extensions)]
    async fn delete_job(&self, job_id: String) -> RpcResult<()>;

    /// Deletes every job.
    #[method(name = "clear_all_jobs", with_extensions)]
    async fn clear_all_jobs(&self) -> RpcResult<()>;

    /// Extension: every stored field of the job.
    #[method(name = "get_job", with_extensions)]
    async fn get_job(&self, job_id: String) -> RpcResult<JobInfo>;

    /// Extension: the runner pools and their state.
    #[method(name = "list_runners")]
    async fn list_runners(&self) -> RpcResult<Vec<RunnerInfo>>;

    /// Extension (server admins): job counts per status and script type, queue depths,
    /// the runner pools, uptime and version.
    #[method(name = "stats", with_extensions)]
    async fn stats(&self) -> RpcResult<StatsResult>;

    /// The OpenRPC document of exactly the methods served.
    #[method(name = "rpc.discover")]
    async fn discover(&self) -> RpcResult<Value>;

    /// Creates or replaces an actor (server admins). One params object:
    /// `{actor: {id, pubkey, address[]}}` (the coordinator spec's shape).
    #[method(name = "actor.create", with_extensions)]
    async fn actor_create(&self, params: ActorCreateParams) -> RpcResult<Actor>;

    /// An actor by id (server admins, or the actor itself): `{id}`.
    #[method(name = "actor.load", with_extensions)]
    async fn actor_load(&self, params: IdParams) -> RpcResult<Actor>;

    /// Creates (server admins) or replaces (server admins, the context's admins) a
    /// context: `{context: {id, admins[], readers[], executors[]}}`.
    #[method(name = "context.create", with_extensions)]
    async fn context_create(&self, params: ContextCreateParams) -> RpcResult<Context>;

    /// A context by id (server admins and its members): `{id}`.
    #[method(name = "context.load", with_extensions)]
    async fn context_load(&self, params: IdParams) -> RpcResult<Context>;

    /// Creates or replaces (until it starts) coordinator job `(context_id, job.id)`,
    /// backed by a new supervisor job (executors): `{context_id, job: JobCreate}`.
    #[method(name = "job.create", with_extensions)]
    async fn job_create(&self, params: JobCreateParams) -> RpcResult<SpecJob>;

    /// A coordinator job with its status and result (readers):
    /// `{context_id, caller_id, id}`.
    #[method(name = "job.load", with_extensions)]
    async fn job_load(&self, params: JobLoadParams) -> RpcResult<SpecJob>;

    /// Creates or replaces (until it starts) a flow of existing jobs whose `depends`
    /// form a DAG (executors): `{context_id, flow: FlowCreate}`.
    #[method(name = "flow.create", with_extensions)]
    async fn flow_create(&self, params: FlowCreateParams) -> RpcResult<SpecFlow>;

    /// A flow with its derived status and its jobs' results (readers): `{context_id, id}`.
    #[method(name = "flow.load", with_extensions)]
    async fn flow_load(&self, params: FlowLoadParams) -> RpcResult<SpecFlow>;

    /// The flow's DAG (readers): `{context_id, id}`.
    #[method(name = "flow.dag", with_extensions)]
    async fn flow_dag(&self, params: FlowLoadParams) -> RpcResult<FlowDag>;

    /// Extension: starts every job of the flow, each waiting for its `depends`
    /// (executors): `{context_id, id}`. Starting a started flow starts nothing more.
    #[method(name = "flow.start", with_extensions)]
    async fn flow_start(&self, params: FlowLoadParams) -> RpcResult<SpecFlow>;

    /// Registers or replaces a runner in a context (server admins; context admins for a
    /// runner without a port): `{context_id, runner: RunnerCreate}` with the extensions
    /// `port`, `script_types`, `hello`, `auth_token`. With a port, every instance
    /// connects to `tcp://address:port` and routes jobs of its script types there.
    #[method(name = "runner.create", with_extensions)]
    async fn runner_create(&self, params: RunnerCreateParams) -> RpcResult<SpecRunner>;

    /// A registered runner (the context's admins): `{context_id, id}`.
    #[method(name = "runner.load", with_extensions)]
    async fn runner_load(&self, params: RunnerLoadParams) -> RpcResult<SpecRunner>;

    /// Creates a message and submits its jobs (executors): `{context_id, message}`.
    #[method(name = "message.create", with_extensions)]
    async fn message_create(&self, params: MessageCreateParams) -> RpcResult<SpecMessage>;

    /// A message with its jobs, logs and derived statuses (readers):
    /// `{context_id, caller_id, id}`.
    #[method(name = "message.load", with_extensions)]
    async fn message_load(&self, params: MessageLoadParams) -> RpcResult<SpecMessage>;

    /// Extension (WebSocket): the job's events from `cursor` (index of the next log line
    /// wanted, default 0): its current status, the log lines from the cursor, then every
    /// change, ending after the terminal status.
    #[subscription(
        name = "subscribe_job_events" => "job_event",
        unsubscribe = "unsubscribe_job_events",
        item = JobEvent,
        with_extensions
    )]
    async fn subscribe_job_events(&self, job_id: String, cursor: Option<u64>)
    -> SubscriptionResult;
}
