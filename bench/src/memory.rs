//! Memory: the supervisor's peak RSS while N jobs are queued in Redis and drained.
//!
//! `VmHWM` only grows, so each measurement runs in a fresh child process (this same
//! binary, `--memory-probe`) that runs the supervisor in-process and reads its own
//! `/proc/self/status`. The parent queues the jobs first, so the child's memory is the
//! supervisor's (plus the tokio runtime and the bench's small poll loop).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hero_supervisor::Supervisor;
use hero_supervisor::job::ScriptType;
use hero_supervisor::store::StoreConfig;
use hero_testkit::RedisServer;

use crate::burn_down::{self, connect_redis};
use crate::machine::own_rss_kb;
use crate::output;

/// What a probe measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) jobs: usize,
    /// Peak RSS (kB) before the supervisor started (runtime, store connection).
    pub(crate) before_kb: u64,
    /// Peak RSS (kB) over the whole drain.
    pub(crate) peak_kb: u64,
    pub(crate) drain_secs: f64,
}

/// Parent side: queue `jobs` in a fresh Redis, run a child probe over it.
pub(crate) async fn measure(
    jobs: usize,
    processes: usize,
    in_flight: usize,
    runner: &Path,
) -> Result<Probe> {
    let server = RedisServer::start();
    let store = connect_redis(&server.url()).await?;
    burn_down::queue(&store, jobs, false).await?;
    drop(store);
    let exe = std::env::current_exe().context("locate the current executable")?;
    let out = tokio::process::Command::new(exe)
        .arg("--memory-probe")
        .arg("--redis-url")
        .arg(server.url())
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--processes")
        .arg(processes.to_string())
        .arg("--in-flight")
        .arg(in_flight.to_string())
        .arg("--runner")
        .arg(runner)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("run the memory probe")?;
    if !out.status.success() {
        bail!("the memory probe failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("no {name} in the probe's output: {text}"))
    };
    Ok(Probe {
        jobs,
        before_kb: field("before_kb")? as u64,
        peak_kb: field("peak_kb")? as u64,
        drain_secs: field("drain_secs")?,
    })
}

/// Child side: start the supervisor over the queued jobs, drain them, print the figures.
pub(crate) async fn probe(
    url: &str,
    jobs: usize,
    processes: usize,
    in_flight: usize,
    runner: &Path,
) -> Result<()> {
    let store = connect_redis(url).await?;
    // The bench's own view of the queue: a plain connection, not the store.
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let prefix = StoreConfig::default().prefix;
    let queue_key = format!("{prefix}:q:work:type:{}", ScriptType::Sal.as_str());
    let leases_key = format!("{prefix}:leases");
    let (before_kb, _) = own_rss_kb();
    let started = Instant::now();
    // The supervisor alone, not `hero_supervisor::server`: this measures what the queued
    // jobs cost it, with the store connected before `before_kb` is read.
    let supervisor = Supervisor::start(burn_down::config(runner, processes, in_flight), store);
    let give_up = started + Duration::from_secs(60) + Duration::from_millis(jobs as u64);
    loop {
        let (queued, leased): (u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(&queue_key)
            .cmd("ZCARD")
            .arg(&leases_key)
            .query_async(&mut conn)
            .await?;
        if queued == 0 && leased == 0 {
            break;
        }
        if Instant::now() > give_up {
            bail!("{queued} jobs still queued, {leased} running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let (peak_kb, _) = own_rss_kb();
    supervisor.shutdown().await;
    output::probe_result(&format!(
        "before_kb={before_kb} peak_kb={peak_kb} drain_secs={drain_secs:.3}"
    ));
    Ok(())
}
