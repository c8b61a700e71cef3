//! The `hero-runner` command line, as a library so that `hero-supervisor runner` can
//! run the same runner from the supervisor's own executable.
//!
//! ```text
//! hero-runner --stdio                                   # frames on stdin/stdout
//! hero-runner --tcp-socket 127.0.0.1:9000               # any number of connections
//! hero-runner --tcp-socket 0.0.0.0:9000 --auth-token T  # non-loopback: token required
//!     [--max-in-flight N] [--python CMD] [--map TYPE=COMMAND]... [--parent-pid PID]
//! ```
//!
//! Its own logs go to stderr (`RUST_LOG` filters them); stdout is the wire in stdio mode.
//! SIGTERM or SIGINT: stop accepting, let in-flight scripts finish within the grace
//! period, cancel the rest, exit.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Runner;
use crate::scripts::{self, ScriptConfig};
use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

/// How often `--parent-pid` is checked.
const PARENT_POLL: Duration = Duration::from_secs(1);

/// The command line of `hero-runner` (also `hero-supervisor runner`).
#[derive(Debug, Clone, Args)]
pub struct RunnerArgs {
    /// Speak the runner protocol on stdin/stdout; exit when stdin closes.
    #[arg(
        long,
        conflicts_with = "tcp_socket",
        required_unless_present = "tcp_socket"
    )]
    pub stdio: bool,

    /// Listen on HOST:PORT (port 0 picks one; the address is logged as `listening on`).
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp_socket: Option<String>,

    /// Token every TCP connection must present in its opening `hello`. Required for a
    /// non-loopback address.
    #[arg(long, env = "HERO_RUNNER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Requests run at once per connection; beyond it: `runner_busy`.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// The Python interpreter (program and leading arguments).
    #[arg(long, value_name = "COMMAND")]
    pub python: Option<String>,

    /// Run scripts of TYPE with COMMAND (program and leading arguments; the script file's
    /// path is appended), e.g. `V=/opt/v/v run` or `Bash=bash`. Repeatable.
    #[arg(long = "map", value_name = "TYPE=COMMAND")]
    pub maps: Vec<String>,

    /// Exit when this process is gone (for runners spawned over TCP).
    #[arg(long, value_name = "PID")]
    pub parent_pid: Option<i32>,

    /// Grace period for in-flight requests on SIGTERM, in seconds.
    #[arg(long, default_value_t = crate::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    pub shutdown_grace: u64,
}

/// Logs to stderr (stdout may be the wire), filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// Runs the runner on a runtime of its own until stdin closes (stdio), or a signal.
/// Call it from a plain `main`, not from inside a tokio runtime.
pub fn main_with(cli: RunnerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let result = runtime.block_on(run(cli));
    // Do not wait for a blocking read of stdin (or a script's blocking thread) to end.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn script_config(cli: &RunnerArgs) -> anyhow::Result<ScriptConfig> {
    let mut config = ScriptConfig::default();
    if let Some(python) = &cli.python {
        config.map("Python", python).map_err(anyhow::Error::msg)?;
    }
    for mapping in &cli.maps {
        let Some((script_type, command)) = mapping.split_once('=') else {
            bail!("--map expects TYPE=COMMAND, got `{mapping}`");
        };
        let script_type = script_type.trim();
        if script_type.is_empty() {
            bail!("--map expects TYPE=COMMAND, got `{mapping}`");
        }
        config
            .map(script_type, command)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(config)
}

/// Runs the runner on the current tokio runtime until stdin closes (stdio), or a signal.
pub async fn run(cli: RunnerArgs) -> anyhow::Result<()> {
    let config = script_config(&cli)?;
    let mut builder = Runner::builder()
        .max_in_flight(cli.max_in_flight)
        .shutdown_grace(Duration::from_secs(cli.shutdown_grace));
    if let Some(token) = &cli.auth_token {
        if token.is_empty() {
            bail!("--auth-token must not be empty");
        }
        builder = builder.auth_token(token.clone());
    }
    let runner = scripts::register(builder, &config).build();

    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    if let Some(pid) = cli.parent_pid {
        tokio::spawn(shutdown_when_parent_exits(pid, shutdown.clone()));
    }

    if cli.stdio {
        tracing::info!(functions = ?runner.functions(), "serving stdio");
        runner.serve_stdio_until(shutdown).await?;
        return Ok(());
    }
    let Some(addr) = &cli.tcp_socket else {
        bail!("pass --stdio or --tcp-socket HOST:PORT");
    };
    let addr: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let listener = runner.bind_tcp(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(functions = ?runner.functions(), "listening on {local}");
    runner.serve_listener(listener, shutdown).await?;
    Ok(())
}

async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

async fn shutdown_when_parent_exits(pid: i32, shutdown: CancellationToken) {
    let parent = nix::unistd::Pid::from_raw(pid);
    loop {
        tokio::time::sleep(PARENT_POLL).await;
        // Signal 0 checks existence. EPERM means it exists but is not ours to signal.
        if let Err(nix::errno::Errno::ESRCH) = nix::sys::signal::kill(parent, None) {
            tracing::info!(parent_pid = pid, "parent process gone: shutting down");
            shutdown.cancel();
            return;
        }
    }
}
