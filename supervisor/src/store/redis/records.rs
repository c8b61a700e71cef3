//! What every JSON-record store beside the jobs shares (the actor directory, the
//! coordinator's jobs and flows, signed calls): one way to connect, one way to report a
//! Redis failure without echoing the URL, and one compare-and-set of a STRING record.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Script, Value};

/// One Redis or a Redis Cluster: what every store on Redis sends its commands through.
/// Cheap to clone (both are multiplexed handles). On a cluster, every command, script
/// and pipeline must keep to one hash slot (the key layout sees to it; a pipeline that
/// would not is sent as separate commands, [`RedisConn::query_each`]).
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// One Redis: a connection manager (reconnects after errors).
    Single(ConnectionManager),
    /// A Redis Cluster: follows MOVED/ASK, refreshes the topology after a failover.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// The prefix of server-wide records under `prefix`: `prefix` on one Redis,
    /// `<prefix>:{s}` on a cluster (one slot for all of them).
    pub(crate) fn server_prefix(&self, prefix: &str) -> String {
        super::spaces::server_prefix(prefix, self.is_cluster())
    }

    /// Runs `cmds` and returns their replies in order: one pipeline on one Redis; on a
    /// cluster, where they may name keys of several slots, each command on its own
    /// (concurrently).
    pub(crate) async fn query_each<T: redis::FromRedisValue>(
        &self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, RedisError> {
        match self {
            RedisConn::Single(conn) => {
                let mut pipe = redis::pipe();
                for c in cmds {
                    pipe.add_command(c);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            RedisConn::Cluster(conn) => {
                let calls = cmds.into_iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { c.query_async::<T>(&mut conn).await }
                });
                futures::future::try_join_all(calls).await
            }
        }
    }

    /// `WAIT 1 <timeout>` on the master serving `key`'s slot (cluster only; one Redis
    /// answers 0 replicas needed: `Ok(true)` at once). `Ok(false)`: no replica confirmed
    /// this connection's writes to that master within `timeout`.
    pub(crate) async fn wait_replicated(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<bool, RedisError> {
        let RedisConn::Cluster(conn) = self else {
            return Ok(true);
        };
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(1)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let route = Route::with_key(key, SlotAddr::Master);
        let reply = conn
            .clone()
            .route_command(
                cmd,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
            )
            .await?;
        let acked: i64 = redis::from_redis_value(reply)?;
        Ok(acked >= 1)
    }

    /// Whether the Redis answering has sharded pub/sub (`SPUBLISH`, Redis 7+): asked
    /// with `COMMAND INFO SPUBLISH`, which names no command (`[nil]`) before 7. On a
    /// cluster, asked of every master: all must have it.
    pub(crate) async fn has_sharded_pubsub(&self) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("INFO").arg("SPUBLISH");
        let replies: Vec<Value> = match self {
            RedisConn::Single(conn) => vec![cmd.query_async(&mut conn.clone()).await?],
            RedisConn::Cluster(conn) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                };
                let reply = conn
                    .clone()
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::CombineArrays),
                        )),
                    )
                    .await?;
                vec![reply]
            }
        };
        Ok(replies.iter().all(|reply| match reply {
            Value::Array(entries) => {
                !entries.is_empty() && entries.iter().all(|e| !matches!(e, Value::Nil))
            }
            _ => false,
        }))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => match fenced(cmd) {
                Some(fenced) => {
                    let mut c = c.clone();
                    Box::pin(async move { c.req_packed_command(&fenced).await })
                }
                None => c.req_packed_command(cmd),
            },
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The slot fence: on a cluster, every script call (`EVAL`/`EVALSHA` with keys) declares
/// one more key after its own, [`fence_key`] of its first key's slot, a key that never
/// exists. Scripts compute keys they do not declare (a job's hash from an id popped off
/// a queue), so a script must not run while its slot is half moved: a key it reads may
/// be on the other node already (`MIGRATE` moves keys one by one), and a key it writes
/// there would fail the script halfway, its earlier writes kept.
///
/// Redis itself refuses a command with a missing declared key while the slot is
/// migrating or importing: the source answers `ASK` (or `TRYAGAIN`), and the target,
/// asked with `ASKING`, answers `TRYAGAIN` for a command of several keys not all there.
/// The fence is never there, so no fenced script runs anywhere until the slot is
/// settled on one node (`CLUSTER SETSLOT .. NODE`); in a settled slot a missing key is
/// an ordinary empty key, so the fence costs nothing else. The cluster client retries
/// `TRYAGAIN` with backoff, and a store call still refused after that is
/// [`StoreError::Unavailable`] (-32010 to a caller; the recorder tries a completion
/// again for about 8 s). So a slot moves safely with `redis-cli --cluster reshard`
/// while jobs run. Returns `None` for any other command (sent unchanged).
///
/// [`StoreError::Unavailable`]: crate::store::StoreError::Unavailable
fn fenced(cmd: &Cmd) -> Option<Cmd> {
    use redis::Arg;
    let all: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut args = all.into_iter();
    let name = args.next()?;
    let script = [&b"EVALSHA"[..], b"EVAL", b"EVALSHA_RO", b"EVAL_RO"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n));
    if !script {
        return None;
    }
    let body = args.next()?;
    let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
    let rest: Vec<&[u8]> = args.collect();
    if numkeys == 0 || rest.len() < numkeys {
        return None;
    }
    let mut out = Cmd::new();
    out.arg(name).arg(body).arg(numkeys + 1);
    for key in &rest[..numkeys] {
        out.arg(*key);
    }
    out.arg(fence_key(rest[0]));
    for arg in &rest[numkeys..] {
        out.arg(*arg);
    }
    Some(out)
}

/// The fence of `key`'s hash slot (see [`fenced`]): `hero-slot-fence:{<tag>}`, `<tag>`
/// being `key`'s hash tag (or the whole key when it has none), so the fence hashes to
/// `key`'s slot. Should that not hold (a key without a tag that holds a `}`), the first
/// `hero-slot-fence:{<n>}` (n = 0, 1, ..) of that slot. Nothing may ever create a key of
/// this name: while one exists, scripts of its slot could run mid-migration.
pub(crate) fn fence_key(key: &[u8]) -> Vec<u8> {
    use redis::cluster_routing::Slot;
    let slot = Slot::for_key(key);
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let inner = &key[open + 1..];
            let close = inner.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &inner[..close])
        })
        .unwrap_or(key);
    let mut fence = b"hero-slot-fence:{".to_vec();
    fence.extend_from_slice(tag);
    fence.push(b'}');
    if Slot::for_key(&fence) == slot {
        return fence;
    }
    (0u64..)
        .map(|n| format!("hero-slot-fence:{{{n}}}").into_bytes())
        .find(|f| Slot::for_key(f) == slot)
        .unwrap_or(fence)
}

/// A connection to one Redis at `url` with the house settings: 2 s to connect and to
/// answer, two retries. The URL is never logged: it may hold a password.
pub(crate) async fn connect(url: &str) -> Result<RedisConn, RedisError> {
    connect_with(url, Duration::from_secs(2), Duration::from_secs(2)).await
}

/// [`connect`] with the given connect and response timeouts.
pub(crate) async fn connect_with(
    url: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<RedisConn, RedisError> {
    let client = Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_with_config(client, config).await?;
    Ok(RedisConn::Single(conn))
}

/// [`connect_cluster`] with the house settings of the record stores (2 s, as
/// [`connect`]).
pub(crate) async fn connect_records_cluster(nodes: &[String]) -> Result<RedisConn, RedisError> {
    connect_cluster(nodes, Duration::from_secs(2), Duration::from_secs(2)).await
}

/// A connection to the Redis Cluster that `nodes` (seed URLs, any of its nodes) belong
/// to, with the house settings; its topology is read from the seeds and re-read after a
/// MOVED or a failed node. The URLs are never logged.
pub(crate) async fn connect_cluster(
    nodes: &[String],
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<RedisConn, RedisError> {
    let client = ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        .retries(6)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .build()?;
    let conn = client.get_async_connection().await?;
    Ok(RedisConn::Cluster(conn))
}

/// A Redis failure in a few words: its kind only, since its text may echo a URL with a
/// password.
pub(crate) fn describe(e: &RedisError) -> String {
    format!("redis: {:?}", e.kind())
}

/// KEYS[1] the record's key; ARGV[1] the record as read before ('' when absent), ARGV[2]
/// the new record. Returns 1 (written) | 0 (changed since it was read).
const CAS_SET_LUA: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Compare-and-set of a STRING record: written only if it still holds what was read.
#[derive(Debug, Clone)]
pub(crate) struct CasSet {
    script: Script,
}

impl CasSet {
    pub(crate) fn new() -> Self {
        CasSet {
            script: Script::new(CAS_SET_LUA),
        }
    }

    /// Sets `key` to `new` if it holds `previous` (`""`: absent). `false`: it changed
    /// meanwhile, nothing written.
    pub(crate) async fn set(
        &self,
        conn: &mut RedisConn,
        key: &str,
        previous: &str,
        new: &str,
    ) -> Result<bool, RedisError> {
        let written: i64 = self
            .script
            .key(key)
            .arg(previous)
            .arg(new)
            .invoke_async(conn)
            .await?;
        Ok(written == 1)
    }
}

#[cfg(test)]
mod tests {
    use redis::Arg;
    use redis::cluster_routing::Slot;

    use super::{fence_key, fenced};

    fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => b.to_vec(),
                _ => panic!("a cursor argument"),
            })
            .collect()
    }

    #[test]
    fn fence_is_in_the_slot_of_its_key() {
        for key in [
            &b"hero:{c42}:job:0000002a-0000-8000-8000-000000000001"[..],
            b"hero:{d}:q:work:type:SAL",
            b"hero:{s}:actors",
            b"no-tag-at-all",
            b"{}empty-tag",
            b"a{b}}c",
            b"odd}{key",
            b"{unclosed",
        ] {
            let fence = fence_key(key);
            assert_eq!(Slot::for_key(&fence), Slot::for_key(key), "{key:?}");
            assert_ne!(fence, key);
        }
        assert_eq!(fence_key(b"hero:{c42}:leases"), b"hero-slot-fence:{c42}");
    }

    #[test]
    fn scripts_get_the_fence_after_their_keys_other_commands_nothing() {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg("abc")
            .arg(2)
            .arg("p:{c1}:a")
            .arg("p:{c1}:b")
            .arg("x")
            .arg(7);
        let out = fenced(&evalsha).expect("a script call is fenced");
        let want: Vec<Vec<u8>> = [
            &b"EVALSHA"[..],
            b"abc",
            b"3",
            b"p:{c1}:a",
            b"p:{c1}:b",
            b"hero-slot-fence:{c1}",
            b"x",
            b"7",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        assert_eq!(args(&out), want);

        let mut no_keys = redis::cmd("EVAL");
        no_keys.arg("return 1").arg(0);
        assert!(fenced(&no_keys).is_none());
        let mut get = redis::cmd("GET");
        get.arg("p:{c1}:a");
        assert!(fenced(&get).is_none());
    }
}
