//! Registered runners as pools of this instance: each [`RunnerRecord`] with a port is
//! attached to the [`Supervisor`] as a TCP pool of its script types
//! ([`Supervisor::attach_pool`]), named `ctx<context>.runner<id>.<generation>`.
//!
//! `runner.create` applies its record at once ([`RunnerRegistry::apply`]); besides,
//! every instance reads every registration at start and then every
//! [`SYNC_INTERVAL`] ([`RunnerRegistry::run`]), so a restarted instance, or another one
//! on the same Redis, connects to the runners registered anywhere. A registration whose
//! connection changed gets a new pool, and the old one is drained
//! ([`Supervisor::detach_pool`]: it stops claiming, its running jobs finish or are handed
//! back, then it disconnects), so a replacement loses no job.
//!
//! Routing is per context: a registered runner's pool serves only its context. Every
//! (context, script type) that a registration with a port serves has an open *lane*
//! ([`JobStore::set_lane`]): the context's jobs of that type queued from then on wait
//! on the lane, and only the pools of that context's registered runners claim from it,
//! on every instance. Lanes follow the registrations: [`RunnerRegistry::sync`] opens
//! the missing ones and closes the ones no registration serves any more (their queued
//! jobs go back to the type's queue), on every instance every [`SYNC_INTERVAL`], so a
//! lane changed by a crash half-way or a stale read is put right within one interval.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{CoordinationError, CoordinationStore, RunnerRecord};
use crate::job::ScriptType;
use crate::service::Supervisor;
use crate::store::JobStore;

/// How often every instance re-reads the registrations.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// The pool attached for one registration.
#[derive(Debug)]
struct Applied {
    record: RunnerRecord,
    /// Its pool's name; `None` for a record without a port.
    pool: Option<String>,
}

/// This instance's pools of registered runners.
#[derive(Debug)]
pub(crate) struct RunnerRegistry {
    supervisor: Supervisor,
    store: Arc<dyn CoordinationStore>,
    /// By (context, id). A tokio mutex: applying attaches and drains, one at a time.
    applied: Mutex<HashMap<(u32, u32), Applied>>,
    generation: AtomicU64,
}

impl RunnerRegistry {
    pub(crate) fn new(supervisor: Supervisor, store: Arc<dyn CoordinationStore>) -> Self {
        RunnerRegistry {
            supervisor,
            store,
            applied: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// Makes this instance serve `record` as registered: attaches a pool for it when it
    /// has a port and none is attached with the same connection; drains the pool of an
    /// older registration of it whose connection differs. A record older than the one
    /// applied (its `revision`) changes nothing.
    pub(crate) async fn apply(&self, record: &RunnerRecord) {
        let key = (record.context_id, record.id);
        let mut applied = self.applied.lock().await;
        let old = applied.get(&key);
        if let Some(old) = old {
            if old.record.revision > record.revision {
                return;
            }
            if old.record.same_connection(record) {
                let pool = old.pool.clone();
                applied.insert(
                    key,
                    Applied {
                        record: record.clone(),
                        pool,
                    },
                );
                return;
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}.{generation}", record.pool_prefix());
        let attached = record
            .pool_config(name.clone())
            .is_some_and(|config| self.supervisor.attach_pool(config));
        let pool = attached.then(|| {
            tracing::info!(pool = %name, endpoint = ?record.socket_addr(), "registered runner attached");
            name
        });
        let previous = applied.insert(
            key,
            Applied {
                record: record.clone(),
                pool,
            },
        );
        drop(applied);
        if let Some(old) = previous.and_then(|p| p.pool) {
            // The new pool serves already; the old one finishes what it runs, apart.
            let supervisor = self.supervisor.clone();
            tokio::spawn(async move {
                supervisor.detach_pool(&old).await;
                tracing::info!(pool = %old, "replaced runner registration drained");
            });
        }
    }

    /// Applies every registration in the store, then makes the open lanes those the
    /// registrations serve.
    pub(crate) async fn sync(&self) -> Result<(), CoordinationError> {
        for record in self.store.runners().await? {
            self.apply(&record).await;
        }
        self.reconcile_lanes().await
    }

    /// [`Self::apply`] for a registration just written (`runner.create`), then the
    /// lanes of every registration in the store, so its context's jobs route to it at
    /// once and a replacement's dropped types go back to the shared queues.
    pub(crate) async fn register(&self, record: &RunnerRecord) -> Result<(), CoordinationError> {
        self.apply(record).await;
        self.reconcile_lanes().await
    }

    /// Opens the lane of every (context, type) a registration with a port serves and
    /// closes every other open lane (a lane error is logged, and the next sync tries
    /// again).
    ///
    /// The open lanes are read *before* the registrations: a lane another instance has
    /// just opened was opened after its registration was stored, so the registrations
    /// read afterwards include it, and no instance closes a lane it has not seen wanted.
    async fn reconcile_lanes(&self) -> Result<(), CoordinationError> {
        let store: &Arc<dyn JobStore> = self.supervisor.store();
        let open: BTreeSet<(u32, ScriptType)> = match store.lanes().await {
            Ok(lanes) => lanes.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the open lanes failed");
                return Ok(());
            }
        };
        let wanted: BTreeSet<(u32, ScriptType)> = self
            .store
            .runners()
            .await?
            .iter()
            .filter(|r| r.socket_addr().is_some())
            .flat_map(|r| r.script_types.iter().map(|t| (r.context_id, *t)))
            .collect();
        for &(context, script_type) in wanted.difference(&open) {
            match store.set_lane(context, script_type, true).await {
                Ok(()) => tracing::info!(context, script_type = %script_type, "lane opened"),
                Err(e) => tracing::warn!(error = %e, context, "opening a lane failed"),
            }
        }
        for &(context, script_type) in open.difference(&wanted) {
            match store.set_lane(context, script_type, false).await {
                Ok(()) => tracing::info!(context, script_type = %script_type, "lane closed"),
                Err(e) => tracing::warn!(error = %e, context, "closing a lane failed"),
            }
        }
        Ok(())
    }

    /// Syncs at once, then every [`SYNC_INTERVAL`], until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "reading the registered runners failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            }
        }
    }
}
