//! A Redis Cluster master SIGKILLed while jobs run: the supervisor (`--redis-cluster`,
//! the library server on a private port) follows the cluster, answers storage errors
//! (-32010) meanwhile, and every job the JSON-RPC API acknowledged (`create_job` and
//! `start_job` both answered) ends `Finished`, exactly once: the runner's ledger shows
//! each attempt at most once and none after the last.
//!
//! Two faults: the master stays dead until its replica is promoted (then comes back as
//! that replica's replica), or it is started again at once on its AOF (the chaos
//! suite's "Redis restarted mid-run" for one master of a cluster): it is back within the
//! node timeout, so normally still the slot's master, and the supervisor reconnects to
//! the same address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hero_supervisor::SupervisorConfig;
use hero_supervisor::clock::SystemClock;
use hero_supervisor::config::ServeConfig;
use hero_supervisor::job::ScriptType;
use hero_supervisor::job::{Job, JobId, JobStatus};
use hero_supervisor::rpc::client::http_client;
use hero_supervisor::server;
use hero_supervisor::store::{
    ClaimedJob, Completion, JobStore, RedisStore, StoreConfig, StoreError,
};
use hero_testkit::RedisCluster;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use serde_json::{Value, json};

/// Contexts the jobs are spread over (numbered: each its own slot, so over the masters).
const CONTEXTS: u32 = 6;
/// Jobs submitted in all.
const JOBS: usize = 600;
/// Each job's run time (ms).
const DELAY_MS: u64 = 100;

/// Submission outcomes, by job.
#[derive(Default)]
struct Submitted {
    /// create_job and start_job both answered: the job must finish.
    acked: Vec<JobId>,
    /// A call answered an error (the outage): the job may or may not exist.
    refused: usize,
    /// The codes of the refusals.
    codes: HashSet<String>,
}

/// A refused call: its method and JSON-RPC code (`transport` when there was none).
fn describe(method: &str, e: &jsonrpsee::core::ClientError) -> String {
    match e {
        jsonrpsee::core::ClientError::Call(obj) => format!("{method} {}", obj.code()),
        other => format!("{method} transport: {other}"),
    }
}

async fn submit(c: &HttpClient, ledger: &str, i: usize) -> Result<JobId, String> {
    let context = (i as u32 % CONTEXTS) + 1;
    let params = json!({
        "script": format!("soak {ledger} ok {DELAY_MS}"),
        "script_type": ScriptType::ALL[i % 4].as_str(),
        "caller_id": "failover",
        "context_id": context.to_string(),
        "timeout": 60,
        "retries": 10,
    });
    let id: String = c
        .request("create_job", rpc_params![params])
        .await
        .map_err(|e| describe("create_job", &e))?;
    let _: Value = c
        .request("start_job", rpc_params![id.clone()])
        .await
        .map_err(|e| describe("start_job", &e))?;
    JobId::parse(&id).map_err(|e| e.to_string())
}

/// What happens to the killed master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It stays dead until its replica is promoted, then is started again and rejoins
    /// as the new master's replica.
    Failover,
    /// It is started again at once on its AOF (`appendfsync always`): no write it
    /// acknowledged is lost, whether or not its replica took over meanwhile.
    RestartAtOnce,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_loses_no_acknowledged_job() {
    master_killed_mid_run(Fault::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_mid_run_loses_no_acknowledged_job() {
    master_killed_mid_run(Fault::RestartAtOnce).await;
}

async fn master_killed_mid_run(fault: Fault) {
    let mut cluster = tokio::task::block_in_place(|| {
        RedisCluster::builder()
            .aof(fault == Fault::RestartAtOnce)
            .start()
    });
    let nodes = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let ledger_arg = ledger.display().to_string();
    let mut dispatch = common::fast_dispatch();
    // A completion lost with the master is retried once its lease expires: keep it short.
    dispatch.lease = Duration::from_secs(2);
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: Some(nodes.join(",")),
        redis_cluster: true,
        supervisor: SupervisorConfig {
            pools: common::pool_per_type(1, None),
            limits: Default::default(),
            dispatch,
        },
        ..ServeConfig::default()
    };
    let running = server::start(config).await.expect("start on the cluster");
    let client = Arc::new(http_client(&format!("http://{}", running.addr()), None).unwrap());
    let started = Instant::now();

    // Submitters run through the failover: what an outage refuses is not acknowledged.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, next, ledger) = (client.clone(), next.clone(), ledger_arg.clone());
        tasks.spawn(async move {
            let mut mine = Submitted::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= JOBS {
                    break;
                }
                match submit(&c, &ledger, i).await {
                    Ok(id) => mine.acked.push(id),
                    Err(e) => {
                        mine.refused += 1;
                        mine.codes.insert(e);
                    }
                }
                // A steady stream, so submissions overlap the failover.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mine
        });
    }

    // Mid-run: kill the master of context 1's slot.
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::read_ledger(&ledger).len() < 100 {
        assert!(
            Instant::now() < deadline,
            "the run never got going: {} submitted, {} executions",
            next.load(Ordering::Relaxed),
            common::read_ledger(&ledger).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = cluster
        .master_of_slot(common::slot("hero:{c1}"))
        .expect("context 1's slot has a master");
    cluster.kill_node(victim);
    let killed_at = Instant::now();
    let what = match fault {
        Fault::Failover => {
            // Its replica is promoted: the slot gets another master.
            let promoted = loop {
                match cluster.master_of_slot(common::slot("hero:{c1}")) {
                    Some(p) if p != victim => break p,
                    _ => {
                        assert!(
                            killed_at.elapsed() < Duration::from_secs(30),
                            "no replica took over from {victim} within 30 s"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let recovered_in = killed_at.elapsed();
            cluster.wait_ok(Duration::from_secs(30));
            assert!(!cluster.master_ports().contains(&victim));
            // Until the promoted master has a replica again, the writes that acknowledge a
            // job in its slots cannot be confirmed (WAIT): those answer -32010. The
            // operator's part: the dead node is started again and rejoins as the new
            // master's replica.
            cluster.restart_node(victim);
            while !cluster.has_synced_replica(promoted) {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(60),
                    "the restarted node never became {promoted}'s replica"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            format!(
                "master {victim} killed, replica {promoted} promoted after {recovered_in:.1?}, \
                 {victim} back as its replica after {:.1?}",
                killed_at.elapsed()
            )
        }
        Fault::RestartAtOnce => {
            let back_in = tokio::task::block_in_place(|| {
                cluster.restart_node(victim);
                let back_in = killed_at.elapsed();
                cluster.wait_healthy(Duration::from_secs(60));
                back_in
            });
            let master = cluster.master_of_slot(common::slot("hero:{c1}"));
            format!(
                "master {victim} SIGKILLed and answering again on its AOF after {back_in:.1?}, \
                 its replica in sync again after {:.1?}; context 1's slot now on {master:?} ({})",
                killed_at.elapsed(),
                if master == Some(victim) {
                    "no failover"
                } else {
                    "its replica took over meanwhile"
                }
            )
        }
    };

    let mut all = Submitted::default();
    while let Some(done) = tasks.join_next().await {
        let mine = done.expect("submitter");
        all.acked.extend(mine.acked);
        all.refused += mine.refused;
        all.codes.extend(mine.codes);
    }
    common::report(format!(
        "submitted in {:.1?} ({} refused)",
        started.elapsed(),
        all.refused
    ));
    // Meanwhile the API answered storage errors, nothing else.
    assert!(
        all.codes.iter().all(|c| c.ends_with(" -32010")),
        "refusals other than -32010: {:?}",
        all.codes
    );

    // Every acknowledged job ends Finished.
    let store: Arc<dyn JobStore> = Arc::new(
        RedisStore::connect_cluster(&nodes, StoreConfig::default(), Arc::new(SystemClock))
            .await
            .expect("a store on the recovered cluster"),
    );
    common::wait_all_terminal(
        &store,
        store.subscribe(),
        &all.acked,
        Duration::from_secs(120),
    )
    .await;

    common::report(format!("all ended at {:.1?}", started.elapsed()));
    let runs = common::read_ledger(&ledger);
    let mut wrong = Vec::new();
    let mut reruns = 0;
    for (id, job) in all
        .acked
        .iter()
        .zip(common::get_all(&store, &all.acked).await)
    {
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                wrong.push(format!("job {id}: acknowledged, now {e}"));
                continue;
            }
        };
        if job.status != JobStatus::Finished
            || job.output.as_deref() != Some(format!("ok {}", job.attempt).as_str())
        {
            wrong.push(format!(
                "job {id}: {:?} attempt {} output {:?} error {:?}",
                job.status, job.attempt, job.output, job.error
            ));
            continue;
        }
        let mine = runs.get(&id.to_string()).map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = HashSet::new();
        for run in mine {
            if !seen.insert(run.attempt) {
                wrong.push(format!("job {id}: attempt {} ran twice", run.attempt));
            }
            if run.attempt > job.attempt {
                wrong.push(format!("job {id}: ran after it finished: {mine:?}"));
            }
        }
        if !seen.contains(&job.attempt) {
            wrong.push(format!("job {id}: its last attempt never ran: {mine:?}"));
        }
        reruns += mine.len().saturating_sub(1);
    }
    assert!(
        wrong.is_empty(),
        "{} acknowledged jobs wrong; first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        all.acked.len() >= JOBS / 2,
        "most jobs were acknowledged: {} of {JOBS}",
        all.acked.len()
    );
    common::report(format!(
        "cluster {fault:?}: {} jobs acknowledged, {} refused meanwhile ({:?}); {what}; \
         {reruns} executions re-run (answers lost with the master); all acknowledged jobs \
         Finished once, in {:.1?}",
        all.acked.len(),
        all.refused,
        all.codes,
        started.elapsed()
    ));
    running.stop().await;
}

/// A master that lost its replica: every write that acknowledges a job in its slots
/// waits the whole `WAIT` (3 s) and fails (-32010), as designed. Meanwhile the other
/// commands of that master's contexts (reads, lease renewals, completions) answer
/// promptly: the `WAIT`s block only the connection of the acknowledged writes. (They
/// used to share the store's one connection to that master and queue behind every
/// `WAIT`, 3 s each, until leases expired and finished jobs ran again: found by the
/// master restarted mid-run above, whose replica takes seconds to resync.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_a_replica_refuses_acknowledgements_but_keeps_running_jobs() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let store: Arc<dyn JobStore> = Arc::new(
        RedisStore::connect_cluster(
            &cluster.urls(),
            StoreConfig::default(),
            Arc::new(SystemClock),
        )
        .await
        .expect("a store on the cluster"),
    );
    let job_in_c1 = || {
        let mut p = common::params("echo x".to_owned(), ScriptType::Sal, 60, 0);
        p.context_id = "1".to_owned();
        Job::new(JobId::for_context_id("1"), p, chrono::Utc::now())
    };
    // Two jobs of context 1, acknowledged while the master has its replica; one claimed.
    let (running, queued) = (job_in_c1(), job_in_c1());
    for job in [&running, &queued] {
        store.create(job).await.expect("create");
    }
    store.start(running.id).await.expect("start");
    let owner = "lost-replica";
    let lease = Duration::from_secs(30);
    let claimed = store
        .claim(ScriptType::Sal, 10, owner, lease)
        .await
        .expect("claim");
    assert!(
        matches!(claimed.as_slice(), [ClaimedJob::Job(j)] if j.id == running.id),
        "{claimed:?}"
    );

    let master = cluster
        .master_of_slot(common::slot("hero:{c1}"))
        .expect("context 1's slot has a master");
    let replicas = cluster.replicas_of(master);
    assert!(!replicas.is_empty(), "master {master} has no replica");
    for r in &replicas {
        cluster.kill_node(*r);
    }
    while cluster.has_synced_replica(master) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An acknowledged write (start) now waits for a replica that is gone...
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (store.start(queued.id).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... while the running job's reads, renewal and completion, on the same master,
    // answer at once.
    let bound = Duration::from_secs(1);
    let t = Instant::now();
    let got = store.get(running.id).await.expect("get");
    assert_eq!(got.status, JobStatus::Started);
    let read_in = t.elapsed();
    let t = Instant::now();
    let lost = store
        .renew(owner, &[running.id], lease)
        .await
        .expect("renew");
    assert!(lost.is_empty(), "{lost:?}");
    let renewed_in = t.elapsed();
    let t = Instant::now();
    store
        .complete_one(Completion::finish(running.id, 1, "done"))
        .await
        .expect("complete");
    let completed_in = t.elapsed();
    assert!(
        read_in < bound && renewed_in < bound && completed_in < bound,
        "behind a WAIT: read {read_in:?}, renewal {renewed_in:?}, completion {completed_in:?}"
    );
    let (started, waited) = waiting.await.unwrap();
    assert!(
        matches!(started, Err(StoreError::Unavailable(_))),
        "an acknowledgement with no replica: {started:?}"
    );
    assert!(
        waited >= Duration::from_secs(3),
        "WAIT returned after {waited:?}"
    );
    let done = store.get(running.id).await.expect("get");
    assert_eq!(
        (done.status, done.output.as_deref()),
        (JobStatus::Finished, Some("done"))
    );
    common::report(format!(
        "lost replica: start answered Unavailable after {waited:.1?}; meanwhile on the same \
         master a read took {read_in:.1?}, a renewal {renewed_in:.1?}, a completion \
         {completed_in:.1?}"
    ));
}

#[test]
fn slots_are_computed_as_redis_does() {
    // Values from `CLUSTER KEYSLOT`.
    assert_eq!(common::slot("foo"), 12182);
    assert_eq!(
        common::slot("{user1000}.following"),
        common::slot("{user1000}.followers")
    );
    assert_eq!(common::slot("123456789"), 0x31C3);
}
