//! What a supervisor process counts, served as `GET /metrics` (the Prometheus project's
//! OpenMetrics text format, which Prometheus scrapes as it does its own text format).
//!
//! Every counter and histogram is this process's: the [`Metrics`] of one
//! [`Supervisor`](crate::service::Supervisor), counted where this process does the work,
//! as Prometheus expects of a scrape target. Instances that share one Redis each count
//! their own; add them up in Prometheus (`sum by (..)`). The gauges of the store (jobs by
//! status, queue depths, the signed-call outbox) are read from the shared store at scrape
//! time ([`Snapshot`]), so every instance reports the same figures for them.
//!
//! The job path touches only atomics: counters per script type are fixed arrays of
//! counters (no label lookup), histograms are atomic buckets ([`AtomicHistogram`]).
//! Label lookups (a read lock on a small map) happen only on failures, retries, store
//! errors and RPC calls. Every label value comes from a closed set or from
//! configuration (pool names): an error type a runner made up counts as `other`, an
//! unknown RPC method as `other`, so no input can grow the label space.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `hero_jobs_created_total` | counter | `script_type` | jobs stored by this process |
//! | `hero_jobs_started_total` | counter | `script_type` | attempts this process's dispatcher started (a claimed job sent to a runner; a retry counts again) |
//! | `hero_jobs_finished_total` | counter | `script_type` | attempts recorded `Finished` by this process |
//! | `hero_jobs_failed_total` | counter | `script_type`, `error_type` | jobs this process's dispatcher ended in `Error` (the attempt's final outcome) |
//! | `hero_jobs_retried_total` | counter | `script_type`, `error_type` | attempts that failed and were scheduled to run again |
//! | `hero_jobs_reclaimed_total` | counter | | expired leases (jobs of a dead or stuck instance) this process handled |
//! | `hero_job_attempt_duration_seconds` | histogram | `script_type` | from sending the request to the runner's answer (or the deadline, stop, loss) |
//! | `hero_job_queue_wait_seconds` | histogram | `script_type` | from being queued (`queued_at`) to the claim that started the attempt |
//! | `hero_rpc_calls_total` | counter | `method`, `code` | JSON-RPC calls answered; `code` is `ok` or the JSON-RPC error code |
//! | `hero_store_errors_total` | counter | `op`, `kind` | job store calls that failed: `kind` `unavailable` (Redis down, timeout) or `corrupt` |
//! | `hero_jobs` | gauge | `status` | jobs in the store by status (shared store) |
//! | `hero_queue_depth` | gauge | `script_type` | ready jobs in the shared queue of each type (shared store) |
//! | `hero_lane_depth` | gauge | `context`, `script_type` | ready jobs on each open lane (shared store) |
//! | `hero_jobs_delayed` | gauge | | jobs waiting for a retry time (shared store) |
//! | `hero_calls_outbox` | gauge | | signed-call results waiting for delivery (shared store) |
//! | `hero_calls_running` | gauge | | signed calls running (shared store) |
//! | `hero_runner_connections` | gauge | `pool` | live runner connections of each pool of this process |
//! | `hero_runner_processes` | gauge | `pool` | runner slots configured |
//! | `hero_runner_in_flight` | gauge | `pool` | requests in flight |
//! | `hero_runner_restarts_total` | counter | `pool` | times a slot's runner was started again |
//! | `hero_uptime_seconds` | gauge | | how long this process has served |
//! | `hero_scrape_errors_total` | counter | `source` | store reads of a scrape that failed (`jobs`, `calls`); their gauges are left out of that scrape |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::job::{JobError, JobStatus, ScriptType};
use crate::pool::RunnerInfo;
use crate::store::{JobCounts, StoreError};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the duration histograms: a millisecond to five minutes
/// (the default job timeout).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0,
];

/// The error types counted under their own name; any other is `other`.
const KNOWN_ERROR_TYPES: [&str; 14] = [
    "error",
    "retry",
    JobError::CANCELLED,
    JobError::TIMEOUT,
    JobError::RETRIES_EXHAUSTED,
    JobError::RUNNER_LOST,
    JobError::PREREQUISITE_FAILED,
    JobError::HANDLER_NOT_FOUND,
    JobError::INVALID_REQUEST,
    JobError::CORRUPT,
    hero_protocol::error_type::RUNNER_BUSY,
    hero_protocol::error_type::PANIC,
    "interpreter_not_found",
    "job_deleted",
];

/// `error_type` as a label value: itself when known, else `other`.
pub fn error_label(error_type: &str) -> &'static str {
    KNOWN_ERROR_TYPES
        .iter()
        .find(|known| **known == error_type)
        .copied()
        .unwrap_or("other")
}

/// The label of a store error, `None` for an answer that is not the store failing
/// (not found, a conflict: the caller's business).
pub fn store_error_kind(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::Unavailable(_) => Some("unavailable"),
        StoreError::Corrupt { .. } => Some("corrupt"),
        _ => None,
    }
}

fn index(t: ScriptType) -> usize {
    match t {
        ScriptType::Osis => 0,
        ScriptType::Sal => 1,
        ScriptType::V => 2,
        ScriptType::Python => 3,
    }
}

/// One metric per script type, reached by index (no label lookup); encoded as one
/// family with the label `script_type`.
#[derive(Debug, Default)]
pub struct PerType<M>(Arc<[M; 4]>);

impl<M> Clone for PerType<M> {
    fn clone(&self) -> Self {
        PerType(self.0.clone())
    }
}

impl<M> PerType<M> {
    /// The metric of `t`.
    pub fn of(&self, t: ScriptType) -> &M {
        &self.0[index(t)]
    }
}

impl<M: EncodeMetric> EncodeMetric for PerType<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for t in ScriptType::ALL {
            let labels = [("script_type", t.as_str())];
            self.of(t).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.0[0].metric_type()
    }
}

/// A histogram of durations on atomics alone: observing is three `fetch_add`s, no lock.
/// The sum is kept in microseconds.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Observations per bucket of [`DURATION_BUCKETS`] (not cumulative), the last one
    /// beyond them (`+Inf`).
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| secs <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            // The encoder writes `f64::MAX` as `+Inf`.
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' sum, so a scrape racing an observation stays
        // consistent (count == the +Inf bucket).
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `script_type` and `error_type`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeError {
    /// The job's script type.
    pub script_type: &'static str,
    /// The error type ([`error_label`]).
    pub error_type: &'static str,
}

/// `method` and `code` of a JSON-RPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCall {
    /// A served method's name, or `other`.
    pub method: &'static str,
    /// `ok`, or the error code.
    pub code: RpcCode,
}

/// A JSON-RPC call's result as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RpcCode {
    /// A result.
    Ok,
    /// An error answer with this code.
    Error(i32),
}

impl prometheus_client::encoding::EncodeLabelValue for RpcCode {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self {
            RpcCode::Ok => encoder.write_str("ok"),
            RpcCode::Error(code) => write!(encoder, "{code}"),
        }
    }
}

/// `op` and `kind` of a failed store call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreFailure {
    /// The [`crate::store::JobStore`] method.
    pub op: &'static str,
    /// [`store_error_kind`].
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    context: u32,
    script_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// What one supervisor process counts. Cheap to share (`Arc`); every metric is
/// atomics inside.
#[derive(Debug, Default)]
pub struct Metrics {
    jobs_created: PerType<Counter>,
    jobs_started: PerType<Counter>,
    jobs_finished: PerType<Counter>,
    jobs_failed: Family<TypeError, Counter>,
    jobs_retried: Family<TypeError, Counter>,
    jobs_reclaimed: Counter,
    attempt_duration: PerType<AtomicHistogram>,
    queue_wait: PerType<AtomicHistogram>,
    rpc_calls: Family<RpcCall, Counter>,
    store_errors: Family<StoreFailure, Counter>,
    scrape_errors: Family<SourceLabel, Counter>,
}

/// What a scrape reads besides the counters: the store's figures and the pools'.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The job store's counts; `None` when reading them failed.
    pub jobs: Option<JobCounts>,
    /// The signed-call queues: `(outbox, running)`; `None` when reading them failed.
    pub calls: Option<(u64, u64)>,
    /// This process's runner pools.
    pub runners: Vec<RunnerInfo>,
    /// How long this process has served.
    pub uptime: Duration,
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A job was stored.
    pub fn job_created(&self, t: ScriptType) {
        self.jobs_created.of(t).inc();
    }

    /// An attempt of a job of type `t` starts, `waited` after it was queued.
    pub fn attempt_started(&self, t: ScriptType, waited: Duration) {
        self.jobs_started.of(t).inc();
        self.queue_wait.of(t).observe(waited);
    }

    /// An attempt of a job of type `t` ended (answered or not) after `took`.
    pub fn attempt_ended(&self, t: ScriptType, took: Duration) {
        self.attempt_duration.of(t).observe(took);
    }

    /// An attempt was recorded `Finished`.
    pub fn job_finished(&self, t: ScriptType) {
        self.jobs_finished.of(t).inc();
    }

    /// A job was ended in `Error` with `error_type`.
    pub fn job_failed(&self, t: ScriptType, error_type: &str) {
        self.jobs_failed
            .get_or_create(&TypeError {
                script_type: t.as_str(),
                error_type: error_label(error_type),
            })
            .inc();
    }

    /// An attempt failed with `error_type` and the job will run again.
    pub fn job_retried(&self, t: ScriptType, error_type: &str) {
        self.jobs_retried
            .get_or_create(&TypeError {
                script_type: t.as_str(),
                error_type: error_label(error_type),
            })
            .inc();
    }

    /// Expired leases handled.
    pub fn jobs_reclaimed(&self, n: usize) {
        self.jobs_reclaimed
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A JSON-RPC call was answered.
    pub fn rpc_call(&self, method: &'static str, code: RpcCode) {
        self.rpc_calls
            .get_or_create(&RpcCall { method, code })
            .inc();
    }

    /// A store call `op` failed with `e`; answers that are not failures of the store
    /// ([`store_error_kind`]) are not counted.
    pub fn store_error(&self, op: &'static str, e: &StoreError) {
        if let Some(kind) = store_error_kind(e) {
            self.store_errors
                .get_or_create(&StoreFailure { op, kind })
                .inc();
        }
    }

    /// Jobs started so far, all types (for tests and the benchmark).
    pub fn started_total(&self) -> u64 {
        ScriptType::ALL
            .iter()
            .map(|t| self.jobs_started.of(*t).get())
            .sum()
    }

    /// The OpenMetrics text of every metric, with `snapshot`'s gauges. A part of the
    /// snapshot that could not be read (`None`) is left out and counted in
    /// `hero_scrape_errors_total`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        if snapshot.jobs.is_none() {
            self.scrape_errors
                .get_or_create(&SourceLabel { source: "jobs" })
                .inc();
        }
        if snapshot.calls.is_none() {
            self.scrape_errors
                .get_or_create(&SourceLabel { source: "calls" })
                .inc();
        }
        let mut r = Registry::with_prefix("hero");
        r.register(
            "jobs_created",
            "Jobs stored by this process",
            self.jobs_created.clone(),
        );
        r.register(
            "jobs_started",
            "Attempts started by this process (a claimed job sent to a runner)",
            self.jobs_started.clone(),
        );
        r.register(
            "jobs_finished",
            "Attempts recorded Finished by this process",
            self.jobs_finished.clone(),
        );
        r.register(
            "jobs_failed",
            "Jobs this process's dispatcher ended in Error",
            self.jobs_failed.clone(),
        );
        r.register(
            "jobs_retried",
            "Attempts that failed and were scheduled to run again",
            self.jobs_retried.clone(),
        );
        r.register(
            "jobs_reclaimed",
            "Expired leases handled by this process",
            self.jobs_reclaimed.clone(),
        );
        r.register(
            "job_attempt_duration_seconds",
            "From sending an attempt's request to its end",
            self.attempt_duration.clone(),
        );
        r.register(
            "job_queue_wait_seconds",
            "From being queued to the claim that started the attempt",
            self.queue_wait.clone(),
        );
        r.register(
            "rpc_calls",
            "JSON-RPC calls answered, by method and code (ok or the error code)",
            self.rpc_calls.clone(),
        );
        r.register(
            "store_errors",
            "Job store calls that failed, by operation and kind",
            self.store_errors.clone(),
        );
        r.register(
            "scrape_errors",
            "Store reads of a scrape that failed",
            self.scrape_errors.clone(),
        );
        if let Some(counts) = &snapshot.jobs {
            register_job_gauges(&mut r, counts);
        }
        if let Some((outbox, running)) = snapshot.calls {
            let g = Gauge::<i64>::default();
            g.set(gauge_value(outbox));
            r.register(
                "calls_outbox",
                "Signed-call results waiting for delivery (shared store)",
                g,
            );
            let g = Gauge::<i64>::default();
            g.set(gauge_value(running));
            r.register("calls_running", "Signed calls running (shared store)", g);
        }
        register_runner_metrics(&mut r, &snapshot.runners);
        let uptime = Gauge::<i64>::default();
        uptime.set(gauge_value(snapshot.uptime.as_secs()));
        r.register("uptime_seconds", "How long this process has served", uptime);
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &r);
        text
    }
}

fn register_job_gauges(r: &mut Registry, counts: &JobCounts) {
    let by_status = Family::<StatusLabel, Gauge>::default();
    for status in JobStatus::ALL {
        let n = counts
            .by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        by_status
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .set(gauge_value(n));
    }
    r.register(
        "jobs",
        "Jobs in the store by status (shared store)",
        by_status,
    );
    let depth = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    for t in ScriptType::ALL {
        let n = counts
            .queued
            .iter()
            .find(|(q, _)| *q == t)
            .map_or(0, |(_, n)| *n);
        depth
            .get_or_create(&[("script_type", t.as_str())])
            .set(gauge_value(n));
    }
    r.register(
        "queue_depth",
        "Ready jobs in each type's shared queue (shared store)",
        depth,
    );
    let lanes = Family::<LaneLabel, Gauge>::default();
    for (context, t, n) in &counts.lanes {
        lanes
            .get_or_create(&LaneLabel {
                context: *context,
                script_type: t.as_str(),
            })
            .set(gauge_value(*n));
    }
    r.register(
        "lane_depth",
        "Ready jobs on each open lane (shared store)",
        lanes,
    );
    let delayed = Gauge::<i64>::default();
    delayed.set(gauge_value(counts.delayed));
    r.register(
        "jobs_delayed",
        "Jobs waiting for a retry time (shared store)",
        delayed,
    );
}

fn register_runner_metrics(r: &mut Registry, runners: &[RunnerInfo]) {
    let connections = Family::<PoolLabel, Gauge>::default();
    let processes = Family::<PoolLabel, Gauge>::default();
    let in_flight = Family::<PoolLabel, Gauge>::default();
    let restarts = Family::<PoolLabel, Counter>::default();
    for info in runners {
        let pool = PoolLabel {
            pool: info.name.clone(),
        };
        connections
            .get_or_create(&pool)
            .set(gauge_value(info.connected));
        processes
            .get_or_create(&pool)
            .set(gauge_value(info.processes));
        in_flight
            .get_or_create(&pool)
            .set(gauge_value(info.in_flight));
        restarts.get_or_create(&pool).inc_by(info.restarts);
    }
    r.register(
        "runner_connections",
        "Live runner connections of each pool of this process",
        connections,
    );
    r.register(
        "runner_processes",
        "Runner slots configured per pool",
        processes,
    );
    r.register("runner_in_flight", "Requests in flight per pool", in_flight);
    r.register(
        "runner_restarts",
        "Times a pool's runner was started again",
        restarts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_error_types_share_one_label() {
        assert_eq!(error_label("timeout"), "timeout");
        assert_eq!(error_label("runner_lost"), "runner_lost");
        assert_eq!(error_label("made-up-by-a-runner-123"), "other");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let m = Metrics::default();
        m.attempt_ended(ScriptType::Sal, Duration::from_micros(500));
        m.attempt_ended(ScriptType::Sal, Duration::from_millis(30));
        m.attempt_ended(ScriptType::Sal, Duration::from_secs(1000));
        let text = m.render(&Snapshot::default());
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let sal = "hero_job_attempt_duration_seconds";
        assert_eq!(line(&format!("{sal}_count{{script_type=\"SAL\"}}")), "3");
        assert_eq!(
            line(&format!("{sal}_bucket{{le=\"0.001\",script_type=\"SAL\"}}")),
            "1"
        );
        assert_eq!(
            line(&format!("{sal}_bucket{{le=\"0.05\",script_type=\"SAL\"}}")),
            "2"
        );
        assert_eq!(
            line(&format!("{sal}_bucket{{le=\"300.0\",script_type=\"SAL\"}}")),
            "2"
        );
        assert_eq!(
            line(&format!("{sal}_bucket{{le=\"+Inf\",script_type=\"SAL\"}}")),
            "3"
        );
        assert_eq!(
            line(&format!("{sal}_sum{{script_type=\"SAL\"}}")),
            "1000.0305"
        );
        assert_eq!(line(&format!("{sal}_count{{script_type=\"OSIS\"}}")), "0");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Neither store figure could be read: counted, and no gauge of theirs shown.
        assert!(!text.contains("hero_queue_depth"), "{text}");
        assert!(
            text.contains("hero_scrape_errors_total{source=\"jobs\"} 1"),
            "{text}"
        );
    }
}
