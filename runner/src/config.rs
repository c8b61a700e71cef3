//! [`RunnerConfig`] and its defaults.

use std::time::Duration;

use hero_protocol::DEFAULT_MAX_FRAME_LEN;

/// Default [`RunnerConfig::max_in_flight`]: requests running at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Default [`RunnerConfig::cancel_grace`]: how long a gracefully cancelled handler may take
/// to wind down before its future is dropped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Default [`RunnerConfig::shutdown_grace`]: how long in-flight requests may run on after
/// shutdown starts before they are cancelled.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default [`RunnerConfig::outgoing_queue`]: frames waiting for the writer, per
/// connection. Responses wait for room; log lines sent with `log` do not.
pub const DEFAULT_OUTGOING_QUEUE: usize = 1024;

/// Default [`RunnerConfig::max_connections`] of a TCP runner.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How a runner behaves. Every field has a default; set them through [`RunnerBuilder`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Sent in `hello`. Default `hero-runner`.
    pub name: String,
    /// Sent in `hello`. Default: this crate's version.
    pub version: String,
    /// Requests running at once on one connection; beyond it a request is answered
    /// `runner_busy` at once, never queued. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Grace for a gracefully cancelled handler. Default [`DEFAULT_CANCEL_GRACE`].
    pub cancel_grace: Duration,
    /// Grace for in-flight requests at shutdown. Default [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// Largest frame read or written. Default 16 MiB ([`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Outgoing frames queued per connection. Default [`DEFAULT_OUTGOING_QUEUE`].
    pub outgoing_queue: usize,
    /// Connections served at once over TCP; more wait in the listen backlog. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// When set, every connection except stdio must open with a `hello` carrying this
    /// token (compared in constant time), else it is closed. Required to listen on a
    /// non-loopback address. Default: none.
    pub auth_token: Option<String>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            name: "hero-runner".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            outgoing_queue: DEFAULT_OUTGOING_QUEUE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_token: None,
        }
    }
}
