//! The SDK over in-memory duplex streams (and one TCP listener for auth): every
//! behaviour a supervisor relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::{Peer, assert_outcome, hello, request};
use hero_protocol::{
    CancelRequest, ExecutionRequest, LogStream, Message, OutcomeStatus, error_type,
};
use hero_runner::{HandlerContext, HandlerError, Runner, RunnerBuilder, ServeError};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Tokens of the handlers that ran, by request id, so tests can check cancellation
/// reached them.
type Seen = Arc<Mutex<Vec<(String, CancellationToken)>>>;

/// `sleep [ms]`: sleeps, returns "slept"; `block`: waits for cancellation (records its
/// token); `panic`; `fail`; `retry`; `chatty`: two log lines then "done".
fn test_runner(builder: RunnerBuilder, seen: Seen) -> Runner {
    builder
        .handler("sleep", |req: ExecutionRequest, _ctx| async move {
            let ms = req.args.first().and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!(format!("slept {ms}")))
        })
        .handler(
            "block",
            move |req: ExecutionRequest, ctx: HandlerContext| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push((req.request_id.clone(), ctx.cancellation().clone()));
                    ctx.cancellation().cancelled().await;
                    Ok(json!("saw the cancellation"))
                }
            },
        )
        .handler("panic", |_req, _ctx| async move {
            if true {
                panic!("boom");
            }
            Ok(Value::Null)
        })
        .handler("fail", |_req, _ctx| async move {
            Err(HandlerError::typed("my_type", "it failed").with_code("E42"))
        })
        .handler("retry", |_req, _ctx| async move {
            Err(HandlerError::retry("later", Some(Duration::from_secs(3))))
        })
        .handler("chatty", |_req, ctx: HandlerContext| async move {
            ctx.log(LogStream::Stdout, "line one");
            ctx.log_async(LogStream::Stderr, "line two").await;
            Ok(json!("done"))
        })
        .build()
}

/// A runner serving one end of a duplex stream; the test holds the other.
fn connect(runner: &Runner) -> (Peer<DuplexStream>, JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let runner = runner.clone();
    let served = tokio::spawn(async move {
        let (r, w) = tokio::io::split(theirs);
        runner.serve_connection(r, w).await;
    });
    (Peer::new(ours), served)
}

fn setup(builder: RunnerBuilder) -> (Runner, Seen) {
    let seen = Seen::default();
    (test_runner(builder, seen.clone()), seen)
}

async fn wait_started(seen: &Seen, n: usize) {
    for _ in 0..1000 {
        if seen.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{n} handlers did not start");
}

fn token_of(seen: &Seen, request_id: &str) -> CancellationToken {
    seen.lock()
        .unwrap()
        .iter()
        .find(|(id, _)| id == request_id)
        .map(|(_, t)| t.clone())
        .expect("handler ran")
}

#[tokio::test]
async fn responses_come_back_out_of_order() {
    let (runner, _) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    peer.request(request("j1", "slow", "sleep", vec![json!(300)]))
        .await;
    peer.request(request("j2", "fast", "sleep", vec![json!(1)]))
        .await;
    let first = peer.response().await;
    assert_outcome(&first, "fast", OutcomeStatus::Success, None);
    assert_eq!(first.result, Some(json!("slept 1")));
    assert_eq!(first.job_id.as_deref(), Some("j2"));
    let second = peer.response().await;
    assert_outcome(&second, "slow", OutcomeStatus::Success, None);
}

#[tokio::test]
async fn beyond_max_in_flight_is_runner_busy_and_a_freed_slot_is_reused() {
    let (runner, seen) = setup(Runner::builder().max_in_flight(2));
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "block", vec![])).await;
    peer.request(request("j", "r2", "block", vec![])).await;
    wait_started(&seen, 2).await;
    peer.request(request("j", "r3", "block", vec![])).await;
    assert_outcome(
        &peer.response().await,
        "r3",
        OutcomeStatus::Error,
        Some(error_type::RUNNER_BUSY),
    );

    peer.send(Message::Cancel(CancelRequest::request("j", "r1")))
        .await;
    assert_outcome(
        &peer.response().await,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    // The slot is free as soon as the answer is out.
    peer.request(request("j", "r4", "sleep", vec![json!(0)]))
        .await;
    assert_outcome(&peer.response().await, "r4", OutcomeStatus::Success, None);
}

#[tokio::test]
async fn a_passed_deadline_is_answered_timeout_and_cancels_the_handler() {
    let (runner, seen) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    let mut req = request("j", "r1", "block", vec![]);
    req.context.deadline = Some(Utc::now() + chrono::Duration::milliseconds(150));
    peer.request(req).await;
    let outcome = peer.response().await;
    assert_outcome(
        &outcome,
        "r1",
        OutcomeStatus::Timeout,
        Some(error_type::TIMEOUT),
    );
    assert!(token_of(&seen, "r1").is_cancelled());

    // A deadline already gone: answered at once, the handler never runs.
    let mut late = request("j", "r2", "block", vec![]);
    late.context.deadline = Some(Utc::now() - chrono::Duration::seconds(1));
    peer.request(late).await;
    assert_outcome(
        &peer.response().await,
        "r2",
        OutcomeStatus::Timeout,
        Some(error_type::TIMEOUT),
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn cancel_by_request_stops_only_that_request() {
    let (runner, seen) = setup(Runner::builder().cancel_grace(Duration::from_secs(30)));
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "block", vec![])).await;
    peer.request(request("j", "r2", "block", vec![])).await;
    wait_started(&seen, 2).await;
    peer.send(Message::Cancel(CancelRequest::request("j", "r2")))
        .await;
    let outcome = peer.response().await;
    assert_outcome(
        &outcome,
        "r2",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    assert!(token_of(&seen, "r2").is_cancelled());
    assert!(!token_of(&seen, "r1").is_cancelled());
    // A cancel naming another job does not touch r1.
    peer.send(Message::Cancel(CancelRequest::request("other", "r1")))
        .await;
    peer.send(Message::Cancel(CancelRequest::request("j", "r1")))
        .await;
    assert_outcome(
        &peer.response().await,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
}

#[tokio::test]
async fn cancel_by_job_stops_every_request_of_that_job() {
    let (runner, seen) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    peer.request(request("a", "a1", "block", vec![])).await;
    peer.request(request("a", "a2", "block", vec![])).await;
    peer.request(request("b", "b1", "block", vec![])).await;
    wait_started(&seen, 3).await;
    peer.send(Message::Cancel(CancelRequest::job("a"))).await;
    let mut ids = vec![];
    for _ in 0..2 {
        let o = peer.response().await;
        assert_eq!(o.error_type(), Some(error_type::CANCELLED), "{o:?}");
        ids.push(o.request_id.unwrap());
    }
    ids.sort();
    assert_eq!(ids, ["a1", "a2"]);
    assert!(!token_of(&seen, "b1").is_cancelled());
    peer.send(Message::Cancel(CancelRequest::job("b"))).await;
    assert_outcome(
        &peer.response().await,
        "b1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
}

#[tokio::test]
async fn hard_kill_aborts_the_handler_and_kills_its_child_process() {
    let (pid_tx, mut pid_rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
    // The handler ignores its cancellation token: only a hard kill can stop it in time.
    let runner = Runner::builder()
        .cancel_grace(Duration::from_secs(60))
        .handler("sleeper", move |_req, _ctx| {
            let pid_tx = pid_tx.clone();
            async move {
                let mut child = tokio::process::Command::new("sleep")
                    .arg("30")
                    .process_group(0)
                    .spawn()
                    .map_err(|e| HandlerError::new(format!("spawn sleep: {e}")))?;
                let _group = hero_runner::process::ProcessGroup::of(&child);
                pid_tx.send(child.id().unwrap() as i32).unwrap();
                let _ = child.wait().await;
                Ok(json!("woke up"))
            }
        })
        .build();
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "sleeper", vec![])).await;
    let pid = tokio::time::timeout(common::FRAME_TIMEOUT, pid_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!common::process_gone(pid), "sleep is running");
    let started = std::time::Instant::now();
    peer.send(Message::Cancel(CancelRequest::job("j").hard()))
        .await;
    assert_outcome(
        &peer.response().await,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        common::wait_gone(pid, Duration::from_secs(5)).await,
        "child {pid} survived the hard kill"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_an_error_and_the_connection_keeps_serving() {
    let (runner, _) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "panic", vec![])).await;
    let outcome = peer.response().await;
    assert_outcome(
        &outcome,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::PANIC),
    );
    assert!(outcome.error.unwrap().message.contains("boom"));
    peer.request(request("j", "r2", "sleep", vec![json!(0)]))
        .await;
    assert_outcome(&peer.response().await, "r2", OutcomeStatus::Success, None);
}

#[tokio::test]
async fn handler_errors_map_to_outcomes() {
    let (runner, _) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "fail", vec![])).await;
    let failed = peer.response().await;
    assert_outcome(&failed, "r1", OutcomeStatus::Error, Some("my_type"));
    assert_eq!(failed.error.unwrap().code.as_deref(), Some("E42"));
    peer.request(request("j", "r2", "retry", vec![])).await;
    let retry = peer.response().await;
    assert_eq!(retry.status, OutcomeStatus::Retry);
    assert_eq!(retry.retry_after_seconds, Some(3.0));
}

#[tokio::test]
async fn an_unknown_function_is_handler_not_found_and_names_match_ignoring_case() {
    let (runner, _) = setup(Runner::builder());
    let (mut peer, _) = connect(&runner);
    peer.request(request("j", "r1", "nope", vec![])).await;
    let outcome = peer.response().await;
    assert_outcome(
        &outcome,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::HANDLER_NOT_FOUND),
    );
    assert!(outcome.error.unwrap().message.contains("nope"));
    peer.request(request("j", "r2", "SLEEP", vec![json!(0)]))
        .await;
    assert_outcome(&peer.response().await, "r2", OutcomeStatus::Success, None);
}

#[tokio::test]
async fn a_malformed_frame_closes_that_connection_only() {
    let (runner, seen) = setup(Runner::builder());
    let (mut peer, served) = connect(&runner);
    peer.request(request("j", "r1", "block", vec![])).await;
    wait_started(&seen, 1).await;
    // A whole frame whose payload is not JSON.
    let stream = peer.framed.get_mut();
    stream.write_all(&[0, 0, 0, 5]).await.unwrap();
    stream.write_all(b"nope!").await.unwrap();
    stream.flush().await.unwrap();
    // The in-flight request is cancelled; its answer may or may not make it out.
    loop {
        match tokio::time::timeout(
            common::FRAME_TIMEOUT,
            futures::StreamExt::next(&mut peer.framed),
        )
        .await
        {
            Ok(Some(Ok(Message::Response(o)))) => {
                assert_eq!(o.error_type(), Some(error_type::CANCELLED))
            }
            Ok(None | Some(Err(_))) => break,
            other => panic!("expected the connection closed, got {other:?}"),
        }
    }
    tokio::time::timeout(common::FRAME_TIMEOUT, served)
        .await
        .unwrap()
        .unwrap();
    assert!(token_of(&seen, "r1").is_cancelled());

    let (mut fresh, _) = connect(&runner);
    fresh
        .request(request("j", "r2", "sleep", vec![json!(0)]))
        .await;
    assert_outcome(&fresh.response().await, "r2", OutcomeStatus::Success, None);
}

#[tokio::test]
async fn log_frames_flow_only_after_a_hello_that_accepts_them() {
    let (runner, _) = setup(Runner::builder().name("test-runner").max_in_flight(7));
    // No hello: plain v1, no extension frames at all.
    let (mut plain, _) = connect(&runner);
    plain.request(request("j", "r1", "chatty", vec![])).await;
    let (outcome, logs) = plain.response_with_logs().await;
    assert_outcome(&outcome, "r1", OutcomeStatus::Success, None);
    assert!(logs.is_empty(), "{logs:?}");

    // A hello without "log": answered, still no log frames.
    let (mut quiet, _) = connect(&runner);
    quiet.send(hello(&[], None)).await;
    assert!(matches!(quiet.recv().await, Message::Hello(_)));
    quiet.request(request("j", "r2", "chatty", vec![])).await;
    assert!(quiet.response_with_logs().await.1.is_empty());

    let (mut peer, _) = connect(&runner);
    peer.send(hello(&["log"], None)).await;
    let Message::Hello(theirs) = peer.recv().await else {
        panic!("expected hello");
    };
    assert_eq!(theirs.name, "test-runner");
    assert_eq!(theirs.max_in_flight, Some(7));
    assert!(theirs.accepts("log"));
    assert!(
        theirs.functions.contains(&"chatty".to_owned()),
        "{theirs:?}"
    );
    peer.request(request("j", "r3", "chatty", vec![])).await;
    let (outcome, logs) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r3", OutcomeStatus::Success, None);
    let lines: Vec<_> = logs
        .iter()
        .map(|l| (l.stream, l.line.as_str(), l.request_id.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogStream::Stdout, "line one", "r3"),
            (LogStream::Stderr, "line two", "r3")
        ]
    );
}

#[tokio::test]
async fn with_an_auth_token_every_tcp_connection_must_open_with_it() {
    let (runner, _) = setup(Runner::builder().auth_token("s3cret"));
    let listener = runner
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let (runner, shutdown) = (runner.clone(), shutdown.clone());
        async move { runner.serve_listener(listener, shutdown).await }
    });
    let dial = || async { Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap()) };

    let mut no_hello = dial().await;
    no_hello
        .request(request("j", "r1", "sleep", vec![json!(0)]))
        .await;
    no_hello.expect_closed().await;

    let mut wrong = dial().await;
    wrong.send(hello(&[], Some("guess"))).await;
    wrong.expect_closed().await;

    let mut good = dial().await;
    good.send(hello(&[], Some("s3cret"))).await;
    assert!(matches!(good.recv().await, Message::Hello(_)));
    good.request(request("j", "r2", "sleep", vec![json!(0)]))
        .await;
    assert_outcome(&good.response().await, "r2", OutcomeStatus::Success, None);

    shutdown.cancel();
    drop(good);
    tokio::time::timeout(common::FRAME_TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_non_loopback_address_needs_an_auth_token() {
    let (runner, _) = setup(Runner::builder());
    let err = runner
        .bind_tcp("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::NonLoopbackWithoutAuth(_)),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_refuses_new_requests_and_lets_in_flight_ones_finish() {
    let (runner, _) = setup(Runner::builder());
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn({
        let (runner, shutdown) = (runner.clone(), shutdown.clone());
        async move {
            let (r, w) = tokio::io::split(theirs);
            runner.serve_connection_until(r, w, shutdown).await;
        }
    });
    let mut peer = Peer::new(ours);
    peer.request(request("j", "r1", "sleep", vec![json!(300)]))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    peer.request(request("j", "r2", "sleep", vec![json!(0)]))
        .await;
    assert_outcome(
        &peer.response().await,
        "r2",
        OutcomeStatus::Error,
        Some(error_type::RUNNER_BUSY),
    );
    assert_outcome(&peer.response().await, "r1", OutcomeStatus::Success, None);
    peer.expect_closed().await;
    tokio::time::timeout(common::FRAME_TIMEOUT, served)
        .await
        .unwrap()
        .unwrap();
}
