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
//!
//! A write is a compare-and-set: it names the record it replaces (as read before) and
//! does nothing when that changed meanwhile, so two instances writing at once cannot
//! lose an update; the caller reads again and decides again.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{FlowRecord, JobRecord};
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
}

/// The store in Redis, beside the jobs (module docs for the keys).
#[derive(Clone)]
pub struct RedisCoordination {
    conn: ConnectionManager,
    prefix: String,
    cas_set: CasSet,
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
        Ok(RedisCoordination {
            conn,
            prefix: prefix.to_owned(),
            cas_set: CasSet::new(),
        })
    }

    fn key(&self, context: u32, kind: &str, id: u32) -> String {
        format!("{}:{{c{context}}}:{kind}:{id}", self.prefix)
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
}
