//! A runner for end-to-end tests, told by its script what to do. It serves every
//! script type over stdio. Scripts (one command, then its argument):
//!
//! | script | outcome |
//! |---|---|
//! | `echo TEXT` | success, output TEXT |
//! | `worker` | success, output the request's `worker_id` (which supervisor ran it) |
//! | `queue` | success, output the request's `queue_name` (the queue the job came from) |
//! | `sleep SECS` | success after SECS, unless cancelled first |
//! | `fail MSG` | error MSG (retried while attempts remain) |
//! | `invalid MSG` | error of type `invalid_request` (never retried) |
//! | `flaky N` | error on attempts 1..=N, then success `ok on attempt K` |
//! | `retry SECS` | `retry` asking for SECS; success on the 3rd attempt |
//! | `retry-forever SECS` | `retry` every time |
//! | `log LINE` | logs LINE, then success |
//! | `ticks N MS` | logs `tick 1` .. `tick N`, one every MS ms, then success `ticked N`, unless cancelled first |
//! | `crash-once PATH` | first time (PATH absent): create PATH, exit the process mid-job; then success |
//! | `garbage-once PATH` | first time: create PATH, write a garbage frame to stdout; then success |
//! | `once DIR` | create DIR/<job_id> exclusively: error `ran twice` if it exists; then sleep 50 ms, success with worker_id |
//! | `freeze-once PATH` | first time: create PATH and SIGSTOP the whole process (it answers nothing, not even cancels); then success |
//! | `soak LEDGER OUTCOME [MS]` | append `<job_id> <attempt> <OUTCOME> <pid>` to the file LEDGER, sleep MS (default 0), then act out OUTCOME (below) |
//!
//! `soak` outcomes, for the reliability suite (the ledger is the runner's own record of
//! every execution, so a test can prove no attempt ran twice and no job finished twice):
//!
//! | OUTCOME | answer |
//! |---|---|
//! | `ok` | success, output `ok <attempt>` |
//! | `fail` | error `told to fail` (retried while attempts remain) |
//! | `flaky` | error on attempt 1, then as `ok` |
//! | `retry` | `retry` after 10 ms, every attempt (ends in `retries_exhausted`) |
//! | `retry-once` | `retry` after 10 ms on attempt 1, then as `ok` |
//! | `timeout` | nothing until cancelled (the job's deadline) |
//! | `invalid` | error of type `invalid_request` (never retried) |
//!
//! `hero-test-runner` serves stdio; `hero-test-runner --tcp-socket ADDR [--parent-pid P]`
//! (or `HERO_RUNNER_PARENT_PID`)
//! serves TCP instead (the convention of managed runners) and prints nothing.

use std::io::Write;
use std::time::Duration;

use hero_protocol::{ExecutionRequest, LogStream};
use hero_runner::{HandlerContext, HandlerError, Runner};
use serde_json::{Value, json};

async fn handle(req: ExecutionRequest, ctx: HandlerContext) -> Result<Value, HandlerError> {
    let script = req.args.first().and_then(Value::as_str).unwrap_or("");
    let (cmd, arg) = script.split_once(' ').unwrap_or((script, ""));
    let attempt = req.context.attempt;
    match cmd {
        "echo" => Ok(json!(arg)),
        "worker" => Ok(json!(req.context.worker_id.unwrap_or_default())),
        "queue" => Ok(json!(req.context.queue_name)),
        "sleep" => {
            let secs: f64 = arg.parse().unwrap_or(1.0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => Ok(json!("slept")),
                _ = ctx.cancellation().cancelled() => Err(HandlerError::typed("cancelled", "stopped while sleeping")),
            }
        }
        "fail" => Err(HandlerError::new(arg)),
        "invalid" => Err(HandlerError::invalid_request(arg)),
        "flaky" => {
            let n: u32 = arg.parse().unwrap_or(1);
            if attempt <= n {
                Err(HandlerError::new(format!(
                    "flaky failure on attempt {attempt}"
                )))
            } else {
                Ok(json!(format!("ok on attempt {attempt}")))
            }
        }
        "retry" => {
            let secs: f64 = arg.parse().unwrap_or(0.1);
            if attempt < 3 {
                Err(HandlerError::retry(
                    "not yet",
                    Some(Duration::from_secs_f64(secs)),
                ))
            } else {
                Ok(json!(format!("ok on attempt {attempt}")))
            }
        }
        "retry-forever" => {
            let secs: f64 = arg.parse().unwrap_or(0.1);
            Err(HandlerError::retry(
                "never",
                Some(Duration::from_secs_f64(secs)),
            ))
        }
        "log" => {
            ctx.log_async(LogStream::Stdout, arg).await;
            ctx.log_async(LogStream::Stderr, format!("{arg} (stderr)"))
                .await;
            Ok(json!("logged"))
        }
        "ticks" => {
            let (n, ms) = arg.split_once(' ').unwrap_or((arg, "100"));
            let n: u32 = n.parse().unwrap_or(10);
            let ms: u64 = ms.parse().unwrap_or(100);
            for i in 1..=n {
                ctx.log_async(LogStream::Stdout, format!("tick {i}")).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = ctx.cancellation().cancelled() => {
                        return Err(HandlerError::typed("cancelled", format!("stopped after tick {i}")));
                    }
                }
            }
            Ok(json!(format!("ticked {n}")))
        }
        "crash-once" => {
            if std::fs::File::create_new(arg).is_ok() {
                std::process::exit(3);
            }
            Ok(json!("survived"))
        }
        "garbage-once" => {
            if std::fs::File::create_new(arg).is_ok() {
                {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(b"\x00\x00\x00\x05{{{{{");
                    let _ = out.flush();
                }
                std::future::pending::<()>().await;
            }
            Ok(json!("clean"))
        }
        "once" => {
            let path = std::path::Path::new(arg).join(&req.job_id);
            if std::fs::File::create_new(&path).is_err() {
                return Err(HandlerError::new(format!("ran twice: {}", req.job_id)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(json!(req.context.worker_id.unwrap_or_default()))
        }
        "freeze-once" => {
            if std::fs::File::create_new(arg).is_ok() {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            }
            Ok(json!("thawed"))
        }
        "soak" => soak(&req.job_id, attempt, arg, &ctx).await,
        other => Err(HandlerError::invalid_request(format!(
            "unknown test command `{other}`"
        ))),
    }
}

/// `soak LEDGER OUTCOME [MS]`: see the module docs.
async fn soak(
    job_id: &str,
    attempt: u32,
    arg: &str,
    ctx: &HandlerContext,
) -> Result<Value, HandlerError> {
    let mut words = arg.split(' ');
    let (Some(ledger), Some(outcome)) = (words.next(), words.next()) else {
        return Err(HandlerError::invalid_request(format!(
            "soak needs LEDGER OUTCOME, got `{arg}`"
        )));
    };
    let delay_ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    // One write of one short line to a file opened for append: lines from concurrent
    // runner processes never interleave.
    let line = format!("{job_id} {attempt} {outcome} {}\n", std::process::id());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        return Err(HandlerError::invalid_request(format!(
            "cannot write the ledger {ledger}: {e}"
        )));
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let ok = || Ok(json!(format!("ok {attempt}")));
    let retry = || {
        Err(HandlerError::retry(
            "told to retry",
            Some(Duration::from_millis(10)),
        ))
    };
    match outcome {
        "ok" => ok(),
        "fail" => Err(HandlerError::new("told to fail")),
        "flaky" if attempt == 1 => Err(HandlerError::new("told to fail")),
        "flaky" => ok(),
        "retry" => retry(),
        "retry-once" if attempt == 1 => retry(),
        "retry-once" => ok(),
        "timeout" => {
            ctx.cancellation().cancelled().await;
            Err(HandlerError::typed("cancelled", "told to time out"))
        }
        "invalid" => Err(HandlerError::invalid_request("told to be invalid")),
        other => Err(HandlerError::invalid_request(format!(
            "unknown soak outcome `{other}`"
        ))),
    }
}

/// Logs to stderr (stdout is the wire), filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    init_logging();
    let mut builder = Runner::builder().name("hero-test-runner").max_in_flight(32);
    for t in ["SAL", "OSIS", "V", "Python"] {
        builder = builder.handler(t, handle);
    }
    let runner = builder.build();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(addr) = flag("--tcp-socket") else {
        return runner.serve_stdio().await;
    };
    let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let parent_pid = flag("--parent-pid").or_else(|| std::env::var("HERO_RUNNER_PARENT_PID").ok());
    if let Some(pid) = parent_pid.and_then(|p| p.parse::<i32>().ok()) {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let parent = nix::unistd::Pid::from_raw(pid);
            while nix::sys::signal::kill(parent, None).is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            shutdown.cancel();
        });
    }
    runner
        .serve_tcp(addr, shutdown)
        .await
        .map_err(std::io::Error::other)
}
