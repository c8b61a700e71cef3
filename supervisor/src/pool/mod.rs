//! Runner pools: the processes (or remote runners) that execute jobs, and the
//! connections to them.
//!
//! A pool serves one or more script types through `processes` runner slots. Each slot
//! keeps one connection alive: it spawns its child (stdio, or TCP managed) or connects
//! to an address (TCP external), and when the connection or the child dies it starts
//! over after an exponential backoff. Children run in their own process group; on
//! shutdown they get SIGTERM, then SIGKILL after a grace period. A stdio child sees EOF
//! when the supervisor dies; a managed TCP child gets its parent's pid in
//! `HERO_RUNNER_PARENT_PID`.
//!
//! ## Plain v1 runners and `hello`
//!
//! `hello` is an extension (PROTOCOL.md): a plain protocol-v1 runner, such as one built
//! on `rrq-runner` 0.9.9, does not know it and closes the connection when it receives
//! one. A pool's [`HelloMode`] says what to do:
//! - `Auto` (the default for configured pools): open with `hello`; when the runner
//!   refuses it (closes the connection, answers with another frame, or says nothing
//!   within [`AUTO_HELLO_TIMEOUT`]) the pool has found a plain v1 runner. It reconnects
//!   at once without `hello` and remembers that for its lifetime, so each pool pays one
//!   refused connection at most. The first exchange decides: once a runner of the pool
//!   answered `hello`, a later failed exchange is a crash, retried with backoff. A pool
//!   with an `auth_token` always sends `hello` (the token travels in it), as with `On`.
//! - `On`: always `hello` (the built-in runner); a refusal is a failed start, retried
//!   with backoff.
//! - `Off`: never `hello`: plain v1 from the first frame.
//!
//! A plain v1 connection has no handshake, so it serves only after it stayed up for a
//! short probation (a runner that writes garbage or closes at once never gets a job).
//! A pool whose runner keeps failing is shown by `list_runners` with the reason
//! (`last_error`) and the number of failed starts in a row; its jobs stay queued
//! meanwhile, because the dispatcher claims only for live connections.

mod connection;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hero_protocol::{DEFAULT_MAX_FRAME_LEN, LogLine};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::connection::ConnectionOptions;
pub(crate) use self::connection::LOG_QUEUE;
pub(crate) use self::connection::{CallError, RunnerConnection};
use crate::job::ScriptType;

/// Default requests in flight per runner process.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// How a pool reaches its runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Spawn `program args..` and speak frames over its stdin/stdout.
    Stdio {
        /// The executable.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Connect to a runner already listening at `addr`.
    TcpExternal {
        /// `host:port`.
        addr: String,
    },
    /// Spawn `program args.. --tcp-socket 127.0.0.1:PORT` (with the same address in
    /// `RRQ_RUNNER_TCP_SOCKET`, the convention of rrq's runners, and the supervisor's pid
    /// in `HERO_RUNNER_PARENT_PID`), then connect.
    TcpManaged {
        /// The executable.
        program: String,
        /// Its arguments, before `--tcp-socket`.
        args: Vec<String>,
    },
}

impl Transport {
    fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::TcpExternal { .. } => "tcp",
            Transport::TcpManaged { .. } => "tcp-managed",
        }
    }
}

/// Whether a pool opens its connections with the `hello` extension (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HelloMode {
    /// `hello` first; fall back to plain v1 for good when the runner refuses it.
    #[default]
    Auto,
    /// Always `hello`.
    On,
    /// Never `hello`: plain protocol v1.
    Off,
}

impl HelloMode {
    /// `auto`, `on` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            HelloMode::Auto => "auto",
            HelloMode::On => "on",
            HelloMode::Off => "off",
        }
    }
}

impl std::str::FromStr for HelloMode {
    type Err = String;

    /// `auto`, `on`/`true`, `off`/`false` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(HelloMode::Auto),
            "on" | "true" => Ok(HelloMode::On),
            "off" | "false" => Ok(HelloMode::Off),
            _ => Err(format!("hello must be auto, on or off, not {s:?}")),
        }
    }
}

/// One pool of runners.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name shown by `list_runners` and stored as the job's `runner`.
    pub name: String,
    /// The script types it serves.
    pub script_types: Vec<ScriptType>,
    /// How to reach its runners.
    pub transport: Transport,
    /// Runner processes (or connections, for TCP external). Default 1.
    pub processes: usize,
    /// Requests in flight per runner; a runner's `hello` may lower it. Default 64.
    pub max_in_flight: usize,
    /// Whether connections open with `hello` (module docs). Default `Auto`; the
    /// built-in runner's pool uses `On`.
    pub hello: HelloMode,
    /// Token for runners that require one in `hello`.
    pub auth_token: Option<String>,
    /// Largest frame either way. Default 16 MiB.
    pub max_frame_len: usize,
    /// `Some(N)`: the pool serves context N only, claiming from that context's lanes
    /// (a runner registered in context N: [`crate::store::JobStore::claim_lane`]);
    /// `None` (default): from the script types' queues.
    pub context: Option<u32>,
}

impl PoolConfig {
    /// A pool of one runner process with the defaults.
    pub fn new(
        name: impl Into<String>,
        script_types: Vec<ScriptType>,
        transport: Transport,
    ) -> Self {
        PoolConfig {
            name: name.into(),
            script_types,
            transport,
            processes: 1,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            hello: HelloMode::Auto,
            auth_token: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            context: None,
        }
    }
}

/// Restart backoff of a runner slot: 100 ms doubling to 5 s.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The variable a managed TCP runner finds its listening address in (rrq's convention;
/// the address is also passed as `--tcp-socket`).
pub const RRQ_TCP_SOCKET_ENV: &str = "RRQ_RUNNER_TCP_SOCKET";
/// The variable a managed TCP runner finds the supervisor's pid in, to exit when it is
/// gone (hero's runners read it; there is no stdin to close for a TCP runner).
pub const PARENT_PID_ENV: &str = "HERO_RUNNER_PARENT_PID";
/// A connection that lived this long resets the backoff and the failure count.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a runner has to answer `hello` in [`HelloMode::On`].
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a runner has to answer `hello` in [`HelloMode::Auto`] before the pool takes
/// it for a plain v1 runner that ignores unknown frames.
pub const AUTO_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new plain v1 connection must stay up before it gets jobs ([`probation`]).
const PLAIN_PROBATION: Duration = Duration::from_millis(200);
/// How long a managed TCP runner has to start listening.
const MANAGED_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM to SIGKILL on shutdown.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(3);

/// What `list_runners` shows of one pool (the wire type too: counts as `u64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// The pool's name.
    pub name: String,
    /// The script types it serves (canonical names).
    pub script_types: Vec<String>,
    /// `stdio`, `tcp` or `tcp-managed`.
    pub transport: String,
    /// Slots with a live connection.
    pub connected: u64,
    /// Slots configured.
    pub processes: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Requests in flight at most, over the live connections (each runner's
    /// `max_in_flight`, lowered by its `hello` when it announces less).
    pub max_in_flight: u64,
    /// Times a slot's runner was (re)started after the first.
    pub restarts: u64,
    /// The pool's `hello` setting: `auto`, `on` or `off`.
    pub hello: String,
    /// What the latest connection speaks: `v1` (plain) or `v1+hello` (the
    /// extensions); `None` before the first connection.
    pub protocol: Option<String>,
    /// Starts that failed in a row (spawn, connect, `hello`, or a connection that
    /// ended before it was healthy); 0 once a connection has lived 10 s.
    pub failures: u32,
    /// Why the latest start failed or the latest connection ended; cleared once a
    /// connection has lived 10 s.
    pub last_error: Option<String>,
}

/// What the pool learned about its runners, for `list_runners` and the `hello` fallback.
#[derive(Debug, Default)]
struct Health {
    /// `Auto` found a plain v1 runner: no more `hello` for this pool.
    plain: bool,
    /// A runner of this pool answered `hello` once: a later failed exchange is a crash
    /// (retried with backoff), not a plain v1 runner refusing it.
    answered_hello: bool,
    /// The latest connection spoke the extensions; `None` before the first.
    extensions: Option<bool>,
    failures: u32,
    last_error: Option<String>,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One slot: at most one live connection at a time.
#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Arc<RunnerConnection>>>,
}

/// A free request slot on one connection: the right to send it one request. Dropping
/// it frees the slot and wakes the pool's claim loop.
#[derive(Debug)]
pub(crate) struct RequestSlot {
    pub(crate) conn: Arc<RunnerConnection>,
    _permit: OwnedSemaphorePermit,
    room: Arc<Notify>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.room.notify_one();
    }
}

/// A pool at run time.
#[derive(Debug)]
pub(crate) struct RunnerPool {
    pub(crate) config: PoolConfig,
    slots: Vec<Arc<Slot>>,
    /// Signalled when a slot connects or a request slot frees up: the claim loop may
    /// find room. `notify_one` keeps the signal if nobody waits yet, so none is lost.
    room: Arc<Notify>,
    restarts: AtomicU64,
    // A std Mutex: nothing awaits while it is held.
    health: Mutex<Health>,
}

impl RunnerPool {
    /// Starts the slots' tasks on `tracker`. Log lines of every connection go to `logs`.
    pub(crate) fn start(
        config: PoolConfig,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        logs: mpsc::Sender<LogLine>,
    ) -> Arc<RunnerPool> {
        let processes = config.processes.max(1);
        let pool = Arc::new(RunnerPool {
            slots: (0..processes).map(|_| Arc::default()).collect(),
            config,
            room: Arc::new(Notify::new()),
            restarts: AtomicU64::new(0),
            health: Mutex::default(),
        });
        for (index, slot) in pool.slots.iter().enumerate() {
            tracker.spawn(run_slot(
                pool.clone(),
                slot.clone(),
                index,
                shutdown.clone(),
                logs.clone(),
            ));
        }
        pool
    }

    fn live(&self) -> impl Iterator<Item = Arc<RunnerConnection>> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.current.read().ok().and_then(|c| c.clone()))
            .filter(|c| !c.is_closed())
    }

    /// A free request slot on the live connection with the most room, if any. Capacity
    /// is each connection's own, as negotiated in `hello`: a slot that is down or a
    /// runner that announced less lowers it.
    pub(crate) fn try_reserve_slot(&self) -> Option<RequestSlot> {
        let mut live: Vec<_> = self.live().collect();
        live.sort_by_key(|c| std::cmp::Reverse(c.free_slots()));
        live.into_iter().find_map(|conn| {
            let permit = conn.try_reserve()?;
            Some(RequestSlot {
                conn,
                _permit: permit,
                room: self.room.clone(),
            })
        })
    }

    /// Waits for a free request slot.
    pub(crate) async fn reserve_slot(&self) -> RequestSlot {
        loop {
            if let Some(slot) = self.try_reserve_slot() {
                return slot;
            }
            self.room.notified().await;
        }
    }

    pub(crate) fn info(&self) -> RunnerInfo {
        let live: Vec<_> = self.live().collect();
        let health = {
            let h = self.health();
            Health {
                plain: h.plain,
                answered_hello: h.answered_hello,
                extensions: h.extensions,
                failures: h.failures,
                last_error: h.last_error.clone(),
            }
        };
        RunnerInfo {
            name: self.config.name.clone(),
            script_types: self
                .config
                .script_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            transport: self.config.transport.kind().to_owned(),
            connected: count(live.len()),
            processes: count(self.slots.len()),
            in_flight: count(live.iter().map(|c| c.in_flight()).sum()),
            max_in_flight: count(live.iter().map(|c| c.max_in_flight()).sum()),
            restarts: self.restarts.load(Ordering::Relaxed),
            hello: self.config.hello.as_str().to_owned(),
            protocol: health
                .extensions
                .map(|e| if e { "v1+hello" } else { "v1" }.to_owned()),
            failures: health.failures,
            last_error: health.last_error,
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // Poisoned only if a holder panicked, and nothing here panics while holding it.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the next connection opens with `hello`.
    fn sends_hello(&self) -> bool {
        match self.config.hello {
            HelloMode::On => true,
            HelloMode::Off => false,
            HelloMode::Auto => self.config.auth_token.is_some() || !self.health().plain,
        }
    }

    /// After a refused `hello`: whether this pool now takes its runner for a plain v1
    /// one (and records it). Only under `Auto`, without a token, and only while no
    /// runner of the pool ever answered `hello`: the first exchange decides.
    fn learns_plain(&self) -> bool {
        if self.config.hello != HelloMode::Auto || self.config.auth_token.is_some() {
            return false;
        }
        let mut h = self.health();
        if h.answered_hello {
            return false;
        }
        h.plain = true;
        true
    }

    fn failed(&self, why: &str) {
        let mut h = self.health();
        h.failures = h.failures.saturating_add(1);
        h.last_error = Some(why.to_owned());
    }
}

/// A spawned runner process and its stdio, if it uses it.
struct Spawned {
    child: Option<Child>,
    conn: Arc<RunnerConnection>,
}

async fn run_slot(
    pool: Arc<RunnerPool>,
    slot: Arc<Slot>,
    index: usize,
    shutdown: CancellationToken,
    logs: mpsc::Sender<LogLine>,
) {
    let name = format!("{}#{index}", pool.config.name);
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut first = true;
    while !shutdown.is_cancelled() {
        if !first {
            pool.restarts.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let hello = pool.sends_hello();
        let spawned = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = establish(&pool.config, hello, logs.clone()) => match s {
                Ok(s) if !hello => probation(s).await,
                other => other,
            },
        };
        let mut retry_now = false;
        match spawned {
            Err(Failure {
                reason,
                hello_refused,
            }) => {
                pool.failed(&reason);
                if hello_refused && hello && pool.learns_plain() {
                    retry_now = true;
                    tracing::warn!(
                        runner = %name, %reason,
                        "runner refused hello: a plain protocol v1 runner; reconnecting without extensions"
                    );
                } else {
                    tracing::warn!(runner = %name, %reason, retry_in = ?backoff, "runner unavailable");
                }
            }
            Ok(Spawned { mut child, conn }) => {
                tracing::info!(runner = %name, extensions = conn.extensions(), "runner connected");
                if let Ok(mut cur) = slot.current.write() {
                    *cur = Some(conn.clone());
                }
                {
                    let mut h = pool.health();
                    h.extensions = Some(conn.extensions());
                    h.answered_hello |= conn.extensions();
                }
                pool.room.notify_one();
                let mut healthy = false;
                let (stopping, exited) = {
                    let exit = async {
                        match child.as_mut() {
                            Some(c) => c.wait().await.ok(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::pin!(exit);
                    let healthy_at = tokio::time::sleep(HEALTHY_AFTER);
                    tokio::pin!(healthy_at);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break (true, None),
                            _ = conn.closed() => break (false, None),
                            status = &mut exit => break (false, Some(status)),
                            _ = &mut healthy_at, if !healthy => {
                                healthy = true;
                                let mut h = pool.health();
                                h.failures = 0;
                                h.last_error = None;
                            }
                        }
                    }
                };
                if let Ok(mut cur) = slot.current.write() {
                    *cur = None;
                }
                conn.close(if stopping {
                    "supervisor shutting down"
                } else {
                    "runner connection ended"
                });
                if let Some(child) = child.as_mut() {
                    stop_child(
                        child,
                        if stopping {
                            CHILD_STOP_GRACE
                        } else {
                            Duration::ZERO
                        },
                    )
                    .await;
                }
                if stopping {
                    break;
                }
                let reason = match exited {
                    Some(status) => match status {
                        Some(status) => format!("runner exited: {status}"),
                        None => "runner exited".to_owned(),
                    },
                    None => conn
                        .close_reason()
                        .unwrap_or_else(|| "runner connection ended".to_owned()),
                };
                pool.failed(&reason);
                if healthy {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::warn!(runner = %name, %reason, restart_in = ?backoff, "runner lost; restarting");
            }
        }
        if retry_now {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// A plain v1 connection has no handshake to prove that the runner speaks the protocol,
/// so it gets [`PLAIN_PROBATION`] before the pool hands it jobs: a runner that closes at
/// once or writes something that is not a frame fails its start here, and no job is sent
/// to it (so none is lost or counts an attempt for it).
async fn probation(spawned: Spawned) -> Result<Spawned, Failure> {
    let Spawned { mut child, conn } = spawned;
    tokio::select! {
        _ = conn.closed() => {}
        _ = tokio::time::sleep(PLAIN_PROBATION) => return Ok(Spawned { child, conn }),
    }
    if let Some(child) = child.as_mut() {
        stop_child(child, Duration::ZERO).await;
    }
    let why = conn
        .close_reason()
        .unwrap_or_else(|| "connection closed".to_owned());
    Err(Failure::start(format!(
        "runner closed the connection at once: {why}"
    )))
}

/// Why a runner could not be started or connected.
#[derive(Debug)]
struct Failure {
    reason: String,
    /// The runner was reached, but the `hello` exchange failed.
    hello_refused: bool,
}

impl Failure {
    fn start(reason: String) -> Failure {
        Failure {
            reason,
            hello_refused: false,
        }
    }

    fn hello(reason: String) -> Failure {
        Failure {
            reason,
            hello_refused: true,
        }
    }
}

fn options(config: &PoolConfig, hello: bool) -> ConnectionOptions {
    ConnectionOptions {
        hello,
        hello_timeout: match config.hello {
            HelloMode::Auto => AUTO_HELLO_TIMEOUT,
            HelloMode::On | HelloMode::Off => HELLO_TIMEOUT,
        },
        auth_token: config.auth_token.clone(),
        max_frame_len: config.max_frame_len,
        max_in_flight: config.max_in_flight,
    }
}

fn command(program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        // Its own process group: a signal for the runner reaches its script children too,
        // and a Ctrl-C in the supervisor's terminal does not race our own shutdown.
        .process_group(0)
        .kill_on_drop(true)
        .stderr(Stdio::inherit());
    cmd
}

async fn establish(
    config: &PoolConfig,
    hello: bool,
    logs: mpsc::Sender<LogLine>,
) -> Result<Spawned, Failure> {
    let opts = options(config, hello);
    match &config.transport {
        Transport::Stdio { program, args } => {
            let mut child = command(program, args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| Failure::start(format!("spawning `{program}`: {e}")))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(Failure::start("child has no stdio pipes".to_owned()));
            };
            open_with_child(child, stdout, stdin, &opts, logs).await
        }
        Transport::TcpExternal { addr } => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| Failure::start(format!("connecting to {addr}: {e}")))?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            let conn = RunnerConnection::open(r, w, &opts, logs)
                .await
                .map_err(Failure::hello)?;
            Ok(Spawned {
                child: None,
                conn: Arc::new(conn),
            })
        }
        Transport::TcpManaged { program, args } => {
            let port =
                free_port().map_err(|e| Failure::start(format!("finding a free port: {e}")))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut full = args.clone();
            full.extend(["--tcp-socket".to_owned(), addr.to_string()]);
            let mut child = command(program, &full)
                .env(RRQ_TCP_SOCKET_ENV, addr.to_string())
                .env(PARENT_PID_ENV, std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| Failure::start(format!("spawning `{program}`: {e}")))?;
            let deadline = tokio::time::Instant::now() + MANAGED_CONNECT_TIMEOUT;
            let stream = loop {
                match TcpStream::connect(addr).await {
                    Ok(s) => break s,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        stop_child(&mut child, Duration::ZERO).await;
                        return Err(Failure::start(format!(
                            "runner never listened on {addr}: {e}"
                        )));
                    }
                    Err(_) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(Failure::start(format!(
                                "runner exited before listening: {status}"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            open_with_child(child, r, w, &opts, logs).await
        }
    }
}

/// Opens the connection to a spawned runner; kills the child when that fails.
async fn open_with_child<R, W>(
    mut child: Child,
    reader: R,
    writer: W,
    opts: &ConnectionOptions,
    logs: mpsc::Sender<LogLine>,
) -> Result<Spawned, Failure>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match RunnerConnection::open(reader, writer, opts, logs).await {
        Ok(conn) => Ok(Spawned {
            child: Some(child),
            conn: Arc::new(conn),
        }),
        Err(why) => {
            stop_child(&mut child, Duration::ZERO).await;
            Err(Failure::hello(why))
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// SIGTERM to the child's process group, SIGKILL after `grace` (at once when zero),
/// then reap it.
async fn stop_child(child: &mut Child, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return; // already reaped
    };
    let group = Pid::from_raw(pid);
    if !grace.is_zero() {
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            let _ = killpg(group, Signal::SIGKILL); // stragglers in its group
            return;
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}
