//! Where actors and contexts live: [`MemoryDirectory`] for the embedded default,
//! [`RedisDirectory`] beside the jobs, so every instance on one Redis sees one set of
//! identities and tenants.
//!
//! Redis keys (prefix as for jobs, default `hero`):
//!
//! | key | type | holds |
//! |---|---|---|
//! On a Redis Cluster (`connect_cluster`), `<p>` is `<prefix>:{s}`: every key of the
//! directory in one slot, the one of the server-wide records.
//!
//! | `<p>:actor:<id>` | STRING | the actor as JSON |
//! | `<p>:actor_key:<pubkey>` | STRING | the id of the actor owning `pubkey` (canonical hex) |
//! | `<p>:context:<id>` | STRING | the context as JSON |
//!
//! An upsert is one Lua script that compares the record it read first (so two
//! instances writing at once cannot lose an update or give one key two owners) and
//! every key it touches comes in through `KEYS`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::records::RedisConn;
use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::{Actor, ActorCreate, Context, ContextCreate};
use crate::store::records::{self, CasSet};

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The public key already belongs to another actor.
    #[error("pubkey already belongs to actor {owner}")]
    KeyTaken {
        /// The actor that owns it.
        owner: u32,
    },
    /// The store could not be reached or failed.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not decode (edited by hand).
    #[error("corrupt directory record {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// Actors and contexts. Inputs arrive validated (canonical pubkey, bounded lists).
#[async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug + 'static {
    /// Creates or replaces actor `actor.id`; `created_at` survives a replacement.
    async fn put_actor(&self, actor: ActorCreate, now: i64) -> Result<Actor, DirectoryError>;
    /// The actor with `id`.
    async fn actor(&self, id: u32) -> Result<Option<Actor>, DirectoryError>;
    /// The actor owning `pubkey` (canonical hex).
    async fn actor_by_key(&self, pubkey: &str) -> Result<Option<Actor>, DirectoryError>;
    /// Creates or replaces context `context.id`; `created_at` survives a replacement.
    async fn put_context(
        &self,
        context: ContextCreate,
        now: i64,
    ) -> Result<Context, DirectoryError>;
    /// The context with `id`.
    async fn context(&self, id: u32) -> Result<Option<Context>, DirectoryError>;
}

fn actor_record(input: ActorCreate, created_at: i64, now: i64) -> Actor {
    Actor {
        id: input.id,
        pubkey: input.pubkey,
        address: input.address,
        created_at,
        updated_at: now,
    }
}

fn context_record(input: ContextCreate, created_at: i64, now: i64) -> Context {
    Context {
        id: input.id,
        admins: input.admins,
        readers: input.readers,
        executors: input.executors,
        created_at,
        updated_at: now,
    }
}

/// The embedded directory.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    // A std Mutex: nothing awaits while it is held.
    inner: Mutex<MemoryRecords>,
}

#[derive(Debug, Default)]
struct MemoryRecords {
    actors: HashMap<u32, Actor>,
    by_key: HashMap<String, u32>,
    contexts: HashMap<u32, Context>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        MemoryDirectory::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryRecords> {
        // Poisoned only if a holder panicked; nothing here panics while holding it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn put_actor(&self, actor: ActorCreate, now: i64) -> Result<Actor, DirectoryError> {
        let mut r = self.lock();
        if let Some(&owner) = r.by_key.get(&actor.pubkey)
            && owner != actor.id
        {
            return Err(DirectoryError::KeyTaken { owner });
        }
        let created_at = r.actors.get(&actor.id).map_or(now, |a| a.created_at);
        if let Some(old) = r.actors.get(&actor.id).map(|a| a.pubkey.clone()) {
            r.by_key.remove(&old);
        }
        let record = actor_record(actor, created_at, now);
        r.by_key.insert(record.pubkey.clone(), record.id);
        r.actors.insert(record.id, record.clone());
        Ok(record)
    }

    async fn actor(&self, id: u32) -> Result<Option<Actor>, DirectoryError> {
        Ok(self.lock().actors.get(&id).cloned())
    }

    async fn actor_by_key(&self, pubkey: &str) -> Result<Option<Actor>, DirectoryError> {
        let r = self.lock();
        Ok(r.by_key
            .get(pubkey)
            .and_then(|id| r.actors.get(id))
            .cloned())
    }

    async fn put_context(
        &self,
        context: ContextCreate,
        now: i64,
    ) -> Result<Context, DirectoryError> {
        let mut r = self.lock();
        let created_at = r.contexts.get(&context.id).map_or(now, |c| c.created_at);
        let record = context_record(context, created_at, now);
        r.contexts.insert(record.id, record.clone());
        Ok(record)
    }

    async fn context(&self, id: u32) -> Result<Option<Context>, DirectoryError> {
        Ok(self.lock().contexts.get(&id).cloned())
    }
}

/// `put_actor`: KEYS[1] `<p>:actor:<id>`, KEYS[2] `<p>:actor_key:<new pubkey>`, KEYS[3]
/// `<p>:actor_key:<old pubkey>` (= KEYS[2] when there is no old one).
/// ARGV[1] id, ARGV[2] the record as read before ('' when absent), ARGV[3] the new record.
/// Returns {'OK'} | {'RETRY'} (changed since it was read) | {'TAKEN', owner id}.
const PUT_ACTOR_LUA: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[2] then
  return { 'RETRY' }
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return { 'TAKEN', owner }
end
if KEYS[3] ~= KEYS[2] then
  redis.call('DEL', KEYS[3])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[3])
return { 'OK' }
";

/// Read-then-compare upserts that lose a race start over, at most this often.
const UPSERT_ATTEMPTS: usize = 8;

/// The directory in Redis, beside the jobs (module docs for the keys).
#[derive(Clone)]
pub struct RedisDirectory {
    conn: RedisConn,
    prefix: String,
    put_actor: Script,
    put_context: CasSet,
}

impl std::fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDirectory")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> DirectoryError {
    DirectoryError::Unavailable(records::describe(&e))
}

impl RedisDirectory {
    /// Connects to `url` (never logged: it may hold a password); keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, DirectoryError> {
        let conn = records::connect(url).await.map_err(unavailable)?;
        Ok(Self::on(conn, prefix))
    }

    /// Connects to the Redis Cluster of `nodes` (seed URLs); keys under
    /// `<prefix>:{s}` (one slot).
    pub async fn connect_cluster(nodes: &[String], prefix: &str) -> Result<Self, DirectoryError> {
        let conn = records::connect_records_cluster(nodes)
            .await
            .map_err(unavailable)?;
        Ok(Self::on(conn, prefix))
    }

    fn on(conn: RedisConn, prefix: &str) -> Self {
        RedisDirectory {
            prefix: conn.server_prefix(prefix),
            conn,
            put_actor: Script::new(PUT_ACTOR_LUA),
            put_context: CasSet::new(),
        }
    }

    fn actor_key(&self, id: u32) -> String {
        format!("{}:actor:{id}", self.prefix)
    }

    fn pubkey_key(&self, pubkey: &str) -> String {
        format!("{}:actor_key:{pubkey}", self.prefix)
    }

    fn context_key(&self, id: u32) -> String {
        format!("{}:context:{id}", self.prefix)
    }

    async fn get_raw(&self, key: &str) -> Result<Option<String>, DirectoryError> {
        let mut conn = self.conn.clone();
        conn.get(key).await.map_err(unavailable)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DirectoryError> {
        self.get_raw(key)
            .await?
            .map(|raw| decode(key, &raw))
            .transpose()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &str) -> Result<T, DirectoryError> {
    serde_json::from_str(raw).map_err(|e| DirectoryError::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Plain structs of numbers and strings: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[async_trait]
impl Directory for RedisDirectory {
    async fn put_actor(&self, actor: ActorCreate, now: i64) -> Result<Actor, DirectoryError> {
        let key = self.actor_key(actor.id);
        for _ in 0..UPSERT_ATTEMPTS {
            let raw = self.get_raw(&key).await?.unwrap_or_default();
            let current: Option<Actor> = if raw.is_empty() {
                None
            } else {
                Some(decode(&key, &raw)?)
            };
            let created_at = current.as_ref().map_or(now, |a| a.created_at);
            let record = actor_record(actor.clone(), created_at, now);
            let new_key = self.pubkey_key(&record.pubkey);
            let old_key = current
                .as_ref()
                .map_or_else(|| new_key.clone(), |a| self.pubkey_key(&a.pubkey));
            let mut conn = self.conn.clone();
            let reply: Vec<String> = self
                .put_actor
                .key(&key)
                .key(&new_key)
                .key(&old_key)
                .arg(record.id)
                .arg(&raw)
                .arg(encode(&record))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match reply.first().map(String::as_str) {
                Some("OK") => return Ok(record),
                Some("RETRY") => continue,
                Some("TAKEN") => {
                    let owner = reply.get(1).and_then(|o| o.parse().ok()).unwrap_or(0);
                    return Err(DirectoryError::KeyTaken { owner });
                }
                _ => return Err(DirectoryError::Unavailable(format!("put_actor: {reply:?}"))),
            }
        }
        Err(DirectoryError::Unavailable(
            "put_actor: the record kept changing".to_owned(),
        ))
    }

    async fn actor(&self, id: u32) -> Result<Option<Actor>, DirectoryError> {
        self.get_json(&self.actor_key(id)).await
    }

    async fn actor_by_key(&self, pubkey: &str) -> Result<Option<Actor>, DirectoryError> {
        let key = self.pubkey_key(pubkey);
        let Some(id) = self.get_raw(&key).await? else {
            return Ok(None);
        };
        let id: u32 = id.parse().map_err(|_| DirectoryError::Corrupt {
            key: key.clone(),
            why: format!("not an actor id: {id:?}"),
        })?;
        // The index and the record are written by one script; a record whose key moved
        // on meanwhile is not the owner any more.
        Ok(self.actor(id).await?.filter(|a| a.pubkey == pubkey))
    }

    async fn put_context(
        &self,
        context: ContextCreate,
        now: i64,
    ) -> Result<Context, DirectoryError> {
        let key = self.context_key(context.id);
        for _ in 0..UPSERT_ATTEMPTS {
            let raw = self.get_raw(&key).await?.unwrap_or_default();
            let created_at = if raw.is_empty() {
                now
            } else {
                decode::<Context>(&key, &raw)?.created_at
            };
            let record = context_record(context.clone(), created_at, now);
            let mut conn = self.conn.clone();
            let written = self
                .put_context
                .set(&mut conn, &key, &raw, &encode(&record))
                .await
                .map_err(unavailable)?;
            if written {
                return Ok(record);
            }
        }
        Err(DirectoryError::Unavailable(
            "put_context: the record kept changing".to_owned(),
        ))
    }

    async fn context(&self, id: u32) -> Result<Option<Context>, DirectoryError> {
        self.get_json(&self.context_key(id)).await
    }
}
