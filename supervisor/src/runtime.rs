//! The tokio runtime `hero-supervisor serve` runs on.
//!
//! The supervisor multiplexes: per job it moves a few frames and makes a few store
//! calls, while scripts run in runner processes and Redis in its own. So by default it
//! takes one worker thread fewer than the machine has cores, and at least one: the
//! remaining core is left to the runners and Redis, and worker threads do not keep
//! waking each other across cores. Measured with `hero-bench` on a 2-core machine, one
//! worker thread against two: burn-down through the memory store 98k vs 73k jobs/s,
//! through Redis 38k vs 35k, 50 HTTP clients 10.5k vs 8.5k calls/s (before the later
//! claim and finish changes; reproduce the comparison with
//! `HERO_WORKER_THREADS=1` and `=2` before
//! `cargo run --release -p hero-bench -- --only burn-down,rpc --processes 1`).
//! `--worker-threads` (`HERO_WORKER_THREADS`, `worker_threads`) overrides it.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Worker threads by default: the cores (as the OS grants them to this process) less
/// one, at least one.
pub fn default_worker_threads() -> usize {
    workers_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The default for a machine of `cores` cores.
fn workers_for(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// A multi-threaded runtime with `worker_threads` workers (at least one), I/O and time
/// enabled.
pub fn build(worker_threads: usize) -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(worker_threads.max(1))
        .thread_name("hero-worker")
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_leaves_a_core_but_keeps_one() {
        assert_eq!(workers_for(0), 1);
        assert_eq!(workers_for(1), 1);
        assert_eq!(workers_for(2), 1);
        assert_eq!(workers_for(8), 7);
        assert!(default_worker_threads() >= 1);
    }

    #[test]
    fn build_runs_tasks_on_the_given_workers() {
        let rt = build(1).expect("runtime");
        let got = rt.block_on(async { tokio::spawn(async { 41 + 1 }).await.unwrap() });
        assert_eq!(got, 42);
        assert_eq!(rt.metrics().num_workers(), 1);
    }
}
