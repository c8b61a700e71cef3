//! Who waits for which job to end (`run_job`, `wait_for_job`), and one task that reads
//! the store's events for all of them.
//!
//! Each waiter used to hold a receiver of the store's event broadcast, so every event
//! woke every waiter: with 64 `run_job` calls in flight, each job's three or four
//! events cost some 250 task wake-ups, nearly all of them for another job. Now one task
//! ([`Waiters::forward`]) reads the events and wakes only the waiters of the job an
//! event names, when that event may end the wait (a terminal status, a deletion); an
//! event that may hide others (`Resync`, a lagged receiver) wakes them all, and so does
//! the end of the events (each waiter then re-reads its job every
//! [`POLL_WITHOUT_EVENTS`]).
//!
//! A wait registers ([`Waiters::watch`]) before the job can change, so the forwarder,
//! subscribed since the supervisor started, cannot deliver the end before the waiter
//! is there to see it: a [`watch`] channel keeps the wake-up until it is looked at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::job::JobId;
use crate::store::StoreEvent;

/// How often a waiter re-reads its job once the store's events have ended.
pub(super) const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(200);

/// The jobs waited for, each with the channel its waiters are woken through.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    jobs: Mutex<HashMap<JobId, watch::Sender<()>>>,
    /// The store's events ended: waiters poll.
    ended: AtomicBool,
}

/// One wait's registration: [`Watch::changed`] returns when the job may have ended.
/// Dropping it unregisters.
#[derive(Debug)]
pub(super) struct Watch {
    waiters: Arc<Waiters>,
    id: JobId,
    rx: Option<watch::Receiver<()>>,
}

impl Waiters {
    /// Registers a wait for job `id`.
    pub(super) fn watch(self: &Arc<Self>, id: JobId) -> Watch {
        let rx = self
            .lock()
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Watch {
            waiters: self.clone(),
            id,
            rx: Some(rx),
        }
    }

    /// Jobs waited for now (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<()>>> {
        // Poisoned only if a holder panicked; nothing here panics while holding it.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self, id: JobId) {
        if let Some(tx) = self.lock().get(&id) {
            tx.send_replace(());
        }
    }

    fn wake_all(&self) {
        for tx in self.lock().values() {
            tx.send_replace(());
        }
    }

    /// Reads `events` until they end or `stop` is cancelled (the supervisor's
    /// shutdown), waking the waiters each event concerns; then the waiters poll.
    pub(super) async fn forward(
        self: Arc<Self>,
        mut events: broadcast::Receiver<StoreEvent>,
        stop: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = stop.cancelled() => Err(broadcast::error::RecvError::Closed),
            };
            match event {
                Ok(StoreEvent::JobChanged { id, status }) if status.is_terminal() => {
                    self.wake(id);
                }
                Ok(StoreEvent::JobDeleted { id }) => self.wake(id),
                Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.wake_all();
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended.store(true, Ordering::Release);
                    self.wake_all();
                    return;
                }
            }
        }
    }
}

impl Watch {
    /// Returns once the job may have ended since the last call (or since
    /// registering): its terminal status or deletion was published, or events may have
    /// been missed, or (events ended) [`POLL_WITHOUT_EVENTS`] passed.
    pub(super) async fn changed(&mut self) {
        if self.waiters.ended.load(Ordering::Acquire) {
            tokio::time::sleep(POLL_WITHOUT_EVENTS).await;
            return;
        }
        let Some(rx) = self.rx.as_mut() else {
            return;
        };
        if rx.changed().await.is_err() {
            // The sender cannot go while this receiver is registered; be safe anyway.
            tokio::time::sleep(POLL_WITHOUT_EVENTS).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut jobs = self.waiters.lock();
        // Drop the receiver under the lock, so no other wait registers in between.
        self.rx.take();
        if jobs
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            jobs.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::job::JobStatus;

    fn waiters() -> (Arc<Waiters>, broadcast::Sender<StoreEvent>) {
        let (tx, rx) = broadcast::channel(16);
        let waiters = Arc::new(Waiters::default());
        tokio::spawn(waiters.clone().forward(rx, CancellationToken::new()));
        (waiters, tx)
    }

    async fn woken(w: &mut Watch) -> bool {
        tokio::time::timeout(Duration::from_millis(100), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_jobs_end_wakes_its_waiters() {
        let (waiters, events) = waiters();
        let (a, b) = (JobId::new(), JobId::new());
        let (mut wa, mut wa2, mut wb) = (waiters.watch(a), waiters.watch(a), waiters.watch(b));
        events
            .send(StoreEvent::JobChanged {
                id: a,
                status: JobStatus::Started,
            })
            .unwrap();
        assert!(!woken(&mut wa).await, "a status that is not an end");
        events
            .send(StoreEvent::JobChanged {
                id: a,
                status: JobStatus::Finished,
            })
            .unwrap();
        assert!(woken(&mut wa).await);
        assert!(woken(&mut wa2).await, "every waiter of the job");
        assert!(!woken(&mut wb).await, "not another job's waiter");
        assert!(!woken(&mut wa).await, "a wake-up is seen once");
        events.send(StoreEvent::JobDeleted { id: b }).unwrap();
        assert!(woken(&mut wb).await);
    }

    #[tokio::test]
    async fn an_end_published_before_the_waiter_looks_is_kept() {
        let (waiters, events) = waiters();
        let id = JobId::new();
        let mut w = waiters.watch(id);
        events
            .send(StoreEvent::JobChanged {
                id,
                status: JobStatus::Error,
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(woken(&mut w).await);
    }

    #[tokio::test]
    async fn resync_wakes_everyone_and_ended_events_mean_polling() {
        let (waiters, events) = waiters();
        let (mut a, mut b) = (waiters.watch(JobId::new()), waiters.watch(JobId::new()));
        events.send(StoreEvent::Resync).unwrap();
        assert!(woken(&mut a).await);
        assert!(woken(&mut b).await);
        drop(events);
        // Woken once by the end, then every POLL_WITHOUT_EVENTS.
        assert!(woken(&mut a).await);
        let polled = tokio::time::timeout(POLL_WITHOUT_EVENTS * 3, a.changed()).await;
        assert!(polled.is_ok());
    }

    #[tokio::test]
    async fn a_dropped_wait_unregisters() {
        let (waiters, _events) = waiters();
        let id = JobId::new();
        let (w1, w2) = (waiters.watch(id), waiters.watch(id));
        assert_eq!(waiters.len(), 1);
        drop(w1);
        assert_eq!(waiters.len(), 1, "another wait is still there");
        drop(w2);
        assert_eq!(waiters.len(), 0);
    }
}
