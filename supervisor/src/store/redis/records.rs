//! What every JSON-record store beside the jobs shares (the actor directory, the
//! coordinator's jobs and flows, signed calls): one way to connect, one way to report a
//! Redis failure without echoing the URL, and one compare-and-set of a STRING record.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

/// A connection manager to `url` with the house settings: 2 s to connect and to answer,
/// two retries. The URL is never logged: it may hold a password.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, RedisError> {
    let client = Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await
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
        conn: &mut ConnectionManager,
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
