//! The coordinator's jobs and flows (`../shared/specs/coordinator.openrpc.json`):
//! client-numbered records addressed by `(context_id, id)`, each coordinator job backed
//! by an ordinary supervisor job.
//!
//! - A **job** record ([`JobRecord`]) keeps the spec's fields and `job_id`, the
//!   supervisor job that runs it (an extension, shown by `job.load`). Its status and
//!   result are never stored here: they are read from that supervisor job.
//! - A **flow** record ([`FlowRecord`]) names jobs of its context; their `depends` form
//!   its DAG ([`dag`]). `flow.start` turns each job's `depends` into supervisor
//!   prerequisites and starts them all: the dispatcher's own prerequisite machinery
//!   orders them, there is no second dispatcher.
//!
//! - A **runner** record ([`RunnerRecord`], `runner.rs`) is a runner registered at run
//!   time; with a port, every instance connects to it as a pool of its own
//!   (`registry.rs`) and routes jobs of its script types there.
//! - A **message** record ([`MessageRecord`], `message.rs`) is an envelope of jobs,
//!   created and started at once; its status derives from them, and its deadlines are
//!   enforced by the server (`deadlines.rs`).
//!
//! The records live in a [`CoordinationStore`] (`store.rs`): in memory, or in Redis
//! beside the jobs and the access directory.

pub mod dag;
pub(crate) mod deadlines;
pub mod message;
pub(crate) mod registry;
pub mod runner;
mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::message::{MessageRecord, SpecMessage};
pub use self::runner::{RunnerRecord, SpecRunner};
pub use self::store::{
    CoordinationError, CoordinationStore, MemoryCoordination, RedisCoordination,
};
use crate::job::{self, JobId, ScriptType};

/// Jobs in one flow, at most. Bounded so that loading a flow stays a bounded amount of
/// work (each of its jobs is read on `flow.load`).
pub const MAX_FLOW_JOBS: usize = 1000;
/// Entries of one job's `depends` or `prerequisites`, at most.
pub const MAX_DEPENDS: usize = 1000;

/// A script type spelled as the coordinator spec spells it (`Osis`, `Sal`, `V`,
/// `Python`) on output; any case on input.
pub mod spec_script_type {
    use super::*;

    /// The spec's spelling of `t`.
    pub fn name(t: ScriptType) -> &'static str {
        match t {
            ScriptType::Osis => "Osis",
            ScriptType::Sal => "Sal",
            ScriptType::V => "V",
            ScriptType::Python => "Python",
        }
    }

    /// Serde `serialize_with`.
    pub fn serialize<S: Serializer>(t: &ScriptType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*t))
    }

    /// Serde `deserialize_with`: any case.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScriptType, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A coordinator job's status as the spec names it (no `Created`: a job not yet started
/// reads `Dispatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecJobStatus {
    /// Created, or queued.
    Dispatched,
    /// Started, waiting for its prerequisites.
    WaitingForPrerequisites,
    /// Running on a runner.
    Started,
    /// Ended in failure.
    Error,
    /// Ended in success.
    Finished,
}

impl From<job::JobStatus> for SpecJobStatus {
    fn from(s: job::JobStatus) -> Self {
        match s {
            job::JobStatus::Created | job::JobStatus::Dispatched => SpecJobStatus::Dispatched,
            job::JobStatus::WaitingForPrerequisites => SpecJobStatus::WaitingForPrerequisites,
            job::JobStatus::Started => SpecJobStatus::Started,
            job::JobStatus::Error => SpecJobStatus::Error,
            job::JobStatus::Finished => SpecJobStatus::Finished,
        }
    }
}

/// A flow's status, derived from its jobs ([`flow_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowStatus {
    /// No job of it has started.
    Dispatched,
    /// Some job started; none failed; not all finished.
    Started,
    /// Some job ended in `Error`.
    Error,
    /// Every job finished.
    Finished,
}

/// The flow status of jobs with these supervisor statuses: `Error` as soon as one
/// failed, `Finished` when all finished, `Started` once one left `Created`, else
/// `Dispatched`.
pub fn flow_status(jobs: &[job::JobStatus]) -> FlowStatus {
    use job::JobStatus as S;
    if jobs.contains(&S::Error) {
        FlowStatus::Error
    } else if !jobs.is_empty() && jobs.iter().all(|s| *s == S::Finished) {
        FlowStatus::Finished
    } else if jobs.iter().any(|s| *s != S::Created) {
        FlowStatus::Started
    } else {
        FlowStatus::Dispatched
    }
}

/// A coordinator job as stored: the spec's input fields, times, and the supervisor job
/// behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// The actor that created it (the caller's actor id; a server admin's given value).
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// The script source.
    pub script: String,
    /// The script type.
    pub script_type: ScriptType,
    /// Seconds per attempt (0: the supervisor's default).
    pub timeout: u32,
    /// Retries after a failed attempt.
    pub retries: u8,
    /// Environment variables.
    pub env_vars: BTreeMap<String, String>,
    /// Supervisor job ids that must finish first (besides `depends`).
    pub prerequisites: Vec<String>,
    /// Ids of jobs of the same context that must finish first.
    pub depends: Vec<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The supervisor job that runs it.
    pub job_id: JobId,
    /// Set (compare-and-set on this record) before a flow or message starts its
    /// supervisor job: from then on no `job.create` can replace it, and a replacement
    /// that won the race is what gets started.
    #[serde(default)]
    pub started: bool,
    /// How its supervisor job ended, kept the first time a read sees it ended: what
    /// `job.load` and `flow.load` show once retention has removed that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<JobEnd>,
}

/// How a coordinator job's supervisor job ended (see [`JobRecord::ended`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    /// `Finished` or `Error`.
    pub status: job::JobStatus,
    /// Its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<job::JobError>,
}

/// The spec's `Job`, with `job_id` (the supervisor job) as an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecJob {
    /// Client-chosen id.
    pub id: u32,
    /// Who created it.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// The script source.
    pub script: String,
    /// The script type, spec spelling.
    #[serde(with = "spec_script_type")]
    pub script_type: ScriptType,
    /// Seconds per attempt.
    pub timeout: u32,
    /// Retries.
    pub retries: u8,
    /// Environment variables.
    pub env_vars: BTreeMap<String, String>,
    /// `{"output": ..}` once finished; `{"error_type": .., "error": ..}` once failed;
    /// empty before.
    pub result: BTreeMap<String, String>,
    /// Supervisor job ids that must finish first.
    pub prerequisites: Vec<String>,
    /// Jobs of the same context that must finish first.
    pub depends: Vec<u32>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The supervisor status, mapped onto the spec's names.
    pub status: SpecJobStatus,
    /// Extension: the supervisor job behind it (`get_job`, `get_job_logs`, ...).
    pub job_id: JobId,
}

/// The `result` of a coordinator job backed by `job`.
pub fn job_result(job: &job::Job) -> BTreeMap<String, String> {
    let mut result = BTreeMap::new();
    match job.status {
        job::JobStatus::Finished => {
            result.insert("output".to_owned(), job.output.clone().unwrap_or_default());
        }
        job::JobStatus::Error => {
            if let Some(e) = &job.error {
                result.insert("error_type".to_owned(), e.error_type.clone());
                result.insert("error".to_owned(), e.message.clone());
            }
        }
        _ => {}
    }
    result
}

impl SpecJob {
    /// The wire job of `record`, whose supervisor job has `status` and `result`.
    pub fn new(record: JobRecord, status: SpecJobStatus, result: BTreeMap<String, String>) -> Self {
        SpecJob {
            id: record.id,
            caller_id: record.caller_id,
            context_id: record.context_id,
            script: record.script,
            script_type: record.script_type,
            timeout: record.timeout,
            retries: record.retries,
            env_vars: record.env_vars,
            result,
            prerequisites: record.prerequisites,
            depends: record.depends,
            created_at: record.created_at,
            updated_at: record.updated_at,
            status,
            job_id: record.job_id,
        }
    }
}

/// A flow as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// Who created it.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// Its jobs, in the given order, without repeats.
    pub jobs: Vec<u32>,
    /// Stored and returned; not applied to the jobs (each job has its own).
    pub env_vars: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// `flow.start` was called: the flow can no longer be replaced.
    #[serde(default)]
    pub started: bool,
}

/// The spec's `Flow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecFlow {
    /// Client-chosen id.
    pub id: u32,
    /// Who created it.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// Its jobs.
    pub jobs: Vec<u32>,
    /// Environment variables.
    pub env_vars: BTreeMap<String, String>,
    /// Per job, `"<id>"`: its output once finished, `"<id>.error"`: `type: message` once
    /// failed.
    pub result: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Derived from its jobs ([`flow_status`]).
    pub status: FlowStatus,
}

impl SpecFlow {
    /// The wire flow of `record` whose jobs' supervisor jobs are `jobs` (coordinator id,
    /// supervisor job).
    pub fn new(record: FlowRecord, jobs: &[(u32, job::Job)]) -> Self {
        let statuses: Vec<job::JobStatus> = jobs.iter().map(|(_, j)| j.status).collect();
        let mut result = BTreeMap::new();
        for (id, j) in jobs {
            match (j.status, &j.error) {
                (job::JobStatus::Finished, _) => {
                    result.insert(id.to_string(), j.output.clone().unwrap_or_default());
                }
                (job::JobStatus::Error, Some(e)) => {
                    result.insert(
                        format!("{id}.error"),
                        format!("{}: {}", e.error_type, e.message),
                    );
                }
                _ => {}
            }
        }
        SpecFlow {
            id: record.id,
            caller_id: record.caller_id,
            context_id: record.context_id,
            jobs: record.jobs,
            env_vars: record.env_vars,
            result,
            created_at: record.created_at,
            updated_at: record.updated_at,
            status: flow_status(&statuses),
        }
    }
}

/// The spec's `JobSummary`: one node of a [`FlowDag`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's id.
    pub id: u32,
    /// What it depends on.
    pub depends: Vec<u32>,
    /// Its supervisor prerequisites.
    pub prerequisites: Vec<String>,
    /// Its script type, spec spelling.
    #[serde(with = "spec_script_type")]
    pub script_type: ScriptType,
}

/// The spec's `FlowDag` (see [`dag`] for the conventions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowDag {
    /// The flow.
    pub flow_id: u32,
    /// Who created the flow.
    pub caller_id: u32,
    /// The context.
    pub context_id: u32,
    /// Job summaries keyed by job id (as a string).
    pub nodes: BTreeMap<String, JobSummary>,
    /// `[dependency, dependent]`.
    pub edges: Vec<[u32; 2]>,
    /// `[dependent, dependency]`.
    pub reverse_edges: Vec<[u32; 2]>,
    /// Jobs that depend on nothing.
    pub roots: Vec<u32>,
    /// Jobs nothing depends on.
    pub leaves: Vec<u32>,
    /// Topological layers that may run in parallel.
    pub levels: Vec<Vec<u32>>,
}

impl FlowDag {
    /// Lays out `flow` over its job records (one per id of `flow.jobs`).
    pub fn build(flow: &FlowRecord, jobs: &[JobRecord]) -> Result<FlowDag, dag::DagError> {
        let graph: BTreeMap<u32, Vec<u32>> =
            jobs.iter().map(|j| (j.id, j.depends.clone())).collect();
        let layout = dag::layout(&graph)?;
        let nodes = jobs
            .iter()
            .map(|j| {
                let summary = JobSummary {
                    id: j.id,
                    depends: j.depends.clone(),
                    prerequisites: j.prerequisites.clone(),
                    script_type: j.script_type,
                };
                (j.id.to_string(), summary)
            })
            .collect();
        Ok(FlowDag {
            flow_id: flow.id,
            caller_id: flow.caller_id,
            context_id: flow.context_id,
            nodes,
            edges: layout.edges,
            reverse_edges: layout.reverse_edges,
            roots: layout.roots,
            leaves: layout.leaves,
            levels: layout.levels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobStatus as S;

    #[test]
    fn flow_status_derives_from_its_jobs() {
        let cases: [(&[S], FlowStatus); 7] = [
            (&[S::Created, S::Created], FlowStatus::Dispatched),
            (&[S::Dispatched, S::Created], FlowStatus::Started),
            (
                &[S::Finished, S::WaitingForPrerequisites],
                FlowStatus::Started,
            ),
            (&[S::Finished, S::Finished], FlowStatus::Finished),
            (&[S::Finished, S::Error, S::Started], FlowStatus::Error),
            (&[S::Created, S::Error], FlowStatus::Error),
            (&[], FlowStatus::Dispatched),
        ];
        for (jobs, want) in cases {
            assert_eq!(flow_status(jobs), want, "{jobs:?}");
        }
    }

    #[test]
    fn statuses_and_script_types_use_the_spec_names() {
        let named: Vec<SpecJobStatus> = S::ALL.into_iter().map(SpecJobStatus::from).collect();
        assert_eq!(
            serde_json::to_value(named).unwrap(),
            serde_json::json!([
                "Dispatched",
                "Dispatched",
                "WaitingForPrerequisites",
                "Started",
                "Error",
                "Finished"
            ])
        );
        let names: Vec<&str> = ScriptType::ALL
            .into_iter()
            .map(spec_script_type::name)
            .collect();
        assert_eq!(names, ["Osis", "Sal", "V", "Python"]);
        let summary: JobSummary = serde_json::from_value(serde_json::json!(
            {"id": 1, "depends": [], "prerequisites": [], "script_type": "sAL"}
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&summary).unwrap()["script_type"],
            "Sal"
        );
    }
}
