//! The JSON-RPC API (`RPC.md`): HTTP and WebSocket on one port, served by jsonrpsee.
//!
//! - `api`: the one trait ([`HeroApiServer`] for the server, [`HeroApiClient`] for clients).
//! - [`types`]: wire shapes, converted explicitly from/to the domain types.
//! - [`error`]: the error codes and their `data.code` strings.
//! - [`auth`]: the bearer-token layer and secp256k1 signature authentication.
//! - [`client`]: HTTP and WebSocket clients with the bearer token set.
//! - [`tls`]: HTTPS and WSS on the same port (`--tls-cert`/`--tls-key`), with rustls.
//! - [`rest`]: the REST face under `/v1` (and its OpenAPI document), calling the
//!   served methods in-process; `invoke` (private) is how, shared with the signed calls.
//! - [`metrics`]: `GET /metrics` (Prometheus) and the counting of JSON-RPC calls.
//! - `events` (private): a job's event stream, for the subscription and the REST
//!   WebSocket alike.
//! - `server` (private): the API implemented on the [`Supervisor`] facade.
//! - [`ui`]: the dashboard's embedded files under `/ui/`.
//!
//! [`start_on`] binds, checks the security rules and starts serving; the returned
//! [`ServerHandle`] stops the server. With [`RpcConfig::tls`] set, the port speaks only
//! TLS: the same service (auth layer, limits) runs behind a rustls handshake per
//! connection. TLS does not relax the rule that a non-loopback address needs a token:
//! encryption says nothing about who may call. The OpenRPC document ([`openrpc_document`], also
//! `supervisor/openrpc.json`) is served by `rpc.discover`.

mod api;
pub mod auth;
mod calls_api;
pub mod client;
pub mod error;
mod events;
pub(crate) mod invoke;
pub mod metrics;
pub mod origin;
pub mod rest;
mod server;
pub mod tls;
pub mod types;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::core::middleware::RpcServiceBuilder;
use jsonrpsee::server::{RandomStringIdProvider, Server, ServerConfig, ServerHandle, stop_channel};
use serde_json::Value;
use tower_http::cors::CorsLayer;

pub use self::api::{HeroApiClient, HeroApiServer};
use self::auth::{
    BearerAuthLayer, DEFAULT_MAX_PENDING_NONCES, DEFAULT_NONCE_TTL, Grant, NonceStore, TokenGrant,
};
pub use self::calls_api::{
    CallState, CallsApiClient, CallsApiServer, RpcAccepted, RpcInParams, RpcRefParams, ServerInfo,
};
use self::rest::RestLayer;
use self::server::{CallsHandler, RpcHandler};
use self::tls::{TlsError, TlsFiles, TlsServer};
use crate::access::{Directory, MemoryDirectory};
use crate::calls::{Calls, CallsConfig, MemoryCalls};
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
    /// Signed asynchronous calls: the server key, where results may go, the call
    /// store (`None`: in memory; a server on Redis passes a [`RedisCalls`]).
    ///
    /// [`RedisCalls`]: crate::calls::RedisCalls
    pub calls: CallsConfig,
    /// Serve HTTPS and WSS with this certificate and key instead of plain HTTP and WS.
    /// Default none.
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to call JSON-RPC and REST across origins (CORS), each
    /// `scheme://host[:port]`, or `*` alone for every origin. Default none: no CORS
    /// headers, and a preflight goes to the auth layer like any request. Credentials
    /// (cookies) are never allowed: the API authenticates with a bearer token, which a
    /// page sends in `Authorization` without them.
    pub cors_origins: Vec<String>,
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
            calls: CallsConfig::default(),
            tls: None,
            cors_origins: Vec::new(),
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
            .field("calls", &self.calls)
            .field("tls", &self.tls)
            .field("cors_origins", &self.cors_origins)
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
    /// The TLS certificate or key can't be used (unreadable, not PEM, not a pair).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A CORS origin is not `scheme://host[:port]`, or `*` is not alone.
    #[error("invalid CORS origin {origin:?}: {reason}")]
    CorsOrigin {
        /// The origin as configured.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
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
///
/// The signed-call methods run the others as their callers; their background tasks
/// (delivery, leases) are spawned on the current tokio runtime (call this inside one)
/// and end when the module is dropped.
pub fn rpc_module(supervisor: Supervisor, config: &RpcConfig) -> RpcModule<()> {
    module_of(handler(supervisor, config), config)
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
        call_store: config
            .calls
            .store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryCalls::new(config.calls.max_calls_in_memory))),
    }
}

/// The API's methods on `handler`, then the signed-call methods around them.
fn module_of(handler: RpcHandler, config: &RpcConfig) -> RpcModule<()> {
    let supervisor = handler.supervisor.clone();
    let calls_config = CallsConfig {
        store: Some(handler.call_store.clone()),
        ..config.calls.clone()
    };
    let mut module = RpcModule::new(());
    module
        .merge(handler.into_rpc())
        .unwrap_or_else(|e| unreachable!("the API's method names are unique: {e}"));
    let calls = Calls::start(
        calls_config,
        supervisor,
        (*module).clone(),
        config.max_response_body_bytes as usize,
    );
    module
        .merge(CallsHandler { calls }.into_rpc())
        .unwrap_or_else(|e| unreachable!("the call methods' names are unique: {e}"));
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

/// What [`start_on`] checks before it binds: the listen rules ([`check_listen`]) and
/// the TLS files, loaded. [`crate::server::start`] checks before it spawns any runner.
#[derive(Debug)]
pub struct Checked {
    tls: Option<TlsServer>,
    cors: Option<CorsLayer>,
}

/// Checks `config` for serving on `addr`: [`check_listen`], then reads the TLS
/// certificate and key, if any ([`StartError::Tls`] names the file).
pub fn check(addr: SocketAddr, config: &RpcConfig) -> Result<Checked, StartError> {
    check_listen(addr, config)?;
    let cors = cors_layer(&config.cors_origins)?;
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    Ok(Checked { tls, cors })
}

/// How long a browser may cache a preflight's answer.
pub const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer of `origins` (see [`RpcConfig::cors_origins`]); `None` for none.
/// Allows `GET`, `POST` and the request headers the API reads (`Authorization`,
/// `Content-Type`, `traceparent`), exposes `Location` and `WWW-Authenticate`, and never
/// allows credentials.
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, StartError> {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, LOCATION, WWW_AUTHENTICATE};
    use tower_http::cors::AllowOrigin;
    if origins.is_empty() {
        return Ok(None);
    }
    let bad = |origin: &str, reason| StartError::CorsOrigin {
        origin: origin.to_owned(),
        reason,
    };
    let allow = if origins.iter().any(|o| o == "*") {
        if let Some(other) = origins.iter().find(|o| *o != "*") {
            return Err(bad(other, "`*` allows every origin: list it alone"));
        }
        AllowOrigin::any()
    } else {
        let mut values = Vec::with_capacity(origins.len());
        for origin in origins {
            let url = url::Url::parse(origin)
                .map_err(|_| bad(origin, "expected scheme://host[:port]"))?;
            let serialized = url.origin().ascii_serialization();
            if !matches!(url.scheme(), "http" | "https")
                || serialized != origin.trim_end_matches('/')
            {
                return Err(bad(
                    origin,
                    "expected http(s)://host[:port], without path, query or user",
                ));
            }
            let value = http::HeaderValue::from_str(&serialized)
                .map_err(|_| bad(origin, "not a valid header value"))?;
            values.push(value);
        }
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static(auth::TRACEPARENT),
            ])
            .expose_headers([LOCATION, WWW_AUTHENTICATE])
            .max_age(CORS_MAX_AGE),
    ))
}

/// Serves the API on `addr` (HTTP and WebSocket on one port, or HTTPS and WSS with
/// [`RpcConfig::tls`]; port 0 picks one) until the returned handle is stopped. Returns
/// the bound address.
///
/// Refuses a non-loopback address without a token ([`StartError::NonLoopbackWithoutToken`])
/// and an unusable certificate or key ([`StartError::Tls`]).
pub async fn start_on(
    addr: SocketAddr,
    config: RpcConfig,
    supervisor: Supervisor,
) -> Result<(SocketAddr, ServerHandle), StartError> {
    let checked = check(addr, &config)?;
    start_checked(addr, config, supervisor, checked).await
}

/// [`start_on`] after [`check`].
pub async fn start_checked(
    addr: SocketAddr,
    config: RpcConfig,
    supervisor: Supervisor,
    checked: Checked,
) -> Result<(SocketAddr, ServerHandle), StartError> {
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_body_bytes)
        .max_response_body_size(config.max_response_body_bytes)
        .max_connections(config.max_connections)
        .max_subscriptions_per_connection(config.max_subscriptions_per_connection)
        // Subscription ids are strings, as the OpenRPC document declares (jsonrpsee's
        // default is an integer, which a client generated from the document refuses).
        .set_id_provider(RandomStringIdProvider::new(16))
        .build();
    let auth = config.auth_token.is_some() || !config.tokens.is_empty();
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
    let metrics = metrics::MetricsLayer::new(supervisor.clone(), handler.call_store.clone());
    let module = module_of(handler, &config);
    let rpc_metrics = RpcServiceBuilder::new().layer(metrics::RpcMetricsLayer::new(
        supervisor.metrics().clone(),
        module.method_names(),
        config.max_response_body_bytes as usize,
    ));
    let rest = RestLayer::new(rest::RestConfig {
        methods: (*module).clone(),
        supervisor: supervisor.clone(),
        max_request_body_bytes: config.max_request_body_bytes as usize,
        max_response_body_bytes: config.max_response_body_bytes as usize,
        max_event_streams: config.max_connections as usize,
    });
    // Outside in: CORS (a preflight carries no token: it is answered here), the origin
    // guard (a page of another site is refused, `origin.rs`), the dashboard's public
    // files (`/ui`, `ui.rs`), the bearer token, then `/metrics`, the REST face, which
    // answers `/v1` and passes the rest to jsonrpsee.
    let http_middleware = tower::ServiceBuilder::new()
        .layer(tower::util::option_layer(checked.cors))
        .layer(origin::OriginGuardLayer::new(&config.cors_origins))
        .layer(ui::UiLayer)
        .layer(BearerAuthLayer::with_grants(config.grants()))
        .layer(metrics)
        .layer(rest);
    let builder = Server::builder()
        .set_config(server_config)
        .set_rpc_middleware(rpc_metrics)
        .set_http_middleware(http_middleware);
    let Some(tls) = checked.tls else {
        let server = builder
            .build(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = server
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let handle = server.start(module);
        tracing::info!(
            addr = %local,
            auth,
            tls = false,
            "JSON-RPC listening (HTTP and WebSocket)"
        );
        return Ok((local, handle));
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let (stop, handle) = stop_channel();
    let serving = tls::Serving {
        builder: builder.to_service_builder(),
        methods: module.into(),
        stop,
        max_handshakes: usize::try_from(config.max_connections)
            .unwrap_or(usize::MAX)
            .max(tls::MAX_PENDING_HANDSHAKES),
    };
    tokio::spawn(tls::serve(listener, tls, serving));
    tracing::info!(
        addr = %local,
        auth,
        tls = true,
        cert = %config.tls.as_ref().map(|f| f.cert.display().to_string()).unwrap_or_default(),
        "JSON-RPC listening (HTTPS and WSS)"
    );
    Ok((local, handle))
}
