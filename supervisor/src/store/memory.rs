//! The in-memory store: the embedded default, so the server runs with no Redis at all.
//!
//! Plain maps behind one `std::sync::Mutex` (not a tokio one: nothing awaits while it is
//! held, so every operation is atomic for free). It mirrors the Redis layout: a ready
//! queue per script type, a delayed set, a lease set ordered by deadline, dependents.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::{
    CancelOutcome, ClaimedJob, Completion, EVENT_CHANNEL_CAPACITY, JobCounts, JobFilter, JobPage,
    JobStore, JobSummary, ListCursor, Outcome, StoreConfig, StoreError, StoreEvent, Trimmed,
    deadline, to_ms, trunc_ms, truncate_line,
};
use crate::clock::Clock;
use crate::job::{Job, JobError, JobId, JobStatus, ScriptType};

/// The in-memory [`JobStore`].
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<StoreEvent>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<JobId, Job>,
    /// `(created ms, id)`: the list_ids index.
    index: BTreeSet<(i64, JobId)>,
    /// Ready ids of the default namespace per script type; the front is the head
    /// (claimed first).
    queues: HashMap<ScriptType, VecDeque<JobId>>,
    /// Ready ids of each numbered context per script type (its namespace's queues).
    lanes: HashMap<(u32, ScriptType), VecDeque<JobId>>,
    /// The open lanes (`set_lane`): context queues only `claim_lane` takes from.
    routes: BTreeSet<(u32, ScriptType)>,
    /// Shared claims so far: where the next one starts its turn over the namespaces.
    turn: usize,
    /// `(not_before ms, id)`.
    delayed: BTreeSet<(i64, JobId)>,
    /// `(lease_until ms, id)`.
    leases: BTreeSet<(i64, JobId)>,
    /// prerequisite -> jobs waiting on it.
    dependents: HashMap<JobId, HashSet<JobId>>,
    /// prerequisite -> every job created naming it, pruned lazily by retention (a job
    /// that has ended no longer needs it): what keeps a needed prerequisite.
    required_by: HashMap<JobId, HashSet<JobId>>,
    /// Ended jobs per terminal status, `(ended ms, id)`: the retention order (Redis:
    /// `<p>:done:<Status>`). A needed job is rescored to when it was found needed.
    done: HashMap<JobStatus, BTreeSet<(i64, JobId)>>,
    /// id -> its score in `done`.
    done_at: HashMap<JobId, i64>,
    logs: HashMap<JobId, VecDeque<String>>,
    /// id -> how many of its log lines were appended and are no longer kept: the
    /// sequence number of its oldest kept line.
    logs_dropped: HashMap<JobId, u64>,
}

/// What [`State::trim`] may remove: ended at or before `cutoff` (ms), or beyond the
/// newest `keep`; at most `max` looked at.
#[derive(Debug, Clone, Copy)]
struct TrimLimits {
    cutoff: i64,
    keep: usize,
    max: usize,
}

/// Events produced under the lock, sent after it is released.
type Events = Vec<StoreEvent>;

impl MemoryStore {
    /// An empty store.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        MemoryStore {
            state: Mutex::new(State::default()),
            config,
            clock,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation checks before it mutates, so a panic mid-way can't leave a
        // half-applied change behind; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        trunc_ms(self.clock.now())
    }

    /// Claims up to `max` ready jobs of `script_type`: from context `context`'s queue
    /// when given (a lane), else from the default queue and every unrouted context
    /// queue with ready jobs, in turn ([`JobStore::claim`]).
    fn claim_from(
        &self,
        context: Option<u32>,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Vec<ClaimedJob> {
        let now = self.now();
        let until = trunc_ms(deadline(now, lease));
        let mut ev = Events::new();
        let mut claimed = Vec::new();
        {
            let mut st = self.lock();
            // The namespaces to take from, in this call's turn (None: the default one).
            let mut order: Vec<Option<u32>> = match context {
                Some(c) => vec![Some(c)],
                None => {
                    let mut ready: Vec<u32> = st
                        .lanes
                        .iter()
                        .filter(|&(&(c, t), q)| {
                            t == script_type && !q.is_empty() && !st.routes.contains(&(c, t))
                        })
                        .map(|(&(c, _), _)| c)
                        .collect();
                    ready.sort_unstable();
                    let mut order: Vec<Option<u32>> = std::iter::once(None)
                        .chain(ready.into_iter().map(Some))
                        .collect();
                    let turn = st.turn % order.len();
                    order.rotate_left(turn);
                    st.turn = st.turn.wrapping_add(1);
                    order
                }
            };
            order.reverse(); // popped from the back
            while claimed.len() < max {
                let Some(&space) = order.last() else {
                    break;
                };
                let queue = match space {
                    Some(c) => st.lanes.get_mut(&(c, script_type)),
                    None => st.queues.get_mut(&script_type),
                };
                let Some(id) = queue.and_then(|q| q.pop_front()) else {
                    order.pop();
                    continue;
                };
                let Some(job) = st.jobs.get_mut(&id) else {
                    continue; // deleted: stale entry
                };
                if job.status != JobStatus::Dispatched {
                    continue; // stale entry
                }
                job.status = JobStatus::Started;
                job.attempt = job.attempt.saturating_add(1);
                job.started_at = Some(now);
                job.updated_at = now;
                job.lease_owner = Some(owner.to_owned());
                job.runner = Some(owner.to_owned());
                job.lease_until = Some(until);
                job.not_before = None;
                let job = job.clone();
                st.leases.insert((to_ms(until), id));
                changed(&mut ev, &job);
                claimed.push(ClaimedJob::Job(job));
            }
        }
        self.emit(ev);
        claimed
    }

    fn emit(&self, events: Events) {
        for e in events {
            // No receiver is fine: nobody is waiting.
            let _ = self.events.send(e);
        }
    }
}

fn changed(ev: &mut Events, job: &Job) {
    ev.push(StoreEvent::JobChanged {
        id: job.id,
        status: job.status,
    });
}

impl State {
    fn job(&self, id: JobId) -> Result<&Job, StoreError> {
        self.jobs.get(&id).ok_or(StoreError::NotFound(id))
    }

    /// The compare-and-set of every outcome ([`State::complete`]): the job is `Started`
    /// on `attempt`.
    fn started_on(&self, id: JobId, attempt: u32, op: &'static str) -> Result<(), StoreError> {
        let job = self.job(id)?;
        if job.status != JobStatus::Started {
            return Err(StoreError::InvalidTransition {
                id,
                from: job.status,
                op,
            });
        }
        if job.attempt != attempt {
            return Err(StoreError::Conflict {
                id,
                expected: attempt,
                current: job.attempt,
            });
        }
        Ok(())
    }

    #[allow(
        clippy::expect_used,
        reason = "every caller checked under this same lock that the job exists"
    )]
    fn job_mut(&mut self, id: JobId) -> &mut Job {
        self.jobs.get_mut(&id).expect("job checked under the lock")
    }

    /// Records that `id` ended (or was found still needed) with `status` at `at`: its
    /// place in the retention order.
    fn mark_done(&mut self, id: JobId, status: JobStatus, at: i64) {
        if let Some(old) = self.done_at.insert(id, at) {
            for set in self.done.values_mut() {
                set.remove(&(old, id));
            }
        }
        self.done.entry(status).or_default().insert((at, id));
    }

    /// Whether a job that has not ended names `id` as a prerequisite; forgets the ones
    /// that ended or are gone.
    fn needed(&mut self, id: JobId) -> bool {
        let Some(set) = self.required_by.get_mut(&id) else {
            return false;
        };
        let jobs = &self.jobs;
        set.retain(|d| jobs.get(d).is_some_and(|j| !j.status.is_terminal()));
        if set.is_empty() {
            self.required_by.remove(&id);
            return false;
        }
        true
    }

    /// One terminal status' step of [`JobStore::trim_finished`].
    fn trim(
        &mut self,
        status: JobStatus,
        limits: &TrimLimits,
        now: DateTime<Utc>,
        out: &mut Trimmed,
        ev: &mut Events,
    ) {
        let TrimLimits { cutoff, keep, max } = *limits;
        let Some(set) = self.done.get(&status) else {
            return;
        };
        let over = set.len().saturating_sub(keep);
        let head: Vec<(i64, JobId)> = set.iter().take(max).copied().collect();
        let mut handled = 0;
        for (i, &(at, id)) in head.iter().enumerate() {
            if at > cutoff && i >= over {
                break;
            }
            handled += 1;
            if self.jobs.get(&id).map(|j| j.status) != Some(status) {
                // Stale entry: nothing else refers to it.
                if let Some(set) = self.done.get_mut(&status) {
                    set.remove(&(at, id));
                }
                self.done_at.remove(&id);
            } else if self.needed(id) {
                self.mark_done(id, status, to_ms(now));
                out.kept_needed += 1;
            } else if self.remove_job(id, now, ev).is_some() {
                out.removed += 1;
            }
        }
        if max > 0 && handled == max {
            out.more = true;
        }
    }

    fn clear_lease(&mut self, id: JobId) {
        let job = self.job_mut(id);
        if let Some(until) = job.lease_until.take() {
            self.leases.remove(&(to_ms(until), id));
        }
        let job = self.job_mut(id);
        job.lease_owner = None;
    }

    /// Queues `id` (at the head when `front`) and records `now` as its `queued_at`.
    fn push_ready(&mut self, id: JobId, front: bool, now: DateTime<Utc>, ev: &mut Events) {
        let job = self.job_mut(id);
        job.queued_at = Some(now);
        let script_type = job.script_type;
        // The queue of the job's namespace, which its id says.
        let q = match id.context() {
            Some(c) => self.lanes.entry((c, script_type)).or_default(),
            None => self.queues.entry(script_type).or_default(),
        };
        if front {
            q.push_front(id);
        } else {
            q.push_back(id);
        }
        ev.push(StoreEvent::WorkAvailable { script_type });
    }

    /// Whether `job` may be created: a new id, every prerequisite stored in the job's
    /// namespace (as Redis looks for it).
    fn check_new(&self, job: &Job) -> Result<(), StoreError> {
        if self.jobs.contains_key(&job.id) {
            return Err(StoreError::AlreadyExists(job.id));
        }
        if let Some(p) = job
            .prerequisites
            .iter()
            .find(|p| p.context() != job.id.context() || !self.jobs.contains_key(p))
        {
            return Err(StoreError::PrerequisiteNotFound(*p));
        }
        Ok(())
    }

    /// Stores `job` (checked by [`State::check_new`]) as `Created` and indexes it.
    fn insert_new(&mut self, job: &Job) {
        let mut job = job.clone();
        // Same resolution as Redis, so both stores return identical jobs.
        job.created_at = trunc_ms(job.created_at);
        job.updated_at = trunc_ms(job.updated_at);
        job.status = JobStatus::Created;
        self.index.insert((to_ms(job.created_at), job.id));
        for p in &job.prerequisites {
            self.required_by.entry(*p).or_default().insert(job.id);
        }
        self.jobs.insert(job.id, job);
    }

    /// `Created` -> queued, waiting or failed ([`JobStore::start`]).
    fn start(
        &mut self,
        id: JobId,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<JobStatus, StoreError> {
        let job = self.job(id)?;
        if job.status != JobStatus::Created {
            return Err(StoreError::InvalidTransition {
                id,
                from: job.status,
                op: "start",
            });
        }
        let mut failed = None;
        let mut waiting = Vec::new();
        for p in &job.prerequisites {
            match self.jobs.get(p).map(|j| j.status) {
                None => {
                    failed = Some(format!("prerequisite {p} no longer exists"));
                    break;
                }
                Some(JobStatus::Error) => {
                    failed = Some(format!("prerequisite {p} failed"));
                    break;
                }
                Some(JobStatus::Finished) => {}
                Some(_) => waiting.push(*p),
            }
        }
        Ok(if let Some(msg) = failed {
            self.end_in_error(id, JobError::prerequisite_failed(msg), now, ev);
            JobStatus::Error
        } else if !waiting.is_empty() {
            for p in waiting {
                self.dependents.entry(p).or_default().insert(id);
            }
            let job = self.job_mut(id);
            job.status = JobStatus::WaitingForPrerequisites;
            job.updated_at = now;
            changed(ev, job);
            JobStatus::WaitingForPrerequisites
        } else {
            let job = self.job_mut(id);
            job.status = JobStatus::Dispatched;
            job.updated_at = now;
            changed(ev, job);
            self.push_ready(id, false, now, ev);
            JobStatus::Dispatched
        })
    }

    fn remove_from_queues(&mut self, job_id: JobId, script_type: ScriptType) {
        let q = match job_id.context() {
            Some(c) => self.lanes.get_mut(&(c, script_type)),
            None => self.queues.get_mut(&script_type),
        };
        if let Some(q) = q {
            q.retain(|&i| i != job_id);
        }
        self.delayed.retain(|&(_, i)| i != job_id);
    }

    /// Ends `id` in Error with `error` and fails its dependents, transitively.
    fn end_in_error(&mut self, id: JobId, error: JobError, now: DateTime<Utc>, ev: &mut Events) {
        self.clear_lease(id);
        let job = self.job_mut(id);
        job.status = JobStatus::Error;
        job.error = Some(error);
        job.finished_at = Some(now);
        job.updated_at = now;
        changed(ev, job);
        self.mark_done(id, JobStatus::Error, to_ms(now));
        self.fail_dependents(id, "failed", now, ev);
    }

    /// Every job waiting on `root`, transitively, ends in `Error(prerequisite_failed)`:
    /// `root`'s own dependents because it `root_what` ("failed", "was deleted"), theirs
    /// because it failed. The one dependent-failing loop (start, outcomes, cancel,
    /// reclaim and delete all use it).
    fn fail_dependents(
        &mut self,
        root: JobId,
        root_what: &str,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) {
        let mut todo = vec![(root, root_what)];
        while let Some((failed, what)) = todo.pop() {
            let Some(deps) = self.dependents.remove(&failed) else {
                continue;
            };
            for d in deps {
                let Some(job) = self.jobs.get_mut(&d) else {
                    continue;
                };
                if job.status != JobStatus::WaitingForPrerequisites {
                    continue;
                }
                job.status = JobStatus::Error;
                job.error = Some(JobError::prerequisite_failed(format!(
                    "prerequisite {failed} {what}"
                )));
                job.finished_at = Some(now);
                job.updated_at = now;
                changed(ev, job);
                self.mark_done(d, JobStatus::Error, to_ms(now));
                todo.push((d, "failed"));
            }
        }
    }

    /// One item of [`JobStore::complete`]: the compare-and-set, then the outcome.
    fn complete(
        &mut self,
        item: &Completion,
        now: DateTime<Utc>,
        ev: &mut Events,
    ) -> Result<(), StoreError> {
        let id = item.id;
        self.started_on(id, item.attempt, item.outcome.op())?;
        self.clear_lease(id);
        match &item.outcome {
            Outcome::Finish(output) => {
                let job = self.job_mut(id);
                job.status = JobStatus::Finished;
                job.output = Some(output.clone());
                job.finished_at = Some(now);
                job.updated_at = now;
                changed(ev, job);
                self.mark_done(id, JobStatus::Finished, to_ms(now));
                self.release_dependents(id, now, ev);
            }
            Outcome::Fail(error) => self.end_in_error(id, error.clone(), now, ev),
            Outcome::RetryLater { not_before, error } => {
                let not_before = trunc_ms(*not_before);
                let job = self.job_mut(id);
                job.status = JobStatus::Dispatched;
                job.not_before = Some(not_before);
                if let Some(error) = error {
                    job.error = Some(error.clone());
                }
                job.updated_at = now;
                changed(ev, job);
                self.delayed.insert((to_ms(not_before), id));
            }
            Outcome::Release => {
                let job = self.job_mut(id);
                job.status = JobStatus::Dispatched;
                job.attempt = job.attempt.saturating_sub(1);
                job.updated_at = now;
                changed(ev, job);
                self.push_ready(id, true, now, ev);
            }
        }
        Ok(())
    }

    fn release_dependents(&mut self, done: JobId, now: DateTime<Utc>, ev: &mut Events) {
        let Some(deps) = self.dependents.remove(&done) else {
            return;
        };
        for d in deps {
            let Some(job) = self.jobs.get(&d) else {
                continue;
            };
            if job.status != JobStatus::WaitingForPrerequisites {
                continue;
            }
            let ready = job.prerequisites.iter().all(|p| {
                self.jobs
                    .get(p)
                    .is_some_and(|p| p.status == JobStatus::Finished)
            });
            if ready {
                let job = self.job_mut(d);
                job.status = JobStatus::Dispatched;
                job.updated_at = now;
                changed(ev, job);
                self.push_ready(d, false, now, ev);
            }
        }
    }

    fn remove_job(&mut self, id: JobId, now: DateTime<Utc>, ev: &mut Events) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        ev.push(StoreEvent::JobDeleted { id });
        self.index.remove(&(to_ms(job.created_at), id));
        if let Some(until) = job.lease_until {
            self.leases.remove(&(to_ms(until), id));
        }
        if job.status == JobStatus::Dispatched {
            self.remove_from_queues(id, job.script_type);
        }
        for p in &job.prerequisites {
            if let Some(set) = self.dependents.get_mut(p) {
                set.remove(&id);
            }
            if let Some(set) = self.required_by.get_mut(p) {
                set.remove(&id);
                if set.is_empty() {
                    self.required_by.remove(p);
                }
            }
        }
        if let Some(at) = self.done_at.remove(&id)
            && let Some(set) = self.done.get_mut(&job.status)
        {
            set.remove(&(at, id));
        }
        self.required_by.remove(&id);
        self.logs.remove(&id);
        self.logs_dropped.remove(&id);
        // Jobs waiting on it can never run now.
        self.fail_dependents(id, "was deleted", now, ev);
        Some(job)
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    fn queue_name(&self, script_type: ScriptType) -> String {
        super::queue_name(&self.config.prefix, script_type)
    }

    fn lane_queue_name(&self, context: u32, script_type: ScriptType) -> String {
        super::lane_name(&self.config.prefix, context, script_type)
    }

    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let mut st = self.lock();
        st.check_new(job)?;
        st.insert_new(job);
        Ok(())
    }

    async fn create_many(&self, jobs: &[Job], start: bool) -> Result<Vec<JobStatus>, StoreError> {
        let now = self.now();
        let mut ev = Events::new();
        let statuses = {
            let mut st = self.lock();
            // Every check before any change: all or nothing.
            let mut ids = HashSet::with_capacity(jobs.len());
            for job in jobs {
                st.check_new(job)?;
                if !ids.insert(job.id) {
                    return Err(StoreError::AlreadyExists(job.id));
                }
            }
            let mut statuses = Vec::with_capacity(jobs.len());
            for job in jobs {
                st.insert_new(job);
                statuses.push(if start {
                    st.start(job.id, now, &mut ev)?
                } else {
                    JobStatus::Created
                });
            }
            statuses
        };
        self.emit(ev);
        Ok(statuses)
    }

    async fn start(&self, id: JobId) -> Result<JobStatus, StoreError> {
        let now = self.now();
        let mut ev = Events::new();
        let status = self.lock().start(id, now, &mut ev)?;
        self.emit(ev);
        Ok(status)
    }

    async fn claim(
        &self,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        Ok(self.claim_from(None, script_type, max, owner, lease))
    }

    async fn claim_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        max: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        Ok(self.claim_from(Some(context), script_type, max, owner, lease))
    }

    async fn set_lane(
        &self,
        context: u32,
        script_type: ScriptType,
        open: bool,
    ) -> Result<(), StoreError> {
        let lane = (context, script_type);
        let mut st = self.lock();
        if open {
            st.routes.insert(lane);
            return Ok(());
        }
        // Its jobs stay on the context's queue, which `claim` now takes from.
        let waiting = st.routes.remove(&lane) && st.lanes.get(&lane).is_some_and(|q| !q.is_empty());
        drop(st);
        if waiting {
            self.emit(vec![StoreEvent::WorkAvailable { script_type }]);
        }
        Ok(())
    }

    async fn lanes(&self) -> Result<Vec<(u32, ScriptType)>, StoreError> {
        Ok(self.lock().routes.iter().copied().collect())
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Vec<JobId>, StoreError> {
        let until = trunc_ms(deadline(self.now(), lease));
        let mut st = self.lock();
        let mut lost = Vec::new();
        for &id in ids {
            let held = st.jobs.get(&id).is_some_and(|j| {
                j.status == JobStatus::Started && j.lease_owner.as_deref() == Some(owner)
            });
            if !held {
                lost.push(id);
                continue;
            }
            let job = st.job_mut(id);
            let old = job.lease_until.replace(until);
            if let Some(old) = old {
                st.leases.remove(&(to_ms(old), id));
            }
            st.leases.insert((to_ms(until), id));
        }
        Ok(lost)
    }

    async fn complete(&self, items: &[Completion]) -> Vec<Result<(), StoreError>> {
        let now = self.now();
        let mut ev = Events::new();
        let results = {
            let mut st = self.lock();
            items
                .iter()
                .map(|item| st.complete(item, now, &mut ev))
                .collect()
        };
        self.emit(ev);
        results
    }

    async fn promote_due(&self, max: usize) -> Result<usize, StoreError> {
        let now = self.now();
        let now_ms = to_ms(now);
        let mut ev = Events::new();
        let mut moved = 0;
        {
            let mut st = self.lock();
            let due: Vec<(i64, JobId)> = st
                .delayed
                .iter()
                .take_while(|(at, _)| *at <= now_ms)
                .take(max)
                .copied()
                .collect();
            for entry in due {
                st.delayed.remove(&entry);
                let id = entry.1;
                let Some(job) = st.jobs.get_mut(&id) else {
                    continue;
                };
                if job.status != JobStatus::Dispatched {
                    continue;
                }
                job.not_before = None;
                st.push_ready(id, false, now, &mut ev);
                moved += 1;
            }
        }
        self.emit(ev);
        Ok(moved)
    }

    async fn reclaim_expired(&self, max: usize) -> Result<Vec<JobId>, StoreError> {
        let now = self.now();
        let now_ms = to_ms(now);
        let mut ev = Events::new();
        let mut handled = Vec::new();
        {
            let mut st = self.lock();
            let expired: Vec<(i64, JobId)> = st
                .leases
                .iter()
                .take_while(|(at, _)| *at < now_ms)
                .take(max)
                .copied()
                .collect();
            for entry in expired {
                st.leases.remove(&entry);
                let id = entry.1;
                let Some(job) = st.jobs.get(&id) else {
                    continue;
                };
                if job.status != JobStatus::Started {
                    continue;
                }
                handled.push(id);
                if job.attempt >= job.max_attempts() {
                    let msg = format!(
                        "lease of {} expired on attempt {} of {}",
                        job.lease_owner.as_deref().unwrap_or("?"),
                        job.attempt,
                        job.max_attempts()
                    );
                    st.end_in_error(id, JobError::runner_lost(msg), now, &mut ev);
                } else {
                    st.clear_lease(id);
                    let job = st.job_mut(id);
                    job.status = JobStatus::Dispatched;
                    job.updated_at = now;
                    changed(&mut ev, job);
                    st.push_ready(id, false, now, &mut ev);
                }
            }
        }
        self.emit(ev);
        Ok(handled)
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let now = self.now();
        let mut ev = Events::new();
        let outcome = {
            let mut st = self.lock();
            let job = st.job(id)?;
            match job.status {
                s if s.is_terminal() => CancelOutcome::AlreadyTerminal(s),
                JobStatus::Started => {
                    let outcome = CancelOutcome::Running {
                        owner: job.lease_owner.clone().unwrap_or_default(),
                        attempt: job.attempt,
                    };
                    let job = st.job_mut(id);
                    job.cancel_requested = true;
                    job.updated_at = now;
                    ev.push(StoreEvent::CancelRequested { id });
                    outcome
                }
                status => {
                    let script_type = job.script_type;
                    if status == JobStatus::Dispatched {
                        st.remove_from_queues(id, script_type);
                    }
                    for p in st.job(id)?.prerequisites.clone() {
                        if let Some(set) = st.dependents.get_mut(&p) {
                            set.remove(&id);
                        }
                    }
                    st.job_mut(id).not_before = None;
                    let error = JobError::cancelled(format!("cancelled while {status}"));
                    st.end_in_error(id, error, now, &mut ev);
                    CancelOutcome::Cancelled
                }
            }
        };
        self.emit(ev);
        Ok(outcome)
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        self.lock().job(id).cloned()
    }

    async fn list_ids(&self) -> Result<Vec<JobId>, StoreError> {
        Ok(self.lock().index.iter().map(|&(_, id)| id).collect())
    }

    async fn list(&self, filter: &JobFilter, budget: usize) -> Result<JobPage, StoreError> {
        use std::ops::Bound;
        let st = self.lock();
        let low = filter
            .after
            .map_or(Bound::Unbounded, |c| Bound::Excluded((c.created_ms, c.id)));
        let after_ms = filter.created_after.map(to_ms);
        let before_ms = filter.created_before.map(to_ms);
        let mut page = JobPage::default();
        let (limit, budget) = (filter.limit.max(1), budget.max(1));
        let mut seen = 0;
        for &(ms, id) in st.index.range((low, Bound::Unbounded)) {
            if after_ms.is_some_and(|a| ms <= a) {
                continue;
            }
            if before_ms.is_some_and(|b| ms >= b) {
                break;
            }
            let job = st.jobs.get(&id);
            if filter.status.is_some() && job.map(|j| j.status) != filter.status {
                // Redis looks at the status' index only: the same budget here.
                continue;
            }
            seen += 1;
            page.looked_at = seen;
            if let Some(job) = job
                && filter.script_type.is_none_or(|t| t == job.script_type)
                && filter
                    .context_id
                    .as_ref()
                    .is_none_or(|c| *c == job.context_id)
                && filter
                    .caller_id
                    .as_ref()
                    .is_none_or(|c| *c == job.caller_id)
            {
                page.jobs.push(JobSummary::from(job));
            }
            if page.jobs.len() >= limit || seen >= budget {
                page.next = Some(ListCursor { created_ms: ms, id });
                break;
            }
        }
        Ok(page)
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let st = self.lock();
        let mut by_status: HashMap<JobStatus, u64> = HashMap::new();
        let mut by_type: HashMap<ScriptType, u64> = HashMap::new();
        for job in st.jobs.values() {
            *by_status.entry(job.status).or_default() += 1;
            *by_type.entry(job.script_type).or_default() += 1;
        }
        Ok(JobCounts {
            by_status: JobStatus::ALL
                .iter()
                .map(|s| (*s, by_status.get(s).copied().unwrap_or(0)))
                .collect(),
            by_script_type: ScriptType::ALL
                .iter()
                .map(|t| (*t, by_type.get(t).copied().unwrap_or(0)))
                .collect(),
            queued: ScriptType::ALL
                .iter()
                .map(|t| {
                    let lanes = st.lanes.iter().filter(|((_, lt), _)| lt == t);
                    let n = st.queues.get(t).map_or(0, VecDeque::len)
                        + lanes.map(|(_, q)| q.len()).sum::<usize>();
                    (*t, n as u64)
                })
                .collect(),
            lanes: st
                .routes
                .iter()
                .map(|&(c, t)| (c, t, st.lanes.get(&(c, t)).map_or(0, |q| q.len() as u64)))
                .collect(),
            delayed: st.delayed.len() as u64,
        })
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        let now = self.now();
        let mut ev = Events::new();
        let removed = self.lock().remove_job(id, now, &mut ev);
        self.emit(ev);
        removed.map(|_| ()).ok_or(StoreError::NotFound(id))
    }

    async fn trim_finished(&self, max: usize) -> Result<Trimmed, StoreError> {
        let now = self.now();
        let keep = chrono::Duration::from_std(self.config.keep_finished)
            .unwrap_or(chrono::Duration::MAX)
            .num_milliseconds();
        let limits = TrimLimits {
            cutoff: to_ms(now).saturating_sub(keep),
            keep: self.config.keep_finished_count,
            max,
        };
        let mut out = Trimmed::default();
        let mut ev = Events::new();
        {
            let mut st = self.lock();
            for status in [JobStatus::Finished, JobStatus::Error] {
                st.trim(status, &limits, now, &mut out, &mut ev);
            }
        }
        self.emit(ev);
        Ok(out)
    }

    async fn clear_all(&self) -> Result<(), StoreError> {
        {
            let mut st = self.lock();
            // The lanes stay open: registrations open them, not jobs.
            let routes = std::mem::take(&mut st.routes);
            *st = State {
                routes,
                ..State::default()
            };
        }
        // Every job is gone: whoever follows one re-reads (and finds it gone).
        self.emit(vec![StoreEvent::Resync]);
        Ok(())
    }

    async fn append_logs(&self, id: JobId, lines: &[String]) -> Result<(), StoreError> {
        {
            let mut st = self.lock();
            st.job(id)?;
            let max = self.config.max_log_lines;
            let logs = st.logs.entry(id).or_default();
            for line in lines {
                logs.push_back(truncate_line(line, self.config.max_log_line_len));
            }
            let excess = logs.len().saturating_sub(max);
            logs.drain(..excess);
            if excess > 0 {
                *st.logs_dropped.entry(id).or_default() += excess as u64;
            }
        }
        self.emit(vec![StoreEvent::LogAppended { id }]);
        Ok(())
    }

    async fn logs(&self, id: JobId) -> Result<Vec<String>, StoreError> {
        let st = self.lock();
        st.job(id)?;
        Ok(st
            .logs
            .get(&id)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn logs_from(
        &self,
        id: JobId,
        from: u64,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let st = self.lock();
        st.job(id)?;
        let dropped = st.logs_dropped.get(&id).copied().unwrap_or(0);
        let first = from.max(dropped);
        let skip = usize::try_from(first - dropped).unwrap_or(usize::MAX);
        let lines = st
            .logs
            .get(&id)
            .map(|l| l.iter().skip(skip).take(limit.max(1)).cloned().collect())
            .unwrap_or_default();
        Ok((first, lines))
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
