//! The whole server in one call, in the shape of mini-redis's `server::run(listener,
//! shutdown)`: [`start`] builds what a [`ServeConfig`] describes (the store it names,
//! the actor and context directory beside it, the [`Supervisor`] over it, the JSON-RPC
//! server in front of that) and
//! [`RunningServer::stop`] takes it down in order; [`run`] is the two around a shutdown
//! future, so a caller (the binary's signals, a test) decides when it ends.
//!
//! The `hero-supervisor` binary is argument parsing, logging and signals around [`run`];
//! tests and `hero-bench` start whole servers with [`start`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::server::ServerHandle;

use crate::access::{DirectoryError, RedisDirectory};
use crate::calls::{CallStoreError, RedisCalls};
use crate::clock::SystemClock;
use crate::config::ServeConfig;
use crate::coordination::{CoordinationError, RedisCoordination};
use crate::rpc::{self, StartError};
use crate::service::Supervisor;
use crate::store::{JobStore, MemoryStore, RedisStore, StoreError};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The JSON-RPC server refused the listen address (non-loopback without a token, an
    /// empty token) or the TLS files, or could not bind.
    #[error(transparent)]
    Rpc(#[from] StartError),
    /// The Redis store could not be opened (invalid URL, unreachable).
    #[error("connecting to redis: {0}")]
    Redis(#[source] StoreError),
    /// The actor and context directory in Redis could not be opened.
    #[error("connecting to redis: {0}")]
    Directory(#[source] DirectoryError),
    /// The coordinator's job and flow store in Redis could not be opened.
    #[error("connecting to redis: {0}")]
    Coordination(#[source] CoordinationError),
    /// The signed calls' store in Redis could not be opened.
    #[error("connecting to redis: {0}")]
    Calls(#[source] CallStoreError),
}

/// A started server: the supervisor and the JSON-RPC server in front of it. Stop it with
/// [`RunningServer::stop`]; dropping it stops serving JSON-RPC but leaves the
/// supervisor's tasks to the runtime's end.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    supervisor: Supervisor,
    rpc: ServerHandle,
}

impl RunningServer {
    /// The address JSON-RPC is served on (the bound port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The supervisor behind the API (and through it, the store).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Stops serving JSON-RPC, then shuts the supervisor down (stop claiming, drain,
    /// release, stop runners; see [`Supervisor::shutdown`]). In that order, so no request
    /// reaches a supervisor that is draining; waiting requests (`run_job`) end with the
    /// connection.
    pub async fn stop(self) {
        // Err only when it was already stopped, which is what we want.
        let _ = self.rpc.stop();
        self.rpc.stopped().await;
        self.supervisor.shutdown().await;
    }
}

/// Starts the server `config` describes: checks the listen address and reads the TLS
/// certificate and key, if any (before any runner is spawned), opens the store (memory, or Redis at `redis_url` with the store's prefix),
/// starts the [`Supervisor`] and serves JSON-RPC on `config.listen`. Runs on the current
/// tokio runtime; the binary sizes that runtime by `config.worker_threads`.
pub async fn start(mut config: ServeConfig) -> Result<RunningServer, ServerError> {
    // Listen rules and the TLS files first: a bad flag must not spawn runners.
    let checked = rpc::check(config.listen, &config.rpc)?;
    let store = open_store(&config).await?;
    let cluster = config.redis_cluster;
    let prefix = config.store.prefix.clone();
    if let (Some(url), None) = (&config.redis_url, &config.rpc.directory) {
        // Actors and contexts beside the jobs: every instance enforces the same rules.
        let directory = if cluster {
            RedisDirectory::connect_cluster(&cluster_nodes(url), &prefix).await
        } else {
            RedisDirectory::connect(url, &prefix).await
        }
        .map_err(ServerError::Directory)?;
        config.rpc.directory = Some(Arc::new(directory));
    }
    if let (Some(url), None) = (&config.redis_url, &config.rpc.calls.store) {
        // Signed calls and their outbox beside the jobs: a restart or another instance
        // delivers what this one did not.
        let retention = config.rpc.calls.retention;
        let calls = if cluster {
            RedisCalls::connect_cluster(&cluster_nodes(url), &prefix, retention).await
        } else {
            RedisCalls::connect(url, &prefix, retention).await
        }
        .map_err(ServerError::Calls)?;
        config.rpc.calls.store = Some(Arc::new(calls));
    }
    if let (Some(url), None) = (&config.redis_url, &config.rpc.coordination) {
        // Coordinator jobs and flows beside the jobs: every instance sees the same flows.
        let coordination = if cluster {
            RedisCoordination::connect_cluster(&cluster_nodes(url), &prefix).await
        } else {
            RedisCoordination::connect(url, &prefix).await
        }
        .map_err(ServerError::Coordination)?;
        config.rpc.coordination = Some(Arc::new(coordination));
    }
    let supervisor = Supervisor::start(config.supervisor, store);
    match rpc::start_checked(config.listen, config.rpc, supervisor.clone(), checked).await {
        Ok((addr, rpc)) => Ok(RunningServer {
            addr,
            supervisor,
            rpc,
        }),
        Err(e) => {
            supervisor.shutdown().await;
            Err(e.into())
        }
    }
}

/// Runs the server `config` describes until `shutdown` completes, then stops it
/// ([`RunningServer::stop`]).
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = start(config).await?;
    tracing::info!(addr = %server.addr(), "hero-supervisor ready");
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// The store `config` names.
async fn open_store(config: &ServeConfig) -> Result<Arc<dyn JobStore>, ServerError> {
    let clock = Arc::new(SystemClock);
    match &config.redis_url {
        None => {
            tracing::info!("jobs are kept in memory (no redis url)");
            Ok(Arc::new(MemoryStore::new(config.store.clone(), clock)))
        }
        Some(url) if config.redis_cluster => {
            let nodes = cluster_nodes(url);
            let store = RedisStore::connect_cluster(&nodes, config.store.clone(), clock)
                .await
                .map_err(ServerError::Redis)?;
            tracing::info!(prefix = %config.store.prefix, seeds = nodes.len(), "jobs are kept in a redis cluster");
            Ok(Arc::new(store))
        }
        Some(url) => {
            let store = RedisStore::connect(url, config.store.clone(), clock)
                .await
                .map_err(ServerError::Redis)?;
            tracing::info!(prefix = %config.store.prefix, "jobs are kept in redis");
            Ok(Arc::new(store))
        }
    }
}

/// The seed node URLs of a cluster `--redis-url` (comma-separated).
fn cluster_nodes(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}
