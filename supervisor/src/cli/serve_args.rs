//! The flags of `serve` (clap), turned into the library's [`ServeOverrides`].

use std::path::PathBuf;

use clap::Args;
use hero_supervisor::config::ServeOverrides;

/// The flags of `serve`. Each also reads its `HERO_*` variable; a flag beats the variable,
/// and both beat the config file.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    /// TOML config file (keys as the flags, with underscores).
    #[arg(long, env = "HERO_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to serve JSON-RPC (HTTP and WebSocket) on [default: 127.0.0.1:9652].
    #[arg(long, env = "HERO_LISTEN", value_name = "IP:PORT")]
    pub(crate) listen: Option<String>,
    /// Redis URL; without it jobs live in memory.
    #[arg(
        long,
        env = "HERO_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) redis_url: Option<String>,
    /// Prefix of every Redis key [default: hero].
    #[arg(long, env = "HERO_REDIS_PREFIX")]
    pub(crate) redis_prefix: Option<String>,
    /// --redis-url names a Redis Cluster: a comma-separated list of seed nodes
    /// (redis://host:port,redis://host:port,...).
    #[arg(long, env = "HERO_REDIS_CLUSTER")]
    pub(crate) redis_cluster: bool,
    /// Bearer token every client must send; required for a non-loopback --listen.
    #[arg(long, env = "HERO_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,
    /// PEM certificate chain: serve HTTPS and WSS instead of HTTP and WS (needs --tls-key).
    #[arg(long, env = "HERO_TLS_CERT", value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HERO_TLS_KEY", value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Largest request body or WebSocket message in bytes [default: 2097152].
    #[arg(long, env = "HERO_MAX_REQUEST_BODY_BYTES")]
    pub(crate) max_request_body_bytes: Option<u32>,
    /// Connections open at once [default: 256].
    #[arg(long, env = "HERO_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<u32>,
    /// Subscriptions per WebSocket connection [default: 64].
    #[arg(long, env = "HERO_MAX_SUBSCRIPTIONS_PER_CONNECTION")]
    pub(crate) max_subscriptions_per_connection: Option<u32>,
    /// Largest script in bytes [default: 1048576].
    #[arg(long, env = "HERO_MAX_SCRIPT_BYTES")]
    pub(crate) max_script_bytes: Option<usize>,
    /// Lease of a running job in seconds: how long after this instance dies another one
    /// takes its jobs over [default: 30].
    #[arg(long, env = "HERO_LEASE_SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) lease_secs: Option<u64>,
    /// Worker threads of the async runtime [default: the cores less one, at least one:
    /// the rest is left to the runner processes].
    #[arg(long, env = "HERO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) worker_threads: Option<u16>,
    /// A runner pool: `TYPE[,TYPE..]=tcp://HOST:PORT` or `TYPE[,TYPE..]=stdio:COMMAND ARGS..`.
    /// Repeatable; replaces the built-in runner for those types.
    #[arg(long = "runner", value_name = "TYPE=SPEC")]
    pub(crate) runners: Vec<String>,
    /// The server key's secret (hex), which signs results of signed calls; wins over
    /// --server-key.
    #[arg(
        long = "server-key-hex",
        env = "HERO_SERVER_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub(crate) server_key: Option<String>,
    /// The server key file; created (mode 0600) when absent [default:
    /// $XDG_DATA_HOME or ~/.local/share, then hero-supervisor/server.key].
    #[arg(long = "server-key", env = "HERO_SERVER_KEY_FILE", value_name = "FILE")]
    pub(crate) server_key_file: Option<PathBuf>,
    /// A host, IP or CIDR that results of signed calls may be POSTed to. Repeatable
    /// [default: localhost, 127.0.0.0/8, ::1].
    #[arg(
        long = "return-host",
        env = "HERO_RETURN_HOSTS",
        value_delimiter = ',',
        value_name = "RULE"
    )]
    pub(crate) return_hosts: Vec<String>,
    /// A browser origin (`https://host[:port]`) allowed to call JSON-RPC and REST
    /// across origins (CORS); `*` alone allows any. Repeatable [default: none, no CORS
    /// headers]. Credentials are never allowed.
    #[arg(
        long = "cors-origin",
        env = "HERO_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub(crate) cors_origins: Vec<String>,
    /// How long delivery of a result is retried, in seconds [default: 86400].
    #[arg(long, env = "HERO_DELIVERY_WINDOW_SECS")]
    pub(crate) delivery_window_secs: Option<u64>,
    /// Seconds a finished or failed job is kept before retention removes it [default:
    /// 86400].
    #[arg(long, env = "HERO_KEEP_FINISHED_SECS", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub(crate) keep_finished_secs: Option<u64>,
    /// Finished (and, apart, failed) jobs kept at most; the oldest beyond are removed
    /// [default: 100000].
    #[arg(long, env = "HERO_KEEP_FINISHED_COUNT")]
    pub(crate) keep_finished_count: Option<usize>,
    /// Export spans to this OpenTelemetry collector over OTLP/HTTP (JSON): its base URL,
    /// spans go to `<URL>/v1/traces` [default: none, no export].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,
}

impl ServeArgs {
    /// The flags (and their variables, merged by clap) as overrides of the config file.
    /// (`otlp_endpoint` is the binary's own: read it first.)
    pub(crate) fn into_overrides(self) -> ServeOverrides {
        ServeOverrides {
            config: self.config,
            listen: self.listen,
            redis_url: self.redis_url,
            redis_prefix: self.redis_prefix,
            redis_cluster: self.redis_cluster.then_some(true),
            auth_token: self.auth_token,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            max_request_body_bytes: self.max_request_body_bytes,
            max_connections: self.max_connections,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_script_bytes: self.max_script_bytes,
            lease_secs: self.lease_secs,
            worker_threads: self.worker_threads,
            runners: self.runners,
            server_key: self.server_key,
            server_key_file: self.server_key_file,
            return_hosts: self.return_hosts,
            cors_origins: self.cors_origins,
            delivery_window_secs: self.delivery_window_secs,
            keep_finished_secs: self.keep_finished_secs,
            keep_finished_count: self.keep_finished_count,
        }
    }
}
