//! `multi-instance`: several `hero-supervisor serve` processes on one Redis draining one
//! queue. The bench queues N no-op jobs through the store first (as the burn-down does),
//! then starts K real `serve` processes at once on that Redis, each with one
//! `hero-noop-runner`, and polls the store's counts until no job is left unfinished.
//! Timed from spawning the processes (their start-up, Redis connections and runner
//! hand-shakes included) to the poll that finds the queue drained; with Redis' counters
//! (`INFO commandstats stats cpu`) and the processes' CPU time over the same span.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hero_supervisor::job::JobStatus;
use hero_testkit::RedisServer;

use crate::burn_down::{connect_redis, queue};
use crate::commandstats::{Delta, Snapshot};
use crate::serve::{ServeProcess, children, cpu_micros, stdio_pool, supervisor_binary};

/// How often the bench reads the store's counts while the instances drain.
const POLL: Duration = Duration::from_millis(10);

/// One drain by `instances` processes.
#[derive(Debug, Clone)]
pub(crate) struct Drained {
    pub(crate) jobs: usize,
    pub(crate) secs: f64,
    /// The `serve` processes and their runners, together, µs.
    pub(crate) supervisors_cpu_usec: u64,
    pub(crate) runners_cpu_usec: u64,
    /// Redis' work over the drain (the bench's count polls included: a few commands each
    /// [`POLL`]).
    pub(crate) redis: Delta,
}

impl Drained {
    pub(crate) fn jobs_per_sec(&self) -> f64 {
        self.jobs as f64 / self.secs
    }
}

/// Queues `jobs` jobs on a fresh Redis, then times `instances` `serve` processes
/// draining them.
pub(crate) async fn run(noop: &Path, jobs: usize, instances: usize) -> Result<Drained> {
    let supervisor = supervisor_binary()?;
    let redis = RedisServer::start();
    let url = redis.url();
    let store = connect_redis(&url).await?;
    queue(&store, jobs, false).await?;
    let before = Snapshot::read(&url).await?;
    let pools = [stdio_pool("SAL,OSIS,Python,V", &noop.display().to_string())];
    let began = Instant::now();
    let mut servers = Vec::with_capacity(instances);
    for _ in 0..instances {
        servers.push(ServeProcess::spawn(
            &supervisor,
            Some(&url),
            None,
            &pools,
            "warn",
        )?);
    }
    let give_up = Duration::from_secs(60) + Duration::from_millis(jobs as u64);
    let mut runner_pids = Vec::new();
    loop {
        // The runners, while they run: their CPU is read from the last sample.
        for server in &servers {
            for pid in children(server.pid()) {
                if !runner_pids.contains(&pid) {
                    runner_pids.push(pid);
                }
            }
        }
        let counts = store.counts().await?;
        let count = |status: JobStatus| {
            counts
                .by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n)
        };
        if count(JobStatus::Error) > 0 {
            bail!("{} jobs ended in Error", count(JobStatus::Error));
        }
        let unfinished: u64 = [
            JobStatus::Created,
            JobStatus::Dispatched,
            JobStatus::WaitingForPrerequisites,
            JobStatus::Started,
        ]
        .into_iter()
        .map(count)
        .sum();
        if unfinished == 0 {
            break;
        }
        if began.elapsed() > give_up {
            bail!("{unfinished} of {jobs} jobs still unfinished after {give_up:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let secs = began.elapsed().as_secs_f64();
    let redis_work = Snapshot::read(&url).await?.since(&before);
    let supervisors_cpu_usec = servers.iter().filter_map(|s| cpu_micros(s.pid())).sum();
    let runners_cpu_usec = runner_pids.iter().filter_map(|&p| cpu_micros(p)).sum();
    drop(servers);
    drop(store);
    drop(redis);
    Ok(Drained {
        jobs,
        secs,
        supervisors_cpu_usec,
        runners_cpu_usec,
        redis: redis_work,
    })
}
