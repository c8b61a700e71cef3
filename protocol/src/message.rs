//! The messages of protocol v1 and its optional extensions, with their exact JSON shapes.
//!
//! Every type here serializes field by field in the order `rrq-protocol` 0.9.9 uses, so
//! that a frame written by either implementation is byte-for-byte the same where the JSON
//! values are the same. Unknown fields are ignored on input (forward compatibility);
//! optional fields are omitted on output when absent, except the context's nullable
//! fields, which v1 always writes (`"deadline": null`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1";

fn default_protocol_version() -> String {
    PROTOCOL_VERSION.to_owned()
}

/// One frame's payload: a message tagged by `type`, its body under `payload`.
///
/// ```
/// use hero_protocol::{CancelRequest, Message};
///
/// let json = r#"{"type":"cancel","payload":{"job_id":"j1"}}"#;
/// let msg: Message = serde_json::from_str(json).unwrap();
/// assert_eq!(msg, Message::Cancel(CancelRequest::job("j1")));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Message {
    /// Supervisor -> runner: run this.
    Request(ExecutionRequest),
    /// Runner -> supervisor: the outcome of a request.
    Response(ExecutionOutcome),
    /// Supervisor -> runner: stop a request, or every request of a job.
    Cancel(CancelRequest),
    /// Extension: the first frame of a peer that speaks the extensions.
    Hello(Hello),
    /// Extension: runner -> supervisor, one log line of a running request.
    Log(LogLine),
}

impl Message {
    /// The wire name of this message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Request(_) => "request",
            Message::Response(_) => "response",
            Message::Cancel(_) => "cancel",
            Message::Hello(_) => "hello",
            Message::Log(_) => "log",
        }
    }

    /// Whether a plain v1 peer understands this message (`request`, `response`, `cancel`).
    pub fn is_v1_core(&self) -> bool {
        matches!(
            self,
            Message::Request(_) | Message::Response(_) | Message::Cancel(_)
        )
    }
}

/// The `type` values this crate decodes.
pub const MESSAGE_TYPES: &[&str] = &["request", "response", "cancel", "hello", "log"];

/// Where and when a request runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionContext {
    /// The supervisor's job id (same as [`ExecutionRequest::job_id`]).
    pub job_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the job was queued.
    #[serde(with = "crate::rfc3339")]
    pub enqueue_time: DateTime<Utc>,
    /// The queue it came from, e.g. `hero:q:work:type:SAL`.
    pub queue_name: String,
    /// Absolute deadline: the runner must answer `timeout` by then. Written as `null`
    /// when absent.
    #[serde(default, with = "crate::rfc3339::option")]
    pub deadline: Option<DateTime<Utc>>,
    /// W3C trace context. Written as `null` when absent.
    #[serde(default)]
    pub trace_context: Option<BTreeMap<String, String>>,
    /// Id of the supervisor instance that dispatched the request. Written as `null` when
    /// absent.
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// Supervisor -> runner: execute `function_name` with `args` and `kwargs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    /// `"1"`; a missing field means `"1"`.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// Unique per attempt; responses and cancels refer to it.
    pub request_id: String,
    /// The supervisor's job id.
    pub job_id: String,
    /// The handler to run; for scripts, the script type name (`"SAL"`, `"Python"`, ...).
    pub function_name: String,
    /// Positional arguments; for scripts, `[script]`. Default `[]`.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments; for scripts, `{"env": {..}, "caller_id": .., "context_id": ..}`.
    /// Default `{}`.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Required.
    pub context: ExecutionContext,
}

/// The four outcomes of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Done; `result` holds the output.
    Success,
    /// Run it again after `retry_after_seconds`.
    Retry,
    /// The deadline passed.
    Timeout,
    /// It failed; `error` says why.
    Error,
}

impl OutcomeStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Success => "success",
            OutcomeStatus::Retry => "retry",
            OutcomeStatus::Timeout => "timeout",
            OutcomeStatus::Error => "error",
        }
    }
}

/// Well-known values of [`ExecutionError::error_type`].
pub mod error_type {
    /// No handler for the function: never retried.
    pub const HANDLER_NOT_FOUND: &str = "handler_not_found";
    /// The request was cancelled.
    pub const CANCELLED: &str = "cancelled";
    /// The deadline passed.
    pub const TIMEOUT: &str = "timeout";
    /// The runner is at its `max_in_flight`.
    pub const RUNNER_BUSY: &str = "runner_busy";
    /// The request was malformed for this handler: never retried.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// The handler panicked.
    pub const PANIC: &str = "panic";
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// Human-readable.
    pub message: String,
    /// Machine-readable kind; see [`error_type`]. Serialized as the key `"type"`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Optional code of the handler's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ExecutionError {
    /// An error with a message and no type.
    pub fn new(message: impl Into<String>) -> Self {
        ExecutionError {
            message: message.into(),
            error_type: None,
            code: None,
            details: None,
        }
    }

    /// An error with a message and a type (see [`error_type`]).
    pub fn typed(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        ExecutionError {
            error_type: Some(error_type.into()),
            ..ExecutionError::new(message)
        }
    }
}

/// Runner -> supervisor: how a request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOutcome {
    /// Must match the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Must match the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What happened.
    pub status: OutcomeStatus,
    /// The output on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
    /// With `retry`: the runner's requested delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<f64>,
}

impl ExecutionOutcome {
    fn base(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        status: OutcomeStatus,
    ) -> Self {
        ExecutionOutcome {
            job_id: Some(job_id.into()),
            request_id: Some(request_id.into()),
            status,
            result: None,
            error: None,
            retry_after_seconds: None,
        }
    }

    /// `success` carrying `result`.
    pub fn success(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        result: Value,
    ) -> Self {
        ExecutionOutcome {
            result: Some(result),
            ..Self::base(job_id, request_id, OutcomeStatus::Success)
        }
    }

    /// `retry`, asking to be run again after `retry_after_seconds` (the supervisor's
    /// backoff when `None`).
    pub fn retry(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        message: impl Into<String>,
        retry_after_seconds: Option<f64>,
    ) -> Self {
        ExecutionOutcome {
            error: Some(ExecutionError::new(message)),
            retry_after_seconds,
            ..Self::base(job_id, request_id, OutcomeStatus::Retry)
        }
    }

    /// `timeout`: the deadline passed. Its error has type `timeout`.
    pub fn timeout(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ExecutionOutcome {
            error: Some(ExecutionError::typed(error_type::TIMEOUT, message)),
            ..Self::base(job_id, request_id, OutcomeStatus::Timeout)
        }
    }

    /// `error` with an untyped message.
    pub fn error(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::failed(job_id, request_id, ExecutionError::new(message))
    }

    /// `error` with the given error.
    pub fn failed(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        error: ExecutionError,
    ) -> Self {
        ExecutionOutcome {
            error: Some(error),
            ..Self::base(job_id, request_id, OutcomeStatus::Error)
        }
    }

    /// `error` of type `handler_not_found`: no handler for the function (never retried).
    pub fn handler_not_found(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let error = ExecutionError::typed(error_type::HANDLER_NOT_FOUND, message);
        Self::failed(job_id, request_id, error)
    }

    /// `error` of type `cancelled`: the answer to a cancelled request.
    pub fn cancelled(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::failed(
            job_id,
            request_id,
            ExecutionError::typed(error_type::CANCELLED, message),
        )
    }

    /// `error` of type `runner_busy`: the runner is at its `max_in_flight`.
    pub fn runner_busy(
        job_id: impl Into<String>,
        request_id: impl Into<String>,
        max_in_flight: usize,
    ) -> Self {
        let message = format!("runner busy: {max_in_flight} requests in flight");
        Self::failed(
            job_id,
            request_id,
            ExecutionError::typed(error_type::RUNNER_BUSY, message),
        )
    }

    /// The error's `type`, when there is one.
    pub fn error_type(&self) -> Option<&str> {
        self.error.as_ref().and_then(|e| e.error_type.as_deref())
    }
}

/// Supervisor -> runner: stop a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Default `"1"`.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// The job whose request(s) to stop.
    pub job_id: String,
    /// Absent: cancel every in-flight request of `job_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// True: stop at once (SIGKILL a child process, abort the task). Default false.
    #[serde(default)]
    pub hard_kill: bool,
}

impl CancelRequest {
    /// Cancel every in-flight request of `job_id`, gracefully.
    pub fn job(job_id: impl Into<String>) -> Self {
        CancelRequest {
            protocol_version: default_protocol_version(),
            job_id: job_id.into(),
            request_id: None,
            hard_kill: false,
        }
    }

    /// Cancel one request, gracefully.
    pub fn request(job_id: impl Into<String>, request_id: impl Into<String>) -> Self {
        CancelRequest {
            request_id: Some(request_id.into()),
            ..CancelRequest::job(job_id)
        }
    }

    /// The same cancel, as a hard kill.
    pub fn hard(self) -> Self {
        CancelRequest {
            hard_kill: true,
            ..self
        }
    }
}

/// Extension `hello`: a peer introduces itself.
///
/// The supervisor opens a connection with `hello` unless its pool says `hello=off`; a
/// runner that receives one answers with its own `hello` and from then on may send `log`
/// frames. A plain v1 runner refuses it (it closes the connection on a frame type it does
/// not know, answers another frame, or says nothing): in the default `hello=auto` the
/// supervisor then reconnects at once without `hello` and never sends that pool an
/// extension frame again, so a v1 runner works unmodified. A runner never sends `hello`
/// unasked, so a plain v1 supervisor never sees one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Default `"1"`.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// The peer's name, e.g. `hero-runner`.
    pub name: String,
    /// The peer's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Runner: the functions (script types) it serves. Default `[]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Runner: how many requests it runs at once on this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Extension message types the sender accepts (e.g. `["log"]`). Default `[]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Supervisor: the token a runner requires (a runner listening on a non-loopback
    /// address requires one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

impl Hello {
    /// A hello with a name and nothing else.
    pub fn new(name: impl Into<String>) -> Self {
        Hello {
            protocol_version: default_protocol_version(),
            name: name.into(),
            version: None,
            functions: Vec::new(),
            max_in_flight: None,
            extensions: Vec::new(),
            auth_token: None,
        }
    }

    /// Whether the sender accepts the extension message `type_name`.
    pub fn accepts(&self, type_name: &str) -> bool {
        self.extensions.iter().any(|e| e == type_name)
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output, or a script's `print`.
    Stdout,
    /// Standard error, or a script's `debug`.
    Stderr,
}

/// Extension `log`: runner -> supervisor, one line of a running request's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// The job it belongs to.
    pub job_id: String,
    /// The request it belongs to.
    pub request_id: String,
    /// Where it came from.
    pub stream: LogStream,
    /// The line, without its trailing newline.
    pub line: String,
}
