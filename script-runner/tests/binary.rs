//! The `hero-runner` binary as a real process, over stdio and TCP, running every script
//! type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The SDK's test helpers (frames over pipes, a test request), shared rather than copied.
#[path = "../../runner/tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use common::{Peer, assert_outcome, hello, script};
use hero_protocol::{CancelRequest, LogStream, Message, OutcomeStatus, error_type};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Join};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const RUNNER: &str = env!("CARGO_BIN_EXE_hero-runner");

type StdioPeer = Peer<Join<ChildStdout, ChildStdin>>;

fn runner_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(RUNNER);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// A runner over stdio, already past a hello that accepts log frames.
async fn stdio_runner(args: &[&str]) -> (Child, StdioPeer) {
    let mut all = vec!["--stdio"];
    all.extend_from_slice(args);
    let mut child = runner_command(&all).spawn().expect("spawn hero-runner");
    let stdio = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let mut peer = Peer::new(stdio);
    peer.send(hello(&["log"], None)).await;
    let Message::Hello(theirs) = peer.recv().await else {
        panic!("expected hello");
    };
    assert_eq!(theirs.name, "hero-runner");
    for f in ["SAL", "OSIS", "Python", "V"] {
        assert!(theirs.functions.iter().any(|g| g == f), "{theirs:?}");
    }
    (child, peer)
}

/// A runner on `127.0.0.1:0`; returns the address it logged.
async fn tcp_runner(args: &[&str]) -> (Child, std::net::SocketAddr) {
    let mut all = vec!["--tcp-socket", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = runner_command(&all)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hero-runner");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(common::FRAME_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("listening on ") {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("hero-runner exited without listening");
    })
    .await
    .expect("hero-runner logs `listening on`");
    // Keep draining its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

fn python3_available() -> bool {
    on_path("python3")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn lines_of(logs: &[hero_protocol::LogLine]) -> Vec<(LogStream, &str)> {
    logs.iter().map(|l| (l.stream, l.line.as_str())).collect()
}

#[tokio::test]
async fn sal_over_stdio_returns_values_prints_and_runs_commands() {
    let (_child, mut peer) = stdio_runner(&[]).await;
    let src = r#"print("hi " + env("GREETING")); debug("dbg"); let x = 6 * 7; x"#;
    peer.request(script("j", "r1", "SAL", src, &[("GREETING", "world")]))
        .await;
    let (outcome, logs) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r1", OutcomeStatus::Success, None);
    assert_eq!(outcome.result, Some(json!("42")));
    let logs = lines_of(&logs);
    assert_eq!(logs[0], (LogStream::Stdout, "hi world"));
    assert_eq!(logs[1].0, LogStream::Stderr);
    assert!(logs[1].1.contains("dbg"), "{logs:?}");

    // Unit value: the printed lines are the output. Case-insensitive type name.
    peer.request(script("j", "r2", "sal", r#"print("a"); print("b");"#, &[]))
        .await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!("a\nb")));

    // run() sees the request's env; exec() reports the exit code.
    let src = r#"let out = run("echo $GREETING"); let r = exec("exit 4"); out + " " + r.code"#;
    peer.request(script("j", "r3", "SAL", src, &[("GREETING", "env works")]))
        .await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!("env works 4")), "{outcome:?}");

    // Files.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.txt");
    let src = format!(
        r#"write_file("{0}", "content"); read_file("{0}")"#,
        path.display()
    );
    peer.request(script("j", "r4", "SAL", &src, &[])).await;
    assert_eq!(
        peer.response_with_logs().await.0.result,
        Some(json!("content"))
    );
}

#[tokio::test]
async fn sal_errors_sandbox_and_deadline() {
    let (_child, mut peer) = stdio_runner(&[]).await;
    peer.request(script("j", "r1", "SAL", r#"throw "bad thing""#, &[]))
        .await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r1", OutcomeStatus::Error, Some("script_error"));
    assert!(outcome.error.unwrap().message.contains("bad thing"));

    peer.request(script("j", "r2", "SAL", r#"import "evil" as e; 1"#, &[]))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r2",
        OutcomeStatus::Error,
        Some("script_error"),
    );

    peer.request(script("j", "r3", "SAL", r#"eval("1 + 1")"#, &[]))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r3",
        OutcomeStatus::Error,
        Some("script_error"),
    );

    peer.request(script("j", "r4", "SAL", "fn f(n) { f(n + 1) } f(0)", &[]))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r4",
        OutcomeStatus::Error,
        Some("script_error"),
    );

    // Not a string script: invalid_request.
    let mut bad = script("j", "r5", "SAL", "", &[]);
    bad.args = vec![json!(1)];
    peer.request(bad).await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r5",
        OutcomeStatus::Error,
        Some(error_type::INVALID_REQUEST),
    );

    // An endless loop stops at its deadline, and the runner keeps serving.
    let mut endless = script("j", "r6", "SAL", "loop { }", &[]);
    endless.context.deadline = Some(Utc::now() + chrono::Duration::milliseconds(300));
    peer.request(endless).await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r6",
        OutcomeStatus::Timeout,
        Some(error_type::TIMEOUT),
    );
    peer.request(script("j", "r7", "SAL", "1 + 1", &[])).await;
    assert_eq!(peer.response_with_logs().await.0.result, Some(json!("2")));

    // A cancelled endless loop ends too.
    peer.request(script("j", "r8", "SAL", "loop { }", &[]))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    peer.send(Message::Cancel(CancelRequest::request("j", "r8")))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r8",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
}

#[tokio::test]
async fn osis_objects_are_scoped_by_context() {
    let (_child, mut peer) = stdio_runner(&[]).await;
    let mut set = script(
        "j",
        "r1",
        "OSIS",
        r#"osis_set("k", 7); osis_set("n", "x"); osis_keys()"#,
        &[],
    );
    set.kwargs.insert("context_id".into(), json!("c1"));
    peer.request(set).await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!(r#"["k", "n"]"#)), "{outcome:?}");

    let mut get = script(
        "j",
        "r2",
        "OSIS",
        r#"osis_delete("n"); osis_get("k") + 1"#,
        &[],
    );
    get.kwargs.insert("context_id".into(), json!("c1"));
    peer.request(get).await;
    assert_eq!(peer.response_with_logs().await.0.result, Some(json!("8")));

    let mut other = script(
        "j",
        "r3",
        "OSIS",
        r#"`${osis_get("k")}|${osis_keys().len()}`"#,
        &[],
    );
    other.kwargs.insert("context_id".into(), json!("c2"));
    peer.request(other).await;
    assert_eq!(peer.response_with_logs().await.0.result, Some(json!("|0")));

    // OSIS has no system functions.
    peer.request(script("j", "r4", "OSIS", r#"run("true")"#, &[]))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r4",
        OutcomeStatus::Error,
        Some("script_error"),
    );
}

#[tokio::test]
async fn python_scripts_stream_stderr_and_return_stdout() {
    assert!(
        python3_available(),
        "python3 is required by this test: install Python 3"
    );
    let (_child, mut peer) = stdio_runner(&[]).await;
    let src = "import os, sys\nprint('working', file=sys.stderr, flush=True)\nprint(os.environ['NAME'] + '!')\n";
    peer.request(script("j", "r1", "Python", src, &[("NAME", "py")]))
        .await;
    let (outcome, logs) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r1", OutcomeStatus::Success, None);
    assert_eq!(outcome.result, Some(json!("py!")));
    assert_eq!(lines_of(&logs), [(LogStream::Stderr, "working")]);

    let src = "import sys\nprint('partial')\nprint('first', file=sys.stderr)\nprint('it broke', file=sys.stderr)\nsys.exit(3)\n";
    peer.request(script("j", "r2", "Python", src, &[])).await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r2", OutcomeStatus::Error, Some("script_error"));
    let error = outcome.error.unwrap();
    assert!(error.message.contains("exited with status 3"), "{error:?}");
    assert!(error.message.contains("first\nit broke"), "{error:?}");
    assert_eq!(error.details.unwrap()["exit_code"], json!(3));
}

#[tokio::test]
async fn a_cancelled_python_script_has_its_process_group_killed() {
    assert!(
        python3_available(),
        "python3 is required by this test: install Python 3"
    );
    let (_child, mut peer) = stdio_runner(&[]).await;
    // The script reports the pid of a grandchild, then sleeps.
    let src = "import subprocess, sys, time\np = subprocess.Popen(['sleep', '30'])\nprint(p.pid, file=sys.stderr, flush=True)\ntime.sleep(30)\n";
    peer.request(script("j", "r1", "Python", src, &[])).await;
    let Message::Log(line) = peer.recv().await else {
        panic!("expected the pid as a log line");
    };
    let pid: i32 = line.line.trim().parse().unwrap();
    assert!(!common::process_gone(pid));
    peer.send(Message::Cancel(CancelRequest::job("j").hard()))
        .await;
    assert_outcome(
        &peer.response_with_logs().await.0,
        "r1",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    assert!(
        common::wait_gone(pid, Duration::from_secs(5)).await,
        "grandchild {pid} survived"
    );

    // A graceful cancel: SIGTERM to the group ends the script well before its sleep.
    let src = "import sys, time\nprint('started', file=sys.stderr, flush=True)\ntime.sleep(30)\n";
    peer.request(script("j2", "r2", "Python", src, &[])).await;
    assert!(matches!(peer.recv().await, Message::Log(_)));
    let started = std::time::Instant::now();
    peer.send(Message::Cancel(CancelRequest::job("j2"))).await;
    let outcome = peer.response_with_logs().await.0;
    assert_outcome(
        &outcome,
        "r2",
        OutcomeStatus::Error,
        Some(error_type::CANCELLED),
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn v_without_the_v_compiler_is_a_clear_error() {
    let (_child, mut peer) = stdio_runner(&[]).await;
    peer.request(script(
        "j",
        "r1",
        "V",
        "fn main() { println('hi from v') }",
        &[],
    ))
    .await;
    let (outcome, _) = peer.response_with_logs().await;
    if on_path("v") {
        assert_outcome(&outcome, "r1", OutcomeStatus::Success, None);
        assert_eq!(outcome.result, Some(json!("hi from v")));
    } else {
        assert_outcome(
            &outcome,
            "r1",
            OutcomeStatus::Error,
            Some("interpreter_not_found"),
        );
        let message = outcome.error.unwrap().message;
        assert_eq!(
            message,
            "interpreter not found: v (install V from vlang.io or map V to another command)"
        );
    }
}

#[tokio::test]
async fn any_type_can_be_mapped_to_a_command() {
    let (_child, mut peer) = stdio_runner(&["--map", "Bash=sh", "--map", "V=sh -e"]).await;
    peer.request(script(
        "j",
        "r1",
        "Bash",
        "echo \"$X-$HERO_JOB_ID\"; echo oops >&2",
        &[("X", "mapped")],
    ))
    .await;
    let (outcome, logs) = peer.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!("mapped-j")), "{outcome:?}");
    assert_eq!(lines_of(&logs), [(LogStream::Stderr, "oops")]);
    peer.request(script("j", "r2", "V", "false; echo unreachable", &[]))
        .await;
    let (outcome, _) = peer.response_with_logs().await;
    assert_outcome(&outcome, "r2", OutcomeStatus::Error, Some("script_error"));
    assert!(
        outcome
            .error
            .unwrap()
            .message
            .contains("exited with status 1")
    );
}

#[tokio::test]
async fn a_config_file_maps_types_and_a_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runner.toml");
    std::fs::write(&path, "[map]\nBash = \"sh\"\nV = \"false\"\n").unwrap();
    let file = path.to_str().unwrap();
    let (_child, mut peer) = stdio_runner(&["--config", file, "--map", "V=sh"]).await;
    for (request, script_type) in [("r1", "Bash"), ("r2", "V")] {
        peer.request(script(
            "j",
            request,
            script_type,
            "echo \"from $X\"",
            &[("X", script_type)],
        ))
        .await;
        let (outcome, _) = peer.response_with_logs().await;
        assert_eq!(
            outcome.result,
            Some(json!(format!("from {script_type}"))),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn the_stdio_runner_exits_when_stdin_closes() {
    let (mut child, peer) = stdio_runner(&[]).await;
    drop(peer);
    let status = tokio::time::timeout(common::FRAME_TIMEOUT, child.wait())
        .await
        .expect("exits after stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn tcp_serves_several_connections_and_exits_on_sigterm() {
    let (mut child, addr) = tcp_runner(&[]).await;
    let mut a = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut b = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    // A plain v1 peer (no hello): no log frames, just the answer.
    a.request(script("j", "r1", "SAL", r#"print("x"); "from a""#, &[]))
        .await;
    assert_eq!(a.response().await.result, Some(json!("from a")));
    b.send(hello(&["log"], None)).await;
    assert!(matches!(b.recv().await, Message::Hello(_)));
    b.request(script("j", "r2", "SAL", r#"print("y"); "from b""#, &[]))
        .await;
    let (outcome, logs) = b.response_with_logs().await;
    assert_eq!(outcome.result, Some(json!("from b")));
    assert_eq!(lines_of(&logs), [(LogStream::Stdout, "y")]);
    if python3_available() {
        b.request(script("j", "r3", "Python", "print(6 * 7)", &[]))
            .await;
        assert_eq!(b.response_with_logs().await.0.result, Some(json!("42")));
    }

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(common::FRAME_TIMEOUT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn tcp_with_an_auth_token_and_a_non_loopback_address_without_one() {
    let (_child, addr) = tcp_runner(&["--auth-token", "tok"]).await;
    let mut unauth = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    unauth.request(script("j", "r1", "SAL", "1", &[])).await;
    unauth.expect_closed().await;
    let mut authed = Peer::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    authed.send(hello(&[], Some("tok"))).await;
    assert!(matches!(authed.recv().await, Message::Hello(_)));
    authed.request(script("j", "r2", "SAL", "1", &[])).await;
    assert_outcome(&authed.response().await, "r2", OutcomeStatus::Success, None);

    let status = runner_command(&["--tcp-socket", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(
        !status.success(),
        "a non-loopback runner without a token must refuse to start"
    );
}
