//! A runner for the burn-down benchmark: answers every script type at once with
//! success and an empty output, so the figures measure the supervisor, the store and the
//! protocol, not the work.

use hero_protocol::ExecutionRequest;
use hero_runner::{HandlerContext, HandlerResult, Runner};
use serde_json::Value;

/// Requests in flight at once; the pool's own limit (`--in-flight`) is the lower one.
const MAX_IN_FLIGHT: usize = 1024;

async fn noop(_req: ExecutionRequest, _ctx: HandlerContext) -> HandlerResult {
    Ok(Value::String(String::new()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut builder = Runner::builder()
        .name("hero-noop-runner")
        .max_in_flight(MAX_IN_FLIGHT);
    for t in ["SAL", "OSIS", "V", "Python"] {
        builder = builder.handler(t, noop);
    }
    builder.build().serve_stdio().await
}
