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

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use hero_supervisor::Supervisor;
use hero_supervisor::clock::SystemClock;
use hero_supervisor::config::{ServeArgs, ServeConfig};
use hero_supervisor::job::JobStatus;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::types::{JobEvent, JobParams};
use hero_supervisor::rpc::{HeroApiClient, check_listen, start_on};
use hero_supervisor::store::{JobStore, MemoryStore, RedisStore};
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClient;
use serde::Serialize;

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
    /// Create, start and wait for a job; print its output.
    Run {
        #[command(flatten)]
        client: ClientArgs,
        /// Script type: OSIS, SAL, V or Python (any case).
        #[arg(long = "type", default_value = "SAL")]
        script_type: String,
        /// Timeout in seconds (default 300).
        #[arg(long)]
        timeout: Option<u64>,
        /// The script, or `-` to read it from stdin.
        script: String,
    },
    /// Run a script as SAL; print its output.
    Play {
        #[command(flatten)]
        client: ClientArgs,
        /// The script, or `-` to read it from stdin.
        script: String,
    },
    /// Store a job (status `Created`, not queued); print its id.
    Create(CreateArgs),
    /// Queue a created job.
    Start(JobArgs),
    /// Print a job's status.
    Status(JobArgs),
    /// Print a job's output (empty until it finished).
    Output(JobArgs),
    /// Print a job's logs; `--follow` streams them until the job ends.
    Logs {
        #[command(flatten)]
        job: JobArgs,
        /// Stream new lines (over WebSocket) until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// List job ids, oldest first.
    List(ClientArgs),
    /// Cancel a queued or running job.
    Stop(JobArgs),
    /// Delete a job.
    Delete(JobArgs),
    /// Delete every job.
    Clear(ClientArgs),
    /// List the runner pools.
    Runners(ClientArgs),
    /// The built-in runner (spawned by `serve`; speaks the runner protocol).
    #[command(hide = true)]
    Runner(hero_runner::cli::RunnerArgs),
}

#[derive(Debug, Clone, Args)]
struct ClientArgs {
    /// The supervisor's URL.
    #[arg(long, env = "HERO_URL", default_value = "http://127.0.0.1:9652")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "HERO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn http(&self) -> anyhow::Result<HttpClient> {
        http_client(&self.url, self.token.as_deref())
            .with_context(|| format!("cannot use url {}", self.url))
    }
}

#[derive(Debug, Args)]
struct JobArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The job id.
    job_id: String,
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Script type: OSIS, SAL, V or Python (any case).
    #[arg(long = "type", default_value = "SAL")]
    script_type: String,
    /// Caller id (replaced by the key of an authenticated connection).
    #[arg(long)]
    caller_id: Option<String>,
    /// Context id.
    #[arg(long)]
    context_id: Option<String>,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Retries after a failed attempt.
    #[arg(long)]
    retries: Option<u32>,
    /// A job that must finish first (repeatable).
    #[arg(long = "prerequisite", value_name = "JOB_ID")]
    prerequisites: Vec<String>,
    /// An environment variable `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env_vars: Vec<String>,
    /// The script, or `-` to read it from stdin.
    script: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The runner builds its own runtime and logging.
        Some(Command::Runner(args)) => hero_runner::cli::main_with(args),
        // The server's runtime is sized by its config, so that is read first.
        None => serve_blocking(cli.serve),
        Some(Command::Serve(args)) => serve_blocking(args),
        // The client commands.
        Some(command) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(client_command(command)),
            Err(e) => Err(anyhow!(e).context("starting the tokio runtime")),
        },
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

/// Resolves the server's config, then runs it on a runtime of its size.
fn serve_blocking(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::resolve(args)?;
    let rt = hero_supervisor::runtime::build(config.worker_threads)
        .context("starting the tokio runtime")?;
    rt.block_on(serve(config))
}

/// Runs one client command against a running server.
async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        // Started by `main` on runtimes of their own.
        Command::Serve(_) | Command::Runner(_) => {
            Err(anyhow!("not a client command: `main` runs it"))
        }
        Command::Run {
            client,
            script_type,
            timeout,
            script,
        } => {
            let output = client
                .http()?
                .run_job(read_script(&script)?, script_type, None, timeout)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &output, &output);
            Ok(())
        }
        Command::Play { client, script } => {
            let result = client
                .http()?
                .play(read_script(&script)?)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &result.output, &result);
            Ok(())
        }
        Command::Create(args) => create(args).await,
        Command::Start(JobArgs { client, job_id }) => {
            let result = client
                .http()?
                .start_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("started {job_id}"), &result);
            Ok(())
        }
        Command::Status(JobArgs { client, job_id }) => {
            let status = client
                .http()?
                .get_job_status(job_id)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, status.as_str(), &status);
            Ok(())
        }
        Command::Output(JobArgs { client, job_id }) => {
            let output = client
                .http()?
                .get_job_output(job_id)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &output, &output);
            Ok(())
        }
        Command::Logs { job, follow: false } => {
            let JobArgs { client, job_id } = job;
            let logs = client
                .http()?
                .get_job_logs(job_id)
                .await
                .map_err(rpc_error)?;
            if client.json {
                print_json(&logs);
            } else if let Some(text) = &logs.logs {
                print_line(text);
            }
            Ok(())
        }
        Command::Logs { job, follow: true } => follow_logs(job).await,
        Command::List(client) => {
            let ids = client.http()?.list_jobs().await.map_err(rpc_error)?;
            print_text_or_json(&client, &ids.join("\n"), &ids);
            Ok(())
        }
        Command::Stop(JobArgs { client, job_id }) => {
            client
                .http()?
                .stop_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("stopped {job_id}"), &());
            Ok(())
        }
        Command::Delete(JobArgs { client, job_id }) => {
            client
                .http()?
                .delete_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("deleted {job_id}"), &());
            Ok(())
        }
        Command::Clear(client) => {
            client.http()?.clear_all_jobs().await.map_err(rpc_error)?;
            print_text_or_json(&client, "cleared all jobs", &());
            Ok(())
        }
        Command::Runners(client) => {
            let runners = client.http()?.list_runners().await.map_err(rpc_error)?;
            let text = runners
                .iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\tconnected {}/{}\tin flight {}/{}\trestarts {}",
                        r.name,
                        r.script_types.join(","),
                        r.transport,
                        r.connected,
                        r.processes,
                        r.in_flight,
                        r.max_in_flight,
                        r.restarts
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print_text_or_json(&client, &text, &runners);
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut env_vars = BTreeMap::new();
    for pair in &args.env_vars {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {pair:?}: expected NAME=VALUE"))?;
        env_vars.insert(name.to_owned(), value.to_owned());
    }
    let params = JobParams {
        script: read_script(&args.script)?,
        script_type: args.script_type,
        caller_id: args.caller_id,
        context_id: args.context_id,
        timeout: args.timeout,
        prerequisites: args.prerequisites,
        retries: args.retries,
        env_vars,
    };
    let id = args
        .client
        .http()?
        .create_job(params)
        .await
        .map_err(rpc_error)?;
    print_text_or_json(&args.client, &id, &serde_json::json!({ "job_id": id }));
    Ok(())
}

/// Streams the job's log lines over the WebSocket subscription until the job ends.
async fn follow_logs(job: JobArgs) -> anyhow::Result<()> {
    let JobArgs { client, job_id } = job;
    let ws = ws_client(&client.url, client.token.as_deref())
        .await
        .with_context(|| format!("cannot connect to {}", client.url))?;
    let mut events = ws
        .subscribe_job_events(job_id, None)
        .await
        .map_err(rpc_error)?;
    while let Some(event) = events.next().await {
        let event = event.context("bad event from the server")?;
        if client.json {
            print_json(&event);
            continue;
        }
        match event {
            JobEvent::Log { line, .. } => print_line(&line),
            JobEvent::Status {
                status: JobStatus::Error,
                ..
            } => {
                return Err(anyhow!("job ended in Error"));
            }
            JobEvent::Status { .. } => {}
        }
    }
    Ok(())
}

/// `-` reads the script from stdin.
fn read_script(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut script = String::new();
    std::io::stdin()
        .read_to_string(&mut script)
        .context("reading the script from stdin")?;
    Ok(script)
}

/// A JSON-RPC error as one line: `job not found (-32001 job_not_found)`.
fn rpc_error(e: ClientError) -> anyhow::Error {
    match ErrorAnswer::from_client_error(&e) {
        Some(answer) => anyhow!("{answer}"),
        None => anyhow!(e),
    }
}

#[allow(clippy::print_stdout)] // the CLI's output
fn print_line(text: &str) {
    println!("{text}");
}

#[allow(clippy::print_stdout)] // the CLI's output
fn print_json(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => println!("{{\"error\":{:?}}}", e.to_string()),
    }
}

fn print_text_or_json(client: &ClientArgs, text: &str, value: &impl Serialize) {
    if client.json {
        print_json(value);
    } else if !text.is_empty() {
        print_line(text);
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    hero_runner::cli::init_logging();
    tracing::debug!(worker_threads = config.worker_threads, "runtime");
    // Refuse an unsafe listen address before spawning any runner.
    check_listen(config.listen, &config.rpc)?;
    let clock = Arc::new(SystemClock);
    let store: Arc<dyn JobStore> = match &config.redis_url {
        None => {
            tracing::info!("jobs are kept in memory (no --redis-url)");
            Arc::new(MemoryStore::new(config.store.clone(), clock))
        }
        Some(url) => {
            let store = RedisStore::connect(url, config.store.clone(), clock)
                .await
                .context("connecting to redis")?;
            tracing::info!(prefix = %config.store.prefix, "jobs are kept in redis");
            Arc::new(store)
        }
    };
    let supervisor = Supervisor::start(config.supervisor, store);
    let (addr, handle) = match start_on(config.listen, config.rpc, supervisor.clone()).await {
        Ok(started) => started,
        Err(e) => {
            supervisor.shutdown().await;
            return Err(e.into());
        }
    };
    tracing::info!(%addr, "hero-supervisor ready");
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    let _ = handle.stop();
    handle.stopped().await;
    supervisor.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
