//! `builtin-http`: what users pay for the built-in runner. A real `hero-supervisor serve`
//! process (the binary next to this one), 64 HTTP/1.1 keep-alive clients (hyper, one
//! connection each, in this process) calling `run_job` of a trivial script, once with the
//! built-in runner (`serve`'s default pool, `hero-supervisor runner --stdio`) and once
//! with `hero-noop-runner` in its place (`--runner ...=stdio:hero-noop-runner`), on the
//! memory store and on a private Redis. The two servers of a store run side by side and
//! are measured in alternating rounds, so both see the same machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hero_testkit::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpStream;

use crate::burn_down::StoreKind;
use crate::latency::Latencies;

/// Concurrent HTTP clients (issue 18 measured with `wrk -c64`).
pub(crate) const CLIENTS: usize = 64;
/// Calls per client before measuring (connections, runner, Redis scripts, AST cache).
pub(crate) const WARM_UP_PER_CLIENT: usize = 10;
/// How long a server has to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
}

/// A `hero-supervisor serve` child process, killed on drop.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    _key_dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // SIGTERM lets it stop its runner; SIGKILL if it does not end soon.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hero-supervisor`, next to this executable.
pub(crate) fn supervisor_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .context("locate the current executable")?
        .with_file_name("hero-supervisor");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p hero-bench -p hero-supervisor` \
             (the builtin-http scenario runs `hero-supervisor serve`)",
            path.display()
        );
    }
    Ok(path)
}

impl ServeProcess {
    async fn start(
        supervisor: &Path,
        runners: &Runners,
        store: StoreKind,
        runner: RunnerKind,
    ) -> Result<ServeProcess> {
        let redis = (store == StoreKind::Redis).then(RedisServer::start);
        let key_dir = tempfile::tempdir()?;
        let port = hero_testkit::free_tcp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut command = Command::new(supervisor);
        // Only this scenario's settings: no HERO_* of the caller's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HERO_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--server-key")
            .arg(key_dir.path().join("server.key"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(redis) = &redis {
            command.arg("--redis-url").arg(redis.url());
        }
        // The same pool settings as the built-in runner's: one process, hello on.
        let pool = |command: String| format!("SAL,OSIS,Python,V=stdio:{command};hello=on");
        match (runner, &runners.builtin) {
            (RunnerKind::Noop, _) => {
                command
                    .arg("--runner")
                    .arg(pool(runners.noop.display().to_string()));
            }
            (RunnerKind::Builtin, Some(path)) => {
                command
                    .arg("--runner")
                    .arg(pool(format!("{} --stdio", path.display())));
            }
            (RunnerKind::Builtin, None) => {}
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", supervisor.display()))?;
        let server = ServeProcess {
            child,
            addr,
            _key_dir: key_dir,
            _redis: redis,
        };
        let began = Instant::now();
        loop {
            let probe = async {
                let mut client = Client::connect(addr).await?;
                client.run_job(&SCRIPTS[0]).await
            };
            match probe.await {
                Ok(_) => return Ok(server),
                Err(e) if began.elapsed() > START_TIMEOUT => {
                    return Err(e.context(format!("{runner:?} server on {addr} never answered")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// CPU time (user + system) a process has used so far, all its threads, in µs: fields 14
/// and 15 of `/proc/<pid>/stat`, in USER_HZ ticks (100 per second on Linux).
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// The child processes of `pid` (its runners), from every thread's `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
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

/// One HTTP/1.1 keep-alive connection to the server.
struct Client {
    send: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            send,
            authority: addr.to_string(),
        })
    }

    /// `run_job(script, type)`; its output.
    async fn run_job(&mut self, script: &Script) -> Result<String> {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "run_job",
            "params": [script.text, script.script_type, null, 60],
        });
        let request = hyper::Request::post("/")
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
        self.send.ready().await?;
        let response = self.send.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
        match answer.get("result").and_then(|r| r.as_str()) {
            Some(output) => Ok(output.to_owned()),
            None => Err(anyhow!("run_job failed: {answer}")),
        }
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
            check(c.run_job(&script).await?, expect)?;
        }
        Ok::<_, anyhow::Error>(())
    });
    futures::future::try_join_all(warm).await?;
    let left = Arc::new(AtomicUsize::new(calls));
    let cpu_before = Cpu::sample(server.child.id());
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
                    check(client.run_job(&script).await?, expect)?;
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
        cpu: Cpu::sample(server.child.id()).since(cpu_before),
    })
}

fn check(output: String, expect: &str) -> Result<()> {
    if output != expect {
        bail!("run_job answered {output:?}, expected {expect:?}");
    }
    Ok(())
}

/// Both runners on `store`, `rounds` alternating rounds of `calls` calls per script.
pub(crate) async fn run(
    store: StoreKind,
    runners: &Runners,
    calls: usize,
    rounds: usize,
) -> Result<StoreFigures> {
    let supervisor = supervisor_binary()?;
    let noop_server = ServeProcess::start(&supervisor, runners, store, RunnerKind::Noop).await?;
    let builtin_server =
        ServeProcess::start(&supervisor, runners, store, RunnerKind::Builtin).await?;
    let mut figures = StoreFigures {
        noop: Vec::new(),
        builtin: vec![Vec::new(); SCRIPTS.len()],
    };
    for round in 1..=rounds {
        let noop = measure(&noop_server, SCRIPTS[0], "", calls).await?;
        progress(store, round, rounds, "no-op runner", &noop);
        figures.noop.push(noop);
        for (i, script) in SCRIPTS.into_iter().enumerate() {
            let m = measure(&builtin_server, script, script.builtin_output, calls).await?;
            progress(
                store,
                round,
                rounds,
                &format!("built-in runner, {}", script.name),
                &m,
            );
            figures.builtin[i].push(m);
        }
    }
    drop(builtin_server);
    drop(noop_server);
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
