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
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
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
