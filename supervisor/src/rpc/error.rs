//! Error codes of the API and the mapping from [`SupervisorError`] onto them.
//!
//! Every error carries `data` with a stable snake_case `code` string (and the job id when
//! there is one); the message stays short. The descriptive detail goes to the server log.
//!
//! [`ErrorAnswer::from_client_error`] is the other direction, for clients: the one place
//! an error answer's `data` is read back.

use std::fmt;

use jsonrpsee::core::ClientError;
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde_json::{Value, json};

use crate::job::JobId;
use crate::service::SupervisorError;

/// Invalid params: bad script type, empty or oversize script, bad job id, ...
pub const INVALID_PARAMS: i32 = -32602;
/// The job id is unknown.
pub const JOB_NOT_FOUND: i32 = -32001;
/// `run_job`/`play` waited longer than the job's timeout; the job keeps its own state.
pub const TIMEOUT: i32 = -32002;
/// The job ended in `Error`; `data` carries its `error_type` and `message`.
pub const JOB_FAILED: i32 = -32003;
/// The job is not in a state that allows the operation (e.g. `start_job` twice).
pub const CONFLICT: i32 = -32004;
/// Signature authentication failed (bad key, forged signature, unknown or used nonce).
pub const UNAUTHORIZED: i32 = -32005;
/// The caller may see the thing but not do this to it (a reader calling `stop_job`), or
/// the operation is a server admin's.
pub const FORBIDDEN: i32 = -32006;
/// The store (Redis) is unreachable or failing.
pub const STORAGE_UNAVAILABLE: i32 = -32010;
/// A flow's job depends on a job outside the flow; `data.missing` lists every
/// `{job, depends_on}` pair.
pub const DAG_MISSING_DEPENDENCY: i32 = -32020;
/// A flow's dependencies form a cycle; `data.cycle` is its path (each job depends on the
/// next; the last is the first again).
pub const DAG_CYCLE: i32 = -32021;
/// Anything else.
pub const INTERNAL: i32 = -32603;

/// Every error code the API returns with its `data.code` string, as listed in the OpenRPC
/// document.
pub const ERROR_CODES: [(i32, &str); 14] = [
    (INVALID_PARAMS, "invalid_params"),
    (JOB_NOT_FOUND, "job_not_found"),
    (JOB_NOT_FOUND, "not_found"),
    (JOB_NOT_FOUND, "call_not_found"),
    (INTERNAL, "interrupted"),
    (FORBIDDEN, "forbidden"),
    (TIMEOUT, "timeout"),
    (JOB_FAILED, "job_failed"),
    (CONFLICT, "conflict"),
    (UNAUTHORIZED, "unauthorized"),
    (STORAGE_UNAVAILABLE, "storage_unavailable"),
    (DAG_MISSING_DEPENDENCY, "dag_missing_dependency"),
    (DAG_CYCLE, "dag_cycle"),
    (INTERNAL, "internal"),
];

/// An error answer of the API as a client receives it: the code, the message and what
/// `data` says. Built by [`ErrorAnswer::from_client_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The JSON-RPC error code, e.g. [`JOB_NOT_FOUND`].
    pub code: i32,
    /// The short message.
    pub message: String,
    /// `data.code`, e.g. `job_not_found` (see [`ERROR_CODES`]); `None` for an answer
    /// without one (jsonrpsee's own errors: parse error, method not found, ...).
    pub data_code: Option<String>,
    /// `data.job_id`, when the error concerns one job.
    pub job_id: Option<String>,
    /// `data.error_type` of a [`JOB_FAILED`] answer: the job's own error type.
    pub error_type: Option<String>,
    /// `data.message` of a [`JOB_FAILED`] answer: the job's own error message.
    pub error_message: Option<String>,
}

impl ErrorAnswer {
    /// The error answer `err` carries; `None` when `err` is not an answer of the server
    /// (transport failure, timeout, ...).
    pub fn from_client_error(err: &ClientError) -> Option<ErrorAnswer> {
        let ClientError::Call(obj) = err else {
            return None;
        };
        let data = obj
            .data()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
            .unwrap_or(Value::Null);
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(ErrorAnswer {
            code: obj.code(),
            message: obj.message().to_owned(),
            data_code: text("code"),
            job_id: text("job_id"),
            error_type: text("error_type"),
            error_message: text("message"),
        })
    }

    /// `data.code` as a `&str`, `""` when there is none.
    pub fn data_code(&self) -> &str {
        self.data_code.as_deref().unwrap_or_default()
    }
}

/// One line: `job failed: prerequisite_failed: ... (-32003 job_failed)`, or
/// `job not found (-32001 job_not_found)`.
impl fmt::Display for ErrorAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let (Some(t), Some(m)) = (&self.error_type, &self.error_message) {
            write!(f, ": {t}: {m}")?;
        }
        match &self.data_code {
            Some(data_code) => write!(f, " ({} {data_code})", self.code),
            None => write!(f, " ({})", self.code),
        }
    }
}

fn error(code: i32, message: impl Into<String>, data: Value) -> ErrorObjectOwned {
    ErrorObject::owned(code, message.into(), Some(data))
}

/// -32602 with `data.code = "invalid_params"` and a short reason.
pub(crate) fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    error(INVALID_PARAMS, message, json!({ "code": "invalid_params" }))
}

/// -32602 with `data.code = "invalid_job_id"`.
pub(crate) fn invalid_job_id(message: impl Into<String>) -> ErrorObjectOwned {
    error(INVALID_PARAMS, message, json!({ "code": "invalid_job_id" }))
}

/// -32005 with `data.code = "unauthorized"`.
pub(crate) fn unauthorized(message: impl Into<String>) -> ErrorObjectOwned {
    error(UNAUTHORIZED, message, json!({ "code": "unauthorized" }))
}

/// -32006 `forbidden`: the caller's role does not allow `what`.
pub(crate) fn forbidden(what: impl Into<String>) -> ErrorObjectOwned {
    error(FORBIDDEN, what, json!({ "code": "forbidden" }))
}

/// -32001 `not_found` for an actor or a context (jobs use `job_not_found`).
pub(crate) fn not_found(what: &str, id: u32) -> ErrorObjectOwned {
    error(
        JOB_NOT_FOUND,
        format!("{what} not found"),
        json!({ "code": "not_found", what: id }),
    )
}

/// -32001 `not_found` for a context a job is submitted to: unknown, or one the caller
/// has no role in (the two answer alike).
pub(crate) fn context_not_found(context_id: &str) -> ErrorObjectOwned {
    error(
        JOB_NOT_FOUND,
        "context not found",
        json!({ "code": "not_found", "context_id": context_id }),
    )
}

/// -32001 `not_found` for a coordinator job or flow `id` of `context` (or one the
/// caller may not see: the two answer alike).
pub(crate) fn coordinator_not_found(what: &str, context: u32, id: u32) -> ErrorObjectOwned {
    error(
        JOB_NOT_FOUND,
        format!("{what} not found"),
        json!({ "code": "not_found", "context_id": context, what: id }),
    )
}

/// -32602 `invalid_params` with more `data` fields (`extra`, an object).
pub(crate) fn invalid_params_with(message: impl Into<String>, extra: Value) -> ErrorObjectOwned {
    let mut data = json!({ "code": "invalid_params" });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    error(INVALID_PARAMS, message, data)
}

/// -32004 `conflict`.
pub(crate) fn conflict(message: impl Into<String>) -> ErrorObjectOwned {
    error(CONFLICT, message, json!({ "code": "conflict" }))
}

/// -32020 or -32021 for a flow whose jobs do not form a DAG.
pub(crate) fn dag_error(e: &crate::coordination::dag::DagError) -> ErrorObjectOwned {
    use crate::coordination::dag::DagError;
    match e {
        DagError::MissingDependency(missing) => error(
            DAG_MISSING_DEPENDENCY,
            e.to_string(),
            json!({ "code": "dag_missing_dependency", "missing": missing }),
        ),
        DagError::Cycle(path) => error(
            DAG_CYCLE,
            e.to_string(),
            json!({ "code": "dag_cycle", "cycle": path }),
        ),
    }
}

/// -32001 with `data.code = code` (e.g. `call_not_found`).
pub(crate) fn not_found_with_code(code: &str, message: impl Into<String>) -> ErrorObjectOwned {
    error(JOB_NOT_FOUND, message, json!({ "code": code }))
}

/// -32603 with `data.code = code` (e.g. `interrupted`).
pub(crate) fn internal_with_code(code: &str, message: impl Into<String>) -> ErrorObjectOwned {
    error(INTERNAL, message, json!({ "code": code }))
}

/// -32603 with `data.code = "internal"`.
pub(crate) fn internal(message: impl Into<String>) -> ErrorObjectOwned {
    error(INTERNAL, message, json!({ "code": "internal" }))
}

/// Parses a job id from the wire: -32602 `invalid_job_id` when it is not canonical.
pub(crate) fn parse_job_id(s: &str) -> Result<JobId, ErrorObjectOwned> {
    JobId::parse(s).map_err(|e| invalid_job_id(e.to_string()))
}

/// Maps a facade error onto its code; logs what the client is not told.
pub(crate) fn to_rpc_error(e: SupervisorError) -> ErrorObjectOwned {
    match e {
        SupervisorError::InvalidParams(reason) => invalid_params(reason),
        SupervisorError::NotFound(id) => error(
            JOB_NOT_FOUND,
            "job not found",
            json!({ "code": "job_not_found", "job_id": id }),
        ),
        SupervisorError::Timeout { id, waited_secs } => error(
            TIMEOUT,
            format!("job did not finish within {waited_secs}s"),
            json!({ "code": "timeout", "job_id": id, "waited_secs": waited_secs }),
        ),
        SupervisorError::JobFailed {
            id,
            error: job_error,
        } => error(
            JOB_FAILED,
            "job failed",
            json!({
                "code": "job_failed",
                "job_id": id,
                "error_type": job_error.error_type,
                "message": job_error.message,
            }),
        ),
        SupervisorError::Conflict(reason) => error(CONFLICT, reason, json!({ "code": "conflict" })),
        SupervisorError::Storage(reason) => {
            tracing::warn!(%reason, "storage error answered to a client");
            error(
                STORAGE_UNAVAILABLE,
                "storage unavailable",
                json!({ "code": "storage_unavailable" }),
            )
        }
        SupervisorError::Internal(reason) => {
            tracing::error!(%reason, "internal error answered to a client");
            internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobError;

    fn check(e: SupervisorError, code: i32, data_code: &str) {
        let obj = to_rpc_error(e);
        assert_eq!(obj.code(), code);
        let data: Value = serde_json::from_str(obj.data().expect("data").get()).expect("json");
        assert_eq!(data["code"], data_code);
        assert!(ERROR_CODES.contains(&(code, data_code)) || data_code == "invalid_job_id");
    }

    #[test]
    fn every_supervisor_error_maps_onto_a_listed_code() {
        let id = JobId::new();
        check(
            SupervisorError::InvalidParams("x".into()),
            INVALID_PARAMS,
            "invalid_params",
        );
        check(
            SupervisorError::NotFound(id),
            JOB_NOT_FOUND,
            "job_not_found",
        );
        check(
            SupervisorError::Timeout { id, waited_secs: 3 },
            TIMEOUT,
            "timeout",
        );
        check(
            SupervisorError::JobFailed {
                id,
                error: JobError::cancelled("stop"),
            },
            JOB_FAILED,
            "job_failed",
        );
        check(SupervisorError::Conflict("x".into()), CONFLICT, "conflict");
        check(
            SupervisorError::Storage("down".into()),
            STORAGE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(SupervisorError::Internal("x".into()), INTERNAL, "internal");
        assert_eq!(parse_job_id("nope").unwrap_err().code(), INVALID_PARAMS);
    }

    #[test]
    fn a_client_reads_back_what_the_server_answered() {
        let id = JobId::new();
        let failed = to_rpc_error(SupervisorError::JobFailed {
            id,
            error: JobError::cancelled("stop"),
        });
        let answer = ErrorAnswer::from_client_error(&ClientError::Call(failed)).expect("answer");
        assert_eq!(answer.code, JOB_FAILED);
        assert_eq!(answer.data_code(), "job_failed");
        assert_eq!(answer.job_id, Some(id.to_string()));
        assert_eq!(answer.error_type.as_deref(), Some("cancelled"));
        assert_eq!(
            answer.to_string(),
            "job failed: cancelled: stop (-32003 job_failed)"
        );

        let plain = ErrorObject::owned::<()>(-32601, "Method not found", None);
        let answer = ErrorAnswer::from_client_error(&ClientError::Call(plain)).expect("answer");
        assert_eq!((answer.code, answer.data_code.as_deref()), (-32601, None));
        assert_eq!(answer.to_string(), "Method not found (-32601)");
        assert_eq!(
            ErrorAnswer::from_client_error(&ClientError::Custom("down".into())),
            None
        );
    }
}
