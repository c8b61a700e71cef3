//! # hero-supervisor
//!
//! Will hold the job model, the job stores (in-memory and Redis), the dispatcher and
//! runner pools, and the JSON-RPC server and client.
