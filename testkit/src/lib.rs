//! # hero-testkit
//!
//! Test harness shared by the workspace's tests: a private `redis-server` per test,
//! free loopback ports, guards that kill child processes on drop.
//!
//! - [`RedisServer`]: a throwaway `redis-server` on a unix socket in a temp dir.
//! - [`free_tcp_port`]: a loopback port that was free a moment ago.
//! - [`RedisCluster`]: a throwaway Redis Cluster (3 masters, 3 replicas) on loopback ports.
//! - [`SilentProxy`]: a TCP proxy to a unix socket whose connections can go silent.
//!
//! Test code: panics with clear messages instead of returning errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod proxy;

pub use cluster::{CLUSTER_START_TIMEOUT, NODE_TIMEOUT_MS, RedisCluster, RedisClusterBuilder};
pub use proxy::SilentProxy;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`RedisServer::start`] waits for the server to answer PING.
pub const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

const NOT_FOUND: &str = "redis-server not found: install it (apt-get install redis-server)";

/// Options for a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    aof: bool,
}

impl RedisServerBuilder {
    /// Turns the append-only file on (`appendfsync always`), so data survives
    /// [`RedisServer::restart`] (chaos tests). Off by default.
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    /// Starts the server and waits until it answers PING.
    pub fn start(self) -> RedisServer {
        let binary = find_on_path("redis-server").unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let dir = tempfile::Builder::new()
            .prefix("hero-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            binary,
            socket: dir.path().join("redis.sock"),
            dir,
            aof: self.aof,
            child: None,
        };
        server.spawn();
        server
    }
}

/// A private `redis-server` listening only on a unix socket in a fresh temp dir
/// (`--port 0`, no RDB snapshots, AOF off unless asked). Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    socket: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with default options. Panics with
    /// "redis-server not found: install it (apt-get install redis-server)" when the
    /// binary is not on PATH.
    pub fn start() -> RedisServer {
        RedisServerBuilder::default().start()
    }

    /// Options (AOF) before starting.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The URL the `redis` crate accepts: `redis+unix:///<dir>/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The unix socket's path (for `redis-cli -s`).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The server's working directory (AOF, log file `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it; the socket file is removed, so
    /// clients see the server gone. A no-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Stops the server if running, then starts it again on the same socket and dir
    /// (with AOF on, the data survives).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg("0")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.arg("--appendfsync").arg("always");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_for_ping();
    }

    fn wait_for_ping(&mut self) {
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        loop {
            if ping(&self.socket) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "redis-server exited ({status}) before answering PING; log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                let log = self.log_tail();
                self.stop();
                panic!(
                    "redis-server did not answer PING on {} within {REDIS_START_TIMEOUT:?}; log:\n{log}",
                    self.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One PING over the socket: true when the server answers `+PONG`.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback TCP port that was free when this returned (bound to port 0, then
/// released). Another process may take it in between; tests that can bind port 0
/// themselves should.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_server_starts_stops_and_restarts() {
        let mut server = RedisServer::start();
        assert!(ping(server.socket_path()));
        assert!(server.url().starts_with("redis+unix:///"));
        server.stop();
        assert!(!ping(server.socket_path()));
        server.restart();
        assert!(ping(server.socket_path()));
        let socket = server.socket_path().to_owned();
        drop(server);
        assert!(!ping(&socket));
    }

    #[test]
    fn free_tcp_port_is_bindable() {
        let port = free_tcp_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("port is free");
    }
}
