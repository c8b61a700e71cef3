//! The client subcommands: one JSON-RPC call each (or a WebSocket subscription for
//! `logs --follow`) against a running server, printed as text or JSON.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use hero_supervisor::access::{ActorCreate, ContextCreate};
use hero_supervisor::coordination::FlowDag;
use hero_supervisor::job::JobStatus;
use hero_supervisor::rpc::HeroApiClient;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::types::{
    ActorCreateParams, ContextCreateParams, CreateJobParams, FlowCreate, FlowCreateParams,
    FlowLoadParams, IdParams, JobEvent, ListJobsFilter, ListJobsResult,
};
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClient;
use serde::Serialize;

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
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
        /// The context to run it in (default: the default context).
        #[arg(long)]
        context_id: Option<String>,
        /// The script, or `-` to read it from stdin.
        script: String,
    },
    /// Run a script as SAL; print its output.
    Play {
        #[command(flatten)]
        client: ClientArgs,
        /// The context to run it in (default: the default context).
        #[arg(long)]
        context_id: Option<String>,
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
    /// Print a job's logs; `--start`/`--limit` print one page (each line after its
    /// sequence number); `--follow` streams them until the job ends.
    Logs {
        #[command(flatten)]
        job: JobArgs,
        /// Stream new lines (over WebSocket) until the job ends, from `--start` (default 0).
        #[arg(long, short)]
        follow: bool,
        /// The sequence number of the first line wanted (0-based, the line's for good).
        #[arg(long)]
        start: Option<u64>,
        /// Lines per page (default 256, at most 10,000).
        #[arg(long, conflicts_with = "follow")]
        limit: Option<u64>,
    },
    /// List job ids, oldest first; with a filter flag, one page of job summaries.
    List(ListArgs),
    /// Job counts per status and script type, queue depths, runners (server admins).
    Stats(ClientArgs),
    /// Cancel a queued or running job.
    Stop(JobArgs),
    /// Delete a job.
    Delete(JobArgs),
    /// Delete every job.
    Clear(ClientArgs),
    /// List the runner pools.
    Runners(ClientArgs),
    /// Register or show actors (identities).
    #[command(subcommand)]
    Actor(ActorCommand),
    /// Create, change or show contexts (tenants and their roles).
    #[command(subcommand)]
    Context(ContextCommand),
    /// Create, show, lay out and start flows (DAGs of coordinator jobs of a context).
    #[command(subcommand)]
    Flow(FlowCommand),
}

/// Which flow: `--context ID` and its id.
#[derive(Debug, Args)]
pub(crate) struct FlowRef {
    #[command(flatten)]
    client: ClientArgs,
    /// The context the flow belongs to.
    #[arg(long = "context")]
    context_id: u32,
    /// The flow's id.
    id: u32,
}

/// `hero-supervisor flow ...`
#[derive(Debug, Subcommand)]
pub(crate) enum FlowCommand {
    /// Create or replace (until it starts) a flow of jobs created with `job.create`.
    Create {
        #[command(flatten)]
        flow: FlowRef,
        /// A job of the flow (repeatable); their `depends` must form a DAG inside it.
        #[arg(long = "job", value_name = "JOB_ID", required = true)]
        jobs: Vec<u32>,
        /// Your actor id (replaced by the caller's own when it is an actor).
        #[arg(long, default_value_t = 0)]
        caller_id: u32,
    },
    /// Show a flow: its status and its jobs' results.
    Load(FlowRef),
    /// Show a flow's DAG: its levels (jobs that may run in parallel), first to last.
    Dag(FlowRef),
    /// Start every job of the flow, each after its dependencies.
    Start(FlowRef),
}

/// `hero-supervisor actor ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ActorCommand {
    /// Create or replace an actor (server admins).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Its id (a u32 of your choosing).
        #[arg(long)]
        id: u32,
        /// Hex of its SEC1 secp256k1 public key.
        #[arg(long)]
        pubkey: String,
        /// An IP address it is reached at (repeatable).
        #[arg(long = "address", value_name = "IP")]
        addresses: Vec<String>,
    },
    /// Show an actor.
    Load {
        #[command(flatten)]
        client: ClientArgs,
        /// Its id.
        id: u32,
    },
}

/// `hero-supervisor context ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ContextCommand {
    /// Create (server admins) or replace (also its admins) a context.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Its id (a u32 of your choosing); jobs join it with `--context-id ID`.
        #[arg(long)]
        id: u32,
        /// An admin's actor id (repeatable; at least one).
        #[arg(long = "admin", value_name = "ACTOR_ID")]
        admins: Vec<u32>,
        /// An executor's actor id (repeatable).
        #[arg(long = "executor", value_name = "ACTOR_ID")]
        executors: Vec<u32>,
        /// A reader's actor id (repeatable).
        #[arg(long = "reader", value_name = "ACTOR_ID")]
        readers: Vec<u32>,
    },
    /// Show a context.
    Load {
        #[command(flatten)]
        client: ClientArgs,
        /// Its id.
        id: u32,
    },
}

/// `hero-supervisor list`: without a filter flag, every id; with one, a page.
#[derive(Debug, Clone, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only jobs with this status (Created, Dispatched, WaitingForPrerequisites,
    /// Started, Error, Finished).
    #[arg(long)]
    status: Option<String>,
    /// Only jobs of this script type (OSIS, SAL, V, Python).
    #[arg(long = "type")]
    script_type: Option<String>,
    /// Only jobs of this context.
    #[arg(long)]
    context_id: Option<String>,
    /// Only jobs of this caller.
    #[arg(long)]
    caller_id: Option<String>,
    /// Only jobs created after this RFC 3339 time.
    #[arg(long)]
    created_after: Option<String>,
    /// Only jobs created before this RFC 3339 time.
    #[arg(long)]
    created_before: Option<String>,
    /// Only jobs created in the last span: `90s`, `30m`, `1h`, `2d`.
    #[arg(long, value_parser = parse_span, conflicts_with = "created_after")]
    since: Option<chrono::Duration>,
    /// Jobs per page (1..=1000, default 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Go on from a previous page's `next` cursor.
    #[arg(long)]
    cursor: Option<String>,
}

impl ListArgs {
    /// The filter, or `None` when no filter flag was given (the plain id list).
    fn filter(&self) -> Option<ListJobsFilter> {
        let f = ListJobsFilter {
            status: self.status.clone(),
            script_type: self.script_type.clone(),
            context_id: self.context_id.clone(),
            caller_id: self.caller_id.clone(),
            created_after: self.created_after.clone().or_else(|| {
                self.since.map(|span| {
                    (chrono::Utc::now() - span).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                })
            }),
            created_before: self.created_before.clone(),
            limit: self.limit,
            cursor: self.cursor.clone(),
        };
        (f != ListJobsFilter::default()).then_some(f)
    }
}

/// A span like `90s`, `30m`, `1h` or `2d` (a whole number and one unit).
fn parse_span(text: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("{text:?} is not a span such as 90s, 30m, 1h or 2d");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = (text.get(..split).ok_or_else(bad)?, text.get(split..));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        Some("s") => 1,
        Some("m") => 60,
        Some("h") => 3_600,
        Some("d") => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .filter(|s| *s >= 0)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(bad)
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
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
pub(crate) struct JobArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The job id.
    job_id: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
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
    /// Idempotency key: creating again with the same key answers the first job's id.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The script, or `-` to read it from stdin.
    script: String,
}

/// Runs `command` on a runtime of its own.
pub(crate) fn run_blocking(command: ClientCommand) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")?
        .block_on(run(command))
}

/// Runs one client command against a running server.
async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Run {
            client,
            script_type,
            timeout,
            context_id,
            script,
        } => {
            let output = client
                .http()?
                .run_job(
                    read_script(&script)?,
                    script_type,
                    None,
                    timeout,
                    context_id,
                )
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &output, &output);
            Ok(())
        }
        ClientCommand::Play {
            client,
            context_id,
            script,
        } => {
            let result = client
                .http()?
                .play(read_script(&script)?, context_id)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &result.output, &result);
            Ok(())
        }
        ClientCommand::Create(args) => create(args).await,
        ClientCommand::Actor(command) => actor(command).await,
        ClientCommand::Context(command) => context(command).await,
        ClientCommand::Flow(command) => flow(command).await,
        ClientCommand::Start(JobArgs { client, job_id }) => {
            let result = client
                .http()?
                .start_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("started {job_id}"), &result);
            Ok(())
        }
        ClientCommand::Status(JobArgs { client, job_id }) => {
            let status = client
                .http()?
                .get_job_status(job_id)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, status.as_str(), &status);
            Ok(())
        }
        ClientCommand::Output(JobArgs { client, job_id }) => {
            let output = client
                .http()?
                .get_job_output(job_id)
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &output, &output);
            Ok(())
        }
        ClientCommand::Logs {
            job,
            follow: false,
            start,
            limit,
        } => {
            let JobArgs { client, job_id } = job;
            let logs = client
                .http()?
                .get_job_logs(job_id, start, limit)
                .await
                .map_err(rpc_error)?;
            if client.json {
                print_json(&logs);
            } else if let Some(page) = &logs.page {
                if let Some(gap) = &page.dropped {
                    print_line(&format!(
                        "[lines {}..{} were dropped by the log cap]",
                        gap.from, gap.to
                    ));
                }
                for (seq, line) in (page.start..).zip(&page.lines) {
                    print_line(&format!("{seq}\t{line}"));
                }
                print_line(&format!("next: --start {}", page.next));
            } else if let Some(text) = &logs.logs {
                print_line(text);
            }
            Ok(())
        }
        ClientCommand::Logs {
            job,
            follow: true,
            start,
            ..
        } => follow_logs(job, start).await,
        ClientCommand::List(args) => {
            let client = &args.client;
            let answer = client
                .http()?
                .list_jobs(args.filter())
                .await
                .map_err(rpc_error)?;
            let text = match &answer {
                ListJobsResult::Ids(ids) => ids.join("\n"),
                ListJobsResult::Page(page) => {
                    let mut lines: Vec<String> = page
                        .jobs
                        .iter()
                        .map(|j| {
                            format!(
                                "{}\t{}\t{}\tcontext {}\tcaller {}\tcreated {}",
                                j.id,
                                j.status,
                                j.script_type,
                                j.context_id,
                                j.caller_id,
                                j.created_at
                                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                            )
                        })
                        .collect();
                    if let Some(next) = &page.next_cursor {
                        lines.push(format!("next: --cursor {next}"));
                    }
                    lines.join("\n")
                }
            };
            print_text_or_json(client, &text, &answer);
            Ok(())
        }
        ClientCommand::Stats(client) => {
            let stats = client.http()?.stats().await.map_err(rpc_error)?;
            let counts = |m: &BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut lines = vec![
                format!("version {}, up {} s", stats.version, stats.uptime_secs),
                format!("jobs by status: {}", counts(&stats.jobs_by_status)),
                format!("jobs by type: {}", counts(&stats.jobs_by_script_type)),
                format!(
                    "queued: {}; delayed {}",
                    counts(&stats.queued),
                    stats.delayed
                ),
            ];
            for lane in &stats.lanes {
                lines.push(format!(
                    "lane context {} {}: queued {}",
                    lane.context_id, lane.script_type, lane.queued
                ));
            }
            for r in &stats.runners {
                lines.push(format!(
                    "runner {}\t{}\tconnected {}/{}\tin flight {}/{}",
                    r.name,
                    r.script_types.join(","),
                    r.connected,
                    r.processes,
                    r.in_flight,
                    r.max_in_flight
                ));
            }
            print_text_or_json(&client, &lines.join("\n"), &stats);
            Ok(())
        }
        ClientCommand::Stop(JobArgs { client, job_id }) => {
            client
                .http()?
                .stop_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("stopped {job_id}"), &());
            Ok(())
        }
        ClientCommand::Delete(JobArgs { client, job_id }) => {
            client
                .http()?
                .delete_job(job_id.clone())
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&client, &format!("deleted {job_id}"), &());
            Ok(())
        }
        ClientCommand::Clear(client) => {
            client.http()?.clear_all_jobs().await.map_err(rpc_error)?;
            print_text_or_json(&client, "cleared all jobs", &());
            Ok(())
        }
        ClientCommand::Runners(client) => {
            let runners = client.http()?.list_runners().await.map_err(rpc_error)?;
            let text = runners
                .iter()
                .map(|r| {
                    let mut line = format!(
                        "{}\t{}\t{}\tconnected {}/{}\tin flight {}/{}\trestarts {}\thello {}\tprotocol {}",
                        r.name,
                        r.script_types.join(","),
                        r.transport,
                        r.connected,
                        r.processes,
                        r.in_flight,
                        r.max_in_flight,
                        r.restarts,
                        r.hello,
                        r.protocol.as_deref().unwrap_or("-"),
                    );
                    if let Some(why) = &r.last_error {
                        line.push_str(&format!("\tfailures {}: {why}", r.failures));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n");
            print_text_or_json(&client, &text, &runners);
            Ok(())
        }
    }
}

async fn actor(command: ActorCommand) -> anyhow::Result<()> {
    let (client, actor) = match command {
        ActorCommand::Create {
            client,
            id,
            pubkey,
            addresses,
        } => {
            let params = ActorCreateParams {
                actor: ActorCreate {
                    id,
                    pubkey,
                    address: addresses,
                },
            };
            let actor = client.http()?.actor_create(params).await;
            (client, actor)
        }
        ActorCommand::Load { client, id } => {
            let actor = client.http()?.actor_load(IdParams { id }).await;
            (client, actor)
        }
    };
    let actor = actor.map_err(rpc_error)?;
    let text = format!(
        "actor {}\tpubkey {}\taddress {}",
        actor.id,
        actor.pubkey,
        actor.address.join(",")
    );
    print_text_or_json(&client, &text, &actor);
    Ok(())
}

async fn flow(command: FlowCommand) -> anyhow::Result<()> {
    let (client, flow) = match command {
        FlowCommand::Create {
            flow,
            jobs,
            caller_id,
        } => {
            let params = FlowCreateParams {
                context_id: flow.context_id,
                flow: FlowCreate {
                    id: flow.id,
                    caller_id,
                    context_id: flow.context_id,
                    jobs,
                    env_vars: BTreeMap::new(),
                    result: None,
                },
            };
            let created = flow.client.http()?.flow_create(params).await;
            (flow.client, created)
        }
        FlowCommand::Load(flow) => {
            let loaded = flow.client.http()?.flow_load(flow_key(&flow)).await;
            (flow.client, loaded)
        }
        FlowCommand::Start(flow) => {
            let started = flow.client.http()?.flow_start(flow_key(&flow)).await;
            (flow.client, started)
        }
        FlowCommand::Dag(flow) => {
            let dag = flow
                .client
                .http()?
                .flow_dag(flow_key(&flow))
                .await
                .map_err(rpc_error)?;
            print_text_or_json(&flow.client, &dag_text(&dag), &dag);
            return Ok(());
        }
    };
    let flow = flow.map_err(rpc_error)?;
    let mut text = format!(
        "flow {}\tcontext {}\tstatus {:?}\tjobs {}",
        flow.id,
        flow.context_id,
        flow.status,
        join_ids(&flow.jobs)
    );
    for (key, value) in &flow.result {
        text.push_str(&format!("\n  {key}: {value}"));
    }
    print_text_or_json(&client, &text, &flow);
    Ok(())
}

fn flow_key(flow: &FlowRef) -> FlowLoadParams {
    FlowLoadParams {
        context_id: flow.context_id,
        id: flow.id,
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// A DAG for people: one line per level, each job with what it waits for.
fn dag_text(dag: &FlowDag) -> String {
    let mut text = format!(
        "flow {} (context {}): {} jobs, {} levels; roots {}, leaves {}",
        dag.flow_id,
        dag.context_id,
        dag.nodes.len(),
        dag.levels.len(),
        join_ids(&dag.roots),
        join_ids(&dag.leaves)
    );
    for (n, level) in dag.levels.iter().enumerate() {
        let jobs: Vec<String> = level
            .iter()
            .map(|id| match dag.nodes.get(&id.to_string()) {
                Some(node) if !node.depends.is_empty() => {
                    format!("{id} (after {})", join_ids(&node.depends))
                }
                _ => id.to_string(),
            })
            .collect();
        text.push_str(&format!("\n  level {n}: {}", jobs.join("  ")));
    }
    text
}

async fn context(command: ContextCommand) -> anyhow::Result<()> {
    let (client, context) = match command {
        ContextCommand::Create {
            client,
            id,
            admins,
            executors,
            readers,
        } => {
            let params = ContextCreateParams {
                context: ContextCreate {
                    id,
                    admins,
                    readers,
                    executors,
                },
            };
            let context = client.http()?.context_create(params).await;
            (client, context)
        }
        ContextCommand::Load { client, id } => {
            let context = client.http()?.context_load(IdParams { id }).await;
            (client, context)
        }
    };
    let context = context.map_err(rpc_error)?;
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let text = format!(
        "context {}\tadmins {}\texecutors {}\treaders {}",
        context.id,
        ids(&context.admins),
        ids(&context.executors),
        ids(&context.readers)
    );
    print_text_or_json(&client, &text, &context);
    Ok(())
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut env_vars = BTreeMap::new();
    for pair in &args.env_vars {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {pair:?}: expected NAME=VALUE"))?;
        env_vars.insert(name.to_owned(), value.to_owned());
    }
    let params = CreateJobParams {
        script: read_script(&args.script)?,
        script_type: args.script_type,
        caller_id: args.caller_id,
        context_id: args.context_id,
        timeout: args.timeout,
        prerequisites: args.prerequisites,
        retries: args.retries,
        env_vars,
        idempotency_key: args.idempotency_key,
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
async fn follow_logs(job: JobArgs, start: Option<u64>) -> anyhow::Result<()> {
    let JobArgs { client, job_id } = job;
    let ws = ws_client(&client.url, client.token.as_deref())
        .await
        .with_context(|| format!("cannot connect to {}", client.url))?;
    let mut events = ws
        .subscribe_job_events(job_id, start)
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
            JobEvent::CursorExpired {
                requested,
                resumed_at,
                ..
            } => print_line(&format!(
                "[{} log lines dropped by the log cap: {requested}..{resumed_at}]",
                resumed_at.saturating_sub(requested)
            )),
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

#[cfg(test)]
mod tests {
    use super::parse_span;

    #[test]
    fn spans_read_as_seconds_minutes_hours_days() {
        assert_eq!(parse_span("90s"), Ok(chrono::Duration::seconds(90)));
        assert_eq!(parse_span("30m"), Ok(chrono::Duration::minutes(30)));
        assert_eq!(parse_span("1h"), Ok(chrono::Duration::hours(1)));
        assert_eq!(parse_span("2d"), Ok(chrono::Duration::days(2)));
        for bad in [
            "",
            "h",
            "1",
            "1w",
            "-1h",
            "1.5h",
            "99999999999999999d",
            "1é",
        ] {
            assert!(parse_span(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
