//! Redis-only behaviour of `RedisStore`: surviving a server restart under a live store,
//! the on-disk shape seen by `redis-cli`, and error messages that don't leak secrets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hero_supervisor::clock::{Clock, ManualClock};
use hero_supervisor::job::{Job, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::store::{
    ClaimedJob, Completion, JobStore, RedisStore, StoreConfig, StoreError, StoreEvent,
};
use hero_testkit::{RedisServer, SilentProxy};
use tokio::sync::broadcast;

/// Bound on how long the store may take to notice Redis is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(15);

fn params() -> JobParams {
    JobParams {
        traceparent: None,
        script: "print(\"hi\")".into(),
        script_type: ScriptType::Sal,
        caller_id: "alice".into(),
        context_id: "ctx-1".into(),
        timeout: Some(60),
        prerequisites: vec![],
        retries: Some(1),
        env_vars: [("GREETING".to_owned(), "hello world".to_owned())].into(),
    }
}

async fn connect(server: &RedisServer) -> (RedisStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let store = RedisStore::connect(&server.url(), StoreConfig::default(), clock.clone())
        .await
        .expect("connect");
    (store, clock)
}

fn new_job(clock: &ManualClock) -> Job {
    Job::new(JobId::new(), params(), clock.now())
}

/// `n` new jobs, created and started: queued on SAL.
async fn queued(store: &RedisStore, clock: &ManualClock, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let job = new_job(clock);
        store.create(&job).await.unwrap();
        store.start(job.id).await.unwrap();
        ids.push(job.id);
    }
    ids
}

/// A plain connection to `server`, to look at or spoil what the store wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Sets one field of job `id`'s hash by hand.
async fn spoil(conn: &mut redis::aio::MultiplexedConnection, id: JobId, field: &str, value: &str) {
    let _: () = redis::cmd("HSET")
        .arg(format!("hero:job:{id}"))
        .arg(field)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

/// Waits for the `JobChanged` event of `id`, skipping others, up to `within`.
async fn saw_change(rx: &mut broadcast::Receiver<StoreEvent>, id: JobId, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(StoreEvent::JobChanged { id: got, .. })) if got == id => return true,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let mut rx = store.subscribe();
    let before = new_job(&clock);
    store.create(&before).await.unwrap();
    store.start(before.id).await.unwrap();
    assert!(saw_change(&mut rx, before.id, Duration::from_secs(5)).await);

    server.stop();
    let t = Instant::now();
    for _ in 0..3 {
        match store.get(before.id).await {
            Err(StoreError::Unavailable(msg)) => assert!(msg.starts_with("redis"), "{msg}"),
            other => panic!("expected Unavailable during the outage, got {other:?}"),
        }
    }
    let during = new_job(&clock);
    assert!(matches!(
        store.create(&during).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .claim(ScriptType::Sal, 1, "sup", Duration::from_secs(5))
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "errors must come fast, took {:?}",
        t.elapsed()
    );

    server.restart();
    // The same store object works again once it has reconnected (bounded wait).
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    let after = new_job(&clock);
    loop {
        match store.create(&after).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    }
    // Without AOF the old data is gone; the new job is intact.
    assert_eq!(
        store.get(before.id).await,
        Err(StoreError::NotFound(before.id))
    );
    assert_eq!(store.get(after.id).await.unwrap(), after);

    // The event listener resubscribes: a fresh change is announced again.
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let probe = new_job(&clock);
        store.create(&probe).await.unwrap();
        store.start(probe.id).await.unwrap();
        if saw_change(&mut rx, probe.id, Duration::from_millis(500)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event listener did not resume after the restart"
        );
    }
    let claimed = store
        .claim(ScriptType::Sal, 10, "sup", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!claimed.is_empty());
}

/// A pub/sub connection that goes silent (no FIN, no RST: a forgetful NAT) is noticed by
/// its unanswered ping and replaced; waiters hear `Resync`, then events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_listener_replaces_a_silent_connection() {
    let server = RedisServer::start();
    let proxy = SilentProxy::start(server.socket_path());
    let clock = Arc::new(ManualClock::default());
    let listening = RedisStore::connect(&proxy.url(), StoreConfig::default(), clock.clone())
        .await
        .expect("connect through the proxy");
    // Changes are made over a direct connection, which stays healthy.
    let (direct, _) = connect(&server).await;
    let mut rx = listening.subscribe();
    let first = new_job(&clock);
    direct.create(&first).await.unwrap();
    direct.start(first.id).await.unwrap();
    assert!(saw_change(&mut rx, first.id, Duration::from_secs(5)).await);

    proxy.silence_existing();
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    let mut resynced = false;
    loop {
        let probe = new_job(&clock);
        direct.create(&probe).await.unwrap();
        direct.start(probe.id).await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut seen = false;
        while let Ok(event) = tokio::time::timeout_at(until, rx.recv()).await {
            match event {
                Ok(StoreEvent::Resync) => resynced = true,
                Ok(StoreEvent::JobChanged { id, .. }) if id == probe.id => seen = true,
                _ => {}
            }
        }
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events never came back after the connection went silent"
        );
    }
    assert!(
        resynced,
        "waiters must be told that events may have been lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_with_aof() {
    let mut server = RedisServer::builder().aof(true).start();
    let (store, clock) = connect(&server).await;
    let job = new_job(&clock);
    store.create(&job).await.unwrap();
    server.restart();
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        match store.get(job.id).await {
            Ok(got) => {
                assert_eq!(got, job);
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("job not readable after restart: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_job_is_readable_with_redis_cli() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let job = new_job(&clock);
    store.create(&job).await.unwrap();
    assert_eq!(store.start(job.id).await, Ok(JobStatus::Dispatched));

    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(server.socket_path())
        .arg("HGETALL")
        .arg(format!("hero:job:{}", job.id))
        .output()
        .expect("run redis-cli (install it: apt-get install redis-tools)");
    assert!(out.status.success(), "redis-cli failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "field/value pairs: {text}");
    let fields: HashMap<&str, &str> = lines.chunks(2).map(|pair| (pair[0], pair[1])).collect();
    let id = job.id.to_string();
    let created = job.created_at.timestamp_millis().to_string();
    for (field, want) in [
        ("id", id.as_str()),
        ("status", "Dispatched"),
        ("script", "print(\"hi\")"),
        ("script_type", "SAL"),
        ("caller_id", "alice"),
        ("context_id", "ctx-1"),
        ("timeout_secs", "60"),
        ("retries", "1"),
        ("attempt", "0"),
        ("prerequisites", "[]"),
        ("env_vars", r#"{"GREETING":"hello world"}"#),
        ("created_at", created.as_str()),
    ] {
        assert_eq!(fields.get(field), Some(&want), "field {field} in {text}");
    }

    // The queue holds the id under its canonical key.
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(server.socket_path())
        .arg("LRANGE")
        .arg("hero:q:work:type:SAL")
        .arg("0")
        .arg("-1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_without_leaking_the_password() {
    let port = hero_testkit::free_tcp_port();
    let url = format!("redis://:s3cretpw@127.0.0.1:{port}");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    let t = Instant::now();
    match RedisStore::connect(&url, StoreConfig::default(), clock).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(!msg.contains("s3cretpw"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    match RedisStore::connect("nonsense://x:pw@", StoreConfig::default(), clock).await {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("pw"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A job whose stored fields no longer decode (edited by hand) is reported as
/// undecodable, in its place among the jobs claimed with it; the store decides nothing
/// about it (the dispatcher fails it): it stays `Started` under the claim's lease, and
/// none is left out of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_is_reported_when_claimed_and_the_others_decode() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let ids = queued(&store, &clock, 3).await;
    let mut conn = raw(&server).await;
    let key = |id: JobId| format!("hero:job:{id}");
    // The middle job's env_vars are not JSON any more; the last one lost its attempt.
    spoil(&mut conn, ids[1], "env_vars", "not json").await;
    let _: () = redis::cmd("HDEL")
        .arg(key(ids[2]))
        .arg("attempt")
        .query_async(&mut conn)
        .await
        .unwrap();

    let claimed = store
        .claim(ScriptType::Sal, 10, "sup", Duration::from_secs(5))
        .await
        .unwrap();
    let got: Vec<JobId> = claimed.iter().map(ClaimedJob::id).collect();
    assert_eq!(got, ids);
    match &claimed[1] {
        ClaimedJob::Undecodable { id, attempt, why } => {
            assert_eq!((*id, *attempt), (ids[1], 1));
            assert!(why.contains("env_vars"), "{why}");
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
    match &claimed[2] {
        ClaimedJob::Job(job) => assert_eq!(job.attempt, 1, "a missing attempt counts as none yet"),
        other => panic!("expected a job, got {other:?}"),
    }

    let status: String = redis::cmd("HGET")
        .arg(key(ids[1]))
        .arg("status")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "Started");
    let queued: usize = redis::cmd("LLEN")
        .arg("hero:q:work:type:SAL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queued, 0);
    let leased: Vec<String> = redis::cmd("ZRANGE")
        .arg("hero:leases")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        leased.len(),
        3,
        "every claimed job holds a lease: {leased:?}"
    );
}

/// A dependent whose stored prerequisites no longer decode ends as `corrupt` when its
/// prerequisite finishes, without failing the finish batch it is released from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_dependent_does_not_break_a_complete_batch() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let running = queued(&store, &clock, 2).await;
    let mut dependent = new_job(&clock);
    dependent.prerequisites = vec![running[0]];
    store.create(&dependent).await.unwrap();
    assert_eq!(
        store.start(dependent.id).await,
        Ok(JobStatus::WaitingForPrerequisites)
    );
    let mut conn = raw(&server).await;
    spoil(
        &mut conn,
        dependent.id,
        "prerequisites",
        "[{\"not\": \"an id\"}]",
    )
    .await;

    let claimed = store
        .claim(ScriptType::Sal, 10, "sup", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let items: Vec<Completion> = claimed
        .into_iter()
        .filter_map(ClaimedJob::into_job)
        .map(|j| Completion::finish(j.id, j.attempt, "done"))
        .collect();
    assert_eq!(store.complete(&items).await, vec![Ok(()), Ok(())]);
    for id in &running {
        assert_eq!(store.get(*id).await.unwrap().status, JobStatus::Finished);
    }
    let (status, error): (String, String) = redis::cmd("HMGET")
        .arg(format!("hero:job:{}", dependent.id))
        .arg("status")
        .arg("error")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "Error");
    assert!(error.contains("\"corrupt\""), "{error}");

    // Starting a job whose prerequisites field was spoiled ends it the same way, and
    // such a job can still be deleted.
    let spoiled = new_job(&clock);
    store.create(&spoiled).await.unwrap();
    spoil(&mut conn, spoiled.id, "prerequisites", "nope").await;
    assert_eq!(store.start(spoiled.id).await, Ok(JobStatus::Error));
    store.delete(spoiled.id).await.unwrap();
    assert_eq!(
        store.get(spoiled.id).await,
        Err(StoreError::NotFound(spoiled.id))
    );
}

/// Jobs an older version stored (in the job index, but in no status or retention
/// index, not counted) are indexed by the bounded backfill walk: then listed by status,
/// counted, and removed by retention like the others; jobs this version indexed are
/// not counted twice, and the walk does nothing once done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_indexes_jobs_an_older_version_stored() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let old_queued = queued(&store, &clock, 700).await;
    let claimed = store
        .claim(ScriptType::Sal, 300, "old", Duration::from_secs(30))
        .await
        .unwrap();
    let items: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion::finish(c.id(), 1, "ok"))
        .collect();
    for r in store.complete(&items).await {
        r.unwrap();
    }
    // What an older version would have left: no status, retention or count keys, and
    // not the mark this version sets on a store it found empty.
    let mut conn = raw(&server).await;
    let mut forget = redis::pipe();
    for s in JobStatus::ALL {
        forget.del(format!("hero:status:{s}"));
    }
    forget
        .del("hero:done:Finished")
        .del("hero:done:Error")
        .del("hero:counts")
        .del("hero:backfill");
    let _: () = forget.query_async(&mut conn).await.unwrap();
    // And one job this version stored after the upgrade.
    let new = queued(&store, &clock, 1).await[0];
    let before = store.counts().await.unwrap();
    assert_eq!(
        before.by_status.iter().map(|(_, n)| n).sum::<u64>(),
        1,
        "only the new job is indexed"
    );

    let mut calls = 0;
    loop {
        calls += 1;
        let seen = store.backfill_indexes(250).await.unwrap();
        assert!(seen <= 250);
        if seen < 250 {
            break;
        }
        assert!(calls < 10, "the walk ends");
    }
    assert_eq!(calls, 3, "701 jobs in walks of 250");
    assert_eq!(store.backfill_indexes(250).await, Ok(0), "done");
    let c = store.counts().await.unwrap();
    let count = |s: JobStatus| c.by_status.iter().find(|(x, _)| *x == s).map(|(_, n)| *n);
    assert_eq!(count(JobStatus::Finished), Some(300));
    assert_eq!(count(JobStatus::Dispatched), Some(401));
    assert_eq!(
        c.by_script_type
            .iter()
            .find(|(t, _)| *t == ScriptType::Sal)
            .map(|(_, n)| *n),
        Some(701),
        "the new job is not counted twice"
    );
    let page = store
        .list(
            &hero_supervisor::store::JobFilter {
                status: Some(JobStatus::Dispatched),
                limit: 1000,
                ..Default::default()
            },
            5000,
        )
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 401);
    assert!(page.jobs.iter().any(|j| j.id == new));
    // Retention now sees the old finished jobs.
    clock.advance(chrono::Duration::days(2));
    let mut removed = 0;
    loop {
        let t = store.trim_finished(500).await.unwrap();
        removed += t.removed;
        if !t.more {
            break;
        }
    }
    assert_eq!(removed, 300);
    for id in claimed.iter().map(ClaimedJob::id) {
        assert_eq!(store.get(id).await, Err(StoreError::NotFound(id)));
    }
    assert_eq!(store.list_ids().await.unwrap().len(), 401);
    let _ = old_queued;
}

/// A store that connects to a Redis with no jobs marks the upgrade walk done, so the
/// retention loop never walks the jobs it indexes itself; one that finds jobs and no
/// mark (an older version's store) leaves the walk to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_needs_no_backfill_walk() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let mut conn = raw(&server).await;
    let mark: Option<String> = redis::cmd("GET")
        .arg("hero:backfill")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(mark.as_deref(), Some("done"));
    queued(&store, &clock, 3).await;
    assert_eq!(store.backfill_indexes(500).await, Ok(0), "nothing walked");

    // An older version's store: jobs, no mark. A new connection leaves it to the walk.
    let _: () = redis::cmd("DEL")
        .arg("hero:backfill")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (again, _) = connect(&server).await;
    let mark: Option<String> = redis::cmd("GET")
        .arg("hero:backfill")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(mark, None);
    assert_eq!(
        again.backfill_indexes(500).await,
        Ok(3),
        "the walk looks at them"
    );
    assert_eq!(again.backfill_indexes(500).await, Ok(0), "then it is done");
    let c = again.counts().await.unwrap();
    assert_eq!(
        c.by_script_type
            .iter()
            .find(|(t, _)| *t == ScriptType::Sal)
            .map(|(_, n)| *n),
        Some(3),
        "jobs this version indexed are not counted twice"
    );
}

/// Every key name in `server`.
async fn all_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap()
}

/// A job of context 42 keeps every key of its own under `hero:{c42}:` (one hash tag, so
/// one Redis Cluster slot); the server-wide keys are the namespace registry and the
/// type's ready set. A second store (another instance, which has not seen the job
/// created) claims it from there, and the ready set forgets the emptied queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numbered_context_keeps_its_keys_in_its_own_namespace() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let mut p = params();
    p.context_id = "42".into();
    let job = Job::new(JobId::for_context_id("42"), p, clock.now());
    store.create(&job).await.unwrap();
    store.start(job.id).await.unwrap();
    store.append_logs(job.id, &["a line".into()]).await.unwrap();
    let plain = new_job(&clock);
    store.create(&plain).await.unwrap();

    let mut conn = raw(&server).await;
    let keys = all_keys(&mut conn).await;
    let id = job.id.to_string();
    for key in [
        format!("hero:{{c42}}:job:{id}"),
        format!("hero:{{c42}}:job:{id}:logs"),
        "hero:{c42}:jobs".to_owned(),
        "hero:{c42}:status:Dispatched".to_owned(),
        "hero:{c42}:counts".to_owned(),
        "hero:{c42}:q:work:type:SAL".to_owned(),
        format!("hero:job:{}", plain.id),
        "hero:spaces".to_owned(),
        "hero:ready:SAL".to_owned(),
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    // Nothing of context 42's job outside its namespace.
    for key in &keys {
        let namespaced = key.starts_with("hero:{c42}:");
        let server_wide =
            ["hero:spaces", "hero:ready:SAL", "hero:backfill"].contains(&key.as_str());
        let default = !key.contains("{c42}") && !key.contains(&id);
        assert!(namespaced || server_wide || default, "stray key {key}");
        if key.contains(&id) {
            assert!(namespaced, "{key} names the job outside its namespace");
        }
    }
    for (k, member) in [("hero:spaces", "42"), ("hero:ready:SAL", "42")] {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(members, vec![member.to_owned()], "{k}");
    }

    // Another instance finds it without having seen it created.
    let (other, _) = connect(&server).await;
    let claimed = other
        .claim(ScriptType::Sal, 10, "sup-b", Duration::from_secs(30))
        .await
        .unwrap();
    let claimed: Vec<JobId> = claimed.iter().map(ClaimedJob::id).collect();
    assert_eq!(claimed, vec![job.id]);
    let ready: Vec<String> = redis::cmd("SMEMBERS")
        .arg("hero:ready:SAL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ready.is_empty(),
        "an emptied queue leaves the ready set: {ready:?}"
    );
    other
        .complete_one(Completion::finish(job.id, 1, "ok"))
        .await
        .unwrap();
    assert_eq!(store.get(job.id).await.unwrap().status, JobStatus::Finished);
}

/// A job of the default namespace that an older version queued on a context's lane
/// (`hero:{c3}:q:work:type:SAL`) is not lost: a claim there hands it to the default
/// queue, where the shared claim takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_job_left_on_a_lane_by_an_older_version_still_runs() {
    let server = RedisServer::start();
    let (store, clock) = connect(&server).await;
    let [id] = queued(&store, &clock, 1).await[..] else {
        unreachable!()
    };
    let mut conn = raw(&server).await;
    // Where the previous version's lane would have put it.
    let _: () = redis::cmd("LMOVE")
        .arg("hero:q:work:type:SAL")
        .arg("hero:{c3}:q:work:type:SAL")
        .arg("LEFT")
        .arg("RIGHT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let on_lane = store
        .claim_lane(3, ScriptType::Sal, 10, "sup-a", lease)
        .await
        .unwrap();
    assert!(on_lane.is_empty(), "not a job of context 3's namespace");
    let shared = store
        .claim(ScriptType::Sal, 10, "sup-a", lease)
        .await
        .unwrap();
    assert_eq!(
        shared.iter().map(ClaimedJob::id).collect::<Vec<_>>(),
        vec![id]
    );
}
