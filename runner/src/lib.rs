//! # hero-runner: the runner SDK
//!
//! A runner serves functions by name to a hero supervisor (or any peer speaking the
//! runner protocol v1, see `hero-protocol`). Register handlers, pick a transport, serve:
//!
//! ```no_run
//! use hero_runner::{HandlerError, Runner};
//! use hero_protocol::{ExecutionRequest, LogStream};
//! use serde_json::json;
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let runner = Runner::builder()
//!     .max_in_flight(8)
//!     .handler("greet", |req: ExecutionRequest, ctx: hero_runner::HandlerContext| async move {
//!         let Some(name) = req.args.first().and_then(|v| v.as_str()) else {
//!             return Err(HandlerError::invalid_request("greet takes a name"));
//!         };
//!         ctx.log(LogStream::Stdout, format!("greeting {name}"));
//!         Ok(json!(format!("hello, {name}")))
//!     })
//!     .build();
//! runner.serve_stdio().await
//! # }
//! ```
//!
//! What the runner does for every connection:
//! - many requests in flight, answered in any order, at most `max_in_flight`; beyond it a
//!   request is answered `runner_busy` at once;
//! - `context.deadline`: answered `timeout`, and the handler is cancelled;
//! - `cancel` by `request_id` or by `job_id`: the handler's token fires and it gets
//!   [`RunnerConfig::cancel_grace`] to return; `hard_kill` drops it at once (a child in a
//!   [`process::ProcessGroup`] gets SIGKILL); the answer is `error`/`cancelled`;
//! - a handler that panics is answered `error`/`panic`; an unknown function
//!   `handler_not_found`; a malformed frame closes that connection only;
//! - `hello` (extension): answered with the runner's own `hello`; when the peer's lists
//!   the `log` extension, [`HandlerContext::log`] lines become `log` frames (else they
//!   go to `tracing`). With an auth token configured, a connection must open with a
//!   `hello` carrying it.
//!
//! ## Modules
//! - `handler`: [`Handler`], [`HandlerContext`], [`HandlerError`]: what a function is.
//! - `config`: [`RunnerConfig`] and its defaults.
//! - `runner`: [`Runner`], [`RunnerBuilder`]: serving stdio, TCP, streams.
//! - `shared` (private): what a runner's connections share (config, handlers).
//! - `connection` (private): one connection's reader loop, request tasks, writer task.
//! - [`process`]: child processes killed with their request (process groups).
//!
//! The script engines and the `hero-runner` binary are in `hero-script-runner`, built on
//! this crate; this one depends on no script engine and no command-line parser.

mod config;
mod connection;
mod handler;
pub mod process;
mod runner;
mod shared;

pub use config::{
    DEFAULT_CANCEL_GRACE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_OUTGOING_QUEUE,
    DEFAULT_SHUTDOWN_GRACE, RunnerConfig,
};
pub use handler::{Handler, HandlerContext, HandlerError, HandlerResult};
pub use runner::{Runner, RunnerBuilder, ServeError};
