//! A runner that nobody in this project wrote the protocol of: its handlers are registered
//! on `rrq-runner` 0.9.9's `Registry`, and its frames are read and written by rrq's own
//! code (protocol v1). The end-to-end tests in `tests/rrq_runner.rs` plug it into a real
//! supervisor with no `hello` setting, as a user would.
//!
//! ```text
//! rrq-test-runner                      serve TCP on $RRQ_RUNNER_TCP_SOCKET (rrq's convention)
//! rrq-test-runner --tcp-socket ADDR    the same on ADDR (what a managed pool passes too)
//! rrq-test-runner --stdio              plain v1 over stdin/stdout, frames decoded with
//!                                      rrq_protocol::decode_frame: an unknown frame type
//!                                      (such as `hello`) ends the process
//! ```
//!
//! Every script type is a handler. Scripts (one command, then its argument):
//!
//! | script | outcome |
//! |---|---|
//! | `echo TEXT` | success, result TEXT |
//! | `context` | success, result the request's `context` and `kwargs` as JSON |
//! | `fail MSG` | error MSG |
//! | `retry SECS` | `retry` after SECS on attempt 1, then success `ok on attempt N` |
//! | `sleep SECS` | success `slept` after SECS (rrq answers `timeout` at the deadline and `cancelled` on a cancel) |

use std::collections::HashMap;
use std::time::Duration;

use rrq_protocol::{RunnerMessage, decode_frame, encode_frame};
use rrq_runner::{ExecutionOutcome, ExecutionRequest, Registry, RunnerRuntime};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SCRIPT_TYPES: [&str; 4] = ["SAL", "OSIS", "V", "Python"];

async fn handle(req: ExecutionRequest) -> ExecutionOutcome {
    let script = req.args.first().and_then(Value::as_str).unwrap_or("");
    let (cmd, arg) = script.split_once(' ').unwrap_or((script, ""));
    let (job_id, request_id) = (req.job_id.clone(), req.request_id.clone());
    match cmd {
        "echo" => ExecutionOutcome::success(job_id, request_id, arg),
        "context" => ExecutionOutcome::success(
            job_id,
            request_id,
            json!({"context": req.context, "kwargs": req.kwargs}),
        ),
        "fail" => ExecutionOutcome::error(job_id, request_id, arg),
        "retry" if req.context.attempt == 1 => {
            let secs = arg.parse::<f64>().unwrap_or(0.1);
            ExecutionOutcome::retry(job_id, request_id, "try again later", Some(secs))
        }
        "retry" => ExecutionOutcome::success(
            job_id,
            request_id,
            format!("ok on attempt {}", req.context.attempt),
        ),
        "sleep" => {
            let secs = arg.parse::<f64>().unwrap_or(1.0);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            ExecutionOutcome::success(job_id, request_id, "slept")
        }
        other => ExecutionOutcome::error(job_id, request_id, format!("unknown script {other:?}")),
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    for name in SCRIPT_TYPES {
        registry.register(name, handle);
    }
    registry
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let registry = registry();
    if args.iter().any(|a| a == "--stdio") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        return runtime.block_on(serve_stdio(registry));
    }
    let addr = args
        .iter()
        .position(|a| a == "--tcp-socket")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(rrq_runner::ENV_RUNNER_TCP_SOCKET).ok())
        .ok_or("--tcp-socket ADDR or RRQ_RUNNER_TCP_SOCKET is required")?;
    let addr = rrq_runner::parse_tcp_socket(&addr)?;
    RunnerRuntime::new()?.run_tcp(&registry, addr)
}

/// Plain protocol v1 over stdio: rrq's frame decoder, rrq's registry, no extension.
async fn serve_stdio(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
    let mut stdin = tokio::io::stdin();
    let (tx, mut rx) = mpsc::channel::<ExecutionOutcome>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(outcome) = rx.recv().await {
            let Ok(frame) = encode_frame(&RunnerMessage::Response { payload: outcome }) else {
                break;
            };
            if stdout.write_all(&frame).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let mut header = [0u8; 4];
        if stdin.read_exact(&mut header).await.is_err() {
            break; // EOF: the supervisor is gone
        }
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 || len > 16 * 1024 * 1024 {
            return Err(format!("bad frame length {len}").into());
        }
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&header);
        frame.resize(4 + len, 0);
        stdin.read_exact(&mut frame[4..]).await?;
        // An unknown `type` (an extension frame) is an error here, as in rrq's runtime.
        match decode_frame(&frame)? {
            RunnerMessage::Request { payload } => {
                let registry = registry.clone();
                let tx = tx.clone();
                let request_id = payload.request_id.clone();
                running.retain(|_, task| !task.is_finished());
                running.insert(
                    request_id,
                    tokio::spawn(async move {
                        let _ = tx.send(registry.execute(payload).await).await;
                    }),
                );
            }
            RunnerMessage::Cancel { payload } => {
                if let Some(request_id) = payload.request_id
                    && let Some(task) = running.remove(&request_id)
                {
                    task.abort();
                    let mut outcome =
                        ExecutionOutcome::error(payload.job_id, request_id, "Job cancelled");
                    if let Some(error) = outcome.error.as_mut() {
                        error.error_type = Some("cancelled".to_owned());
                    }
                    let _ = tx.send(outcome).await;
                }
            }
            RunnerMessage::Response { .. } => return Err("a supervisor sent a response".into()),
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}
