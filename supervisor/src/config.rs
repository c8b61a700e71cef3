//! Configuration of `hero-supervisor serve`: a TOML file, then environment variables
//! (`HERO_*`), then command-line flags; the later wins.
//!
//! ```toml
//! # hero.toml: every key is optional
//! listen = "127.0.0.1:9652"          # HERO_LISTEN, --listen
//! redis_url = "redis://127.0.0.1/"   # HERO_REDIS_URL, --redis-url (absent: in-memory store)
//! redis_prefix = "hero"              # HERO_REDIS_PREFIX, --redis-prefix
//! redis_cluster = false              # HERO_REDIS_CLUSTER, --redis-cluster: redis_url is a
//!                                    # comma-separated list of the cluster's seed nodes
//! auth_token = "change-me"           # HERO_AUTH_TOKEN, --auth-token
//! tls_cert = "/etc/hero/cert.pem"    # HERO_TLS_CERT, --tls-cert (PEM chain; with tls_key: HTTPS/WSS)
//! tls_key = "/etc/hero/key.pem"      # HERO_TLS_KEY, --tls-key (PEM private key)
//! max_request_body_bytes = 2097152   # HERO_MAX_REQUEST_BODY_BYTES, --max-request-body-bytes
//! max_connections = 256              # HERO_MAX_CONNECTIONS, --max-connections
//! max_subscriptions_per_connection = 64  # HERO_MAX_SUBSCRIPTIONS_PER_CONNECTION, ...
//! max_script_bytes = 1048576         # HERO_MAX_SCRIPT_BYTES, --max-script-bytes
//! lease_secs = 30                    # HERO_LEASE_SECS, --lease-secs
//! worker_threads = 1                 # HERO_WORKER_THREADS, --worker-threads (default: cores - 1, at least 1)
//! runners = ["Python=tcp://127.0.0.1:9000", "V=stdio:my-v-runner --stdio"]  # --runner (repeatable)
//! server_key_file = "/var/lib/hero/server.key"  # HERO_SERVER_KEY_FILE, --server-key (HERO_SERVER_KEY: the hex itself)
//! return_hosts = ["127.0.0.0/8", "::1", "localhost"]  # HERO_RETURN_HOSTS (comma-separated), --return-host (repeatable)
//! cors_origins = ["https://ops.example.com"]  # HERO_CORS_ORIGINS (comma-separated), --cors-origin (repeatable); "*" alone: any
//! delivery_window_secs = 86400       # HERO_DELIVERY_WINDOW_SECS, --delivery-window-secs
//! keep_finished_secs = 86400         # HERO_KEEP_FINISHED_SECS, --keep-finished-secs
//! keep_finished_count = 100000       # HERO_KEEP_FINISHED_COUNT, --keep-finished-count
//!
//! [[tokens]]                         # more bearer tokens, each someone's (file only)
//! token = "reader-secret"            # or token_sha256 = "<64 hex digits>"
//! actor = 7                          # or admin = true
//! ```
//!
//! Runner pools: by default the built-in runner (`<this executable> runner --stdio`) serves
//! all four script types. Each `TYPE[,TYPE..]=tcp://HOST:PORT`,
//! `TYPE[,TYPE..]=stdio:COMMAND ARGS..` or `TYPE[,TYPE..]=tcp-managed:COMMAND ARGS..`,
//! optionally followed by `;hello=auto|on|off`, `;processes=N`, `;max_in_flight=N`, adds a
//! pool for those types (`parse_runner`); the built-in runner keeps the types no such
//! pool serves.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::calls::{CallsConfig, ReturnAllowList, ServerKey};
use crate::job::{Limits, ScriptType};
#[cfg(test)]
use crate::pool::HelloMode;
use crate::pool::{PoolConfig, Transport};
use crate::rpc::auth::{Grant, TokenGrant};
use crate::rpc::tls::TlsFiles;
use crate::rpc::{
    DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION, DEFAULT_PORT, RpcConfig,
};
use crate::service::SupervisorConfig;
use crate::store::StoreConfig;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        message: String,
    },
    /// `listen` is not `HOST:PORT` with an IP address.
    #[error("invalid listen address {0:?}: expected IP:PORT, e.g. 127.0.0.1:9652")]
    Listen(String),
    /// `worker_threads` out of range.
    #[error("invalid worker_threads {0}: expected 1..=1024")]
    WorkerThreads(u16),
    /// `lease_secs` out of range.
    #[error("invalid lease_secs {0}: expected 1..=3600 seconds")]
    Lease(u64),
    /// A `[[tokens]]` entry that is not exactly one of `token`/`token_sha256` and one of
    /// `actor`/`admin = true` (the token itself is never repeated).
    #[error("invalid [[tokens]] entry {index}: {reason}")]
    Token {
        /// Its position, from 0.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The server key could not be read, created or parsed.
    #[error(transparent)]
    ServerKey(#[from] crate::calls::KeyError),
    /// A `return_hosts` rule does not parse.
    #[error(transparent)]
    ReturnHost(#[from] crate::calls::allow::BadRule),
    /// `keep_finished_secs` out of range.
    #[error("invalid keep_finished_secs {0}: expected 1..=31536000 (a year)")]
    KeepFinished(u64),
    /// `delivery_window_secs` out of range.
    #[error("invalid delivery_window_secs {0}: expected 1..=2592000 (30 days)")]
    DeliveryWindow(u64),
    /// Only one of the TLS certificate and key is set: TLS needs both.
    #[error("TLS needs both a certificate and a key: {missing} is not set")]
    TlsPair {
        /// The one missing, as its flag (`--tls-cert` or `--tls-key`).
        missing: &'static str,
    },
    /// A runner spec that is not `TYPE=tcp://HOST:PORT` or `TYPE=stdio:COMMAND ARGS..`.
    #[error("invalid runner {spec:?}: {reason}")]
    Runner {
        /// The spec.
        spec: String,
        /// What is wrong.
        reason: String,
    },
}

/// What overrides the config file: the environment and the command line (the binary's
/// `serve` flags, each also read from its `HERO_*` variable, fill it). `None` (or no
/// runners) keeps the file's value, else the default.
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    /// The TOML config file to read first.
    pub config: Option<PathBuf>,
    /// Address to serve JSON-RPC on, `IP:PORT` (default [`DEFAULT_LISTEN`]).
    pub listen: Option<String>,
    /// Redis URL; without one (here or in the file) jobs live in memory.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (default `hero`).
    pub redis_prefix: Option<String>,
    /// `redis_url` names a Redis Cluster: a comma-separated list of seed node URLs.
    pub redis_cluster: Option<bool>,
    /// Bearer token every client must send; required for a non-loopback `listen`.
    pub auth_token: Option<String>,
    /// PEM certificate chain to serve HTTPS and WSS with (needs `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest request body or WebSocket message in bytes.
    pub max_request_body_bytes: Option<u32>,
    /// Connections open at once.
    pub max_connections: Option<u32>,
    /// Subscriptions per WebSocket connection.
    pub max_subscriptions_per_connection: Option<u32>,
    /// Largest script in bytes.
    pub max_script_bytes: Option<usize>,
    /// Lease of a running job in seconds, 1..=3600.
    pub lease_secs: Option<u64>,
    /// Worker threads of the async runtime, 1..=1024.
    pub worker_threads: Option<u16>,
    /// Runner pools (module docs for the spec); when not empty they replace the file's
    /// list.
    pub runners: Vec<String>,
    /// The server key's secret as hex (`HERO_SERVER_KEY`); wins over every key file.
    pub server_key: Option<String>,
    /// The server key file; created on first start when absent. Default
    /// [`default_server_key_file`].
    pub server_key_file: Option<PathBuf>,
    /// Hosts results of signed calls may be POSTed to; when not empty they replace the
    /// file's list (default: loopback only).
    pub return_hosts: Vec<String>,
    /// How long a result's delivery is retried, in seconds (default a day).
    pub delivery_window_secs: Option<u64>,
    /// Retention: seconds an ended job is kept (default a day).
    pub keep_finished_secs: Option<u64>,
    /// Retention: ended jobs kept per terminal status at most (default 100,000).
    pub keep_finished_count: Option<usize>,
    /// Browser origins allowed to call across origins (CORS); when not empty they
    /// replace the file's list (default none: no CORS headers).
    pub cors_origins: Vec<String>,
}

/// The config file's keys; all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    redis_cluster: Option<bool>,
    auth_token: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_request_body_bytes: Option<u32>,
    max_connections: Option<u32>,
    max_subscriptions_per_connection: Option<u32>,
    max_script_bytes: Option<usize>,
    lease_secs: Option<u64>,
    worker_threads: Option<u16>,
    #[serde(default)]
    runners: Vec<String>,
    #[serde(default)]
    tokens: Vec<FileToken>,
    server_key_file: Option<PathBuf>,
    #[serde(default)]
    return_hosts: Vec<String>,
    delivery_window_secs: Option<u64>,
    keep_finished_secs: Option<u64>,
    keep_finished_count: Option<usize>,
    #[serde(default)]
    cors_origins: Vec<String>,
}

/// One `[[tokens]]` entry: a bearer token (or its SHA-256, so the file need not hold
/// the secret) and who its holder acts as.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    token: Option<String>,
    token_sha256: Option<String>,
    actor: Option<u32>,
    #[serde(default)]
    admin: bool,
}

fn token_grants(tokens: &[FileToken]) -> Result<Vec<TokenGrant>, ConfigError> {
    tokens
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let bad = |reason| ConfigError::Token { index, reason };
            let grant = match (t.actor, t.admin) {
                (Some(id), false) => Grant::Actor(id),
                (None, true) => Grant::Admin,
                _ => return Err(bad("set exactly one of `actor = ID` and `admin = true`")),
            };
            match (&t.token, &t.token_sha256) {
                (Some(token), None) => {
                    TokenGrant::from_token(token, grant).ok_or_else(|| bad("the token is empty"))
                }
                (None, Some(hex)) => TokenGrant::from_sha256_hex(hex, grant)
                    .ok_or_else(|| bad("token_sha256 must be 64 hex digits")),
                _ => Err(bad("set exactly one of `token` and `token_sha256`")),
            }
        })
        .collect()
}

/// Everything `serve` needs, resolved. [`ServeConfig::default`] is `hero-supervisor` with
/// no flags.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Redis URL; `None`: the in-memory store. May hold a password: never log it. With
    /// `redis_cluster`, a comma-separated list of the cluster's seed nodes.
    pub redis_url: Option<String>,
    /// Cluster mode: `redis_url` names a Redis Cluster (ARCHITECTURE.md, "Redis
    /// Cluster").
    pub redis_cluster: bool,
    /// Store settings (key prefix, retention).
    pub store: StoreConfig,
    /// RPC server settings (token, limits).
    pub rpc: RpcConfig,
    /// Runner pools, limits and dispatcher settings.
    pub supervisor: SupervisorConfig,
    /// Worker threads of the async runtime.
    pub worker_threads: usize,
}

impl Default for ServeConfig {
    /// Loopback on the default port, the in-memory store, the built-in runner for every
    /// script type, default limits, the default number of worker threads.
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            redis_url: None,
            redis_cluster: false,
            store: StoreConfig::default(),
            rpc: RpcConfig::default(),
            supervisor: SupervisorConfig::with_builtin_runners(),
            worker_threads: crate::runtime::default_worker_threads(),
        }
    }
}

impl ServeConfig {
    /// Resolves the file `args.config` names, then the overrides in `args` (the binary
    /// merges environment and flags into them: a flag wins over its variable).
    pub fn resolve(args: ServeOverrides) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let calls = calls_config(&args, &file)?;
        let listen_text = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let mut store = StoreConfig::default();
        if let Some(prefix) = args.redis_prefix.or(file.redis_prefix) {
            store.prefix = prefix;
        }
        // A flag or variable for either file replaces the file's pair, so that a
        // certificate from the command line is never served with the file's key.
        let (tls_cert, tls_key) = if args.tls_cert.is_some() || args.tls_key.is_some() {
            (args.tls_cert, args.tls_key)
        } else {
            (file.tls_cert, file.tls_key)
        };
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::TlsPair {
                    missing: "--tls-key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::TlsPair {
                    missing: "--tls-cert",
                });
            }
        };
        if let Some(secs) = args.keep_finished_secs.or(file.keep_finished_secs) {
            if !(1..=365 * 24 * 3600).contains(&secs) {
                return Err(ConfigError::KeepFinished(secs));
            }
            store.keep_finished = std::time::Duration::from_secs(secs);
        }
        if let Some(count) = args.keep_finished_count.or(file.keep_finished_count) {
            store.keep_finished_count = count;
        }
        let rpc = RpcConfig {
            auth_token: args.auth_token.or(file.auth_token),
            tls,
            max_request_body_bytes: args
                .max_request_body_bytes
                .or(file.max_request_body_bytes)
                .unwrap_or(DEFAULT_MAX_REQUEST_BODY),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_subscriptions_per_connection: args
                .max_subscriptions_per_connection
                .or(file.max_subscriptions_per_connection)
                .unwrap_or(DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION),
            tokens: token_grants(&file.tokens)?,
            calls,
            cors_origins: if args.cors_origins.is_empty() {
                file.cors_origins
            } else {
                args.cors_origins
            },
            ..RpcConfig::default()
        };
        let runners = if args.runners.is_empty() {
            file.runners
        } else {
            args.runners
        };
        let mut supervisor = supervisor_config(&runners)?;
        supervisor.limits = Limits {
            max_script_len: args
                .max_script_bytes
                .or(file.max_script_bytes)
                .unwrap_or(Limits::default().max_script_len),
            ..Limits::default()
        };
        if let Some(secs) = args.lease_secs.or(file.lease_secs) {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError::Lease(secs));
            }
            supervisor.dispatch.lease = std::time::Duration::from_secs(secs);
        }
        let worker_threads = match args.worker_threads.or(file.worker_threads) {
            None => crate::runtime::default_worker_threads(),
            Some(n @ 1..=1024) => usize::from(n),
            Some(n) => return Err(ConfigError::WorkerThreads(n)),
        };
        Ok(ServeConfig {
            worker_threads,
            listen,
            redis_url: args.redis_url.or(file.redis_url),
            redis_cluster: args.redis_cluster.or(file.redis_cluster).unwrap_or(false),
            store,
            rpc,
            supervisor,
        })
    }
}

/// Where the server key is kept when no file is named:
/// `$XDG_DATA_HOME/hero-supervisor/server.key`, else
/// `$HOME/.local/share/hero-supervisor/server.key`; `None` when neither variable is set.
pub fn default_server_key_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local").join("share"))
        })?;
    Some(base.join("hero-supervisor").join("server.key"))
}

/// Signed calls' settings: the server key (loaded, or created in its file), the return
/// hosts, the delivery window.
fn calls_config(args: &ServeOverrides, file: &FileConfig) -> Result<CallsConfig, ConfigError> {
    let server_key = match (&args.server_key, &args.server_key_file) {
        (Some(hex), _) => Some(ServerKey::from_hex(hex, "HERO_SERVER_KEY")?),
        (None, Some(path)) => Some(ServerKey::load_or_create(path)?),
        (None, None) => match file
            .server_key_file
            .clone()
            .or_else(default_server_key_file)
        {
            Some(path) => Some(ServerKey::load_or_create(&path)?),
            None => None,
        },
    };
    let hosts = if args.return_hosts.is_empty() {
        &file.return_hosts
    } else {
        &args.return_hosts
    };
    let return_hosts = if hosts.is_empty() {
        ReturnAllowList::default()
    } else {
        ReturnAllowList::parse(hosts)?
    };
    let mut calls = CallsConfig {
        server_key,
        return_hosts,
        ..CallsConfig::default()
    };
    if let Some(secs) = args.delivery_window_secs.or(file.delivery_window_secs) {
        if !(1..=30 * 24 * 3600).contains(&secs) {
            return Err(ConfigError::DeliveryWindow(secs));
        }
        calls.delivery_window = std::time::Duration::from_secs(secs);
    }
    Ok(calls)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

/// The built-in pool for the types no spec serves, plus one pool per spec.
fn supervisor_config(specs: &[String]) -> Result<SupervisorConfig, ConfigError> {
    let mut config = SupervisorConfig::with_builtin_runners();
    let mut pools = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        pools.push(parse_runner(spec, n)?);
    }
    let taken: Vec<ScriptType> = pools
        .iter()
        .flat_map(|p: &PoolConfig| p.script_types.clone())
        .collect();
    for builtin in &mut config.pools {
        builtin.script_types.retain(|t| !taken.contains(t));
    }
    config.pools.retain(|p| !p.script_types.is_empty());
    config.pools.extend(pools);
    Ok(config)
}

/// A runner spec: `TYPE[,TYPE..]=TRANSPORT[;OPTION..]`.
///
/// - `TRANSPORT`: `tcp://HOST:PORT` (a runner already listening), `stdio:COMMAND ARGS..`
///   (spawned; frames over its stdin/stdout) or `tcp-managed:COMMAND ARGS..` (spawned
///   with `--tcp-socket 127.0.0.1:PORT` and `RRQ_RUNNER_TCP_SOCKET`, then connected).
///   Commands are split on whitespace, never run through a shell, and cannot hold `;`.
/// - `OPTION`: `hello=auto|on|off` (default `auto`: see [`crate::pool::HelloMode`]),
///   `processes=N` (runner processes or connections, default 1), `max_in_flight=N`
///   (requests in flight per runner, default 64).
fn parse_runner(spec: &str, n: usize) -> Result<PoolConfig, ConfigError> {
    let bad = |reason: &str| ConfigError::Runner {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let (types, target) = spec.split_once('=').ok_or_else(|| {
        bad("expected TYPE=tcp://HOST:PORT, TYPE=stdio:COMMAND or TYPE=tcp-managed:COMMAND")
    })?;
    let script_types = types
        .split(',')
        .map(|t| t.trim().parse::<ScriptType>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e.to_string()))?;
    let mut parts = target.split(';');
    let transport = parts.next().unwrap_or_default().trim();
    let command = |command: &str| -> Result<(String, Vec<String>), ConfigError> {
        let mut words = command.split_whitespace().map(str::to_owned);
        let program = words.next().ok_or_else(|| bad("missing COMMAND"))?;
        Ok((program, words.collect()))
    };
    let transport = if let Some(addr) = transport.strip_prefix("tcp://") {
        if addr.is_empty() {
            return Err(bad("missing HOST:PORT"));
        }
        Transport::TcpExternal {
            addr: addr.to_owned(),
        }
    } else if let Some(rest) = transport.strip_prefix("stdio:") {
        let (program, args) = command(rest)?;
        Transport::Stdio { program, args }
    } else if let Some(rest) = transport.strip_prefix("tcp-managed:") {
        let (program, args) = command(rest)?;
        Transport::TcpManaged { program, args }
    } else {
        return Err(bad(
            "expected tcp://HOST:PORT, stdio:COMMAND or tcp-managed:COMMAND",
        ));
    };
    let names: Vec<&str> = script_types.iter().map(|t| t.as_str()).collect();
    let mut pool = PoolConfig::new(format!("{}-{n}", names.join("-")), script_types, transport);
    for option in parts.map(str::trim).filter(|o| !o.is_empty()) {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| bad(&format!("option {option:?} is not KEY=VALUE")))?;
        let positive = |value: &str| -> Result<usize, ConfigError> {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_POOL_NUMBER).contains(n))
                .ok_or_else(|| {
                    bad(&format!(
                        "{key} must be 1..={MAX_POOL_NUMBER}, not {value:?}"
                    ))
                })
        };
        match key.trim() {
            "hello" => pool.hello = value.trim().parse().map_err(|e: String| bad(&e))?,
            "processes" => pool.processes = positive(value)?,
            "max_in_flight" => pool.max_in_flight = positive(value)?,
            other => {
                return Err(bad(&format!(
                    "unknown option {other:?} (hello, processes, max_in_flight)"
                )));
            }
        }
    }
    Ok(pool)
}

/// Upper bound of `processes` and `max_in_flight` in a runner spec: a typo must not
/// spawn a million processes.
const MAX_POOL_NUMBER: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(edit: impl FnOnce(&mut ServeOverrides)) -> ServeOverrides {
        let mut a = ServeOverrides::default();
        edit(&mut a);
        a
    }

    #[test]
    fn defaults_are_the_first_run() {
        let c = ServeConfig::resolve(ServeOverrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(ServeConfig::default().listen.to_string(), DEFAULT_LISTEN);
        assert!(c.redis_url.is_none());
        assert!(c.rpc.auth_token.is_none());
        assert_eq!(c.store.prefix, "hero");
        assert_eq!(c.supervisor.pools.len(), 1);
        assert_eq!(c.supervisor.pools[0].script_types, ScriptType::ALL.to_vec());
    }

    #[test]
    fn cors_origins_from_file_then_flags() {
        assert!(
            ServeConfig::resolve(ServeOverrides::default())
                .unwrap()
                .rpc
                .cors_origins
                .is_empty()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        std::fs::write(&path, "cors_origins = [\"https://a.example\"]\n").unwrap();
        let c = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(c.rpc.cors_origins, ["https://a.example"]);
        let c = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.cors_origins = vec!["https://b.example".into(), "http://c.example:8080".into()];
        }))
        .unwrap();
        assert_eq!(
            c.rpc.cors_origins,
            ["https://b.example", "http://c.example:8080"]
        );
    }

    #[test]
    fn retention_from_file_and_flags() {
        let c = ServeConfig::resolve(ServeOverrides::default()).unwrap();
        assert_eq!(
            c.store.keep_finished,
            std::time::Duration::from_secs(86_400)
        );
        assert_eq!(c.store.keep_finished_count, 100_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        std::fs::write(
            &path,
            "keep_finished_secs = 600\nkeep_finished_count = 50\n",
        )
        .unwrap();
        let c = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(c.store.keep_finished, std::time::Duration::from_secs(600));
        assert_eq!(c.store.keep_finished_count, 50);
        let c = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.keep_finished_secs = Some(60);
            a.keep_finished_count = Some(7);
        }))
        .unwrap();
        assert_eq!(c.store.keep_finished, std::time::Duration::from_secs(60));
        assert_eq!(c.store.keep_finished_count, 7);
        let err = ServeConfig::resolve(args(|a| a.keep_finished_secs = Some(0))).unwrap_err();
        assert!(matches!(err, ConfigError::KeepFinished(0)), "{err}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nredis_prefix = \"file\"\nmax_connections = 9\n\
             runners = [\"python=tcp://127.0.0.1:9000\"]\n",
        )
        .unwrap();
        let c = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.listen = Some("127.0.0.1:7001".into());
        }))
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.store.prefix, "file");
        assert_eq!(c.rpc.max_connections, 9);
        let python: Vec<_> = c
            .supervisor
            .pools
            .iter()
            .map(|p| p.script_types.clone())
            .collect();
        assert_eq!(
            python,
            vec![
                vec![ScriptType::Osis, ScriptType::Sal, ScriptType::V],
                vec![ScriptType::Python]
            ]
        );

        std::fs::write(&path, "listne = \"x\"\n").unwrap();
        let err = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn token_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        let digest = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        std::fs::write(
            &path,
            format!(
                "[[tokens]]\ntoken = \"t1\"\nactor = 7\n\
                 [[tokens]]\ntoken_sha256 = \"{digest}\"\nadmin = true\n"
            ),
        )
        .unwrap();
        let c = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap();
        let grants: Vec<Grant> = c.rpc.tokens.iter().map(|t| t.grant).collect();
        assert_eq!(grants, [Grant::Actor(7), Grant::Admin]);
        for bad in [
            "[[tokens]]\ntoken = \"t\"\n",
            "[[tokens]]\ntoken = \"t\"\nactor = 1\nadmin = true\n",
            "[[tokens]]\nactor = 1\n",
            "[[tokens]]\ntoken = \"\"\nactor = 1\n",
            "[[tokens]]\ntoken_sha256 = \"abc\"\nactor = 1\n",
            "[[tokens]]\ntoken = \"t\"\nactor = -1\n",
            "[[tokens]]\ntoken = \"t\"\nactor = 4294967296\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = ServeConfig::resolve(args(|a| a.config = Some(path.clone())));
            assert!(err.is_err(), "{bad}");
        }
        std::fs::write(&path, "[[tokens]]\ntoken = \"s3cret-value\"\n").unwrap();
        let err = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn tls_cert_and_key_come_as_a_pair() {
        let c = ServeConfig::resolve(ServeOverrides::default()).unwrap();
        assert!(c.rpc.tls.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/f/cert.pem\"\ntls_key = \"/f/key.pem\"\n",
        )
        .unwrap();
        let from_file = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(
            from_file.rpc.tls,
            Some(TlsFiles {
                cert: "/f/cert.pem".into(),
                key: "/f/key.pem".into()
            })
        );
        // Flags replace the file's pair as a whole.
        let flags = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.tls_cert = Some("/a/cert.pem".into());
            a.tls_key = Some("/a/key.pem".into());
        }))
        .unwrap();
        assert_eq!(flags.rpc.tls.unwrap().key, PathBuf::from("/a/key.pem"));
        let half = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.tls_cert = Some("/a/cert.pem".into());
        }))
        .unwrap_err();
        assert!(half.to_string().contains("--tls-key is not set"), "{half}");
        let half =
            ServeConfig::resolve(args(|a| a.tls_key = Some("/a/key.pem".into()))).unwrap_err();
        assert!(half.to_string().contains("--tls-cert is not set"), "{half}");
        std::fs::write(&path, "tls_key = \"/f/key.pem\"\n").unwrap();
        let err = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::TlsPair {
                    missing: "--tls-cert"
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn worker_threads_default_file_and_flag() {
        let c = ServeConfig::resolve(ServeOverrides::default()).unwrap();
        assert_eq!(c.worker_threads, crate::runtime::default_worker_threads());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hero.toml");
        std::fs::write(&path, "worker_threads = 3\n").unwrap();
        let from_file = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(from_file.worker_threads, 3);
        let flag = ServeConfig::resolve(args(|a| {
            a.config = Some(path.clone());
            a.worker_threads = Some(2);
        }))
        .unwrap();
        assert_eq!(flag.worker_threads, 2);
        std::fs::write(&path, "worker_threads = 0\n").unwrap();
        let err = ServeConfig::resolve(args(|a| a.config = Some(path.clone()))).unwrap_err();
        assert!(err.to_string().contains("worker_threads 0"), "{err}");
    }

    #[test]
    fn runner_specs() {
        let p = parse_runner("SAL,osis=stdio:my-runner --stdio -v", 0).unwrap();
        assert_eq!(p.script_types, vec![ScriptType::Sal, ScriptType::Osis]);
        assert!(matches!(&p.transport, Transport::Stdio { program, args }
            if program == "my-runner" && args == &["--stdio", "-v"]));
        assert_eq!(p.hello, HelloMode::Auto);
        assert_eq!(p.processes, 1);

        let p = parse_runner("python=tcp-managed:rrq-runner -q;hello=off;processes=2", 1).unwrap();
        assert!(
            matches!(&p.transport, Transport::TcpManaged { program, args }
            if program == "rrq-runner" && args == &["-q"])
        );
        assert_eq!(
            (p.hello, p.processes, p.name.as_str()),
            (HelloMode::Off, 2, "Python-1")
        );
        let p = parse_runner("V=tcp://127.0.0.1:9000; hello=ON ;max_in_flight=8", 0).unwrap();
        assert_eq!((p.hello, p.max_in_flight), (HelloMode::On, 8));
        assert!(
            matches!(&p.transport, Transport::TcpExternal { addr } if addr == "127.0.0.1:9000")
        );

        for bad in [
            "SAL",
            "rust=tcp://x:1",
            "SAL=tcp://",
            "SAL=stdio:",
            "SAL=tcp-managed:",
            "SAL=http://x",
            "SAL=tcp://x:1;hello=maybe",
            "SAL=tcp://x:1;hello",
            "SAL=tcp://x:1;processes=0",
            "SAL=tcp://x:1;processes=1000000",
            "SAL=tcp://x:1;max_in_flight=-1",
            "SAL=tcp://x:1;token=secret",
        ] {
            assert!(parse_runner(bad, 0).is_err(), "{bad}");
        }
        let all = supervisor_config(&["OSIS,SAL,V,Python=tcp://h:1".into()]).unwrap();
        assert_eq!(all.pools.len(), 1);
        assert!(ServeConfig::resolve(args(|a| a.listen = Some("localhost".into()))).is_err());
    }
}
