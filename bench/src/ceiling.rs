//! The Redis ceiling: `redis-benchmark -q -t lpush,rpop` against the bench's own server.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Requests per second of LPUSH and RPOP at `clients` connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceiling {
    pub(crate) clients: usize,
    pub(crate) lpush: f64,
    pub(crate) rpop: f64,
}

impl Ceiling {
    /// The lower of the two: the figure a job rate is compared with.
    pub(crate) fn ops(&self) -> f64 {
        self.lpush.min(self.rpop)
    }
}

/// Runs `redis-benchmark -q -t lpush,rpop -n <requests> -c <clients> -s <socket>`.
pub(crate) fn measure(socket: &Path, clients: usize, requests: usize) -> Result<Ceiling> {
    let out = Command::new("redis-benchmark")
        .args(["-q", "-t", "lpush,rpop", "-n"])
        .arg(requests.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-s")
        .arg(socket)
        .output()
        .context("run redis-benchmark (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |name: &str| -> Result<f64> {
        text.split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .filter(|rest| rest.contains("requests per second"))
            .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} figure in redis-benchmark's output: {text}"))
    };
    Ok(Ceiling {
        clients,
        lpush: rate("LPUSH")?,
        rpop: rate("RPOP")?,
    })
}
