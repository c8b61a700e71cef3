//! A runner for end-to-end tests, told by its script what to do. It serves every
//! script type over stdio. Scripts (one command, then its argument):
//!
//! | script | outcome |
//! |---|---|
//! | `echo TEXT` | success, output TEXT |
//! | `worker` | success, output the request's `worker_id` (which supervisor ran it) |
//! | `sleep SECS` | success after SECS, unless cancelled first |
//! | `fail MSG` | error MSG (retried while attempts remain) |
//! | `invalid MSG` | error of type `invalid_request` (never retried) |
//! | `flaky N` | error on attempts 1..=N, then success `ok on attempt K` |
//! | `retry SECS` | `retry` asking for SECS; success on the 3rd attempt |
//! | `retry-forever SECS` | `retry` every time |
//! | `log LINE` | logs LINE, then success |
//! | `crash-once PATH` | first time (PATH absent): create PATH, exit the process mid-job; then success |
//! | `garbage-once PATH` | first time: create PATH, write a garbage frame to stdout; then success |
//! | `once DIR` | create DIR/<job_id> exclusively: error `ran twice` if it exists; then sleep 50 ms, success with worker_id |
//! | `freeze-once PATH` | first time: create PATH and SIGSTOP the whole process (it answers nothing, not even cancels); then success |
//!
//! `hero-test-runner` serves stdio; `hero-test-runner --tcp-socket ADDR [--parent-pid P]`
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
        other => Err(HandlerError::invalid_request(format!(
            "unknown test command `{other}`"
        ))),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    hero_runner::cli::init_logging();
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
    if let Some(pid) = flag("--parent-pid").and_then(|p| p.parse::<i32>().ok()) {
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
