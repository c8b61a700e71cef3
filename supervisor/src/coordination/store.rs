//! Where coordinator jobs and flows live: [`MemoryCoordination`] for the embedded
//! default, [`RedisCoordination`] beside the jobs, so every instance on one Redis sees
//! the same flows.
//!
//! Redis keys (prefix as for jobs, default `hero`); `{c<N>}` is context N's hash tag,
//! the one the per-context job layout will use (ARCHITECTURE.md), so a context's records
//! share a Cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{c<N>}:cjob:<id>` | STRING | coordinator job `id` of context N as JSON |
//! | `<p>:{c<N>}:flow:<id>` | STRING | flow `id` of context N as JSON |
//! | `<p>:{c<N>}:runner:<id>` | STRING | runner `id` registered in context N as JSON |
//! | `<p>:runners` | SET | `<context>:<id>` of every registered runner: what an instance reads at start and every sync, to connect to them all |
//! | `<p>:{c<N>}:message:<id>` | STRING | message `id` of context N as JSON |
//! | `<p>:message_deadlines` | ZSET | `<context>:<id>` of messages with a deadline to check, score unix ms; taken (ZREM) by one instance |
//!
//! A runner's record and its index entry are written by one script on one Redis. On a
//! Redis Cluster (`connect_cluster`) the two keys are in different slots: the index
//! entry is added first, then the record compare-and-set (an entry whose record was
//! never written is skipped by `runners`), and the server-wide keys (`runners`,
//! `message_deadlines`) are under `<prefix>:{s}:` (one slot).
//!
//! A write is a compare-and-set: it names the record it replaces (as read before) and
//! does nothing when that changed meanwhile, so two instances writing at once cannot
//! lose an update; the caller reads again and decides again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::store::records::RedisConn;
use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{FlowRecord, JobRecord, MessageRecord, RunnerRecord};
use crate::store::records::{self, CasSet};

/// Why a coordination store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinationError {
    /// The store could not be reached or failed.
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not decode (edited by hand).
    #[error("corrupt coordination record {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// Coordinator jobs and flows, by `(context, id)`.
#[async_trait]
pub trait CoordinationStore: Send + Sync + std::fmt::Debug + 'static {
    /// Job `id` of `context`.
    async fn job(&self, context: u32, id: u32) -> Result<Option<JobRecord>, CoordinationError>;
    /// Writes `record` if the stored one is still `previous` (`None`: absent). `false`:
    /// it changed meanwhile, nothing written.
    async fn put_job(
        &self,
        record: &JobRecord,
        previous: Option<&JobRecord>,
    ) -> Result<bool, CoordinationError>;
    /// Flow `id` of `context`.
    async fn flow(&self, context: u32, id: u32) -> Result<Option<FlowRecord>, CoordinationError>;
    /// As [`CoordinationStore::put_job`], for a flow.
    async fn put_flow(
        &self,
        record: &FlowRecord,
        previous: Option<&FlowRecord>,
    ) -> Result<bool, CoordinationError>;
    /// Runner `id` registered in `context`.
    async fn runner(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<RunnerRecord>, CoordinationError>;
    /// As [`CoordinationStore::put_job`], for a runner; indexes it for
    /// [`CoordinationStore::runners`].
    async fn put_runner(
        &self,
        record: &RunnerRecord,
        previous: Option<&RunnerRecord>,
    ) -> Result<bool, CoordinationError>;
    /// Every registered runner, of every context (by context, then id).
    async fn runners(&self) -> Result<Vec<RunnerRecord>, CoordinationError>;
    /// Message `id` of `context`.
    async fn message(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<MessageRecord>, CoordinationError>;
    /// As [`CoordinationStore::put_job`], for a message.
    async fn put_message(
        &self,
        record: &MessageRecord,
        previous: Option<&MessageRecord>,
    ) -> Result<bool, CoordinationError>;
    /// Asks for message `(context, id)` to be checked at `at_ms` (unix ms); replaces an
    /// earlier request for it.
    async fn schedule_message(
        &self,
        context: u32,
        id: u32,
        at_ms: i64,
    ) -> Result<(), CoordinationError>;
    /// Takes up to `limit` messages due at `now_ms`: each is handed to one caller only
    /// (across instances), which schedules it again if it still needs checking.
    async fn take_due_messages(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(u32, u32)>, CoordinationError>;
}

/// The embedded store.
#[derive(Debug, Default)]
pub struct MemoryCoordination {
    // A std Mutex: nothing awaits while it is held.
    inner: Mutex<MemoryRecords>,
}

#[derive(Debug, Default)]
struct MemoryRecords {
    jobs: HashMap<(u32, u32), JobRecord>,
    flows: HashMap<(u32, u32), FlowRecord>,
    runners: HashMap<(u32, u32), RunnerRecord>,
    messages: HashMap<(u32, u32), MessageRecord>,
    /// (due ms, context, id), and the due time per message.
    deadlines: BTreeSet<(i64, u32, u32)>,
    due: HashMap<(u32, u32), i64>,
}

impl MemoryCoordination {
    /// An empty store.
    pub fn new() -> Self {
        MemoryCoordination::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryRecords> {
        // Poisoned only if a holder panicked; nothing here panics while holding it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Compare-and-set on one map entry.
fn cas<T: Clone + PartialEq>(
    map: &mut HashMap<(u32, u32), T>,
    key: (u32, u32),
    record: &T,
    previous: Option<&T>,
) -> bool {
    if map.get(&key) != previous {
        return false;
    }
    map.insert(key, record.clone());
    true
}

#[async_trait]
impl CoordinationStore for MemoryCoordination {
    async fn job(&self, context: u32, id: u32) -> Result<Option<JobRecord>, CoordinationError> {
        Ok(self.lock().jobs.get(&(context, id)).cloned())
    }

    async fn put_job(
        &self,
        record: &JobRecord,
        previous: Option<&JobRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = (record.context_id, record.id);
        Ok(cas(&mut self.lock().jobs, key, record, previous))
    }

    async fn flow(&self, context: u32, id: u32) -> Result<Option<FlowRecord>, CoordinationError> {
        Ok(self.lock().flows.get(&(context, id)).cloned())
    }

    async fn put_flow(
        &self,
        record: &FlowRecord,
        previous: Option<&FlowRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = (record.context_id, record.id);
        Ok(cas(&mut self.lock().flows, key, record, previous))
    }

    async fn runner(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<RunnerRecord>, CoordinationError> {
        Ok(self.lock().runners.get(&(context, id)).cloned())
    }

    async fn put_runner(
        &self,
        record: &RunnerRecord,
        previous: Option<&RunnerRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = (record.context_id, record.id);
        Ok(cas(&mut self.lock().runners, key, record, previous))
    }

    async fn runners(&self) -> Result<Vec<RunnerRecord>, CoordinationError> {
        let mut all: Vec<RunnerRecord> = self.lock().runners.values().cloned().collect();
        all.sort_by_key(|r| (r.context_id, r.id));
        Ok(all)
    }

    async fn message(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<MessageRecord>, CoordinationError> {
        Ok(self.lock().messages.get(&(context, id)).cloned())
    }

    async fn put_message(
        &self,
        record: &MessageRecord,
        previous: Option<&MessageRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = (record.context_id, record.id);
        Ok(cas(&mut self.lock().messages, key, record, previous))
    }

    async fn schedule_message(
        &self,
        context: u32,
        id: u32,
        at_ms: i64,
    ) -> Result<(), CoordinationError> {
        let mut m = self.lock();
        if let Some(old) = m.due.insert((context, id), at_ms) {
            m.deadlines.remove(&(old, context, id));
        }
        m.deadlines.insert((at_ms, context, id));
        Ok(())
    }

    async fn take_due_messages(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(u32, u32)>, CoordinationError> {
        let mut m = self.lock();
        let due: Vec<(i64, u32, u32)> = m
            .deadlines
            .iter()
            .take_while(|(at, _, _)| *at <= now_ms)
            .take(limit)
            .copied()
            .collect();
        for entry in &due {
            m.deadlines.remove(entry);
            m.due.remove(&(entry.1, entry.2));
        }
        Ok(due.into_iter().map(|(_, c, id)| (c, id)).collect())
    }
}

/// KEYS[1] the record's key, KEYS[2] an index SET; ARGV[1] the record as read before
/// ('' when absent), ARGV[2] the new record, ARGV[3] the index member. As [`CasSet`],
/// and on success SADD ARGV[3] to KEYS[2]. Returns 1 (written) | 0 (changed).
const CAS_SET_INDEXED_LUA: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
";

/// KEYS[1] the deadlines ZSET; ARGV[1] now (ms), ARGV[2] how many at most. Takes the
/// due members out and returns them: each goes to exactly one caller.
const TAKE_DUE_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
";

/// Deadlines taken in one call at most (the Lua `unpack` has a stack limit).
const TAKE_DUE_MAX: usize = 1000;

/// The store in Redis, beside the jobs (module docs for the keys).
#[derive(Clone)]
pub struct RedisCoordination {
    conn: RedisConn,
    prefix: String,
    /// The prefix of the server-wide keys (`<prefix>:{s}` on a cluster).
    server: String,
    cas_set: CasSet,
    cas_set_indexed: Script,
    take_due: Script,
}

impl std::fmt::Debug for RedisCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordination")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> CoordinationError {
    CoordinationError::Unavailable(records::describe(&e))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &str) -> Result<T, CoordinationError> {
    serde_json::from_str(raw).map_err(|e| CoordinationError::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

/// Records are structs of numbers, strings and ordered maps: serializing cannot fail,
/// and it is deterministic, so a record read and encoded again is the stored text.
fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl RedisCoordination {
    /// Connects to `url` (never logged: it may hold a password); keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CoordinationError> {
        let conn = records::connect(url).await.map_err(unavailable)?;
        Ok(Self::on(conn, prefix))
    }

    /// Connects to the Redis Cluster of `nodes` (seed URLs); see the module docs for
    /// what changes there.
    pub async fn connect_cluster(
        nodes: &[String],
        prefix: &str,
    ) -> Result<Self, CoordinationError> {
        let conn = records::connect_records_cluster(nodes)
            .await
            .map_err(unavailable)?;
        Ok(Self::on(conn, prefix))
    }

    fn on(conn: RedisConn, prefix: &str) -> Self {
        RedisCoordination {
            server: conn.server_prefix(prefix),
            conn,
            prefix: prefix.to_owned(),
            cas_set: CasSet::new(),
            cas_set_indexed: Script::new(CAS_SET_INDEXED_LUA),
            take_due: Script::new(TAKE_DUE_LUA),
        }
    }

    fn key(&self, context: u32, kind: &str, id: u32) -> String {
        format!("{}:{{c{context}}}:{kind}:{id}", self.prefix)
    }

    fn runners_key(&self) -> String {
        format!("{}:runners", self.server)
    }

    fn deadlines_key(&self) -> String {
        format!("{}:message_deadlines", self.server)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CoordinationError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(key).await.map_err(unavailable)?;
        raw.map(|raw| decode(key, &raw)).transpose()
    }

    async fn put<T: serde::Serialize>(
        &self,
        key: &str,
        record: &T,
        previous: Option<&T>,
    ) -> Result<bool, CoordinationError> {
        let mut conn = self.conn.clone();
        self.cas_set
            .set(
                &mut conn,
                key,
                &previous.map(encode).unwrap_or_default(),
                &encode(record),
            )
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl CoordinationStore for RedisCoordination {
    async fn job(&self, context: u32, id: u32) -> Result<Option<JobRecord>, CoordinationError> {
        self.get(&self.key(context, "cjob", id)).await
    }

    async fn put_job(
        &self,
        record: &JobRecord,
        previous: Option<&JobRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = self.key(record.context_id, "cjob", record.id);
        self.put(&key, record, previous).await
    }

    async fn flow(&self, context: u32, id: u32) -> Result<Option<FlowRecord>, CoordinationError> {
        self.get(&self.key(context, "flow", id)).await
    }

    async fn put_flow(
        &self,
        record: &FlowRecord,
        previous: Option<&FlowRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = self.key(record.context_id, "flow", record.id);
        self.put(&key, record, previous).await
    }

    async fn runner(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<RunnerRecord>, CoordinationError> {
        self.get(&self.key(context, "runner", id)).await
    }

    async fn put_runner(
        &self,
        record: &RunnerRecord,
        previous: Option<&RunnerRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = self.key(record.context_id, "runner", record.id);
        let mut conn = self.conn.clone();
        let member = format!("{}:{}", record.context_id, record.id);
        if conn.is_cluster() {
            // Two slots: the index entry first (see the module docs).
            let () = conn
                .sadd(self.runners_key(), &member)
                .await
                .map_err(unavailable)?;
            let previous = previous.map(encode).unwrap_or_default();
            return self
                .cas_set
                .set(&mut conn, &key, &previous, &encode(record))
                .await
                .map_err(unavailable);
        }
        let written: i64 = self
            .cas_set_indexed
            .key(&key)
            .key(self.runners_key())
            .arg(previous.map(encode).unwrap_or_default())
            .arg(encode(record))
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    async fn runners(&self) -> Result<Vec<RunnerRecord>, CoordinationError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn
            .smembers(self.runners_key())
            .await
            .map_err(unavailable)?;
        let mut ids: Vec<(u32, u32)> = members.iter().filter_map(|m| parse_member(m)).collect();
        ids.sort_unstable();
        let mut all = Vec::with_capacity(ids.len());
        for (context, id) in ids {
            all.extend(self.runner(context, id).await?);
        }
        Ok(all)
    }

    async fn message(
        &self,
        context: u32,
        id: u32,
    ) -> Result<Option<MessageRecord>, CoordinationError> {
        self.get(&self.key(context, "message", id)).await
    }

    async fn put_message(
        &self,
        record: &MessageRecord,
        previous: Option<&MessageRecord>,
    ) -> Result<bool, CoordinationError> {
        let key = self.key(record.context_id, "message", record.id);
        self.put(&key, record, previous).await
    }

    async fn schedule_message(
        &self,
        context: u32,
        id: u32,
        at_ms: i64,
    ) -> Result<(), CoordinationError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .zadd(self.deadlines_key(), format!("{context}:{id}"), at_ms)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_due_messages(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(u32, u32)>, CoordinationError> {
        let mut conn = self.conn.clone();
        let due: Vec<String> = self
            .take_due
            .key(self.deadlines_key())
            .arg(now_ms)
            .arg(limit.clamp(1, TAKE_DUE_MAX))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(due.iter().filter_map(|m| parse_member(m)).collect())
    }
}

/// `<context>:<id>` of an index member; `None` for anything else (edited by hand).
fn parse_member(member: &str) -> Option<(u32, u32)> {
    let (context, id) = member.split_once(':')?;
    Some((context.parse().ok()?, id.parse().ok()?))
}
