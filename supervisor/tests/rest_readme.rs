//! README.md's REST walk-through, run as written: the fenced block after "A walk-through
//! with `curl`" runs in bash with real `curl` against the real `hero-supervisor` binary
//! (built-in runner, a token), and every line it prints must match its `#>` line.
//! `"…"` in an expected answer stands for any value; an object may have more fields than
//! the expected one names; arrays must have the same length. Also: the binary refuses a
//! malformed `--cors-origin` at startup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hero_testkit::free_tcp_port;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");
const TOKEN: &str = "readme-walk-through-token";
const ANY: &str = "…";

/// The `hero-supervisor` process; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The walk-through block of README.md.
fn walk_through() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("A walk-through with `curl`")
        .expect("README.md has the REST walk-through");
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a ```sh block after it") + "```sh\n".len();
    let len = rest[open..].find("```").expect("the block's end");
    rest[open..open + len].to_owned()
}

/// Whether `actual` matches `expected` (see the module docs).
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == ANY => true,
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av))
        }
        _ => expected == actual,
    }
}

#[test]
fn the_readme_matcher_can_fail() {
    let m = |e: &str, a: &str| {
        matches(
            &serde_json::from_str(e).unwrap(),
            &serde_json::from_str(a).unwrap(),
        )
    };
    assert!(m(r#"{"a":"…","b":[1]}"#, r#"{"a":{"x":1},"b":[1],"c":2}"#));
    assert!(!m(r#"{"a":1}"#, r#"{"a":2}"#));
    assert!(!m(r#"{"a":1}"#, r#"{}"#));
    assert!(!m(r#"{"b":[1]}"#, r#"{"b":[1,2]}"#));
}

#[tokio::test]
async fn the_readme_rest_walk_through_runs_as_written() {
    let curl = Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "curl not found: this test runs README.md's curl commands; install it (apt-get install curl)"
    );
    let port = free_tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    let _server = Server(
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("HERO_AUTH_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hero-supervisor"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = reqwest::Client::new()
            .get(format!("{url}/v1/runtime"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hero-supervisor did not answer on {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let script = walk_through();
    let expected: Vec<Value> = script
        .lines()
        .filter_map(|l| l.strip_prefix("#> "))
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("README #> line is not JSON ({e}): {l}"))
        })
        .collect();
    assert!(
        expected.len() >= 8,
        "the walk-through lost its answers: {script}"
    );
    let out = Command::new("bash")
        .args(["-euc", &script])
        .env("HERO", &url)
        .env("HERO_AUTH_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walk-through failed ({}): stdout {stdout}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        answers.len(),
        expected.len(),
        "one answer per #> line; answers:\n{stdout}"
    );
    for (answer, want) in answers.iter().zip(&expected) {
        let got: Value = serde_json::from_str(answer)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {answer}"));
        assert!(matches(want, &got), "expected {want}\n     got {got}");
    }
}

/// `--cors-origin` and `HERO_CORS_ORIGINS` are checked before the server serves: a
/// malformed origin, or `*` beside others, is a start error naming it.
#[test]
fn a_bad_cors_origin_is_refused_at_startup() {
    for (flags, env, named) in [
        (
            vec!["--cors-origin", "ops.example.com"],
            None,
            "ops.example.com",
        ),
        (vec![], Some("https://a.example,*"), "https://a.example"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(&flags)
            .env_remove("HERO_CORS_ORIGINS")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(v) = env {
            cmd.env("HERO_CORS_ORIGINS", v);
        }
        let out = cmd.output().expect("run hero-supervisor");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} {env:?} started");
        assert!(
            stderr.contains("invalid CORS origin") && stderr.contains(named),
            "{stderr}"
        );
    }
}
