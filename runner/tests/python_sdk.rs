//! The Python SDK (`sdk/python/hero_runner.py`), driven through a real `python3` running
//! `sdk/python/example_runner.py`: proof that runners are language-agnostic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use common::{Peer, assert_outcome, hello, request};
use hero_protocol::{CancelRequest, LogStream, Message, OutcomeStatus, error_type};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

fn example_runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/example_runner.py")
}

fn python(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(example_runner())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn spawn(cmd: &mut Command) -> Child {
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("python3 is not on PATH: install Python 3 to run the Python SDK tests")
        }
        Err(e) => panic!("spawning python3: {e}"),
    }
}

async fn stdio_runner(args: &[&str]) -> (Child, Peer<tokio::io::Join<ChildStdout, ChildStdin>>) {
    let mut all = vec!["--stdio"];
    all.extend_from_slice(args);
    let mut child = spawn(&mut python(&all));
    let stdio = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    (child, Peer::new(stdio))
}

#[tokio::test]
async fn python_runner_answers_requests_over_stdio() {
    let (_child, mut peer) = stdio_runner(&[]).await;
    // Plain v1 first: no hello, no log frames.
    peer.request(request(
        "j",
        "r1",
        "echo",
        vec![json!({"any": ["json", 1]})],
    ))
    .await;
    let outcome = peer.response().await;
    assert_outcome(&outcome, "r1", OutcomeStatus::Success, None);
    assert_eq!(outcome.result, Some(json!({"any": ["json", 1]})));

    peer.request(request("j", "r2", "nope", vec![])).await;
    assert_outcome(
        &peer.response().await,
        "r2",
        OutcomeStatus::Error,
        Some(error_type::HANDLER_NOT_FOUND),
    );

    peer.request(request("j", "r3", "fail", vec![])).await;
    let failed = peer.response().await;
    assert_outcome(&failed, "r3", OutcomeStatus::Error, Some("example_failure"));
    assert_eq!(failed.error.unwrap().code.as_deref(), Some("E1"));

    peer.request(request("j", "r4", "retry", vec![])).await;
    let retry = peer.response().await;
    assert_eq!(
        (retry.status, retry.retry_after_seconds),
        (OutcomeStatus::Retry, Some(2.0))
    );

    // After a hello accepting logs, log frames precede the response.
    peer.send(hello(&["log"], None)).await;
    let Message::Hello(theirs) = peer.recv().await else {
        panic!("expected hello");
    };
    assert_eq!(theirs.name, "python-example-runner");
    assert_eq!(theirs.functions, ["echo", "fail", "retry", "sleep"]);
    peer.request(request("j", "r5", "ECHO", vec![json!("x")]))
        .await;
    let (outcome, logs) = peer.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!("x")));
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(
        (logs[0].stream, logs[0].line.as_str()),
        (LogStream::Stdout, "echoing for j")
    );
}

#[tokio::test]
async fn python_runner_cancels_times_out_and_is_busy_beyond_its_limit() {
    let (_child, mut peer) = stdio_runner(&["--max-in-flight", "2"]).await;
    peer.request(request("a", "a1", "sleep", vec![json!(30)]))
        .await;
    peer.request(request("b", "b1", "sleep", vec![json!(30)]))
        .await;
    peer.request(request("c", "c1", "sleep", vec![json!(30)]))
        .await;
    assert_outcome(
        &peer.response().await,
        "c1",
        OutcomeStatus::Error,
        Some(error_type::RUNNER_BUSY),
    );

    peer.send(Message::Cancel(CancelRequest::request("a", "a1")))
        .await;
    assert_outcome(
        &peer.response().await,
        "a1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    peer.send(Message::Cancel(CancelRequest::job("b").hard()))
        .await;
    assert_outcome(
        &peer.response().await,
        "b1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );

    let mut req = request("d", "d1", "sleep", vec![json!(30)]);
    req.context.deadline = Some(Utc::now() + chrono::Duration::milliseconds(200));
    peer.request(req).await;
    assert_outcome(
        &peer.response().await,
        "d1",
        OutcomeStatus::Timeout,
        Some(error_type::TIMEOUT),
    );
}

#[tokio::test]
async fn python_runner_closes_on_a_malformed_frame() {
    let (mut child, mut peer) = stdio_runner(&[]).await;
    let stream = peer.framed.get_mut();
    stream
        .write_all(&[0, 0, 0, 3, b'{', b'{', b'{'])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    peer.expect_closed().await;
    // Over stdio the connection is the process: it exits.
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn python_runner_over_tcp_requires_its_auth_token() {
    let mut child = spawn(
        python(&["--tcp-socket", "127.0.0.1:0", "--auth-token", "py-token"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("listening on ") {
                return rest.trim().parse().unwrap();
            }
        }
        panic!("python runner exited without listening");
    })
    .await
    .unwrap();

    let mut unauth = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    unauth
        .request(request("j", "r1", "echo", vec![json!(1)]))
        .await;
    unauth.expect_closed().await;

    let mut peer = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    peer.send(hello(&[], Some("py-token"))).await;
    assert!(matches!(peer.recv().await, Message::Hello(_)));
    peer.request(request("j", "r2", "echo", vec![json!("over tcp")]))
        .await;
    let outcome = peer.response().await;
    assert_outcome(&outcome, "r2", OutcomeStatus::Success, None);
    assert_eq!(outcome.result, Some(json!("over tcp")));
}
