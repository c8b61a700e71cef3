//! Hash slots moved between masters while jobs run: the supervisor (`--redis-cluster`,
//! the library server on a private port) keeps serving, and every job the JSON-RPC API
//! acknowledged ends `Finished`, run exactly once.
//!
//! The slots are moved the way `redis-cli --cluster reshard` moves them
//! ([`RedisCluster::move_slot`]: `SETSLOT IMPORTING/MIGRATING`, `MIGRATE` a few keys at a
//! time with pauses, `SETSLOT NODE`), so the slots of two contexts, the default
//! namespace and the server-wide keys spend much of the run half moved. A script that
//! ran then would find some of its keys gone (its job's hash, say, after it popped the
//! id) and stop halfway, or run on the target and create keys the source still holds:
//! the slot fence (`store/redis/records.rs`) makes every script wait for its slot to
//! settle instead. Without it this test fails within its first moves (`MIGRATE` refused
//! with `BUSYKEY`: a queue of the moving context on both nodes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hero_supervisor::SupervisorConfig;
use hero_supervisor::clock::SystemClock;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::{JobId, JobStatus, ScriptType};
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::server;
use hero_supervisor::store::{JobStore, RedisStore, StoreConfig};
use hero_testkit::RedisCluster;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use serde_json::{Value, json};

/// Contexts the jobs are spread over; job `i` with `i % (CONTEXTS + 1) == 0` goes to the
/// default namespace.
const CONTEXTS: usize = 4;
/// Each job's run time (ms).
const DELAY_MS: u64 = 20;
/// Rounds of moves: each moves every slot in [`MOVED`] to another master.
const ROUNDS: usize = 4;
/// The hash tags whose slots move: contexts 1 and 2, the default namespace, the
/// server-wide keys.
const MOVED: [&str; 4] = ["c1", "c2", "d", "s"];

async fn submit(c: &HttpClient, ledger: &str, i: usize) -> Result<JobId, String> {
    let mut params = json!({
        "script": format!("soak {ledger} ok {DELAY_MS}"),
        "script_type": ScriptType::ALL[i % 4].as_str(),
        "caller_id": "migration",
        "timeout": 60,
    });
    let context = i % (CONTEXTS + 1);
    if context > 0 {
        params["context_id"] = json!(context.to_string());
    }
    let code = |method: &str, e: jsonrpsee::core::ClientError| match e {
        jsonrpsee::core::ClientError::Call(obj) => format!("{method} {}", obj.code()),
        other => format!("{method} transport: {other}"),
    };
    let id: String = c
        .request("create_job", rpc_params![params])
        .await
        .map_err(|e| code("create_job", e))?;
    let _: Value = c
        .request("start_job", rpc_params![id.clone()])
        .await
        .map_err(|e| code("start_job", e))?;
    JobId::parse(&id).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moved_while_jobs_run_lose_nothing_and_run_nothing_twice() {
    let cluster = Arc::new(RedisCluster::start());
    let nodes = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let ledger_arg = ledger.display().to_string();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: Some(nodes.join(",")),
        redis_cluster: true,
        supervisor: SupervisorConfig {
            pools: common::pool_per_type(1, None),
            limits: Default::default(),
            dispatch: common::fast_dispatch(),
        },
        ..ServeConfig::default()
    };
    let running = server::start(config).await.expect("start on the cluster");
    let client = Arc::new(http_client(&format!("http://{}", running.addr()), None).unwrap());
    let started = Instant::now();

    // Submitters run until the moves are done.
    let moving = Arc::new(AtomicBool::new(true));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (c, next, ledger, moving) = (
            client.clone(),
            next.clone(),
            ledger_arg.clone(),
            moving.clone(),
        );
        tasks.spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), HashMap::<String, usize>::new());
            while moving.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match submit(&c, &ledger, i).await {
                    Ok(id) => acked.push(id),
                    Err(e) => *refused.entry(e).or_default() += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, refused)
        });
    }

    // Let work pile up in every namespace, then move the slots round the masters.
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::read_ledger(&ledger).len() < 20 {
        assert!(Instant::now() < deadline, "the run never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mover = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            let masters = cluster.master_ports();
            let mut keys = HashMap::<&str, usize>::new();
            for round in 0..ROUNDS {
                for (n, tag) in MOVED.iter().enumerate() {
                    let slot = common::slot(&format!("{{{tag}}}"));
                    let to = masters[(round + n + 1) % masters.len()];
                    let to = if cluster.master_of_slot(slot) == Some(to) {
                        masters[(round + n + 2) % masters.len()]
                    } else {
                        to
                    };
                    // A few keys per MIGRATE and a pause after each: the slot stays
                    // half moved for a while.
                    *keys.entry(tag).or_default() +=
                        cluster.move_slot(slot, to, 2, Duration::from_millis(5));
                }
            }
            keys
        })
    };
    let keys_moved = mover.await.expect("mover");
    let moves_took = started.elapsed();
    moving.store(false, Ordering::Relaxed);

    let (mut acked, mut refused) = (Vec::new(), HashMap::<String, usize>::new());
    while let Some(done) = tasks.join_next().await {
        let (a, r) = done.expect("submitter");
        acked.extend(a);
        for (code, n) in r {
            *refused.entry(code).or_default() += n;
        }
    }
    for tag in MOVED {
        assert!(
            keys_moved.get(tag).copied().unwrap_or(0) > 0,
            "slot {{{tag}}} moved without keys in it: the test moved nothing that mattered \
             ({keys_moved:?})"
        );
    }
    // A call whose slot stayed unsettled past the client's retries is refused as a
    // storage error, nothing else.
    assert!(
        refused.keys().all(|c| c.ends_with(" -32010")),
        "refusals other than -32010: {refused:?}"
    );

    let store: Arc<dyn JobStore> = Arc::new(
        RedisStore::connect_cluster(&nodes, StoreConfig::default(), Arc::new(SystemClock))
            .await
            .expect("a store on the cluster"),
    );
    common::wait_all_terminal(&store, store.subscribe(), &acked, Duration::from_secs(90)).await;

    // Every acknowledged job Finished, run once: one execution, attempt 1.
    let runs = common::read_ledger(&ledger);
    let mut wrong = Vec::new();
    for (id, job) in acked.iter().zip(common::get_all(&store, &acked).await) {
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                wrong.push(format!("job {id}: acknowledged, now {e}"));
                continue;
            }
        };
        let mine = runs.get(&id.to_string()).map(Vec::as_slice).unwrap_or(&[]);
        if job.status != JobStatus::Finished
            || job.attempt != 1
            || job.output.as_deref() != Some("ok 1")
            || mine.len() != 1
        {
            wrong.push(format!(
                "job {id}: {:?} attempt {} output {:?} error {:?}, executions {mine:?}",
                job.status, job.attempt, job.output, job.error
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged jobs wrong; first: {:#?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(5)]
    );
    common::report(format!(
        "cluster migration: {} slot moves in {moves_took:.1?} (keys moved per tag: \
         {keys_moved:?}), {} jobs acknowledged, refused {refused:?}; all Finished, each run \
         once; {:.1?} in all",
        ROUNDS * MOVED.len(),
        acked.len(),
        started.elapsed()
    ));
    assert!(
        acked.len() >= 100,
        "too few jobs ran through the moves to mean anything: {}",
        acked.len()
    );
    running.stop().await;
}
