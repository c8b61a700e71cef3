//! One attempt: register the running job, send the request with its deadline, wait for
//! the answer, the deadline, a stop or a release; escalate the cancel (soft, hard, then
//! restart the runner); then decide the outcome and hand it to the recorder.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hero_protocol::{CancelRequest, ExecutionContext, ExecutionRequest};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::outcome::{self, RetryPolicy, Verdict};
use super::{Dispatcher, Running};
use crate::job::Job;
use crate::pool::{CallError, RequestSlot, RunnerConnection};
use crate::trace::{OTEL_TARGET, TraceParent};
use tracing::Instrument;

impl Dispatcher {
    /// Runs one attempt of claimed `job`, taken from ready queue `queue`.
    pub(super) async fn run_attempt(
        self: Arc<Self>,
        owner: Arc<str>,
        job: Job,
        queue: String,
        slot: RequestSlot,
    ) {
        let id = job.id;
        let stop = CancellationToken::new();
        let release = CancellationToken::new();
        if let Ok(mut map) = self.running.lock() {
            map.insert(
                id,
                Running {
                    owner,
                    stop: stop.clone(),
                    release: release.clone(),
                },
            );
        }
        // A stop that raced the claim: honour it now.
        if job.cancel_requested {
            stop.cancel();
        }
        // A job stored before `queued_at` existed has only its creation time.
        let waited = (self.config.clock.now() - job.queued_at.unwrap_or(job.created_at))
            .to_std()
            .unwrap_or_default();
        self.metrics.attempt_started(job.script_type, waited);
        // The attempt's span (for OTLP export; never built otherwise), in the trace of
        // the job: a child of the span it was created in.
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "dispatch.attempt",
            job.id = %id,
            job.attempt = job.attempt,
            job.script_type = job.script_type.as_str(),
        );
        if let Some(parent) = job.traceparent.as_deref().and_then(TraceParent::parse) {
            crate::trace::set_parent(&span, &parent);
        }
        let began = std::time::Instant::now();
        let verdict = self
            .execute(&slot.conn, &job, queue, &stop, &release)
            .instrument(span)
            .await;
        self.metrics.attempt_ended(job.script_type, began.elapsed());
        // The request slot is free again before the store hears of it.
        drop(slot);
        if let Some(pause) = outcome::pause_before_writing(&verdict) {
            tokio::time::sleep(pause).await;
        }
        let now = self.config.clock.now();
        let policy = RetryPolicy {
            backoff_base: self.config.backoff_base,
            backoff_max: self.config.backoff_max,
        };
        let completion = outcome::decide(&job, verdict, now, outcome::jitter_of(now), policy);
        // Not running here any more: nothing left to stop, renew or hand back at
        // shutdown, and a renewal that finds the lease gone once the completion is
        // written knows it is not a lost lease (`renew_loop`).
        if let Ok(mut map) = self.running.lock() {
            map.remove(&id);
        }
        self.submit(completion, job.script_type).await;
    }

    /// Runs one attempt; says what happened.
    async fn execute(
        &self,
        conn: &Arc<RunnerConnection>,
        job: &Job,
        queue_name: String,
        stop: &CancellationToken,
        release: &CancellationToken,
    ) -> Verdict {
        let request_id = uuid::Uuid::new_v4().to_string();
        let timeout = Duration::from_secs(job.timeout_secs.max(1));
        let deadline = crate::store::deadline(self.config.clock.now(), timeout);
        // The request's span; the runner is told its traceparent, so the runner's spans
        // are its children. Without export, the job's own traceparent.
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "runner.request",
            otel.kind = "client",
            runner.request_id = %request_id,
        );
        let traceparent = crate::trace::of_span(&span)
            .map(|t| t.to_string())
            .or_else(|| job.traceparent.clone());
        let request = build_request(
            job,
            &request_id,
            &self.config.instance_id,
            queue_name,
            deadline,
            traceparent,
        );
        let call = conn.call(request).instrument(span);
        tokio::pin!(call);
        let why = tokio::select! {
            outcome = &mut call => return match outcome {
                Ok(o) => Verdict::Outcome(o),
                Err(CallError::Lost(why)) => Verdict::Lost(why),
            },
            _ = tokio::time::sleep(timeout) => Interrupt::Deadline,
            _ = stop.cancelled() => Interrupt::Stop,
            _ = release.cancelled() => Interrupt::Release,
        };
        // Ask the runner to stop; give it the grace period to answer, then hard-kill.
        let job_id = job.id.to_string();
        conn.cancel(CancelRequest::request(&job_id, &request_id))
            .await;
        let answered = tokio::time::timeout(self.config.cancel_grace, &mut call).await;
        if answered.is_err() {
            conn.cancel(CancelRequest::request(&job_id, &request_id).hard())
                .await;
            let hard = tokio::time::timeout(Duration::from_secs(1), &mut call).await;
            if hard.is_err() {
                tracing::warn!(job = %job.id, "request ignored its hard cancel; restarting the runner");
                conn.forget(&request_id);
                // Its slot sees the connection close, kills the runner, starts another.
                conn.close("runner restarted: a request did not stop after its cancel");
            }
        }
        match why {
            Interrupt::Deadline => Verdict::Timeout(timeout),
            Interrupt::Stop => Verdict::Stopped,
            Interrupt::Release => Verdict::Release,
        }
    }
}

enum Interrupt {
    Deadline,
    Stop,
    Release,
}

fn build_request(
    job: &Job,
    request_id: &str,
    worker_id: &str,
    queue_name: String,
    deadline: chrono::DateTime<Utc>,
    traceparent: Option<String>,
) -> ExecutionRequest {
    let mut kwargs = Map::new();
    kwargs.insert("env".to_owned(), json!(job.env_vars));
    kwargs.insert("caller_id".to_owned(), json!(job.caller_id));
    kwargs.insert("context_id".to_owned(), json!(job.context_id));
    let job_id = job.id.to_string();
    ExecutionRequest {
        protocol_version: hero_protocol::PROTOCOL_VERSION.to_owned(),
        request_id: request_id.to_owned(),
        job_id: job_id.clone(),
        function_name: job.script_type.as_str().to_owned(),
        args: vec![Value::String(job.script.clone())],
        kwargs,
        context: ExecutionContext {
            job_id,
            attempt: job.attempt,
            // A job stored before `queued_at` existed has only its creation time.
            enqueue_time: job.queued_at.unwrap_or(job.created_at),
            queue_name,
            deadline: Some(deadline),
            trace_context: traceparent
                .map(|t| std::collections::BTreeMap::from([("traceparent".to_owned(), t)])),
            worker_id: Some(worker_id.to_owned()),
        },
    }
}
