//! Shared by the `rest_*` tests: plain HTTP requests to the REST face (reqwest, so the
//! status, headers and body are what a client sees) and a plain WebSocket client for
//! `/v1/jobs/{id}/events/ws` (soketto, as a browser's socket would see the frames).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use soketto::handshake::{Client, ServerResponse};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// What a REST call answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics with the text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.text, self.status))
    }

    /// `error.code` of an error answer.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {}", self.text))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts the status and, for an error, `error.code`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.error_code(), code, "{}", self.text);
        assert!(
            self.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
    }
}

/// One request: `method` on `path` (with its query), the bearer `token` if any, a JSON
/// or raw `body` if any.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Answer {
    request_with(addr, method, path, token, body, &[]).await
}

/// [`request`] with more headers.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("http://{addr}{path}"),
    );
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    let resp = req.send().await.expect("an answer");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    request(addr, "GET", path, token, None).await
}

pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> Answer {
    request(addr, "POST", path, token, Some(body.to_string())).await
}

/// A plain WebSocket to `path` (with its query).
pub struct Events {
    sender: soketto::connection::Sender<Compat<TcpStream>>,
    receiver: soketto::connection::Receiver<Compat<TcpStream>>,
}

/// Opens the event WebSocket at `path`; `Err(status)` when the server refused the
/// upgrade.
pub async fn events(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Events, u16> {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let host = addr.to_string();
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<soketto::handshake::client::Header<'_>> = auth
        .iter()
        .map(|v| soketto::handshake::client::Header {
            name: "Authorization",
            value: v.as_bytes(),
        })
        .collect();
    let mut client = Client::new(socket.compat(), &host, path);
    client.set_headers(&headers);
    match client.handshake().await.expect("a handshake answer") {
        ServerResponse::Accepted { .. } => {}
        ServerResponse::Rejected { status_code } => return Err(status_code),
        ServerResponse::Redirect { status_code, .. } => return Err(status_code),
    }
    let (sender, receiver) = client.into_builder().finish();
    Ok(Events { sender, receiver })
}

/// Opens a WebSocket at `path` offering `protocols` (as a browser's
/// `new WebSocket(url, protocols)` does) and no `Authorization`: the events and the
/// protocol the server selected, or `Err(status)` when it refused the upgrade.
pub async fn websocket_with_protocols(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
) -> Result<(Events, Option<String>), u16> {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let host = addr.to_string();
    let mut client = Client::new(socket.compat(), &host, path);
    for p in protocols {
        client.add_protocol(p);
    }
    let selected = match client.handshake().await.expect("a handshake answer") {
        ServerResponse::Accepted { protocol } => protocol,
        ServerResponse::Rejected { status_code } => return Err(status_code),
        ServerResponse::Redirect { status_code, .. } => return Err(status_code),
    };
    let (sender, receiver) = client.into_builder().finish();
    Ok((Events { sender, receiver }, selected))
}

impl Events {
    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) {
        self.sender.send_text(text).await.expect("send");
        self.sender.flush().await.expect("flush");
    }

    /// The next frame as JSON; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Option<Value> {
        let mut data = Vec::new();
        let received = tokio::time::timeout(
            Duration::from_secs(10),
            self.receiver.receive_data(&mut data),
        )
        .await
        .expect("a frame or the close in time");
        match received {
            Ok(soketto::Data::Text(_)) => Some(serde_json::from_slice(&data).unwrap_or_else(|e| {
                panic!("frame not JSON ({e}): {:?}", String::from_utf8_lossy(&data))
            })),
            Ok(soketto::Data::Binary(_)) => panic!("a binary frame"),
            Err(_) => None,
        }
    }

    /// The next frame, which must be there.
    pub async fn frame(&mut self) -> Value {
        self.next().await.expect("a frame, not the close")
    }

    /// Closes from the client's side.
    pub async fn close(mut self) {
        let _ = self.sender.close().await;
    }
}
