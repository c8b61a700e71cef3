//! `builtin-http`: what users pay for the built-in runner. A real `hero-supervisor serve`
//! process (the binary next to this one), 64 HTTP/1.1 keep-alive clients (hyper, one
//! connection each, in this process) calling `run_job` of a trivial script, once with the
//! built-in runner (`serve`'s default pool, `hero-supervisor runner --stdio`) and once
//! with `hero-noop-runner` in its place (`--runner ...=stdio:hero-noop-runner`), on the
//! memory store and on a private Redis. The two servers of a store run side by side and
//! are measured in alternating rounds, so both see the same machine. Each round also
//! times idle round trips: one client, one `run_job` of the SAL script at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use hero_testkit::RedisServer;

use crate::burn_down::StoreKind;
use crate::latency::Latencies;
use crate::serve::{Client, ServeProcess, children, cpu_micros, stdio_pool, supervisor_binary};

/// Concurrent HTTP clients (issue 18 measured with `wrk -c64`).
pub(crate) const CLIENTS: usize = 64;
/// Calls per client before measuring (connections, runner, Redis scripts, AST cache).
pub(crate) const WARM_UP_PER_CLIENT: usize = 10;
/// Calls of the idle client before measuring.
pub(crate) const IDLE_WARM_UP: usize = 100;

/// A trivial script of each engine, and the output the built-in runner must give for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script {
    /// How the table names it.
    pub(crate) name: &'static str,
    script_type: &'static str,
    text: &'static str,
    builtin_output: &'static str,
}

/// The script, and the OSIS one of the engine's own bench.
pub(crate) const SCRIPTS: [Script; 2] = [
    Script {
        name: "SAL `1`",
        script_type: "SAL",
        text: "1",
        builtin_output: "1",
    },
    Script {
        name: "OSIS `osis_set(\"k\", 41); osis_get(\"k\") + 1`",
        script_type: "OSIS",
        text: "osis_set(\"k\", 41); osis_get(\"k\") + 1",
        builtin_output: "42",
    },
];

/// Which runner serves the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunnerKind {
    /// `serve`'s default: `hero-supervisor runner --stdio`, or `--builtin-runner`.
    Builtin,
    /// `hero-noop-runner` for every type.
    Noop,
}

/// The runners of one comparison.
#[derive(Debug, Clone)]
pub(crate) struct Runners {
    /// `hero-noop-runner`.
    pub(crate) noop: PathBuf,
    /// A `hero-runner` executable run as `PATH --stdio` in place of `serve`'s own
    /// built-in runner (the same code, from another build); `None`: `serve`'s own.
    pub(crate) builtin: Option<PathBuf>,
}

/// Figures of one store: per round, the no-op runner on the SAL script, then the built-in
/// runner on each of [`SCRIPTS`].
#[derive(Debug)]
pub(crate) struct StoreFigures {
    pub(crate) noop: Vec<Measured>,
    /// Indexed like [`SCRIPTS`].
    pub(crate) builtin: Vec<Vec<Measured>>,
    /// Idle round trips (one client, one call at a time) of the SAL script, all rounds
    /// together: no-op runner, built-in runner.
    pub(crate) idle_noop: Latencies,
    pub(crate) idle_builtin: Latencies,
}

/// Starts `serve` with `runner` on `store` (a private redis-server of its own for
/// Redis) and waits until it answers `run_job` of the SAL script.
async fn start_server(
    supervisor: &Path,
    runners: &Runners,
    store: StoreKind,
    runner: RunnerKind,
) -> Result<ServeProcess> {
    let redis = (store == StoreKind::Redis).then(RedisServer::start);
    let url = redis.as_ref().map(RedisServer::url);
    // The same pool settings as the built-in runner's: one process, hello on.
    const TYPES: &str = "SAL,OSIS,Python,V";
    let pools = match (runner, &runners.builtin) {
        (RunnerKind::Noop, _) => vec![stdio_pool(TYPES, &runners.noop.display().to_string())],
        (RunnerKind::Builtin, Some(path)) => {
            vec![stdio_pool(TYPES, &format!("{} --stdio", path.display()))]
        }
        (RunnerKind::Builtin, None) => vec![],
    };
    let server = ServeProcess::spawn(supervisor, url.as_deref(), redis, &pools, "warn")?;
    server
        .wait_answering("run_job", &run_job_params(&SCRIPTS[0]))
        .await
        .map_err(|e| e.context(format!("the {runner:?} server")))?;
    Ok(server)
}

/// `run_job(script, type)`'s params.
fn run_job_params(script: &Script) -> serde_json::Value {
    serde_json::json!([script.text, script.script_type, null, 60])
}

/// `run_job(script, type)`; its output.
async fn run_job(client: &mut Client, script: &Script) -> Result<String> {
    let result = client.call("run_job", &run_job_params(script)).await?;
    match result.as_str() {
        Some(output) => Ok(output.to_owned()),
        None => bail!("run_job answered {result}, not a string"),
    }
}

/// CPU time of the server and of its runners, to split a measurement's cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// The `serve` process, µs.
    pub(crate) supervisor: u64,
    /// Its runner processes together, µs.
    pub(crate) runners: u64,
}

impl Cpu {
    fn sample(serve: u32) -> Cpu {
        Cpu {
            supervisor: cpu_micros(serve).unwrap_or(0),
            runners: children(serve).into_iter().filter_map(cpu_micros).sum(),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            supervisor: self.supervisor.saturating_sub(before.supervisor),
            runners: self.runners.saturating_sub(before.runners),
        }
    }
}

/// One measurement: the clients' latencies and the server's CPU time meanwhile.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) latencies: Latencies,
    pub(crate) cpu: Cpu,
}

impl Measured {
    /// CPU µs per call of the supervisor and of its runners.
    pub(crate) fn cpu_per_call(&self) -> (f64, f64) {
        let n = self.latencies.calls.max(1) as f64;
        (self.cpu.supervisor as f64 / n, self.cpu.runners as f64 / n)
    }
}

/// `calls` calls of `script` by [`CLIENTS`] concurrent clients; every output checked.
async fn measure(
    server: &ServeProcess,
    script: Script,
    expect: &'static str,
    calls: usize,
) -> Result<Measured> {
    let addr = server.addr;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(Client::connect(addr).await?);
    }
    let warm = clients.iter_mut().map(|c| async move {
        for _ in 0..WARM_UP_PER_CLIENT {
            check(run_job(c, &script).await?, expect)?;
        }
        Ok::<_, anyhow::Error>(())
    });
    futures::future::try_join_all(warm).await?;
    let left = Arc::new(AtomicUsize::new(calls));
    let cpu_before = Cpu::sample(server.pid());
    let began = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let left = left.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    check(run_job(&mut client, &script).await?, expect)?;
                    mine.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(mine)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for task in tasks {
        all.extend(task.await??);
    }
    let wall = began.elapsed().as_secs_f64();
    Ok(Measured {
        latencies: Latencies::new(all, wall),
        cpu: Cpu::sample(server.pid()).since(cpu_before),
    })
}

/// `calls` calls of `script` by one client, one at a time (after [`IDLE_WARM_UP`]): the
/// idle round trip. Returns each call's latency.
async fn measure_idle(
    server: &ServeProcess,
    script: Script,
    expect: &'static str,
    calls: usize,
) -> Result<Vec<std::time::Duration>> {
    let mut client = Client::connect(server.addr).await?;
    for _ in 0..IDLE_WARM_UP {
        check(run_job(&mut client, &script).await?, expect)?;
    }
    let mut all = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        check(run_job(&mut client, &script).await?, expect)?;
        all.push(t.elapsed());
    }
    Ok(all)
}

fn check(output: String, expect: &str) -> Result<()> {
    if output != expect {
        bail!("run_job answered {output:?}, expected {expect:?}");
    }
    Ok(())
}

/// Both runners on `store`, `rounds` alternating rounds of `calls` calls per script by
/// [`CLIENTS`] clients, each round also `idle_calls` idle round trips of the SAL script
/// per runner.
pub(crate) async fn run(
    store: StoreKind,
    runners: &Runners,
    calls: usize,
    idle_calls: usize,
    rounds: usize,
) -> Result<StoreFigures> {
    let supervisor = supervisor_binary()?;
    let noop_server = start_server(&supervisor, runners, store, RunnerKind::Noop).await?;
    let builtin_server = start_server(&supervisor, runners, store, RunnerKind::Builtin).await?;
    let mut noop_figures = Vec::new();
    let mut builtin_figures = vec![Vec::new(); SCRIPTS.len()];
    let (mut idle_noop, mut idle_builtin) = (Vec::new(), Vec::new());
    let began = Instant::now();
    for round in 1..=rounds {
        idle_noop.extend(measure_idle(&noop_server, SCRIPTS[0], "", idle_calls).await?);
        let sal = SCRIPTS[0];
        idle_builtin
            .extend(measure_idle(&builtin_server, sal, sal.builtin_output, idle_calls).await?);
        let noop = measure(&noop_server, SCRIPTS[0], "", calls).await?;
        progress(store, round, rounds, "no-op runner", &noop);
        noop_figures.push(noop);
        for (i, script) in SCRIPTS.into_iter().enumerate() {
            let m = measure(&builtin_server, script, script.builtin_output, calls).await?;
            progress(
                store,
                round,
                rounds,
                &format!("built-in runner, {}", script.name),
                &m,
            );
            builtin_figures[i].push(m);
        }
    }
    drop(builtin_server);
    drop(noop_server);
    // The idle series' rate is not reported; the wall time is the whole run's.
    let wall = began.elapsed().as_secs_f64();
    let figures = StoreFigures {
        noop: noop_figures,
        builtin: builtin_figures,
        idle_noop: Latencies::new(idle_noop, wall),
        idle_builtin: Latencies::new(idle_builtin, wall),
    };
    for (what, idle) in [
        ("no-op runner", &figures.idle_noop),
        ("built-in runner", &figures.idle_builtin),
    ] {
        crate::output::progress(&format!(
            "builtin-http {}: idle run_job, {what}: p50 {:.3} ms, p99 {:.3} ms over {} calls",
            store.name(),
            idle.quantile_ms(0.5),
            idle.quantile_ms(0.99),
            idle.calls
        ));
    }
    Ok(figures)
}

fn progress(store: StoreKind, round: usize, rounds: usize, what: &str, m: &Measured) {
    let (supervisor, runners) = m.cpu_per_call();
    crate::output::progress(&format!(
        "builtin-http {} round {round}/{rounds}: {what}: {} calls/s, p50 {:.3} ms, p99 {:.3} ms; \
         CPU per call: supervisor {supervisor:.0} µs, runner {runners:.0} µs",
        store.name(),
        crate::output::thousands(m.latencies.per_sec()),
        m.latencies.quantile_ms(0.5),
        m.latencies.quantile_ms(0.99),
    ));
}
