//! One conformance suite for every `JobStore`: each test is an async fn over a
//! [`Harness`], instantiated once per backend by `conformance!` (each Redis test gets
//! its own `redis-server`; the cluster tests share one Redis Cluster per test binary,
//! each test under a key prefix of its own). Time is a `ManualClock`: no test sleeps to
//! make time pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use hero_supervisor::clock::{Clock, ManualClock};
use hero_supervisor::job::{Job, JobError, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::store::{
    CancelOutcome, ClaimedJob, Completion, JobFilter, JobStore, JobSummary, ListCursor,
    MemoryStore, RedisStore, StoreConfig, StoreError, StoreEvent, Trimmed,
};
use hero_testkit::{RedisCluster, RedisServer};
use tokio::sync::broadcast;

const LEASE: Duration = Duration::from_secs(10);
const OWNER: &str = "sup-a";

struct Harness {
    store: Arc<dyn JobStore>,
    clock: Arc<ManualClock>,
    redis: Option<RedisServer>,
    /// On the shared cluster: the test's key prefix.
    cluster: Option<String>,
    /// The `context_id` of the jobs the helpers create: "ctx" (the default namespace),
    /// or "42", so that the whole suite also runs in a numbered context's namespace.
    context: &'static str,
}

/// Retention in these tests: an hour, 20 jobs per terminal status.
const KEEP: Span = Span::hours(1);
const KEEP_COUNT: usize = 20;

fn config() -> StoreConfig {
    StoreConfig {
        max_log_lines: 5,
        max_log_line_len: 16,
        keep_finished: Duration::from_secs(3600),
        keep_finished_count: KEEP_COUNT,
        ..StoreConfig::default()
    }
}

async fn memory(context: &'static str) -> Harness {
    let clock = Arc::new(ManualClock::default());
    let store = MemoryStore::new(config(), clock.clone());
    Harness {
        store: Arc::new(store),
        clock,
        redis: None,
        cluster: None,
        context,
    }
}

async fn redis(context: &'static str) -> Harness {
    let server = RedisServer::start();
    let clock = Arc::new(ManualClock::default());
    let store = RedisStore::connect(&server.url(), config(), clock.clone())
        .await
        .expect("connect to the test redis");
    Harness {
        store: Arc::new(store),
        clock,
        redis: Some(server),
        cluster: None,
        context,
    }
}

/// A store on the shared Redis Cluster, under a prefix of its own.
async fn cluster(context: &'static str) -> Harness {
    let nodes = RedisCluster::shared().urls();
    let prefix = format!("t{}", &JobId::new().to_string()[..8]);
    let clock = Arc::new(ManualClock::default());
    let store = RedisStore::connect_cluster(
        &nodes,
        StoreConfig {
            prefix: prefix.clone(),
            ..config()
        },
        clock.clone(),
    )
    .await
    .expect("connect to the test cluster");
    Harness {
        store: Arc::new(store),
        clock,
        redis: None,
        cluster: Some(prefix),
        context,
    }
}

impl Harness {
    /// Whether the store is on Redis (one server or the cluster).
    fn on_redis(&self) -> bool {
        self.redis.is_some() || self.cluster.is_some()
    }

    fn params(&self, script_type: ScriptType, prerequisites: Vec<JobId>) -> JobParams {
        JobParams {
            traceparent: None,
            script: "print(1)".into(),
            script_type,
            caller_id: "caller".into(),
            context_id: self.context.into(),
            timeout: Some(30),
            prerequisites,
            retries: None,
            env_vars: [("K".to_owned(), "v".to_owned())].into(),
        }
    }

    async fn create_with(&self, params: JobParams) -> Job {
        // The id of the job's namespace, as the supervisor gives it.
        let job = Job::new(
            JobId::for_context_id(&params.context_id),
            params,
            self.clock.now(),
        );
        self.store.create(&job).await.expect("create");
        job
    }

    async fn create(&self) -> JobId {
        self.create_with(self.params(ScriptType::Sal, vec![]))
            .await
            .id
    }

    async fn create_after(&self, prerequisites: Vec<JobId>) -> JobId {
        self.create_with(self.params(ScriptType::Sal, prerequisites))
            .await
            .id
    }

    /// Created + started: Dispatched on the SAL queue.
    async fn queued(&self) -> JobId {
        let id = self.create().await;
        assert_eq!(self.store.start(id).await, Ok(JobStatus::Dispatched));
        id
    }

    /// Queued and claimed by OWNER: Started on attempt 1.
    async fn running(&self) -> Job {
        let id = self.queued().await;
        let mut got = self.claim(1).await;
        assert_eq!(got.len(), 1);
        let job = got.remove(0);
        assert_eq!(job.id, id);
        job
    }

    async fn claim(&self, max: usize) -> Vec<Job> {
        decoded(
            self.store
                .claim(ScriptType::Sal, max, OWNER, LEASE)
                .await
                .expect("claim"),
        )
    }

    async fn get(&self, id: JobId) -> Job {
        self.store.get(id).await.expect("get")
    }

    async fn status(&self, id: JobId) -> JobStatus {
        self.get(id).await.status
    }

    /// `n` jobs queued, claimed and ended in one batch: `Finished`, or `Error` when
    /// `fail`. Returns them in queue order.
    async fn ended(&self, n: usize, fail: bool) -> Vec<JobId> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.queued().await);
        }
        let mut items = Vec::with_capacity(n);
        while items.len() < n {
            let got = self.claim(500).await;
            assert!(!got.is_empty(), "claim the queued jobs");
            items.extend(got.into_iter().map(|j| {
                if fail {
                    Completion::fail(j.id, j.attempt, JobError::timeout("t"))
                } else {
                    Completion::finish(j.id, j.attempt, "out")
                }
            }));
        }
        for r in self.store.complete(&items).await {
            r.expect("complete");
        }
        ids
    }

    /// `trim_finished(max)` until it says there is no more; the sum.
    async fn trim_all(&self, max: usize) -> Trimmed {
        let mut sum = Trimmed::default();
        for _ in 0..1000 {
            let t = self.store.trim_finished(max).await.expect("trim");
            sum.removed += t.removed;
            sum.kept_needed += t.kept_needed;
            if !t.more {
                return sum;
            }
        }
        panic!("trim_finished never finished");
    }

    async fn gone(&self, id: JobId) -> bool {
        self.store.get(id).await == Err(StoreError::NotFound(id))
    }

    /// Every Redis key under the prefix (SCAN: test only); empty for the memory store.
    async fn keys(&self) -> Vec<String> {
        let (urls, pattern) = match (&self.redis, &self.cluster) {
            (Some(server), _) => (vec![server.url()], "hero:*".to_owned()),
            (None, Some(prefix)) => {
                let c = RedisCluster::shared();
                let urls = c
                    .master_ports()
                    .iter()
                    .map(|p| format!("redis://127.0.0.1:{p}"))
                    .collect();
                (urls, format!("{prefix}:*"))
            }
            (None, None) => return Vec::new(),
        };
        let mut keys = Vec::new();
        for url in urls {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys
    }
}

fn invalid(id: JobId, from: JobStatus, op: &'static str) -> StoreError {
    StoreError::InvalidTransition { id, from, op }
}

/// Applies every CAS operation with `attempt` and checks each is rejected with `want`
/// and leaves the job exactly as it was.
async fn cas_ops_rejected(
    h: &Harness,
    id: JobId,
    attempt: u32,
    want: impl Fn(&'static str) -> StoreError,
) {
    let before = h.get(id).await;
    let later = h.clock.now() + Span::seconds(5);
    assert_eq!(
        h.store
            .complete_one(Completion::finish(id, attempt, "out"))
            .await,
        Err(want("finish"))
    );
    assert_eq!(
        h.store
            .complete_one(Completion::fail(id, attempt, JobError::timeout("t")))
            .await,
        Err(want("fail"))
    );
    assert_eq!(
        h.store
            .complete_one(Completion::retry_later(id, attempt, later, None))
            .await,
        Err(want("retry_later"))
    );
    assert_eq!(
        h.store.complete_one(Completion::release(id, attempt)).await,
        Err(want("release"))
    );
    assert_eq!(h.get(id).await, before, "a rejected op changed the job");
}

async fn next_event(rx: &mut broadcast::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5s")
        .expect("event channel open")
}

// ---------------------------------------------------------------------------------------

async fn create_then_get_round_trips(h: Harness) {
    let mut params = h.params(ScriptType::Python, vec![]);
    params.env_vars.insert("B".into(), "two words".into());
    params.retries = Some(4);
    let job = h.create_with(params).await;
    let got = h.get(job.id).await;
    assert_eq!(got, job);
    assert_eq!(got.status, JobStatus::Created);
    assert_eq!(got.max_attempts(), 5);
    assert_eq!(h.store.list_ids().await.unwrap(), vec![job.id]);
    assert_eq!(
        h.store.create(&job).await,
        Err(StoreError::AlreadyExists(job.id))
    );
    let unknown = JobId::new();
    assert_eq!(
        h.store.get(unknown).await,
        Err(StoreError::NotFound(unknown))
    );
}

async fn list_ids_oldest_first(h: Harness) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(h.create().await);
        h.clock.advance(Span::milliseconds(1));
    }
    assert_eq!(h.store.list_ids().await.unwrap(), ids);
}

async fn create_with_missing_prerequisite_fails(h: Harness) {
    let existing = h.create().await;
    let missing = JobId::for_context_id(h.context);
    let job = Job::new(
        JobId::for_context_id(h.context),
        h.params(ScriptType::Sal, vec![existing, missing]),
        h.clock.now(),
    );
    assert_eq!(
        h.store.create(&job).await,
        Err(StoreError::PrerequisiteNotFound(missing))
    );
    assert_eq!(h.store.get(job.id).await, Err(StoreError::NotFound(job.id)));
    assert_eq!(h.store.list_ids().await.unwrap(), vec![existing]);
}

/// `create_started` is `create` then `start` in one call: queued, or waiting on an
/// unfinished prerequisite, or refused like `create` (nothing stored then).
async fn create_started_creates_and_starts_in_one_call(h: Harness) {
    let now = h.clock.now();
    let first = Job::new(
        JobId::for_context_id(h.context),
        h.params(ScriptType::Sal, vec![]),
        now,
    );
    assert_eq!(
        h.store.create_started(&first).await,
        Ok(JobStatus::Dispatched)
    );
    let second = Job::new(
        JobId::for_context_id(h.context),
        h.params(ScriptType::Sal, vec![first.id]),
        now,
    );
    assert_eq!(
        h.store.create_started(&second).await,
        Ok(JobStatus::WaitingForPrerequisites)
    );
    assert_eq!(
        h.store.create_started(&first).await,
        Err(StoreError::AlreadyExists(first.id))
    );
    let missing = JobId::for_context_id(h.context);
    let orphan = Job::new(
        JobId::for_context_id(h.context),
        h.params(ScriptType::Sal, vec![missing]),
        now,
    );
    assert_eq!(
        h.store.create_started(&orphan).await,
        Err(StoreError::PrerequisiteNotFound(missing))
    );
    assert_eq!(
        h.store.get(orphan.id).await,
        Err(StoreError::NotFound(orphan.id))
    );
    assert_eq!(ids(h.claim(10).await), vec![first.id]);
    assert_eq!(
        h.status(second.id).await,
        JobStatus::WaitingForPrerequisites
    );
}

/// `create_many` creates (and starts) a batch all or nothing: one existing or repeated
/// id, or one missing prerequisite, and nothing of the batch is stored.
async fn create_many_is_all_or_nothing(h: Harness) {
    let now = h.clock.now();
    let job = |prerequisites: Vec<JobId>| {
        Job::new(
            JobId::for_context_id(h.context),
            h.params(ScriptType::Sal, prerequisites),
            now,
        )
    };
    let existing = h.create().await;
    let fresh: Vec<Job> = (0..3).map(|_| job(vec![])).collect();
    let missing = JobId::for_context_id(h.context);
    let refused = [
        (
            vec![fresh[0].clone(), job(vec![missing]), fresh[1].clone()],
            StoreError::PrerequisiteNotFound(missing),
        ),
        (
            vec![fresh[0].clone(), fresh[1].clone(), fresh[0].clone()],
            StoreError::AlreadyExists(fresh[0].id),
        ),
        (
            vec![fresh[0].clone(), h.get(existing).await],
            StoreError::AlreadyExists(existing),
        ),
    ];
    for (batch, error) in refused {
        assert_eq!(h.store.create_many(&batch, true).await, Err(error));
        for j in &fresh {
            assert_eq!(h.store.get(j.id).await, Err(StoreError::NotFound(j.id)));
        }
    }
    assert_eq!(h.store.list_ids().await.unwrap(), vec![existing]);
    // Started: in order, queued or waiting on an unfinished prerequisite.
    let mut batch = fresh.clone();
    batch.push(job(vec![existing]));
    assert_eq!(
        h.store.create_many(&batch, true).await,
        Ok(vec![
            JobStatus::Dispatched,
            JobStatus::Dispatched,
            JobStatus::Dispatched,
            JobStatus::WaitingForPrerequisites
        ])
    );
    // Stored, indexed and counted as `create` then `start` would leave them.
    for j in &fresh {
        let stored = h.get(j.id).await;
        assert_eq!(stored.status, JobStatus::Dispatched);
        assert_eq!(stored.queued_at, Some(stored.created_at));
        assert_eq!(stored.script, j.script);
    }
    let dispatched = h
        .store
        .list(
            &JobFilter {
                status: Some(JobStatus::Dispatched),
                limit: 10,
                ..JobFilter::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        dispatched.jobs.iter().map(|j| j.id).collect::<HashSet<_>>(),
        fresh.iter().map(|j| j.id).collect::<HashSet<_>>()
    );
    let counts = h.store.counts().await.unwrap();
    assert!(
        counts.by_script_type.contains(&(ScriptType::Sal, 5)),
        "{counts:?}"
    );
    assert!(counts.queued.contains(&(ScriptType::Sal, 3)), "{counts:?}");
    assert_eq!(
        ids(h.claim(10).await),
        fresh.iter().map(|j| j.id).collect::<Vec<_>>()
    );
    // Not started: Created, and stored like `create`'s.
    let later = [job(vec![]), job(vec![])];
    assert_eq!(
        h.store.create_many(&later, false).await,
        Ok(vec![JobStatus::Created, JobStatus::Created])
    );
    for j in &later {
        let stored = h.get(j.id).await;
        assert_eq!(stored.status, JobStatus::Created);
        assert_eq!(stored.script, j.script);
        assert_eq!(stored.env_vars, j.env_vars);
    }
}

async fn happy_path_created_to_finished(h: Harness) {
    let id = h.create().await;
    assert_eq!(h.store.start(id).await, Ok(JobStatus::Dispatched));
    let t_claim = h.clock.advance(Span::seconds(1));
    let claimed = h.claim(10).await;
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0];
    assert_eq!(job.id, id);
    assert_eq!(job.status, JobStatus::Started);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.started_at, Some(t_claim));
    assert_eq!(job.lease_owner.as_deref(), Some(OWNER));
    assert_eq!(job.lease_until, Some(t_claim + Span::seconds(10)));
    assert_eq!(h.get(id).await, *job);

    let t_end = h.clock.advance(Span::seconds(2));
    h.store
        .complete_one(Completion::finish(id, 1, "42"))
        .await
        .unwrap();
    let done = h.get(id).await;
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(done.output.as_deref(), Some("42"));
    assert_eq!(done.finished_at, Some(t_end));
    assert_eq!(done.updated_at, t_end);
    assert_eq!(done.lease_owner, None);
    assert_eq!(done.lease_until, None);
    assert!(h.claim(10).await.is_empty());
    // A finished job's lease is gone: nothing to reclaim later.
    h.clock.advance(Span::hours(1));
    assert!(h.store.reclaim_expired(100).await.unwrap().is_empty());
}

async fn fail_ends_in_error_with_typed_error(h: Harness) {
    let job = h.running().await;
    let err = JobError::new("script_error", "line 3: boom");
    h.store
        .complete_one(Completion::fail(job.id, 1, err.clone()))
        .await
        .unwrap();
    let got = h.get(job.id).await;
    assert_eq!(got.status, JobStatus::Error);
    assert_eq!(got.error, Some(err));
    assert!(got.finished_at.is_some());
    assert_eq!(got.lease_owner, None);
}

async fn illegal_transitions_are_rejected_and_change_nothing(h: Harness) {
    // Created
    let created = h.create().await;
    cas_ops_rejected(&h, created, 0, |op| {
        invalid(created, JobStatus::Created, op)
    })
    .await;
    assert!(
        h.claim(10).await.is_empty(),
        "a Created job is not claimable"
    );

    // Dispatched
    let queued = h.queued().await;
    let before = h.get(queued).await;
    assert_eq!(
        h.store.start(queued).await,
        Err(invalid(queued, JobStatus::Dispatched, "start"))
    );
    assert_eq!(h.get(queued).await, before);
    cas_ops_rejected(&h, queued, 0, |op| {
        invalid(queued, JobStatus::Dispatched, op)
    })
    .await;

    // WaitingForPrerequisites
    let waiting = h.create_after(vec![created]).await;
    assert_eq!(
        h.store.start(waiting).await,
        Ok(JobStatus::WaitingForPrerequisites)
    );
    cas_ops_rejected(&h, waiting, 0, |op| {
        invalid(waiting, JobStatus::WaitingForPrerequisites, op)
    })
    .await;

    // Started: wrong attempt is a conflict, start is invalid
    let claimed = h.claim(10).await;
    assert_eq!(claimed.len(), 1);
    let running = claimed[0].id;
    assert_eq!(running, queued);
    cas_ops_rejected(&h, running, 7, |_| StoreError::Conflict {
        id: running,
        expected: 7,
        current: 1,
    })
    .await;
    assert_eq!(
        h.store.start(running).await,
        Err(invalid(running, JobStatus::Started, "start"))
    );

    // Finished
    h.store
        .complete_one(Completion::finish(running, 1, "ok"))
        .await
        .unwrap();
    cas_ops_rejected(&h, running, 1, |op| {
        invalid(running, JobStatus::Finished, op)
    })
    .await;
    assert_eq!(
        h.store.start(running).await,
        Err(invalid(running, JobStatus::Finished, "start"))
    );
    assert_eq!(
        h.store.cancel(running).await,
        Ok(CancelOutcome::AlreadyTerminal(JobStatus::Finished))
    );

    // Error
    let failed = h.running().await.id;
    h.store
        .complete_one(Completion::fail(failed, 1, JobError::timeout("too slow")))
        .await
        .unwrap();
    cas_ops_rejected(&h, failed, 1, |op| invalid(failed, JobStatus::Error, op)).await;
    assert_eq!(
        h.store.cancel(failed).await,
        Ok(CancelOutcome::AlreadyTerminal(JobStatus::Error))
    );

    // Unknown id
    let unknown = JobId::new();
    cas_ops_rejected_unknown(&h, unknown).await;
}

async fn cas_ops_rejected_unknown(h: &Harness, id: JobId) {
    let nf = StoreError::NotFound(id);
    assert_eq!(h.store.start(id).await, Err(nf.clone()));
    assert_eq!(
        h.store.complete_one(Completion::finish(id, 1, "x")).await,
        Err(nf.clone())
    );
    assert_eq!(
        h.store
            .complete_one(Completion::fail(id, 1, JobError::timeout("t")))
            .await,
        Err(nf.clone())
    );
    assert_eq!(
        h.store
            .complete_one(Completion::retry_later(id, 1, h.clock.now(), None))
            .await,
        Err(nf.clone())
    );
    assert_eq!(
        h.store.complete_one(Completion::release(id, 1)).await,
        Err(nf.clone())
    );
    assert_eq!(h.store.cancel(id).await, Err(nf.clone()));
    assert_eq!(h.store.delete(id).await, Err(nf.clone()));
    assert_eq!(h.store.logs(id).await, Err(nf.clone()));
    assert_eq!(
        h.store.append_logs(id, &["x".to_owned()]).await,
        Err(nf.clone())
    );
}

async fn claim_is_fifo_per_script_type(h: Harness) {
    let a = h.queued().await;
    let py = h.create_with(h.params(ScriptType::Python, vec![])).await.id;
    h.store.start(py).await.unwrap();
    let b = h.queued().await;
    let c = h.queued().await;
    let got: Vec<JobId> = h.claim(2).await.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![a, b]);
    let got: Vec<JobId> = h.claim(5).await.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![c]);
    let other = decoded(
        h.store
            .claim(ScriptType::Python, 5, OWNER, LEASE)
            .await
            .unwrap(),
    );
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].id, py);
    assert!(
        h.store
            .claim(ScriptType::V, 5, OWNER, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.claim(0).await.is_empty());
}

async fn racing_claimers_never_share_a_job(h: Harness) {
    const N: usize = 200;
    let mut all = HashSet::new();
    for _ in 0..N {
        all.insert(h.queued().await);
    }
    let claimers: Vec<_> = ["sup-a", "sup-b"]
        .into_iter()
        .map(|owner| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = decoded(store.claim(ScriptType::Sal, 7, owner, LEASE).await.unwrap());
                    if got.is_empty() {
                        return mine;
                    }
                    for j in got {
                        assert_eq!(j.lease_owner.as_deref(), Some(owner));
                        mine.push(j.id);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut counts = Vec::new();
    for c in claimers {
        let mine = c.await.unwrap();
        counts.push(mine.len());
        for id in mine {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(
        seen, all,
        "every job claimed exactly once (split {counts:?})"
    );
    for id in all {
        let job = h.get(id).await;
        assert_eq!((job.status, job.attempt), (JobStatus::Started, 1));
    }
}

async fn expired_lease_is_reclaimed_exactly_once(h: Harness) {
    const N: usize = 50;
    let mut ids = HashSet::new();
    for _ in 0..N {
        ids.insert(h.queued().await);
    }
    assert_eq!(h.claim(N).await.len(), N);
    // At the deadline the lease still holds (expired means lease_until < now).
    h.clock.advance(Span::seconds(10));
    assert!(h.store.reclaim_expired(1000).await.unwrap().is_empty());
    h.clock.advance(Span::milliseconds(1));
    let reclaimers: Vec<_> = (0..2)
        .map(|_| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store.reclaim_expired(5).await.unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for r in reclaimers {
        for id in r.await.unwrap() {
            assert!(seen.insert(id), "lease of {id} reclaimed twice");
        }
    }
    assert_eq!(seen, ids);
    for id in ids {
        let job = h.get(id).await;
        assert_eq!(job.status, JobStatus::Dispatched);
        assert_eq!(job.attempt, 1, "the lost attempt counts");
        assert_eq!(job.lease_owner, None);
        assert_eq!(job.lease_until, None);
    }
    // Re-queued: claimable again, as attempt 2.
    let again = h.claim(N).await;
    assert_eq!(again.len(), N);
    assert!(again.iter().all(|j| j.attempt == 2));
}

async fn last_attempt_lost_ends_in_runner_lost(h: Harness) {
    let mut params = h.params(ScriptType::Sal, vec![]);
    params.retries = Some(1);
    let job = h.create_with(params).await;
    let dependent = h.create_after(vec![job.id]).await;
    h.store.start(job.id).await.unwrap();
    h.store.start(dependent).await.unwrap();
    for attempt in 1..=2 {
        let got = h.claim(1).await;
        assert_eq!(got[0].attempt, attempt);
        h.clock.advance(Span::seconds(11));
        assert_eq!(h.store.reclaim_expired(10).await.unwrap(), vec![job.id]);
    }
    let lost = h.get(job.id).await;
    assert_eq!(lost.status, JobStatus::Error);
    assert_eq!(lost.attempt, 2);
    let err = lost.error.unwrap();
    assert_eq!(err.error_type, JobError::RUNNER_LOST);
    assert!(err.message.contains(OWNER), "{}", err.message);
    let dep = h.get(dependent).await;
    assert_eq!(dep.status, JobStatus::Error);
    assert_eq!(dep.error.unwrap().error_type, JobError::PREREQUISITE_FAILED);
    assert!(h.claim(10).await.is_empty());
}

async fn renew_extends_only_held_leases(h: Harness) {
    let job = h.running().await;
    let done = h.running().await;
    h.store
        .complete_one(Completion::finish(done.id, 1, String::new()))
        .await
        .unwrap();
    let t = h.clock.advance(Span::seconds(8));
    let unknown = JobId::new();
    let lost = h
        .store
        .renew(OWNER, &[job.id, done.id, unknown], LEASE)
        .await
        .unwrap();
    assert_eq!(lost, vec![done.id, unknown]);
    assert_eq!(h.get(job.id).await.lease_until, Some(t + Span::seconds(10)));
    // Past the original deadline, before the renewed one: nothing to reclaim.
    h.clock.advance(Span::seconds(5));
    assert!(h.store.reclaim_expired(10).await.unwrap().is_empty());
    // Another owner doesn't hold it and can't extend it.
    let before = h.get(job.id).await;
    assert_eq!(
        h.store.renew("sup-b", &[job.id], LEASE).await.unwrap(),
        vec![job.id]
    );
    assert_eq!(h.get(job.id).await, before);
    assert!(h.store.renew(OWNER, &[], LEASE).await.unwrap().is_empty());
}

async fn late_finish_of_an_old_attempt_is_rejected(h: Harness) {
    let job = h.running().await;
    h.clock.advance(Span::seconds(11));
    assert_eq!(h.store.reclaim_expired(10).await.unwrap(), vec![job.id]);
    // The old attempt answers while the job waits in the queue.
    assert_eq!(
        h.store
            .complete_one(Completion::finish(job.id, 1, "late"))
            .await,
        Err(invalid(job.id, JobStatus::Dispatched, "finish"))
    );
    let second = h.claim(1).await;
    assert_eq!(second[0].attempt, 2);
    let before = h.get(job.id).await;
    assert_eq!(
        h.store
            .complete_one(Completion::finish(job.id, 1, "late"))
            .await,
        Err(StoreError::Conflict {
            id: job.id,
            expected: 1,
            current: 2
        })
    );
    assert_eq!(h.get(job.id).await, before);
    h.store
        .complete_one(Completion::finish(job.id, 2, "fresh"))
        .await
        .unwrap();
    assert_eq!(h.get(job.id).await.output.as_deref(), Some("fresh"));
}

async fn delayed_jobs_promote_on_time(h: Harness) {
    let job = h.running().await;
    let not_before = h.clock.now() + Span::seconds(30);
    let err = JobError::new("script_error", "flaky");
    h.store
        .complete_one(Completion::retry_later(
            job.id,
            1,
            not_before,
            Some(err.clone()),
        ))
        .await
        .unwrap();
    let got = h.get(job.id).await;
    assert_eq!(got.status, JobStatus::Dispatched);
    assert_eq!(got.not_before, Some(not_before));
    assert_eq!(got.error, Some(err.clone()));
    assert_eq!(got.lease_owner, None);
    assert!(h.claim(10).await.is_empty(), "not ready before not_before");

    h.clock.advance(Span::milliseconds(29_999));
    assert_eq!(h.store.promote_due(10).await.unwrap(), 0);
    assert!(h.claim(10).await.is_empty());
    h.clock.advance(Span::milliseconds(1));
    assert_eq!(h.store.promote_due(10).await.unwrap(), 1);
    assert_eq!(h.store.promote_due(10).await.unwrap(), 0, "promoted once");
    let again = h.claim(10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].not_before, None);
    assert_eq!(again[0].error, Some(err));
}

async fn promote_due_respects_max(h: Harness) {
    let now = h.clock.now();
    for _ in 0..5 {
        let job = h.running().await;
        h.store
            .complete_one(Completion::retry_later(job.id, 1, now, None))
            .await
            .unwrap();
    }
    assert_eq!(h.store.promote_due(3).await.unwrap(), 3);
    assert_eq!(h.store.promote_due(3).await.unwrap(), 2);
    assert_eq!(h.claim(10).await.len(), 5);
}

async fn dependents_released_when_all_prerequisites_finish(h: Harness) {
    let a = h.create().await;
    let b = h.create().await;
    let c = h.create_after(vec![a, b]).await;
    assert_eq!(
        h.store.start(c).await,
        Ok(JobStatus::WaitingForPrerequisites)
    );
    h.store.start(a).await.unwrap();
    h.store.start(b).await.unwrap();
    let claimed = h.claim(2).await;
    assert_eq!(claimed.len(), 2);
    h.store
        .complete_one(Completion::finish(a, 1, "a"))
        .await
        .unwrap();
    assert_eq!(h.status(c).await, JobStatus::WaitingForPrerequisites);
    assert!(h.claim(10).await.is_empty());
    h.store
        .complete_one(Completion::finish(b, 1, "b"))
        .await
        .unwrap();
    assert_eq!(h.status(c).await, JobStatus::Dispatched);
    let got = h.claim(10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, c);
    // Starting after the prerequisites finished queues at once.
    let d = h.create_after(vec![a, b]).await;
    assert_eq!(h.store.start(d).await, Ok(JobStatus::Dispatched));
}

async fn dependents_fail_transitively(h: Harness) {
    let a = h.create().await;
    let b = h.create_after(vec![a]).await;
    let c = h.create_after(vec![b]).await;
    let other = h.create().await;
    let d = h.create_after(vec![other, c]).await;
    for id in [b, c, d] {
        assert_eq!(
            h.store.start(id).await,
            Ok(JobStatus::WaitingForPrerequisites)
        );
    }
    h.store.start(a).await.unwrap();
    h.claim(1).await;
    h.store
        .complete_one(Completion::fail(
            a,
            1,
            JobError::new("script_error", "boom"),
        ))
        .await
        .unwrap();
    for id in [b, c, d] {
        let job = h.get(id).await;
        assert_eq!(job.status, JobStatus::Error, "{id}");
        assert_eq!(job.error.unwrap().error_type, JobError::PREREQUISITE_FAILED);
    }
    assert_eq!(h.status(other).await, JobStatus::Created);
}

async fn start_with_failed_prerequisite_fails_at_once(h: Harness) {
    let a = h.running().await.id;
    h.store
        .complete_one(Completion::fail(
            a,
            1,
            JobError::new("script_error", "boom"),
        ))
        .await
        .unwrap();
    let b = h.create_after(vec![a]).await;
    assert_eq!(h.store.start(b).await, Ok(JobStatus::Error));
    let job = h.get(b).await;
    assert_eq!(job.status, JobStatus::Error);
    let err = job.error.unwrap();
    assert_eq!(err.error_type, JobError::PREREQUISITE_FAILED);
    assert!(err.message.contains(&a.to_string()), "{}", err.message);
    assert!(h.claim(10).await.is_empty());
}

async fn release_requeues_at_front_without_counting(h: Harness) {
    let first = h.queued().await;
    let second = h.queued().await;
    let got = h.claim(1).await;
    assert_eq!(got[0].id, first);
    h.store
        .complete_one(Completion::release(first, 1))
        .await
        .unwrap();
    let job = h.get(first).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Dispatched, 0));
    assert_eq!(job.lease_owner, None);
    h.clock.advance(Span::hours(1));
    assert!(h.store.reclaim_expired(10).await.unwrap().is_empty());
    let got: Vec<(JobId, u32)> = h.claim(2).await.iter().map(|j| (j.id, j.attempt)).collect();
    assert_eq!(got, vec![(first, 1), (second, 1)]);
}

async fn cancel_each_state(h: Harness) {
    // Created
    let created = h.create().await;
    assert_eq!(h.store.cancel(created).await, Ok(CancelOutcome::Cancelled));
    let job = h.get(created).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, JobError::CANCELLED);

    // Dispatched: leaves the queue
    let queued = h.queued().await;
    let waiting = h.create_after(vec![queued]).await;
    h.store.start(waiting).await.unwrap();
    assert_eq!(h.store.cancel(queued).await, Ok(CancelOutcome::Cancelled));
    assert_eq!(h.status(queued).await, JobStatus::Error);
    assert_eq!(h.status(waiting).await, JobStatus::Error, "dependent fails");
    assert!(h.claim(10).await.is_empty());

    // WaitingForPrerequisites, with a dependent of its own
    let pre = h.create().await;
    let w = h.create_after(vec![pre]).await;
    let ww = h.create_after(vec![w]).await;
    h.store.start(w).await.unwrap();
    h.store.start(ww).await.unwrap();
    assert_eq!(h.store.cancel(w).await, Ok(CancelOutcome::Cancelled));
    assert_eq!(h.status(w).await, JobStatus::Error);
    assert_eq!(
        h.get(ww).await.error.unwrap().error_type,
        JobError::PREREQUISITE_FAILED
    );
    // The prerequisite finishing later doesn't revive it.
    h.store.start(pre).await.unwrap();
    h.claim(1).await;
    h.store
        .complete_one(Completion::finish(pre, 1, String::new()))
        .await
        .unwrap();
    assert_eq!(h.status(w).await, JobStatus::Error);
    assert!(h.claim(10).await.is_empty());

    // Delayed (Dispatched with not_before): leaves the delayed set
    let delayed = h.running().await.id;
    h.store
        .complete_one(Completion::retry_later(delayed, 1, h.clock.now(), None))
        .await
        .unwrap();
    assert_eq!(h.store.cancel(delayed).await, Ok(CancelOutcome::Cancelled));
    assert_eq!(h.store.promote_due(10).await.unwrap(), 0);
    assert!(h.claim(10).await.is_empty());

    // Started: flag only; the dispatcher fails it later
    let running = h.running().await;
    assert_eq!(
        h.store.cancel(running.id).await,
        Ok(CancelOutcome::Running {
            owner: OWNER.to_owned(),
            attempt: 1
        })
    );
    let job = h.get(running.id).await;
    assert_eq!(job.status, JobStatus::Started);
    assert!(job.cancel_requested);
    h.store
        .complete_one(Completion::fail(
            running.id,
            1,
            JobError::cancelled("stopped"),
        ))
        .await
        .unwrap();
    assert_eq!(
        h.store.cancel(running.id).await,
        Ok(CancelOutcome::AlreadyTerminal(JobStatus::Error))
    );
}

async fn logs_keep_order_and_respect_caps(h: Harness) {
    let id = h.create().await;
    assert_eq!(h.store.logs(id).await.unwrap(), Vec::<String>::new());
    let lines = |r: std::ops::Range<usize>| r.map(|i| format!("line {i}")).collect::<Vec<_>>();
    h.store.append_logs(id, &lines(0..3)).await.unwrap();
    assert_eq!(h.store.logs(id).await.unwrap(), lines(0..3));
    // The cap is 5 lines: the oldest go first.
    h.store.append_logs(id, &lines(3..7)).await.unwrap();
    assert_eq!(h.store.logs(id).await.unwrap(), lines(2..7));
    h.store.append_logs(id, &lines(7..20)).await.unwrap();
    assert_eq!(h.store.logs(id).await.unwrap(), lines(15..20));
    // Lines are cut at 16 bytes, on a char boundary.
    let other = h.create().await;
    let long = vec!["0123456789abcdefXYZ".to_owned(), "ééééééééé".to_owned()];
    h.store.append_logs(other, &long).await.unwrap();
    assert_eq!(
        h.store.logs(other).await.unwrap(),
        vec!["0123456789abcdef".to_owned(), "éééééééé".to_owned()]
    );
}

async fn delete_removes_everything(h: Harness) {
    let keep = h.create().await;
    let baseline = h.keys().await;

    // A queued job with logs and a waiting dependent.
    let queued = h.queued().await;
    h.store
        .append_logs(queued, &["a".to_owned()])
        .await
        .unwrap();
    let dependent = h.create_after(vec![queued]).await;
    h.store.start(dependent).await.unwrap();
    h.store.delete(queued).await.unwrap();
    assert_eq!(h.store.get(queued).await, Err(StoreError::NotFound(queued)));
    assert_eq!(
        h.store.logs(queued).await,
        Err(StoreError::NotFound(queued))
    );
    assert_eq!(
        h.store.delete(queued).await,
        Err(StoreError::NotFound(queued))
    );
    assert!(h.claim(10).await.is_empty(), "deleted job not claimable");
    let dep = h.get(dependent).await;
    assert_eq!(dep.status, JobStatus::Error);
    assert_eq!(dep.error.unwrap().error_type, JobError::PREREQUISITE_FAILED);
    h.store.delete(dependent).await.unwrap();

    // A running job: its later finish is NotFound, its lease is gone.
    let running = h.running().await.id;
    h.store.delete(running).await.unwrap();
    assert_eq!(
        h.store
            .complete_one(Completion::finish(running, 1, "late"))
            .await,
        Err(StoreError::NotFound(running))
    );
    h.clock.advance(Span::hours(1));
    assert!(h.store.reclaim_expired(10).await.unwrap().is_empty());

    // A delayed job.
    let delayed = h.running().await.id;
    h.store
        .complete_one(Completion::retry_later(delayed, 1, h.clock.now(), None))
        .await
        .unwrap();
    h.store.delete(delayed).await.unwrap();
    assert_eq!(h.store.promote_due(10).await.unwrap(), 0);

    assert_eq!(h.store.list_ids().await.unwrap(), vec![keep]);
    // Nothing of the deleted jobs is left (empty queues/sets vanish in Redis).
    assert_eq!(h.keys().await, baseline);
}

async fn clear_all_leaves_nothing(h: Harness) {
    // More than two clear batches, in every state.
    for _ in 0..1100 {
        h.create().await;
    }
    // Running and delayed first: `running()` claims the head of the queue.
    let running = h.running().await.id;
    h.store
        .append_logs(running, &["y".to_owned()])
        .await
        .unwrap();
    let delayed = h.running().await.id;
    h.store
        .complete_one(Completion::retry_later(
            delayed,
            1,
            h.clock.now() + Span::seconds(60),
            None,
        ))
        .await
        .unwrap();
    let q = h.queued().await;
    h.store.append_logs(q, &["x".to_owned()]).await.unwrap();
    let waiting = h.create_after(vec![q]).await;
    h.store.start(waiting).await.unwrap();
    assert!(!h.keys().await.is_empty() || !h.on_redis());

    h.store.clear_all().await.unwrap();
    assert!(h.store.list_ids().await.unwrap().is_empty());
    assert_eq!(h.store.get(q).await, Err(StoreError::NotFound(q)));
    assert!(h.claim(100).await.is_empty());
    h.clock.advance(Span::hours(1));
    assert_eq!(h.store.promote_due(100).await.unwrap(), 0);
    assert!(h.store.reclaim_expired(100).await.unwrap().is_empty());
    assert_eq!(h.keys().await, Vec::<String>::new());
    // Still usable afterwards.
    let id = h.queued().await;
    assert_eq!(h.store.list_ids().await.unwrap(), vec![id]);
}

async fn events_announce_changes(h: Harness) {
    let mut rx = h.store.subscribe();
    let id = h.create().await;
    h.store.start(id).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::JobChanged {
            id,
            status: JobStatus::Dispatched
        }
    );
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::WorkAvailable {
            script_type: ScriptType::Sal
        }
    );
    h.claim(1).await;
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::JobChanged {
            id,
            status: JobStatus::Started
        }
    );
    h.store
        .append_logs(id, &["hello".to_owned()])
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::LogAppended { id });
    let dependent = h.create_after(vec![id]).await;
    h.store.start(dependent).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::JobChanged {
            id: dependent,
            status: JobStatus::WaitingForPrerequisites
        }
    );
    h.store
        .complete_one(Completion::finish(id, 1, "done"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(next_event(&mut rx).await);
    }
    assert_eq!(
        rest,
        vec![
            StoreEvent::JobChanged {
                id,
                status: JobStatus::Finished
            },
            StoreEvent::JobChanged {
                id: dependent,
                status: JobStatus::Dispatched
            },
            StoreEvent::WorkAvailable {
                script_type: ScriptType::Sal
            },
        ]
    );
    // Rejected ops announce nothing.
    let _ = h
        .store
        .complete_one(Completion::finish(id, 1, "again"))
        .await;
    let claimed = h.claim(1).await;
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::JobChanged {
            id: claimed[0].id,
            status: JobStatus::Started
        }
    );
}

async fn complete_applies_each_item_on_its_own(h: Harness) {
    assert!(h.store.complete(&[]).await.is_empty());
    for _ in 0..3 {
        h.queued().await;
    }
    let claimed = h.claim(3).await;
    let [a, b, c] = [0, 1, 2].map(|i| claimed[i].id);
    let dependent = h.create_after(vec![a]).await;
    h.store.start(dependent).await.unwrap();
    let unknown = JobId::new();
    let mut rx = h.store.subscribe();
    let t_end = h.clock.advance(Span::seconds(1));
    let item = |id, attempt, output: &str| Completion::finish(id, attempt, output);
    let results = h
        .store
        .complete(&[
            item(a, 1, "A"),
            item(b, 2, "B"),
            item(unknown, 1, "?"),
            item(c, 1, "C"),
        ])
        .await;
    assert_eq!(
        results,
        vec![
            Ok(()),
            Err(StoreError::Conflict {
                id: b,
                expected: 2,
                current: 1
            }),
            Err(StoreError::NotFound(unknown)),
            Ok(()),
        ]
    );
    for (id, output) in [(a, "A"), (c, "C")] {
        let done = h.get(id).await;
        assert_eq!(done.status, JobStatus::Finished);
        assert_eq!(done.output.as_deref(), Some(output));
        assert_eq!(done.finished_at, Some(t_end));
        assert_eq!(done.lease_until, None);
    }
    let untouched = h.get(b).await;
    assert_eq!(untouched.status, JobStatus::Started);
    assert_eq!(untouched.output, None);
    assert_eq!(h.status(dependent).await, JobStatus::Dispatched);
    // Every change announced, nothing for the rejected items (order differs per store:
    // Redis announces a batch's statuses first, then the released dependents).
    let want = [
        StoreEvent::JobChanged {
            id: a,
            status: JobStatus::Finished,
        },
        StoreEvent::JobChanged {
            id: c,
            status: JobStatus::Finished,
        },
        StoreEvent::JobChanged {
            id: dependent,
            status: JobStatus::Dispatched,
        },
        StoreEvent::WorkAvailable {
            script_type: ScriptType::Sal,
        },
    ];
    // Redis delivers events through pub/sub: earlier ones (the dependent's start) may
    // still arrive after subscribing; read until every wanted one came.
    let mut events = Vec::new();
    while !want.iter().all(|e| events.contains(e)) {
        assert!(events.len() < 16, "missing some of {want:?} in {events:?}");
        events.push(next_event(&mut rx).await);
    }
    let rejected = StoreEvent::JobChanged {
        id: b,
        status: JobStatus::Finished,
    };
    assert!(!events.contains(&rejected), "{events:?}");
    // Only b's lease is left to expire.
    h.clock.advance(Span::hours(1));
    assert_eq!(h.store.reclaim_expired(10).await.unwrap(), vec![b]);
}

/// A claim returns the whole job as stored, also what earlier attempts left on it.
async fn claim_returns_the_stored_job(h: Harness) {
    let job = h.running().await;
    assert_eq!(job, h.get(job.id).await);
    let err = JobError::new("flaky", "try again");
    h.store
        .complete_one(Completion::retry_later(
            job.id,
            1,
            h.clock.now(),
            Some(err.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(h.store.promote_due(10).await.unwrap(), 1);
    h.clock.advance(Span::seconds(3));
    let again = h.claim(1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].error, Some(err));
    assert_eq!(again[0].not_before, None);
    assert_eq!(again[0], h.get(job.id).await);
}

/// `queued_at` is when a job last entered its ready queue (the runner's `enqueue_time`):
/// set by start, by the release of a waiting dependent, by promotion after a retry delay,
/// by a graceful release and by a lease reclaim; a claim leaves it. `traceparent` is
/// stored as given.
async fn queued_at_follows_every_way_into_the_queue(h: Harness) {
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut params = h.params(ScriptType::Sal, vec![]);
    params.traceparent = Some(trace.to_owned());
    let id = h.create_with(params).await.id;
    let job = h.get(id).await;
    assert_eq!(
        (job.queued_at, job.traceparent.as_deref()),
        (None, Some(trace))
    );

    let at = |h: &Harness| Some(h.clock.now());
    h.store.start(id).await.unwrap();
    let started = at(&h);
    assert_eq!(h.get(id).await.queued_at, started);
    h.clock.advance(Span::seconds(1));
    let claimed = h.claim(1).await.remove(0);
    assert_eq!(claimed.queued_at, started, "a claim keeps it");
    assert_eq!(claimed.traceparent.as_deref(), Some(trace));

    h.store
        .complete_one(Completion::retry_later(
            id,
            1,
            h.clock.now() + Span::seconds(2),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        h.get(id).await.queued_at,
        started,
        "delayed, not queued yet"
    );
    h.clock.advance(Span::seconds(3));
    assert_eq!(h.store.promote_due(10).await.unwrap(), 1);
    assert_eq!(h.get(id).await.queued_at, at(&h));

    assert_eq!(h.claim(1).await.len(), 1);
    h.clock.advance(Span::seconds(1));
    h.store
        .complete_one(Completion::release(id, 2))
        .await
        .unwrap();
    assert_eq!(h.get(id).await.queued_at, at(&h));

    assert_eq!(h.claim(1).await.len(), 1);
    h.clock.advance(Span::seconds(11)); // past LEASE
    assert_eq!(h.store.reclaim_expired(10).await.unwrap(), vec![id]);
    assert_eq!(h.get(id).await.queued_at, at(&h));
    let last = h.claim(1).await.remove(0);
    h.store
        .complete_one(Completion::finish(id, last.attempt, "ok"))
        .await
        .unwrap();

    let first = h.running().await;
    let waiting = h.create_after(vec![first.id]).await;
    h.store.start(waiting).await.unwrap();
    assert_eq!(h.get(waiting).await.queued_at, None);
    h.clock.advance(Span::seconds(1));
    h.store
        .complete_one(Completion::finish(first.id, 1, "ok"))
        .await
        .unwrap();
    assert_eq!(h.get(waiting).await.queued_at, at(&h));
}

/// Every line keeps its sequence number: `logs_from` past the cap (5 lines), past a
/// batch larger than the cap, with a limit, and after the job's keys are gone.
async fn log_lines_keep_their_sequence_numbers(h: Harness) {
    let id = h.create().await;
    let lines = |r: std::ops::Range<usize>| r.map(|i| format!("line {i}")).collect::<Vec<_>>();
    assert_eq!(h.store.logs_from(id, 0, 100).await.unwrap(), (0, vec![]));
    h.store.append_logs(id, &lines(0..3)).await.unwrap();
    assert_eq!(
        h.store.logs_from(id, 0, 100).await.unwrap(),
        (0, lines(0..3))
    );
    assert_eq!(
        h.store.logs_from(id, 2, 100).await.unwrap(),
        (2, lines(2..3))
    );
    assert_eq!(h.store.logs_from(id, 3, 100).await.unwrap(), (3, vec![]));
    // Past the cap: 0 and 1 are gone; asking for them starts at the oldest kept.
    h.store.append_logs(id, &lines(3..7)).await.unwrap();
    assert_eq!(
        h.store.logs_from(id, 0, 100).await.unwrap(),
        (2, lines(2..7))
    );
    assert_eq!(
        h.store.logs_from(id, 5, 100).await.unwrap(),
        (5, lines(5..7))
    );
    // A batch larger than the cap: only its newest 5 are kept, all are counted.
    h.store.append_logs(id, &lines(7..20)).await.unwrap();
    assert_eq!(
        h.store.logs_from(id, 6, 100).await.unwrap(),
        (15, lines(15..20))
    );
    assert_eq!(
        h.store.logs_from(id, 18, 100).await.unwrap(),
        (18, lines(18..20))
    );
    assert_eq!(h.store.logs_from(id, 99, 100).await.unwrap(), (99, vec![]));
    // A limit: the first `limit` lines from the cursor, numbered as ever.
    assert_eq!(
        h.store.logs_from(id, 16, 2).await.unwrap(),
        (16, lines(16..18))
    );
    assert_eq!(
        h.store.logs_from(id, 3, 2).await.unwrap(),
        (15, lines(15..17))
    );
    assert_eq!(
        h.store.logs_from(id, 19, 5).await.unwrap(),
        (19, lines(19..20))
    );
    h.store.delete(id).await.unwrap();
    assert!(matches!(
        h.store.logs_from(id, 0, 100).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Lanes: while (7, SAL) is open, only `claim_lane` takes context 7's SAL jobs, queued
/// before or after it opened (also when released back); other contexts (and "07", not
/// the canonical form, so of the default namespace) stay with the shared claim;
/// cancelling one takes it off its queue; closing hands the waiting ones to the shared
/// claim, in order.
async fn lanes_route_a_contexts_jobs_and_hand_them_back(h: Harness) {
    let in_context = |context: &str| {
        let mut p = h.params(ScriptType::Sal, vec![]);
        p.context_id = context.into();
        p
    };
    let queue = async |context: &str| {
        let id = h.create_with(in_context(context)).await.id;
        assert_eq!(h.store.start(id).await, Ok(JobStatus::Dispatched));
        id
    };
    let lane = async |max: usize| {
        decoded(
            h.store
                .claim_lane(7, ScriptType::Sal, max, OWNER, LEASE)
                .await
                .expect("claim_lane"),
        )
    };
    let before = queue("7").await;
    h.store.set_lane(7, ScriptType::Sal, true).await.unwrap();
    h.store.set_lane(7, ScriptType::Sal, true).await.unwrap();
    assert_eq!(h.store.lanes().await.unwrap(), vec![(7, ScriptType::Sal)]);
    let a = queue("7").await;
    let b = queue("8").await;
    let c = queue("07").await;
    // The shared claim: the other namespaces only.
    let shared = ids(h.claim(10).await);
    assert_eq!(shared.len(), 2, "{shared:?}");
    assert_eq!(
        shared.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([b, c])
    );
    assert_eq!(ids(lane(10).await), vec![before, a]);
    // Released back: to the head of its lane again, not to the shared claim.
    h.store
        .complete_one(Completion::release(a, 1))
        .await
        .unwrap();
    assert!(h.claim(10).await.is_empty());
    assert_eq!(ids(lane(10).await), vec![a]);
    // Cancelled while on the lane: off it.
    let cancelled = queue("7").await;
    h.store.cancel(cancelled).await.unwrap();
    assert!(lane(10).await.is_empty());
    // Closing: the waiting ones go to the shared claim, in order.
    let d = queue("7").await;
    let e = queue("7").await;
    let mut events = h.store.subscribe();
    h.store.set_lane(7, ScriptType::Sal, false).await.unwrap();
    // On a cluster, the events of the jobs queued just before may still be on their way
    // (published on another node): only job events may come first.
    let woken = loop {
        match next_event(&mut events).await {
            StoreEvent::JobChanged { .. } => continue,
            other => break other,
        }
    };
    assert_eq!(
        woken,
        StoreEvent::WorkAvailable {
            script_type: ScriptType::Sal
        },
        "closing a lane with waiting jobs wakes the shared claimers"
    );
    assert_eq!(h.store.lanes().await.unwrap(), vec![]);
    assert_eq!(ids(h.claim(10).await), vec![d, e]);
    // Closed: new jobs of the context go to the shared claim.
    let f = queue("7").await;
    assert_eq!(ids(h.claim(10).await), vec![f]);
    // Another type's lane does not catch SAL jobs.
    h.store.set_lane(7, ScriptType::Osis, true).await.unwrap();
    let g = queue("7").await;
    assert_eq!(ids(h.claim(10).await), vec![g]);
}

/// Jobs of numbered contexts live in their own namespaces: every store operation finds
/// them by id, a shared claim takes from every namespace, a listing merges them in
/// `(created_at, id)` order (exactly, page by page) or keeps to one context, and the
/// counts add them up.
async fn contexts_have_namespaces_that_listings_and_counts_merge(h: Harness) {
    let mut made = Vec::new();
    for (i, context) in ["3", "ctx", "4", "3", "x", "4", "3"].iter().enumerate() {
        let mut p = h.params(ScriptType::Sal, vec![]);
        p.context_id = (*context).into();
        let job = h.create_with(p).await;
        made.push((job.id, *context));
        assert_eq!(
            job.id.context(),
            context.parse::<u32>().ok(),
            "job {i} of context {context}"
        );
        // One millisecond apart, one pair in the same millisecond (ordered by id).
        if i != 2 {
            h.clock.advance(Span::milliseconds(1));
        }
    }
    let mut expected: Vec<(i64, JobId)> = Vec::new();
    for (id, _) in &made {
        expected.push((h.get(*id).await.created_at.timestamp_millis(), *id));
    }
    expected.sort();
    let expected: Vec<JobId> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(h.store.list_ids().await.unwrap(), expected);
    // Paged by 2 over every namespace: the same order, nothing twice or missed.
    let mut filter = JobFilter {
        limit: 2,
        ..JobFilter::default()
    };
    let mut paged = Vec::new();
    loop {
        let page = h.store.list(&filter, 1000).await.unwrap();
        assert!(page.jobs.len() <= 2);
        paged.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, expected);
    // One context: its namespace only.
    let page = h
        .store
        .list(
            &JobFilter {
                context_id: Some("3".into()),
                limit: 10,
                ..JobFilter::default()
            },
            1000,
        )
        .await
        .unwrap();
    let of_3: Vec<JobId> = expected
        .iter()
        .copied()
        .filter(|id| id.context() == Some(3))
        .collect();
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), of_3);
    // Every operation finds a job by its id, whatever its namespace.
    for &(id, _) in &made {
        assert_eq!(h.store.start(id).await, Ok(JobStatus::Dispatched));
    }
    let counts = h.store.counts().await.unwrap();
    let sal = |v: &[(ScriptType, u64)]| {
        v.iter()
            .find(|(t, _)| *t == ScriptType::Sal)
            .map(|(_, n)| *n)
    };
    assert_eq!(sal(&counts.queued), Some(7));
    assert_eq!(sal(&counts.by_script_type), Some(7));
    let claimed = ids(h.claim(100).await);
    assert_eq!(claimed.len(), 7);
    assert_eq!(
        claimed.iter().copied().collect::<HashSet<_>>(),
        made.iter().map(|(id, _)| *id).collect::<HashSet<_>>()
    );
    h.store
        .append_logs(made[0].0, &["one".into()])
        .await
        .unwrap();
    assert_eq!(h.store.logs(made[0].0).await.unwrap(), vec!["one"]);
    let items: Vec<Completion> = claimed
        .iter()
        .map(|&id| Completion::finish(id, 1, "done"))
        .collect();
    assert!(h.store.complete(&items).await.iter().all(Result::is_ok));
    for &(id, _) in &made {
        assert_eq!(h.status(id).await, JobStatus::Finished);
    }
    let counts = h.store.counts().await.unwrap();
    let finished = counts
        .by_status
        .iter()
        .find(|(s, _)| *s == JobStatus::Finished)
        .map(|(_, n)| *n);
    assert_eq!(finished, Some(7));
    h.store.delete(made[0].0).await.unwrap();
    assert!(matches!(
        h.store.get(made[0].0).await,
        Err(StoreError::NotFound(_))
    ));
    h.store.clear_all().await.unwrap();
    assert!(h.store.list_ids().await.unwrap().is_empty());
    let counts = h.store.counts().await.unwrap();
    assert!(counts.by_status.iter().all(|(_, n)| *n == 0), "{counts:?}");
}

/// A flood of ready jobs in one context does not starve the others: successive shared
/// claims start at the next namespace in turn.
async fn a_flooded_context_does_not_starve_the_others(h: Harness) {
    let queue = async |context: &str| {
        let mut p = h.params(ScriptType::Sal, vec![]);
        p.context_id = context.into();
        let id = h.create_with(p).await.id;
        h.store.start(id).await.unwrap();
        id
    };
    for _ in 0..50 {
        queue("3").await;
    }
    let quiet = [queue("4").await, queue("ctx").await];
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(h.claim(1).await.into_iter().map(|j| j.id));
    }
    for id in quiet {
        assert!(seen.contains(&id), "{id} waited behind the flood: {seen:?}");
    }
}

/// A job may wait only on jobs of its own namespace, so every script touches one
/// context's keys; the store's own check names a prerequisite it cannot find there.
async fn prerequisites_in_another_namespace_are_not_found(h: Harness) {
    let mut p = h.params(ScriptType::Sal, vec![]);
    p.context_id = "5".into();
    let other = h.create_with(p).await.id;
    let mut p = h.params(ScriptType::Sal, vec![other]);
    p.context_id = "6".into();
    let job = Job::new(JobId::for_context_id("6"), p, h.clock.now());
    assert_eq!(
        h.store.create(&job).await,
        Err(StoreError::PrerequisiteNotFound(other))
    );
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::memory("ctx").await).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::redis("ctx").await).await;
                }
            )*
        }
        /// The same tests with every job in context 42's namespace.
        mod memory_store_in_a_context {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::memory("42").await).await;
                }
            )*
        }
        mod redis_store_in_a_context {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::redis("42").await).await;
                }
            )*
        }
        /// On the shared Redis Cluster (cluster mode: every key hash-tagged).
        mod cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::cluster("ctx").await).await;
                }
            )*
        }
        mod cluster_store_in_a_context {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::cluster("42").await).await;
                }
            )*
        }
    };
}

conformance!(
    create_many_is_all_or_nothing,
    create_started_creates_and_starts_in_one_call,
    lanes_route_a_contexts_jobs_and_hand_them_back,
    contexts_have_namespaces_that_listings_and_counts_merge,
    a_flooded_context_does_not_starve_the_others,
    prerequisites_in_another_namespace_are_not_found,
    log_lines_keep_their_sequence_numbers,
    queued_at_follows_every_way_into_the_queue,
    create_then_get_round_trips,
    list_ids_oldest_first,
    create_with_missing_prerequisite_fails,
    happy_path_created_to_finished,
    fail_ends_in_error_with_typed_error,
    illegal_transitions_are_rejected_and_change_nothing,
    claim_is_fifo_per_script_type,
    racing_claimers_never_share_a_job,
    expired_lease_is_reclaimed_exactly_once,
    last_attempt_lost_ends_in_runner_lost,
    renew_extends_only_held_leases,
    late_finish_of_an_old_attempt_is_rejected,
    delayed_jobs_promote_on_time,
    promote_due_respects_max,
    dependents_released_when_all_prerequisites_finish,
    dependents_fail_transitively,
    start_with_failed_prerequisite_fails_at_once,
    release_requeues_at_front_without_counting,
    cancel_each_state,
    logs_keep_order_and_respect_caps,
    delete_removes_everything,
    clear_all_leaves_nothing,
    events_announce_changes,
    complete_applies_each_item_on_its_own,
    one_batch_records_every_kind_of_outcome,
    claim_returns_the_stored_job,
    retention_removes_ended_jobs_past_their_age,
    retention_keeps_the_newest_per_status,
    retention_keeps_a_prerequisite_while_it_is_needed,
    retention_works_in_bounded_batches,
    retention_leaves_nothing_behind,
    list_pages_through_every_job_once,
    list_filters_match_a_plain_scan,
    list_by_status_while_jobs_change_status,
    counts_follow_every_change,
    list_resumes_after_a_cursor_whose_job_left,
);

/// The next page starts right after the cursor even when the cursor's job has left the
/// index (started, so no longer `Created`; or deleted), also among jobs created in the
/// same millisecond.
async fn list_resumes_after_a_cursor_whose_job_left(h: Harness) {
    let mut jobs = Vec::new();
    for i in 0..30 {
        if i % 3 == 0 {
            h.clock.advance(Span::milliseconds(1));
        }
        jobs.push(h.create_with(h.params(ScriptType::Python, vec![])).await);
    }
    jobs.sort_by_key(|j| (j.created_at, j.id));
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let filter = |after: Option<ListCursor>, status: Option<JobStatus>, limit| JobFilter {
        status,
        after,
        limit,
        ..JobFilter::default()
    };
    // Each cursor is the middle one of three jobs created in the same millisecond, so
    // the next page must count the one before it (same time, smaller id) as passed.
    for (cut, status) in [(5, Some(JobStatus::Created)), (14, None)] {
        let first = h.store.list(&filter(None, status, cut), 100).await.unwrap();
        let got: Vec<JobId> = first.jobs.iter().map(|s| s.id).collect();
        let cursor = first.next.expect("a cursor");
        assert_eq!(cursor.id, ids[cut - 1]);
        match status {
            Some(_) => {
                assert_eq!(got, ids[..cut]);
                // The cursor's job leaves the Created index.
                h.store.start(ids[cut - 1]).await.unwrap();
            }
            None => {
                // ids[4] was started above: still listed without a status filter.
                assert_eq!(got, ids[..cut]);
                h.store.delete(ids[cut - 1]).await.unwrap();
            }
        }
        let next = h
            .store
            .list(&filter(Some(cursor), status, 4), 100)
            .await
            .unwrap();
        let got: Vec<JobId> = next.jobs.iter().map(|s| s.id).collect();
        assert_eq!(got, ids[cut..cut + 4], "status {status:?}");
    }
}

async fn counts_follow_every_change(h: Harness) {
    let count = |c: &hero_supervisor::store::JobCounts, s: JobStatus| {
        c.by_status.iter().find(|(x, _)| *x == s).map(|(_, n)| *n)
    };
    let typed =
        |v: &[(ScriptType, u64)], t: ScriptType| v.iter().find(|(x, _)| *x == t).map(|(_, n)| *n);
    let c = h.store.counts().await.unwrap();
    assert_eq!(c.by_status.len(), 6);
    assert!(c.by_status.iter().all(|(_, n)| *n == 0));
    let created = h.create().await;
    let python = h.create_with(h.params(ScriptType::Python, vec![])).await.id;
    h.store.start(python).await.unwrap();
    let running = h.running().await;
    let finished = h.ended(2, false).await;
    let failed = h.ended(1, true).await[0];
    let delayed = h.running().await;
    h.store
        .complete_one(Completion::retry_later(
            delayed.id,
            delayed.attempt,
            h.clock.now() + Span::seconds(60),
            None,
        ))
        .await
        .unwrap();
    let c = h.store.counts().await.unwrap();
    assert_eq!(count(&c, JobStatus::Created), Some(1));
    assert_eq!(count(&c, JobStatus::Dispatched), Some(2));
    assert_eq!(count(&c, JobStatus::Started), Some(1));
    assert_eq!(count(&c, JobStatus::Finished), Some(2));
    assert_eq!(count(&c, JobStatus::Error), Some(1));
    assert_eq!(typed(&c.by_script_type, ScriptType::Sal), Some(6));
    assert_eq!(typed(&c.by_script_type, ScriptType::Python), Some(1));
    assert_eq!(typed(&c.queued, ScriptType::Python), Some(1));
    assert_eq!(typed(&c.queued, ScriptType::Sal), Some(0));
    assert_eq!(c.delayed, 1);

    h.store.delete(created).await.unwrap();
    h.store.delete(finished[0]).await.unwrap();
    h.clock.advance(KEEP);
    assert_eq!(h.store.trim_finished(500).await.unwrap().removed, 2);
    let c = h.store.counts().await.unwrap();
    assert_eq!(count(&c, JobStatus::Created), Some(0));
    assert_eq!(count(&c, JobStatus::Finished), Some(0));
    assert_eq!(count(&c, JobStatus::Error), Some(0));
    assert_eq!(typed(&c.by_script_type, ScriptType::Sal), Some(2));
    assert!(h.gone(failed).await);
    let _ = running;
}

/// Every page of `filter` from the start; panics on a page that does not advance.
async fn all_pages(h: &Harness, filter: &JobFilter, budget: usize) -> (Vec<JobSummary>, usize) {
    let mut filter = filter.clone();
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.store.list(&filter, budget).await.expect("list");
        pages += 1;
        assert!(
            page.jobs.len() <= filter.limit,
            "a page holds at most limit jobs"
        );
        out.extend(page.jobs);
        match page.next {
            Some(next) => {
                assert!(filter.after < Some(next), "the cursor moves forward");
                let text = next.encode();
                assert_eq!(ListCursor::decode(&text), Ok(next));
                filter.after = Some(next);
            }
            None => return (out, pages),
        }
        assert!(pages < 10_000, "paging never ends");
    }
}

/// A few thousand jobs of mixed types, contexts and callers, some created in the same
/// millisecond (ties sort by id).
async fn mixed_jobs(h: &Harness, n: usize) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        if i % 3 == 0 {
            h.clock.advance(Span::milliseconds(1));
        }
        let script_type = if i % 4 == 0 {
            ScriptType::Python
        } else {
            ScriptType::Sal
        };
        let params = JobParams {
            context_id: format!("ctx-{}", i % 3),
            caller_id: format!("caller-{}", i % 5),
            ..h.params(script_type, vec![])
        };
        jobs.push(h.create_with(params).await);
    }
    jobs.sort_by_key(|j| (j.created_at, j.id));
    jobs
}

async fn list_pages_through_every_job_once(h: Harness) {
    let jobs = mixed_jobs(&h, 2000).await;
    let want: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    for (limit, budget) in [(97, 5000), (1000, 5000), (50, 30)] {
        let filter = JobFilter {
            limit,
            ..JobFilter::default()
        };
        let (got, pages) = all_pages(&h, &filter, budget).await;
        let ids: Vec<JobId> = got.iter().map(|s| s.id).collect();
        assert_eq!(
            ids, want,
            "limit {limit}, budget {budget}: every job once, in order"
        );
        assert!(pages >= 2000 / limit.min(budget));
    }
    let first = &h
        .store
        .list(
            &JobFilter {
                limit: 1,
                ..JobFilter::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(first.jobs, vec![JobSummary::from(&h.get(want[0]).await)]);
    assert_eq!(
        ListCursor::decode("c1zz"),
        Err(hero_supervisor::store::BadCursor("c1zz".to_owned()))
    );
    assert!(ListCursor::decode("").is_err());
    assert!(ListCursor::decode(&format!("c1ffg{}", "z".repeat(32))).is_err());
}

async fn list_filters_match_a_plain_scan(h: Harness) {
    let jobs = mixed_jobs(&h, 1500).await;
    // Some of them queued, some of those ended.
    for j in jobs.iter().step_by(7) {
        h.store.start(j.id).await.unwrap();
    }
    let claimed = h.claim(60).await;
    for (i, j) in claimed.iter().enumerate() {
        let item = if i % 2 == 0 {
            Completion::finish(j.id, j.attempt, "ok")
        } else {
            Completion::fail(j.id, j.attempt, JobError::timeout("t"))
        };
        h.store.complete_one(item).await.unwrap();
    }
    let mut now = Vec::new();
    for j in &jobs {
        now.push(h.get(j.id).await);
    }
    let mid = jobs[500].created_at;
    let late = jobs[1200].created_at;
    let filters = [
        JobFilter {
            status: Some(JobStatus::Finished),
            ..JobFilter::default()
        },
        JobFilter {
            status: Some(JobStatus::Created),
            ..JobFilter::default()
        },
        JobFilter {
            status: Some(JobStatus::Dispatched),
            script_type: Some(ScriptType::Python),
            ..JobFilter::default()
        },
        JobFilter {
            script_type: Some(ScriptType::Python),
            context_id: Some("ctx-1".into()),
            ..JobFilter::default()
        },
        JobFilter {
            caller_id: Some("caller-3".into()),
            created_after: Some(mid),
            ..JobFilter::default()
        },
        JobFilter {
            created_after: Some(mid),
            created_before: Some(late),
            ..JobFilter::default()
        },
        JobFilter {
            status: Some(JobStatus::Error),
            caller_id: Some("caller-2".into()),
            ..JobFilter::default()
        },
        JobFilter {
            context_id: Some("nowhere".into()),
            ..JobFilter::default()
        },
    ];
    for f in filters {
        let want: Vec<JobId> = now
            .iter()
            .filter(|j| f.status.is_none_or(|s| s == j.status))
            .filter(|j| f.script_type.is_none_or(|t| t == j.script_type))
            .filter(|j| f.context_id.as_ref().is_none_or(|c| *c == j.context_id))
            .filter(|j| f.caller_id.as_ref().is_none_or(|c| *c == j.caller_id))
            .filter(|j| f.created_after.is_none_or(|t| j.created_at > t))
            .filter(|j| f.created_before.is_none_or(|t| j.created_at < t))
            .map(|j| j.id)
            .collect();
        let filter = JobFilter {
            limit: 64,
            ..f.clone()
        };
        let (got, _) = all_pages(&h, &filter, 400).await;
        let got: Vec<JobId> = got.iter().map(|s| s.id).collect();
        assert_eq!(got, want, "{f:?}");
    }
    let finished = JobFilter {
        status: Some(JobStatus::Finished),
        limit: 1000,
        ..JobFilter::default()
    };
    let (got, _) = all_pages(&h, &finished, 1000).await;
    assert_eq!(got.len(), 30);
    for s in got {
        assert_eq!(s, JobSummary::from(&h.get(s.id).await));
        assert!(s.finished_at.is_some());
    }
}

/// Paging a status while jobs leave and enter it: every job that has the status
/// throughout is listed exactly once, no job twice.
async fn list_by_status_while_jobs_change_status(h: Harness) {
    let jobs = mixed_jobs(&h, 2000).await;
    for j in &jobs {
        assert_eq!(h.store.start(j.id).await, Ok(JobStatus::Dispatched));
    }
    let mut filter = JobFilter {
        status: Some(JobStatus::Dispatched),
        limit: 100,
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    let mut left = HashSet::new();
    loop {
        let page = h.store.list(&filter, 1000).await.unwrap();
        seen.extend(page.jobs.iter().map(|s| s.id));
        for s in &page.jobs {
            assert_eq!(s.status, JobStatus::Dispatched);
        }
        // Between pages, jobs leave the status (claimed and ended, from the head of the
        // queues, some not listed yet) and a new one enters it (created later).
        for t in [ScriptType::Sal, ScriptType::Python] {
            let claimed = h.store.claim(t, 40, OWNER, LEASE).await.unwrap();
            let items: Vec<Completion> = decoded(claimed)
                .into_iter()
                .map(|j| {
                    left.insert(j.id);
                    Completion::finish(j.id, j.attempt, "ok")
                })
                .collect();
            for r in h.store.complete(&items).await {
                r.unwrap();
            }
        }
        h.clock.advance(Span::milliseconds(1));
        let late = h.queued().await;
        let _ = late;
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    let unique: HashSet<JobId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no job listed twice");
    for j in &jobs {
        if !left.contains(&j.id) {
            assert!(
                unique.contains(&j.id),
                "a job that stayed Dispatched was skipped"
            );
        }
    }
    assert!(left.len() > 500, "jobs did change status meanwhile");
}

/// Ended jobs go one retention age after they ended, with their logs; young ones and
/// jobs that have not ended stay.
async fn retention_removes_ended_jobs_past_their_age(h: Harness) {
    let created = h.create().await;
    let running = h.running().await.id;
    // On a queue of its own: `ended` claims the SAL queue.
    let queued = h.create_with(h.params(ScriptType::Python, vec![])).await.id;
    h.store.start(queued).await.unwrap();
    let finished = h.ended(1, false).await[0];
    let failed = h.ended(1, true).await[0];
    let cancelled = h.queued().await;
    assert_eq!(
        h.store.cancel(cancelled).await,
        Ok(CancelOutcome::Cancelled)
    );
    h.store
        .append_logs(finished, &["line".to_owned()])
        .await
        .unwrap();
    assert_eq!(h.store.trim_finished(500).await, Ok(Trimmed::default()));

    h.clock.advance(Span::minutes(30));
    let young = h.ended(1, false).await[0];
    h.clock.advance(Span::minutes(29));
    assert_eq!(
        h.store.trim_finished(500).await.unwrap().removed,
        0,
        "59 minutes is younger than the hour"
    );
    h.clock.advance(Span::minutes(1));
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!(t.removed, 3, "{t:?}");
    assert!(!t.more);
    for id in [finished, failed, cancelled] {
        assert!(h.gone(id).await, "{id} removed");
    }
    assert_eq!(
        h.store.logs(finished).await,
        Err(StoreError::NotFound(finished))
    );
    let ids = |v: Vec<JobId>| v.into_iter().collect::<HashSet<_>>();
    assert_eq!(
        ids(h.store.list_ids().await.unwrap()),
        ids(vec![created, queued, running, young])
    );
    assert_eq!(h.status(young).await, JobStatus::Finished);
    assert_eq!(h.status(running).await, JobStatus::Started);

    h.clock.advance(Span::minutes(30));
    assert_eq!(h.store.trim_finished(500).await.unwrap().removed, 1);
    assert!(h.gone(young).await);
    h.clock.advance(Span::days(30));
    assert_eq!(h.store.trim_finished(500).await.unwrap().removed, 0);
    assert_eq!(
        ids(h.store.list_ids().await.unwrap()),
        ids(vec![created, queued, running]),
        "jobs that have not ended are never removed"
    );
}

/// Beyond KEEP_COUNT per terminal status, the earliest ended go whatever their age;
/// each status counts on its own.
async fn retention_keeps_the_newest_per_status(h: Harness) {
    let mut finished = Vec::new();
    for _ in 0..KEEP_COUNT + 5 {
        h.clock.advance(Span::seconds(1));
        finished.extend(h.ended(1, false).await);
    }
    let mut failed = Vec::new();
    for _ in 0..KEEP_COUNT {
        h.clock.advance(Span::seconds(1));
        failed.extend(h.ended(1, true).await);
    }
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!(t.removed, 5, "{t:?}");
    for &id in &finished[..5] {
        assert!(h.gone(id).await, "the earliest finished go");
    }
    for &id in finished[5..].iter().chain(&failed) {
        assert!(
            !h.gone(id).await,
            "the newest {KEEP_COUNT} of each status stay"
        );
    }
    // One more failure pushes out exactly the earliest failed one.
    h.clock.advance(Span::seconds(1));
    h.ended(1, true).await;
    assert_eq!(h.store.trim_finished(500).await.unwrap().removed, 1);
    assert!(h.gone(failed[0]).await);
    for &id in &failed[1..] {
        assert!(!h.gone(id).await);
    }
}

/// A prerequisite of a job that has not ended (waiting or only created) is kept past
/// retention, and the waiting job still runs once its last prerequisite finishes; it
/// goes once nothing needs it.
async fn retention_keeps_a_prerequisite_while_it_is_needed(h: Harness) {
    let done = h.ended(1, false).await[0];
    let for_created = h.ended(1, false).await[0];
    let slow = h.running().await;
    let waiting = h.create_after(vec![done, slow.id]).await;
    assert_eq!(
        h.store.start(waiting).await,
        Ok(JobStatus::WaitingForPrerequisites)
    );
    let created = h.create_after(vec![for_created]).await;

    h.clock.advance(KEEP + Span::minutes(1));
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!((t.removed, t.kept_needed), (0, 2), "{t:?}");
    assert_eq!(h.status(done).await, JobStatus::Finished);
    assert_eq!(h.status(for_created).await, JobStatus::Finished);

    // The last prerequisite finishes: the waiting job is released, as if nothing had
    // happened to `done`.
    h.store
        .complete_one(Completion::finish(slow.id, slow.attempt, "ok"))
        .await
        .unwrap();
    assert_eq!(h.status(waiting).await, JobStatus::Dispatched);
    assert_eq!(h.store.start(created).await, Ok(JobStatus::Dispatched));
    let both = h.claim(10).await;
    assert_eq!(both.len(), 2);
    for j in both {
        h.store
            .complete_one(Completion::finish(j.id, j.attempt, "ok"))
            .await
            .unwrap();
    }

    // Kept ones are looked at again one age after they were found needed.
    h.clock.advance(KEEP - Span::minutes(1));
    assert_eq!(h.store.trim_finished(500).await.unwrap().removed, 0);
    h.clock.advance(Span::minutes(2));
    let t = h.trim_all(500).await;
    assert_eq!((t.removed, t.kept_needed), (5, 0), "{t:?}");
    assert!(h.store.list_ids().await.unwrap().is_empty());
}

/// One call looks at no more than `max` jobs per status and says whether there is more.
async fn retention_works_in_bounded_batches(h: Harness) {
    let finished = h.ended(1100, false).await;
    let failed = h.ended(30, true).await;
    h.clock.advance(KEEP);
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!((t.removed, t.more), (530, true), "{t:?}");
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!((t.removed, t.more), (500, true), "{t:?}");
    let t = h.store.trim_finished(500).await.unwrap();
    assert_eq!((t.removed, t.more), (100, false), "{t:?}");
    assert_eq!(h.store.trim_finished(500).await, Ok(Trimmed::default()));
    for id in finished.iter().chain(&failed) {
        assert!(h.gone(*id).await);
    }
    assert!(h.store.list_ids().await.unwrap().is_empty());
}

/// Every key of a removed job goes: hash, logs, dependents and required_by sets, index,
/// retention and lease entries (Redis: the key set equals the one before the jobs).
async fn retention_leaves_nothing_behind(h: Harness) {
    let keep = h.create().await;
    let baseline = h.keys().await;

    // A finished prerequisite with logs, a dependent that failed with its own dependent
    // failing transitively, a job reclaimed after its lease expired on its last attempt.
    let first = h.running().await;
    h.store
        .append_logs(first.id, &["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    let second = h.create_after(vec![first.id]).await;
    h.store.start(second).await.unwrap();
    let third = h.create_after(vec![second]).await;
    h.store.start(third).await.unwrap();
    h.store
        .complete_one(Completion::finish(first.id, first.attempt, "ok"))
        .await
        .unwrap();
    let mut second_job = h.claim(1).await;
    let second_job = second_job.remove(0);
    assert_eq!(second_job.id, second);
    h.store
        .append_logs(second, &["c".to_owned()])
        .await
        .unwrap();
    h.store
        .complete_one(Completion::fail(
            second,
            second_job.attempt,
            JobError::timeout("t"),
        ))
        .await
        .unwrap();
    assert_eq!(h.status(third).await, JobStatus::Error);
    let lost = h
        .create_with(JobParams {
            retries: Some(0),
            ..h.params(ScriptType::Sal, vec![])
        })
        .await
        .id;
    h.store.start(lost).await.unwrap();
    assert_eq!(h.claim(1).await.len(), 1);
    h.clock.advance(Span::seconds(11));
    assert_eq!(h.store.reclaim_expired(10).await.unwrap(), vec![lost]);
    assert_eq!(h.status(lost).await, JobStatus::Error);
    if h.on_redis() {
        assert!(h.keys().await.len() > baseline.len());
    }

    h.clock.advance(KEEP);
    let t = h.trim_all(500).await;
    assert_eq!(t.removed, 4, "{t:?}");
    assert_eq!(h.store.list_ids().await.unwrap(), vec![keep]);
    assert_eq!(h.keys().await, baseline);
    assert_eq!(h.store.start(keep).await, Ok(JobStatus::Dispatched));
    assert_eq!(h.claim(10).await.len(), 1, "the kept job still runs");
}

/// The claimed jobs; every job these tests store decodes.
fn ids(jobs: Vec<Job>) -> Vec<JobId> {
    jobs.into_iter().map(|j| j.id).collect()
}

fn decoded(claimed: Vec<ClaimedJob>) -> Vec<Job> {
    claimed
        .into_iter()
        .map(|c| c.into_job().expect("a decodable job"))
        .collect()
}

/// Every outcome in one `complete` call: each item gets its own transition, the leases
/// of all of them go, and a failed job's dependents fail with it.
async fn one_batch_records_every_kind_of_outcome(h: Harness) {
    for _ in 0..4 {
        h.queued().await;
    }
    let claimed = h.claim(4).await;
    let [done, failed, later, released] = [0, 1, 2, 3].map(|i| claimed[i].id);
    let dependent = h.create_after(vec![failed]).await;
    h.store.start(dependent).await.unwrap();
    let now = h.clock.advance(Span::seconds(1));
    let not_before = now + Span::seconds(30);
    let err = JobError::new("script_error", "boom");
    let results = h
        .store
        .complete(&[
            Completion::finish(done, 1, "out"),
            Completion::fail(failed, 1, err.clone()),
            Completion::retry_later(later, 1, not_before, Some(JobError::timeout("slow"))),
            Completion::release(released, 1),
        ])
        .await;
    assert_eq!(results, vec![Ok(()); 4]);

    let job = h.get(done).await;
    assert_eq!(
        (job.status, job.output.as_deref()),
        (JobStatus::Finished, Some("out"))
    );
    let job = h.get(failed).await;
    assert_eq!((job.status, job.error), (JobStatus::Error, Some(err)));
    assert_eq!(job.finished_at, Some(now));
    let job = h.get(dependent).await;
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error.unwrap().error_type, JobError::PREREQUISITE_FAILED);
    let job = h.get(later).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Dispatched, 1));
    assert_eq!(job.not_before, Some(not_before));
    assert_eq!(job.error, Some(JobError::timeout("slow")));
    let job = h.get(released).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Dispatched, 0),
        "not counted"
    );
    for id in [done, failed, later, released] {
        let job = h.get(id).await;
        assert_eq!((job.lease_owner, job.lease_until), (None, None), "{id}");
    }
    // Only the released job is ready now; the retried one waits for its time.
    let ready: Vec<JobId> = h.claim(10).await.iter().map(|j| j.id).collect();
    assert_eq!(ready, vec![released]);
    // A second write for the same attempts changes nothing.
    let again = h
        .store
        .complete_one(Completion::finish(done, 1, "again"))
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::InvalidTransition { op: "finish", .. })
        ),
        "{again:?}"
    );
}

/// Cluster mode keeps the ready sets beside the scripts; a context whose entry was lost
/// (a process that died between a script and its `SADD`) is entered again by
/// retention's check, and its job is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ready_sets_are_repaired_by_retention() {
    let h = cluster("42").await;
    let prefix = h.cluster.clone().unwrap();
    let id = h.queued().await;
    let client = redis::cluster::ClusterClient::new(RedisCluster::shared().urls()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let removed: usize = redis::cmd("DEL")
        .arg(format!("{prefix}:{{s}}:ready:SAL"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the context was in the ready set");
    assert!(
        h.claim(10).await.is_empty(),
        "out of the set, out of the claims"
    );
    h.store.trim_finished(10).await.unwrap();
    assert_eq!(ids(h.claim(10).await), vec![id], "found again by retention");
}
