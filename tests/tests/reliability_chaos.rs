//! Chaos: faults injected while thousands of jobs run, each job's runner recording every
//! execution in a ledger (`soak LEDGER ok MS` of `hero-test-runner`).
//!
//! - runner processes killed with SIGKILL at random: every accepted job finishes once;
//!   an execution whose answer was lost ran on a killed runner;
//! - Redis killed and restarted (AOF on) mid-run: the API answers storage errors during
//!   the outage, within a bound, and recovers without a restart; every job finishes;
//! - the `hero-supervisor` process killed with SIGKILL mid-run and started again on the
//!   same Redis: every accepted job finishes.
//!
//! Each scenario runs on one `redis-server` and on a Redis Cluster (`--redis-cluster`,
//! three masters and three replicas, the jobs spread over six numbered contexts, so over
//! every master). On a cluster, "Redis killed" is the whole cluster: every node SIGKILLed
//! at once and started again on its AOF (a single master killed, its replica promoted,
//! is `cluster_failover.rs`).
//!
//! `HERO_CHAOS_SEED=<n>` replays the choice of victims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::StoreTarget;
use common::{Execution, Outcome, Rng};
use hero_supervisor::job::{Job, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::{Supervisor, SupervisorConfig};
use hero_testkit::{RedisCluster, RedisServer};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Pids of live processes whose parent is `parent` (any, when `None`) and whose command
/// line holds `tag`: the runners of one test, never another test's.
fn tagged_pids(parent: Option<u32>, tag: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<u32>().ok()),
        );
        if state == Some("Z") || parent.is_some_and(|p| ppid != Some(p)) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|arg| arg == tag.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn unique_tag(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), uuid_ish())
}

fn uuid_ish() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ok_jobs(ledger: &Path, n: usize, delay_ms: u64, retries: u32) -> Vec<JobParams> {
    (0..n)
        .map(|i| {
            common::params(
                Outcome::Ok.script(ledger, delay_ms),
                ScriptType::ALL[i % 4],
                60,
                retries,
            )
        })
        .collect()
}

/// Figures of a chaos run's check.
#[derive(Debug, Default)]
struct Tally {
    jobs: usize,
    retried: usize,
    executions: usize,
    lost_answers: usize,
}

/// Every job finished, with the output of its last attempt; the ledger shows each
/// attempt at most once and none after the last; `may_lose(execution)` says whether an
/// execution other than the last may have had its answer lost.
fn check_all_finished(
    jobs: &[Result<Job, String>],
    ledger: &HashMap<String, Vec<Execution>>,
    may_lose: impl Fn(&Execution) -> bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut wrong = Vec::new();
    for job in jobs {
        let job = job
            .as_ref()
            .expect("every accepted job is still in the store");
        tally.jobs += 1;
        if job.attempt > 1 {
            tally.retried += 1;
        }
        if job.status != JobStatus::Finished
            || job.output.as_deref() != Some(format!("ok {}", job.attempt).as_str())
        {
            wrong.push(format!(
                "job {}: {:?} attempt {} output {:?} error {:?}",
                job.id, job.status, job.attempt, job.output, job.error
            ));
            continue;
        }
        let runs = ledger
            .get(&job.id.to_string())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        tally.executions += runs.len();
        let mut seen = HashSet::new();
        for run in runs {
            if !seen.insert(run.attempt) {
                wrong.push(format!(
                    "job {}: attempt {} ran twice: {runs:?}",
                    job.id, run.attempt
                ));
            }
            if run.attempt > job.attempt {
                wrong.push(format!("job {}: ran after it finished: {runs:?}", job.id));
            }
            if run.attempt < job.attempt {
                tally.lost_answers += 1;
                if !may_lose(run) {
                    wrong.push(format!(
                        "job {}: attempt {} ran on a healthy runner and its answer was lost: {runs:?}",
                        job.id, run.attempt
                    ));
                }
            }
        }
        if !seen.contains(&job.attempt) {
            wrong.push(format!(
                "job {}: its last attempt never ran: {runs:?}",
                job.id
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} jobs wrong; first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    tally
}

/// Runner processes SIGKILLed at random while 3,000 jobs run: every job finishes exactly
/// once, and only executions on killed runners lost their answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_killed_at_random_lose_no_job() {
    let redis = RedisServer::start();
    runners_killed_at_random(&StoreTarget::redis(&redis), 3_000).await;
}

/// The same on the shared Redis Cluster, 1,500 jobs over six contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_killed_at_random_lose_no_job_on_a_cluster() {
    let target = StoreTarget::cluster(RedisCluster::shared(), "chaos-runners");
    runners_killed_at_random(&target, 1_500).await;
}

async fn runners_killed_at_random(target: &StoreTarget, jobs: usize) {
    let mut rng = Rng::from_env(
        "HERO_CHAOS_SEED",
        &format!("chaos: runners killed ({})", target.name()),
    );
    let store = target.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let tag = unique_tag("chaos-runners");
    let config = SupervisorConfig {
        pools: vec![
            common::runner_pool(
                "sal-osis",
                vec![ScriptType::Sal, ScriptType::Osis],
                2,
                Some(&tag),
            ),
            common::runner_pool(
                "v-python",
                vec![ScriptType::V, ScriptType::Python],
                2,
                Some(&tag),
            ),
        ],
        limits: Default::default(),
        dispatch: common::fast_dispatch(),
    };
    let sup = Supervisor::start(config, store.clone());
    let events = store.subscribe();
    let started = Instant::now();

    // The killer: a random runner of this test every 150..350 ms until told to stop.
    let killed: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let killer = {
        let (killed, stop, tag) = (killed.clone(), stop.clone(), tag.clone());
        let mut rng = rng.fork();
        tokio::spawn(async move {
            let me = std::process::id();
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(150 + rng.below(200))).await;
                let pids = tagged_pids(Some(me), &tag);
                if pids.is_empty() {
                    continue;
                }
                let victim = pids[rng.below(pids.len() as u64) as usize];
                if kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok() {
                    killed.lock().unwrap().insert(victim as u32);
                }
            }
        })
    };
    let ids = common::submit_all(&sup, target.spread(ok_jobs(&ledger, jobs, 30, 10)), 16).await;
    common::wait_all_terminal(&store, events, &ids, Duration::from_secs(90)).await;
    stop.cancel();
    killer.await.unwrap();
    let elapsed = started.elapsed();

    let killed = killed.lock().unwrap().clone();
    let tally = check_all_finished(
        &common::get_all(&store, &ids).await,
        &common::read_ledger(&ledger),
        |run| killed.contains(&run.pid),
    );
    let restarts: u64 = sup.list_runners().iter().map(|r| r.restarts).sum();
    common::report(format!(
        "chaos runners ({}): {jobs} jobs in {elapsed:.1?}, {} runners SIGKILLed ({restarts} restarts), \
         {} jobs retried, {} answers lost with their runner, {} executions, 0 jobs lost",
        target.name(),
        killed.len(),
        tally.retried,
        tally.lost_answers,
        tally.executions
    ));
    assert_eq!(tally.jobs, jobs);
    assert!(
        killed.len() >= 5,
        "only {} kills: the run was too short",
        killed.len()
    );
    assert!(tally.retried > 0, "no kill hit a running job");
    sup.shutdown().await;
    assert!(
        tagged_pids(Some(std::process::id()), &tag).is_empty(),
        "runners left after shutdown"
    );
}

/// What a store outage does to the store's Redis: kill it, start it again.
trait Outage {
    /// Kills every Redis process of the store (SIGKILL).
    fn kill(&mut self);
    /// Starts them again on their AOF and waits until they serve.
    fn restart(&mut self);
}

impl Outage for RedisServer {
    fn kill(&mut self) {
        self.stop();
    }

    fn restart(&mut self) {
        RedisServer::restart(self);
    }
}

/// The whole cluster: every node at once.
struct ClusterOutage {
    cluster: RedisCluster,
    /// The masters before the outage, started first again.
    masters: Vec<u16>,
}

impl Outage for ClusterOutage {
    fn kill(&mut self) {
        self.masters = self.cluster.master_ports();
        self.cluster.kill_all_nodes();
    }

    fn restart(&mut self) {
        // Until every master has its replica back, the writes that acknowledge a job
        // answer -32010 (WAIT 1): wait for that, as an operator would.
        tokio::task::block_in_place(|| {
            self.cluster
                .restart_all(&self.masters, Duration::from_secs(60));
        });
    }
}

/// Redis killed mid-run and restarted on the same AOF: during the outage every API call
/// answers `Storage` within a bound; afterwards the same supervisor serves again and
/// every accepted job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_storage_errors_then_recovery() {
    let mut redis = RedisServer::builder().aof(true).start();
    let target = StoreTarget::redis(&redis);
    store_outage_then_recovery(&target, &mut redis, 1_000, 300).await;
}

/// The same with every node of a private Redis Cluster (AOF on) SIGKILLed at once and
/// started again: the cluster connection finds its nodes again without a restart of the
/// supervisor. 600 jobs, then 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarted_mid_run_storage_errors_then_recovery() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::builder().aof(true).start());
    let target = StoreTarget::cluster(&cluster, "chaos-outage");
    let mut outage = ClusterOutage {
        cluster,
        masters: Vec::new(),
    };
    store_outage_then_recovery(&target, &mut outage, 600, 200).await;
}

/// `jobs` jobs of 200 ms, Redis killed mid-run (`outage`), API calls checked during the
/// outage, Redis restarted, `more` jobs of 20 ms submitted to the same supervisor; every
/// job ends `Finished`, no attempt run twice.
async fn store_outage_then_recovery(
    target: &StoreTarget,
    outage: &mut dyn Outage,
    jobs: usize,
    more: usize,
) {
    let store = target.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let mut dispatch = common::fast_dispatch();
    // An answer that could not be recorded during the outage is retried once its lease
    // expires: keep that short.
    dispatch.lease = Duration::from_secs(2);
    let config = SupervisorConfig {
        pools: common::pool_per_type(1, None),
        limits: Default::default(),
        dispatch,
    };
    let sup = Supervisor::start(config, store.clone());
    let started = Instant::now();
    // Jobs of 200 ms, 64 at a time: a run of a few seconds.
    let mut ids =
        common::submit_all(&sup, target.spread(ok_jobs(&ledger, jobs, 200, 10)), 16).await;
    let known = ids[0];

    // Mid-run: some finished, many queued or running.
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::read_ledger(&ledger).len() < jobs * 3 / 20 {
        assert!(Instant::now() < deadline, "the run never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outage.kill();
    let down = Instant::now();
    // Requests the runners were working on when Redis went: their answers come during
    // the outage.
    let in_flight: u64 = sup.list_runners().iter().map(|r| r.in_flight).sum();

    // Each call answers, and answers `Storage`.
    let bound = Duration::from_secs(10);
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let t = Instant::now();
        let got = common::bounded(bound, "get_job", sup.get_job(known)).await;
        assert!(
            matches!(&got, Err(e) if common::is_storage(e)),
            "round {round}: {got:?}"
        );
        let p = target.spread(vec![common::params(
            "echo x".to_owned(),
            ScriptType::Sal,
            10,
            0,
        )]);
        let p = p.into_iter().next().unwrap();
        let created = common::bounded(bound, "create_job", sup.create_job(p)).await;
        assert!(
            matches!(&created, Err(e) if common::is_storage(e)),
            "{created:?}"
        );
        let listed = common::bounded(bound, "list_jobs", sup.list_jobs()).await;
        assert!(
            matches!(&listed, Err(e) if common::is_storage(e)),
            "{listed:?}"
        );
        let status = common::bounded(bound, "get_job_status", sup.get_job_status(known)).await;
        assert!(
            matches!(&status, Err(e) if common::is_storage(e)),
            "{status:?}"
        );
        slowest = slowest.max(t.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down_for = down.elapsed();
    outage.restart();
    let restarted_in = down.elapsed() - down_for;

    // The same supervisor serves again (the connection reconnects on its own).
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        let events = store.subscribe();
        match sup.get_job(known).await {
            Ok(_) => break events,
            Err(e) => {
                assert!(common::is_storage(&e), "{e:?}");
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let recovered_in = down.elapsed() - down_for - restarted_in;
    ids.extend(common::submit_all(&sup, target.spread(ok_jobs(&ledger, more, 20, 10)), 16).await);
    common::wait_all_terminal(&store, events, &ids, Duration::from_secs(60)).await;
    let tally = check_all_finished(
        &common::get_all(&store, &ids).await,
        &common::read_ledger(&ledger),
        // An answer that arrived during the outage is recorded once Redis is back (the
        // recorder tries again for a few seconds); if the outage outlasts the lease, the
        // attempt is retried instead.
        |_| true,
    );
    common::report(format!(
        "chaos redis ({}): {} jobs in {:.1?}; redis down {down_for:.1?}, API calls during the \
         outage answered Storage in at most {slowest:.1?} each (4 calls per round); restarted \
         in {restarted_in:.1?}, serving again {recovered_in:.1?} later; {in_flight} requests \
         in flight when it went down; {} jobs retried, {} answers lost, 0 jobs lost",
        target.name(),
        tally.jobs,
        started.elapsed(),
        tally.retried,
        tally.lost_answers
    ));
    assert_eq!(tally.jobs, jobs + more);
    assert!(in_flight > 0, "the outage hit no running job");
    sup.shutdown().await;
}

/// A process killed on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills every process carrying `tag` (orphaned runners) when dropped.
struct KillTagged(String);

impl Drop for KillTagged {
    fn drop(&mut self) {
        for pid in tagged_pids(None, &self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn spawn_supervisor(
    bin: &Path,
    port: u16,
    target: &StoreTarget,
    tag: &str,
    log: &Path,
) -> KillOnDrop {
    let runner = format!(
        "SAL,OSIS,V,Python=stdio:{} --tag {tag}",
        common::TEST_RUNNER
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("supervisor log");
    let child = std::process::Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(target.cli_args())
        .args(["--runner", &runner])
        // A short lease: the restarted instance takes the dead one's jobs over quickly.
        .args(["--lease-secs", "2"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hero-supervisor");
    KillOnDrop(child)
}

async fn wait_listening(port: u16, child: &mut KillOnDrop, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "hero-supervisor exited ({status}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "hero-supervisor never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `hero-supervisor` process SIGKILLed mid-run and started again on the same Redis
/// (AOF on): every accepted job finishes (those it was running once their leases,
/// `--lease-secs 2`, expire), and its orphaned runners exit on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_killed_mid_run_and_restarted_loses_no_job() {
    let redis = RedisServer::builder().aof(true).start();
    supervisor_killed_mid_run_and_restarted(&StoreTarget::redis(&redis), 1_000).await;
}

/// The same with `--redis-cluster` on the shared Redis Cluster, 600 jobs over six
/// contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_killed_mid_run_and_restarted_loses_no_job_on_a_cluster() {
    let target = StoreTarget::cluster(RedisCluster::shared(), "chaos-supervisor");
    supervisor_killed_mid_run_and_restarted(&target, 600).await;
}

async fn supervisor_killed_mid_run_and_restarted(target: &StoreTarget, jobs: usize) {
    let bin = common::supervisor_binary();
    let store = target.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let (ledger, log) = (dir.path().join("ledger"), dir.path().join("supervisor.log"));
    let tag = unique_tag("chaos-supervisor");
    let _reap = KillTagged(tag.clone());
    let port = hero_testkit::free_tcp_port();
    let started = Instant::now();

    let mut first = spawn_supervisor(&bin, port, target, &tag, &log);
    wait_listening(port, &mut first, &log).await;
    // Accepted = created and started in the store the supervisor serves.
    let mut ids: Vec<JobId> = Vec::new();
    for p in target.spread(ok_jobs(&ledger, jobs, 20, 3)) {
        let job = Job::new(JobId::for_context_id(&p.context_id), p, chrono::Utc::now());
        store.create(&job).await.unwrap();
        store.start(job.id).await.unwrap();
        ids.push(job.id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ran = common::read_ledger(&ledger).len();
        if ran >= 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the supervisor never ran jobs ({ran})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(Pid::from_raw(first.0.id() as i32), Signal::SIGKILL).unwrap();
    let _ = first.0.wait();
    let killed_at = Instant::now();
    drop(first);
    let running_at_kill = common::get_all(&store, &ids)
        .await
        .iter()
        .filter(|j| j.as_ref().is_ok_and(|j| j.status == JobStatus::Started))
        .count();
    // A stdio runner sees EOF when its supervisor dies and exits.
    loop {
        let orphans = tagged_pids(None, &tag);
        if orphans.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "runners {orphans:?} outlived their supervisor"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let events = store.subscribe();
    let mut second = spawn_supervisor(&bin, port, target, &tag, &log);
    wait_listening(port, &mut second, &log).await;
    common::wait_all_terminal(&store, events, &ids, Duration::from_secs(75)).await;
    let tally = check_all_finished(
        &common::get_all(&store, &ids).await,
        &common::read_ledger(&ledger),
        // Answers in flight when the supervisor died were lost with it.
        |_| true,
    );
    common::report(format!(
        "chaos supervisor ({}): {} jobs in {:.1?}, supervisor SIGKILLed with {running_at_kill} \
         jobs running; {} jobs retried, {} answers lost with it, 0 jobs lost",
        target.name(),
        tally.jobs,
        started.elapsed(),
        tally.retried,
        tally.lost_answers
    ));
    assert_eq!(tally.jobs, jobs);
    drop(second);
}
