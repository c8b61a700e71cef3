//! A job's event stream: the log lines from a cursor, then every change, until the
//! job ends. One implementation for the two ways out: the JSON-RPC subscription
//! `subscribe_job_events` (`rpc/server.rs`) and the REST face's plain WebSocket
//! `GET /v1/jobs/{id}/events/ws` (`rpc/rest.rs`). Neither checks access here: both
//! do it before they stream, through the served methods' own check.

use jsonrpsee::core::to_json_raw_value;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::sync::broadcast::{self, error::RecvError};

use super::error::{internal, to_rpc_error};
use super::types::JobEvent;
use crate::job::{JobId, JobStatus};
use crate::service::Supervisor;
use crate::store::StoreEvent;

/// Log lines a stream reads from the store at once: a long backlog goes out in
/// batches, each read bounded.
const EVENT_LOG_BATCH: usize = 1_000;

/// Where a job's events go.
pub(crate) trait EventSink {
    /// Sends `event`; `false` when the receiver is gone.
    async fn send(&mut self, event: &JobEvent) -> bool;
    /// Resolves once the receiver is gone.
    async fn closed(&self);
}

impl EventSink for jsonrpsee::server::SubscriptionSink {
    async fn send(&mut self, event: &JobEvent) -> bool {
        match to_json_raw_value(event) {
            Ok(msg) => jsonrpsee::server::SubscriptionSink::send(self, msg)
                .await
                .is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "job event does not serialize");
                false
            }
        }
    }

    async fn closed(&self) {
        jsonrpsee::server::SubscriptionSink::closed(self).await;
    }
}

/// Streams job `id`'s events to `sink` from log line `cursor` on. Returns the terminal
/// status, or `None` when the receiver went away first.
///
/// `events` must be subscribed *before* the caller checked the job (see `store` docs),
/// so nothing that happens after the check is missed. Reads the logs before the
/// status, so every line logged before the terminal status is sent before it. Lines
/// from the cursor that the log cap dropped are announced by one
/// [`JobEvent::CursorExpired`], then the stream goes on from the oldest line kept.
pub(crate) async fn stream_job_events<S: EventSink>(
    supervisor: &Supervisor,
    id: JobId,
    sink: &mut S,
    mut events: broadcast::Receiver<StoreEvent>,
    cursor: u64,
) -> Result<Option<JobStatus>, ErrorObjectOwned> {
    let mut next_line = cursor;
    let mut last_status: Option<JobStatus> = None;
    loop {
        // Only the lines not sent yet, by their sequence numbers: a capped log that
        // drops its oldest lines moves nothing under the cursor.
        let (first, lines) = supervisor
            .store()
            .logs_from(id, next_line, EVENT_LOG_BATCH)
            .await
            .map_err(|e| to_rpc_error(e.into()))?;
        let more = lines.len() >= EVENT_LOG_BATCH;
        let status = supervisor.get_job_status(id).await.map_err(to_rpc_error)?;
        if first > next_line {
            // The lines from the cursor on were dropped by the cap: say so, then
            // go on from the oldest one kept.
            let event = JobEvent::CursorExpired {
                job_id: id,
                requested: next_line,
                resumed_at: first,
            };
            if !sink.send(&event).await {
                return Ok(None);
            }
        }
        for (index, line) in (first..).zip(lines) {
            let event = JobEvent::Log {
                job_id: id,
                index,
                line,
            };
            if !sink.send(&event).await {
                return Ok(None);
            }
            next_line = index.saturating_add(1);
        }
        if more {
            // A long backlog: send it in batches before anything else.
            continue;
        }
        if last_status != Some(status) {
            let event = JobEvent::Status {
                job_id: id,
                status,
                cursor: next_line,
            };
            if !sink.send(&event).await {
                return Ok(None);
            }
            last_status = Some(status);
        }
        if status.is_terminal() {
            return Ok(Some(status));
        }
        // Wait for a change of this job (or a lag, after which we re-read anyway).
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(StoreEvent::JobChanged { id: changed, .. }
                        | StoreEvent::LogAppended { id: changed }
                        | StoreEvent::JobDeleted { id: changed }) if changed == id => break,
                    Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => break,
                    Ok(_) => continue,
                    Err(RecvError::Closed) => return Err(internal("supervisor shutting down")),
                },
                () = sink.closed() => return Ok(None),
            }
        }
    }
}
