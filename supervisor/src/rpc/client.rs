//! Client helpers: jsonrpsee's HTTP and WebSocket clients with the bearer token set.
//! Both implement [`super::HeroApiClient`].

use std::time::Duration;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

/// How long a client waits for one answer. `run_job`/`play` wait for the job, so this is
/// the job timeout's upper bound (24 h) plus a margin.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60 + 60);
/// Largest request a client sends / response it accepts. Default 64 MiB.
pub const CLIENT_MAX_BODY: u32 = 64 * 1024 * 1024;
/// Notifications a WebSocket client buffers per subscription before it drops the
/// subscription (jsonrpsee's client cannot slow the server down on a shared connection;
/// its default, 1,024, is less than one subscription's backlog of a capped log, 10,000
/// lines, so a reader slower than the server lost `logs --follow` mid-way).
pub const CLIENT_SUBSCRIPTION_BUFFER: usize = 16 * 1024;

fn headers(token: Option<&str>) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Custom("the token holds characters not allowed in a header".into())
        })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// An HTTP client of `url` (`http://host:port`), sending `token` as a bearer token.
pub fn http_client(url: &str, token: Option<&str>) -> Result<HttpClient, ClientError> {
    HttpClientBuilder::default()
        .set_headers(headers(token)?)
        .request_timeout(CLIENT_REQUEST_TIMEOUT)
        .max_request_size(CLIENT_MAX_BODY)
        .max_response_size(CLIENT_MAX_BODY)
        .build(url)
}

/// A WebSocket client of `url` (`ws://` or `wss://`; `http(s)://` is rewritten), sending
/// `token` as a bearer token on the upgrade.
pub async fn ws_client(url: &str, token: Option<&str>) -> Result<WsClient, ClientError> {
    WsClientBuilder::default()
        .set_headers(headers(token)?)
        .request_timeout(CLIENT_REQUEST_TIMEOUT)
        .max_request_size(CLIENT_MAX_BODY)
        .max_response_size(CLIENT_MAX_BODY)
        .max_buffer_capacity_per_subscription(CLIENT_SUBSCRIPTION_BUFFER)
        .build(ws_url(url))
        .await
}

/// `http://x` -> `ws://x`, `https://x` -> `wss://x`; anything else unchanged.
pub fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_owned()
    }
}
