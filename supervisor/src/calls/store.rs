//! Where signed calls live: [`MemoryCalls`] for the embedded default, [`RedisCalls`]
//! beside the jobs, so a restart and every other instance see the same calls and share
//! one outbox.
//!
//! Redis keys (prefix as for jobs, default `hero`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{calls}:call:<pubkey>:<rpc_id>` | STRING | the call's record as JSON; expires after the retention |
//! | `<p>:{calls}:outbox` | ZSET | `<pubkey>:<rpc_id>` of calls whose result waits for delivery, scored by when the next attempt is due (ms) |
//! | `<p>:{calls}:running` | ZSET | `<pubkey>:<rpc_id>` of running calls, scored by when the instance running it must have renewed its lease (ms) |
//! | `<p>:{calls}:idem:<caller>:<key>` | STRING | the job id `create_job` made for idempotency key `<key>`; expires after the retention |
//!
//! The `{calls}` hash tag keeps them in one Redis Cluster slot (a record and the queues
//! it moves between change in one script); calls are few next to jobs.
//!
//! Claiming an `rpc_id` is one `SET NX`, so two instances given the same call run it
//! once. Taking due entries from a queue moves their score to the end of a lease in the
//! same script, so two instances do not take the same entry while the lease lasts;
//! an instance that dies with it leaves it to be taken again when the lease ends (at
//! least once).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::records::RedisConn;
use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::record::CallRecord;
use crate::store::records;

/// Why a call store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallStoreError {
    /// The store could not be reached or failed.
    #[error("call store unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not decode (edited by hand).
    #[error("corrupt call record {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The embedded store holds as many calls as it may.
    #[error("too many calls held ({0}); try again later")]
    Full(usize),
}

/// The two scheduled queues of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Results waiting for delivery, by when the next attempt is due.
    Outbox,
    /// Running calls, by when their lease ends.
    Running,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Queue::Outbox => "outbox",
            Queue::Running => "running",
        }
    }
}

/// Signed calls by `(pubkey, rpc_id)`, their two queues, and `create_job`'s
/// idempotency keys.
#[async_trait]
pub trait CallStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `record` and puts it in the running queue until `lease_until_ms`, unless a
    /// call with its key exists; answers that one then.
    async fn claim(
        &self,
        record: &CallRecord,
        lease_until_ms: i64,
    ) -> Result<Option<CallRecord>, CallStoreError>;
    /// The call `key` names (`<pubkey>:<rpc_id>`).
    async fn get(&self, key: &str) -> Result<Option<CallRecord>, CallStoreError>;
    /// Overwrites the stored record.
    async fn put(&self, record: &CallRecord) -> Result<(), CallStoreError>;
    /// Stores finished `record`, takes it out of the running queue and, with
    /// `deliver_at_ms`, puts it in the outbox: one atomic step.
    async fn finish(
        &self,
        record: &CallRecord,
        deliver_at_ms: Option<i64>,
    ) -> Result<(), CallStoreError>;
    /// Stores `record` (delivered, or undeliverable) and takes it out of the outbox.
    async fn delivered(&self, record: &CallRecord) -> Result<(), CallStoreError>;
    /// Puts `key` in `queue` due at `at_ms` (unix ms), or moves it there.
    async fn schedule(&self, queue: Queue, key: &str, at_ms: i64) -> Result<(), CallStoreError>;
    /// Takes `key` out of `queue`.
    async fn unschedule(&self, queue: Queue, key: &str) -> Result<(), CallStoreError>;
    /// At most `limit` keys of `queue` due at `now_ms`, each moved to `lease_until_ms`
    /// in the same step, so no one else takes them before then.
    async fn take_due(
        &self,
        queue: Queue,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, CallStoreError>;
    /// Binds idempotency key `key` of `caller` to `job_id` unless it is bound; answers
    /// the job id it is bound to then.
    async fn bind_idempotency_key(
        &self,
        caller: &str,
        key: &str,
        job_id: &str,
    ) -> Result<Option<String>, CallStoreError>;
    /// How many keys `queue` holds, due or not (`/metrics`: the outbox backlog, the
    /// calls running). One `ZCARD` on Redis.
    async fn queue_len(&self, queue: Queue) -> Result<u64, CallStoreError>;
}

/// The embedded store: bounded in number of calls; the oldest finished calls are
/// forgotten first when it is full.
#[derive(Debug)]
pub struct MemoryCalls {
    max_calls: usize,
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: HashMap<String, CallRecord>,
    queues: HashMap<Queue, BTreeSet<(i64, String)>>,
    scores: HashMap<(Queue, String), i64>,
    idempotency: HashMap<(String, String), String>,
}

impl MemoryCalls {
    /// An empty store holding at most `max_calls` calls (and as many idempotency keys).
    pub fn new(max_calls: usize) -> Self {
        MemoryCalls {
            max_calls: max_calls.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Poisoned only if a holder panicked; nothing here panics while holding it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryState {
    fn unschedule(&mut self, queue: Queue, key: &str) {
        if let Some(score) = self.scores.remove(&(queue, key.to_string())) {
            self.queues
                .entry(queue)
                .or_default()
                .remove(&(score, key.to_string()));
        }
    }

    fn schedule(&mut self, queue: Queue, key: &str, at: i64) {
        self.unschedule(queue, key);
        self.scores.insert((queue, key.to_string()), at);
        self.queues
            .entry(queue)
            .or_default()
            .insert((at, key.to_string()));
    }

    /// Makes room for one more record: forgets the oldest finished, undelivered-free
    /// call; `false` when every held call is still live.
    fn make_room(&mut self, max: usize) -> bool {
        if self.records.len() < max {
            return true;
        }
        let oldest = self
            .records
            .values()
            .filter(|r| {
                r.status.is_terminal() && !self.scores.contains_key(&(Queue::Outbox, r.key()))
            })
            .min_by_key(|r| r.updated_at)
            .map(CallRecord::key);
        match oldest {
            Some(key) => {
                self.records.remove(&key);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl CallStore for MemoryCalls {
    async fn claim(
        &self,
        record: &CallRecord,
        lease_until_ms: i64,
    ) -> Result<Option<CallRecord>, CallStoreError> {
        let mut state = self.lock();
        if let Some(existing) = state.records.get(&record.key()) {
            return Ok(Some(existing.clone()));
        }
        if !state.make_room(self.max_calls) {
            return Err(CallStoreError::Full(self.max_calls));
        }
        state.records.insert(record.key(), record.clone());
        state.schedule(Queue::Running, &record.key(), lease_until_ms);
        Ok(None)
    }

    async fn get(&self, key: &str) -> Result<Option<CallRecord>, CallStoreError> {
        Ok(self.lock().records.get(key).cloned())
    }

    async fn put(&self, record: &CallRecord) -> Result<(), CallStoreError> {
        self.lock().records.insert(record.key(), record.clone());
        Ok(())
    }

    async fn finish(
        &self,
        record: &CallRecord,
        deliver_at_ms: Option<i64>,
    ) -> Result<(), CallStoreError> {
        let mut state = self.lock();
        let key = record.key();
        state.records.insert(key.clone(), record.clone());
        state.unschedule(Queue::Running, &key);
        if let Some(at) = deliver_at_ms {
            state.schedule(Queue::Outbox, &key, at);
        }
        Ok(())
    }

    async fn delivered(&self, record: &CallRecord) -> Result<(), CallStoreError> {
        let mut state = self.lock();
        state.records.insert(record.key(), record.clone());
        state.unschedule(Queue::Outbox, &record.key());
        Ok(())
    }

    async fn schedule(&self, queue: Queue, key: &str, at_ms: i64) -> Result<(), CallStoreError> {
        self.lock().schedule(queue, key, at_ms);
        Ok(())
    }

    async fn unschedule(&self, queue: Queue, key: &str) -> Result<(), CallStoreError> {
        self.lock().unschedule(queue, key);
        Ok(())
    }

    async fn take_due(
        &self,
        queue: Queue,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, CallStoreError> {
        let mut state = self.lock();
        let due: Vec<String> = state
            .queues
            .entry(queue)
            .or_default()
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect();
        for key in &due {
            state.schedule(queue, key, lease_until_ms);
        }
        Ok(due)
    }

    async fn bind_idempotency_key(
        &self,
        caller: &str,
        key: &str,
        job_id: &str,
    ) -> Result<Option<String>, CallStoreError> {
        let mut state = self.lock();
        let slot = (caller.to_string(), key.to_string());
        if let Some(bound) = state.idempotency.get(&slot) {
            return Ok(Some(bound.clone()));
        }
        if state.idempotency.len() >= self.max_calls {
            return Err(CallStoreError::Full(self.max_calls));
        }
        state.idempotency.insert(slot, job_id.to_string());
        Ok(None)
    }

    async fn queue_len(&self, queue: Queue) -> Result<u64, CallStoreError> {
        let state = self.lock();
        let n = state.queues.get(&queue).map_or(0, BTreeSet::len);
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// KEYS[1] the queue; ARGV[1] now (ms), ARGV[2] the lease's end (ms), ARGV[3] the most
/// to take. Returns the taken members.
const TAKE_DUE_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
";

/// KEYS[1] the record, KEYS[2] the running queue; ARGV[1] the record, ARGV[2] its
/// retention (s), ARGV[3] the lease's end (ms), ARGV[4] the queue member. Returns nil
/// (claimed) or the existing record.
const CLAIM_LUA: &str = r"
local existing = redis.call('GET', KEYS[1])
if existing then
  return existing
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return false
";

/// KEYS[1] the record, KEYS[2] the running queue, KEYS[3] the outbox; ARGV[1] the
/// record, ARGV[2] its retention (s), ARGV[3] the queue member, ARGV[4] when delivery is
/// due (ms; '' for no delivery).
const FINISH_LUA: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return 1
";

/// The store in Redis, beside the jobs (module docs for the keys).
#[derive(Clone)]
pub struct RedisCalls {
    conn: RedisConn,
    prefix: String,
    retention: Duration,
    take_due: Script,
    claim: Script,
    finish: Script,
}

impl std::fmt::Debug for RedisCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCalls")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> CallStoreError {
    CallStoreError::Unavailable(records::describe(&e))
}

fn encode(record: &CallRecord) -> String {
    // Strings, numbers and timestamps only: serializing cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

impl RedisCalls {
    /// Connects to `url` (never logged: it may hold a password); keys under `prefix`;
    /// records expire `retention` after their last change.
    pub async fn connect(
        url: &str,
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, CallStoreError> {
        let conn = records::connect(url).await.map_err(unavailable)?;
        Ok(Self::on(conn, prefix, retention))
    }

    /// Connects to the Redis Cluster of `nodes` (seed URLs): the keys are the same,
    /// all in the `{calls}` slot.
    pub async fn connect_cluster(
        nodes: &[String],
        prefix: &str,
        retention: Duration,
    ) -> Result<Self, CallStoreError> {
        let conn = records::connect_records_cluster(nodes)
            .await
            .map_err(unavailable)?;
        Ok(Self::on(conn, prefix, retention))
    }

    fn on(conn: RedisConn, prefix: &str, retention: Duration) -> Self {
        RedisCalls {
            conn,
            prefix: prefix.to_owned(),
            retention: retention.max(Duration::from_secs(1)),
            take_due: Script::new(TAKE_DUE_LUA),
            claim: Script::new(CLAIM_LUA),
            finish: Script::new(FINISH_LUA),
        }
    }

    // Every call key carries the `{calls}` hash tag: a call's record and the queues it
    // moves between are written in one script, which Redis Cluster allows in one slot
    // only.
    fn record_key(&self, key: &str) -> String {
        format!("{}:{{calls}}:call:{key}", self.prefix)
    }

    fn queue_key(&self, queue: Queue) -> String {
        format!("{}:{{calls}}:{}", self.prefix, queue.name())
    }

    fn decode(key: &str, raw: &str) -> Result<CallRecord, CallStoreError> {
        serde_json::from_str(raw).map_err(|e| CallStoreError::Corrupt {
            key: key.to_owned(),
            why: e.to_string(),
        })
    }
}

#[async_trait]
impl CallStore for RedisCalls {
    async fn claim(
        &self,
        record: &CallRecord,
        lease_until_ms: i64,
    ) -> Result<Option<CallRecord>, CallStoreError> {
        let key = self.record_key(&record.key());
        let mut conn = self.conn.clone();
        let existing: Option<String> = self
            .claim
            .key(&key)
            .key(self.queue_key(Queue::Running))
            .arg(encode(record))
            .arg(self.retention.as_secs())
            .arg(lease_until_ms)
            .arg(record.key())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        existing.map(|raw| Self::decode(&key, &raw)).transpose()
    }

    async fn get(&self, key: &str) -> Result<Option<CallRecord>, CallStoreError> {
        let key = self.record_key(key);
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(&key).await.map_err(unavailable)?;
        raw.map(|raw| Self::decode(&key, &raw)).transpose()
    }

    async fn put(&self, record: &CallRecord) -> Result<(), CallStoreError> {
        let mut conn = self.conn.clone();
        let () = conn
            .set_ex(
                self.record_key(&record.key()),
                encode(record),
                self.retention.as_secs(),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn finish(
        &self,
        record: &CallRecord,
        deliver_at_ms: Option<i64>,
    ) -> Result<(), CallStoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .finish
            .key(self.record_key(&record.key()))
            .key(self.queue_key(Queue::Running))
            .key(self.queue_key(Queue::Outbox))
            .arg(encode(record))
            .arg(self.retention.as_secs())
            .arg(record.key())
            .arg(deliver_at_ms.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delivered(&self, record: &CallRecord) -> Result<(), CallStoreError> {
        self.put(record).await?;
        self.unschedule(Queue::Outbox, &record.key()).await
    }

    async fn schedule(&self, queue: Queue, key: &str, at_ms: i64) -> Result<(), CallStoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .zadd(self.queue_key(queue), key, at_ms)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unschedule(&self, queue: Queue, key: &str) -> Result<(), CallStoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .zrem(self.queue_key(queue), key)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_due(
        &self,
        queue: Queue,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, CallStoreError> {
        let mut conn = self.conn.clone();
        self.take_due
            .key(self.queue_key(queue))
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn bind_idempotency_key(
        &self,
        caller: &str,
        key: &str,
        job_id: &str,
    ) -> Result<Option<String>, CallStoreError> {
        let slot = format!("{}:{{calls}}:idem:{caller}:{key}", self.prefix);
        let mut conn = self.conn.clone();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(self.retention.as_secs()))
            .get(true);
        // SET NX GET: the bound value when there was one, else nil and ours is set.
        let bound: Option<String> = conn
            .set_options(&slot, job_id, options)
            .await
            .map_err(unavailable)?;
        Ok(bound)
    }

    async fn queue_len(&self, queue: Queue) -> Result<u64, CallStoreError> {
        let mut conn = self.conn.clone();
        conn.zcard(self.queue_key(queue)).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::record::CallStatus;
    use chrono::Utc;

    fn record(id: &str, status: CallStatus) -> CallRecord {
        let mut rec = CallRecord::new(
            id.into(),
            "02aa".into(),
            "whoami".into(),
            "[]".into(),
            Utc::now(),
        );
        rec.status = status;
        rec
    }

    #[tokio::test]
    async fn memory_claims_once_leases_due_entries_and_stays_bounded() {
        let store = MemoryCalls::new(2);
        assert_eq!(
            store.claim(&record("a", CallStatus::Running), 50).await,
            Ok(None)
        );
        assert_eq!(
            store.take_due(Queue::Running, 60, 99, 10).await.unwrap(),
            vec!["02aa:a"]
        );
        let again = store
            .claim(&record("a", CallStatus::Pending), 50)
            .await
            .unwrap();
        assert_eq!(again.map(|r| r.status), Some(CallStatus::Running));
        assert_eq!(
            store.claim(&record("b", CallStatus::Done), 0).await,
            Ok(None)
        );
        // Full: "b" is finished and not waiting for delivery, so it makes room.
        assert_eq!(
            store.claim(&record("c", CallStatus::Running), 0).await,
            Ok(None)
        );
        assert_eq!(store.get("02aa:b").await, Ok(None));
        // Full of live calls: refused, not silently dropped.
        assert!(matches!(
            store.claim(&record("d", CallStatus::Running), 0).await,
            Err(CallStoreError::Full(2))
        ));

        store.schedule(Queue::Outbox, "k1", 100).await.unwrap();
        store.schedule(Queue::Outbox, "k2", 300).await.unwrap();
        assert_eq!(
            store.take_due(Queue::Outbox, 200, 1_000, 10).await.unwrap(),
            vec!["k1"]
        );
        assert!(
            store
                .take_due(Queue::Outbox, 200, 1_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "leased"
        );
        assert_eq!(
            store
                .take_due(Queue::Outbox, 1_000, 2_000, 10)
                .await
                .unwrap(),
            vec!["k2", "k1"]
        );
        store.unschedule(Queue::Outbox, "k1").await.unwrap();
        assert_eq!(
            store
                .take_due(Queue::Outbox, 5_000, 6_000, 10)
                .await
                .unwrap(),
            vec!["k2"]
        );
        // Every claim entered the running queue (the forgotten "b" too: the lease
        // keeper drops entries whose record is gone).
        assert_eq!(
            store
                .take_due(Queue::Running, 5_000, 6_000, 10)
                .await
                .unwrap(),
            vec!["02aa:b", "02aa:c", "02aa:a"]
        );

        assert_eq!(store.bind_idempotency_key("me", "x", "7").await, Ok(None));
        assert_eq!(
            store.bind_idempotency_key("me", "x", "8").await,
            Ok(Some("7".into()))
        );
        assert_eq!(store.bind_idempotency_key("you", "x", "9").await, Ok(None));
    }
}
