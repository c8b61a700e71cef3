//! # hero-supervisor
//!
//! Will hold the job model, the job stores (in-memory and Redis), the dispatcher and
//! runner pools, and the JSON-RPC server and client.
//!
//! - [`job`]: the job model: ids, script types, statuses, typed errors, params validation.
//! - [`clock`]: time as a dependency (`SystemClock`, `ManualClock` for tests).
//! - [`store`]: the `JobStore` trait, its in-memory and Redis backends, store events.

pub mod clock;
pub mod job;
pub mod store;
