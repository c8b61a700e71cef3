//! Serving one connection: a reader loop that decodes frames and spawns one task per
//! request, and a writer task that owns the write half.
//!
//! ```text
//!  peer ──frames──> reader loop ──spawn──> request task ──┐
//!                      │  cancel/hello                    │ response, log lines
//!                      └──────> outgoing queue (bounded) <┘──> writer task ──> peer
//! ```
//!
//! Invariants:
//! - a request holds an in-flight slot from the moment it is accepted until just before
//!   its response is queued, so a peer that counts responses never sees `runner_busy`
//!   from a slot it believes free;
//! - every accepted request gets exactly one response (unless the connection is gone);
//! - when the connection ends (EOF, malformed frame, failed auth), every request still in
//!   flight is hard-cancelled: its handler's future is dropped.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use hero_protocol::{
    CancelRequest, ExecutionOutcome, ExecutionRequest, FrameCodec, FrameError, Hello, Message,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{Handler, HandlerContext, LogSink};
use crate::shared::Shared;

/// How long a closing connection waits for cancelled requests to answer and for the
/// writer to flush before it gives up on them.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Outgoing frames the writer batches before one flush.
const WRITE_BATCH: usize = 64;

pub(crate) struct ConnectionOptions {
    /// The connection must open with a `hello` carrying the configured token.
    pub(crate) require_auth: bool,
    /// Starts a graceful end: refuse new requests, let in-flight ones finish.
    pub(crate) shutdown: CancellationToken,
}

/// One accepted request, as seen by the reader loop.
struct InFlight {
    job_id: String,
    /// The handler's token: fired by a graceful cancel, a deadline, or the end.
    cancel: CancellationToken,
    /// Fired by a hard kill: the request task drops the handler's future at once.
    hard: CancellationToken,
}

/// A std mutex, not a tokio one: nothing awaits while it is held.
type InFlightMap = Arc<Mutex<HashMap<String, InFlight>>>;

fn lock(map: &InFlightMap) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Connection {
    runner: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    in_flight: InFlightMap,
    tasks: TaskTracker,
    log_enabled: Arc<AtomicBool>,
    authenticated: bool,
    draining: bool,
}

pub(crate) async fn serve<R, W>(
    runner: Arc<Shared>,
    reader: R,
    writer: W,
    options: ConnectionOptions,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_frame_len = runner.config.max_frame_len;
    let (tx, rx) = mpsc::channel(runner.config.outgoing_queue.max(1));
    let mut writer_task = tokio::spawn(write_loop(
        FramedWrite::new(writer, FrameCodec::with_max_frame_len(max_frame_len)),
        rx,
    ));
    let mut frames = FramedRead::new(reader, FrameCodec::with_max_frame_len(max_frame_len));
    let shutdown_grace = runner.config.shutdown_grace;
    let mut conn = Connection {
        runner,
        tx,
        in_flight: InFlightMap::default(),
        tasks: TaskTracker::new(),
        log_enabled: Arc::default(),
        authenticated: !options.require_auth,
        draining: false,
    };
    // Far enough to never fire; replaced when draining starts.
    let mut drain_deadline = Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let frame = tokio::select! {
            // Shutdown first: a request that arrives after it is refused.
            biased;
            _ = options.shutdown.cancelled(), if !conn.draining => {
                tracing::debug!(in_flight = lock(&conn.in_flight).len(), "shutdown: draining the connection");
                conn.draining = true;
                conn.tasks.close();
                drain_deadline = Instant::now() + shutdown_grace;
                continue;
            }
            frame = frames.next() => frame,
            _ = conn.tasks.wait(), if conn.draining => break,
            _ = tokio::time::sleep_until(drain_deadline), if conn.draining => {
                tracing::warn!("shutdown grace elapsed: cancelling the requests still running");
                break;
            }
        };
        match frame {
            None => {
                tracing::debug!("peer closed the connection");
                break;
            }
            Some(Err(err)) => {
                log_frame_error(&err);
                break;
            }
            Some(Ok(message)) => {
                if !conn.on_message(message).await {
                    break;
                }
            }
        }
    }
    conn.close(&mut writer_task).await;
}

fn log_frame_error(err: &FrameError) {
    match err {
        FrameError::Io(io) => {
            tracing::warn!(error = %io, "reading the connection failed; closing it")
        }
        other => tracing::warn!(error = %other, "malformed frame; closing the connection"),
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Connection {
    /// Handles one decoded frame; `false` closes the connection.
    async fn on_message(&mut self, message: Message) -> bool {
        if !self.authenticated {
            let Message::Hello(hello) = &message else {
                tracing::warn!(
                    frame = message.type_name(),
                    "connection did not open with an authenticating hello; closing it"
                );
                return false;
            };
            let expected = self.runner.config.auth_token.as_deref().unwrap_or_default();
            let given = hello.auth_token.as_deref().unwrap_or_default();
            if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                tracing::warn!(peer = %hello.name, "hello with a wrong auth token; closing the connection");
                return false;
            }
            self.authenticated = true;
        }
        match message {
            Message::Request(request) => {
                if let Some(answer) = self.on_request(request) {
                    return self.send(Message::Response(answer)).await;
                }
                true
            }
            Message::Cancel(cancel) => {
                self.on_cancel(&cancel);
                true
            }
            Message::Hello(hello) => self.on_hello(&hello).await,
            other @ (Message::Response(_) | Message::Log(_)) => {
                tracing::debug!(
                    frame = other.type_name(),
                    "ignoring a frame a runner does not expect"
                );
                true
            }
        }
    }

    async fn send(&self, message: Message) -> bool {
        self.tx.send(message).await.is_ok()
    }

    async fn on_hello(&mut self, hello: &Hello) -> bool {
        tracing::debug!(peer = %hello.name, extensions = ?hello.extensions, "hello");
        self.log_enabled
            .store(hello.accepts("log"), Ordering::Release);
        self.send(Message::Hello(self.runner.hello())).await
    }

    /// Accepts `request` (spawning its task), or returns the answer to send at once.
    fn on_request(&mut self, request: ExecutionRequest) -> Option<ExecutionOutcome> {
        let (job, id) = (request.job_id.as_str(), request.request_id.as_str());
        if self.draining {
            let error = hero_protocol::ExecutionError::typed(
                hero_protocol::error_type::RUNNER_BUSY,
                "runner busy: shutting down",
            );
            return Some(ExecutionOutcome::failed(job, id, error));
        }
        let Some(handler) = self.runner.handler(&request.function_name) else {
            let message = format!("no handler for function `{}`", request.function_name);
            return Some(ExecutionOutcome::handler_not_found(job, id, message));
        };
        let deadline = match request.context.deadline {
            None => None,
            Some(at) => match (at - chrono::Utc::now()).to_std() {
                Ok(left) => Some(Instant::now() + left),
                Err(_) => {
                    return Some(ExecutionOutcome::timeout(
                        job,
                        id,
                        "deadline passed before the request started",
                    ));
                }
            },
        };
        let cancel = CancellationToken::new();
        let hard = CancellationToken::new();
        {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.contains_key(id) {
                let message = format!("request_id `{id}` is already in flight");
                return Some(ExecutionOutcome::failed(
                    job,
                    id,
                    hero_protocol::ExecutionError::typed(
                        hero_protocol::error_type::INVALID_REQUEST,
                        message,
                    ),
                ));
            }
            let max = self.runner.config.max_in_flight;
            if in_flight.len() >= max {
                return Some(ExecutionOutcome::runner_busy(job, id, max));
            }
            in_flight.insert(
                id.to_owned(),
                InFlight {
                    job_id: job.to_owned(),
                    cancel: cancel.clone(),
                    hard: hard.clone(),
                },
            );
        }
        let ctx = HandlerContext::new(
            &request,
            cancel.clone(),
            LogSink::new(self.tx.clone(), self.log_enabled.clone()),
        );
        let task = RequestTask {
            job_id: request.job_id.clone(),
            request_id: request.request_id.clone(),
            cancel,
            hard,
            deadline,
            cancel_grace: self.runner.config.cancel_grace,
        };
        let (in_flight, tx) = (self.in_flight.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            let (job_id, request_id) = (task.job_id.clone(), task.request_id.clone());
            let outcome = task.run(handler, request, ctx).await;
            lock(&in_flight).remove(&request_id);
            tracing::debug!(%job_id, %request_id, status = outcome.status.as_str(), "request done");
            // A closed queue means the connection is gone: nobody to answer.
            let _ = tx.send(Message::Response(outcome)).await;
        });
        None
    }

    fn on_cancel(&self, cancel: &CancelRequest) {
        let in_flight = lock(&self.in_flight);
        let mut matched = 0usize;
        let targets = in_flight.iter().filter(|(id, f)| {
            f.job_id == cancel.job_id && cancel.request_id.as_ref().is_none_or(|want| want == *id)
        });
        for (_, f) in targets {
            matched += 1;
            f.cancel.cancel();
            if cancel.hard_kill {
                f.hard.cancel();
            }
        }
        tracing::debug!(
            job_id = %cancel.job_id,
            request_id = ?cancel.request_id,
            hard_kill = cancel.hard_kill,
            matched,
            "cancel"
        );
    }

    /// Hard-cancels what is still running, lets the answers out, closes the writer.
    async fn close(self, writer_task: &mut tokio::task::JoinHandle<()>) {
        for f in lock(&self.in_flight).values() {
            f.cancel.cancel();
            f.hard.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests did not end after a hard cancel");
        }
        // Handlers on blocking threads may still hold a log sender; the writer ends when
        // every sender is gone, or after the timeout.
        drop(self.tx);
        if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut *writer_task)
            .await
            .is_err()
        {
            writer_task.abort();
        }
    }
}

/// One request's run: the handler raced against cancellation and the deadline.
struct RequestTask {
    job_id: String,
    request_id: String,
    cancel: CancellationToken,
    hard: CancellationToken,
    deadline: Option<Instant>,
    cancel_grace: Duration,
}

enum End {
    Done(Result<crate::HandlerResult, String>),
    Cancelled,
    Timeout,
}

impl RequestTask {
    async fn run(
        self,
        handler: Arc<dyn Handler>,
        request: ExecutionRequest,
        ctx: HandlerContext,
    ) -> ExecutionOutcome {
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request, ctx)))
        {
            Ok(future) => AssertUnwindSafe(future).catch_unwind(),
            Err(panic) => return self.outcome(End::Done(Err(panic_message(&*panic)))),
        };
        let end = {
            let mut future = std::pin::pin!(future);
            let deadline = async {
                match self.deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let end = tokio::select! {
                biased;
                _ = self.hard.cancelled() => End::Cancelled,
                result = &mut future => End::Done(result.map_err(|p| panic_message(&*p))),
                _ = deadline => End::Timeout,
                _ = self.cancel.cancelled() => {
                    // Graceful: the handler saw the token; give it a moment to wind down.
                    tokio::select! {
                        biased;
                        _ = self.hard.cancelled() => {}
                        _ = &mut future => {}
                        _ = tokio::time::sleep(self.cancel_grace) => {
                            tracing::warn!(job_id = %self.job_id, request_id = %self.request_id,
                                "handler ignored its cancellation; dropping it");
                        }
                    }
                    End::Cancelled
                }
            };
            // A request cancelled before its handler returned is answered `cancelled`, even
            // when the handler wound down with a value of its own.
            let end = match end {
                End::Done(_) if self.cancel.is_cancelled() => End::Cancelled,
                end => end,
            };
            // Whatever ended the request, the handler's work stops now: the token reaches code
            // on blocking threads, and the future (with what it owns) is dropped at the end of
            // this block.
            self.cancel.cancel();
            end
        };
        self.outcome(end)
    }

    fn outcome(&self, end: End) -> ExecutionOutcome {
        let (job, id) = (self.job_id.as_str(), self.request_id.as_str());
        match end {
            End::Done(Ok(Ok(value))) => ExecutionOutcome::success(job, id, value),
            End::Done(Ok(Err(err))) => err.into_outcome(job, id),
            End::Done(Err(panic)) => {
                tracing::error!(job_id = job, request_id = id, panic = %panic, "handler panicked");
                ExecutionOutcome::failed(
                    job,
                    id,
                    hero_protocol::ExecutionError::typed(
                        hero_protocol::error_type::PANIC,
                        format!("handler panicked: {panic}"),
                    ),
                )
            }
            End::Cancelled => ExecutionOutcome::cancelled(job, id, "request cancelled"),
            End::Timeout => ExecutionOutcome::timeout(job, id, "deadline exceeded"),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Drains the outgoing queue into the sink, flushing once per batch.
async fn write_loop<W>(mut sink: FramedWrite<W, FrameCodec>, mut rx: mpsc::Receiver<Message>)
where
    W: AsyncWrite + Unpin,
{
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(message) = next.take() {
            if !feed(&mut sink, message).await {
                return;
            }
            batched += 1;
            if batched < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(err) = SinkExt::<Message>::flush(&mut sink).await {
            tracing::warn!(error = %err, "writing to the connection failed");
            return;
        }
    }
    let _ = SinkExt::<Message>::close(&mut sink).await;
}

/// Queues one frame in the sink; `false` when the connection is unusable. A response too
/// large for a frame is replaced by an `error` saying so, so the request still ends.
async fn feed<W>(sink: &mut FramedWrite<W, FrameCodec>, message: Message) -> bool
where
    W: AsyncWrite + Unpin,
{
    let ids = match &message {
        Message::Response(o) => Some((
            o.job_id.clone().unwrap_or_default(),
            o.request_id.clone().unwrap_or_default(),
        )),
        _ => None,
    };
    match sink.feed(message).await {
        Ok(()) => true,
        Err(FrameError::TooLarge { len, max }) => {
            tracing::warn!(len, max, "outgoing frame too large; dropped");
            let Some((job, id)) = ids else { return true };
            let answer = ExecutionOutcome::error(
                job,
                id,
                format!("response of {len} bytes exceeds the frame limit of {max} bytes"),
            );
            sink.feed(Message::Response(answer)).await.is_ok()
        }
        Err(err) => {
            tracing::warn!(error = %err, "writing to the connection failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        for (a, b, equal) in [
            ("", "", true),
            ("tok", "tok", true),
            ("tok", "tok ", false),
            ("tok", "toK", false),
            ("", "x", false),
        ] {
            assert_eq!(
                constant_time_eq(a.as_bytes(), b.as_bytes()),
                equal,
                "{a:?} {b:?}"
            );
        }
    }
}
