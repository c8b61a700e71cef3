//! `enqueue`: bulk create-and-start over HTTP. A real `hero-supervisor serve` process on
//! a private Redis; `in_flight` HTTP/1.1 keep-alive clients, each taking the next chunk
//! of [`CHUNK`] jobs and sending it either as one `create_jobs` call ([`Mode::Bulk`]:
//! created and started in one store call) or as one JSON-RPC batch request of
//! `create_job` calls, then one batch of `start_job` calls with the ids it got
//! ([`Mode::Batches`]). Timed from the first batch to
//! the last answer. Nothing drains meanwhile: the jobs are of type V, which the server's
//! pools do not serve (its V pool points at a port nobody listens on), so they stay
//! queued as BullMQ's jobs stay waiting in `enqueue.mjs`; afterwards every one of them
//! must be queued.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use hero_supervisor::job::{JobStatus, ScriptType};
use hero_testkit::RedisServer;
use serde_json::{Value, json};

use crate::burn_down::connect_redis;
use crate::commandstats::{Delta, Snapshot};
use crate::serve::{Client, ServeProcess, cpu_micros, stdio_pool, supervisor_binary};

/// Jobs per batch request (and per BullMQ `addBulk` call): BullMQ's chunk in
/// `burn_down.mjs`.
pub(crate) const CHUNK: usize = 1000;

/// How a chunk is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One `create_jobs` call per chunk.
    Bulk,
    /// A JSON-RPC batch of `create_job`, then one of `start_job`.
    Batches,
}

/// One enqueue run.
#[derive(Debug, Clone)]
pub(crate) struct Enqueued {
    pub(crate) jobs: usize,
    pub(crate) secs: f64,
    /// The `serve` process' CPU during the run, µs.
    pub(crate) supervisor_cpu_usec: u64,
    /// Redis' work during the run.
    pub(crate) redis: Delta,
}

impl Enqueued {
    pub(crate) fn jobs_per_sec(&self) -> f64 {
        self.jobs as f64 / self.secs
    }
}

/// `create_job`'s params for one no-op V job.
fn create_params() -> Value {
    json!([{ "script": "noop", "script_type": "V", "timeout": 60, "retries": 0 }])
}

/// One run: `jobs` jobs by `in_flight` clients on a fresh server and Redis.
pub(crate) async fn run(
    noop: &Path,
    jobs: usize,
    in_flight: usize,
    mode: Mode,
) -> Result<Enqueued> {
    let supervisor = supervisor_binary()?;
    let redis = RedisServer::start();
    let url = redis.url();
    // SAL, OSIS and Python on the no-op runner (the readiness probe runs a SAL job); V on
    // a TCP runner that is never there, so V jobs stay queued. `error`: the V pool's
    // retries would warn every few seconds.
    let pools = [
        stdio_pool("SAL,OSIS,Python", &noop.display().to_string()),
        format!(
            "V=tcp://127.0.0.1:{};hello=off",
            hero_testkit::free_tcp_port()
        ),
    ];
    let server = ServeProcess::spawn(&supervisor, Some(&url), None, &pools, "error")?;
    server
        .wait_answering("run_job", &json!(["1", "SAL", null, 60]))
        .await?;
    let mut clients = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        clients.push(Client::connect(server.addr).await?);
    }
    let before = Snapshot::read(&url).await?;
    let cpu_before = cpu_micros(server.pid()).unwrap_or(0);
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if start >= jobs {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let n = CHUNK.min(jobs - start);
                    if mode == Mode::Bulk {
                        let jobs: Vec<Value> = (0..n).map(|_| create_params()[0].clone()).collect();
                        let ids = client.call("create_jobs", &json!([jobs])).await?;
                        if ids.as_array().map(Vec::len) != Some(n) {
                            bail!("create_jobs answered {ids}");
                        }
                        continue;
                    }
                    let ids = client
                        .batch("create_job", &vec![create_params(); n])
                        .await?;
                    let starts: Vec<Value> = ids.into_iter().map(|id| json!([id])).collect();
                    for answer in client.batch("start_job", &starts).await? {
                        if answer.get("success") != Some(&Value::Bool(true)) {
                            bail!("start_job answered {answer}");
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let secs = began.elapsed().as_secs_f64().max(1e-3);
    let supervisor_cpu_usec = cpu_micros(server.pid())
        .unwrap_or(0)
        .saturating_sub(cpu_before);
    let redis_work = Snapshot::read(&url).await?.since(&before);
    // Every job queued, none claimed: the V queue holds them all.
    let store = connect_redis(&url).await?;
    let counts = store.counts().await?;
    let dispatched = counts
        .by_status
        .iter()
        .find(|(s, _)| *s == JobStatus::Dispatched)
        .map_or(0, |(_, n)| *n);
    let queued_v = counts
        .queued
        .iter()
        .find(|(t, _)| *t == ScriptType::V)
        .map_or(0, |(_, n)| *n);
    if dispatched != jobs as u64 || queued_v != jobs as u64 {
        bail!(
            "enqueued {jobs} jobs but the store counts {dispatched} Dispatched and {queued_v} \
             on the V queue: {counts:?}"
        );
    }
    drop(server);
    drop(redis);
    Ok(Enqueued {
        jobs,
        secs,
        supervisor_cpu_usec,
        redis: redis_work,
    })
}
