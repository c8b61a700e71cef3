//! The supervisor's end of one runner connection: multiplexed requests matched by
//! `request_id`, log frames forwarded to the store, and a typed "runner lost" for every
//! request still in flight when the connection dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hero_protocol::{
    CancelRequest, ExecutionOutcome, ExecutionRequest, FrameCodec, Hello, LogLine, Message,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Frames queued for the writer task of one connection. Bounded so that a runner that
/// stops reading applies back-pressure instead of growing memory.
const OUTGOING_QUEUE: usize = 1024;

/// Log lines queued between a connection's reader and the store. Bounded: a runner that
/// logs faster than the store writes is slowed down, not buffered without limit.
pub(crate) const LOG_QUEUE: usize = 4096;

/// Frames the writer takes from its queue before one flush.
const WRITE_BATCH: usize = 64;

/// Why a request got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    /// The connection died (EOF, malformed frame, runner killed) before the answer came.
    #[error("runner lost: {0}")]
    Lost(String),
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    /// Open with `hello` (the runner speaks the extensions).
    pub(crate) hello: bool,
    /// How long the runner has to answer our `hello`.
    pub(crate) hello_timeout: Duration,
    /// Token sent in our `hello`, for runners that require one.
    pub(crate) auth_token: Option<String>,
    /// Largest frame either way.
    pub(crate) max_frame_len: usize,
    /// Requests in flight at most, before the runner's own `hello` lowers it.
    pub(crate) max_in_flight: usize,
}

struct Pending {
    job_id: String,
    reply: oneshot::Sender<ExecutionOutcome>,
}

type PendingMap = Arc<Mutex<HashMap<String, Pending>>>;

/// One live connection to a runner. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct RunnerConnection {
    outgoing: mpsc::Sender<Message>,
    // A std Mutex: nothing awaits while it is held.
    pending: PendingMapDebug,
    closed: CancellationToken,
    max_in_flight: usize,
    /// The runner answered our `hello`: it speaks the extensions (`log` frames).
    extensions: bool,
    /// One permit per request slot: the dispatcher reserves one before claiming a job
    /// for this connection, so the runner is never sent more than it accepts.
    slots: Arc<Semaphore>,
    reason: Arc<Mutex<Option<String>>>,
}

/// `PendingMap` with a Debug that shows only its size.
struct PendingMapDebug(PendingMap);

impl std::fmt::Debug for PendingMapDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "{n} pending")
    }
}

impl RunnerConnection {
    /// Starts the reader and writer tasks over `reader`/`writer`, after the `hello`
    /// exchange when `options.hello`. Log lines go to `logs`. An error is always the
    /// `hello` exchange failing: the runner closed, answered another frame, or nothing.
    pub(crate) async fn open<R, W>(
        reader: R,
        writer: W,
        options: &ConnectionOptions,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<RunnerConnection, String>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let codec = || FrameCodec::with_max_frame_len(options.max_frame_len);
        let mut read = FramedRead::new(reader, codec());
        let mut write = FramedWrite::new(writer, codec());
        let mut max_in_flight = options.max_in_flight.max(1);
        if options.hello {
            let hello = Hello {
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                extensions: vec!["log".to_owned()],
                auth_token: options.auth_token.clone(),
                ..Hello::new("hero-supervisor")
            };
            write
                .send(Message::Hello(hello))
                .await
                .map_err(|e| format!("sending hello: {e}"))?;
            match tokio::time::timeout(options.hello_timeout, read.next()).await {
                Ok(Some(Ok(Message::Hello(theirs)))) => {
                    if let Some(n) = theirs.max_in_flight {
                        max_in_flight = max_in_flight.min((n as usize).max(1));
                    }
                    tracing::debug!(runner = %theirs.name, max_in_flight, "runner said hello");
                }
                Ok(Some(Ok(other))) => {
                    return Err(format!("expected hello, got `{}`", other.type_name()));
                }
                Ok(Some(Err(e))) => return Err(format!("reading hello: {e}")),
                Ok(None) => return Err("runner closed the connection during hello".to_owned()),
                Err(_) => return Err(format!("no hello within {:?}", options.hello_timeout)),
            }
        }

        let (tx, mut rx) = mpsc::channel::<Message>(OUTGOING_QUEUE);
        let pending: PendingMap = Arc::default();
        let closed = CancellationToken::new();
        let reason: Arc<Mutex<Option<String>>> = Arc::default();

        let close = {
            let closed = closed.clone();
            let reason = reason.clone();
            move |why: String| {
                if let Ok(mut r) = reason.lock() {
                    r.get_or_insert(why);
                }
                closed.cancel();
            }
        };

        // Writer: the only owner of the write half.
        {
            let close = close.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(WRITE_BATCH);
                loop {
                    let n = tokio::select! {
                        _ = closed.cancelled() => break,
                        n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
                    };
                    if n == 0 {
                        break;
                    }
                    // Every frame queued meanwhile goes out with one flush (one write
                    // when they fit the buffer), not a syscall per frame.
                    if let Err(e) = write_batch(&mut write, &mut batch).await {
                        close(format!("write failed: {e}"));
                        break;
                    }
                }
            });
        }

        // Reader: answers go to their waiting callers, log lines to the store.
        {
            let pending = pending.clone();
            let closed = closed.clone();
            tokio::spawn(async move {
                let why = loop {
                    let frame = tokio::select! {
                        _ = closed.cancelled() => break "closed".to_owned(),
                        frame = read.next() => frame,
                    };
                    match frame {
                        None => break "runner closed the connection".to_owned(),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "runner sent a bad frame; dropping the connection");
                            break e.to_string();
                        }
                        Some(Ok(Message::Response(outcome))) => {
                            if let Err(why) = deliver(&pending, outcome) {
                                tracing::warn!(%why, "runner broke the protocol; dropping the connection");
                                break why;
                            }
                        }
                        Some(Ok(Message::Log(line))) => {
                            // Back-pressure: a chatty runner waits for the store.
                            if logs.send(line).await.is_err() {
                                break "log sink closed".to_owned();
                            }
                        }
                        Some(Ok(Message::Hello(_))) => {}
                        Some(Ok(other)) => {
                            let why = format!(
                                "runner sent `{}`, which only a supervisor sends",
                                other.type_name()
                            );
                            tracing::warn!(%why, "dropping the connection");
                            break why;
                        }
                    }
                };
                close(why);
                // Every caller still waiting learns the runner is lost.
                if let Ok(mut map) = pending.lock() {
                    map.clear();
                }
            });
        }

        Ok(RunnerConnection {
            outgoing: tx,
            pending: PendingMapDebug(pending),
            closed,
            max_in_flight,
            extensions: options.hello,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            reason,
        })
    }

    /// Sends `request` and waits for its outcome.
    pub(crate) async fn call(
        &self,
        request: ExecutionRequest,
    ) -> Result<ExecutionOutcome, CallError> {
        let (reply, answer) = oneshot::channel();
        let request_id = request.request_id.clone();
        {
            let mut map = self.pending.0.lock().map_err(|_| self.lost())?;
            if self.closed.is_cancelled() {
                return Err(self.lost());
            }
            map.insert(
                request_id.clone(),
                Pending {
                    job_id: request.job_id.clone(),
                    reply,
                },
            );
        }
        if self.outgoing.send(Message::Request(request)).await.is_err() {
            self.forget(&request_id);
            return Err(self.lost());
        }
        answer.await.map_err(|_| self.lost())
    }

    /// Sends a cancel frame; best effort (a dead connection has nothing to cancel).
    pub(crate) async fn cancel(&self, cancel: CancelRequest) {
        let _ = self.outgoing.send(Message::Cancel(cancel)).await;
    }

    /// Stops waiting for `request_id`'s answer.
    pub(crate) fn forget(&self, request_id: &str) {
        if let Ok(mut map) = self.pending.0.lock() {
            map.remove(request_id);
        }
    }

    /// Resolves when the connection is dead.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Whether the connection is dead.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Closes the connection: the tasks stop, waiting callers get [`CallError::Lost`].
    pub(crate) fn close(&self, why: &str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| why.to_owned());
        }
        self.closed.cancel();
    }

    /// Requests this connection carries at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Whether the runner answered our `hello` (it speaks the extensions).
    pub(crate) fn extensions(&self) -> bool {
        self.extensions
    }

    /// Reserves a request slot, if one is free.
    pub(crate) fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Request slots not reserved.
    pub(crate) fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Requests waiting for an answer.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    fn lost(&self) -> CallError {
        let why = self
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "connection closed".to_owned());
        CallError::Lost(why)
    }
}

/// Feeds `batch` (emptied) into `write`, then flushes once.
async fn write_batch<W>(
    write: &mut FramedWrite<W, FrameCodec>,
    batch: &mut Vec<Message>,
) -> Result<(), hero_protocol::FrameError>
where
    W: AsyncWrite + Unpin,
{
    for msg in batch.drain(..) {
        write.feed(msg).await?;
    }
    SinkExt::<Message>::flush(write).await
}

/// Hands `outcome` to the caller waiting for its `request_id`. An outcome whose
/// `job_id` disagrees with its request is a protocol violation; one for an unknown
/// request (answered after we gave up on it) is dropped.
fn deliver(pending: &PendingMap, outcome: ExecutionOutcome) -> Result<(), String> {
    let Some(request_id) = outcome.request_id.clone() else {
        return Err("response without request_id".to_owned());
    };
    let mut map = pending
        .lock()
        .map_err(|_| "pending map poisoned".to_owned())?;
    let Some(waiting) = map.remove(&request_id) else {
        tracing::debug!(%request_id, "answer for a request no longer waited for");
        return Ok(());
    };
    if let Some(job_id) = &outcome.job_id
        && *job_id != waiting.job_id
    {
        return Err(format!(
            "response for request {request_id} names job {job_id}, not {}",
            waiting.job_id
        ));
    }
    let _ = waiting.reply.send(outcome);
    Ok(())
}
