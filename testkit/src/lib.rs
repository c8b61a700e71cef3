//! # hero-testkit
//!
//! Test harness shared by the workspace's tests: a private `redis-server` per test,
//! free loopback ports, guards that kill child processes on drop.
