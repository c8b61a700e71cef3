//! Real `hero-supervisor serve` child processes and a lean HTTP/1.1 JSON-RPC client for
//! them: what `builtin-http`, `enqueue` and `multi-instance` measure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hero_testkit::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long a server has to answer its first call.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `hero-supervisor`, next to this executable.
pub(crate) fn supervisor_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .context("locate the current executable")?
        .with_file_name("hero-supervisor");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p hero-bench -p hero-supervisor` \
             (this scenario runs `hero-supervisor serve`)",
            path.display()
        );
    }
    Ok(path)
}

/// A `--runner` value: `hero-noop-runner` (or another stdio command) for `types`, with the
/// built-in runner's pool settings (one process, hello on).
pub(crate) fn stdio_pool(types: &str, command: &str) -> String {
    format!("{types}=stdio:{command};hello=on")
}

/// A `hero-supervisor serve` child process, stopped on drop (SIGTERM, then SIGKILL).
pub(crate) struct ServeProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
    _key_dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // SIGTERM lets it stop its runner; SIGKILL if it does not end soon.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Spawns `serve` on a free loopback port: on `redis_url` (memory store when `None`),
    /// keeping `own_redis` alive as long as the process, with each of `runners` as a
    /// `--runner` (none: the built-in runner for every type), logging at `rust_log`
    /// (`RUST_LOG`) to this process' stderr. Does not wait for it.
    pub(crate) fn spawn(
        supervisor: &Path,
        redis_url: Option<&str>,
        own_redis: Option<RedisServer>,
        runners: &[String],
        rust_log: &str,
    ) -> Result<ServeProcess> {
        let key_dir = tempfile::tempdir()?;
        let port = hero_testkit::free_tcp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut command = Command::new(supervisor);
        // Only this scenario's settings: no HERO_* of the caller's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HERO_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--server-key")
            .arg(key_dir.path().join("server.key"))
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = redis_url {
            command.arg("--redis-url").arg(url);
        }
        for runner in runners {
            command.arg("--runner").arg(runner);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", supervisor.display()))?;
        Ok(ServeProcess {
            child,
            addr,
            _key_dir: key_dir,
            _redis: own_redis,
        })
    }

    /// The process id, for its CPU time.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `method(params)` answers without an error, at most [`START_TIMEOUT`].
    pub(crate) async fn wait_answering(&self, method: &str, params: &Value) -> Result<()> {
        let began = Instant::now();
        loop {
            let probe = async {
                let mut client = Client::connect(self.addr).await?;
                client.call(method, params).await
            };
            match probe.await {
                Ok(_) => return Ok(()),
                Err(e) if began.elapsed() > START_TIMEOUT => {
                    return Err(e.context(format!("the server on {} never answered", self.addr)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// CPU time (user + system) a process has used so far, all its threads, in µs: fields 14
/// and 15 of `/proc/<pid>/stat`, in USER_HZ ticks (100 per second on Linux).
pub(crate) fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// The child processes of `pid` (its runners), from every thread's `children` list.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// One HTTP/1.1 keep-alive connection to a server (hyper, no pool), so the client's own
/// cost stays small beside the server's.
pub(crate) struct Client {
    send: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            send,
            authority: addr.to_string(),
        })
    }

    /// POSTs `body` (one JSON-RPC request or a batch); the answer's JSON.
    async fn post(&mut self, body: &Value) -> Result<Value> {
        let request = hyper::Request::post("/")
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        self.send.ready().await?;
        let response = self.send.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// One call; its result, or the error it answered.
    pub(crate) async fn call(&mut self, method: &str, params: &Value) -> Result<Value> {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": method, "params": params,
        });
        let mut answer = self.post(&body).await?;
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(anyhow!("{method} failed: {answer}")),
        }
    }

    /// One JSON-RPC batch request of `method` with each of `params` (ids 0..n); every
    /// result in the order of `params`. Fails when any call of the batch failed.
    pub(crate) async fn batch(&mut self, method: &str, params: &[Value]) -> Result<Vec<Value>> {
        let body: Vec<Value> = params
            .iter()
            .enumerate()
            .map(|(id, p)| {
                serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": p })
            })
            .collect();
        let answer = self.post(&Value::Array(body)).await?;
        let Value::Array(answers) = answer else {
            bail!(
                "a batch of {} {method} calls answered {answer}",
                params.len()
            );
        };
        if answers.len() != params.len() {
            bail!(
                "a batch of {} {method} calls got {} answers",
                params.len(),
                answers.len()
            );
        }
        // A batch's answers may come in any order: place each by its id.
        let mut results = vec![Value::Null; params.len()];
        let mut seen = vec![false; params.len()];
        for mut a in answers {
            let id = a
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < params.len() && !seen[i])
                .ok_or_else(|| anyhow!("a {method} answer with a bad id: {a}"))?;
            match a.get_mut("result") {
                Some(result) => results[id] = result.take(),
                None => bail!("{method} #{id} of a batch failed: {a}"),
            }
            seen[id] = true;
        }
        Ok(results)
    }
}
