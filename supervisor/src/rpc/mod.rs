//! The JSON-RPC API (`RPC.md`): HTTP and WebSocket on one port, served by jsonrpsee.
//!
//! - `api`: the one trait ([`HeroApiServer`] for the server, [`HeroApiClient`] for clients).
//! - [`types`]: wire shapes, converted explicitly from/to the domain types.
//! - [`error`]: the error codes and their `data.code` strings.
//! - [`auth`]: the bearer-token layer and secp256k1 signature authentication.
//! - [`client`]: HTTP and WebSocket clients with the bearer token set.
//! - `server` (private): the API implemented on the [`Supervisor`] facade.
//!
//! [`start_on`] binds, checks the security rules and starts serving; the returned
//! [`ServerHandle`] stops the server. The OpenRPC document ([`openrpc_document`], also
//! `supervisor/openrpc.json`) is served by `rpc.discover`.

mod api;
pub mod auth;
pub mod client;
pub mod error;
mod server;
pub mod types;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::server::{Server, ServerConfig, ServerHandle};
use serde_json::Value;

pub use self::api::{HeroApiClient, HeroApiServer};
use self::auth::{
    BearerAuthLayer, DEFAULT_MAX_PENDING_NONCES, DEFAULT_NONCE_TTL, Grant, NonceStore, TokenGrant,
};
use self::server::RpcHandler;
use crate::access::{Directory, MemoryDirectory};
use crate::clock::{Clock, SystemClock};
use crate::coordination::deadlines::MessageDeadlines;
use crate::coordination::registry::RunnerRegistry;
use crate::coordination::{CoordinationStore, MemoryCoordination};
use crate::service::Supervisor;

/// Default port.
pub const DEFAULT_PORT: u16 = 9652;
/// Default listen address: loopback only, [`DEFAULT_PORT`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9652";
/// Largest request body (HTTP) or message (WebSocket). Default 2 MiB: a script is at
/// most 1 MiB, and JSON escaping can double it.
pub const DEFAULT_MAX_REQUEST_BODY: u32 = 2 * 1024 * 1024;
/// Largest response. Default 64 MiB: `get_job_logs` of a chatty job is the big one.
pub const DEFAULT_MAX_RESPONSE_BODY: u32 = 64 * 1024 * 1024;
/// Connections (HTTP keep-alive or WebSocket) open at once. Default 256.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// Subscriptions open at once on one WebSocket connection. Default 64.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 64;

/// The OpenRPC document, as committed in `supervisor/openrpc.json`.
pub const OPENRPC_JSON: &str = include_str!("../../openrpc.json");

/// The parsed OpenRPC document served by `rpc.discover`.
pub fn openrpc_document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(|| {
        // The file is part of the build and a test parses it: it is valid JSON.
        serde_json::from_str(OPENRPC_JSON).unwrap_or(Value::Null)
    });
    &DOC
}

/// Settings of the RPC server. `Debug` never shows the token.
#[derive(Clone)]
pub struct RpcConfig {
    /// Bearer token required on every HTTP request and WebSocket upgrade. Default none;
    /// a non-loopback listen address requires one.
    pub auth_token: Option<String>,
    /// See [`DEFAULT_MAX_REQUEST_BODY`].
    pub max_request_body_bytes: u32,
    /// See [`DEFAULT_MAX_RESPONSE_BODY`].
    pub max_response_body_bytes: u32,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: u32,
    /// See [`DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION`].
    pub max_subscriptions_per_connection: u32,
    /// How long a `fetch_nonce` nonce stays valid. Default [`DEFAULT_NONCE_TTL`] (5 min).
    pub nonce_ttl: Duration,
    /// Nonces pending at once. Default [`DEFAULT_MAX_PENDING_NONCES`].
    pub max_pending_nonces: usize,
    /// The clock nonce expiry is measured on (tests use a manual one).
    pub clock: Arc<dyn Clock>,
    /// More bearer tokens, each granted to a server admin or an actor (`[[tokens]]` in
    /// the config file). Any token configured (this or `auth_token`) turns auth on.
    pub tokens: Vec<TokenGrant>,
    /// Where actors and contexts live; `None`: a fresh in-memory directory (the
    /// embedded default). A server on Redis passes a [`RedisDirectory`] on the same
    /// Redis, so every instance enforces the same rules.
    ///
    /// [`RedisDirectory`]: crate::access::RedisDirectory
    pub directory: Option<Arc<dyn Directory>>,
    /// Where coordinator jobs and flows live; `None`: a fresh in-memory store. A server
    /// on Redis passes a [`RedisCoordination`] on the same Redis.
    ///
    /// [`RedisCoordination`]: crate::coordination::RedisCoordination
    pub coordination: Option<Arc<dyn CoordinationStore>>,
}

impl RpcConfig {
    /// Every accepted token: the global `auth_token` (a server admin's), then `tokens`.
    fn grants(&self) -> Vec<TokenGrant> {
        self.auth_token
            .as_deref()
            .and_then(|t| TokenGrant::from_token(t, Grant::Admin))
            .into_iter()
            .chain(self.tokens.iter().cloned())
            .collect()
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            auth_token: None,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY,
            max_response_body_bytes: DEFAULT_MAX_RESPONSE_BODY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            nonce_ttl: DEFAULT_NONCE_TTL,
            max_pending_nonces: DEFAULT_MAX_PENDING_NONCES,
            clock: Arc::new(SystemClock),
            tokens: Vec::new(),
            directory: None,
            coordination: None,
        }
    }
}

impl std::fmt::Debug for RpcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConfig")
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_request_body_bytes", &self.max_request_body_bytes)
            .field("max_response_body_bytes", &self.max_response_body_bytes)
            .field("max_connections", &self.max_connections)
            .field(
                "max_subscriptions_per_connection",
                &self.max_subscriptions_per_connection,
            )
            .field("nonce_ttl", &self.nonce_ttl)
            .field("max_pending_nonces", &self.max_pending_nonces)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A non-loopback address without a bearer token would expose the API to the network.
    #[error(
        "refusing to listen on {addr} without an auth token: it is not a loopback address, \
         so anyone on the network could run scripts; set --auth-token (or HERO_AUTH_TOKEN) \
         or listen on 127.0.0.1"
    )]
    NonLoopbackWithoutToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// An empty token would be accepted by anyone.
    #[error("the auth token is empty")]
    EmptyToken,
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The API's methods on `supervisor`, without a transport (jsonrpsee's [`RpcModule`]):
/// its `method_names()` are exactly the methods served. Without the server's
/// background work either: `runner.create` records runners but connects to none, and
/// message deadlines are not swept; [`start_on`] does both.
pub fn rpc_module(supervisor: Supervisor, config: &RpcConfig) -> RpcModule<()> {
    module_of(handler(supervisor, config))
}

fn handler(supervisor: Supervisor, config: &RpcConfig) -> RpcHandler {
    let coordination = config
        .coordination
        .clone()
        .unwrap_or_else(|| Arc::new(MemoryCoordination::new()));
    RpcHandler {
        runners: None,
        deadlines: MessageDeadlines::new(supervisor.clone(), coordination.clone()),
        coordination,
        supervisor,
        nonces: Arc::new(NonceStore::new(
            config.clock.clone(),
            config.nonce_ttl,
            config.max_pending_nonces,
        )),
        openrpc: Arc::new(openrpc_document().clone()),
        directory: config
            .directory
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryDirectory::new())),
    }
}

fn module_of(handler: RpcHandler) -> RpcModule<()> {
    let mut module = RpcModule::new(());
    module
        .merge(handler.into_rpc())
        .unwrap_or_else(|e| unreachable!("the API's method names are unique: {e}"));
    module
}

/// The security rules of [`start_on`], checkable before anything is started: a
/// non-loopback address needs a token, and a token can't be empty.
pub fn check_listen(addr: SocketAddr, config: &RpcConfig) -> Result<(), StartError> {
    match config.auth_token.as_deref() {
        Some("") => Err(StartError::EmptyToken),
        None if config.tokens.is_empty() && !addr.ip().is_loopback() => {
            Err(StartError::NonLoopbackWithoutToken { addr })
        }
        _ => Ok(()),
    }
}

/// Serves the API on `addr` (HTTP and WebSocket on one port; port 0 picks one) until the
/// returned handle is stopped. Returns the bound address.
///
/// Refuses a non-loopback address without a token ([`StartError::NonLoopbackWithoutToken`]).
pub async fn start_on(
    addr: SocketAddr,
    config: RpcConfig,
    supervisor: Supervisor,
) -> Result<(SocketAddr, ServerHandle), StartError> {
    check_listen(addr, &config)?;
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_body_bytes)
        .max_response_body_size(config.max_response_body_bytes)
        .max_connections(config.max_connections)
        .max_subscriptions_per_connection(config.max_subscriptions_per_connection)
        .build();
    let http_middleware =
        tower::ServiceBuilder::new().layer(BearerAuthLayer::with_grants(config.grants()));
    let server = Server::builder()
        .set_config(server_config)
        .set_http_middleware(http_middleware)
        .build(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = server
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let mut handler = handler(supervisor.clone(), &config);
    let runners = Arc::new(RunnerRegistry::new(
        supervisor.clone(),
        handler.coordination.clone(),
    ));
    handler.runners = Some(runners.clone());
    // Registered runners (connected at once, then kept in sync with the store) and
    // message deadlines, until the supervisor shuts down.
    supervisor.spawn_background(|stop| runners.run(stop));
    let deadlines = handler.deadlines.clone();
    supervisor.spawn_background(|stop| deadlines.run(stop));
    let handle = server.start(module_of(handler));
    tracing::info!(
        addr = %local,
        auth = config.auth_token.is_some() || !config.tokens.is_empty(),
        "JSON-RPC listening (HTTP and WebSocket)"
    );
    Ok((local, handle))
}
