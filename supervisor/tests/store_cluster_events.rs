//! Store events on a Redis Cluster with sharded pub/sub: each namespace's events go on
//! its own channel (`<prefix>:{c<N>}:events`, `<prefix>:{d}:events`) by SPUBLISH, on the
//! master of its slot, and every store's listener SSUBSCRIBEs to each of them there.
//! Two stores share a prefix in each test, as two supervisor processes would: one
//! writes, the other listens. No store polls: an event reaches the listener or the test
//! times out. The shared cluster is never harmed; the failover test starts its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hero_supervisor::clock::{Clock, SystemClock};
use hero_supervisor::job::{Job, JobId, JobParams, JobStatus, ScriptType};
use hero_supervisor::store::{JobStore, RedisStore, StoreConfig, StoreEvent};
use hero_testkit::RedisCluster;
use tokio::sync::broadcast;

/// How long an event may take to arrive before the test fails.
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn store(cluster: &RedisCluster, prefix: &str) -> Arc<dyn JobStore> {
    let store = RedisStore::connect_cluster(
        &cluster.urls(),
        StoreConfig {
            prefix: prefix.to_owned(),
            ..StoreConfig::default()
        },
        Arc::new(SystemClock),
    )
    .await
    .expect("connect to the test cluster");
    Arc::new(store)
}

fn fresh_prefix() -> String {
    format!("ev{}", &JobId::new().to_string()[..8])
}

/// A SAL job of `context` ("ctx": the default namespace).
fn job(context: &str) -> Job {
    let params = JobParams {
        traceparent: None,
        script: "print(1)".into(),
        script_type: ScriptType::Sal,
        caller_id: "caller".into(),
        context_id: context.into(),
        timeout: Some(30),
        prerequisites: vec![],
        retries: None,
        env_vars: Default::default(),
    };
    Job::new(
        JobId::for_context_id(&params.context_id),
        params,
        SystemClock.now(),
    )
}

/// One command to the node on `port`.
async fn on_node<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

/// The hash slot of `key`, as the cluster computes it.
async fn slot_of(cluster: &RedisCluster, key: &str) -> u16 {
    let port = cluster.master_ports()[0];
    on_node(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await
}

/// For each master, the first numbered context (from 1) whose slot it serves.
async fn a_context_per_master(cluster: &RedisCluster) -> Vec<(u16, u32)> {
    let masters = cluster.master_ports();
    let mut found: HashMap<u16, u32> = HashMap::new();
    for n in 1..200u32 {
        let slot = slot_of(cluster, &format!("{{c{n}}}")).await;
        let master = cluster.master_of_slot(slot).expect("every slot is served");
        found.entry(master).or_insert(n);
        if found.len() == masters.len() {
            break;
        }
    }
    assert_eq!(found.len(), masters.len(), "a context on every master");
    let mut found: Vec<(u16, u32)> = found.into_iter().collect();
    found.sort_unstable();
    found
}

/// Sharded subscribers of `channel` on the node on `port`.
async fn shard_subscribers(port: u16, channel: &str) -> i64 {
    let reply: (String, i64) =
        on_node(port, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel)).await;
    reply.1
}

/// Plain subscribers of `channel` on the node on `port`.
async fn plain_subscribers(port: u16, channel: &str) -> i64 {
    let reply: (String, i64) = on_node(port, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)).await;
    reply.1
}

/// Waits until `events` says job `id` changed to `status`, skipping other events
/// (`Resync` included: it only says some may have been missed).
async fn changed(events: &mut broadcast::Receiver<StoreEvent>, id: JobId, status: JobStatus) {
    let wanted = StoreEvent::JobChanged { id, status };
    let found = tokio::time::timeout(EVENT_WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if e == wanted => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no event {wanted:?} within {EVENT_WAIT:?}");
}

/// Waits until `events` says `Resync` (the listener subscribed again).
async fn resync(events: &mut broadcast::Receiver<StoreEvent>, within: Duration) {
    let found = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Resync) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no Resync within {within:?}");
}

/// Waits until `check` holds, for up to `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Contexts on every master and the default namespace: a listener started after their
/// first jobs hears each one's events, which are SPUBLISHed on the namespace's own
/// channel and subscribed to on that channel's master only. With plain PUBLISH the
/// listener would hold a plain subscription to `<prefix>:events` instead, and no
/// sharded one anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_contexts_on_every_master_reach_a_listener() {
    let cluster = RedisCluster::shared();
    let prefix = fresh_prefix();
    let writer = store(cluster, &prefix).await;
    let contexts = a_context_per_master(cluster).await;
    let mut jobs = Vec::new();
    for &(_, n) in &contexts {
        jobs.push(job(&n.to_string()));
    }
    jobs.push(job("ctx"));
    for j in &jobs {
        writer.create(j).await.expect("create");
    }
    // The listener: a second store, as another supervisor process, started now.
    let listener = store(cluster, &prefix).await;
    let mut events = listener.subscribe();
    for j in &jobs {
        assert_eq!(writer.start(j.id).await, Ok(JobStatus::Dispatched));
        changed(&mut events, j.id, JobStatus::Dispatched).await;
    }
    // Where the subscriptions are: each namespace's channel on its own master, with
    // both stores subscribed; no plain subscription anywhere.
    let masters = cluster.master_ports();
    let mut channels: Vec<String> = contexts
        .iter()
        .map(|(_, n)| format!("{prefix}:{{c{n}}}:events"))
        .collect();
    channels.push(format!("{prefix}:{{d}}:events"));
    channels.push(format!("{prefix}:{{s}}:events"));
    for channel in &channels {
        let owner = cluster
            .master_of_slot(slot_of(cluster, channel).await)
            .unwrap();
        for &m in &masters {
            let expected = if m == owner { 2 } else { 0 };
            assert_eq!(
                shard_subscribers(m, channel).await,
                expected,
                "sharded subscribers of {channel} on {m} (its master: {owner})"
            );
        }
    }
    for &port in cluster.ports() {
        assert_eq!(
            plain_subscribers(port, &format!("{prefix}:events")).await,
            0,
            "no plain subscription on {port}"
        );
    }
}

/// A context whose first job comes after the listener subscribed: announced on the
/// server-wide channel, its channel is subscribed to (then `Resync`: its first events
/// may have been missed), and its later events are heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_created_after_the_listener_started_is_heard() {
    let cluster = RedisCluster::shared();
    let prefix = fresh_prefix();
    let listener = store(cluster, &prefix).await;
    let writer = store(cluster, &prefix).await;
    let mut events = listener.subscribe();
    let (master, n) = a_context_per_master(cluster).await[1];
    let first = job(&n.to_string());
    writer.create(&first).await.expect("create");
    resync(&mut events, EVENT_WAIT).await;
    let channel = format!("{prefix}:{{c{n}}}:events");
    assert_eq!(
        shard_subscribers(master, &channel).await,
        2,
        "both stores subscribed to {channel} on its master"
    );
    assert_eq!(writer.start(first.id).await, Ok(JobStatus::Dispatched));
    changed(&mut events, first.id, JobStatus::Dispatched).await;
    let second = job(&n.to_string());
    writer.create(&second).await.expect("create");
    assert_eq!(writer.start(second.id).await, Ok(JobStatus::Dispatched));
    changed(&mut events, second.id, JobStatus::Dispatched).await;
}

/// A master killed: its replica takes over, the listener loses that shard's connection,
/// subscribes to every channel again from the new slot map, says `Resync`, and the
/// context's events flow again, from the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_resubscribes_after_a_failover() {
    let mut cluster = RedisCluster::start();
    let prefix = fresh_prefix();
    let writer = store(&cluster, &prefix).await;
    let (master, n) = a_context_per_master(&cluster).await[0];
    let before = job(&n.to_string());
    writer.create(&before).await.expect("create");
    let listener = store(&cluster, &prefix).await;
    let mut events = listener.subscribe();
    assert_eq!(writer.start(before.id).await, Ok(JobStatus::Dispatched));
    changed(&mut events, before.id, JobStatus::Dispatched).await;

    let channel = format!("{prefix}:{{c{n}}}:events");
    let slot = slot_of(&cluster, &channel).await;
    cluster.kill_node(master);
    let killed_at = Instant::now();
    // Its replica is promoted: the slot gets another master.
    let promoted = loop {
        match cluster.master_of_slot(slot) {
            Some(p) if p != master => break p,
            _ => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(30),
                    "no replica took over from {master} within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    resync(&mut events, Duration::from_secs(30)).await;
    cluster.wait_ok(Duration::from_secs(30));
    // The listener's subscription is on the promoted master (the writer's too, once
    // its own listener has come back).
    eventually(
        Duration::from_secs(30),
        "both stores subscribed on the new master",
        || {
            let channel = channel.clone();
            async move { shard_subscribers(promoted, &channel).await == 2 }
        },
    )
    .await;
    // Acknowledged writes wait for a replica (WAIT 1): the killed node comes back as
    // the new master's. The writer may need a few tries while it follows the failover.
    cluster.restart_node(master);
    eventually(
        Duration::from_secs(30),
        "the restarted node became the new master's replica",
        || std::future::ready(cluster.has_synced_replica(promoted)),
    )
    .await;
    let after = job(&n.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.create(&after).await.is_err() {
        assert!(Instant::now() < deadline, "create after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(writer.start(after.id).await, Ok(JobStatus::Dispatched));
    changed(&mut events, after.id, JobStatus::Dispatched).await;
}
