//! Wire shapes of the API, converted explicitly from/to the domain types of [`crate::job`].
//!
//! Inputs that the domain parses (script types, job ids) arrive as strings and are parsed
//! here, so a bad value is answered with our own -32602 `data.code` instead of a serde
//! message. Outputs use the domain enums' canonical spellings.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

use super::error::{invalid_params, parse_job_id};
use crate::job::{self, JobId, JobStatus, ScriptType};

/// `caller_id` of a job submitted by a client that did not authenticate and gave none.
pub const ANONYMOUS: &str = "anonymous";
/// `context_id` of a job whose params gave none (`run_job`, `play`).
pub const DEFAULT_CONTEXT: &str = "default";

/// What a client submits to `create_job`:
/// `{script, script_type, caller_id, context_id, timeout?, prerequisites?, retries?, env_vars?}`.
///
/// `script_type` is case-insensitive. `caller_id` is replaced by the authenticated public
/// key on a connection that authenticated; otherwise it defaults to `"anonymous"`.
/// `context_id` defaults to `"default"`. `timeout` is in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateJobParams {
    /// The script source (at most 1 MiB).
    pub script: String,
    /// `"OSIS" | "SAL" | "V" | "Python"`, any case.
    pub script_type: String,
    /// Who submits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// The context it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Timeout of one attempt in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Job ids that must be `Finished` first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<String>,
    /// Retries after a failed attempt (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Environment variables of the script.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// The caller's key for this submission (1 to 128 characters): a `create_job`
    /// retried with the same key by the same caller answers the first job's id and
    /// creates nothing (for the calls' retention, 7 days by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl CreateJobParams {
    /// Params for `script` of `script_type` with every optional field absent.
    pub fn new(script: impl Into<String>, script_type: impl Into<String>) -> Self {
        CreateJobParams {
            script: script.into(),
            script_type: script_type.into(),
            ..CreateJobParams::default()
        }
    }

    /// The domain params; `authenticated` (the connection's public key) wins over the
    /// given `caller_id`. Limits are checked by the facade.
    pub(crate) fn into_domain(
        self,
        authenticated: Option<String>,
    ) -> Result<job::JobParams, ErrorObjectOwned> {
        let script_type = parse_script_type(&self.script_type)?;
        let prerequisites = parse_job_ids(&self.prerequisites)?;
        Ok(job::JobParams {
            traceparent: None,
            script: self.script,
            script_type,
            caller_id: authenticated
                .or(self.caller_id)
                .unwrap_or_else(|| ANONYMOUS.to_owned()),
            context_id: self
                .context_id
                .unwrap_or_else(|| DEFAULT_CONTEXT.to_owned()),
            timeout: self.timeout,
            prerequisites,
            retries: self.retries,
            env_vars: self.env_vars,
        })
    }
}

/// Case-insensitive script type: -32602 `invalid_params` when unknown.
pub(crate) fn parse_script_type(s: &str) -> Result<ScriptType, ErrorObjectOwned> {
    s.parse()
        .map_err(|e: job::UnknownScriptType| invalid_params(e.to_string()))
}

/// Each id canonical: -32602 `invalid_job_id` otherwise.
pub(crate) fn parse_job_ids(ids: &[String]) -> Result<Vec<JobId>, ErrorObjectOwned> {
    ids.iter().map(|s| parse_job_id(s)).collect()
}

/// Result of `start_job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartJobResult {
    /// The job was queued (or is waiting for its prerequisites).
    pub success: bool,
}

/// Lines a page of `get_job_logs` serves when no `limit` is given.
pub const DEFAULT_LOG_PAGE: u64 = 256;
/// The most lines one page of `get_job_logs` serves (a larger `limit` is cut to it).
pub const MAX_LOG_PAGE: u64 = 10_000;

/// Result of `get_job_logs`.
///
/// Without `start` and `limit` it is `{logs}`: every kept line. With either (extension)
/// it is one page, `{logs, lines, start, next, dropped}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogsResult {
    /// The log lines joined with `\n` (the page's, when paged); `null` when there are
    /// none.
    pub logs: Option<String>,
    /// The page, when `start` or `limit` was given.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub page: Option<LogPage>,
}

/// One page of a job's log: lines by their sequence numbers. A line's sequence number
/// is the count of lines the job logged before it: 0-based, its own for good, also once
/// the log cap dropped older lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The lines, oldest first; `lines[i]` has sequence number `start + i`.
    pub lines: Vec<String>,
    /// The sequence number of `lines[0]` (or, with no lines, where the log goes on).
    pub start: u64,
    /// The sequence number to ask for next: `start + lines.len()`. Fewer lines than the
    /// limit means the page reached the end of the log as it is now.
    pub next: u64,
    /// The part of the asked range that the log cap dropped before it was read
    /// (`[from, to)`, `to` = `start`); `null` when nothing asked for was lost.
    pub dropped: Option<LogRange>,
}

/// A range of log sequence numbers, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRange {
    /// The first number in the range.
    pub from: u64,
    /// The first number after it.
    pub to: u64,
}

/// Result of `play`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayResult {
    /// What the script returned.
    pub output: String,
}

/// A job's typed error: `{type, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobErrorInfo {
    /// Stable snake_case kind: `cancelled`, `timeout`, `retries_exhausted`, ...
    #[serde(rename = "type")]
    pub error_type: String,
    /// Detail.
    pub message: String,
}

/// The params of a stored job, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJobParams {
    /// The script source.
    pub script: String,
    /// Canonical script type.
    pub script_type: ScriptType,
    /// Who submitted it.
    pub caller_id: String,
    /// The context it runs in.
    pub context_id: String,
    /// Timeout of one attempt in seconds.
    pub timeout: u64,
    /// Jobs that must be `Finished` first.
    pub prerequisites: Vec<JobId>,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// Environment variables.
    pub env_vars: BTreeMap<String, String>,
}

/// Result of `get_job`: every stored field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// What was submitted.
    pub params: StoredJobParams,
    /// Lifecycle state.
    pub status: JobStatus,
    /// Current (or last) attempt, 0 until first claimed.
    pub attempt: u32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// The result once `Finished`.
    pub output: Option<String>,
    /// Why it failed once `Error` (or the last attempt's error while retrying).
    pub error: Option<JobErrorInfo>,
    /// The runner that ran it, when known.
    pub runner: Option<String>,
    /// When it last entered its ready queue: the `enqueue_time` its runner sees.
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
    /// The W3C trace id it runs under (from the caller's `traceparent` header, or new).
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl From<job::Job> for JobInfo {
    fn from(j: job::Job) -> Self {
        JobInfo {
            id: j.id,
            params: StoredJobParams {
                script: j.script,
                script_type: j.script_type,
                caller_id: j.caller_id,
                context_id: j.context_id,
                timeout: j.timeout_secs,
                prerequisites: j.prerequisites,
                retries: j.retries,
                env_vars: j.env_vars,
            },
            status: j.status,
            attempt: j.attempt,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            output: j.output,
            error: j.error.map(|e| JobErrorInfo {
                error_type: e.error_type,
                message: e.message,
            }),
            runner: j.runner,
            queued_at: j.queued_at,
            trace_id: j.traceparent.as_deref().and_then(crate::trace::trace_id_of),
        }
    }
}

/// Jobs per page of a filtered `list_jobs` when the filter gives no `limit`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// The largest `limit` of a filtered `list_jobs`.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// `list_jobs`' optional filter object: every field given must match. Times are RFC
/// 3339 (`2026-01-02T03:04:05Z`); `created_after`/`created_before` are exclusive.
/// `cursor` is a previous answer's `next_cursor`, opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListJobsFilter {
    /// A status name (`Created`, `Dispatched`, `WaitingForPrerequisites`, `Started`,
    /// `Error`, `Finished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `"OSIS" | "SAL" | "V" | "Python"`, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_type: Option<String>,
    /// Only this context's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Only this caller's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Only jobs created after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// Only jobs created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    /// Jobs per page, 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Where to go on: a previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl ListJobsFilter {
    /// The store's filter; a bad value is -32602.
    pub fn into_domain(self) -> Result<crate::store::JobFilter, ErrorObjectOwned> {
        let time = |name: &str, v: Option<String>| {
            v.map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        invalid_params(format!(
                            "{name} must be an RFC 3339 time, not {:?}",
                            crate::store::truncate_text(&t, 64)
                        ))
                    })
            })
            .transpose()
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(invalid_params(format!(
                "limit must be 1..={MAX_LIST_LIMIT}, not {limit}"
            )));
        }
        Ok(crate::store::JobFilter {
            status: self
                .status
                .map(|s| s.parse::<JobStatus>())
                .transpose()
                .map_err(|e| invalid_params(e.to_string()))?,
            script_type: self
                .script_type
                .map(|s| s.parse::<ScriptType>())
                .transpose()
                .map_err(|e| invalid_params(e.to_string()))?,
            context_id: self.context_id,
            caller_id: self.caller_id,
            created_after: time("created_after", self.created_after)?,
            created_before: time("created_before", self.created_before)?,
            after: self
                .cursor
                .map(|c| crate::store::ListCursor::decode(&c))
                .transpose()
                .map_err(|e| invalid_params(e.to_string()))?,
            limit: limit as usize,
        })
    }
}

/// One job of a filtered `list_jobs` page: what a list shows (no script, output or
/// logs: `get_job` has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummaryInfo {
    /// The job's id.
    pub id: JobId,
    /// Lifecycle state.
    pub status: JobStatus,
    /// Its script type.
    pub script_type: ScriptType,
    /// Its context.
    pub context_id: String,
    /// Who created it.
    pub caller_id: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts so far.
    pub attempt: u32,
}

impl From<crate::store::JobSummary> for JobSummaryInfo {
    fn from(s: crate::store::JobSummary) -> Self {
        JobSummaryInfo {
            id: s.id,
            status: s.status,
            script_type: s.script_type,
            context_id: s.context_id,
            caller_id: s.caller_id,
            created_at: s.created_at,
            updated_at: s.updated_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            attempt: s.attempt,
        }
    }
}

/// A filtered `list_jobs` page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs, ordered by `(created_at, id)`. May hold fewer than `limit` (each call
    /// looks at a bounded number of jobs) while `next_cursor` is not null.
    pub jobs: Vec<JobSummaryInfo>,
    /// Pass as `cursor` for the next page; `null` when nothing is left.
    pub next_cursor: Option<String>,
}

/// What `list_jobs` answers: every visible job id (oldest first) without a filter, a
/// [`JobList`] page with one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListJobsResult {
    /// No filter: the ids.
    Ids(Vec<String>),
    /// A filter: one page.
    Page(JobList),
}

impl ListJobsResult {
    /// The ids answered, whichever the form.
    pub fn into_ids(self) -> Vec<String> {
        match self {
            ListJobsResult::Ids(ids) => ids,
            ListJobsResult::Page(page) => page.jobs.iter().map(|j| j.id.to_string()).collect(),
        }
    }
}

/// A `(name, count)` pair of `stats`.
pub type Counts = BTreeMap<String, u64>;

/// What `stats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResult {
    /// The supervisor's version.
    pub version: String,
    /// Seconds since this server started.
    pub uptime_secs: u64,
    /// Jobs stored per status (every status).
    pub jobs_by_status: Counts,
    /// Jobs stored per script type (every type).
    pub jobs_by_script_type: Counts,
    /// Ready jobs per script type's queue.
    pub queued: Counts,
    /// Ready jobs on each open lane (a context's own queue of a type, served by its
    /// registered runners), sorted by context and type.
    #[serde(default)]
    pub lanes: Vec<LaneDepth>,
    /// Jobs scheduled for a later attempt (retry backoff).
    pub delayed: u64,
    /// The runner pools, as `list_runners` shows them.
    pub runners: Vec<RunnerInfo>,
}

/// One open lane of `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneDepth {
    /// The context whose jobs it holds.
    pub context_id: u32,
    /// Their script type.
    pub script_type: String,
    /// Ready jobs on it.
    pub queued: u64,
}

/// One entry of `list_runners`: a runner pool (the domain type is the wire type).
pub use crate::pool::RunnerInfo;

/// One notification of the `subscribe_job_events` subscription.
///
/// The subscription sends the job's current status, then the log lines from the cursor,
/// then every later change; the last event is a `status` with a terminal status
/// (`Finished` or `Error`). Statuses that change quickly may be coalesced: the terminal one
/// is always sent, after every log line. Then the server closes the subscription with a
/// close notification (`params.error = {"code":"job_ended","job_id":..,"status":..}`),
/// which ends the stream of a jsonrpsee client. A job deleted meanwhile closes it with
/// `{"code":"job_not_found",..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job's status is now `status`.
    Status {
        /// The job.
        job_id: JobId,
        /// Its status.
        status: JobStatus,
        /// The cursor to resume from after this event: the sequence number of the next
        /// log line not sent yet (every line before it was sent before this event).
        #[serde(default)]
        cursor: u64,
    },
    /// A log line; `index` counts from 0, and the cursor to resume after it is `index + 1`.
    Log {
        /// The job.
        job_id: JobId,
        /// The line's sequence number: the count of lines the job logged before it. It
        /// stays the line's for good, also once the cap drops older lines.
        index: u64,
        /// The line.
        line: String,
    },
    /// The lines from `requested` to `resumed_at` (exclusive) were dropped by the log
    /// cap before they could be sent; the stream goes on at `resumed_at`.
    CursorExpired {
        /// The job.
        job_id: JobId,
        /// The cursor asked for (or reached).
        requested: u64,
        /// The sequence number of the next line sent.
        resumed_at: u64,
    },
}

/// `actor.create`'s one params object (the spec's `ActorCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorCreateParams {
    /// The actor to create or replace.
    pub actor: crate::access::ActorCreate,
}

/// `context.create`'s one params object (the spec's `ContextCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextCreateParams {
    /// The context to create or replace.
    pub context: crate::access::ContextCreate,
}

/// `actor.load`'s and `context.load`'s one params object: `{id}` (a `u32`; anything
/// else is -32602).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdParams {
    /// The id.
    pub id: u32,
}

/// The spec's `JobCreate`: a coordinator job as `job.create` takes it. `result` is
/// accepted and ignored (a job's result comes from its run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCreate {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// The creating actor: replaced by the caller's actor id when the caller is one.
    pub caller_id: u32,
    /// Must equal the params' `context_id`.
    pub context_id: u32,
    /// The script source.
    pub script: String,
    /// `Osis | Sal | V | Python`, any case.
    pub script_type: String,
    /// Seconds per attempt; 0: the supervisor's default (300).
    pub timeout: u32,
    /// Retries after a failed attempt.
    pub retries: u8,
    /// Environment variables.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<BTreeMap<String, String>>,
    /// Supervisor job ids (UUIDs) that must finish first.
    #[serde(default)]
    pub prerequisites: Vec<String>,
    /// Ids of jobs of the same context that must finish first.
    #[serde(default)]
    pub depends: Vec<u32>,
}

/// `job.create`'s one params object (the spec's `JobCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCreateParams {
    /// The context.
    pub context_id: u32,
    /// The job to create or replace.
    pub job: JobCreate,
}

/// `job.load`'s one params object (the spec's `JobLoadParams`). `caller_id` is
/// accepted and ignored: who calls is decided by the token or the proven key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLoadParams {
    /// The context.
    pub context_id: u32,
    /// Ignored.
    #[serde(default)]
    pub caller_id: u32,
    /// The job.
    pub id: u32,
}

/// The spec's `FlowCreate`. `result` is accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCreate {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// The creating actor: replaced by the caller's actor id when the caller is one.
    pub caller_id: u32,
    /// Must equal the params' `context_id`.
    pub context_id: u32,
    /// Ids of jobs of the context (created first with `job.create`).
    pub jobs: Vec<u32>,
    /// Stored and returned.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<BTreeMap<String, String>>,
}

/// `flow.create`'s one params object (the spec's `FlowCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCreateParams {
    /// The context.
    pub context_id: u32,
    /// The flow to create or replace.
    pub flow: FlowCreate,
}

/// `flow.load`'s, `flow.dag`'s and `flow.start`'s one params object (the spec's
/// `FlowLoadParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLoadParams {
    /// The context.
    pub context_id: u32,
    /// The flow.
    pub id: u32,
}

/// `runner.create`'s one params object (the spec's `RunnerCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerCreateParams {
    /// The context.
    pub context_id: u32,
    /// The runner to register or replace, with the connection extensions.
    pub runner: crate::coordination::runner::RunnerCreate,
}

/// `runner.load`'s one params object (the spec's `RunnerLoadParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLoadParams {
    /// The context.
    pub context_id: u32,
    /// The runner.
    pub id: u32,
}

/// The spec's `MessageCreate`. Enums are checked on conversion, so a bad one is -32602
/// naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCreate {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// The creating actor: replaced by the caller's actor id when the caller is one.
    pub caller_id: u32,
    /// Must equal the params' `context_id`.
    pub context_id: u32,
    /// The message text.
    pub message: String,
    /// `Osis | Sal | V | Python`, any case.
    pub message_type: String,
    /// `Html | Text | Md`.
    pub message_format_type: String,
    /// Seconds per attempt of its jobs that give 0.
    pub timeout: u32,
    /// Seconds for a runner to take one of its jobs (0: no bound).
    pub timeout_ack: u32,
    /// Seconds for all its jobs to finish (0: no bound).
    pub timeout_result: u32,
    /// Its jobs: coordinator jobs of the context, created and started.
    pub job: Vec<JobCreate>,
    /// Lines to keep with it.
    #[serde(default)]
    pub logs: Vec<String>,
}

/// `message.create`'s one params object (the spec's `MessageCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCreateParams {
    /// The context.
    pub context_id: u32,
    /// The message.
    pub message: MessageCreate,
}

/// `message.load`'s one params object (the spec's `MessageLoadParams`); `caller_id` is
/// accepted and ignored, as for `job.load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageLoadParams {
    /// The context.
    pub context_id: u32,
    /// Ignored.
    #[serde(default)]
    pub caller_id: u32,
    /// The message.
    pub id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_params_convert_with_defaults_and_identity() {
        let p = CreateJobParams::new("print(1)", "sal");
        let d = p.clone().into_domain(None).unwrap();
        assert_eq!(d.script_type, ScriptType::Sal);
        assert_eq!(d.caller_id, ANONYMOUS);
        assert_eq!(d.context_id, DEFAULT_CONTEXT);
        let mut given = p.clone();
        given.caller_id = Some("alice".into());
        assert_eq!(given.clone().into_domain(None).unwrap().caller_id, "alice");
        assert_eq!(
            given.into_domain(Some("02ab".into())).unwrap().caller_id,
            "02ab"
        );
        let mut bad = p.clone();
        bad.script_type = "rust".into();
        assert_eq!(bad.into_domain(None).unwrap_err().code(), -32602);
        let mut bad = p;
        bad.prerequisites = vec!["../x".into()];
        assert_eq!(bad.into_domain(None).unwrap_err().code(), -32602);
    }

    #[test]
    fn job_event_wire_shape() {
        let id = JobId::new();
        let ev = JobEvent::Log {
            job_id: id,
            index: 3,
            line: "hi".into(),
        };
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            serde_json::json!({"type":"log","job_id":id,"index":3,"line":"hi"})
        );
    }
}
