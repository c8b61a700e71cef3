//! Signed asynchronous calls (`rpc_in`, `rpc_check`, `rpc_kill`; COORDINATION.md §2):
//! a caller signs a call to any served method, may go away, and gets the result POSTed
//! to its `return_url`, signed by the server's own key.
//!
//! - [`key`]: the server's secp256k1 key.
//! - [`allow`]: where results may be POSTed (the operator's allow-list).
//! - [`ecies`]: ECIES over secp256k1 with AES-256-GCM, for calls that encrypt.
//! - [`record`]: a call's stored state and the signed `rpc_return`.
//! - [`store`]: calls, the outbox and running leases, in memory or in Redis.
//! - [`Calls`] (here): runs calls through the served methods as the caller's actor,
//!   delivers results with retries, and finishes calls whose instance died.
//!
//! # Life of a call
//! 1. `rpc_in` checks the signature, the params' size and the `return_url`, then claims
//!    `(pubkey, rpc_id)` in the store in one atomic step with a lease in the running
//!    queue. A second `rpc_in` with the same id gets the first one's state; nothing runs
//!    twice.
//! 2. The method runs exactly as if the caller had authenticated a WebSocket connection
//!    with its key (its actor's roles apply; the request's bearer token, if any, still
//!    frames what the transport may do). `run_job` is run as create, start and wait, the
//!    job id kept in the record, so that another instance can finish the call if this
//!    one dies while the job runs. The running instance renews the lease; a call whose
//!    lease ran out without a job id ends `error` (`interrupted`: the method may or may
//!    not have taken effect).
//! 3. The result (or error) is stored and, with a `return_url`, the call enters the
//!    outbox in the same step. The deliverer POSTs the signed `rpc_return`, with
//!    timeouts, without following redirects, reading no more than a small answer; a
//!    non-2xx answer or a failure is retried with capped exponential backoff and
//!    jitter until the delivery window ends, then the call is `undeliverable`. Every
//!    attempt is recorded and shown by `rpc_check`. An entry is leased while it is
//!    being delivered, so instances sharing a Redis do not deliver it twice in the
//!    normal case; an instance that dies mid-POST leaves it to be delivered again (at
//!    least once).

pub mod allow;
pub mod ecies;
pub mod key;
pub mod record;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use jsonrpsee::Extensions;
use jsonrpsee::core::server::Methods;
use jsonrpsee::types::ErrorObjectOwned;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use allow::ReturnAllowList;
pub use key::{KeyError, ServerKey};
pub use record::{Attempt, CallRecord, CallStatus, Delivery, RpcReturn};
pub use store::{CallStore, CallStoreError, MemoryCalls, Queue, RedisCalls};

use crate::job::JobId;
use crate::rpc::auth::Session;
use crate::rpc::invoke::Answer;
use crate::service::{Supervisor, SupervisorError, job_result};

/// The encryption scheme a caller may name in `encryption`.
pub const ENCRYPTION_SCHEME: &str = "ecies-secp256k1-aes256gcm";

/// Settings of signed calls.
#[derive(Clone)]
pub struct CallsConfig {
    /// The key that signs results; `None`: a fresh one held in memory (the binary
    /// always gives one: from `--server-key` / `HERO_SERVER_KEY`).
    pub server_key: Option<ServerKey>,
    /// Where results may be POSTed (default: loopback only).
    pub return_hosts: ReturnAllowList,
    /// How long delivery of one result is retried before it is undeliverable.
    pub delivery_window: Duration,
    /// The first retry's delay; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest delay between two attempts.
    pub max_backoff: Duration,
    /// Timeout of one POST (connect, send, answer).
    pub delivery_timeout: Duration,
    /// The largest `params` text accepted (bytes).
    pub max_params_bytes: usize,
    /// How long a finished call is remembered (replays within it answer its state).
    pub retention: Duration,
    /// The most calls the in-memory store holds.
    pub max_calls_in_memory: usize,
    /// How long a running call's lease lasts before another instance may take it over.
    pub lease: Duration,
    /// Where calls live; `None`: in memory.
    pub store: Option<Arc<dyn CallStore>>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            server_key: None,
            return_hosts: ReturnAllowList::default(),
            delivery_window: Duration::from_secs(24 * 3600),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            delivery_timeout: Duration::from_secs(10),
            max_params_bytes: 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_calls_in_memory: 100_000,
            lease: Duration::from_secs(30),
            store: None,
        }
    }
}

impl std::fmt::Debug for CallsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallsConfig")
            .field("server_key", &self.server_key)
            .field("return_hosts", &self.return_hosts)
            .field("delivery_window", &self.delivery_window)
            .field("max_params_bytes", &self.max_params_bytes)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// The signed-call service: shared by the RPC handlers and its two background tasks
/// (the deliverer and the lease keeper), which end when it is dropped (with the RPC
/// module that holds it). Calls still running then finish on their own; the leases
/// hand the ones cut short by a process exit to the next instance.
#[derive(Clone, Debug)]
pub(crate) struct Calls {
    inner: Arc<Inner>,
}

struct Inner {
    key: ServerKey,
    config: CallsConfig,
    store: Arc<dyn CallStore>,
    supervisor: Supervisor,
    /// The served methods a call may name (everything but the call methods).
    methods: Methods,
    http: reqwest::Client,
    max_response_bytes: usize,
    /// Calls running in this process, by record key: their leases are renewed; the
    /// background ones can be aborted.
    local: Mutex<HashMap<String, Option<AbortHandle>>>,
    /// Something entered the outbox.
    outbox_ready: Notify,
    /// Cancelled when the service is dropped: ends the background tasks at once.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("key", &self.key)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Unix ms now.
fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A JSON-RPC error as the JSON text a result carries.
fn error_text(e: &ErrorObjectOwned) -> String {
    json!({"error": {"code": e.code(), "message": e.message(), "data": e.data()}}).to_string()
}

impl Calls {
    /// The service over `methods` (what calls may name), the store `config` names (or
    /// memory), and the server key (or a fresh one). Spawns its background tasks on the
    /// current runtime.
    pub(crate) fn start(
        config: CallsConfig,
        supervisor: Supervisor,
        methods: Methods,
        max_response_bytes: usize,
    ) -> Calls {
        let key = config.server_key.clone().unwrap_or_else(|| {
            tracing::warn!("no server key configured: results are signed by a key that lives only as long as this process");
            ServerKey::generate()
        });
        tracing::info!(pubkey = %key.public_hex(), "results of signed calls are signed by this server key");
        let store = config
            .store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryCalls::new(config.max_calls_in_memory)));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.delivery_timeout)
            .connect_timeout(config.delivery_timeout)
            .user_agent(concat!("hero-supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let inner = Arc::new(Inner {
            key,
            config,
            store,
            supervisor,
            methods,
            http,
            max_response_bytes,
            local: Mutex::default(),
            outbox_ready: Notify::new(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(deliverer(Arc::downgrade(&inner), inner.stop.clone()));
        tokio::spawn(lease_keeper(Arc::downgrade(&inner), inner.stop.clone()));
        Calls { inner }
    }

    /// The server's key.
    pub(crate) fn key(&self) -> &ServerKey {
        &self.inner.key
    }

    pub(crate) fn config(&self) -> &CallsConfig {
        &self.inner.config
    }

    pub(crate) fn store(&self) -> &Arc<dyn CallStore> {
        &self.inner.store
    }

    /// Whether `method` may be called through `rpc_in` (a served method call; not a
    /// subscription, not a call method).
    pub(crate) fn callable(&self, method: &str) -> bool {
        crate::rpc::invoke::is_callable(&self.inner.methods, method)
    }

    /// Claims `record` (status `pending`, leased); `Some(existing)` when the call was
    /// already made.
    pub(crate) async fn claim(
        &self,
        record: &CallRecord,
    ) -> Result<Option<CallRecord>, CallStoreError> {
        let lease_until = now_ms() + ms(self.inner.config.lease);
        self.inner.store.claim(record, lease_until).await
    }

    /// Runs claimed call `record` here and now, as its caller, with the transport's
    /// extensions `ext`; stores and queues the result; returns the finished record.
    pub(crate) async fn run(&self, record: CallRecord, ext: Extensions) -> CallRecord {
        self.inner.clone().run(record, ext).await
    }

    /// Runs claimed call `record` in the background.
    pub(crate) fn spawn(&self, record: CallRecord, ext: Extensions) {
        let inner = self.inner.clone();
        let key = record.key();
        // Held while spawning, so the handle is in before the task can finish.
        let mut local = self.inner.local();
        let task = tokio::spawn(async move { inner.run(record, ext).await });
        local.insert(key, Some(task.abort_handle()));
    }

    /// Stops call `record` (its caller asked): the job it runs is stopped (the call then
    /// ends with the job's `cancelled` error), or a call running here is aborted and
    /// ends `error`. Answers the record as it is afterwards.
    pub(crate) async fn kill(&self, mut record: CallRecord) -> Result<CallRecord, CallStoreError> {
        if record.status.is_terminal() {
            return Ok(record);
        }
        if let Some(id) = record
            .job_id
            .as_deref()
            .and_then(|j| j.parse::<JobId>().ok())
        {
            if let Err(e) = self.inner.supervisor.stop_job(id).await {
                tracing::debug!(error = %e, "rpc_kill: the call's job did not stop");
            }
            // The task waiting for the job finishes the call; give it a moment so the
            // answer shows the end.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(now) = self.inner.store.get(&record.key()).await?
                    && now.status.is_terminal()
                {
                    return Ok(now);
                }
            }
            return Ok(self.inner.store.get(&record.key()).await?.unwrap_or(record));
        }
        let local = self.inner.local().remove(&record.key()).flatten();
        if let Some(handle) = local {
            handle.abort();
            let e = crate::rpc::error::conflict("the call was killed by its caller");
            record.finish(CallStatus::Error, error_text(&e), Utc::now());
            self.inner.finish(&mut record).await?;
        }
        Ok(record)
    }
}

impl Inner {
    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<AbortHandle>>> {
        // Poisoned only if a holder panicked; nothing here panics while holding it.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the call, stores its end, queues its delivery.
    async fn run(self: Arc<Self>, mut record: CallRecord, ext: Extensions) -> CallRecord {
        let key = record.key();
        self.local().entry(key.clone()).or_insert(None);
        record.status = CallStatus::Running;
        record.updated_at = Utc::now();
        if let Err(e) = self.store.put(&record).await {
            tracing::warn!(error = %e, rpc_id = %record.rpc_id, "call state not stored");
        }
        let answer = match self.plain_params(&record) {
            Err(e) => Err(e),
            Ok(params) if record.method_name == "run_job" => {
                self.run_job(&mut record, &params, &ext).await
            }
            Ok(params) => self.call(&record.method_name, &params, ext).await,
        };
        self.end(&mut record, answer).await;
        self.local().remove(&key);
        record
    }

    /// The call's params as JSON text: decrypted with the server key when the caller
    /// encrypted them.
    fn plain_params(&self, record: &CallRecord) -> Answer {
        match record.encryption.as_deref() {
            None => Ok(record.params.clone()),
            Some(_) => decrypt_params(&self.key, &record.params),
        }
    }

    /// Stores the call's end and queues its delivery; a store failure is logged (the
    /// lease then hands the call to the lease keeper, which finishes it again). With
    /// encryption, the stored result is the hex of the result text encrypted to the
    /// caller's key, as a JSON string.
    async fn end(&self, record: &mut CallRecord, answer: Answer) {
        let (status, text) = match answer {
            Ok(text) => (CallStatus::Done, text),
            Err(e) => (CallStatus::Error, error_text(&e)),
        };
        let text = match record.encryption {
            None => text,
            Some(_) => match ecies::encrypt_hex(&record.pubkey, text.as_bytes()) {
                Ok(hex) => Value::String(hex).to_string(),
                Err(e) => {
                    // The key was checked when the call came in: not expected.
                    tracing::error!(error = %e, "result not encrypted; not kept");
                    error_text(&crate::rpc::error::internal(
                        "the result could not be encrypted",
                    ))
                }
            },
        };
        record.finish(status, text, Utc::now());
        if let Err(e) = self.finish(record).await {
            tracing::warn!(error = %e, rpc_id = %record.rpc_id, "call result not stored");
        }
    }

    /// Stores a finished record, out of the running queue and, with a `return_url`,
    /// into the outbox, in one step.
    async fn finish(&self, record: &mut CallRecord) -> Result<(), CallStoreError> {
        let deliver = record.return_url.is_some();
        if deliver {
            record.delivery = Delivery::Pending;
        }
        self.store.finish(record, deliver.then(now_ms)).await?;
        if deliver {
            self.outbox_ready.notify_one();
        }
        Ok(())
    }

    /// Calls served method `method` with `params` (JSON text) and `ext`.
    async fn call(&self, method: &str, params: &str, ext: Extensions) -> Answer {
        crate::rpc::invoke::call_method(&self.methods, method, params, ext, self.max_response_bytes)
            .await
            .unwrap_or_else(|| {
                Err(crate::rpc::error::invalid_params(format!(
                    "method {method} cannot be called through rpc_in"
                )))
            })
    }

    /// `run_job` as create, start, wait: the job id is stored as soon as it exists.
    async fn run_job(&self, record: &mut CallRecord, params: &str, ext: &Extensions) -> Answer {
        let create = run_job_as_create(params)?;
        let created = self.call("create_job", &create, ext.clone()).await?;
        let job_id: String = serde_json::from_str(&created)
            .map_err(|_| crate::rpc::error::internal("create_job answered no id"))?;
        record.job_id = Some(job_id.clone());
        if let Err(e) = self.store.put(record).await {
            tracing::warn!(error = %e, rpc_id = %record.rpc_id, "call's job id not stored");
        }
        self.call("start_job", &json!([job_id]).to_string(), ext.clone())
            .await?;
        self.wait_job(&job_id).await
    }

    /// Waits for job `job_id` to end; answers as `run_job` would.
    async fn wait_job(&self, job_id: &str) -> Answer {
        let id: JobId = crate::rpc::error::parse_job_id(job_id)?;
        loop {
            match self
                .supervisor
                .wait_for_job(id, Duration::from_secs(3600))
                .await
            {
                Ok(job) => {
                    return job_result(job)
                        .map(|output| Value::String(output).to_string())
                        .map_err(crate::rpc::error::to_rpc_error);
                }
                Err(SupervisorError::Timeout { .. }) => continue,
                Err(e) => return Err(crate::rpc::error::to_rpc_error(e)),
            }
        }
    }
}

/// `run_job`'s params (positional `[script, script_type, prerequisites?, timeout?,
/// context_id?]` or named) as `create_job`'s (`[{script, script_type, prerequisites,
/// timeout, context_id}]`).
fn run_job_as_create(params: &str) -> Answer {
    #[derive(Deserialize)]
    struct Named {
        script: String,
        script_type: String,
        #[serde(default)]
        prerequisites: Option<Vec<String>>,
        #[serde(default)]
        timeout: Option<u64>,
        #[serde(default)]
        context_id: Option<String>,
    }
    type Positional = (
        String,
        String,
        Option<Option<Vec<String>>>,
        Option<Option<u64>>,
        Option<Option<String>>,
    );
    let bad =
        |e: serde_json::Error| crate::rpc::error::invalid_params(format!("run_job params: {e}"));
    let value: Value = serde_json::from_str(params).map_err(bad)?;
    let named = match value {
        Value::Array(mut items) => {
            // Trailing optional params may be left out.
            items.resize(5, Value::Null);
            let (script, script_type, prerequisites, timeout, context_id): Positional =
                serde_json::from_value(Value::Array(items)).map_err(bad)?;
            Named {
                script,
                script_type,
                prerequisites: prerequisites.flatten(),
                timeout: timeout.flatten(),
                context_id: context_id.flatten(),
            }
        }
        other => serde_json::from_value(other).map_err(bad)?,
    };
    let mut create = json!({"script": named.script, "script_type": named.script_type});
    if let Some(p) = named.prerequisites {
        create["prerequisites"] = json!(p);
    }
    if let Some(t) = named.timeout {
        create["timeout"] = json!(t);
    }
    if let Some(c) = named.context_id {
        create["context_id"] = json!(c);
    }
    Ok(json!([create]).to_string())
}

/// Params a caller encrypted to `key` (hex of an ECIES message) as JSON text, or -32602.
pub(crate) fn decrypt_params(key: &ServerKey, params: &str) -> Answer {
    let plain = ecies::decrypt_hex(&key.secret(), params.trim()).map_err(|e| {
        crate::rpc::error::invalid_params(format!(
            "params do not decrypt with the server's key ({ENCRYPTION_SCHEME}): {e}"
        ))
    })?;
    let text = String::from_utf8(plain)
        .map_err(|_| crate::rpc::error::invalid_params("decrypted params are not UTF-8"))?;
    serde_json::from_str::<Value>(&text).map_err(|e| {
        crate::rpc::error::invalid_params(format!("decrypted params are not JSON text: {e}"))
    })?;
    Ok(text)
}

/// The extensions a call runs with: the transport's grant and trace, and a session that
/// has proved the caller's key.
pub(crate) fn caller_extensions(transport: &Extensions, pubkey: &str) -> Extensions {
    let mut ext = Extensions::new();
    if let Some(grant) = transport.get::<crate::rpc::auth::Grant>() {
        ext.insert(*grant);
    }
    if let Some(trace) = transport.get::<crate::trace::TraceParent>() {
        ext.insert(*trace);
    }
    let session = Session::default();
    crate::rpc::auth::authenticate_session(&session, pubkey.to_string());
    ext.insert(session);
    ext
}

/// The delay before attempt `n + 1` after `n` failed ones: `first * 2^(n-1)` capped at
/// `max`, then between 80% and 100% of that (jitter, so receivers coming back are not
/// hit by every sender at once).
pub(crate) fn backoff(n: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = first.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(31)));
    exp.min(max).mul_f64(0.8 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Delivers due results until stopped or the service is gone.
async fn deliverer(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        let Some(calls) = inner.upgrade() else { return };
        let due = calls
            .store
            .take_due(
                Queue::Outbox,
                now_ms(),
                now_ms() + ms(calls.config.delivery_timeout) * 3,
                32,
            )
            .await;
        let delivered_any = match due {
            Ok(keys) => {
                let any = !keys.is_empty();
                let tasks: Vec<_> = keys
                    .into_iter()
                    .map(|key| {
                        let calls = calls.clone();
                        tokio::spawn(async move { calls.deliver(&key).await })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                any
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox not readable");
                false
            }
        };
        let ready = calls.clone();
        drop(calls);
        if delivered_any {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = ready.outbox_ready.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl Inner {
    /// One delivery attempt of call `key`'s result.
    async fn deliver(&self, key: &str) {
        let record = match self.store.get(key).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Expired or deleted: nothing left to deliver.
                let _ = self.store.unschedule(Queue::Outbox, key).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox entry not readable");
                return;
            }
        };
        let (Some(url), Some(body)) = (record.return_url.clone(), record.rpc_return(&self.key))
        else {
            let _ = self.store.unschedule(Queue::Outbox, key).await;
            return;
        };
        let attempt = self.post(&url, &body).await;
        let ok = attempt.error.is_none();
        let mut record = record;
        record.push_attempt(attempt);
        record.updated_at = Utc::now();
        let result = if ok {
            record.delivery = Delivery::Delivered;
            tracing::debug!(rpc_id = %record.rpc_id, "result delivered");
            self.store.delivered(&record).await
        } else {
            let age = Utc::now() - record.created_at;
            let window = chrono::Duration::from_std(self.config.delivery_window)
                .unwrap_or(chrono::Duration::MAX);
            if age > window {
                record.delivery = Delivery::Undeliverable;
                tracing::warn!(rpc_id = %record.rpc_id, attempts = record.attempt_count, "result undeliverable: the delivery window ended");
                self.store.delivered(&record).await
            } else {
                let delay = backoff(
                    record.attempt_count,
                    self.config.first_backoff,
                    self.config.max_backoff,
                    rand::random::<f64>(),
                );
                match self.store.put(&record).await {
                    Ok(()) => {
                        self.store
                            .schedule(Queue::Outbox, key, now_ms() + ms(delay))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "delivery state not stored; the lease retries it");
        }
    }

    /// POSTs `body` to `url`; reads at most a small answer.
    async fn post(&self, url: &str, body: &RpcReturn) -> Attempt {
        let at = Utc::now();
        // The allow-list was checked at submission; checked again in case the operator
        // narrowed it since (a restart with another list).
        if let Err(why) = self.config.return_hosts.check(url) {
            return Attempt {
                at,
                http_status: None,
                error: Some(why),
            };
        }
        match self.http.post(url).json(body).send().await {
            Ok(mut response) => {
                let status = response.status();
                // Read (and drop) a bounded part of the answer, so the connection can
                // be reused without trusting the receiver's size.
                let mut read = 0usize;
                while read < 64 * 1024 {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                Attempt {
                    at,
                    http_status: Some(status.as_u16()),
                    error: (!status.is_success()).then(|| format!("answered {status}")),
                }
            }
            Err(e) => Attempt {
                at,
                http_status: None,
                error: Some(describe(&e)),
            },
        }
    }
}

/// A delivery failure in a few words (no URL: it may hold a secret query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirects are not followed".into()
    } else {
        "request failed".into()
    }
}

/// Renews the leases of calls running here and finishes calls whose instance died.
async fn lease_keeper(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        let Some(calls) = inner.upgrade() else { return };
        let lease = ms(calls.config.lease);
        let local: Vec<String> = calls.local().keys().cloned().collect();
        for key in &local {
            if let Err(e) = calls
                .store
                .schedule(Queue::Running, key, now_ms() + lease)
                .await
            {
                tracing::warn!(error = %e, "call lease not renewed");
            }
        }
        match calls
            .store
            .take_due(Queue::Running, now_ms(), now_ms() + lease, 32)
            .await
        {
            Ok(expired) => {
                for key in expired {
                    if !local.contains(&key) {
                        calls.clone().adopt(key).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "running calls not readable"),
        }
        let period = calls.config.lease / 3;
        drop(calls);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period.max(Duration::from_millis(100))) => {}
        }
    }
}

impl Inner {
    /// Takes over call `key`, whose lease ran out: waits for its job when it has one,
    /// else ends it `interrupted`.
    async fn adopt(self: Arc<Self>, key: String) {
        let mut record = match self.store.get(&key).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = self.store.unschedule(Queue::Running, &key).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "running call not readable");
                return;
            }
        };
        if record.status.is_terminal() {
            // A renewal raced with the end: finishing took it out of the running queue
            // and into the outbox in one step, so only the renewal is left to undo.
            let _ = self.store.unschedule(Queue::Running, &key).await;
            return;
        }
        match record.job_id.clone() {
            Some(job_id) => {
                tracing::info!(rpc_id = %record.rpc_id, %job_id, "taking over a call whose instance stopped");
                let inner = self.clone();
                let mut local = self.local();
                let task = tokio::spawn(async move {
                    let answer = inner.wait_job(&job_id).await;
                    inner.end(&mut record, answer).await;
                    inner.local().remove(&record.key());
                });
                local.insert(key, Some(task.abort_handle()));
            }
            None => {
                let e = crate::rpc::error::internal_with_code(
                    "interrupted",
                    "the instance running this call stopped before it answered; the method may or may not have taken effect",
                );
                self.end(&mut record, Err(e)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_down_only() {
        let first = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, first, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, first, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(5, first, max, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(40, first, max, 1.0), max);
        assert_eq!(backoff(3, first, max, 0.0), Duration::from_millis(3200));
        assert!(backoff(3, first, max, 0.5) < Duration::from_secs(4));
    }

    #[test]
    fn run_job_params_become_create_job_params() {
        let positional = run_job_as_create(r#"["1+1","rhai"]"#).unwrap();
        assert_eq!(positional, r#"[{"script":"1+1","script_type":"rhai"}]"#);
        let full = run_job_as_create(r#"["x","rhai",["5"],30,"7"]"#).unwrap();
        let v: Value = serde_json::from_str(&full).unwrap();
        assert_eq!(v[0]["prerequisites"], json!(["5"]));
        assert_eq!(v[0]["timeout"], json!(30));
        assert_eq!(v[0]["context_id"], json!("7"));
        let named = run_job_as_create(
            r#"{"script":"x","script_type":"python","timeout":5,"context_id":"9"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&named).unwrap();
        assert_eq!(v[0]["script_type"], json!("python"));
        assert_eq!(v[0]["timeout"], json!(5));
        assert_eq!(v[0]["context_id"], json!("9"));
        for bad in ["", "[1]", r#"{"script":"x"}"#, "not json"] {
            let e = run_job_as_create(bad).unwrap_err();
            assert_eq!(e.code(), -32602, "{bad}");
        }
    }
}
