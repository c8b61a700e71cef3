//! `run_job` over HTTP (JSON-RPC), with the Redis store: one call at a time (idle round
//! trip), then N concurrent clients (steady state).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::{self, HeroApiClient};
use hero_supervisor::server;
use hero_testkit::RedisServer;

use crate::burn_down;
use crate::latency::Latencies;

/// Calls before measuring (connections, runner, Redis scripts loaded).
const WARM_UP: usize = 200;

/// Idle round trips, then the steady state with `clients` concurrent clients.
#[derive(Debug, Clone)]
pub(crate) struct RpcFigures {
    pub(crate) idle: Latencies,
    pub(crate) steady: Latencies,
    pub(crate) clients: usize,
}

async fn call<C: HeroApiClient + Sync>(client: &C) -> Result<()> {
    client
        .run_job("noop".to_owned(), "SAL".to_owned(), None, Some(60), None)
        .await
        .map_err(|e| anyhow!("run_job: {e}"))?;
    Ok(())
}

pub(crate) async fn measure(
    idle_calls: usize,
    steady_calls: usize,
    clients: usize,
    in_flight: usize,
    runner: &Path,
) -> Result<RpcFigures> {
    // The whole server through its entry point, as `hero-supervisor serve` runs it.
    let redis = RedisServer::start();
    let server = server::start(ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        redis_url: Some(redis.url()),
        supervisor: burn_down::config(runner, 1, in_flight),
        ..ServeConfig::default()
    })
    .await
    .context("start the server")?;
    let addr = server.addr();
    let url = format!("http://{addr}");
    let new_client = || rpc::client::http_client(&url, None).map_err(|e| anyhow!("client: {e}"));

    let client = new_client()?;
    for _ in 0..WARM_UP {
        call(&client).await?;
    }
    let mut idle = Vec::with_capacity(idle_calls);
    let began = Instant::now();
    for _ in 0..idle_calls {
        let t = Instant::now();
        call(&client).await?;
        idle.push(t.elapsed());
    }
    let idle = Latencies::new(idle, began.elapsed().as_secs_f64());

    let left = Arc::new(AtomicUsize::new(steady_calls));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = new_client()?;
        let left = left.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                call(&client).await?;
                mine.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(mine)
        }));
    }
    let mut steady = Vec::with_capacity(steady_calls);
    for task in tasks {
        steady.extend(task.await??);
    }
    let steady = Latencies::new(steady, began.elapsed().as_secs_f64());

    server.stop().await;
    drop(redis);
    Ok(RpcFigures {
        idle,
        steady,
        clients,
    })
}
