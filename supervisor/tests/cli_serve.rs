//! The `hero-supervisor` binary: the README quick start, `serve` configuration and
//! shutdown, every client subcommand against a running server, and the methods that need
//! real runners (run_job, play, stop of a running job) over HTTP and WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hero_supervisor::job::JobStatus;
use hero_supervisor::rpc::HeroApiClient;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::rpc::types::CreateJobParams;
use hero_testkit::free_tcp_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_hero-supervisor");

/// A `hero-supervisor` server process; SIGKILLed on drop unless stopped.
struct Server {
    child: Child,
    url: String,
    port: u16,
}

impl Server {
    /// Starts `hero-supervisor <args> --listen 127.0.0.1:<free port>` and waits until it
    /// answers.
    async fn start(args: &[&str], envs: &[(&str, &str)], token: Option<&str>) -> Server {
        let port = free_tcp_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--listen", &listen])
            .env_remove("HERO_AUTH_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let server = Server {
            child: cmd.spawn().expect("spawn hero-supervisor"),
            url: format!("http://{listen}"),
            port,
        };
        server.wait_ready(token).await;
        server
    }

    async fn wait_ready(&self, token: Option<&str>) {
        let client = http_client(&self.url, token).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if client.whoami().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hero-supervisor did not answer on {}", self.url);
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a client subcommand against this server.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("HERO_URL", &self.url)
            .env_remove("HERO_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// The subcommand's stdout; panics when it failed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `curl -s -X POST http://127.0.0.1:9652 -H 'Content-Type: application/json' -d BODY`
/// does.
async fn curl_post(port: u16, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn readme_quick_start() {
    // `hero-supervisor` with no flags but the port: in-memory store, built-in runners.
    let server = Server::start(&[], &[], None).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"play","params":["40 + 2"]}"#;
    let answer: serde_json::Value =
        serde_json::from_str(&curl_post(server.port, body).await).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"output":"42"}})
    );
    // The same through the CLI.
    assert_eq!(server.ok(&["play", "40 + 2"]), "42\n");
    // And the dashboard, at the address the README gives (on this port).
    let page = reqwest::get(format!("http://127.0.0.1:{}/ui/", server.port))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("hero supervisor"));
    // SIGTERM: clean exit.
    assert!(server.terminate().success());
}

#[tokio::test]
async fn client_subcommands() {
    let server = Server::start(&["serve"], &[], None).await;
    assert_eq!(server.ok(&["run", "--type", "osis", "6 * 7"]), "42\n");
    assert_eq!(
        server
            .cli_with_stdin(&["run", "-"], Some("print(\"hi\"); 1 + 1"))
            .stdout,
        b"2\n"
    );
    assert_eq!(
        server.ok(&["play", "--json", "\"x\" + 1"]),
        "{\"output\":\"x1\"}\n"
    );

    let id = server.ok(&[
        "create",
        "--type",
        "SAL",
        "print(\"line one\"); print(\"line two\"); 7",
    ]);
    let id = id.trim();
    assert_eq!(server.ok(&["status", id]), "Created\n");
    assert_eq!(server.ok(&["status", "--json", id]), "\"Created\"\n");
    assert_eq!(server.ok(&["output", id]), "");
    assert_eq!(server.ok(&["start", id]), format!("started {id}\n"));
    // `logs --follow` streams until the job ends.
    assert_eq!(server.ok(&["logs", "--follow", id]), "line one\nline two\n");
    assert_eq!(server.ok(&["status", id]), "Finished\n");
    assert_eq!(server.ok(&["output", id]), "7\n");
    assert_eq!(server.ok(&["logs", id]), "line one\nline two\n");
    assert_eq!(
        server.ok(&["logs", "--json", id]),
        "{\"logs\":\"line one\\nline two\"}\n"
    );
    // One page: each line after its sequence number, then where to go on.
    assert_eq!(
        server.ok(&["logs", "--start", "1", "--limit", "5", id]),
        "1\tline two\nnext: --start 2\n"
    );
    assert_eq!(
        server.ok(&["logs", "--follow", "--start", "1", id]),
        "line two\n"
    );
    let list = server.ok(&["list", "--json"]);
    let ids: Vec<String> = serde_json::from_str(&list).unwrap();
    assert!(ids.contains(&id.to_owned()));
    assert!(server.ok(&["list"]).lines().any(|l| l == id));
    assert!(server.ok(&["runners"]).starts_with("builtin\t"));

    let created = server.ok(&["create", "--json", "--type", "python", "print(1)"]);
    let other = serde_json::from_str::<serde_json::Value>(&created).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.ok(&["stop", &other]), format!("stopped {other}\n"));
    assert_eq!(server.ok(&["status", &other]), "Error\n");
    assert_eq!(server.ok(&["delete", &other]), format!("deleted {other}\n"));

    // Errors: message with code on stderr, exit status 1.
    let out = server.cli(&["status", &other]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("-32001 job_not_found"), "{stderr}");
    let out = server.cli(&["status", "bogus"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_job_id"));
    let out = server.cli(&["run", "--type", "sal", "throw \"boom\""]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job_failed"));

    // A filtered page: the failed job only; and the stats.
    let errors = server.ok(&["list", "--status", "Error", "--limit", "50"]);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 1, "{errors}");
    assert!(lines[0].contains("\tError\tSAL\t"), "{errors}");
    let page: serde_json::Value =
        serde_json::from_str(&server.ok(&["list", "--status", "Finished", "--json"])).unwrap();
    assert!(page["jobs"].as_array().unwrap().len() >= 3, "{page}");
    assert_eq!(page["next_cursor"], serde_json::Value::Null);
    let out = server.cli(&["list", "--status", "Done"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_params"));
    // `--since`: created in the last hour (all of them), and nothing from the future.
    let recent = server.ok(&["list", "--status", "Error", "--since", "1h"]);
    assert_eq!(recent.lines().count(), 1, "{recent}");
    let out = server.cli(&["list", "--since", "1w"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("90s, 30m, 1h or 2d"));
    assert!(server.ok(&["stats"]).starts_with("version "));
    let stats: serde_json::Value = serde_json::from_str(&server.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["jobs_by_status"]["Error"], 1, "{stats}");
    assert_eq!(stats["runners"][0]["name"], "builtin", "{stats}");

    assert_eq!(server.ok(&["clear"]), "cleared all jobs\n");
    assert_eq!(server.ok(&["list", "--json"]), "[]\n");
}

/// `actor` and `context` subcommands, and `--context-id` on `create`, against a server
/// on the embedded default (the local user is a server admin).
#[tokio::test]
async fn actor_and_context_subcommands() {
    let server = Server::start(&["serve"], &[], None).await;
    let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    assert_eq!(
        server.ok(&[
            "actor",
            "create",
            "--id",
            "1",
            "--pubkey",
            key,
            "--address",
            "::1"
        ]),
        format!("actor 1\tpubkey {key}\taddress ::1\n")
    );
    let loaded: serde_json::Value =
        serde_json::from_str(&server.ok(&["actor", "load", "--json", "1"])).unwrap();
    assert_eq!(loaded["pubkey"], key);
    assert_eq!(
        server.ok(&[
            "context", "create", "--id", "7", "--admin", "1", "--reader", "2"
        ]),
        "context 7\tadmins 1\texecutors \treaders 2\n"
    );
    let id = server.ok(&["create", "--context-id", "7", "--type", "osis", "1"]);
    let job: serde_json::Value =
        serde_json::from_str(&server.ok(&["context", "load", "--json", "7"])).unwrap();
    assert_eq!(job["admins"], serde_json::json!([1]));
    assert_eq!(server.ok(&["status", id.trim()]), "Created\n");
    let out = server.cli(&["context", "create", "--id", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least one admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.cli(&["actor", "load", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-32001 not_found"));
}

/// run_job, play and stop of a running job need real runners: over HTTP and WebSocket.
#[tokio::test]
async fn runner_backed_methods_over_http_and_ws() {
    let server = Server::start(&[], &[], None).await;
    let http = http_client(&server.url, None).unwrap();
    let ws = ws_client(&server.url, None).await.unwrap();
    async fn check(c: &(impl HeroApiClient + Sync)) {
        assert_eq!(c.play("40 + 2".into(), None).await.unwrap().output, "42");
        assert_eq!(
            c.run_job("6 * 7".into(), "osis".into(), None, None, None)
                .await
                .unwrap(),
            "42"
        );
        // A prerequisite chain.
        let first = c
            .create_job(CreateJobParams::new("1", "SAL"))
            .await
            .unwrap();
        c.start_job(first.clone()).await.unwrap();
        let out = c
            .run_job("2".into(), "SAL".into(), Some(vec![first]), Some(30), None)
            .await;
        assert_eq!(out.unwrap(), "2");
        // A failing script: -32003 job_failed.
        let err = c.play("throw \"boom\"".into(), None).await.unwrap_err();
        assert_eq!(ErrorAnswer::from_client_error(&err).unwrap().code, -32003);
        // Stop a running job.
        let mut params = CreateJobParams::new("import time\ntime.sleep(60)\n", "Python");
        params.retries = Some(0);
        let id = c.create_job(params).await.unwrap();
        c.start_job(id.clone()).await.unwrap();
        wait_status(c, &id, JobStatus::Started).await;
        c.stop_job(id.clone()).await.unwrap();
        wait_status(c, &id, JobStatus::Error).await;
        let job = c.get_job(id).await.unwrap();
        assert_eq!(job.error.unwrap().error_type, "cancelled");
    }
    check(&http).await;
    check(&ws).await;
}

async fn wait_status(c: &(impl HeroApiClient + Sync), id: &str, want: JobStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c.get_job_status(id.to_owned()).await.unwrap();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stuck in {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn token_from_env_and_client_token() {
    let server = Server::start(&["serve"], &[("HERO_AUTH_TOKEN", "t0k")], Some("t0k")).await;
    let out = server.cli(&["list"]);
    assert_eq!(out.status.code(), Some(1), "no token: refused");
    assert_eq!(server.ok(&["list", "--token", "t0k", "--json"]), "[]\n");
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args(["list", "--json"])
        .env("HERO_URL", &server.url)
        .env("HERO_TOKEN", "t0k")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"[]\n");
}

/// No secret reaches the log, at any level: with RUST_LOG=trace, jsonrpsee traces every
/// request it serves; the bearer token must not be in it (the auth layer removes the
/// header once checked), nor a token of the `[[tokens]]` table.
#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace.log");
    let config = dir.path().join("hero.toml");
    std::fs::write(
        &config,
        "[[tokens]]\ntoken = \"table-s3cret-7\"\nactor = 7\n",
    )
    .unwrap();
    let port = free_tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--auth-token", "admin-s3cret-1", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = http_client(&url, Some("admin-s3cret-1")).unwrap();
    while admin.whoami().await.is_err() {
        assert!(Instant::now() < deadline, "no answer on {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actor = http_client(&url, Some("table-s3cret-7")).unwrap();
    assert_eq!(actor.whoami().await.unwrap(), "actor:7");
    assert!(admin.list_jobs(None).await.unwrap().into_ids().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE"), "the trace level was on:\n{text}");
    for secret in ["admin-s3cret-1", "table-s3cret-7"] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
    }
}

#[tokio::test]
async fn config_file_env_and_flags_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hero.toml");
    // The file and HERO_LISTEN name unusable ports; the --listen flag wins over both, and
    // the file's other keys still apply.
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nmax_connections = 8\n").unwrap();
    let config = path.to_str().unwrap();
    let server = Server::start(
        &["serve", "--config", config],
        &[("HERO_LISTEN", "127.0.0.1:2")],
        None,
    )
    .await;
    assert_eq!(server.ok(&["list", "--json"]), "[]\n");
    assert!(server.terminate().success());
}

#[test]
fn non_loopback_listen_without_token_is_refused() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("HERO_AUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn bad_config_is_reported() {
    let out = Command::new(BIN)
        .args(["serve", "--runner", "rust=tcp://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid runner"));
}

#[test]
fn tls_flags_are_checked_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("absent-cert.pem");
    let key = dir.path().join("absent-key.pem");
    let half = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .env_remove("HERO_TLS_KEY")
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(stderr.contains("--tls-key is not set"), "{stderr}");
    let unreadable = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERO_TLS_CERT", &cert)
        .env("HERO_TLS_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(unreadable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(
        stderr.contains("cannot read TLS certificate file")
            && stderr.contains(&*cert.to_string_lossy()),
        "{stderr}"
    );
}

/// `--tls-cert`/`--tls-key` from the binary: HTTPS answers with the certificate, the log
/// says TLS is on and holds no byte of the key, even at trace level.
#[tokio::test]
async fn serves_https_and_never_logs_the_key() {
    use jsonrpsee::http_client::HttpClientBuilder;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key_pem = certified.signing_key.serialize_pem();
    let (cert, key, log) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("trace.log"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let port = free_tcp_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_remove("HERO_AUTH_TOKEN")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = HttpClientBuilder::default()
        .with_custom_cert_store(tls)
        .build(format!("https://127.0.0.1:{port}"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while https.whoami().await.is_err() {
        assert!(Instant::now() < deadline, "no HTTPS answer on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(https.list_jobs(None).await.unwrap().into_ids().is_empty());
    // The dashboard over HTTPS too (the same middleware behind the handshake).
    let web = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let page = web
        .get(format!("https://127.0.0.1:{port}/ui/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("tls=true"),
        "the start line says TLS is on:\n{text}"
    );
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "key material in the log:\n{text}");
    }
}

#[tokio::test]
async fn serve_with_redis() {
    let redis = hero_testkit::RedisServer::start();
    let url = redis.url();
    let server = Server::start(
        &["serve", "--redis-url", &url, "--redis-prefix", "t"],
        &[],
        None,
    )
    .await;
    assert_eq!(server.ok(&["play", "40 + 2"]), "42\n");
    let ids = server.ok(&["list"]);
    assert_eq!(ids.lines().count(), 1);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_subcommands_lay_out_start_and_follow_a_flow() {
    let server = Server::start(&["serve"], &[], None).await;
    let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    server.ok(&["actor", "create", "--id", "1", "--pubkey", key]);
    server.ok(&["context", "create", "--id", "7", "--admin", "1"]);
    // The jobs come from `job.create` (the coordinator API), here over plain HTTP.
    for (id, script, depends) in [
        (1, "1", "[]"),
        (2, "2", "[1]"),
        (3, "3", "[1]"),
        (4, "4", "[2,3]"),
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"job.create","params":[{{"context_id":7,"job":{{"id":{id},"caller_id":1,"context_id":7,"script":"{script}","script_type":"Sal","timeout":30,"retries":0,"env_vars":{{}},"prerequisites":[],"depends":{depends}}}}}]}}"#
        );
        let answer = curl_post(server.port, &body).await;
        assert!(answer.contains("\"result\""), "{answer}");
    }
    let created = server.ok(&[
        "flow",
        "create",
        "--context",
        "7",
        "10",
        "--job",
        "1",
        "--job",
        "2",
        "--job",
        "3",
        "--job",
        "4",
    ]);
    assert!(
        created.starts_with("flow 10\tcontext 7\tstatus Dispatched\tjobs 1,2,3,4"),
        "{created}"
    );
    assert_eq!(
        server.ok(&["flow", "dag", "--context", "7", "10"]),
        "flow 10 (context 7): 4 jobs, 3 levels; roots 1, leaves 4\n  level 0: 1\n  \
         level 1: 2 (after 1)  3 (after 1)\n  level 2: 4 (after 2,3)\n"
    );
    let dag: serde_json::Value =
        serde_json::from_str(&server.ok(&["flow", "dag", "--json", "--context", "7", "10"]))
            .unwrap();
    assert_eq!(dag["levels"], serde_json::json!([[1], [2, 3], [4]]));
    server.ok(&["flow", "start", "--context", "7", "10"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let loaded: serde_json::Value =
            serde_json::from_str(&server.ok(&["flow", "load", "--json", "--context", "7", "10"]))
                .unwrap();
        if loaded["status"] == "Finished" {
            assert_eq!(loaded["result"]["4"], "4");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flow never finished: {loaded}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = server.ok(&["flow", "load", "--context", "7", "10"]);
    assert!(
        text.contains("status Finished") && text.contains("\n  4: 4"),
        "{text}"
    );
    let out = server.cli(&["flow", "load", "--context", "7", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-32001"));
}
