//! Runner pools: the processes (or remote runners) that execute jobs, and the
//! connections to them.
//!
//! A pool serves one or more script types through `processes` runner slots. Each slot
//! keeps one connection alive: it spawns its child (stdio, or TCP managed) or connects
//! to an address (TCP external), and when the connection or the child dies it starts
//! over after an exponential backoff. Children run in their own process group; on
//! shutdown they get SIGTERM, then SIGKILL after a grace period. A stdio child sees EOF
//! when the supervisor dies; a managed TCP child gets `--parent-pid`.

mod connection;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hero_protocol::{DEFAULT_MAX_FRAME_LEN, LogLine};
use serde::Serialize;
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
    /// Spawn `program args.. --tcp-socket 127.0.0.1:PORT --parent-pid PID`, then connect.
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
    /// Open each connection with `hello` (the runner speaks the extensions: logs).
    /// Off for plain v1 runners. Default true for the built-in runner.
    pub hello: bool,
    /// Token for runners that require one in `hello`.
    pub auth_token: Option<String>,
    /// Largest frame either way. Default 16 MiB.
    pub max_frame_len: usize,
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
            hello: true,
            auth_token: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// Restart backoff of a runner slot: 100 ms doubling to 5 s.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long a managed TCP runner has to start listening.
const MANAGED_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM to SIGKILL on shutdown.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(3);

/// What `list_runners` shows of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerInfo {
    /// The pool's name.
    pub name: String,
    /// The script types it serves (canonical names).
    pub script_types: Vec<String>,
    /// `stdio`, `tcp` or `tcp-managed`.
    pub transport: String,
    /// Slots with a live connection.
    pub connected: usize,
    /// Slots configured.
    pub processes: usize,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests in flight at most, over the live connections (each runner's
    /// `max_in_flight`, lowered by its `hello` when it announces less).
    pub max_in_flight: usize,
    /// Times a slot's runner was (re)started after the first.
    pub restarts: u64,
}

/// One slot: at most one live connection at a time.
#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Arc<RunnerConnection>>>,
}

/// A free request slot on one connection: the right to send it one request. Dropping
/// it frees the slot and wakes the pool's claim loop.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) conn: Arc<RunnerConnection>,
    _permit: OwnedSemaphorePermit,
    room: Arc<Notify>,
}

impl Drop for Lease {
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
    pub(crate) fn try_lease(&self) -> Option<Lease> {
        let mut live: Vec<_> = self.live().collect();
        live.sort_by_key(|c| std::cmp::Reverse(c.free_slots()));
        live.into_iter().find_map(|conn| {
            let permit = conn.try_reserve()?;
            Some(Lease {
                conn,
                _permit: permit,
                room: self.room.clone(),
            })
        })
    }

    /// Waits for a free request slot.
    pub(crate) async fn lease(&self) -> Lease {
        loop {
            if let Some(lease) = self.try_lease() {
                return lease;
            }
            self.room.notified().await;
        }
    }

    pub(crate) fn info(&self) -> RunnerInfo {
        let live: Vec<_> = self.live().collect();
        RunnerInfo {
            name: self.config.name.clone(),
            script_types: self
                .config
                .script_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            transport: self.config.transport.kind().to_owned(),
            connected: live.len(),
            processes: self.slots.len(),
            in_flight: live.iter().map(|c| c.in_flight()).sum(),
            max_in_flight: live.iter().map(|c| c.max_in_flight()).sum(),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
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
        let started = tokio::time::Instant::now();
        let spawned = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = establish(&pool.config, logs.clone()) => s,
        };
        match spawned {
            Err(why) => {
                tracing::warn!(runner = %name, %why, retry_in = ?backoff, "runner unavailable");
            }
            Ok(Spawned { mut child, conn }) => {
                tracing::info!(runner = %name, "runner connected");
                if let Ok(mut cur) = slot.current.write() {
                    *cur = Some(conn.clone());
                }
                pool.room.notify_one();
                let exit = async {
                    match child.as_mut() {
                        Some(c) => c.wait().await.ok(),
                        None => std::future::pending().await,
                    }
                };
                let stopping = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = conn.closed() => false,
                    status = exit => {
                        tracing::warn!(runner = %name, ?status, "runner exited");
                        false
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
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::warn!(runner = %name, restart_in = ?backoff, "runner lost; restarting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

fn options(config: &PoolConfig) -> ConnectionOptions {
    ConnectionOptions {
        hello: config.hello,
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

async fn establish(config: &PoolConfig, logs: mpsc::Sender<LogLine>) -> Result<Spawned, String> {
    let opts = options(config);
    match &config.transport {
        Transport::Stdio { program, args } => {
            let mut child = command(program, args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawning `{program}`: {e}"))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("child has no stdio pipes".to_owned());
            };
            open_with_child(child, stdout, stdin, &opts, logs).await
        }
        Transport::TcpExternal { addr } => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            let conn = RunnerConnection::open(r, w, &opts, logs).await?;
            Ok(Spawned {
                child: None,
                conn: Arc::new(conn),
            })
        }
        Transport::TcpManaged { program, args } => {
            let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut full = args.clone();
            full.extend([
                "--tcp-socket".to_owned(),
                addr.to_string(),
                "--parent-pid".to_owned(),
                std::process::id().to_string(),
            ]);
            let mut child = command(program, &full)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawning `{program}`: {e}"))?;
            let deadline = tokio::time::Instant::now() + MANAGED_CONNECT_TIMEOUT;
            let stream = loop {
                match TcpStream::connect(addr).await {
                    Ok(s) => break s,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        stop_child(&mut child, Duration::ZERO).await;
                        return Err(format!("runner never listened on {addr}: {e}"));
                    }
                    Err(_) => {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(format!("runner exited before listening: {status}"));
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
) -> Result<Spawned, String>
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
            Err(why)
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
