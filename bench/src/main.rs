//! # hero-bench
//!
//! The supervisor's benchmark (issue 8, DESIGN.md "Performance targets"): prints the
//! machine, the Redis ceiling measured in the same run, and one markdown table.
//!
//! ```text
//! cargo build --release -p hero-bench
//! cargo run --release -p hero-bench -- [--jobs N] [--only burn-down,peer-bullmq,memory,rpc,
//!     retention,builtin-http,enqueue,multi-instance] [--repeat K]
//! ```
//!
//! Scenarios (`--only`, comma-separated; all when absent): `burn-down` (=
//! `burn-down-memory` + `burn-down-redis`), `peer-bullmq` (BullMQ's burn-down on its own
//! private Redis, same `--jobs` and `--repeat`, by `bench/peers/bullmq/burn_down.mjs`:
//! needs Node.js and npm, installs the locked BullMQ there with `npm ci` on first use
//! (exactly the lock file, no fallback), and its row says "not measured: <reason>" when it
//! cannot run), `memory`, `rpc`, `retention` (the memory
//! store's RSS over 1,000,000 finished jobs, retention on and off), `builtin-http` (a real
//! `hero-supervisor serve` process, 64 HTTP clients calling `run_job` of a trivial SAL and
//! OSIS script, the built-in runner against `hero-noop-runner`, memory store and Redis;
//! and one client's idle round trips; needs `cargo build --release -p hero-supervisor`
//! too), `enqueue` (bulk create-and-start over HTTP, `create_jobs` calls and JSON-RPC
//! batch requests to a `serve` process, beside BullMQ's `addBulk` of as many jobs by
//! `bench/peers/bullmq/enqueue.mjs`), `multi-instance` (1, 2, 3 `serve` processes on one
//! Redis draining one queue: jobs/s and Redis CPU per job), `contexts-cluster` (the Redis
//! burn-down with the jobs spread over 8 numbered contexts, on one Redis and on a private
//! Redis Cluster of three masters and three replicas, `--redis-cluster` mode; needs
//! `redis-cli`; not part of `--only burn-down`). Other flags:
//! `--processes 1,2` (runner processes tried in the burn-down; the best is reported),
//! `--in-flight N` (pool's requests in flight per runner process, default 512),
//! `--repeat K` (runs per burn-down setting, the median is reported; default 3),
//! `--clients N` (concurrent HTTP clients and `redis-benchmark -c`, default 50),
//! `--rpc-calls N` (idle round trips, default 2,000), `--steady-calls N` (calls in the
//! steady state, default 20,000), `--builtin-calls N` (calls per script and round in
//! `builtin-http`, default 10,000; its rounds are `--repeat`), `--builtin-runner PATH`
//! (`builtin-http` measures this `hero-runner` instead of `serve`'s built-in runner),
//! `--enqueue-in-flight N` (`enqueue`'s clients and BullMQ's `addBulk` calls in flight,
//! default 8), `--instances 1,2,3` (`multi-instance`'s process counts). `--rpc-calls` is
//! also `builtin-http`'s idle calls per round and runner.
//!
//! After a Redis burn-down the report ends with a table of Redis' work per job
//! (`commandstats.rs`: `INFO commandstats`, `stats`, `cpu` of the private redis-server).

mod builtin_http;
mod burn_down;
mod ceiling;
mod commandstats;
mod enqueue;
mod latency;
mod machine;
mod memory;
mod multi;
mod output;
mod peers;
mod retention;
#[cfg(feature = "rpc")]
mod rpc;
mod serve;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hero_testkit::RedisServer;

use crate::burn_down::StoreKind;
use crate::ceiling::Ceiling;
use crate::output::{Row, progress, thousands};

/// Redis burn-down target: this many times BullMQ's, measured in the same run (issue 8's
/// second round; the first was twice BullMQ).
const TARGET_REDIS_VS_BULLMQ: f64 = 3.0;
/// Memory-store burn-down target, jobs/s.
const TARGET_MEMORY: f64 = 150_000.0;
/// Idle `run_job` round trip targets over HTTP with Redis, ms.
const TARGET_P50_MS: f64 = 0.5;
const TARGET_P99_MS: f64 = 1.0;
/// Steady state, 64 HTTP clients calling `run_job` on Redis: calls/s with the no-op
/// runner, and with the built-in runner on a trivial SAL script.
const TARGET_STEADY_NOOP: f64 = 15_000.0;
const TARGET_STEADY_BUILTIN: f64 = 10_000.0;
/// Bulk create-and-start over HTTP: this many times BullMQ's `addBulk`, same run.
const TARGET_ENQUEUE_VS_BULLMQ: f64 = 2.0;
/// Memory is "flat" when the peak grows by less than this per extra queued job: a job
/// held in memory costs far more (its `Job` record alone is several hundred bytes).
const FLAT_BYTES_PER_JOB: f64 = 64.0;
/// Jobs queued for the smaller memory probes (then `--jobs`).
const SMALL_PROBES: [usize; 2] = [1_000, 10_000];
/// `redis-benchmark -n`.
const CEILING_REQUESTS: usize = 200_000;

/// The flags; `hero-bench --help` lists them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hero-bench",
    version,
    about = "Benchmarks of the hero supervisor (burn-down, memory, JSON-RPC round trips), \
             each beside the Redis ceiling and BullMQ measured in the same run"
)]
struct Args {
    /// No-op jobs per burn-down (and in the largest memory probe).
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Scenarios to run, comma-separated [default: all].
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS)
    )]
    only: Option<Vec<String>>,
    /// Runs per burn-down setting; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Runner processes tried in the burn-down, comma-separated; the best is reported.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    processes: Vec<usize>,
    /// Requests in flight per runner process.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// Concurrent HTTP clients (and `redis-benchmark -c`).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Idle `run_job` round trips.
    #[arg(long, default_value_t = 2_000)]
    rpc_calls: usize,
    /// `run_job` calls in the steady state.
    #[arg(long, default_value_t = 20_000)]
    steady_calls: usize,
    /// `run_job` calls per script and round in `builtin-http` (rounds: `--repeat`).
    #[arg(long, default_value_t = 10_000)]
    builtin_calls: usize,
    /// `builtin-http`: measure this `hero-runner` executable (run as `PATH --stdio`) as the
    /// built-in runner instead of `serve`'s own, e.g. one built from another commit.
    #[arg(long, value_name = "PATH")]
    builtin_runner: Option<PathBuf>,
    /// `enqueue`: HTTP clients each with one batch in flight (and BullMQ `addBulk` calls in
    /// flight).
    #[arg(long, default_value_t = 8)]
    enqueue_in_flight: usize,
    /// `multi-instance`: how many `serve` processes drain the queue, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    instances: Vec<usize>,
    /// Internal: the child process of the retention scenario.
    #[arg(long, hide = true)]
    retention_probe: bool,
    /// Internal: the retention probe's `keep_finished_count` (absent: retention off).
    #[arg(long, hide = true)]
    retention_keep: Option<usize>,
    /// Internal: the child process of the memory scenario.
    #[arg(long, hide = true, requires_all = ["redis_url", "runner"])]
    memory_probe: bool,
    /// Internal: the memory probe's Redis.
    #[arg(long, hide = true)]
    redis_url: Option<String>,
    /// Internal: the memory probe's runner.
    #[arg(long, hide = true)]
    runner: Option<PathBuf>,
}

impl Args {
    /// What clap does not check.
    fn check(&self) -> Result<()> {
        if self.jobs == 0
            || self.repeat == 0
            || self.processes.is_empty()
            || self.clients == 0
            || self.builtin_calls == 0
            || self.rpc_calls == 0
            || self.enqueue_in_flight == 0
            || self.instances.is_empty()
            || self.instances.contains(&0)
        {
            bail!(
                "--jobs, --repeat, --processes, --clients, --builtin-calls, --rpc-calls, \
                 --enqueue-in-flight and --instances must be positive"
            );
        }
        Ok(())
    }

    fn wants(&self, scenario: &str) -> bool {
        match &self.only {
            None => true,
            Some(only) => only
                .iter()
                .any(|s| s == scenario || (s == "burn-down" && scenario.starts_with("burn-down-"))),
        }
    }
}

const SCENARIOS: [&str; 11] = [
    "contexts-cluster",
    "burn-down",
    "burn-down-memory",
    "burn-down-redis",
    "peer-bullmq",
    "memory",
    "rpc",
    "retention",
    "builtin-http",
    "enqueue",
    "multi-instance",
];

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Contexts the `contexts-cluster` burn-down spreads its jobs over.
const CLUSTER_CONTEXTS: u32 = 8;

/// The `contexts-cluster` rows: the burn-down over 8 contexts on one Redis, then on a
/// Redis Cluster (3 masters + 3 replicas on this machine), same jobs, same runners.
async fn contexts_cluster_rows(
    args: &Args,
    runner: &std::path::Path,
    ceiling: &Ceiling,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let p = args.processes.iter().copied().max().unwrap_or(1);
    let mut medians = Vec::new();
    for kind in [StoreKind::Redis, StoreKind::Cluster] {
        let mut rates = Vec::new();
        let mut queue_rates = Vec::new();
        for r in 1..=args.repeat {
            let run =
                burn_down::run_in(kind, args.jobs, p, args.in_flight, runner, CLUSTER_CONTEXTS)
                    .await?;
            progress(&format!(
                "burn-down over {CLUSTER_CONTEXTS} contexts, {} store, run {r}/{}: {} jobs in {:.3} s = {} jobs/s \
                 (queued in {:.1} s)",
                kind.name(),
                args.repeat,
                run.jobs,
                run.drain_secs,
                thousands(run.jobs_per_sec()),
                run.queue_secs
            ));
            rates.push(run.jobs_per_sec());
            queue_rates.push(run.jobs as f64 / run.queue_secs.max(1e-3));
        }
        let best = median(rates);
        let queued = median(queue_rates);
        medians.push(best);
        rows.push(Row {
            scenario: format!("burn-down, {CLUSTER_CONTEXTS} contexts"),
            store: kind.name().to_owned(),
            setting: format!(
                "{} no-op jobs over {CLUSTER_CONTEXTS} contexts, {p} runner process(es) x {} in \
                 flight, median of {}; queued (create + start, 64 in flight) at {} jobs/s",
                thousands(args.jobs as f64),
                args.in_flight,
                args.repeat,
                thousands(queued)
            ),
            figure: format!("{} jobs/s", thousands(best)),
            ceiling: vs_ceiling(best, ceiling),
            target: "-".to_owned(),
            met: None,
        });
    }
    if let [one, cluster] = medians[..] {
        notes.push(format!(
            "cluster / one Redis, burn-down over {CLUSTER_CONTEXTS} contexts, same run: {:.2}x \
             (the cluster's six redis-servers, their replication and the WAIT after each \
             create and start share this machine's cores with the supervisor and the runners: \
             on one machine this is what cluster mode costs, not what more masters add)",
            cluster / one
        ));
    }
    Ok(())
}

fn vs_ceiling(rate: f64, ceiling: &Ceiling) -> String {
    format!(
        "{:.0}% of {} ops/s (-c {})",
        100.0 * rate / ceiling.ops(),
        thousands(ceiling.ops()),
        ceiling.clients
    )
}

/// Worker threads of the runtime the supervisor runs on in this process: what
/// `hero-supervisor serve` takes (`HERO_WORKER_THREADS`, else the cores less one).
fn worker_threads() -> usize {
    std::env::var("HERO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(hero_supervisor::runtime::default_worker_threads)
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.check()?;
    // `run` is a task on the runtime's workers, not `block_on`'s own future on the main
    // thread: its event counting would otherwise wake a parked thread per event.
    hero_supervisor::runtime::build(worker_threads())
        .context("start the tokio runtime")?
        .block_on(async { tokio::spawn(run(args)).await })
        .context("the benchmark task panicked")?
}

async fn run(args: Args) -> Result<()> {
    if args.retention_probe {
        return retention::probe(args.retention_keep).await;
    }
    if args.memory_probe {
        let url = args
            .redis_url
            .as_deref()
            .context("--memory-probe needs --redis-url")?;
        let runner = args
            .runner
            .clone()
            .context("--memory-probe needs --runner")?;
        let processes = args.processes.first().copied().unwrap_or(1);
        return memory::probe(url, args.jobs, processes, args.in_flight, &runner).await;
    }
    let runner = burn_down::noop_runner()?;
    let machine = machine::Machine::detect();
    let load_at_start = machine::load_average();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut tables = Vec::new();

    // The ceiling: the bench's own private redis-server, at the HTTP client count and at
    // one client (the store talks to Redis over one multiplexed connection).
    progress("measuring the Redis ceiling (redis-benchmark)");
    let ceiling_server = RedisServer::start();
    let ceiling = ceiling::measure(ceiling_server.socket_path(), args.clients, CEILING_REQUESTS)?;
    let single = ceiling::measure(ceiling_server.socket_path(), 1, CEILING_REQUESTS)?;
    drop(ceiling_server);
    let ceiling_lines = [&ceiling, &single]
        .iter()
        .map(|c| {
            format!(
                "Redis ceiling (`redis-benchmark -q -t lpush,rpop -n {CEILING_REQUESTS} -c {} -s <socket>`, \
                 same run, private redis-server): LPUSH {} requests/s, RPOP {} requests/s",
                c.clients,
                thousands(c.lpush),
                thousands(c.rpop)
            )
        })
        .collect::<Vec<_>>();

    // Hero's Redis burn-down figure, for the ratio to BullMQ's.
    let mut hero_redis = None;
    for kind in [StoreKind::Memory, StoreKind::Redis] {
        if !args.wants(&format!("burn-down-{}", kind.name())) {
            continue;
        }
        let mut by_processes = Vec::new();
        let mut work_by_processes = Vec::new();
        for &p in &args.processes {
            let mut rates = Vec::new();
            let mut work = commandstats::Work::default();
            for r in 1..=args.repeat {
                let run = burn_down::run(kind, args.jobs, p, args.in_flight, &runner).await?;
                progress(&format!(
                    "burn-down {} store, {p} runner process(es), run {r}/{}: {} jobs in {:.3} s = {} jobs/s \
                     (queued in {:.1} s, {} events lagged)",
                    kind.name(),
                    args.repeat,
                    run.jobs,
                    run.drain_secs,
                    thousands(run.jobs_per_sec()),
                    run.queue_secs,
                    run.lagged
                ));
                rates.push(run.jobs_per_sec());
                if let Some(w) = &run.work {
                    work.add(w);
                }
            }
            by_processes.push((p, median(rates)));
            work_by_processes.push((p, work));
        }
        let Some(&(best_p, best)) = by_processes.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            continue;
        };
        let others = by_processes
            .iter()
            .filter(|(p, _)| *p != best_p)
            .map(|(p, r)| format!("{p} proc: {} jobs/s", thousands(*r)))
            .collect::<Vec<_>>();

        let mut setting = format!(
            "{} no-op jobs, {best_p} runner process(es) x {} in flight, median of {}",
            thousands(args.jobs as f64),
            args.in_flight,
            args.repeat
        );
        if !others.is_empty() {
            setting.push_str(&format!(" ({})", others.join(", ")));
        }
        // The Redis row's target is a ratio to BullMQ's run, filled in with its row.
        let (target, met) = match kind {
            StoreKind::Memory => (
                format!(">= {} jobs/s", thousands(TARGET_MEMORY)),
                Some(best >= TARGET_MEMORY),
            ),
            StoreKind::Redis => {
                hero_redis = Some((best, rows.len()));
                (
                    format!(">= {TARGET_REDIS_VS_BULLMQ}x BullMQ (same run; not measured)"),
                    None,
                )
            }
            // The cluster is measured by `contexts-cluster`, against one Redis.
            StoreKind::Cluster => ("-".to_owned(), None),
        };
        rows.push(Row {
            scenario: "burn-down".to_owned(),
            store: kind.name().to_owned(),
            setting,
            figure: format!("{} jobs/s", thousands(best)),
            ceiling: vs_ceiling(best, &ceiling),
            target,
            met,
        });
        if let Some((_, work)) = work_by_processes
            .iter()
            .find(|(p, w)| *p == best_p && w.runs > 0)
        {
            tables.push(format!(
                "Redis work per job, burn-down redis, {best_p} runner process(es), {} runs of {} jobs \
                 (`INFO commandstats`/`stats`/`cpu` of the private redis-server read before queueing, \
                 before the supervisor starts and after the last job finished; queue = create + start \
                 per job, drain = the supervisor's claims, completions and upkeep; a command a script \
                 runs is counted under its own name too and its time is inside EVALSHA's):\n\n{}",
                work.runs,
                thousands(args.jobs as f64),
                work.table()
            ));
        }
    }

    if args.wants("contexts-cluster") {
        contexts_cluster_rows(&args, &runner, &ceiling, &mut rows, &mut notes).await?;
    }

    if args.wants("peer-bullmq") {
        peer_bullmq_row(&args, &ceiling, hero_redis, &mut rows, &mut notes).await;
    }

    if args.wants("memory") {
        let p = args.processes.first().copied().unwrap_or(1);
        let mut probes = Vec::new();
        let sizes = SMALL_PROBES
            .into_iter()
            .filter(|&n| n < args.jobs)
            .chain([args.jobs]);
        for n in sizes {
            let probe = memory::measure(n, p, args.in_flight, &runner).await?;
            progress(&format!(
                "memory: {} jobs queued in Redis: peak RSS {} ({} before the supervisor started), drained in {:.2} s",
                thousands(n as f64),
                mib(probe.peak_kb),
                mib(probe.before_kb),
                probe.drain_secs
            ));
            probes.push(probe);
        }
        // The baseline is the probe before the largest: 1,000 jobs drain in a few tens of
        // ms, before the dispatcher reaches its steady in-flight level, so the step from
        // it is warm-up, not growth with the queue.
        let base = probes[probes.len().saturating_sub(2)];
        let last = probes.len() - 1;
        for (i, probe) in probes.iter().enumerate() {
            let is_big = i == last && probes.len() > 1;
            // Bytes of peak RSS per extra queued job, against the baseline.
            let per_job = (probe.peak_kb as f64 - base.peak_kb as f64) * 1024.0
                / (probe.jobs as f64 - base.jobs as f64);
            let flat = per_job < FLAT_BYTES_PER_JOB;
            rows.push(Row {
                scenario: "memory: supervisor peak RSS (VmHWM)".to_owned(),
                store: "redis".to_owned(),
                setting: format!(
                    "{} jobs queued, then drained; {p} runner process(es)",
                    thousands(probe.jobs as f64)
                ),
                figure: if is_big {
                    format!(
                        "{} ({per_job:.0} B per extra queued job)",
                        mib(probe.peak_kb)
                    )
                } else {
                    mib(probe.peak_kb)
                },
                ceiling: "-".to_owned(),
                target: if is_big {
                    format!(
                        "flat: < {FLAT_BYTES_PER_JOB:.0} B per extra queued job vs {} jobs",
                        thousands(base.jobs as f64)
                    )
                } else {
                    "reference".to_owned()
                },
                met: is_big.then_some(flat),
            });
        }
        notes.push(
            "Memory: peak RSS (VmHWM of /proc/self/status) of a child bench process that runs \
             the supervisor in-process (tokio runtime, RedisStore, dispatcher, runner pool; \
             runner processes not counted), over a Redis where the parent queued the jobs first."
                .to_owned(),
        );
    }

    if args.wants("rpc") {
        rpc_rows(&args, &runner, &ceiling, &mut rows, &mut notes).await?;
    }

    if args.wants("retention") {
        retention_rows(&mut rows, &mut notes).await?;
    }

    if args.wants("builtin-http") {
        builtin_http_rows(&args, &runner, &ceiling, &mut rows, &mut notes).await?;
    }

    if args.wants("enqueue") {
        enqueue_rows(&args, &runner, &ceiling, &mut rows, &mut notes).await?;
    }

    if args.wants("multi-instance") {
        multi_instance_rows(&args, &runner, &mut rows, &mut notes).await?;
    }

    notes.push(format!(
        "Burn-down: jobs created and started through the store before the supervisor starts; \
         timed from Supervisor::start (includes spawning the runner processes) to the last \
         JobChanged(Finished) event; runner: hero-noop-runner (SDK, success \"\" at once); \
         the bench, the supervisor, the runners and redis-server share the {} cores; \
         the supervisor's runtime has {} worker thread(s), as `hero-supervisor serve` \
         takes on this machine (HERO_WORKER_THREADS overrides).",
        machine.cores,
        worker_threads()
    ));
    notes.push(format!(
        "Machine load (`/proc/loadavg`, 1, 5 and 15 min): {load_at_start} at the start, {} at \
         the end; whatever else runs on the machine shares its cores with every scenario, so \
         compare figures of one run (ratios), not across runs.",
        machine::load_average()
    ));
    output::report(&machine, &ceiling_lines, &rows, &notes, &tables);
    Ok(())
}

/// The `peer-bullmq` row: BullMQ's burn-down median, or why it was not measured; and,
/// when hero's Redis burn-down ran too (its figure and row), the ratio: in that row's
/// target and in a note.
async fn peer_bullmq_row(
    args: &Args,
    ceiling: &Ceiling,
    hero_redis: Option<(f64, usize)>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let (jobs, repeat) = (args.jobs, args.repeat);
    // Blocking child processes; a panic there (no redis-server) becomes a reason too.
    let measured = tokio::task::spawn_blocking(move || peers::bullmq(jobs, repeat))
        .await
        .unwrap_or_else(|e| Err(format!("the BullMQ run panicked: {e}")));
    let concurrency = peers::BULLMQ_CONCURRENCY;
    let (setting, figure, vs) = match &measured {
        Ok(bullmq) => {
            let rate = bullmq.median();
            (
                format!(
                    "BullMQ {}, {} no-op jobs, 1 worker process, concurrency {concurrency}, \
                     removeOnComplete, median of {repeat}",
                    bullmq.version,
                    thousands(jobs as f64)
                ),
                format!("{} jobs/s", thousands(rate)),
                vs_ceiling(rate, ceiling),
            )
        }
        Err(reason) => {
            progress(&format!("peer BullMQ not measured: {reason}"));
            (
                format!(
                    "BullMQ, {} no-op jobs, 1 worker process, concurrency {concurrency}, \
                     removeOnComplete",
                    thousands(jobs as f64)
                ),
                format!("not measured: {reason}"),
                "-".to_owned(),
            )
        }
    };
    rows.push(Row {
        scenario: "burn-down (peer)".to_owned(),
        store: "redis".to_owned(),
        setting,
        figure,
        ceiling: vs,
        target: "-".to_owned(),
        met: None,
    });
    if let Ok(bullmq) = &measured {
        notes.push(format!(
            "BullMQ peer: `node bench/peers/bullmq/burn_down.mjs` (BullMQ {}, pinned by its \
             package-lock.json) on its own private redis-server (unix socket); the jobs queued \
             first with addBulk, timed from creating one Worker (concurrency {concurrency}, \
             a processor that returns at once) to its last `completed` event; node and \
             redis-server share the same cores.",
            bullmq.version
        ));
        if let Some((hero, row)) = hero_redis {
            let ratio = hero / bullmq.median();
            notes.push(format!(
                "hero / BullMQ burn-down through Redis, same run: {ratio:.2}x"
            ));
            if let Some(row) = rows.get_mut(row) {
                row.target = format!(">= {TARGET_REDIS_VS_BULLMQ}x BullMQ (same run): {ratio:.2}x");
                row.met = Some(ratio >= TARGET_REDIS_VS_BULLMQ);
            }
        }
    }
}

#[cfg(feature = "rpc")]
async fn rpc_rows(
    args: &Args,
    runner: &std::path::Path,
    ceiling: &Ceiling,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let figures = rpc::measure(
        args.rpc_calls,
        args.steady_calls,
        args.clients,
        args.in_flight,
        runner,
    )
    .await?;
    let idle = &figures.idle;
    let steady = &figures.steady;
    progress(&format!(
        "rpc: idle p50 {:.3} ms p99 {:.3} ms; steady {} calls/s",
        idle.quantile_ms(0.5),
        idle.quantile_ms(0.99),
        thousands(steady.per_sec())
    ));
    let idle_setting = format!(
        "HTTP run_job, 1 client, one call at a time, {} calls",
        thousands(idle.calls as f64)
    );
    for (q, target) in [(0.5, TARGET_P50_MS), (0.99, TARGET_P99_MS)] {
        let ms = idle.quantile_ms(q);
        rows.push(Row {
            scenario: format!("idle round trip p{:.0}", q * 100.0),
            store: "redis".to_owned(),
            setting: idle_setting.clone(),
            figure: format!("{ms:.3} ms"),
            ceiling: "-".to_owned(),
            target: format!("<= {target} ms"),
            met: Some(ms <= target),
        });
    }
    rows.push(Row {
        scenario: "steady state".to_owned(),
        store: "redis".to_owned(),
        setting: format!(
            "HTTP run_job, {} concurrent clients, {} calls",
            figures.clients,
            thousands(steady.calls as f64)
        ),
        figure: format!(
            "{} calls/s; p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            thousands(steady.per_sec()),
            steady.quantile_ms(0.5),
            steady.quantile_ms(0.9),
            steady.quantile_ms(0.99)
        ),
        ceiling: vs_ceiling(steady.per_sec(), ceiling),
        target: "-".to_owned(),
        met: None,
    });
    notes.push(
        "RPC: jsonrpsee HTTP client and server on loopback, supervisor over the Redis store, \
         1 no-op runner process; latency from the client's call to its answer."
            .to_owned(),
    );
    Ok(())
}

#[cfg(not(feature = "rpc"))]
async fn rpc_rows(
    _args: &Args,
    _runner: &std::path::Path,
    _ceiling: &Ceiling,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    for scenario in ["idle round trip p50 / p99", "steady state"] {
        rows.push(Row {
            scenario: scenario.to_owned(),
            store: "redis".to_owned(),
            setting: "HTTP run_job".to_owned(),
            figure: "not measured".to_owned(),
            ceiling: "-".to_owned(),
            target: if scenario.starts_with("idle") {
                format!("p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms")
            } else {
                "-".to_owned()
            },
            met: None,
        });
    }
    notes.push(
        "RPC: not measured: hero-bench was built without its `rpc` feature (the \
         `hero_supervisor::rpc` server); build with `--features rpc`."
            .to_owned(),
    );
    Ok(())
}

/// Built-in runner calls/s at least this fraction of the no-op runner's (DESIGN.md).
const TARGET_BUILTIN_RATIO: f64 = 0.75;

/// The `builtin-http` rows: per store the no-op runner, then the built-in runner on each
/// script with its ratio to the no-op runner's calls/s (medians over the rounds).
async fn builtin_http_rows(
    args: &Args,
    noop: &std::path::Path,
    ceiling: &Ceiling,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    // Medians over the rounds: calls/s, p50, p99, runner CPU µs per call.
    let medians = |runs: &[builtin_http::Measured]| {
        (
            median(runs.iter().map(|m| m.latencies.per_sec()).collect()),
            median(runs.iter().map(|m| m.latencies.quantile_ms(0.5)).collect()),
            median(runs.iter().map(|m| m.latencies.quantile_ms(0.99)).collect()),
            median(runs.iter().map(|m| m.cpu_per_call().1).collect()),
        )
    };
    let setting = |runner: &str, script: &str| {
        format!(
            "HTTP run_job {script}, {runner}, {} clients, {} calls, median of {}",
            builtin_http::CLIENTS,
            thousands(args.builtin_calls as f64),
            args.repeat
        )
    };
    for store in [StoreKind::Memory, StoreKind::Redis] {
        let runners = builtin_http::Runners {
            noop: noop.to_owned(),
            builtin: args.builtin_runner.clone(),
        };
        let figures = builtin_http::run(
            store,
            &runners,
            args.builtin_calls,
            args.rpc_calls,
            args.repeat,
        )
        .await?;
        let redis = store == StoreKind::Redis;
        // Steady state on Redis has targets of its own; in memory it is the reference.
        let (noop_rate, p50, p99, noop_cpu) = medians(&figures.noop);
        let (target, met) = if redis {
            (
                format!(">= {} calls/s", thousands(TARGET_STEADY_NOOP)),
                Some(noop_rate >= TARGET_STEADY_NOOP),
            )
        } else {
            ("reference".to_owned(), None)
        };
        rows.push(Row {
            scenario: "steady state (builtin-http)".to_owned(),
            store: store.name().to_owned(),
            setting: setting("hero-noop-runner", builtin_http::SCRIPTS[0].name),
            figure: format!(
                "{} calls/s; p50 {p50:.3} ms, p99 {p99:.3} ms; runner CPU {noop_cpu:.0} µs/call",
                thousands(noop_rate)
            ),
            ceiling: vs_ceiling(noop_rate, ceiling),
            target,
            met,
        });
        for (i, (script, runs)) in builtin_http::SCRIPTS
            .iter()
            .zip(&figures.builtin)
            .enumerate()
        {
            let (rate, p50, p99, cpu) = medians(runs);
            let ratio = rate / noop_rate;
            let mut target = format!(">= {:.0}% of no-op", 100.0 * TARGET_BUILTIN_RATIO);
            let mut met = ratio >= TARGET_BUILTIN_RATIO;
            // The issue's steady-state target is for the trivial SAL script (SCRIPTS[0]).
            if redis && i == 0 {
                target.push_str(&format!(
                    "; >= {} calls/s",
                    thousands(TARGET_STEADY_BUILTIN)
                ));
                met &= rate >= TARGET_STEADY_BUILTIN;
            }
            rows.push(Row {
                scenario: "steady state (builtin-http)".to_owned(),
                store: store.name().to_owned(),
                setting: setting("built-in runner", script.name),
                figure: format!(
                    "{} calls/s; p50 {p50:.3} ms, p99 {p99:.3} ms; runner CPU {cpu:.0} µs/call; \
                     {:.0}% of no-op",
                    thousands(rate),
                    100.0 * ratio
                ),
                ceiling: vs_ceiling(rate, ceiling),
                target,
                met: Some(met),
            });
        }
        for (runner, idle) in [
            ("hero-noop-runner", &figures.idle_noop),
            ("built-in runner", &figures.idle_builtin),
        ] {
            let (p50, p99) = (idle.quantile_ms(0.5), idle.quantile_ms(0.99));
            rows.push(Row {
                scenario: "idle round trip (builtin-http)".to_owned(),
                store: store.name().to_owned(),
                setting: format!(
                    "HTTP run_job {}, {runner}, 1 client, one call at a time, {} calls \
                     ({} per round)",
                    builtin_http::SCRIPTS[0].name,
                    thousands(idle.calls as f64),
                    thousands(args.rpc_calls as f64)
                ),
                figure: format!("p50 {p50:.3} ms, p99 {p99:.3} ms"),
                ceiling: "-".to_owned(),
                target: if redis {
                    format!("p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms")
                } else {
                    "reference".to_owned()
                },
                met: redis.then_some(p50 <= TARGET_P50_MS && p99 <= TARGET_P99_MS),
            });
        }
    }
    if let Some(path) = &args.builtin_runner {
        notes.push(format!(
            "builtin-http: the built-in runner measured is `{} --stdio` (--builtin-runner), \
             as a `--runner` pool with the default pool's settings.",
            path.display()
        ));
    }
    notes.push(format!(
        "builtin-http: `hero-supervisor serve` child processes (default worker threads), \
         one with its built-in runner (`hero-supervisor runner --stdio`, the default pool) \
         and one with `--runner SAL,OSIS,Python,V=stdio:hero-noop-runner;hello=on`, side by \
         side on the same store (memory, or a private redis-server each), measured in \
         alternating rounds; {} HTTP/1.1 keep-alive clients (hyper, in the bench process) \
         POST `run_job` and check every output; {} warm-up calls per client first. Runner \
         CPU: user + system time of the runner process during the calls \
         (`/proc/<pid>/stat`, 10 ms ticks), divided by the calls.",
        builtin_http::CLIENTS,
        builtin_http::WARM_UP_PER_CLIENT
    ));
    Ok(())
}

/// The retention rows: the memory store's RSS growth per finished job from the third
/// round to the last, with retention on (flat) and off (the reference).
async fn retention_rows(rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    for keep in [Some(retention::KEEP), None] {
        let probe = retention::measure(keep).await?;
        for (finished, stored, rss) in &probe.rounds {
            progress(&format!(
                "retention {}: {} finished, {} stored, RSS {}",
                keep.map_or("off".to_owned(), |k| format!(
                    "keep {}",
                    thousands(k as f64)
                )),
                thousands(*finished as f64),
                thousands(*stored as f64),
                mib(*rss)
            ));
        }
        // From the third round: the first ones fill the kept window and warm up.
        let (f0, _, r0) = probe.rounds[2];
        let (f1, stored, r1) = probe.rounds[probe.rounds.len() - 1];
        let per_job = (r1 as f64 - r0 as f64) * 1024.0 / (f1 as f64 - f0 as f64);
        rows.push(Row {
            scenario: "retention: memory store RSS (VmRSS)".to_owned(),
            store: "memory".to_owned(),
            setting: match keep {
                Some(k) => format!(
                    "{} jobs finished; keep_finished_count {}",
                    thousands(f1 as f64),
                    thousands(k as f64)
                ),
                None => format!("{} jobs finished; no retention", thousands(f1 as f64)),
            },
            figure: format!(
                "{} -> {} from {} to {} finished ({per_job:.0} B per finished job; {} stored)",
                mib(r0),
                mib(r1),
                thousands(f0 as f64),
                thousands(f1 as f64),
                thousands(stored as f64)
            ),
            ceiling: "-".to_owned(),
            target: if keep.is_some() {
                format!("flat: < {FLAT_BYTES_PER_JOB:.0} B per finished job")
            } else {
                "reference".to_owned()
            },
            met: keep.map(|_| per_job < FLAT_BYTES_PER_JOB),
        });
    }
    notes.push(format!(
        "Retention: a child bench process finishes {} jobs straight through a MemoryStore \
         ({} per round; create, start, claim, complete, no runner) and after each round runs \
         `trim_finished(500)` until it says there is no more, as the upkeep task does; VmRSS \
         after each round. Retention off keeps every job.",
        thousands((retention::ROUND * retention::ROUNDS) as f64),
        thousands(retention::ROUND as f64)
    ));
    Ok(())
}

/// The `enqueue` rows: hero's bulk create-and-start over HTTP (JSON-RPC batches) and
/// BullMQ's `addBulk` of the same jobs with as many calls in flight, medians over
/// `--repeat` runs each, alternating; the target is the ratio.
async fn enqueue_rows(
    args: &Args,
    noop: &std::path::Path,
    ceiling: &Ceiling,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let (jobs, in_flight, chunk) = (args.jobs, args.enqueue_in_flight, enqueue::CHUNK);
    let mut runs = Vec::with_capacity(args.repeat);
    let mut batch_runs = Vec::with_capacity(args.repeat);
    let mut bullmq_rates = Vec::with_capacity(args.repeat);
    let mut bullmq: Result<String, String> = Err(String::new());
    for r in 1..=args.repeat {
        for mode in [enqueue::Mode::Bulk, enqueue::Mode::Batches] {
            let run = enqueue::run(noop, jobs, in_flight, mode).await?;
            progress(&format!(
                "enqueue ({mode:?}) run {r}/{}: {} jobs created and started in {:.3} s = {} \
                 jobs/s (serve CPU {:.1} µs/job, redis-server CPU {:.1} µs/job, {:.1} \
                 commands/job)",
                args.repeat,
                run.jobs,
                run.secs,
                thousands(run.jobs_per_sec()),
                run.supervisor_cpu_usec as f64 / jobs as f64,
                run.redis.cpu_usec() as f64 / jobs as f64,
                run.redis.total_commands() as f64 / jobs as f64,
            ));
            match mode {
                enqueue::Mode::Bulk => runs.push(run),
                enqueue::Mode::Batches => batch_runs.push(run),
            }
        }
        // BullMQ's run right after hero's, so both see the same machine; once it failed,
        // the row says why and hero's runs go on.
        if r == 1 || bullmq.is_ok() {
            let measured = tokio::task::spawn_blocking(move || {
                peers::bullmq_enqueue(jobs, in_flight, chunk, 1)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the BullMQ run panicked: {e}")));
            bullmq = measured.map(|m| {
                bullmq_rates.extend(m.rates);
                m.version
            });
        }
    }
    let per_job = |x: u64| x as f64 / jobs as f64;
    // Rate, serve CPU, redis-server CPU and commands per job: medians of `runs`.
    let figures = |runs: &[enqueue::Enqueued]| {
        (
            median(runs.iter().map(enqueue::Enqueued::jobs_per_sec).collect()),
            median(
                runs.iter()
                    .map(|r| per_job(r.supervisor_cpu_usec))
                    .collect(),
            ),
            median(runs.iter().map(|r| per_job(r.redis.cpu_usec())).collect()),
            median(
                runs.iter()
                    .map(|r| per_job(r.redis.total_commands()))
                    .collect(),
            ),
        )
    };
    let (rate, serve_cpu, redis_cpu, commands) = figures(&runs);
    let (target, met, peer_figure, peer_setting, peer_vs) = match &bullmq {
        Ok(version) => {
            let peer = median(bullmq_rates.clone());
            let ratio = rate / peer;
            (
                format!(">= {TARGET_ENQUEUE_VS_BULLMQ}x BullMQ addBulk (same run): {ratio:.2}x"),
                Some(ratio >= TARGET_ENQUEUE_VS_BULLMQ),
                format!("{} jobs/s", thousands(peer)),
                format!(
                    "BullMQ {version} addBulk of {} no-op jobs (removeOnComplete), {} per call, \
                     {in_flight} calls in flight on one Queue, median of {}",
                    thousands(jobs as f64),
                    thousands(chunk as f64),
                    bullmq_rates.len()
                ),
                vs_ceiling(peer, ceiling),
            )
        }
        Err(reason) => {
            progress(&format!("peer BullMQ addBulk not measured: {reason}"));
            (
                format!("{TARGET_ENQUEUE_VS_BULLMQ}x BullMQ addBulk (same run; not measured)"),
                None,
                format!("not measured: {reason}"),
                format!("BullMQ addBulk, {} no-op jobs", thousands(jobs as f64)),
                "-".to_owned(),
            )
        }
    };
    rows.push(Row {
        scenario: "enqueue: bulk create-and-start over HTTP".to_owned(),
        store: "redis".to_owned(),
        setting: format!(
            "{} no-op jobs, create_jobs calls of {} jobs, {in_flight} keep-alive clients, \
             median of {}",
            thousands(jobs as f64),
            thousands(chunk as f64),
            runs.len()
        ),
        figure: format!(
            "{} jobs/s; serve CPU {serve_cpu:.1} µs/job, redis-server CPU {redis_cpu:.1} µs/job, \
             {commands:.1} Redis commands/job",
            thousands(rate)
        ),
        ceiling: vs_ceiling(rate, ceiling),
        target,
        met,
    });
    let (b_rate, b_serve, b_redis, b_commands) = figures(&batch_runs);
    rows.push(Row {
        scenario: "enqueue: JSON-RPC batches".to_owned(),
        store: "redis".to_owned(),
        setting: format!(
            "the same jobs as JSON-RPC batches of {} create_job then {} start_job, median of {}",
            thousands(chunk as f64),
            thousands(chunk as f64),
            batch_runs.len()
        ),
        figure: format!(
            "{} jobs/s; serve CPU {b_serve:.1} µs/job, redis-server CPU {b_redis:.1} µs/job, \
             {b_commands:.1} Redis commands/job",
            thousands(b_rate)
        ),
        ceiling: vs_ceiling(b_rate, ceiling),
        target: "-".to_owned(),
        met: None,
    });
    rows.push(Row {
        scenario: "enqueue (peer)".to_owned(),
        store: "redis".to_owned(),
        setting: peer_setting,
        figure: peer_figure,
        ceiling: peer_vs,
        target: "-".to_owned(),
        met: None,
    });
    notes.push(format!(
        "Enqueue: a `hero-supervisor serve` child on a private redis-server; {in_flight} \
         HTTP/1.1 keep-alive clients (hyper, in the bench process), each taking the next \
         {chunk} jobs and sending them as one `create_jobs` call (created and started in one \
         Redis script), or, in the batches row, as one JSON-RPC batch request of \
         `create_job` calls then one batch of `start_job` calls with the ids answered; \
         timed from the first call to the last answer. The jobs are V jobs, which no connected runner serves, so \
         none drains meanwhile (checked after: every one queued). BullMQ: \
         `node bench/peers/bullmq/enqueue.mjs <socket> {jobs} {in_flight} {chunk}` on its \
         own private redis-server, run right after each hero run; no worker. CPU: \
         `/proc/<pid>/stat` of serve, `INFO cpu` of redis-server, over the timed span."
    ));
    Ok(())
}

/// The `multi-instance` rows: 1, 2, 3 (`--instances`) `serve` processes on one Redis
/// draining one queue of `--jobs` jobs; medians over `--repeat` runs.
async fn multi_instance_rows(
    args: &Args,
    noop: &std::path::Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let jobs = args.jobs;
    let per_job = |x: u64| x as f64 / jobs as f64;
    let mut single = None;
    for &k in &args.instances {
        let mut runs = Vec::with_capacity(args.repeat);
        for r in 1..=args.repeat {
            let run = multi::run(noop, jobs, k).await?;
            progress(&format!(
                "multi-instance, {k} serve process(es), run {r}/{}: {} jobs in {:.3} s = {} jobs/s \
                 (redis-server CPU {:.1} µs/job, {:.0}% of a core; serve {:.1} µs/job, \
                 runners {:.1} µs/job)",
                args.repeat,
                run.jobs,
                run.secs,
                thousands(run.jobs_per_sec()),
                per_job(run.redis.cpu_usec()),
                100.0 * run.redis.cpu_usec() as f64 / 1e6 / run.secs,
                per_job(run.supervisors_cpu_usec),
                per_job(run.runners_cpu_usec),
            ));
            runs.push(run);
        }
        let rate = median(runs.iter().map(multi::Drained::jobs_per_sec).collect());
        let redis_cpu = median(runs.iter().map(|r| per_job(r.redis.cpu_usec())).collect());
        let redis_busy = median(
            runs.iter()
                .map(|r| 100.0 * r.redis.cpu_usec() as f64 / 1e6 / r.secs)
                .collect(),
        );
        let serve_cpu = median(
            runs.iter()
                .map(|r| per_job(r.supervisors_cpu_usec))
                .collect(),
        );
        let runner_cpu = median(runs.iter().map(|r| per_job(r.runners_cpu_usec)).collect());
        let commands = median(
            runs.iter()
                .map(|r| per_job(r.redis.total_commands()))
                .collect(),
        );
        let base = *single.get_or_insert(rate);
        rows.push(Row {
            scenario: "multi-instance: serve processes on one Redis".to_owned(),
            store: "redis".to_owned(),
            setting: format!(
                "{k} `serve` process(es) x 1 hero-noop-runner draining one queue of {} no-op \
                 jobs, median of {}",
                thousands(jobs as f64),
                runs.len()
            ),
            figure: format!(
                "{} jobs/s ({:.2}x of {}); redis-server CPU {redis_cpu:.1} µs/job \
                 ({redis_busy:.0}% of a core), {commands:.1} commands/job; serve CPU \
                 {serve_cpu:.1} µs/job, runners {runner_cpu:.1} µs/job",
                thousands(rate),
                rate / base,
                args.instances.first().copied().unwrap_or(1)
            ),
            ceiling: "-".to_owned(),
            target: "measured, not a target".to_owned(),
            met: None,
        });
    }
    notes.push(format!(
        "Multi-instance: the bench queues {} no-op jobs through the store on a private \
         redis-server, then spawns K `hero-supervisor serve --redis-url <it> --runner \
         SAL,OSIS,Python,V=stdio:hero-noop-runner;hello=on` processes at once (default \
         settings otherwise: worker threads, claim batch, in-flight) and reads the store's \
         counts every 10 ms until no job is unfinished; timed from the spawn (start-up \
         included) to that read. redis-server CPU: `INFO cpu` over that span (the count \
         reads included); serve and runner CPU: `/proc/<pid>/stat`. Every process shares \
         the machine's cores.",
        thousands(jobs as f64)
    ));
    Ok(())
}
