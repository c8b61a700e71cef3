//! Shared by the `rpc_*` tests: a real server on 127.0.0.1:0, started through the entry
//! point (`hero_supervisor::server`), over the memory store or a test Redis (no runner
//! pools: tests drive jobs through the store like a runner would), clients, and a raw
//! HTTP POST for what the typed clients can't show (status codes, named params).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::config::ServeConfig;
use hero_supervisor::rpc::RpcConfig;
use hero_supervisor::rpc::client::{http_client, ws_client};
use hero_supervisor::rpc::error::ErrorAnswer;
use hero_supervisor::server::{self, RunningServer};
use hero_supervisor::service::{Supervisor, SupervisorConfig};
use hero_supervisor::store::JobStore;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::ws_client::WsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A supervisor config without runner pools: nothing claims jobs but the test.
pub fn no_runners() -> SupervisorConfig {
    let mut config = SupervisorConfig::with_builtin_runners();
    config.pools.clear();
    config
}

/// A server on 127.0.0.1:0 with no runner pools, serving `rpc` over the store `redis_url`
/// names (`None`: memory).
pub fn serve_config(rpc: RpcConfig, redis_url: Option<String>) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url,
        rpc,
        supervisor: no_runners(),
        ..ServeConfig::default()
    }
}

/// Dropping it stops serving JSON-RPC.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub server: RunningServer,
    pub supervisor: Supervisor,
    pub store: Arc<dyn JobStore>,
    pub token: Option<String>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(RpcConfig::default()).await
    }

    pub async fn with_config(config: RpcConfig) -> TestServer {
        Self::serve(serve_config(config, None)).await
    }

    /// Over the Redis at `url`.
    pub async fn with_redis(config: RpcConfig, url: String) -> TestServer {
        Self::serve(serve_config(config, Some(url))).await
    }

    pub async fn serve(config: ServeConfig) -> TestServer {
        let token = config.rpc.auth_token.clone();
        let server = server::start(config).await.expect("start the server");
        let addr = server.addr();
        let supervisor = server.supervisor().clone();
        TestServer {
            addr,
            url: format!("http://{addr}"),
            store: supervisor.store().clone(),
            supervisor,
            server,
            token,
        }
    }

    pub fn http(&self) -> HttpClient {
        http_client(&self.url, self.token.as_deref()).expect("http client")
    }

    pub async fn ws(&self) -> WsClient {
        ws_client(&self.url, self.token.as_deref())
            .await
            .expect("ws client")
    }
}

/// Asserts `r` is the JSON-RPC error `code` with `data.code == data_code`.
#[track_caller]
pub fn expect_code<T: Debug>(r: Result<T, ClientError>, code: i32, data_code: &str) {
    let err = r.expect_err("expected an error");
    let answer = ErrorAnswer::from_client_error(&err);
    assert_eq!(
        answer.as_ref().map(|a| (a.code, a.data_code())),
        Some((code, data_code)),
        "unexpected error: {err:?}"
    );
}

/// A raw HTTP/1.1 POST of `body` to `/`; returns the status code and the body.
pub async fn post(addr: SocketAddr, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write head");
    stream.write_all(body.as_bytes()).await.expect("write body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A raw JSON-RPC call over HTTP; returns the parsed response object.
pub async fn call_raw(
    addr: SocketAddr,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, text) = post(addr, &body.to_string(), &[]).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad json {text:?}: {e}"))
}
