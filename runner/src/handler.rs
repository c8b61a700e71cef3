//! What a handler is, what it gets (the request, a [`HandlerContext`]) and what it returns.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hero_protocol::{
    ExecutionError, ExecutionOutcome, ExecutionRequest, LogLine, LogStream, Message,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a handler returns: the result on success (sent as `success` with this `result`),
/// or why it did not succeed.
pub type HandlerResult = Result<Value, HandlerError>;

/// A function the runner serves, registered by name with [`RunnerBuilder::handler`].
///
/// Any `Fn(ExecutionRequest, HandlerContext) -> impl Future<Output = HandlerResult>` is a
/// handler, so a closure will do:
///
/// ```
/// use hero_runner::{HandlerError, Runner};
/// use serde_json::json;
///
/// let runner = Runner::builder()
///     .handler("add", |req: hero_protocol::ExecutionRequest, _ctx| async move {
///         let a = req.args.first().and_then(|v| v.as_i64());
///         let b = req.args.get(1).and_then(|v| v.as_i64());
///         match (a, b) {
///             (Some(a), Some(b)) => Ok(json!(a + b)),
///             _ => Err(HandlerError::invalid_request("add takes two integers")),
///         }
///     })
///     .build();
/// assert_eq!(runner.functions(), vec!["add".to_owned()]);
/// ```
///
/// A handler should return soon after [`HandlerContext::cancellation`] fires. When it does
/// not, the runner drops its future after a grace period (at once for a hard kill or a
/// deadline): whatever it owns is dropped with it, so a child process held in a
/// [`ProcessGroup`](crate::process::ProcessGroup) is killed.
///
/// [`RunnerBuilder::handler`]: crate::RunnerBuilder::handler
pub trait Handler: Send + Sync + 'static {
    /// Runs one request.
    fn call(
        &self,
        request: ExecutionRequest,
        ctx: HandlerContext,
    ) -> BoxFuture<'static, HandlerResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(ExecutionRequest, HandlerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(
        &self,
        request: ExecutionRequest,
        ctx: HandlerContext,
    ) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(request, ctx))
    }
}

/// Why a request did not succeed, as a handler reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerError {
    /// Answered `error` with this error.
    Failed(ExecutionError),
    /// Answered `retry`: run it again, after `after` when given (else the supervisor's
    /// backoff).
    Retry {
        /// Why.
        message: String,
        /// The requested delay.
        after: Option<Duration>,
    },
}

impl HandlerError {
    /// An `error` with a message and no type.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError::Failed(ExecutionError::new(message))
    }

    /// An `error` with a type (see [`hero_protocol::error_type`], or one of your own).
    pub fn typed(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Failed(ExecutionError::typed(error_type, message))
    }

    /// An `error` of type `invalid_request`: the supervisor does not retry it.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::typed(hero_protocol::error_type::INVALID_REQUEST, message)
    }

    /// A `retry`, after `after` when given.
    pub fn retry(message: impl Into<String>, after: Option<Duration>) -> Self {
        HandlerError::Retry {
            message: message.into(),
            after,
        }
    }

    /// The same error with structured details attached (ignored for `retry`).
    pub fn with_details(self, details: Value) -> Self {
        match self {
            HandlerError::Failed(mut e) => {
                e.details = Some(details);
                HandlerError::Failed(e)
            }
            retry => retry,
        }
    }

    /// The same error with a code of the handler's own (ignored for `retry`).
    pub fn with_code(self, code: impl Into<String>) -> Self {
        match self {
            HandlerError::Failed(mut e) => {
                e.code = Some(code.into());
                HandlerError::Failed(e)
            }
            retry => retry,
        }
    }

    /// The outcome that answers request (`job_id`, `request_id`) with this error.
    pub fn into_outcome(self, job_id: &str, request_id: &str) -> ExecutionOutcome {
        match self {
            HandlerError::Failed(e) => ExecutionOutcome::failed(job_id, request_id, e),
            HandlerError::Retry { message, after } => {
                ExecutionOutcome::retry(job_id, request_id, message, after.map(|d| d.as_secs_f64()))
            }
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Failed(e) => match &e.error_type {
                Some(t) => write!(f, "{t}: {}", e.message),
                None => f.write_str(&e.message),
            },
            HandlerError::Retry { message, .. } => write!(f, "retry: {message}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// What a running handler gets besides its request: cancellation, the deadline and a log
/// sink. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    job_id: Arc<str>,
    request_id: Arc<str>,
    deadline: Option<DateTime<Utc>>,
    cancel: CancellationToken,
    log: LogSink,
}

impl HandlerContext {
    pub(crate) fn new(request: &ExecutionRequest, cancel: CancellationToken, log: LogSink) -> Self {
        HandlerContext {
            job_id: request.job_id.as_str().into(),
            request_id: request.request_id.as_str().into(),
            deadline: request.context.deadline,
            cancel,
            log,
        }
    }

    /// A context for calling a handler outside a runner (tests, embedding): never
    /// cancelled unless `cancel` is, logs to `tracing` only.
    pub fn detached(job_id: &str, request_id: &str, cancel: CancellationToken) -> Self {
        HandlerContext {
            job_id: job_id.into(),
            request_id: request_id.into(),
            deadline: None,
            cancel,
            log: LogSink::tracing_only(),
        }
    }

    /// The job this request belongs to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// This request's id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The request's absolute deadline, if any. The runner enforces it; a handler may use
    /// it to budget its work.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    /// Fires when the request is cancelled, passes its deadline, or its connection closes.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the request has been cancelled (cheap: an atomic load).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Logs one line of this request's output, without waiting. It goes to the
    /// supervisor as a `log` frame when the supervisor asked for them (see
    /// [`hero_protocol::Hello`]), and to `tracing` (stderr) otherwise. Best effort: when the
    /// connection's outgoing queue is full, the line goes to `tracing` instead.
    pub fn log(&self, stream: LogStream, line: impl Into<String>) {
        self.log
            .send_now(&self.job_id, &self.request_id, stream, line.into());
    }

    /// Like [`log`](Self::log), but waits for room in the outgoing queue (backpressure).
    pub async fn log_async(&self, stream: LogStream, line: impl Into<String>) {
        self.log
            .send_async(&self.job_id, &self.request_id, stream, line.into())
            .await;
    }

    /// Like [`log_async`](Self::log_async), for code on a blocking thread (e.g. inside
    /// `spawn_blocking`). Must not be called from an async task.
    pub fn log_blocking(&self, stream: LogStream, line: impl Into<String>) {
        self.log
            .send_blocking(&self.job_id, &self.request_id, stream, line.into());
    }
}

/// Where a connection's log lines go: `log` frames once the peer asked for them,
/// `tracing` otherwise.
#[derive(Debug, Clone)]
pub(crate) struct LogSink {
    frames: Option<mpsc::Sender<Message>>,
    /// Set once the peer's `hello` listed the `log` extension.
    enabled: Arc<AtomicBool>,
    /// Lines that went to `tracing` only because the queue was full.
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    pub(crate) fn new(frames: mpsc::Sender<Message>, enabled: Arc<AtomicBool>) -> Self {
        LogSink {
            frames: Some(frames),
            enabled,
            dropped: Arc::default(),
        }
    }

    fn tracing_only() -> Self {
        LogSink {
            frames: None,
            enabled: Arc::default(),
            dropped: Arc::default(),
        }
    }

    /// The frame sender, when log frames are on for this connection.
    fn target(&self) -> Option<&mpsc::Sender<Message>> {
        self.frames
            .as_ref()
            .filter(|_| self.enabled.load(Ordering::Acquire))
    }

    fn to_tracing(job_id: &str, request_id: &str, stream: LogStream, line: &str) {
        match stream {
            LogStream::Stdout => tracing::info!(job_id, request_id, stream = "stdout", "{line}"),
            LogStream::Stderr => tracing::info!(job_id, request_id, stream = "stderr", "{line}"),
        }
    }

    fn frame(job_id: &str, request_id: &str, stream: LogStream, line: String) -> Message {
        Message::Log(LogLine {
            job_id: job_id.to_owned(),
            request_id: request_id.to_owned(),
            stream,
            line,
        })
    }

    fn send_now(&self, job_id: &str, request_id: &str, stream: LogStream, line: String) {
        let Some(tx) = self.target() else {
            return Self::to_tracing(job_id, request_id, stream, &line);
        };
        if let Err(err) = tx.try_send(Self::frame(job_id, request_id, stream, line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Message::Log(l) = err.into_inner() {
                Self::to_tracing(job_id, request_id, stream, &l.line);
            }
        }
    }

    async fn send_async(&self, job_id: &str, request_id: &str, stream: LogStream, line: String) {
        let Some(tx) = self.target() else {
            return Self::to_tracing(job_id, request_id, stream, &line);
        };
        // A closed channel means the connection is gone: nobody to tell.
        let _ = tx.send(Self::frame(job_id, request_id, stream, line)).await;
    }

    fn send_blocking(&self, job_id: &str, request_id: &str, stream: LogStream, line: String) {
        let Some(tx) = self.target() else {
            return Self::to_tracing(job_id, request_id, stream, &line);
        };
        let _ = tx.blocking_send(Self::frame(job_id, request_id, stream, line));
    }
}
