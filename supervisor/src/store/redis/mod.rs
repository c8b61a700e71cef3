//! The Redis store: the shared store several supervisor instances can use at once.
//!
//! # Modules
//! - `mod.rs` (here): [`RedisStore`] and its [`JobStore`] impl: arguments in, replies out.
//! - `scripts.rs`: the Lua script registry (`lua/*.lua`, `common.lua` prepended).
//! - `codec.rs`: a job <-> its HASH fields (pure, unit-tested on plain maps).
//! - `claim.rs`: the claim reply decoder and the one list of fields claim returns.
//! - `events.rs`: the pub/sub wire events and the listener task.
//!
//! # Key layout
//! Every key lives under a configurable prefix (default `hero`). Jobs live in key
//! namespaces (`spaces.rs`): `<prefix>` below is the job's namespace, the prefix itself
//! for the default one, `<prefix>:{c<N>}` for numbered context N's (its id says which).
//! Server-wide: `<prefix>:spaces` (SET, the numbered contexts holding jobs),
//! `<prefix>:ready:<ScriptType>` (SET, the numbered contexts with ready jobs of the
//! type), `<prefix>:routes` (HASH, the open lanes) and the event channel.
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
//! | `<prefix>:status:<Status>` | ZSET | index per status, score `created_at` ms: the status filter of `list` |
//! | `<prefix>:backfill` | STRING | the upgrade walk's cursor over `<prefix>:jobs` (`<ms> <id>`), `done` once every older job is indexed; set to `done` at connect when `<prefix>:jobs` is empty (mark_indexed.lua) |
//! | `<prefix>:counts` | HASH | `type:<ScriptType>`: jobs stored per script type |
//! | `<prefix>:done:<Finished\|Error>` | ZSET | ended jobs per terminal status, score = when it ended (ms; rescored to when retention found it still needed): the retention order |
//! | `<prefix>:job:<id>:required_by` | SET | ids of jobs created naming this one as a prerequisite; pruned by retention of the ones that ended |
//! | `<prefix>:events` | pub/sub channel | compact JSON events: `{"k":"job","id":..,"status":..}`, `{"k":"work","script_type":..}`, `{"k":"log","id":..}`, `{"k":"cancel","id":..}`; on a cluster with sharded pub/sub, each namespace's own `<namespace>:events` (SPUBLISH), and `<prefix>:{s}:events` for `{"k":"space","c":N}` (`events.rs`) |
//!
//! # Atomicity
//! Every change that touches more than one key is one Lua script
//! (`src/store/redis/lua/*.lua`, each headed by its KEYS, ARGV and Returns; `common.lua` is
//! prepended to each). Scripts publish their events themselves, so an event is never
//! sent for a change that did not happen. "Now" is the store's [`Clock`], passed in ARGV.
//! Scripts compute the keys of other jobs (dependents, prerequisites) themselves, in
//! the namespace they were called for (a job waits only on jobs of its own namespace),
//! so every key of a call shares its namespace's hash tag. On a Redis Cluster
//! ([`RedisStore::connect_cluster`]) the default namespace and the server-wide keys get
//! hash tags too, and the scripts leave the server-wide keys to the Rust side
//! (ARCHITECTURE.md, "Redis Cluster").
//!
//! # Connections
//! Commands go through a `RedisConn` (`records.rs`): a connection manager on one Redis
//! (multiplexed, reconnects after errors), a cluster connection on a cluster (follows
//! MOVED/ASK and failovers),
//! with connection and response timeouts, so a dead Redis gives
//! [`StoreError::Unavailable`] within seconds rather than a hang. Pub/sub runs on a
//! connection of its own (on a cluster with sharded pub/sub, one RESP3 cluster connection
//! subscribed to every namespace's channel on its master), in one background task that
//! forwards events to the in-process
//! broadcast channel, pings Redis every few seconds (a connection that went silent is
//! replaced, not waited on forever) and resubscribes after a failure, then sends
//! [`StoreEvent::Resync`]: waiters re-read the state they care about.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Client, RedisError, Script};
use tokio::sync::{broadcast, oneshot};

use self::claim::{CLAIM_FIELDS, decode_claimed};
use self::codec::{corrupt, decode_job, encode_job, parse_status, to_json};
use self::events::{ListenerGuard, ShardRequests, Source, listen};
use self::records::RedisConn;
use self::scripts::{CLUSTER_PLAIN_SCRIPTS, CLUSTER_SCRIPTS, SCRIPTS, Scripts};
use self::spaces::{Layout, Numbered};
use super::{
    CancelOutcome, ClaimedJob, Completion, EVENT_CHANNEL_CAPACITY, JobCounts, JobFilter, JobPage,
    JobStore, JobSummary, ListCursor, Outcome, StoreConfig, StoreError, StoreEvent, Trimmed,
    deadline, from_ms, to_ms, trunc_ms, truncate_line,
};
use crate::clock::Clock;
use crate::job::{Job, JobError, JobId, JobStatus, ScriptType, context_number};

mod claim;
mod codec;
mod events;
pub(crate) mod records;
mod scripts;
mod spaces;

/// Time allowed to open a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one command or script. Scripts are short (batches are bounded), so
/// a Redis that doesn't answer within this is treated as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs removed per `clear_all` step (one script call each).
const CLEAR_BATCH: usize = 500;
/// Members of `:required_by` sets one retention call may look at (and prune), so a
/// prerequisite of very many jobs costs several short calls, not one long one.
const TRIM_CHECK_BUDGET: usize = 2000;
/// The terminal statuses, each with its retention index `<prefix>:done:<status>`.
const TERMINAL: [JobStatus; 2] = [JobStatus::Finished, JobStatus::Error];
/// On a cluster: how often retention checks the ready sets against the queues
/// (`repair_ready`), in ms.
const READY_REPAIR_EVERY_MS: i64 = 30_000;
/// On a cluster: how long the write that acknowledges a job (create, start) waits for a
/// replica to confirm it (`WAIT 1`).
const REPLICA_WAIT: Duration = Duration::from_secs(3);

/// The Redis-backed [`JobStore`]. See the module docs for the key layout.
#[derive(Debug)]
pub struct RedisStore {
    conn: RedisConn,
    /// The writes that acknowledge a job (create, start) and their `WAIT`: on a cluster
    /// a connection of their own, since `WAIT` must follow the write on its connection
    /// and blocks that connection while it waits (up to [`REPLICA_WAIT`] per write when a
    /// master has no replica in sync): claims, completions, renewals and reads on
    /// `conn` do not queue behind it. On one Redis, `conn` again (no `WAIT`).
    acks: RedisConn,
    /// The script registry of the mode (one Redis or a cluster).
    scripts: &'static Scripts,
    /// Key names: the prefix, and whether every key carries a hash tag (cluster).
    layout: Layout,
    /// On a cluster with sharded pub/sub: events go on each namespace's own channel
    /// (`<namespace>:events`, SPUBLISH), not on the server-wide one.
    sharded: bool,
    /// With sharded pub/sub: asks the listener to subscribe to a context before this
    /// process creates its first job there.
    shard_requests: Option<ShardRequests>,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<StoreEvent>,
    /// Whether numbered namespaces exist, as far as this process knows.
    numbered: Arc<Numbered>,
    /// Shared claims so far: where the next one starts its turn over the namespaces.
    turn: AtomicUsize,
    /// On a cluster: when retention last re-entered contexts with queued work in the
    /// ready sets (store clock, ms; see `trim_finished`).
    ready_repaired: AtomicI64,
    _listener: ListenerGuard,
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
        let conn = records::connect_with(url, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
            .await
            .map_err(unavailable)?;
        let acks = conn.clone();
        Self::start(conn, acks, vec![client], Vec::new(), config, clock).await
    }

    /// Connects to the Redis Cluster that `nodes` (seed URLs `redis://host:port`, any
    /// of its nodes; a few are enough, the rest is discovered) belong to, in cluster
    /// mode: every key carries a hash tag (ARCHITECTURE.md, "Redis Cluster"). Events
    /// use sharded pub/sub when every master has it (Redis 7+: each namespace's channel
    /// subscribed to on its master); else plain pub/sub, subscribed to on one node at a
    /// time (a PUBLISH reaches every node), moving to the next seed when it fails.
    pub async fn connect_cluster(
        nodes: &[String],
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        if nodes.is_empty() {
            return Err(StoreError::Unavailable(
                "no redis cluster nodes given".to_owned(),
            ));
        }
        let clients = nodes
            .iter()
            .map(|u| Client::open(u.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {:?}", e.kind())))?;
        let conn = records::connect_cluster(nodes, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
            .await
            .map_err(unavailable)?;
        let acks = records::connect_cluster(nodes, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
            .await
            .map_err(unavailable)?;
        Self::start(conn, acks, clients, nodes.to_vec(), config, clock).await
    }

    /// The store on `conn` (`acks` for the acknowledged writes), with its event
    /// listener: on one Redis or a cluster without sharded pub/sub, on `clients` (tried
    /// in turn); on a cluster with it, on the cluster of the seed URLs `nodes`.
    async fn start(
        conn: RedisConn,
        acks: RedisConn,
        clients: Vec<Client>,
        nodes: Vec<String>,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let cluster = conn.is_cluster();
        let sharded = cluster && conn.has_sharded_pubsub().await.map_err(unavailable)?;
        if cluster && !sharded {
            tracing::warn!(
                "redis cluster without sharded pub/sub (SPUBLISH, redis 7+): store events go \
                 over plain PUBLISH, which the cluster forwards to every node"
            );
        }
        let layout = Layout {
            prefix: config.prefix.clone(),
            cluster,
        };
        let (source, shard_requests) = if sharded {
            let (requests, shared, rx) = ShardRequests::new();
            let source = Source::Sharded {
                nodes,
                layout: layout.clone(),
                shared,
                requests: rx,
            };
            (source, Some(requests))
        } else {
            let source = Source::Plain {
                clients,
                channel: format!("{}:events", config.prefix),
            };
            (source, None)
        };
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let numbered = Arc::new(Numbered::default());
        let task = tokio::spawn(listen(source, events.clone(), numbered.clone(), ready_tx));
        let listener = ListenerGuard(task.abort_handle());
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(StoreError::Unavailable(
                    "redis event subscription failed".to_owned(),
                ));
            }
        }
        let store = RedisStore {
            conn,
            acks,
            scripts: match (cluster, sharded) {
                (false, _) => &SCRIPTS,
                (true, true) => &CLUSTER_SCRIPTS,
                (true, false) => &CLUSTER_PLAIN_SCRIPTS,
            },
            layout,
            sharded,
            shard_requests,
            config,
            clock,
            events,
            numbered,
            turn: AtomicUsize::new(0),
            ready_repaired: AtomicI64::new(i64::MIN),
            _listener: listener,
        };
        store.mark_indexed().await;
        Ok(store)
    }

    /// A store with no jobs yet has nothing for the upgrade walk (`backfill_indexes`) to
    /// index: mark the walk done (mark_indexed.lua), so retention never walks the jobs
    /// this version indexes itself. Best effort: when it fails, the walk runs as for an
    /// upgraded store (the same result, only more work).
    async fn mark_indexed(&self) {
        let default = self.space(None);
        let marked: Result<i64, _> = self
            .scripts
            .mark_indexed
            .key(format!("{default}:jobs"))
            .key(format!("{default}:backfill"))
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(e) = marked {
            tracing::debug!(error = %unavailable(e), "could not mark a new store as indexed");
        }
    }

    /// The key of job `id`'s hash, in its namespace.
    fn job_key(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.layout.space_of(id))
    }

    /// A server-wide key (`<prefix>:<name>`; `<prefix>:{s}:<name>` on a cluster).
    fn key(&self, name: &str) -> String {
        self.layout.server_key(name)
    }

    /// The namespace of `context` (`None`: the default one).
    fn space(&self, context: Option<u32>) -> String {
        self.layout.space(context)
    }

    /// The namespace of job `id`.
    fn space_of(&self, id: JobId) -> String {
        self.layout.space_of(id)
    }

    fn queue_key(&self, script_type: ScriptType) -> String {
        super::queue_name(&self.space(None), script_type)
    }

    /// On a cluster, the ready sets are kept here, not by the scripts (another slot):
    /// after a script that may have queued work in numbered context `context`'s
    /// namespace, enter it in the ready set of each type whose queue there is not
    /// empty (one round trip for the lengths, one for the adds when any). Nothing to do
    /// on one Redis or for the default namespace.
    async fn mark_ready(&self, context: Option<u32>) -> Result<(), StoreError> {
        let Some(n) = context.filter(|_| self.layout.cluster) else {
            return Ok(());
        };
        let space = self.space(Some(n));
        let mut pipe = redis::pipe();
        for t in ScriptType::ALL {
            pipe.llen(super::queue_name(&space, t));
        }
        let lens: Vec<usize> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        // Each SADD on its own, not one pipeline: redis-rs sends a cluster pipeline
        // that met an ASK (a ready set already moved, mid-migration) to the target again
        // as a whole, with ASKING, so the other sets' SADDs would create them on the
        // target too while the source still has them (`MIGRATE` then fails, BUSYKEY):
        // seen in `tests/cluster_migration.rs`.
        let adds: Vec<redis::Cmd> = ScriptType::ALL
            .iter()
            .zip(lens)
            .filter(|(_, len)| *len > 0)
            .map(|(t, _)| {
                let mut cmd = redis::cmd("SADD");
                cmd.arg(self.key(&format!("ready:{t}"))).arg(n);
                cmd
            })
            .collect();
        if !adds.is_empty() {
            let _: Vec<i64> = self.conn.query_each(adds).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// On a cluster, after a claim from context `n`'s queue of `script_type` that may
    /// have emptied it: leave the type's ready set, then look again and come back if
    /// the queue is not empty, so work queued meanwhile (whose `mark_ready` may have
    /// run before the removal) is never left out.
    async fn unmark_ready(&self, n: u32, script_type: ScriptType) -> Result<(), StoreError> {
        let ready = self.key(&format!("ready:{script_type}"));
        let queue = super::queue_name(&self.space(Some(n)), script_type);
        let mut conn = self.conn.clone();
        let () = conn.srem(&ready, n).await.map_err(unavailable)?;
        let len: usize = conn.llen(&queue).await.map_err(unavailable)?;
        if len > 0 {
            let () = conn.sadd(&ready, n).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// On a cluster, at most every [`READY_REPAIR_EVERY_MS`]: enters every context in
    /// `numbered` whose queue of a type is not empty in that type's ready set. The
    /// ready sets are kept by commands beside the scripts (`mark_ready`): work queued by
    /// a script whose `mark_ready` never ran (the process died in between, or Redis
    /// failed it) is found again here, by whichever instance runs retention.
    async fn repair_ready(&self, numbered: &[u32], now: i64) {
        if !self.layout.cluster {
            return;
        }
        let last = self.ready_repaired.load(Ordering::Relaxed);
        if now.saturating_sub(last) < READY_REPAIR_EVERY_MS
            || self
                .ready_repaired
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for &n in numbered {
            if let Err(e) = self.mark_ready(Some(n)).await {
                tracing::warn!(error = %e, "could not check a context's ready sets");
                return;
            }
        }
    }

    /// `set_lane` on a cluster, where `routes` and the context's queue are in two slots:
    /// the route first, then (closing, with jobs waiting) the context back in the ready
    /// set and a `work` event, as route.lua does in one step on one Redis.
    async fn set_lane_apart(
        &self,
        context: u32,
        script_type: ScriptType,
        open: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let field = format!("{context}:{script_type}");
        if open {
            let () = conn
                .hset(self.key("routes"), &field, "1")
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let removed: usize = conn
            .hdel(self.key("routes"), &field)
            .await
            .map_err(unavailable)?;
        let queue = super::queue_name(&self.space(Some(context)), script_type);
        let waiting: usize = conn.llen(&queue).await.map_err(unavailable)?;
        if removed > 0 && waiting > 0 {
            self.mark_ready(Some(context)).await?;
            let event =
                serde_json::json!({"k": "work", "script_type": script_type.as_str(), "c": context});
            self.publish(Some(context), event.to_string()).await?;
        }
        Ok(())
    }

    /// Publishes `event` (JSON) about namespace `context` as the scripts do (common.lua
    /// `publish`): SPUBLISH on the namespace's own channel with sharded pub/sub, else
    /// PUBLISH on the server-wide one.
    async fn publish(&self, context: Option<u32>, event: String) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        if self.sharded {
            let () = redis::cmd("SPUBLISH")
                .arg(format!("{}:events", self.space(context)))
                .arg(event)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        } else {
            let () = conn
                .publish(format!("{}:events", self.config.prefix), event)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// On a cluster, waits until a replica has the writes that acknowledge a job (the
    /// namespace of `key`): see ARCHITECTURE.md "Redis Cluster". A replica that does not
    /// confirm within the response timeout is [`StoreError::Unavailable`]: the write
    /// may or may not survive a failover.
    async fn replicated(&self, key: &str) -> Result<(), StoreError> {
        if !self.layout.cluster {
            return Ok(());
        }
        match self.acks.wait_replicated(key, REPLICA_WAIT).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Unavailable(
                "redis: no replica confirmed the write in time".to_owned(),
            )),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The numbered contexts whose namespaces hold jobs (`<prefix>:spaces`), sorted.
    async fn numbered_spaces(&self) -> Result<Vec<u32>, StoreError> {
        let members: Vec<String> = self
            .conn
            .clone()
            .smembers(self.key("spaces"))
            .await
            .map_err(unavailable)?;
        let mut numbers: Vec<u32> = members.iter().filter_map(|m| m.parse().ok()).collect();
        numbers.sort_unstable();
        self.numbered.learnt(!numbers.is_empty());
        Ok(numbers)
    }

    /// Every namespace holding jobs, as key prefixes: the default one first.
    async fn all_spaces(&self) -> Result<Vec<String>, StoreError> {
        let numbered = self.numbered_spaces().await?;
        Ok(std::iter::once(self.space(None))
            .chain(numbered.into_iter().map(|n| self.space(Some(n))))
            .collect())
    }

    /// Whether a shared claim must look beyond the default queue.
    async fn numbered_exist(&self) -> Result<bool, StoreError> {
        if let Some(known) = self.numbered.known() {
            return Ok(known);
        }
        let n: usize = self
            .conn
            .clone()
            .scard(self.key("spaces"))
            .await
            .map_err(unavailable)?;
        self.numbered.learnt(n > 0);
        Ok(n > 0)
    }

    /// The numbered namespaces among `spaces` with a member of `zset` scored in
    /// `(-inf, max]` (`max` may be exclusive, `(ms`): one pipelined round trip, so a
    /// sweep calls its script only where there is something to do.
    async fn spaces_with_due(&self, zset: &str, max: &str) -> Result<Vec<u32>, StoreError> {
        let numbered = self.numbered_spaces().await?;
        if numbered.is_empty() {
            return Ok(Vec::new());
        }
        let spaces: Vec<String> = numbered.iter().map(|&n| self.space(Some(n))).collect();
        let cmds = spaces
            .iter()
            .map(|sp| redis::Cmd::zcount(format!("{sp}:{zset}"), "-inf", max))
            .collect();
        let due: Vec<usize> = self.conn.query_each(cmds).await.map_err(unavailable)?;
        Ok(numbered
            .into_iter()
            .zip(due)
            .filter(|(_, n)| *n > 0)
            .map(|(c, _)| c)
            .collect())
    }

    /// The numbered contexts with ready jobs of `script_type` that no lane routes to a
    /// registered runner (ready.lua).
    async fn ready_contexts(&self, script_type: ScriptType) -> Result<Vec<u32>, StoreError> {
        let members: Vec<String> = self
            .scripts
            .ready
            .key(self.key(&format!("ready:{script_type}")))
            .key(self.key("routes"))
            .arg(script_type.as_str())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut numbers: Vec<u32> = members.iter().filter_map(|m| m.parse().ok()).collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// claim.lua on the queue of `script_type` in namespace `space`.
    async fn claim_from(
        &self,
        context: Option<u32>,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let space = &self.space(context);
        let now = trunc_ms(self.clock.now());
        let until = trunc_ms(deadline(now, lease));
        let mut inv = self.scripts.claim.prepare_invoke();
        inv.key(super::queue_name(space, script_type))
            .key(format!("{space}:leases"))
            .arg(space)
            .arg(max)
            .arg(owner)
            .arg(to_ms(until))
            .arg(to_ms(now))
            .arg(script_type.as_str());
        for name in CLAIM_FIELDS {
            inv.arg(name);
        }
        let mut reply: Vec<redis::Value> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        // On a cluster, a numbered namespace's reply ends with whether the queue is
        // empty now (claim.lua).
        let emptied = match context {
            Some(n) if self.layout.cluster => {
                matches!(reply.pop(), Some(redis::Value::Int(1))).then_some(n)
            }
            _ => None,
        };
        let claimed = decode_claimed(reply, owner, now, until)?;
        if let Some(n) = emptied
            && let Err(e) = self.unmark_ready(n, script_type).await
        {
            // The jobs are claimed: answer them. The context stays in the ready set,
            // which costs the next claim an empty LPOP, nothing else.
            tracing::warn!(error = %e, "could not take a context out of a ready set");
        }
        Ok(claimed)
    }

    /// complete_batch.lua for `items`, all of namespace `space`.
    async fn complete_in(&self, space: &str, items: &[Completion]) -> Vec<Result<(), StoreError>> {
        let mut inv = self.scripts.complete_batch.prepare_invoke();
        inv.key(format!("{space}:leases"))
            .key(format!("{space}:delayed"))
            .arg(space)
            .arg(self.now_ms());
        for item in items {
            // The output is the bulk of a batch: borrowed, not copied.
            let (kind, a, b): (&str, Cow<'_, str>, Cow<'_, str>) = match &item.outcome {
                Outcome::Finish(output) => ("finish", output.into(), "".into()),
                Outcome::Fail(error) => ("fail", to_json(error).into(), "".into()),
                Outcome::RetryLater { not_before, error } => (
                    "retry",
                    to_ms(*not_before).to_string().into(),
                    error.as_ref().map(to_json).unwrap_or_default().into(),
                ),
                Outcome::Release => ("release", "".into(), "".into()),
            };
            inv.arg(kind)
                .arg(item.id.to_string())
                .arg(item.attempt)
                .arg(a.as_ref())
                .arg(b.as_ref());
        }
        let replies: Result<Vec<Vec<String>>, _> = inv.invoke_async(&mut self.conn.clone()).await;
        if replies.is_ok()
            && let Some(context) = items.first().map(|i| i.id.context())
            && let Err(e) = self.mark_ready(context).await
        {
            // The outcomes are stored; the work they queued waits for the next call
            // that marks the context ready (ARCHITECTURE.md, "Redis Cluster").
            tracing::warn!(error = %e, "could not mark a context ready after completions");
        }
        match replies {
            Ok(replies) if replies.len() == items.len() => items
                .iter()
                .zip(&replies)
                .map(|(item, reply)| {
                    Self::cas_reply(item.id, item.attempt, item.outcome.op(), reply)
                })
                .collect(),
            Ok(replies) => {
                let e = StoreError::Unavailable(format!(
                    "redis complete: {} replies for {} jobs",
                    replies.len(),
                    items.len()
                ));
                vec![Err(e); items.len()]
            }
            Err(e) => vec![Err(unavailable(e)); items.len()],
        }
    }

    /// promote_due.lua in namespace `space`.
    async fn promote_in(&self, context: Option<u32>, max: usize) -> Result<usize, StoreError> {
        let space = self.space(context);
        let mut inv = self.scripts.promote_due.prepare_invoke();
        inv.key(format!("{space}:delayed"))
            .arg(&space)
            .arg(self.now_ms())
            .arg(max);
        let promoted: usize = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if promoted > 0 {
            self.mark_ready(context).await?;
        }
        Ok(promoted)
    }

    /// reclaim_expired.lua in namespace `space`.
    async fn reclaim_in(&self, context: Option<u32>, max: usize) -> Result<Vec<JobId>, StoreError> {
        let space = self.space(context);
        let leases = format!("{space}:leases");
        let args = vec![space, self.now_ms().to_string(), max.to_string()];
        let ids = self
            .run(&self.scripts.reclaim_expired, &[leases], args)
            .await?;
        if !ids.is_empty() {
            self.mark_ready(context).await?;
        }
        ids.iter()
            .map(|s| JobId::parse(s).map_err(|_| unexpected("reclaim_expired", &ids)))
            .collect()
    }

    /// list_page.lua in namespace `space`.
    async fn list_in(
        &self,
        space: &str,
        filter: &JobFilter,
        budget: usize,
    ) -> Result<JobPage, StoreError> {
        let index = match filter.status {
            Some(s) => format!("{space}:status:{s}"),
            None => format!("{space}:jobs"),
        };
        let (cursor_ms, cursor_id) = match filter.after {
            Some(c) => (c.created_ms.to_string(), c.id.to_string()),
            None => (String::new(), String::new()),
        };
        let low = filter.created_after.map_or("-inf".to_owned(), |t| {
            (to_ms(t).saturating_add(1)).to_string()
        });
        let high = filter.created_before.map_or("+inf".to_owned(), |t| {
            (to_ms(t).saturating_sub(1)).to_string()
        });
        let mut inv = self.scripts.list_page.prepare_invoke();
        inv.key(index)
            .arg(space)
            .arg(cursor_ms)
            .arg(cursor_id)
            .arg(low)
            .arg(high)
            .arg(filter.limit.max(1))
            .arg(budget.max(1))
            .arg(filter.status.map(JobStatus::as_str).unwrap_or(""))
            .arg(filter.script_type.map(ScriptType::as_str).unwrap_or(""))
            .arg(filter.context_id.as_deref().unwrap_or(""))
            .arg(filter.caller_id.as_deref().unwrap_or(""));
        for name in SUMMARY_FIELDS {
            inv.arg(name);
        }
        let reply: Vec<Option<String>> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        decode_page(&reply)
    }

    /// create.lua's KEYS and ARGV for `job` (also create_start.lua's).
    fn create_args(&self, job: &Job) -> ([String; 2], Vec<String>) {
        let mut job = job.clone();
        job.status = JobStatus::Created;
        let space = self.space_of(job.id);
        let mut args = vec![
            space.clone(),
            job.id.to_string(),
            to_ms(job.created_at).to_string(),
            job.prerequisites.len().to_string(),
        ];
        args.extend(job.prerequisites.iter().map(JobId::to_string));
        for (k, v) in encode_job(&job) {
            args.push(k.to_owned());
            args.push(v);
        }
        ([self.job_key(job.id), format!("{space}:jobs")], args)
    }

    /// On a cluster, enters numbered context `context` in `spaces` (another slot) before
    /// a script creates jobs there, so a namespace holding jobs is always in it (a
    /// failed create leaves a harmless entry); the first time, with sharded pub/sub,
    /// enter_space.lua announces the context to every event listener, which then
    /// subscribes to its channel. This process's own listener is asked first, so that
    /// the job's events reach it. On one Redis the script does it.
    async fn enter_space(&self, context: Option<u32>) -> Result<(), StoreError> {
        let Some(n) = context.filter(|_| self.layout.cluster) else {
            return Ok(());
        };
        if let Some(requests) = &self.shard_requests {
            requests.ensure(n).await;
        }
        let _added: i64 = self
            .scripts
            .enter_space
            .key(self.key("spaces"))
            .arg(n)
            .arg(self.key("events"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Job `id` was created: a claim must look into numbered namespaces from now on.
    fn created(&self, id: JobId) {
        if id.context().is_some() {
            self.numbered.seen();
        }
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
        Self::run_on(&self.conn, script, keys, args).await
    }

    /// [`RedisStore::run`] for a write that [`RedisStore::replicated`] then waits for:
    /// on `acks`, the connection the `WAIT` is sent on.
    async fn run_acked(
        &self,
        script: &Script,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        Self::run_on(&self.acks, script, keys, args).await
    }

    async fn run_on(
        conn: &RedisConn,
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
        inv.invoke_async(&mut conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Maps the reply to one item of complete_batch.lua.
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

/// The job fields `list_page.lua` returns after `status`, `script_type`, `context_id`
/// and `caller_id` (which it always reads, to filter).
const SUMMARY_FIELDS: [&str; 5] = [
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "attempt",
];

/// The reply of `list_page.lua`: the next position, then per job its id and fields.
fn decode_page(reply: &[Option<String>]) -> Result<JobPage, StoreError> {
    let bad = |what: &str| StoreError::Unavailable(format!("redis list: {what}"));
    let (head, rest) = reply
        .split_at_checked(3)
        .ok_or_else(|| bad("short reply"))?;
    let looked_at = head[2]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("bad count"))?;
    let next = match (&head[0], &head[1]) {
        (Some(ms), Some(id)) if !ms.is_empty() => Some(ListCursor {
            created_ms: ms.parse::<f64>().map_err(|_| bad("bad cursor score"))? as i64,
            id: JobId::parse(id).map_err(|_| bad("bad cursor id"))?,
        }),
        _ => None,
    };
    let width = 5 + SUMMARY_FIELDS.len();
    let mut jobs = Vec::with_capacity(rest.len() / width);
    for row in rest.chunks(width) {
        let [
            Some(id),
            status,
            script_type,
            context_id,
            caller_id,
            created,
            updated,
            started,
            finished,
            attempt,
        ] = row
        else {
            return Err(bad("bad row"));
        };
        let Ok(id) = JobId::parse(id) else {
            tracing::warn!(id = %truncate_line(id, 80), "skipping a bad id in a job index");
            continue;
        };
        let summary = || -> Result<JobSummary, StoreError> {
            let text = |v: &Option<String>, name: &str| {
                v.clone()
                    .ok_or_else(|| corrupt(id, format!("no {name} field")))
            };
            let time = |v: &Option<String>, name: &str| -> Result<Option<_>, StoreError> {
                v.as_deref()
                    .map(|s| {
                        s.parse::<i64>()
                            .ok()
                            .and_then(from_ms)
                            .ok_or_else(|| corrupt(id, format!("bad {name} {s:?}")))
                    })
                    .transpose()
            };
            let status = parse_status(id, &text(status, "status")?)?;
            let script_type = text(script_type, "script_type")?
                .parse::<ScriptType>()
                .map_err(|e| corrupt(id, e.to_string()))?;
            Ok(JobSummary {
                id,
                status,
                script_type,
                context_id: text(context_id, "context_id")?,
                caller_id: text(caller_id, "caller_id")?,
                created_at: time(created, "created_at")?
                    .ok_or_else(|| corrupt(id, "no created_at field"))?,
                updated_at: time(updated, "updated_at")?
                    .ok_or_else(|| corrupt(id, "no updated_at field"))?,
                started_at: time(started, "started_at")?,
                finished_at: time(finished, "finished_at")?,
                attempt: attempt
                    .as_deref()
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| corrupt(id, "bad attempt"))?,
            })
        };
        match summary() {
            Ok(s) => jobs.push(s),
            // One damaged job does not hide the others: `get_job` reports it.
            Err(e) => tracing::warn!(error = %e, "leaving a corrupt job out of a listing"),
        }
    }
    Ok(JobPage {
        jobs,
        next,
        looked_at,
    })
}

/// create.lua's (and create_start.lua's) refusals.
fn create_refused(id: JobId, reply: &[String]) -> StoreError {
    match reply {
        [code] if code == "EXISTS" => StoreError::AlreadyExists(id),
        [code, p] if code == "PREREQ_MISSING" => match JobId::parse(p) {
            Ok(p) => StoreError::PrerequisiteNotFound(p),
            Err(_) => unexpected("create", reply),
        },
        other => unexpected("create", other),
    }
}

fn unexpected(op: &str, reply: &[String]) -> StoreError {
    let s = truncate_line(&format!("{reply:?}"), 100);
    StoreError::Unavailable(format!("redis {op}: unexpected script reply {s}"))
}

#[async_trait]
impl JobStore for RedisStore {
    fn queue_name(&self, script_type: ScriptType) -> String {
        self.queue_key(script_type)
    }

    fn lane_queue_name(&self, context: u32, script_type: ScriptType) -> String {
        super::queue_name(&self.space(Some(context)), script_type)
    }

    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let (keys, args) = self.create_args(job);
        self.enter_space(job.id.context()).await?;
        let reply = self.run_acked(&self.scripts.create, &keys, args).await?;
        match reply.as_slice() {
            [ok] if ok == "OK" => {
                self.created(job.id);
                self.replicated(&keys[0]).await
            }
            other => Err(create_refused(job.id, other)),
        }
    }

    async fn create_started(&self, job: &Job) -> Result<JobStatus, StoreError> {
        let (keys, args) = self.create_args(job);
        self.enter_space(job.id.context()).await?;
        let reply = self
            .run_acked(&self.scripts.create_start, &keys, args)
            .await?;
        match reply.as_slice() {
            [ok, status] if ok == "OK" => {
                self.created(job.id);
                let status = parse_status(job.id, status)?;
                if status == JobStatus::Dispatched {
                    self.mark_ready(job.id.context()).await?;
                }
                self.replicated(&keys[0]).await?;
                Ok(status)
            }
            other => Err(create_refused(job.id, other)),
        }
    }

    async fn create_many(&self, jobs: &[Job], start: bool) -> Result<Vec<JobStatus>, StoreError> {
        // One script per namespace (callers send one); answers put back in order.
        let mut by_space: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            by_space.entry(job.id.context()).or_default().push(i);
        }
        let mut statuses = vec![JobStatus::Created; jobs.len()];
        for (context, places) in by_space {
            let space = self.space(context);
            self.enter_space(context).await?;
            let mut args = vec![space.clone(), if start { "1" } else { "0" }.to_owned()];
            for &i in &places {
                let (_, job_args) = self.create_args(&jobs[i]);
                // create.lua's ARGV less the prefix: id, created, n, prerequisites, then
                // the field/value entries, counted.
                let n = jobs[i].prerequisites.len();
                let (head, fields) = job_args[1..].split_at(3 + n);
                args.extend_from_slice(head);
                args.push(fields.len().to_string());
                args.extend_from_slice(fields);
            }
            let keys = [format!("{space}:jobs")];
            let reply = self
                .run_acked(&self.scripts.create_batch, &keys, args)
                .await?;
            match reply.split_first() {
                Some((ok, answers)) if ok == "OK" && answers.len() == places.len() => {
                    for (&i, status) in places.iter().zip(answers) {
                        statuses[i] = parse_status(jobs[i].id, status)?;
                    }
                    if places.iter().any(|&i| statuses[i] == JobStatus::Dispatched) {
                        self.mark_ready(context).await?;
                    }
                    self.replicated(&keys[0]).await?;
                }
                _ => {
                    let id = match reply.as_slice() {
                        [code, id] if code == "EXISTS" => JobId::parse(id).ok(),
                        _ => None,
                    };
                    return Err(match id {
                        Some(id) => StoreError::AlreadyExists(id),
                        None => create_refused(jobs[places[0]].id, &reply),
                    });
                }
            }
            if context.is_some() {
                self.numbered.seen();
            }
        }
        Ok(statuses)
    }

    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError> {
        let args = vec![self.space_of(id), id.to_string(), self.now_ms().to_string()];
        let key = self.job_key(id);
        let reply = self
            .run_acked(&self.scripts.start, std::slice::from_ref(&key), args)
            .await?;
        match reply.as_slice() {
            [ok, status] if ok == "OK" => {
                let status = parse_status(id, status)?;
                if status == JobStatus::Dispatched {
                    self.mark_ready(id.context()).await?;
                }
                self.replicated(&key).await?;
                Ok(status)
            }
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
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        // The namespaces with ready jobs, starting at the next one in turn; the
        // default queue is always among them (an empty LPOP costs less than asking).
        let mut order = vec![None];
        if self.numbered_exist().await? {
            let ready = self.ready_contexts(script_type).await?;
            order.extend(ready.into_iter().map(Some));
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(turn);
        }
        let mut claimed = Vec::new();
        for &context in &order {
            if claimed.len() >= max {
                break;
            }
            match self
                .claim_from(context, script_type, max - claimed.len(), owner, lease)
                .await
            {
                Ok(got) => claimed.extend(got),
                // What was claimed already is the caller's to run: answer it; the rest
                // waits for the next claim.
                Err(e) if !claimed.is_empty() => {
                    tracing::warn!(error = %e, "claim stopped early");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(claimed)
    }

    async fn claim_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.claim_from(Some(context), script_type, max, owner, lease)
            .await
    }

    async fn set_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        open: bool,
    ) -> Result<(), StoreError> {
        if self.layout.cluster {
            return self.set_lane_apart(context, script_type, open).await;
        }
        let space = self.space(Some(context));
        let _waiting: i64 = self
            .scripts
            .route
            .key(self.key("routes"))
            .key(super::queue_name(&space, script_type))
            .arg(&space)
            .arg(format!("{context}:{script_type}"))
            .arg(if open { "open" } else { "close" })
            .arg(script_type.as_str())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lanes(&self) -> Result<Vec<(u32, ScriptType)>, StoreError> {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(self.key("routes"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut lanes: Vec<(u32, ScriptType)> = fields
            .iter()
            .filter_map(|f| {
                let (context, script_type) = f.split_once(':')?;
                Some((context.parse().ok()?, script_type.parse().ok()?))
            })
            .collect();
        lanes.sort();
        Ok(lanes)
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
        let until = to_ms(deadline(self.clock.now(), lease)).to_string();
        // One script call per namespace among the ids.
        let mut by_space: BTreeMap<Option<u32>, Vec<JobId>> = BTreeMap::new();
        for &id in ids {
            by_space.entry(id.context()).or_default().push(id);
        }
        let mut lost_all = HashSet::new();
        for (context, ids) in by_space {
            let space = self.space(context);
            let mut args = vec![space.clone(), owner.to_owned(), until.clone()];
            args.extend(ids.iter().map(JobId::to_string));
            let lost = self
                .run(&self.scripts.renew, &[format!("{space}:leases")], args)
                .await?;
            for s in &lost {
                lost_all.insert(JobId::parse(s).map_err(|_| unexpected("renew", &lost))?);
            }
        }
        // In the order asked.
        Ok(ids
            .iter()
            .copied()
            .filter(|id| lost_all.contains(id))
            .collect())
    }

    async fn complete(&self, items: &[Completion]) -> Vec<Result<(), StoreError>> {
        let first = match items.first() {
            Some(item) => item.id.context(),
            None => return Vec::new(),
        };
        if items.iter().all(|i| i.id.context() == first) {
            return self.complete_in(&self.space(first), items).await;
        }
        // One script call per namespace, each answer put back in its item's place.
        let mut by_space: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_space.entry(item.id.context()).or_default().push(i);
        }
        let mut out: Vec<Option<Result<(), StoreError>>> = vec![None; items.len()];
        for (context, places) in by_space {
            let group: Vec<Completion> = places.iter().map(|&i| items[i].clone()).collect();
            let answers = self.complete_in(&self.space(context), &group).await;
            for (i, answer) in places.into_iter().zip(answers) {
                out[i] = Some(answer);
            }
        }
        out.into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(StoreError::Unavailable(
                        "redis complete: no answer".to_owned(),
                    ))
                })
            })
            .collect()
    }

    async fn promote_due(&self, max: usize) -> Result<usize, StoreError> {
        if max == 0 {
            return Ok(0);
        }
        let mut promoted = self.promote_in(None, max).await?;
        let now = self.now_ms().to_string();
        for context in self.spaces_with_due("delayed", &now).await? {
            if promoted >= max {
                break;
            }
            promoted += self.promote_in(Some(context), max - promoted).await?;
        }
        Ok(promoted)
    }

    async fn reclaim_expired(&self, max: usize) -> Result<Vec<JobId>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut reclaimed = self.reclaim_in(None, max).await?;
        let before = format!("({}", self.now_ms());
        for context in self.spaces_with_due("leases", &before).await? {
            if reclaimed.len() >= max {
                break;
            }
            let more = self
                .reclaim_in(Some(context), max - reclaimed.len())
                .await?;
            reclaimed.extend(more);
        }
        Ok(reclaimed)
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let space = self.space_of(id);
        let args = vec![
            space.clone(),
            id.to_string(),
            self.now_ms().to_string(),
            // The status in the message is the one before cancelling; Lua doesn't know
            // it in advance, so the message stays generic.
            to_json(&JobError::cancelled("cancelled before it ran")),
        ];
        let keys = [self.job_key(id), format!("{space}:delayed")];
        let reply = self.run(&self.scripts.cancel, &keys, args).await?;
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
        let spaces = self.all_spaces().await?;
        let cmds = spaces
            .iter()
            .map(|space| redis::Cmd::zrange_withscores(format!("{space}:jobs"), 0, -1))
            .collect();
        let raw: Vec<Vec<(String, f64)>> = self.conn.query_each(cmds).await.map_err(unavailable)?;
        let mut all: Vec<(i64, JobId)> = raw
            .into_iter()
            .flatten()
            .filter_map(|(s, score)| match JobId::parse(&s) {
                Ok(id) => Some((score as i64, id)),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a bad id in the job index");
                    None
                }
            })
            .collect();
        if spaces.len() > 1 {
            all.sort_unstable();
        }
        Ok(all.into_iter().map(|(_, id)| id).collect())
    }

    async fn list(&self, filter: &JobFilter, budget: usize) -> Result<JobPage, StoreError> {
        // The namespaces that may hold matching jobs: a numbered context's own, and the
        // default one (jobs of that context stored before namespaces, or of a context
        // that is not a number, live there).
        let spaces = match filter.context_id.as_deref() {
            Some(c) => match context_number(c) {
                Some(n) => vec![self.space(None), self.space(Some(n))],
                None => vec![self.space(None)],
            },
            None => self.all_spaces().await?,
        };
        if let [space] = spaces.as_slice() {
            return self.list_in(space, filter, budget).await;
        }
        let mut pages = Vec::with_capacity(spaces.len());
        for space in &spaces {
            pages.push(self.list_in(space, filter, budget).await?);
        }
        Ok(super::merge_pages(pages, filter.limit.max(1)))
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let spaces = self.all_spaces().await?;
        let open = self.lanes().await?;
        let mut cmds = Vec::new();
        for space in &spaces {
            for s in JobStatus::ALL {
                cmds.push(redis::Cmd::zcard(format!("{space}:status:{s}")));
            }
            for t in ScriptType::ALL {
                cmds.push(redis::Cmd::hget(
                    format!("{space}:counts"),
                    format!("type:{t}"),
                ));
            }
            for t in ScriptType::ALL {
                cmds.push(redis::Cmd::llen(super::queue_name(space, t)));
            }
            cmds.push(redis::Cmd::zcard(format!("{space}:delayed")));
        }
        for &(c, t) in &open {
            cmds.push(redis::Cmd::llen(super::queue_name(&self.space(Some(c)), t)));
        }
        let all: Vec<Option<i64>> = self.conn.query_each(cmds).await.map_err(unavailable)?;
        let mut n = all
            .into_iter()
            .map(|v| u64::try_from(v.unwrap_or(0)).unwrap_or(0));
        let mut take = |len: usize| -> Vec<u64> { (&mut n).take(len).collect() };
        let add = |sum: &mut Vec<u64>, more: Vec<u64>| {
            sum.resize(more.len().max(sum.len()), 0);
            for (s, m) in sum.iter_mut().zip(more) {
                *s += m;
            }
        };
        let (mut statuses, mut types, mut queues, mut delayed) = (vec![], vec![], vec![], 0);
        for _ in &spaces {
            add(&mut statuses, take(JobStatus::ALL.len()));
            add(&mut types, take(ScriptType::ALL.len()));
            add(&mut queues, take(ScriptType::ALL.len()));
            delayed += take(1).first().copied().unwrap_or(0);
        }
        let lanes = take(open.len());
        Ok(JobCounts {
            by_status: JobStatus::ALL.iter().copied().zip(statuses).collect(),
            by_script_type: ScriptType::ALL.iter().copied().zip(types).collect(),
            queued: ScriptType::ALL.iter().copied().zip(queues).collect(),
            lanes: open
                .iter()
                .zip(lanes)
                .map(|(&(c, t), n)| (c, t, n))
                .collect(),
            delayed,
        })
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        let space = self.space_of(id);
        let keys = [
            self.job_key(id),
            format!("{space}:leases"),
            format!("{space}:delayed"),
            format!("{space}:jobs"),
        ];
        let args = vec![space, id.to_string(), self.now_ms().to_string()];
        let reply = self.run(&self.scripts.delete, &keys, args).await?;
        match reply.as_slice() {
            [ok] if ok == "OK" => Ok(()),
            [c] if c == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            other => Err(unexpected("delete", other)),
        }
    }

    async fn trim_finished(&self, max: usize) -> Result<Trimmed, StoreError> {
        let mut out = Trimmed::default();
        if max == 0 {
            return Ok(out);
        }
        let now = self.now_ms();
        let keep = i64::try_from(self.config.keep_finished.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(keep);
        // Each namespace keeps its own `keep_finished_count` per status; numbered ones
        // without ended jobs are skipped (one pipelined count for all of them).
        let mut spaces = vec![self.space(None)];
        let numbered = self.numbered_spaces().await?;
        self.repair_ready(&numbered, now).await;
        if !numbered.is_empty() {
            let mut cmds = Vec::new();
            for &n in &numbered {
                for status in TERMINAL {
                    cmds.push(redis::Cmd::zcard(format!(
                        "{}:done:{status}",
                        self.space(Some(n))
                    )));
                }
            }
            let ended: Vec<usize> = self.conn.query_each(cmds).await.map_err(unavailable)?;
            spaces.extend(
                numbered
                    .iter()
                    .zip(ended.chunks(TERMINAL.len()))
                    .filter(|(_, n)| n.iter().any(|&n| n > 0))
                    .map(|(&n, _)| self.space(Some(n))),
            );
        }
        // `max` per status, as one call would take, shared by the namespaces.
        for status in TERMINAL {
            let mut left = max;
            for space in &spaces {
                if left == 0 {
                    out.more = true;
                    break;
                }
                let mut inv = self.scripts.trim_done.prepare_invoke();
                inv.key(format!("{space}:done:{status}"))
                    .key(format!("{space}:jobs"))
                    .arg(space)
                    .arg(status.as_str())
                    .arg(now)
                    .arg(cutoff)
                    .arg(self.config.keep_finished_count)
                    .arg(left)
                    .arg(TRIM_CHECK_BUDGET);
                let (removed, kept, more): (usize, usize, u8) = inv
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                out.removed += removed;
                out.kept_needed += kept;
                out.more |= more == 1;
                left = left.saturating_sub(removed);
            }
        }
        Ok(out)
    }

    async fn backfill_indexes(&self, max: usize) -> Result<usize, StoreError> {
        if max == 0 {
            return Ok(0);
        }
        let default = self.space(None);
        let mut inv = self.scripts.backfill.prepare_invoke();
        inv.key(format!("{default}:jobs"))
            .key(format!("{default}:backfill"))
            .arg(&default)
            .arg(max)
            .arg(self.now_ms());
        let (seen, indexed): (usize, usize) = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if indexed > 0 {
            tracing::info!(indexed, "indexed jobs stored by an older version");
        }
        Ok(seen)
    }

    async fn clear_all(&self) -> Result<(), StoreError> {
        for space in self.all_spaces().await? {
            loop {
                let mut inv = self.scripts.clear_batch.prepare_invoke();
                inv.key(format!("{space}:jobs"))
                    .arg(&space)
                    .arg(CLEAR_BATCH);
                let removed: usize = inv
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                if removed == 0 {
                    break;
                }
            }
            let mut keys: Vec<String> = ScriptType::ALL
                .iter()
                .map(|&t| super::queue_name(&space, t))
                .collect();
            keys.push(format!("{space}:delayed"));
            keys.push(format!("{space}:leases"));
            keys.extend(TERMINAL.iter().map(|s| format!("{space}:done:{s}")));
            keys.extend(JobStatus::ALL.iter().map(|s| format!("{space}:status:{s}")));
            keys.push(format!("{space}:counts"));
            let _: usize = self.conn.clone().unlink(keys).await.map_err(unavailable)?;
        }
        // The server-wide records of namespaces; the lanes (`<prefix>:routes`) stay
        // open: registrations open them, not jobs.
        let mut keys: Vec<String> = ScriptType::ALL
            .iter()
            .map(|t| self.key(&format!("ready:{t}")))
            .collect();
        keys.push(self.key("spaces"));
        let backfill = format!("{}:backfill", self.space(None));
        if self.layout.cluster {
            // Another slot than the server-wide keys.
            let _: usize = self
                .conn
                .clone()
                .unlink(&backfill)
                .await
                .map_err(unavailable)?;
        } else {
            keys.push(backfill);
        }
        let _: usize = self.conn.clone().unlink(keys).await.map_err(unavailable)?;
        // No key is left, the walk's mark included: its first call finds little to
        // walk and marks it done.
        Ok(())
    }

    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        let mut args = vec![
            self.space_of(id),
            id.to_string(),
            self.config.max_log_lines.max(1).to_string(),
        ];
        // Only the newest max_log_lines can survive the trim: don't ship the rest (but
        // count them, so every line keeps its sequence number).
        let skip = lines.len().saturating_sub(self.config.max_log_lines.max(1));
        args.push(skip.to_string());
        args.extend(
            lines[skip..]
                .iter()
                .map(|l| truncate_line(l, self.config.max_log_line_len)),
        );
        let keys = [self.job_key(id), format!("{}:logs", self.job_key(id))];
        let reply = self.run(&self.scripts.append_logs, &keys, args).await?;
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

    async fn logs_from(
        &self,
        id: JobId,
        from: u64,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let key = self.job_key(id);
        let keys = [key.clone(), format!("{key}:logs")];
        let args = vec![from.to_string(), limit.max(1).to_string()];
        let reply = self.run(&self.scripts.logs_from, &keys, args).await?;
        match reply.as_slice() {
            [c] if c == "NOT_FOUND" => Err(StoreError::NotFound(id)),
            [ok, first, lines @ ..] if ok == "OK" => {
                let first = first.parse().map_err(|_| unexpected("logs_from", &reply))?;
                Ok((first, lines.to_vec()))
            }
            other => Err(unexpected("logs_from", other)),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
