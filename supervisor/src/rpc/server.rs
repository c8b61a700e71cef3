//! The API implemented on the [`Supervisor`] facade: each method parses its wire params,
//! calls the facade, and maps the result and errors onto the wire.

use std::sync::Arc;

use jsonrpsee::Extensions;
use jsonrpsee::core::{
    RpcResult, SubscriptionError, SubscriptionResult, async_trait, to_json_raw_value,
};
use jsonrpsee::server::PendingSubscriptionSink;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::api::HeroApiServer;
use super::auth::{NonceStore, Session, authenticate_session};
use super::error::{internal, parse_job_id, to_rpc_error};
use super::types::{
    ANONYMOUS, JobEvent, JobInfo, JobLogsResult, JobParams, PlayResult, RunnerInfo, StartJobResult,
    parse_job_ids, parse_script_type,
};
use crate::job::{JobId, JobStatus, ScriptType};
use crate::service::Supervisor;
use crate::store::StoreEvent;
use crate::trace::TraceParent;

/// State shared by every call.
#[derive(Debug, Clone)]
pub(crate) struct RpcHandler {
    pub(crate) supervisor: Supervisor,
    pub(crate) nonces: Arc<NonceStore>,
    pub(crate) openrpc: Arc<Value>,
}

/// The connection's authenticated key, if any.
fn identity(ext: &Extensions) -> Option<String> {
    ext.get::<Session>().and_then(Session::identity)
}

/// The domain params of a job submitted on this connection: its caller is the
/// connection's key when authenticated, its trace the request's `traceparent` header.
fn submitted(params: JobParams, ext: &Extensions) -> RpcResult<crate::job::JobParams> {
    let mut params = params.into_domain(identity(ext))?;
    params.traceparent = ext.get::<TraceParent>().map(TraceParent::to_string);
    Ok(params)
}

impl RpcHandler {
    async fn run(&self, params: crate::job::JobParams) -> RpcResult<String> {
        self.supervisor
            .run_job_and_await_result(params)
            .await
            .map_err(to_rpc_error)
    }

    /// Sends `event`; `false` when the subscriber is gone.
    async fn send(sink: &jsonrpsee::server::SubscriptionSink, event: &JobEvent) -> bool {
        match to_json_raw_value(event) {
            Ok(msg) => sink.send(msg).await.is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "job event does not serialize");
                false
            }
        }
    }

    /// Streams job `id`'s events to the accepted subscription. Returns the terminal
    /// status, or `None` when the subscriber went away first.
    ///
    /// Subscribes to the store's events *before* reading the state (see `store` docs), and
    /// reads the logs before the status, so every line logged before the terminal status
    /// is sent before it.
    async fn stream_events(
        &self,
        id: JobId,
        sink: &jsonrpsee::server::SubscriptionSink,
        mut events: tokio::sync::broadcast::Receiver<StoreEvent>,
        cursor: u64,
    ) -> Result<Option<JobStatus>, ErrorObjectOwned> {
        let mut next_line = cursor;
        let mut last_status: Option<JobStatus> = None;
        loop {
            let lines = self
                .supervisor
                .job_log_lines(id)
                .await
                .map_err(to_rpc_error)?;
            let status = self
                .supervisor
                .get_job_status(id)
                .await
                .map_err(to_rpc_error)?;
            let start = usize::try_from(next_line).unwrap_or(usize::MAX);
            for (offset, line) in lines.into_iter().enumerate().skip(start) {
                let index = u64::try_from(offset).unwrap_or(u64::MAX);
                let event = JobEvent::Log {
                    job_id: id,
                    index,
                    line,
                };
                if !Self::send(sink, &event).await {
                    return Ok(None);
                }
                next_line = index.saturating_add(1);
            }
            if last_status != Some(status) {
                let event = JobEvent::Status { job_id: id, status };
                if !Self::send(sink, &event).await {
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
                            | StoreEvent::LogAppended { id: changed }) if changed == id => break,
                        Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => break,
                        Ok(_) => continue,
                        Err(RecvError::Closed) => return Err(internal("supervisor shutting down")),
                    },
                    () = sink.closed() => return Ok(None),
                }
            }
        }
    }
}

/// The close notification's `error`: `value` as JSON.
fn close_with(value: &Value) -> SubscriptionError {
    match to_json_raw_value(value) {
        Ok(raw) => SubscriptionError::from_json(raw),
        Err(_) => SubscriptionError::from("subscription closed"),
    }
}

#[async_trait]
impl HeroApiServer for RpcHandler {
    async fn fetch_nonce(&self, pubkey: String) -> RpcResult<String> {
        self.nonces.issue(&pubkey)
    }

    async fn authenticate(
        &self,
        ext: &Extensions,
        pubkey: String,
        signature: String,
        nonce: String,
    ) -> RpcResult<bool> {
        let Some(session) = ext.get::<Session>() else {
            return Err(internal("no session on this connection"));
        };
        let who = self.nonces.verify(&pubkey, &signature, &nonce)?;
        tracing::info!(pubkey = %who, "connection authenticated");
        authenticate_session(session, who);
        Ok(true)
    }

    async fn whoami(&self, ext: &Extensions) -> RpcResult<String> {
        Ok(identity(ext).unwrap_or_else(|| ANONYMOUS.to_owned()))
    }

    async fn play(&self, ext: &Extensions, script: String) -> RpcResult<PlayResult> {
        let params = JobParams::new(script, ScriptType::Sal.as_str());
        let output = self.run(submitted(params, ext)?).await?;
        Ok(PlayResult { output })
    }

    async fn create_job(&self, ext: &Extensions, params: JobParams) -> RpcResult<String> {
        let params = submitted(params, ext)?;
        let id = self
            .supervisor
            .create_job(params)
            .await
            .map_err(to_rpc_error)?;
        Ok(id.to_string())
    }

    async fn start_job(&self, job_id: String) -> RpcResult<StartJobResult> {
        let id = parse_job_id(&job_id)?;
        self.supervisor.start_job(id).await.map_err(to_rpc_error)?;
        Ok(StartJobResult { success: true })
    }

    async fn run_job(
        &self,
        ext: &Extensions,
        script: String,
        script_type: String,
        prerequisites: Option<Vec<String>>,
        timeout: Option<u64>,
    ) -> RpcResult<String> {
        parse_script_type(&script_type)?;
        parse_job_ids(prerequisites.as_deref().unwrap_or_default())?;
        let mut params = JobParams::new(script, script_type);
        params.prerequisites = prerequisites.unwrap_or_default();
        params.timeout = timeout;
        self.run(submitted(params, ext)?).await
    }

    async fn get_job_status(&self, job_id: String) -> RpcResult<JobStatus> {
        let id = parse_job_id(&job_id)?;
        self.supervisor
            .get_job_status(id)
            .await
            .map_err(to_rpc_error)
    }

    async fn get_job_output(&self, job_id: String) -> RpcResult<String> {
        let id = parse_job_id(&job_id)?;
        self.supervisor
            .get_job_output(id)
            .await
            .map_err(to_rpc_error)
    }

    async fn get_job_logs(&self, job_id: String) -> RpcResult<JobLogsResult> {
        let id = parse_job_id(&job_id)?;
        let logs = self
            .supervisor
            .get_job_logs(id)
            .await
            .map_err(to_rpc_error)?;
        Ok(JobLogsResult { logs })
    }

    async fn list_jobs(&self) -> RpcResult<Vec<String>> {
        let ids = self.supervisor.list_jobs().await.map_err(to_rpc_error)?;
        Ok(ids.iter().map(ToString::to_string).collect())
    }

    async fn stop_job(&self, job_id: String) -> RpcResult<()> {
        let id = parse_job_id(&job_id)?;
        self.supervisor.stop_job(id).await.map_err(to_rpc_error)
    }

    async fn delete_job(&self, job_id: String) -> RpcResult<()> {
        let id = parse_job_id(&job_id)?;
        self.supervisor.delete_job(id).await.map_err(to_rpc_error)
    }

    async fn clear_all_jobs(&self) -> RpcResult<()> {
        self.supervisor.clear_all_jobs().await.map_err(to_rpc_error)
    }

    async fn get_job(&self, job_id: String) -> RpcResult<JobInfo> {
        let id = parse_job_id(&job_id)?;
        let job = self.supervisor.get_job(id).await.map_err(to_rpc_error)?;
        Ok(JobInfo::from(job))
    }

    async fn list_runners(&self) -> RpcResult<Vec<RunnerInfo>> {
        Ok(self.supervisor.list_runners())
    }

    async fn discover(&self) -> RpcResult<Value> {
        Ok(Value::clone(&self.openrpc))
    }

    async fn subscribe_job_events(
        &self,
        pending: PendingSubscriptionSink,
        job_id: String,
        cursor: Option<u64>,
    ) -> SubscriptionResult {
        let id = match parse_job_id(&job_id) {
            Ok(id) => id,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let events = self.supervisor.subscribe();
        if let Err(e) = self.supervisor.get_job_status(id).await {
            pending.reject(to_rpc_error(e)).await;
            return Ok(());
        }
        let sink = pending.accept().await?;
        match self
            .stream_events(id, &sink, events, cursor.unwrap_or(0))
            .await
        {
            Ok(Some(status)) => Err(close_with(
                &json!({ "code": "job_ended", "job_id": id, "status": status }),
            )),
            Ok(None) => Ok(()),
            Err(e) => {
                let data = e
                    .data()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .unwrap_or(Value::Null);
                Err(close_with(&json!({
                    "code": data.get("code").cloned().unwrap_or(Value::Null),
                    "job_id": id,
                    "message": e.message(),
                })))
            }
        }
    }
}
