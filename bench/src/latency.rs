//! Latencies of a series of calls: quantiles and rate.

use std::time::Duration;

/// Latencies of a series of calls.
#[derive(Debug, Clone)]
pub(crate) struct Latencies {
    pub(crate) calls: usize,
    pub(crate) wall_secs: f64,
    sorted: Vec<Duration>,
}

impl Latencies {
    pub(crate) fn new(mut all: Vec<Duration>, wall_secs: f64) -> Latencies {
        all.sort_unstable();
        Latencies {
            calls: all.len(),
            wall_secs,
            sorted: all,
        }
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1].as_secs_f64() * 1e3
    }

    pub(crate) fn per_sec(&self) -> f64 {
        self.calls as f64 / self.wall_secs
    }
}
