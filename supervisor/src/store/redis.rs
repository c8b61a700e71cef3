//! The Redis store: the shared store several supervisor instances can use at once.
//!
//! # Key layout
//! Every key lives under a configurable prefix (default `hero`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `<prefix>:job:<id>` | HASH | every job field; `prerequisites`, `env_vars`, `error` as JSON strings, times as epoch ms, absent `Option`s as absent fields; `has_dependents` = `1` once a job waited on it |
//! | `<prefix>:job:<id>:dependents` | SET | ids of jobs waiting on this one (deleted once it ends) |
//! | `<prefix>:job:<id>:logs` | LIST | log lines, oldest first, capped at `max_log_lines` |
//! | `<prefix>:q:work:type:<ScriptType>` | LIST | ready job ids; RPUSH at the tail, LPOP from the head (the left end is the head) |
//! | `<prefix>:delayed` | ZSET | jobs scheduled for a later attempt, score `not_before` ms |
//! | `<prefix>:leases` | ZSET | `Started` jobs, score `lease_until` ms |
//! | `<prefix>:jobs` | ZSET | index of every job for `list_jobs`, score `created_at` ms |
//! | `<prefix>:events` | pub/sub channel | compact JSON events: `{"k":"job","id":..,"status":..}`, `{"k":"work","script_type":..}`, `{"k":"log","id":..}`, `{"k":"cancel","id":..}` |
//!
//! # Atomicity
//! Every change that touches more than one key is one Lua script
//! (`src/store/lua/*.lua`, each headed by its KEYS, ARGV and Returns; `common.lua` is
//! prepended to each). Scripts publish their events themselves, so an event is never
//! sent for a change that did not happen. "Now" is the store's [`Clock`], passed in ARGV.
//! Scripts compute the keys of other jobs (dependents, prerequisites) themselves: fine on
//! one Redis (or a primary with replicas); Redis Cluster is not supported.
//!
//! # Connections
//! Commands go through a [`ConnectionManager`] (multiplexed, reconnects after errors)
//! with connection and response timeouts, so a dead Redis gives
//! [`StoreError::Unavailable`] within seconds rather than a hang. Pub/sub runs on a
//! connection of its own, in one background task that forwards events to the in-process
//! broadcast channel, pings Redis every few seconds (a connection that went silent is
//! replaced, not waited on forever) and resubscribes after a failure, then sends
//! [`StoreEvent::Resync`]: waiters re-read the state they care about.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisError, Script};
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;

use super::{
    CancelOutcome, EVENT_CHANNEL_CAPACITY, Finished, JobStore, StoreConfig, StoreError, StoreEvent,
    deadline, from_ms, to_ms, trunc_ms, truncate_line,
};
use crate::clock::Clock;
use crate::job::{Job, JobError, JobId, JobParams, JobStatus, ScriptType};

/// Time allowed to open a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one command or script. Scripts are short (batches are bounded), so
/// a Redis that doesn't answer within this is treated as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs removed per `clear_all` step (one script call each).
const CLEAR_BATCH: usize = 500;
/// Bounds of the event listener's reconnect backoff.
const LISTENER_MIN_BACKOFF: Duration = Duration::from_millis(50);
const LISTENER_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the event listener pings Redis on its pub/sub connection. A connection that
/// went silent (a NAT or firewall forgot it: no FIN, no RST) would otherwise never end;
/// one whose ping is not answered within [`RESPONSE_TIMEOUT`] is dropped and replaced.
const LISTENER_PING_EVERY: Duration = Duration::from_secs(3);

macro_rules! lua {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

struct Scripts {
    create: Script,
    start: Script,
    claim: Script,
    renew: Script,
    finish_batch: Script,
    fail: Script,
    retry_later: Script,
    release: Script,
    promote_due: Script,
    reclaim_expired: Script,
    cancel: Script,
    delete: Script,
    clear_batch: Script,
    append_logs: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: lua!("create.lua"),
    start: lua!("start.lua"),
    claim: lua!("claim.lua"),
    renew: lua!("renew.lua"),
    finish_batch: lua!("finish_batch.lua"),
    fail: lua!("fail.lua"),
    retry_later: lua!("retry_later.lua"),
    release: lua!("release.lua"),
    promote_due: lua!("promote_due.lua"),
    reclaim_expired: lua!("reclaim_expired.lua"),
    cancel: lua!("cancel.lua"),
    delete: lua!("delete.lua"),
    clear_batch: lua!("clear_batch.lua"),
    append_logs: lua!("append_logs.lua"),
});

/// The Redis-backed [`JobStore`]. See the module docs for the key layout.
#[derive(Debug)]
pub struct RedisStore {
    conn: ConnectionManager,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<StoreEvent>,
    _listener: ListenerGuard,
}

/// Aborts the event listener task when the store is dropped.
#[derive(Debug)]
struct ListenerGuard(AbortHandle);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Redis error as a [`StoreError::Unavailable`]. The redis crate's messages name the
/// failure, never the URL or its password.
fn unavailable(e: RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost"
    } else {
        "command failed"
    };
    let detail = truncate_line(&e.to_string(), 200);
    StoreError::Unavailable(format!("redis {what}: {detail}"))
}

fn corrupt(id: JobId, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id,
        reason: reason.into(),
    }
}

/// An event as published by the Lua scripts.
#[derive(Deserialize)]
#[serde(tag = "k")]
enum WireEvent {
    #[serde(rename = "job")]
    Job { id: JobId, status: JobStatus },
    /// Many jobs changed to the same status in one script (claim, finish_batch).
    #[serde(rename = "jobs")]
    Jobs { ids: Vec<JobId>, status: JobStatus },
    #[serde(rename = "work")]
    Work { script_type: ScriptType },
    #[serde(rename = "log")]
    Log { id: JobId },
    #[serde(rename = "cancel")]
    Cancel { id: JobId },
}

impl WireEvent {
    /// Hands the event to `events`, one [`StoreEvent`] per job.
    fn forward(self, events: &broadcast::Sender<StoreEvent>) {
        // No receiver is fine: nobody is waiting.
        let send = |e| {
            let _ = events.send(e);
        };
        match self {
            WireEvent::Job { id, status } => send(StoreEvent::JobChanged { id, status }),
            WireEvent::Jobs { ids, status } => {
                for id in ids {
                    send(StoreEvent::JobChanged { id, status });
                }
            }
            WireEvent::Work { script_type } => send(StoreEvent::WorkAvailable { script_type }),
            WireEvent::Log { id } => send(StoreEvent::LogAppended { id }),
            WireEvent::Cancel { id } => send(StoreEvent::CancelRequested { id }),
        }
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`, `redis+unix:///path/to/sock` or
    /// `unix:///path/to/sock`) and starts the event listener. Returns once both the
    /// command connection and the event subscription are up.
    pub async fn connect(
        url: &str,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        // Don't echo the URL: it may carry a password.
        let client = Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {:?}", e.kind())))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(unavailable)?;

        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let channel = format!("{}:events", config.prefix);
        let task = tokio::spawn(listen(client, channel, events.clone(), ready_tx));
        let listener = ListenerGuard(task.abort_handle());
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(StoreError::Unavailable(
                    "redis event subscription failed".to_owned(),
                ));
            }
        }
        Ok(RedisStore {
            conn,
            config,
            clock,
            events,
            _listener: listener,
        })
    }

    fn job_key(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.config.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.config.prefix)
    }

    fn queue_key(&self, script_type: ScriptType) -> String {
        super::queue_name(&self.config.prefix, script_type)
    }

    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }

    /// Runs a status-style script (`{'OK', ...}` or an error code) for job `id`.
    async fn run(
        &self,
        script: &Script,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Maps the reply of a CAS script (finish, fail, retry_later, release).
    fn cas_reply(
        id: JobId,
        attempt: u32,
        op: &'static str,
        reply: &[String],
    ) -> Result<(), StoreError> {
        match reply {
            [ok] if ok == "OK" => Ok(()),
            [code] if code == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            [code, status] if code == "BAD_STATE" => Err(StoreError::InvalidTransition {
                id,
                from: parse_status(id, status)?,
                op,
            }),
            [code, current] if code == "CONFLICT" => Err(StoreError::Conflict {
                id,
                expected: attempt,
                current: current
                    .parse()
                    .map_err(|_| corrupt(id, format!("bad attempt {current:?}")))?,
            }),
            other => Err(unexpected(op, other)),
        }
    }
}

fn parse_status(id: JobId, s: &str) -> Result<JobStatus, StoreError> {
    s.parse().map_err(|e| corrupt(id, format!("{e}")))
}

fn unexpected(op: &str, reply: &[String]) -> StoreError {
    let s = truncate_line(&format!("{reply:?}"), 100);
    StoreError::Unavailable(format!("redis {op}: unexpected script reply {s}"))
}

/// The job as HASH field/value pairs (absent `Option`s are left out).
fn encode_job(job: &Job) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", job.id.to_string()),
        ("caller_id", job.caller_id.clone()),
        ("context_id", job.context_id.clone()),
        ("script", job.script.clone()),
        ("script_type", job.script_type.to_string()),
        ("timeout_secs", job.timeout_secs.to_string()),
        ("retries", job.retries.to_string()),
        ("prerequisites", to_json(&job.prerequisites)),
        ("env_vars", to_json(&job.env_vars)),
        ("status", job.status.to_string()),
        ("attempt", job.attempt.to_string()),
        ("created_at", to_ms(job.created_at).to_string()),
        ("updated_at", to_ms(job.updated_at).to_string()),
        (
            "cancel_requested",
            if job.cancel_requested { "1" } else { "0" }.to_owned(),
        ),
    ];
    let times = [
        ("started_at", job.started_at),
        ("finished_at", job.finished_at),
        ("lease_until", job.lease_until),
        ("not_before", job.not_before),
        ("queued_at", job.queued_at),
    ];
    for (name, t) in times {
        if let Some(t) = t {
            f.push((name, to_ms(t).to_string()));
        }
    }
    let strings = [
        ("output", &job.output),
        ("runner", &job.runner),
        ("lease_owner", &job.lease_owner),
        ("traceparent", &job.traceparent),
    ];
    for (name, s) in strings {
        if let Some(s) = s {
            f.push((name, s.clone()));
        }
    }
    if let Some(e) = &job.error {
        f.push(("error", to_json(e)));
    }
    f
}

/// JSON text of a plain value (strings, string maps, ids): serializing them can't fail.
fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn required(id: JobId, name: &str, v: Option<String>) -> Result<String, StoreError> {
    v.ok_or_else(|| corrupt(id, format!("missing field {name}")))
}

fn number<T: std::str::FromStr>(id: JobId, name: &str, v: String) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| corrupt(id, format!("bad {name} {v:?}")))
}

fn time(id: JobId, name: &str, v: String) -> Result<DateTime<Utc>, StoreError> {
    from_ms(number(id, name, v)?).ok_or_else(|| corrupt(id, format!("bad {name}")))
}

fn opt_time(id: JobId, name: &str, v: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(|v| time(id, name, v)).transpose()
}

fn json<T: serde::de::DeserializeOwned>(id: JobId, name: &str, v: String) -> Result<T, StoreError> {
    serde_json::from_str(&v).map_err(|e| corrupt(id, format!("bad {name}: {e}")))
}

/// The fields every job has from `create` on, each taken by name from `take`: the job
/// as `Job::new` made it, but for the status, attempt and update time it has now.
fn decode_base(
    id: JobId,
    status: JobStatus,
    attempt: u32,
    updated_at: DateTime<Utc>,
    mut take: impl FnMut(&str) -> Option<String>,
) -> Result<Job, StoreError> {
    let traceparent = take("traceparent");
    let mut field = |name: &str| required(id, name, take(name));
    let params = JobParams {
        caller_id: field("caller_id")?,
        context_id: field("context_id")?,
        script: field("script")?,
        script_type: field("script_type")?
            .parse()
            .map_err(|e| corrupt(id, format!("{e}")))?,
        timeout: Some(number(id, "timeout_secs", field("timeout_secs")?)?),
        retries: Some(number(id, "retries", field("retries")?)?),
        prerequisites: json(id, "prerequisites", field("prerequisites")?)?,
        env_vars: json(id, "env_vars", field("env_vars")?)?,
        traceparent,
    };
    let created_at = time(id, "created_at", field("created_at")?)?;
    Ok(Job {
        status,
        attempt,
        updated_at,
        ..Job::new(id, params, created_at)
    })
}

/// Decodes a job HASH (as field -> value).
fn decode_job(id: JobId, mut h: HashMap<String, String>) -> Result<Job, StoreError> {
    let stored_id = required(id, "id", h.remove("id"))?;
    if stored_id != id.to_string() {
        return Err(corrupt(id, "id field does not match the key"));
    }
    let status = required(id, "status", h.remove("status"))?;
    let status = parse_status(id, &status)?;
    let attempt = number(id, "attempt", required(id, "attempt", h.remove("attempt"))?)?;
    let updated_at = time(
        id,
        "updated_at",
        required(id, "updated_at", h.remove("updated_at"))?,
    )?;
    let base = decode_base(id, status, attempt, updated_at, |name| h.remove(name))?;
    let mut take = |name: &str| h.remove(name);
    Ok(Job {
        started_at: opt_time(id, "started_at", take("started_at"))?,
        finished_at: opt_time(id, "finished_at", take("finished_at"))?,
        output: take("output"),
        error: take("error")
            .map(|e| json::<JobError>(id, "error", e))
            .transpose()?,
        runner: take("runner"),
        lease_owner: take("lease_owner"),
        lease_until: opt_time(id, "lease_until", take("lease_until"))?,
        not_before: opt_time(id, "not_before", take("not_before"))?,
        cancel_requested: take("cancel_requested").is_some_and(|v| v == "1"),
        queued_at: opt_time(id, "queued_at", take("queued_at"))?,
        ..base
    })
}

/// Entries per claimed job in claim.lua's reply: id, attempt, then [`CLAIM_FIELDS`].
const CLAIM_STRIDE: usize = 2 + CLAIM_FIELDS.len();
/// The job fields claim.lua returns after the id and the attempt, in its order.
const CLAIM_FIELDS: [&str; 15] = [
    "caller_id",
    "context_id",
    "script",
    "script_type",
    "timeout_secs",
    "retries",
    "prerequisites",
    "env_vars",
    "created_at",
    "output",
    "error",
    "finished_at",
    "cancel_requested",
    "queued_at",
    "traceparent",
];

/// A bulk string of a script reply as an owned `String` (no copy); nil as `None`.
fn reply_string(v: redis::Value) -> Result<Option<String>, StoreError> {
    match v {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::Unavailable("redis claim: a field is not UTF-8".to_owned())),
        other => Err(StoreError::Unavailable(format!(
            "redis claim: unexpected value {}",
            truncate_line(&format!("{other:?}"), 100)
        ))),
    }
}

/// A claimed job that could not be decoded: it is `Started` under the caller's lease.
#[derive(Debug)]
struct Undecodable {
    id: JobId,
    attempt: Option<u32>,
    reason: String,
}

/// Decodes claim.lua's flat reply into the claimed jobs, completing the fields the
/// claim set (status, times, lease, runner) from what the caller passed it. Jobs that do
/// not decode are returned apart (with their attempt when it was readable), so one bad
/// job does not hold up the others.
fn decode_claimed(
    reply: Vec<redis::Value>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<(Vec<Job>, Vec<Undecodable>), StoreError> {
    if !reply.len().is_multiple_of(CLAIM_STRIDE) {
        return Err(StoreError::Unavailable(format!(
            "redis claim: reply of {} entries is not a whole number of jobs",
            reply.len()
        )));
    }
    let mut jobs = Vec::with_capacity(reply.len() / CLAIM_STRIDE);
    let mut bad = Vec::new();
    let mut it = reply.into_iter();
    while let Some(raw_id) = it.next() {
        // This job's entries; whatever decoding leaves of them is skipped below, so the
        // next job starts at its own id.
        let mut values = it.by_ref().take(CLAIM_STRIDE - 1);
        let raw_id = reply_string(raw_id).ok().flatten().unwrap_or_default();
        let Ok(id) = JobId::parse(&raw_id) else {
            // Ids are checked before they are queued: this one was put there by hand.
            tracing::error!(id = %truncate_line(&raw_id, 64), "claimed a queue entry that is not a job id; dropped");
            values.for_each(drop);
            continue;
        };
        let mut attempt = None;
        let decoded = decode_one(id, &mut values, owner, now, lease_until, &mut attempt);
        values.for_each(drop);
        match decoded {
            Ok(job) => jobs.push(job),
            Err(e) => bad.push(Undecodable {
                id,
                attempt,
                reason: e.to_string(),
            }),
        }
    }
    Ok((jobs, bad))
}

/// One claimed job from its reply entries after the id; `attempt` is set as soon as it
/// is read, for the caller to fail a job whose other fields are bad.
fn decode_one(
    id: JobId,
    values: &mut impl Iterator<Item = redis::Value>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    attempt: &mut Option<u32>,
) -> Result<Job, StoreError> {
    let mut next = || {
        values
            .next()
            .map(reply_string)
            .transpose()
            .map(Option::flatten)
    };
    let claimed_attempt = number(id, "attempt", required(id, "attempt", next()?)?)?;
    *attempt = Some(claimed_attempt);
    let mut fields: [Option<String>; CLAIM_FIELDS.len()] = Default::default();
    for f in &mut fields {
        *f = next()?;
    }
    let mut take = |name: &str| {
        let i = CLAIM_FIELDS.iter().position(|f| *f == name)?;
        fields[i].take()
    };
    let base = decode_base(id, JobStatus::Started, claimed_attempt, now, &mut take)?;
    let owner = Some(owner.to_owned());
    Ok(Job {
        started_at: Some(now),
        finished_at: opt_time(id, "finished_at", take("finished_at"))?,
        output: take("output"),
        error: take("error")
            .map(|e| json::<JobError>(id, "error", e))
            .transpose()?,
        runner: owner.clone(),
        lease_owner: owner,
        lease_until: Some(lease_until),
        cancel_requested: take("cancel_requested").is_some_and(|v| v == "1"),
        queued_at: opt_time(id, "queued_at", take("queued_at"))?,
        ..base
    })
}

/// The event listener: one dedicated pub/sub connection, resubscribing after failures.
async fn listen(
    client: Client,
    channel: String,
    events: broadcast::Sender<StoreEvent>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = LISTENER_MIN_BACKOFF;
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.subscribe(&channel))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        }
        .await;
        if let Some(pubsub) = subscribed {
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(());
                }
                // Whatever was published while we were away is lost.
                None => {
                    let _ = events.send(StoreEvent::Resync);
                }
            }
            tracing::debug!(%channel, "store event listener subscribed");
            backoff = LISTENER_MIN_BACKOFF;
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(LISTENER_PING_EVERY);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping.reset();
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else {
                            tracing::warn!(%channel, "store event listener lost redis, resubscribing");
                            break;
                        };
                        match serde_json::from_slice::<WireEvent>(msg.get_payload_bytes()) {
                            Ok(e) => e.forward(&events),
                            Err(e) => tracing::warn!(error = %e, "undecodable store event"),
                        }
                    }
                    _ = ping.tick() => {
                        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await;
                        if !matches!(answer, Ok(Ok(_))) {
                            tracing::warn!(%channel, "store event listener: redis did not answer a ping, resubscribing");
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTENER_MAX_BACKOFF);
    }
}

#[async_trait]
impl JobStore for RedisStore {
    fn queue_name(&self, script_type: ScriptType) -> String {
        self.queue_key(script_type)
    }

    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let mut job = job.clone();
        job.status = JobStatus::Created;
        let mut args = vec![
            self.config.prefix.clone(),
            job.id.to_string(),
            to_ms(job.created_at).to_string(),
            job.prerequisites.len().to_string(),
        ];
        args.extend(job.prerequisites.iter().map(JobId::to_string));
        for (k, v) in encode_job(&job) {
            args.push(k.to_owned());
            args.push(v);
        }
        let keys = [self.job_key(job.id), self.key("jobs")];
        let reply = self.run(&SCRIPTS.create, &keys, args).await?;
        match reply.as_slice() {
            [ok] if ok == "OK" => Ok(()),
            [code] if code == "EXISTS" => Err(StoreError::AlreadyExists(job.id)),
            [code, p] if code == "PREREQ_MISSING" => Err(StoreError::PrerequisiteNotFound(
                JobId::parse(p).map_err(|_| unexpected("create", &reply))?,
            )),
            other => Err(unexpected("create", other)),
        }
    }

    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            self.now_ms().to_string(),
        ];
        let reply = self.run(&SCRIPTS.start, &[self.job_key(id)], args).await?;
        match reply.as_slice() {
            [ok, status] if ok == "OK" => parse_status(id, status),
            [code] if code == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            [code, status] if code == "BAD_STATE" => Err(StoreError::InvalidTransition {
                id,
                from: parse_status(id, status)?,
                op: "start",
            }),
            other => Err(unexpected("start", other)),
        }
    }

    async fn claim(
        &self,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = trunc_ms(self.clock.now());
        let until = trunc_ms(deadline(now, lease));
        let mut inv = SCRIPTS.claim.prepare_invoke();
        inv.key(self.queue_key(script_type))
            .key(self.key("leases"))
            .arg(&self.config.prefix)
            .arg(max)
            .arg(owner)
            .arg(to_ms(until))
            .arg(to_ms(now));
        let reply: Vec<redis::Value> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let (jobs, bad) = decode_claimed(reply, owner, now, until)?;
        // A job that cannot be decoded cannot be run: it ends now, rather than waiting
        // for its lease to expire and being claimed again, attempt after attempt.
        for job in bad {
            tracing::error!(job = %job.id, reason = %job.reason, "claimed a job that does not decode; failing it");
            if let Some(attempt) = job.attempt {
                let error = JobError::new(JobError::CORRUPT, job.reason);
                if let Err(e) = self.fail(job.id, attempt, error).await {
                    tracing::warn!(job = %job.id, error = %e, "could not fail the undecodable job; its lease will expire");
                }
            }
        }
        Ok(jobs)
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Vec<JobId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            self.config.prefix.clone(),
            owner.to_owned(),
            to_ms(deadline(self.clock.now(), lease)).to_string(),
        ];
        args.extend(ids.iter().map(JobId::to_string));
        let lost = self
            .run(&SCRIPTS.renew, &[self.key("leases")], args)
            .await?;
        lost.iter()
            .map(|s| JobId::parse(s).map_err(|_| unexpected("renew", &lost)))
            .collect()
    }

    async fn finish(&self, id: JobId, attempt: u32, output: String) -> Result<(), StoreError> {
        let item = Finished {
            id,
            attempt,
            output,
        };
        let mut results = self.finish_many(&[item]).await;
        results
            .pop()
            .unwrap_or_else(|| Err(unexpected("finish", &[])))
    }

    async fn finish_many(&self, items: &[Finished]) -> Vec<Result<(), StoreError>> {
        if items.is_empty() {
            return Vec::new();
        }
        let mut inv = SCRIPTS.finish_batch.prepare_invoke();
        inv.key(self.key("leases"))
            .arg(&self.config.prefix)
            .arg(self.now_ms());
        for item in items {
            inv.arg(item.id.to_string())
                .arg(item.attempt)
                .arg(&item.output);
        }
        let replies: Result<Vec<Vec<String>>, _> = inv.invoke_async(&mut self.conn.clone()).await;
        match replies {
            Ok(replies) if replies.len() == items.len() => items
                .iter()
                .zip(&replies)
                .map(|(item, reply)| Self::cas_reply(item.id, item.attempt, "finish", reply))
                .collect(),
            Ok(replies) => {
                let e = StoreError::Unavailable(format!(
                    "redis finish: {} replies for {} jobs",
                    replies.len(),
                    items.len()
                ));
                vec![Err(e); items.len()]
            }
            Err(e) => vec![Err(unavailable(e)); items.len()],
        }
    }

    async fn fail(&self, id: JobId, attempt: u32, error: JobError) -> Result<(), StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            attempt.to_string(),
            to_json(&error),
            self.now_ms().to_string(),
        ];
        let reply = self.run(&SCRIPTS.fail, &[self.job_key(id)], args).await?;
        Self::cas_reply(id, attempt, "fail", &reply)
    }

    async fn retry_later(
        &self,
        id: JobId,
        attempt: u32,
        not_before: DateTime<Utc>,
        last_error: Option<JobError>,
    ) -> Result<(), StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            attempt.to_string(),
            to_ms(not_before).to_string(),
            last_error.map(|e| to_json(&e)).unwrap_or_default(),
            self.now_ms().to_string(),
        ];
        let keys = [self.job_key(id), self.key("delayed")];
        let reply = self.run(&SCRIPTS.retry_later, &keys, args).await?;
        Self::cas_reply(id, attempt, "retry_later", &reply)
    }

    async fn release(&self, id: JobId, attempt: u32) -> Result<(), StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            attempt.to_string(),
            self.now_ms().to_string(),
        ];
        let reply = self
            .run(&SCRIPTS.release, &[self.job_key(id)], args)
            .await?;
        Self::cas_reply(id, attempt, "release", &reply)
    }

    async fn promote_due(&self, max: usize) -> Result<usize, StoreError> {
        if max == 0 {
            return Ok(0);
        }
        let mut inv = SCRIPTS.promote_due.prepare_invoke();
        inv.key(self.key("delayed"))
            .arg(&self.config.prefix)
            .arg(self.now_ms())
            .arg(max);
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn reclaim_expired(&self, max: usize) -> Result<Vec<JobId>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let args = vec![
            self.config.prefix.clone(),
            self.now_ms().to_string(),
            max.to_string(),
        ];
        let ids = self
            .run(&SCRIPTS.reclaim_expired, &[self.key("leases")], args)
            .await?;
        ids.iter()
            .map(|s| JobId::parse(s).map_err(|_| unexpected("reclaim_expired", &ids)))
            .collect()
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            self.now_ms().to_string(),
            // The status in the message is the one before cancelling; Lua doesn't know
            // it in advance, so the message stays generic.
            to_json(&JobError::cancelled("cancelled before it ran")),
        ];
        let keys = [self.job_key(id), self.key("delayed")];
        let reply = self.run(&SCRIPTS.cancel, &keys, args).await?;
        match reply.as_slice() {
            [c] if c == "CANCELLED" => Ok(CancelOutcome::Cancelled),
            [c] if c == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            [c, status] if c == "TERMINAL" => {
                Ok(CancelOutcome::AlreadyTerminal(parse_status(id, status)?))
            }
            [c, owner, attempt] if c == "RUNNING" => Ok(CancelOutcome::Running {
                owner: owner.clone(),
                attempt: attempt
                    .parse()
                    .map_err(|_| corrupt(id, format!("bad attempt {attempt:?}")))?,
            }),
            other => Err(unexpected("cancel", other)),
        }
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        let h: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.job_key(id))
            .await
            .map_err(unavailable)?;
        if h.is_empty() {
            return Err(StoreError::NotFound(id));
        }
        decode_job(id, h)
    }

    async fn list_ids(&self) -> Result<Vec<JobId>, StoreError> {
        let raw: Vec<String> = self
            .conn
            .clone()
            .zrange(self.key("jobs"), 0, -1)
            .await
            .map_err(unavailable)?;
        Ok(raw
            .iter()
            .filter_map(|s| match JobId::parse(s) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a bad id in the job index");
                    None
                }
            })
            .collect())
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        let args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            self.now_ms().to_string(),
        ];
        let keys = [
            self.job_key(id),
            self.key("leases"),
            self.key("delayed"),
            self.key("jobs"),
        ];
        let reply = self.run(&SCRIPTS.delete, &keys, args).await?;
        match reply.as_slice() {
            [ok] if ok == "OK" => Ok(()),
            [c] if c == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            other => Err(unexpected("delete", other)),
        }
    }

    async fn clear_all(&self) -> Result<(), StoreError> {
        loop {
            let mut inv = SCRIPTS.clear_batch.prepare_invoke();
            inv.key(self.key("jobs"))
                .arg(&self.config.prefix)
                .arg(CLEAR_BATCH);
            let removed: usize = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            if removed == 0 {
                break;
            }
        }
        let mut keys: Vec<String> = ScriptType::ALL.iter().map(|&t| self.queue_key(t)).collect();
        keys.push(self.key("delayed"));
        keys.push(self.key("leases"));
        let _: usize = self.conn.clone().unlink(keys).await.map_err(unavailable)?;
        Ok(())
    }

    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        let mut args = vec![
            self.config.prefix.clone(),
            id.to_string(),
            self.config.max_log_lines.max(1).to_string(),
        ];
        // Only the newest max_log_lines can survive the trim: don't ship the rest.
        let skip = lines.len().saturating_sub(self.config.max_log_lines.max(1));
        args.extend(
            lines[skip..]
                .iter()
                .map(|l| truncate_line(l, self.config.max_log_line_len)),
        );
        let keys = [self.job_key(id), format!("{}:logs", self.job_key(id))];
        let reply = self.run(&SCRIPTS.append_logs, &keys, args).await?;
        match reply.as_slice() {
            [ok] if ok == "OK" => Ok(()),
            [c] if c == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            other => Err(unexpected("append_logs", other)),
        }
    }

    async fn logs(&self, id: JobId) -> Result<Vec<String>, StoreError> {
        let key = self.job_key(id);
        let (exists, lines): (bool, Vec<String>) = redis::pipe()
            .atomic()
            .exists(&key)
            .lrange(format!("{key}:logs"), 0, -1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if !exists {
            return Err(StoreError::NotFound(id));
        }
        Ok(lines)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
