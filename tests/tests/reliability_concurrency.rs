//! Concurrency: 200 clients at once calling `run_job` on the JSON-RPC server, half over
//! HTTP and half over WebSocket, each with its own connection and its own script; every
//! one gets exactly its own output. On the in-memory store and on a Redis Cluster
//! (`--redis-cluster`, the clients' jobs over six numbered contexts, so over every master).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use hero_supervisor::SupervisorConfig;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::HeroApiClient;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::server;
use hero_testkit::RedisCluster;

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_run_job_clients_over_http_and_websocket() {
    concurrent_run_job_clients(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_run_job_clients_on_a_cluster() {
    let target = common::StoreTarget::cluster(RedisCluster::shared(), "concurrency");
    concurrent_run_job_clients(Some(&target)).await;
}

/// The 200 clients against a server on `target` (`None`: the in-memory store).
async fn concurrent_run_job_clients(target: Option<&common::StoreTarget>) {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        supervisor: SupervisorConfig {
            pools: common::pool_per_type(1, None),
            limits: Default::default(),
            dispatch: common::fast_dispatch(),
        },
        ..ServeConfig::default()
    };
    let config = match target {
        Some(t) => t.serve_config(config),
        None => config,
    };
    let store = target.map_or("memory", common::StoreTarget::name);
    let clustered = target.is_some_and(|t| t.cluster);
    let server = server::start(config).await.expect("server starts");
    let addr = server.addr();
    let url = format!("http://{addr}");
    let started = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let url = url.clone();
        let script_type = ["SAL", "OSIS", "V", "Python"][i % 4];
        // On a cluster, each client's job in one of six numbered contexts.
        let context = clustered.then(|| (i % common::CLUSTER_CONTEXTS + 1).to_string());
        tasks.spawn(async move {
            let script = format!("echo client {i} of {CLIENTS}");
            let call = async {
                if i % 2 == 0 {
                    let client = http_client(&url, None).expect("http client");
                    client
                        .run_job(
                            script.clone(),
                            script_type.to_owned(),
                            None,
                            Some(30),
                            context.clone(),
                        )
                        .await
                } else {
                    let client = ws_client(&hero_supervisor::rpc::client::ws_url(&url), None)
                        .await
                        .expect("websocket client");
                    client
                        .run_job(
                            script.clone(),
                            script_type.to_owned(),
                            None,
                            Some(30),
                            context.clone(),
                        )
                        .await
                }
            };
            let got = tokio::time::timeout(Duration::from_secs(60), call).await;
            (i, script, got)
        });
    }
    let mut wrong = Vec::new();
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, script, got) = done.expect("client task");
        answered += 1;
        let want = script.strip_prefix("echo ").unwrap();
        match got {
            Ok(Ok(out)) if out == want => {}
            other => wrong.push(format!("client {i}: {other:?}")),
        }
    }
    common::report(format!(
        "concurrency ({store}): {CLIENTS} run_job clients (HTTP and WebSocket) answered in \
         {:.1?}, {} wrong",
        started.elapsed(),
        wrong.len()
    ));
    assert_eq!(answered, CLIENTS);
    assert!(wrong.is_empty(), "{wrong:#?}");
    server.stop().await;
}
