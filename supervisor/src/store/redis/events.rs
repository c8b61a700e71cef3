//! Store events over Redis pub/sub: the wire shape the Lua scripts publish, and the
//! listener task that forwards them to the in-process broadcast channel.
//!
//! Where events go ([`Source`]): on one Redis (and on a Redis Cluster without sharded
//! pub/sub, before Redis 7) every script PUBLISHes on the server-wide `<prefix>:events`,
//! and the listener SUBSCRIBEs to it on one node. On a cluster with sharded pub/sub each
//! namespace's scripts SPUBLISH on the namespace's own channel (`<prefix>:{d}:events`,
//! `<prefix>:{c<N>}:events`), which lives on the master of that namespace's slot; the
//! listener SSUBSCRIBEs to the channel of every namespace holding jobs, each on its
//! master, plus the server-wide `<prefix>:{s}:events`, where a context's first job
//! announces the context (`{"k":"space","c":N}`, enter_space.lua) so that its channel is
//! subscribed to without polling.
//!
//! The listener owns its connection(s). It pings Redis every [`LISTENER_PING_EVERY`] (a
//! connection that went silent is replaced, not waited on forever), resubscribes after a
//! failure with backoff, and then sends [`StoreEvent::Resync`]: whatever was published
//! meanwhile is lost, so waiters re-read the state they care about. On a cluster every
//! loss of a subscription is such a failure: a node connection that closed (a master
//! died), a `sunsubscribe` Redis sent (the channel's slot moved to another master, or
//! its master became a replica), an unanswered ping, or a backlog that overflowed. The
//! whole set is then subscribed to afresh, from a fresh view of the cluster's slots.
//! A context first heard of while subscribed gets its channel subscribed to, then a
//! `Resync` too (its events before the subscription were not heard). A context this
//! process is about to create the first job of is subscribed to first
//! ([`ShardRequests::ensure`]), so its own events are not missed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Client, ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::records::describe;
use super::spaces::{Layout, Numbered};
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::job::{JobId, JobStatus, ScriptType};
use crate::store::StoreEvent;

/// Bounds of the event listener's reconnect backoff.
const LISTENER_MIN_BACKOFF: Duration = Duration::from_millis(50);
const LISTENER_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the event listener pings Redis on its pub/sub connection. A connection that
/// went silent (a NAT or firewall forgot it: no FIN, no RST) would otherwise never end;
/// one whose ping is not answered within [`RESPONSE_TIMEOUT`] is dropped and replaced.
const LISTENER_PING_EVERY: Duration = Duration::from_secs(3);
/// On a cluster with sharded pub/sub: messages Redis may have pushed that the listener
/// has not read yet. Beyond it the listener counts its subscription as lost (resubscribe,
/// then `Resync`) rather than buffering without end.
const LISTENER_BACKLOG: usize = 4096;
/// On a cluster with sharded pub/sub: requests from the store to subscribe to a context
/// (before its first create) that may wait for the listener.
const SUBSCRIBE_REQUESTS: usize = 64;
/// On a cluster with sharded pub/sub: channels subscribed to at once when (re)subscribing
/// to every namespace's (one SSUBSCRIBE each: a command keeps to one slot).
const SUBSCRIBE_CONCURRENCY: usize = 16;

/// Aborts the event listener task when the store is dropped.
#[derive(Debug)]
pub(super) struct ListenerGuard(pub(super) AbortHandle);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An event as published by the Lua scripts.
#[derive(Deserialize)]
#[serde(tag = "k")]
enum WireEvent {
    #[serde(rename = "job")]
    Job { id: JobId, status: JobStatus },
    /// Many jobs changed to the same status in one script (claim, complete_batch).
    #[serde(rename = "jobs")]
    Jobs { ids: Vec<JobId>, status: JobStatus },
    /// `c`: the numbered context whose queue got the work (absent: the default one).
    #[serde(rename = "work")]
    Work {
        script_type: ScriptType,
        #[serde(default)]
        c: Option<u32>,
    },
    #[serde(rename = "log")]
    Log { id: JobId },
    #[serde(rename = "cancel")]
    Cancel { id: JobId },
    /// Jobs deleted (`delete`, a `clear_all` step).
    #[serde(rename = "deleted")]
    Deleted { ids: Vec<JobId> },
    /// On a cluster with sharded pub/sub: numbered context `c` got its first job (its
    /// namespace entered `<prefix>:{s}:spaces`; enter_space.lua).
    #[serde(rename = "space")]
    Space { c: u32 },
}

impl WireEvent {
    /// Hands the event to `events`, one [`StoreEvent`] per job; work in a numbered
    /// context's queue is noted in `numbered` first, so the claim it wakes looks there.
    fn forward(self, events: &broadcast::Sender<StoreEvent>, numbered: &Numbered) {
        // No receiver is fine: nobody is waiting.
        let send = |e| {
            let _ = events.send(e);
        };
        match self {
            WireEvent::Job { id, status } => send(StoreEvent::JobChanged { id, status }),
            WireEvent::Jobs { ids, status } => {
                for id in ids {
                    send(StoreEvent::JobChanged { id, status });
                }
            }
            WireEvent::Work { script_type, c } => {
                if c.is_some() {
                    numbered.seen();
                }
                send(StoreEvent::WorkAvailable { script_type });
            }
            WireEvent::Log { id } => send(StoreEvent::LogAppended { id }),
            WireEvent::Cancel { id } => send(StoreEvent::CancelRequested { id }),
            WireEvent::Deleted { ids } => {
                for id in ids {
                    send(StoreEvent::JobDeleted { id });
                }
            }
            WireEvent::Space { .. } => numbered.seen(),
        }
    }
}

/// Where the event listener subscribes.
pub(super) enum Source {
    /// The server-wide `channel` (`<prefix>:events`), on one node of `clients`, tried in
    /// turn (one Redis: one; a cluster without sharded pub/sub: its seed nodes, since a
    /// PUBLISH on any node reaches subscribers on every node).
    Plain {
        clients: Vec<Client>,
        channel: String,
    },
    /// A cluster with sharded pub/sub: every namespace's own channel, on its master.
    Sharded {
        /// Seed URLs (never logged: they may hold a password).
        nodes: Vec<String>,
        /// The store's key names (cluster layout).
        layout: Layout,
        /// What the store shares with the listener ([`ShardRequests::new`]).
        shared: Arc<Subscribed>,
        requests: mpsc::Receiver<Request>,
    },
}

/// A request to subscribe to numbered context N's channel, answered once done.
pub(super) type Request = (u32, oneshot::Sender<()>);

/// What the sharded listener shares with the store: whether it is subscribed, and to
/// which numbered contexts' channels.
#[derive(Debug, Default)]
pub(super) struct Subscribed {
    /// Subscribed and forwarding (between a successful open and a loss).
    up: AtomicBool,
    /// The numbered contexts whose channels are subscribed to now. A std Mutex: nothing
    /// awaits while it is held.
    contexts: Mutex<HashSet<u32>>,
}

impl Subscribed {
    fn has(&self, n: u32) -> bool {
        self.contexts.lock().is_ok_and(|c| c.contains(&n))
    }

    fn add(&self, n: u32) {
        if let Ok(mut c) = self.contexts.lock() {
            c.insert(n);
        }
    }

    fn set(&self, contexts: HashSet<u32>) {
        if let Ok(mut c) = self.contexts.lock() {
            *c = contexts;
        }
    }
}

/// The store's side of the sharded listener: asks it to subscribe to a context before
/// the context's first job is created, so that this process hears that job's events.
#[derive(Debug)]
pub(super) struct ShardRequests {
    shared: Arc<Subscribed>,
    requests: mpsc::Sender<Request>,
}

impl ShardRequests {
    /// The store's side, and what goes in [`Source::Sharded`] for the listener's.
    pub(super) fn new() -> (Self, Arc<Subscribed>, mpsc::Receiver<Request>) {
        let shared = Arc::new(Subscribed::default());
        let (requests, rx) = mpsc::channel(SUBSCRIBE_REQUESTS);
        (
            ShardRequests {
                shared: shared.clone(),
                requests,
            },
            shared,
            rx,
        )
    }

    /// Makes sure the listener is subscribed to numbered context `n`'s channel, within
    /// [`RESPONSE_TIMEOUT`]. Nothing to wait for when it already is, or when it is not
    /// up (it resubscribes to every context in `spaces` and says `Resync` then, or hears
    /// the context announced).
    pub(super) async fn ensure(&self, n: u32) {
        if !self.shared.up.load(Ordering::Acquire) || self.shared.has(n) {
            return;
        }
        let (done, answer) = oneshot::channel();
        if self.requests.try_send((n, done)).is_err() {
            return;
        }
        let _ = tokio::time::timeout(RESPONSE_TIMEOUT, answer).await;
    }
}

/// The event listener of `source`, resubscribing after failures. `ready` is answered
/// once the first subscription is up.
pub(super) async fn listen(
    source: Source,
    events: broadcast::Sender<StoreEvent>,
    numbered: Arc<Numbered>,
    ready: oneshot::Sender<()>,
) {
    match source {
        Source::Plain { clients, channel } => {
            listen_plain(clients, channel, events, numbered, ready).await;
        }
        Source::Sharded {
            nodes,
            layout,
            shared,
            requests,
        } => {
            let listener = Sharded {
                nodes,
                layout,
                shared,
                events,
                numbered,
            };
            listener.listen(requests, ready).await;
        }
    }
}

/// One dedicated pub/sub connection to the server-wide channel.
async fn listen_plain(
    clients: Vec<Client>,
    channel: String,
    events: broadcast::Sender<StoreEvent>,
    numbered: Arc<Numbered>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = LISTENER_MIN_BACKOFF;
    let mut next = 0usize;
    loop {
        let Some(client) = clients.get(next % clients.len().max(1)) else {
            return;
        };
        next = next.wrapping_add(1);
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.subscribe(&channel))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        }
        .await;
        if let Some(pubsub) = subscribed {
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(());
                }
                // Whatever was published while we were away is lost.
                None => {
                    numbered.forget();
                    let _ = events.send(StoreEvent::Resync);
                }
            }
            tracing::debug!(%channel, "store event listener subscribed");
            backoff = LISTENER_MIN_BACKOFF;
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(LISTENER_PING_EVERY);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping.reset();
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else {
                            tracing::warn!(%channel, "store event listener lost redis, resubscribing");
                            break;
                        };
                        match serde_json::from_slice::<WireEvent>(msg.get_payload_bytes()) {
                            Ok(e) => e.forward(&events, &numbered),
                            Err(e) => tracing::warn!(error = %e, "undecodable store event"),
                        }
                    }
                    _ = ping.tick() => {
                        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await;
                        if !matches!(answer, Ok(Ok(_))) {
                            tracing::warn!(%channel, "store event listener: redis did not answer a ping, resubscribing");
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTENER_MAX_BACKOFF);
    }
}

/// The sharded listener: a [`Shards`] subscription, opened afresh after every loss.
struct Sharded {
    nodes: Vec<String>,
    layout: Layout,
    shared: Arc<Subscribed>,
    events: broadcast::Sender<StoreEvent>,
    numbered: Arc<Numbered>,
}

impl Sharded {
    async fn listen(self, mut requests: mpsc::Receiver<Request>, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = LISTENER_MIN_BACKOFF;
        loop {
            match Shards::open(&self.nodes, &self.layout).await {
                Ok((mut shards, contexts)) => {
                    let count = contexts.len();
                    self.shared.set(contexts);
                    self.shared.up.store(true, Ordering::Release);
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(());
                        }
                        // Whatever was published while we were away is lost.
                        None => {
                            self.numbered.forget();
                            let _ = self.events.send(StoreEvent::Resync);
                        }
                    }
                    self.numbered.learnt(count > 0);
                    tracing::debug!(
                        contexts = count,
                        "store event listener subscribed to every shard"
                    );
                    backoff = LISTENER_MIN_BACKOFF;
                    let why = shards.run(&self, &mut requests).await;
                    self.shared.up.store(false, Ordering::Release);
                    tracing::warn!(
                        reason = why,
                        "store event listener lost a shard subscription, resubscribing"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "store event listener could not subscribe to the shards");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTENER_MAX_BACKOFF);
        }
    }
}

/// Sharded subscriptions to the channels of every namespace holding jobs, over one
/// cluster connection (RESP3: its pushes come on `pushes`). The connection routes each
/// SSUBSCRIBE to the master of the channel's slot (following MOVED). It would also
/// resubscribe on its own after a node reconnects, but not report when: so any loss is
/// handled by dropping it and opening a new one (`listen_sharded`).
struct Shards {
    conn: ClusterConnection,
    pushes: mpsc::Receiver<PushInfo>,
    /// Set when a push did not fit in [`LISTENER_BACKLOG`] (it was dropped).
    overflowed: Arc<AtomicBool>,
    layout: Layout,
}

impl Shards {
    /// Connects to the cluster of `nodes`, then SSUBSCRIBEs to the server-wide channel
    /// first (so no context announced meanwhile is missed), then to the default
    /// namespace's and to every numbered one's in `<prefix>:{s}:spaces`. Returns the
    /// subscription and the numbered contexts it covers.
    async fn open(nodes: &[String], layout: &Layout) -> Result<(Shards, HashSet<u32>), RedisError> {
        let (tx, pushes) = mpsc::channel(LISTENER_BACKLOG);
        let overflowed = Arc::new(AtomicBool::new(false));
        let full = overflowed.clone();
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(move |push: PushInfo| {
                if tx.try_send(push).is_err() {
                    full.store(true, Ordering::Release);
                }
                Ok::<(), ()>(())
            })
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .build()?;
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            client.get_async_connection(),
        )
        .await
        .map_err(|_| timed_out())??;
        let mut shards = Shards {
            conn,
            pushes,
            overflowed,
            layout: layout.clone(),
        };
        shards.subscribe(shards.layout.server_key("events")).await?;
        shards
            .subscribe(format!("{}:events", shards.layout.space(None)))
            .await?;
        let members: Vec<String> = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            redis::cmd("SMEMBERS")
                .arg(shards.layout.server_key("spaces"))
                .query_async(&mut shards.conn),
        )
        .await
        .map_err(|_| timed_out())??;
        let numbers: HashSet<u32> = members.iter().filter_map(|m| m.parse().ok()).collect();
        let calls: Vec<_> = numbers
            .iter()
            .map(|&n| {
                let channel = format!("{}:events", shards.layout.space(Some(n)));
                let mut conn = shards.conn.clone();
                async move { ssubscribe(&mut conn, channel).await }
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(SUBSCRIBE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        Ok((shards, numbers))
    }

    async fn subscribe(&mut self, channel: String) -> Result<(), RedisError> {
        ssubscribe(&mut self.conn, channel).await
    }

    /// Forwards events, and subscribes to the contexts `requests` asks for, until a
    /// subscription is lost; returns why.
    async fn run(
        &mut self,
        listener: &Sharded,
        requests: &mut mpsc::Receiver<Request>,
    ) -> &'static str {
        let mut ping = tokio::time::interval(LISTENER_PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            tokio::select! {
                push = self.pushes.recv() => {
                    let Some(push) = push else {
                        return "the cluster connection closed";
                    };
                    if self.overflowed.load(Ordering::Acquire) {
                        return "the backlog of events overflowed";
                    }
                    match push.kind {
                        PushKind::SMessage => {
                            if let Err(why) = self.message(&push.data, listener).await {
                                return why;
                            }
                        }
                        // Never asked for (nothing is unsubscribed from): Redis dropped the
                        // channel, its slot now served elsewhere.
                        PushKind::SUnsubscribe => return "redis dropped a channel (its slot moved)",
                        PushKind::Disconnection => return "a node connection closed",
                        // Confirmations of our own SSUBSCRIBEs; anything else is not ours.
                        _ => {}
                    }
                }
                Some((n, done)) = requests.recv() => {
                    if let Err(why) = self.requested(n, listener).await {
                        return why;
                    }
                    let _ = done.send(());
                }
                _ = ping.tick() => {
                    let mut cmd = redis::cmd("PING");
                    cmd.arg("listener");
                    let route = RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    ));
                    let answer = tokio::time::timeout(
                        RESPONSE_TIMEOUT,
                        self.conn.route_command(cmd, route),
                    )
                    .await;
                    if !matches!(answer, Ok(Ok(_))) {
                        return "a master did not answer a ping";
                    }
                }
            }
        }
    }

    /// One `smessage` push (`[channel, payload]`): forwarded, or for a context announced
    /// on the server-wide channel, its channel subscribed to, then `Resync`.
    async fn message(&mut self, data: &[Value], listener: &Sharded) -> Result<(), &'static str> {
        let Some(Value::BulkString(payload)) = data.get(1) else {
            tracing::warn!("store event without a payload");
            return Ok(());
        };
        match serde_json::from_slice::<WireEvent>(payload) {
            Ok(WireEvent::Space { c }) => {
                listener.numbered.seen();
                if listener.shared.has(c) {
                    return Ok(());
                }
                self.subscribe_context(c, listener).await?;
                // Its first events may have been published before the subscription.
                let _ = listener.events.send(StoreEvent::Resync);
            }
            Ok(e) => e.forward(&listener.events, &listener.numbered),
            Err(e) => tracing::warn!(error = %e, "undecodable store event"),
        }
        Ok(())
    }

    /// The store asked for context `n` before creating a job there. Every event of a
    /// context is published after it entered `spaces` (enter_space.lua runs before any
    /// script of it): if it is not there once subscribed, no event was missed; if it
    /// is (another process created it meanwhile), some may have been: `Resync`.
    async fn requested(&mut self, n: u32, listener: &Sharded) -> Result<(), &'static str> {
        if listener.shared.has(n) {
            return Ok(());
        }
        self.subscribe_context(n, listener).await?;
        let entered: Result<Result<bool, RedisError>, _> = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            redis::cmd("SISMEMBER")
                .arg(self.layout.server_key("spaces"))
                .arg(n)
                .query_async(&mut self.conn),
        )
        .await;
        match entered {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                listener.numbered.seen();
                let _ = listener.events.send(StoreEvent::Resync);
            }
            _ => return Err("redis did not say whether a context holds jobs"),
        }
        Ok(())
    }

    /// SSUBSCRIBE to numbered context `n`'s channel; noted in the shared set.
    async fn subscribe_context(&mut self, n: u32, listener: &Sharded) -> Result<(), &'static str> {
        let channel = format!("{}:events", self.layout.space(Some(n)));
        if let Err(e) = self.subscribe(channel).await {
            tracing::debug!(error = %describe(&e), context = n, "could not subscribe to a context's events");
            return Err("a context's channel could not be subscribed to");
        }
        listener.shared.add(n);
        tracing::debug!(context = n, "store event listener subscribed to a context");
        Ok(())
    }
}

/// SSUBSCRIBE to `channel` on the master of its slot, within [`RESPONSE_TIMEOUT`].
async fn ssubscribe(conn: &mut ClusterConnection, channel: String) -> Result<(), RedisError> {
    tokio::time::timeout(RESPONSE_TIMEOUT, conn.ssubscribe(channel))
        .await
        .map_err(|_| timed_out())?
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events `payload` forwards, or `None` when it does not decode.
    fn check(payload: &str) -> Option<Vec<StoreEvent>> {
        let (tx, mut rx) = broadcast::channel(16);
        serde_json::from_str::<WireEvent>(payload)
            .ok()?
            .forward(&tx, &Numbered::default());
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        Some(got)
    }

    #[test]
    fn wire_events_forward_one_store_event_per_job() {
        let (a, b) = (JobId::new(), JobId::new());
        let changed = |id, status| StoreEvent::JobChanged { id, status };
        assert_eq!(
            check(&format!(r#"{{"k":"job","id":"{a}","status":"Finished"}}"#)),
            Some(vec![changed(a, JobStatus::Finished)])
        );
        assert_eq!(
            check(&format!(
                r#"{{"k":"jobs","ids":["{a}","{b}"],"status":"Started"}}"#
            )),
            Some(vec![
                changed(a, JobStatus::Started),
                changed(b, JobStatus::Started)
            ])
        );
        assert_eq!(
            check(r#"{"k":"work","script_type":"SAL"}"#),
            Some(vec![StoreEvent::WorkAvailable {
                script_type: ScriptType::Sal
            }])
        );
        let numbered = Numbered::default();
        let (tx, _rx) = broadcast::channel(16);
        serde_json::from_str::<WireEvent>(r#"{"k":"work","script_type":"SAL","c":7}"#)
            .expect("a work event of context 7")
            .forward(&tx, &numbered);
        assert_eq!(numbered.known(), Some(true), "work in context 7 was noted");
        let numbered = Numbered::default();
        serde_json::from_str::<WireEvent>(r#"{"k":"space","c":9}"#)
            .expect("context 9 announced")
            .forward(&tx, &numbered);
        assert_eq!(numbered.known(), Some(true), "a new context was noted");
        assert_eq!(
            check(r#"{"k":"space","c":9}"#),
            Some(vec![]),
            "no store event"
        );
        assert_eq!(
            check(&format!(r#"{{"k":"log","id":"{a}"}}"#)),
            Some(vec![StoreEvent::LogAppended { id: a }])
        );
        assert_eq!(
            check(&format!(r#"{{"k":"cancel","id":"{a}"}}"#)),
            Some(vec![StoreEvent::CancelRequested { id: a }])
        );
        assert_eq!(
            check(&format!(r#"{{"k":"deleted","ids":["{a}","{b}"]}}"#)),
            Some(vec![
                StoreEvent::JobDeleted { id: a },
                StoreEvent::JobDeleted { id: b }
            ])
        );
    }

    #[test]
    fn malformed_wire_events_are_refused() {
        for bad in [
            "",
            "{}",
            r#"{"k":"job","id":"nope","status":"Finished"}"#,
            r#"{"k":"job","id":"00000000-0000-4000-8000-000000000000","status":"Odd"}"#,
            r#"{"k":"party"}"#,
        ] {
            assert_eq!(check(bad), None, "{bad}");
        }
    }
}
