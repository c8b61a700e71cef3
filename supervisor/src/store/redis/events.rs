//! Store events over Redis pub/sub: the wire shape the Lua scripts publish on
//! `<prefix>:events`, and the listener task that forwards them to the in-process
//! broadcast channel.
//!
//! The listener owns one dedicated pub/sub connection. It pings Redis every
//! [`LISTENER_PING_EVERY`] (a connection that went silent is replaced, not waited on
//! forever), resubscribes after a failure with backoff, and then sends
//! [`StoreEvent::Resync`]: whatever was published meanwhile is lost, so waiters re-read
//! the state they care about.

use std::time::Duration;

use futures::StreamExt;
use redis::Client;
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;

use super::spaces::Numbered;
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
        }
    }
}

/// The event listener: one dedicated pub/sub connection, resubscribing after failures.
/// `clients`: where to subscribe, tried in turn (one Redis: one; a cluster: its seed
/// nodes, since a PUBLISH on any node reaches subscribers on every node).
pub(super) async fn listen(
    clients: Vec<Client>,
    channel: String,
    events: broadcast::Sender<StoreEvent>,
    numbered: std::sync::Arc<Numbered>,
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
