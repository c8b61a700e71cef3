//! Test helpers: a supervisor-side peer speaking frames, and request builders.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use hero_protocol::{
    ExecutionContext, ExecutionOutcome, ExecutionRequest, FrameCodec, Hello, LogLine, Message,
    OutcomeStatus,
};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

/// Longest a test waits for one frame: generous for a loaded 2-core CI machine, and
/// only ever reached when something is broken.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

pub fn request(
    job_id: &str,
    request_id: &str,
    function: &str,
    args: Vec<Value>,
) -> ExecutionRequest {
    ExecutionRequest {
        protocol_version: "1".to_owned(),
        request_id: request_id.to_owned(),
        job_id: job_id.to_owned(),
        function_name: function.to_owned(),
        args,
        kwargs: Map::new(),
        context: ExecutionContext {
            job_id: job_id.to_owned(),
            attempt: 1,
            enqueue_time: Utc::now(),
            queue_name: format!("hero:q:work:type:{function}"),
            deadline: None,
            trace_context: None,
            worker_id: None,
        },
    }
}

/// A request for a script of `script_type`, with `env` as `kwargs.env`.
pub fn script(
    job_id: &str,
    request_id: &str,
    script_type: &str,
    script: &str,
    env: &[(&str, &str)],
) -> ExecutionRequest {
    let mut req = request(
        job_id,
        request_id,
        script_type,
        vec![Value::String(script.to_owned())],
    );
    let env: Map<String, Value> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    req.kwargs.insert("env".to_owned(), Value::Object(env));
    req
}

pub fn hello(extensions: &[&str], token: Option<&str>) -> Message {
    Message::Hello(Hello {
        extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        auth_token: token.map(str::to_owned),
        ..Hello::new("test-supervisor")
    })
}

/// The supervisor's end of a connection.
pub struct Peer<S> {
    pub framed: Framed<S, FrameCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn new(stream: S) -> Self {
        Peer {
            framed: Framed::new(stream, FrameCodec::new()),
        }
    }

    pub async fn send(&mut self, message: Message) {
        self.framed
            .send(message)
            .await
            .expect("send a frame to the runner");
    }

    pub async fn request(&mut self, request: ExecutionRequest) {
        self.send(Message::Request(request)).await;
    }

    /// The next frame; panics on timeout, error or close.
    pub async fn recv(&mut self) -> Message {
        match tokio::time::timeout(FRAME_TIMEOUT, self.framed.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => panic!("runner sent a bad frame: {e}"),
            Ok(None) => panic!("runner closed the connection"),
            Err(_) => panic!("no frame from the runner within {FRAME_TIMEOUT:?}"),
        }
    }

    /// The next response, collecting the log lines that come before it.
    pub async fn response_with_logs(&mut self) -> (ExecutionOutcome, Vec<LogLine>) {
        let mut logs = Vec::new();
        loop {
            match self.recv().await {
                Message::Response(o) => return (o, logs),
                Message::Log(l) => logs.push(l),
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be a response.
    pub async fn response(&mut self) -> ExecutionOutcome {
        match self.recv().await {
            Message::Response(o) => o,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Waits until the runner closes the connection; panics if it sends a frame first.
    pub async fn expect_closed(&mut self) {
        match tokio::time::timeout(FRAME_TIMEOUT, self.framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(m))) => panic!("expected the connection closed, got {m:?}"),
            Err(_) => panic!("connection still open after {FRAME_TIMEOUT:?}"),
        }
    }
}

#[track_caller]
pub fn assert_outcome(
    outcome: &ExecutionOutcome,
    request_id: &str,
    status: OutcomeStatus,
    error_type: Option<&str>,
) {
    assert_eq!(
        outcome.request_id.as_deref(),
        Some(request_id),
        "{outcome:?}"
    );
    assert_eq!(outcome.status, status, "{outcome:?}");
    assert_eq!(outcome.error_type(), error_type, "{outcome:?}");
}

/// Whether process `pid` is gone (no such process, or a zombie awaiting its reaper).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // Format: `pid (comm) state ...`; comm may hold spaces and parens.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits up to `limit` for `pid` to be gone.
pub async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process_gone(pid)
}
