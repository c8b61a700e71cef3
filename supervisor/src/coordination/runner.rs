//! Runners registered at run time (`runner.create`): the spec's `Runner`, and what the
//! supervisor needs to connect to it.
//!
//! The spec's `address` is an IP address only. A connection needs more, so the record
//! extends it (optional fields, documented in `rpc.discover` and the README):
//! - `port`: the runner listens on `tcp://<address>:<port>` (IPv6 in brackets);
//! - `script_types`: the script types it serves (spec spelling, any case on input);
//! - `hello`: `auto` (default), `on` or `off`, as for a configured pool;
//! - `auth_token`: the token it requires in `hello` (kept, never answered back).
//!
//! A runner without `port` is a record only, as a runner reached through another
//! transport in the reference (Mycelium `topic`): nothing connects to it. One with a
//! `port` becomes a pool of this supervisor ([`RunnerRecord::pool_config`]) on every
//! instance sharing the store (`registry.rs`).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::spec_script_type;
use crate::job::ScriptType;
use crate::pool::{HelloMode, PoolConfig, Transport};

/// Longest `pubkey`, `topic` or `auth_token` accepted.
pub const MAX_RUNNER_TEXT: usize = 1024;

/// A registered runner as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    /// Client-chosen id, unique in its context.
    pub id: u32,
    /// The context it was registered in.
    pub context_id: u32,
    /// The runner's public key (the spec's; not checked here).
    pub pubkey: String,
    /// Its IP address, canonical text.
    pub address: String,
    /// The spec's topic (the reference's Mycelium topic); stored and returned.
    pub topic: String,
    /// The spec's `local`; stored and returned.
    pub local: bool,
    /// Extension: the TCP port it listens on; `None`: not connected.
    pub port: Option<u16>,
    /// Extension: the script types it serves (empty without `port`).
    pub script_types: Vec<ScriptType>,
    /// Extension: `auto`, `on` or `off`.
    pub hello: String,
    /// Extension: the token the runner requires in `hello`.
    pub auth_token: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// 1 for the first registration, one more per replacement: which of two records of
    /// the runner is the newer one.
    pub revision: u64,
}

/// The spec's `RunnerCreate` with the extensions, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerCreate {
    /// Client-chosen id.
    pub id: u32,
    /// Public key.
    pub pubkey: String,
    /// IPv4 or IPv6 textual address.
    pub address: String,
    /// Topic.
    pub topic: String,
    /// Local.
    pub local: bool,
    /// Extension: TCP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Extension: script types served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script_types: Vec<String>,
    /// Extension: `auto`, `on`, `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<String>,
    /// Extension: the runner's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

/// The spec's `Runner` with the extensions (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRunner {
    /// Client-chosen id.
    pub id: u32,
    /// Public key.
    pub pubkey: String,
    /// IP address.
    pub address: String,
    /// Topic.
    pub topic: String,
    /// Local.
    pub local: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Extension: the context.
    pub context_id: u32,
    /// Extension: the TCP port, when the supervisor connects to it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
    /// Extension: `tcp://<address>:<port>`, when it has a port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub endpoint: Option<String>,
    /// Extension: the script types routed to it, spec spelling.
    pub script_types: Vec<String>,
    /// Extension: the `hello` setting.
    pub hello: String,
    /// Extension: the prefix of the names its pool has in `list_runners`
    /// (`ctx<context>.runner<id>`), when it has a port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pool: Option<String>,
}

/// Why a `RunnerCreate` is refused (-32602 on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunnerInputError(pub String);

impl RunnerCreate {
    /// The record of this input in `context`, at `now` (unix seconds).
    pub fn into_record(self, context: u32, now: i64) -> Result<RunnerRecord, RunnerInputError> {
        let bad = |m: String| Err(RunnerInputError(m));
        let address: IpAddr = match self.address.trim().parse() {
            Ok(a) => a,
            Err(_) => {
                return bad(format!(
                    "runner.address must be an IPv4 or IPv6 address, not {:?}",
                    self.address
                ));
            }
        };
        for (name, text) in [("pubkey", &self.pubkey), ("topic", &self.topic)] {
            if text.len() > MAX_RUNNER_TEXT {
                return bad(format!(
                    "runner.{name} is longer than {MAX_RUNNER_TEXT} bytes"
                ));
            }
        }
        if let Some(t) = &self.auth_token
            && (t.is_empty() || t.len() > MAX_RUNNER_TEXT)
        {
            return bad(format!(
                "runner.auth_token must be 1 to {MAX_RUNNER_TEXT} bytes"
            ));
        }
        let hello: HelloMode = match self.hello.as_deref().unwrap_or("auto").parse() {
            Ok(h) => h,
            Err(why) => return bad(format!("runner.{why}")),
        };
        let mut script_types = Vec::new();
        for t in &self.script_types {
            match t.parse::<ScriptType>() {
                Ok(t) if !script_types.contains(&t) => script_types.push(t),
                Ok(_) => {}
                Err(_) => {
                    return bad(format!(
                        "runner.script_types: unknown script type {t:?} (Osis, Sal, V, Python)"
                    ));
                }
            }
        }
        match self.port {
            Some(0) => return bad("runner.port must be 1 to 65535".to_owned()),
            Some(_) if script_types.is_empty() => {
                return bad(
                    "a runner with a port needs script_types: the jobs to route to it".to_owned(),
                );
            }
            None if !script_types.is_empty() || self.auth_token.is_some() => {
                return bad(
                    "script_types and auth_token need a port: without one nothing connects to the runner"
                        .to_owned(),
                );
            }
            _ => {}
        }
        Ok(RunnerRecord {
            id: self.id,
            context_id: context,
            pubkey: self.pubkey,
            address: address.to_string(),
            topic: self.topic,
            local: self.local,
            port: self.port,
            script_types,
            hello: hello.as_str().to_owned(),
            auth_token: self.auth_token,
            created_at: now,
            updated_at: now,
            revision: 1,
        })
    }
}

impl RunnerRecord {
    /// `ip:port` to connect to, when it has a port.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.address.parse().ok()?;
        Some(SocketAddr::new(ip, self.port?))
    }

    /// The prefix of its pools' names: `ctx<context>.runner<id>`.
    pub fn pool_prefix(&self) -> String {
        format!("ctx{}.runner{}", self.context_id, self.id)
    }

    /// Whether `other` connects the same way (same endpoint, types, hello, token):
    /// a registration changed otherwise (topic, pubkey) keeps its pool.
    pub fn same_connection(&self, other: &RunnerRecord) -> bool {
        (
            &self.address,
            self.port,
            &self.script_types,
            &self.hello,
            &self.auth_token,
        ) == (
            &other.address,
            other.port,
            &other.script_types,
            &other.hello,
            &other.auth_token,
        )
    }

    /// The pool that connects to it, named `name`; `None` without a port.
    pub fn pool_config(&self, name: String) -> Option<PoolConfig> {
        let addr = self.socket_addr()?;
        let mut pool = PoolConfig::new(
            name,
            self.script_types.clone(),
            Transport::TcpExternal {
                addr: addr.to_string(),
            },
        );
        pool.hello = self.hello.parse().unwrap_or_default();
        pool.auth_token = self.auth_token.clone();
        pool.context = Some(self.context_id);
        Some(pool)
    }

    /// The wire runner.
    pub fn to_spec(&self) -> SpecRunner {
        let endpoint = self.socket_addr().map(|a| format!("tcp://{a}"));
        SpecRunner {
            id: self.id,
            pubkey: self.pubkey.clone(),
            address: self.address.clone(),
            topic: self.topic.clone(),
            local: self.local,
            created_at: self.created_at,
            updated_at: self.updated_at,
            context_id: self.context_id,
            port: self.port,
            pool: endpoint.as_ref().map(|_| self.pool_prefix()),
            endpoint,
            script_types: self
                .script_types
                .iter()
                .map(|t| spec_script_type::name(*t).to_owned())
                .collect(),
            hello: self.hello.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(address: &str, port: Option<u16>, types: &[&str]) -> RunnerCreate {
        RunnerCreate {
            id: 3,
            pubkey: "02ab".to_owned(),
            address: address.to_owned(),
            topic: "t".to_owned(),
            local: true,
            port,
            script_types: types.iter().map(|t| (*t).to_owned()).collect(),
            hello: None,
            auth_token: None,
        }
    }

    #[test]
    fn a_runner_with_a_port_is_a_tcp_pool_of_its_script_types() {
        let r = input("::1", Some(9000), &["python", "SAL", "Python"])
            .into_record(7, 10)
            .expect("valid");
        assert_eq!(r.script_types, [ScriptType::Python, ScriptType::Sal]);
        let spec = r.to_spec();
        assert_eq!(spec.endpoint.as_deref(), Some("tcp://[::1]:9000"));
        assert_eq!(spec.script_types, ["Python", "Sal"]);
        assert_eq!(spec.pool.as_deref(), Some("ctx7.runner3"));
        let pool = r.pool_config("ctx7.runner3.1".to_owned()).expect("a pool");
        assert_eq!(
            pool.transport,
            Transport::TcpExternal {
                addr: "[::1]:9000".to_owned()
            }
        );
        let record_only = input("10.0.0.1", None, &[])
            .into_record(7, 10)
            .expect("valid");
        assert!(record_only.pool_config("x".to_owned()).is_none());
        assert_eq!(record_only.to_spec().endpoint, None);
    }

    #[test]
    fn bad_runner_input_is_refused_with_a_reason() {
        for (bad, why) in [
            (input("example.com", Some(1), &["sal"]), "IPv4 or IPv6"),
            (input("127.0.0.1", Some(0), &["sal"]), "port"),
            (input("127.0.0.1", Some(9), &[]), "needs script_types"),
            (input("127.0.0.1", None, &["sal"]), "need a port"),
            (
                input("127.0.0.1", Some(9), &["cobol"]),
                "unknown script type",
            ),
        ] {
            let e = bad.into_record(1, 0).expect_err(why);
            assert!(e.0.contains(why), "{e} lacks {why}");
        }
        let mut h = input("127.0.0.1", Some(9), &["sal"]);
        h.hello = Some("maybe".to_owned());
        assert!(h.into_record(1, 0).is_err());
    }
}
