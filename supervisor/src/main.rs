//! `hero-supervisor`: the job supervisor and its command-line client.
//!
//! ```text
//! hero-supervisor [serve] [--listen 127.0.0.1:9652] [--redis-url URL] [--auth-token T] ...
//! hero-supervisor run [--type SAL] <SCRIPT|->      # create + start + wait, print the output
//! hero-supervisor play <SCRIPT|->                  # run as SAL
//! hero-supervisor create [--type T] ... <SCRIPT|-> # print the new job id
//! hero-supervisor start|status|output|stop|delete <JOB_ID>
//! hero-supervisor logs [--follow] <JOB_ID>
//! hero-supervisor list | clear | runners
//! ```
//!
//! Client subcommands take `--url` (`HERO_URL`, default `http://127.0.0.1:9652`),
//! `--token` (`HERO_TOKEN`) and `--json` (machine-readable output). Server logs go to
//! stderr (`RUST_LOG`, default `info`).

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hero_supervisor::config::ServeConfig;

use crate::cli::client::ClientCommand;
use crate::cli::serve_args::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hero-supervisor",
    version,
    about = "The hero job supervisor: `serve` (the default) and a command-line client",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` flags, when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve JSON-RPC (HTTP and WebSocket on one port); the default.
    Serve(ServeArgs),
    #[command(flatten)]
    Client(ClientCommand),
    /// The built-in runner (spawned by `serve`; speaks the runner protocol).
    #[command(hide = true)]
    Runner(hero_script_runner::cli::RunnerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The runner builds its own runtime.
        Some(Command::Runner(args)) => hero_script_runner::cli::main_with(args),
        // The server's runtime is sized by its config, so that is read first.
        None => serve_blocking(cli.serve),
        Some(Command::Serve(args)) => serve_blocking(args),
        Some(Command::Client(command)) => cli::client::run_blocking(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr)] // the CLI's error output
fn report_error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}

/// Resolves the server's config, then runs it on a runtime of its size until SIGINT or
/// SIGTERM.
fn serve_blocking(mut args: ServeArgs) -> anyhow::Result<()> {
    let otlp_endpoint = args.otlp_endpoint.take().filter(|e| !e.is_empty());
    let config = ServeConfig::resolve(args.into_overrides())?;
    // The exporter's thread and HTTP client live outside the server's runtime.
    let exporter = otlp_endpoint
        .as_deref()
        .map(hero_supervisor::otlp::Exporter::start)
        .transpose()?;
    let rt = hero_supervisor::runtime::build(config.worker_threads)
        .context("starting the tokio runtime")?;
    let served = rt.block_on(async {
        cli::logging::init(exporter.as_ref());
        tracing::debug!(worker_threads = config.worker_threads, "runtime");
        if otlp_endpoint.is_some() {
            // Not the URL itself: it may carry credentials.
            tracing::info!("exporting spans over OTLP/HTTP");
        }
        hero_supervisor::server::run(config, shutdown_signal()).await
    });
    drop(rt);
    // Spans not sent yet go now, the server's included.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    served?;
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal, "signal received");
}
