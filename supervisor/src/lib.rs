//! # hero-supervisor
//!
//! The job supervisor: clients submit scripts, the supervisor stores every job, queues it
//! by script type and hands it to a runner process over the framed runner protocol.
//!
//! - [`job`]: the job model: ids, script types, statuses, typed errors, params validation.
//! - [`calls`]: signed asynchronous calls (`rpc_in`): the server key, the outbox, delivery.
//! - [`access`]: actors, contexts, roles; who a request acts as and what it may do.
//! - [`coordination`]: the coordinator's jobs and flows (`job.*`, `flow.*`), their DAG.
//! - [`clock`]: time as a dependency (`SystemClock`, `ManualClock` for tests).
//! - [`store`]: the `JobStore` trait, its in-memory and Redis backends, store events.
//! - [`pool`]: runner pools: spawning, connecting, restarting runners; multiplexed
//!   connections.
//! - [`dispatch`]: claim loops, outcome mapping, retries, leases, maintenance.
//! - [`metrics`]: what the process counts, served as `GET /metrics` (Prometheus).
//! - [`service`]: the `Supervisor` facade the JSON-RPC layer calls one to one.
//! - [`rpc`]: the JSON-RPC API over HTTP and WebSocket: server, typed client, auth, OpenRPC.
//! - [`trace`]: W3C `traceparent`, from a JSON-RPC caller to its job's runner; the spans
//!   meant for OpenTelemetry.
//! - `otlp` (feature `otlp`): the OTLP/HTTP exporter of those spans.
//! - [`config`]: the `serve` configuration: TOML file, then `HERO_*` variables, then flags.
//! - [`runtime`]: the tokio runtime the server runs on, sized for the machine.
//! - [`server`]: the entry point: the whole server (store, supervisor, JSON-RPC) started
//!   from a [`config::ServeConfig`] and stopped in order.

pub mod access;
pub mod calls;
pub mod clock;
pub mod config;
pub mod coordination;
pub mod dispatch;
pub mod job;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pool;
pub mod rpc;
pub mod runtime;
pub mod server;
pub mod service;
pub mod store;
pub mod trace;

pub use service::{Supervisor, SupervisorConfig, SupervisorError};
