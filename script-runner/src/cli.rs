//! The `hero-runner` command line, as a library so that `hero-supervisor runner` can
//! run the same runner from the supervisor's own executable.
//!
//! ```text
//! hero-runner --stdio                                   # frames on stdin/stdout
//! hero-runner --tcp-socket 127.0.0.1:9000               # any number of connections
//! hero-runner --tcp-socket 0.0.0.0:9000 --auth-token T  # non-loopback: token required
//!     [--max-in-flight N] [--python CMD] [--map TYPE=COMMAND]... [--parent-pid PID]
//!     [--config runner.toml]
//! ```
//!
//! Settings can also come from a TOML file (`--config`, `HERO_RUNNER_CONFIG`); a flag
//! wins over the file. The transport (`--stdio`, `--tcp-socket`) and `--parent-pid` are
//! flags only: they belong to whoever starts the runner.
//!
//! ```toml
//! # runner.toml: every key is optional
//! auth_token = "change-me"      # --auth-token, HERO_RUNNER_AUTH_TOKEN
//! max_in_flight = 64            # --max-in-flight
//! shutdown_grace = 10           # --shutdown-grace (seconds)
//! python = "python3 -u"         # --python
//! [map]                         # --map TYPE=COMMAND (a flag replaces the same type)
//! V = "/opt/v/v run"
//! Bash = "bash"
//! ```
//!
//! Its own logs go to stderr (`RUST_LOG` filters them); stdout is the wire in stdio mode.
//! SIGTERM or SIGINT: stop accepting, let in-flight scripts finish within the grace
//! period, cancel the rest, exit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scripts::{self, ScriptConfig};
use anyhow::{Context, bail};
use clap::Args;
use hero_runner::Runner;
use serde::Deserialize;
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

    /// Requests run at once per connection; beyond it: `runner_busy` [default: 64].
    #[arg(long)]
    pub max_in_flight: Option<usize>,

    /// The Python interpreter (program and leading arguments).
    #[arg(long, value_name = "COMMAND")]
    pub python: Option<String>,

    /// Run scripts of TYPE with COMMAND (program and leading arguments; the script file's
    /// path is appended), e.g. `V=/opt/v/v run` or `Bash=bash`. Repeatable.
    #[arg(long = "map", value_name = "TYPE=COMMAND")]
    pub maps: Vec<String>,

    /// Exit when this process is gone (for runners spawned over TCP; a supervisor's
    /// managed TCP pool sets `HERO_RUNNER_PARENT_PID`).
    #[arg(long, value_name = "PID", env = "HERO_RUNNER_PARENT_PID")]
    pub parent_pid: Option<i32>,

    /// Grace period for in-flight requests on SIGTERM, in seconds [default: 10].
    #[arg(long)]
    pub shutdown_grace: Option<u64>,

    /// TOML file with the settings above (keys as the flags, with underscores; maps in a
    /// `[map]` table). Flags win over it.
    #[arg(long, env = "HERO_RUNNER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The runner's config file; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    auth_token: Option<String>,
    max_in_flight: Option<usize>,
    shutdown_grace: Option<u64>,
    python: Option<String>,
    #[serde(default)]
    map: BTreeMap<String, String>,
}

impl FileConfig {
    fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {}", path.display(), e.message()))
    }
}

/// The settings of one run: the flags over the file over the defaults.
#[derive(Debug, Clone)]
struct Settings {
    auth_token: Option<String>,
    max_in_flight: usize,
    shutdown_grace: Duration,
    scripts: ScriptConfig,
}

impl Settings {
    fn resolve(cli: &RunnerArgs) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let mut scripts = ScriptConfig::default();
        if let Some(python) = cli.python.as_ref().or(file.python.as_ref()) {
            scripts.map("Python", python).map_err(anyhow::Error::msg)?;
        }
        for (script_type, command) in &file.map {
            map_one(&mut scripts, script_type, command, "[map]")?;
        }
        for mapping in &cli.maps {
            let Some((script_type, command)) = mapping.split_once('=') else {
                bail!("--map expects TYPE=COMMAND, got `{mapping}`");
            };
            map_one(&mut scripts, script_type, command, "--map")?;
        }
        let auth_token = cli.auth_token.clone().or(file.auth_token);
        if auth_token.as_deref() == Some("") {
            bail!("the auth token must not be empty");
        }
        Ok(Settings {
            auth_token,
            max_in_flight: cli
                .max_in_flight
                .or(file.max_in_flight)
                .unwrap_or(hero_runner::DEFAULT_MAX_IN_FLIGHT),
            shutdown_grace: cli
                .shutdown_grace
                .or(file.shutdown_grace)
                .map_or(hero_runner::DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
            scripts,
        })
    }
}

/// Maps `script_type` to `command`; `origin` names where the mapping came from.
fn map_one(
    scripts: &mut ScriptConfig,
    script_type: &str,
    command: &str,
    origin: &str,
) -> anyhow::Result<()> {
    let script_type = script_type.trim();
    if script_type.is_empty() {
        bail!("{origin}: a mapping needs a script type, got `{script_type}={command}`");
    }
    scripts
        .map(script_type, command)
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))
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

/// Runs the runner on the current tokio runtime until stdin closes (stdio), or a signal.
pub async fn run(cli: RunnerArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&cli)?;
    let mut builder = Runner::builder()
        .max_in_flight(settings.max_in_flight)
        .shutdown_grace(settings.shutdown_grace);
    if let Some(token) = settings.auth_token {
        builder = builder.auth_token(token);
    }
    let runner = scripts::register(builder, &settings.scripts).build();

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunnerArgs,
    }

    fn resolve(flags: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(["hero-runner", "--stdio"].iter().chain(flags))?;
        Settings::resolve(&cli.args)
    }

    fn command(s: &Settings, script_type: &str) -> Vec<String> {
        s.scripts
            .commands
            .get(script_type)
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn defaults_without_a_file() {
        let s = resolve(&[]).unwrap();
        assert_eq!(s.max_in_flight, hero_runner::DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(s.shutdown_grace, hero_runner::DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(s.auth_token, None);
        assert_eq!(command(&s, "Python"), ["python3"]);
    }

    #[test]
    fn the_file_sets_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner.toml");
        std::fs::write(
            &path,
            "auth_token = \"from-file\"\nmax_in_flight = 7\nshutdown_grace = 3\n\
             python = \"python3 -u\"\n[map]\nBash = \"bash\"\nV = \"/opt/v/v run\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let s = resolve(&["--config", file]).unwrap();
        assert_eq!(s.auth_token.as_deref(), Some("from-file"));
        assert_eq!(s.max_in_flight, 7);
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(command(&s, "Python"), ["python3", "-u"]);
        assert_eq!(command(&s, "Bash"), ["bash"]);
        assert_eq!(command(&s, "V"), ["/opt/v/v", "run"]);

        let s = resolve(&[
            "--config",
            file,
            "--max-in-flight",
            "9",
            "--auth-token",
            "from-flag",
            "--map",
            "v=vlang run",
        ])
        .unwrap();
        assert_eq!(s.max_in_flight, 9);
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.auth_token.as_deref(), Some("from-flag"));
        assert_eq!(command(&s, "v"), ["vlang", "run"]);
        assert!(
            !s.scripts.commands.contains_key("V"),
            "a flag replaces the file's V"
        );
    }

    #[test]
    fn bad_files_and_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner.toml");
        std::fs::write(&path, "max_inflight = 3\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("max_inflight"), "{err}");

        let missing = dir.path().join("missing.toml");
        let err = resolve(&["--config", missing.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("cannot read config file"), "{err}");

        std::fs::write(&path, "[map]\nBash = \"  \"\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("[map]"), "{err}");

        let err = resolve(&["--map", "novalue"]).unwrap_err();
        assert!(err.to_string().contains("TYPE=COMMAND"), "{err}");
        let err = resolve(&["--auth-token", ""]).unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
    }
}
