//! The REST face (COORDINATION.md §3): plain HTTP and one plain WebSocket under `/v1`,
//! on the JSON-RPC port, for tools that do not speak JSON-RPC.
//!
//! [`RestLayer`] is a tower layer in jsonrpsee's HTTP middleware, inside the bearer
//! auth layer (so the same tokens, grants and `traceparent` apply, over TLS too: the
//! TLS accept loop runs the same middleware). It answers every `/v1` path itself and
//! hands every other request to jsonrpsee. Each route calls the served JSON-RPC
//! methods in-process ([`super::invoke`]) with the request's extensions: the same
//! access checks and the same logic as a JSON-RPC call; nothing here decides about a
//! job. The routes, their params and answers are in `supervisor/openapi.json`
//! (served at `GET /v1/openapi.json`):
//!
//! | route | methods called |
//! |---|---|
//! | `GET /v1/runtime` | `whoami`, `stats` (its figures for server admins only) |
//! | `GET /v1/jobs?status=&script_type=&context_id=&caller_id=&created_after=&created_before=&limit=&cursor=` | `list_jobs` with that filter |
//! | `POST /v1/jobs` | `create_job`, then `start_job` (unless `"start": false`), `get_job_status` |
//! | `GET /v1/jobs/{id}` | `get_job` |
//! | `POST /v1/jobs/{id}/stop`, `POST /v1/jobs/{id}/cancel` | `stop_job`, `get_job_status` |
//! | `GET /v1/jobs/{id}/transcript?start=&limit=` | `get_job_logs` with `start` and `limit` |
//! | `GET /v1/jobs/{id}/events/ws?cursor=` | `get_job` (the snapshot and the access check), then the event stream of `subscribe_job_events` |
//!
//! Errors are `{"error": {"code", "message"}}` with an HTTP status: the JSON-RPC error
//! code decides both ([`http_error`]). Bodies are read up to the server's
//! `max_request_body_bytes` (413 beyond).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use jsonrpsee::Extensions;
use jsonrpsee::core::server::Methods;
use jsonrpsee::server::HttpBody;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use super::error::{CONFLICT, FORBIDDEN, INVALID_PARAMS, JOB_NOT_FOUND};
use super::events::{EventSink, stream_job_events};
use super::invoke::call_method;
use super::types::JobEvent;
use crate::service::Supervisor;

/// The OpenAPI 3.1 document of the REST face, as committed in `supervisor/openapi.json`
/// and served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// Every path prefix this layer answers; everything else goes to JSON-RPC.
pub const PREFIX: &str = "/v1";

/// Every route (its path template) and the methods it answers: what
/// `supervisor/openapi.json` documents, checked by the tests on both sides.
pub const ROUTES: [(&str, &[&str]); 8] = [
    ("/v1/runtime", &["GET"]),
    ("/v1/openapi.json", &["GET"]),
    ("/v1/jobs", &["GET", "POST"]),
    ("/v1/jobs/{id}", &["GET"]),
    ("/v1/jobs/{id}/stop", &["POST"]),
    ("/v1/jobs/{id}/cancel", &["POST"]),
    ("/v1/jobs/{id}/transcript", &["GET"]),
    ("/v1/jobs/{id}/events/ws", &["GET"]),
];

/// Longest stop or cancel `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// How long one event frame may wait for a WebSocket client that does not read; past
/// it the stream is closed (the client resumes with the last cursor it saw).
pub const WS_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message a client may send on an event WebSocket (it has nothing to say but
/// pings and the close; anything bigger ends the connection).
const WS_MAX_INCOMING: usize = 4 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, BoxError>> + Send>>;

/// What the REST face is served with.
#[derive(Clone)]
pub(crate) struct RestConfig {
    /// The served JSON-RPC methods, called in-process.
    pub(crate) methods: Methods,
    /// Whose event stream the WebSocket route follows, and whose shutdown ends it.
    pub(crate) supervisor: Supervisor,
    /// Largest request body; beyond it 413.
    pub(crate) max_request_body_bytes: usize,
    /// Largest answer of one method call.
    pub(crate) max_response_body_bytes: usize,
    /// Event WebSockets open at once; beyond it 503 `busy`.
    pub(crate) max_event_streams: usize,
}

/// Tower layer: answers `/v1/...` (see the module docs), passes everything else on.
#[derive(Clone)]
pub struct RestLayer {
    rest: Arc<Rest>,
}

impl std::fmt::Debug for RestLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestLayer").finish_non_exhaustive()
    }
}

struct Rest {
    config: RestConfig,
    streams: Arc<Semaphore>,
}

impl RestLayer {
    pub(crate) fn new(config: RestConfig) -> Self {
        let streams = Arc::new(Semaphore::new(config.max_event_streams.max(1)));
        RestLayer {
            rest: Arc::new(Rest { config, streams }),
        }
    }
}

impl<S> Layer<S> for RestLayer {
    type Service = RestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RestService {
            inner,
            rest: self.rest.clone(),
        }
    }
}

/// The service of [`RestLayer`].
#[derive(Clone)]
pub struct RestService<S> {
    inner: S,
    rest: Arc<Rest>,
}

impl<S> std::fmt::Debug for RestService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RestService<S>
where
    S: Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Either<BoxFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path == PREFIX || path.starts_with("/v1/") {
            let rest = self.rest.clone();
            Either::Left(Box::pin(async move { Ok(rest.handle(req).await) }))
        } else {
            Either::Right(self.inner.call(req))
        }
    }
}

/// A REST error answer: `{"error": {"code", "message", ..extra}}` with `status`.
#[derive(Debug)]
pub(crate) struct RestError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
}

impl RestError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RestError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        RestError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn response(self) -> Response<HttpBody> {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message));
        error.extend(self.extra);
        json_response(self.status, &json!({ "error": error }))
    }
}

impl From<ErrorObjectOwned> for RestError {
    fn from(e: ErrorObjectOwned) -> Self {
        http_error(&e)
    }
}

/// The HTTP status and REST code of a JSON-RPC error, and its `data.job_id`, if any:
///
/// | JSON-RPC | HTTP | `code` |
/// |---|---|---|
/// | -32602 | 400 | `invalid_job_id` or `invalid_params` (its `data.code`) |
/// | -32005 | 401 | `unauthorized` |
/// | -32006 | 403 | `forbidden` |
/// | -32001 | 404 | `not_found` (jobs, contexts: also those the caller may not see) |
/// | -32004 | 409 | `conflict` |
/// | -32003 | 409 | `job_failed` |
/// | -32010 | 503 | `storage_unavailable` |
/// | -32002 | 504 | `timeout` |
/// | -32700, -32600 | 400 | `invalid_request` |
/// | other | 500 | `internal` |
pub(crate) fn http_error(e: &ErrorObjectOwned) -> RestError {
    use super::error::{JOB_FAILED, STORAGE_UNAVAILABLE, TIMEOUT, UNAUTHORIZED};
    let data = e
        .data()
        .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
        .unwrap_or(Value::Null);
    let (status, code) = match e.code() {
        INVALID_PARAMS if data.get("code").and_then(Value::as_str) == Some("invalid_job_id") => {
            (StatusCode::BAD_REQUEST, "invalid_job_id")
        }
        INVALID_PARAMS => (StatusCode::BAD_REQUEST, "invalid_params"),
        UNAUTHORIZED => (StatusCode::UNAUTHORIZED, "unauthorized"),
        FORBIDDEN => (StatusCode::FORBIDDEN, "forbidden"),
        JOB_NOT_FOUND => (StatusCode::NOT_FOUND, "not_found"),
        CONFLICT => (StatusCode::CONFLICT, "conflict"),
        JOB_FAILED => (StatusCode::CONFLICT, "job_failed"),
        STORAGE_UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        TIMEOUT => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        -32700 | -32600 => (StatusCode::BAD_REQUEST, "invalid_request"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let mut error = RestError::new(status, code, e.message());
    if let Some(job_id) = data.get("job_id") {
        error.extra.insert("job_id".into(), job_id.clone());
    }
    error
}

/// `value` as a JSON answer with `status`.
fn json_response(status: StatusCode, value: &Value) -> Response<HttpBody> {
    let mut resp = Response::new(HttpBody::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The 401 of a missing or wrong bearer token, for REST and JSON-RPC paths alike (the
/// auth layer answers it before either sees the request).
pub(crate) fn unauthorized_response() -> Response<HttpBody> {
    RestError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    )
    .response()
}

/// One route of the REST face, with the job id it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Runtime,
    OpenApi,
    Jobs,
    Job(&'a str),
    Stop(&'a str),
    Cancel(&'a str),
    Transcript(&'a str),
    EventsWs(&'a str),
}

impl<'a> Route<'a> {
    /// The route of `path`, `None` when there is none.
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        Some(match segments.as_slice() {
            ["runtime"] => Route::Runtime,
            ["openapi.json"] => Route::OpenApi,
            ["jobs"] => Route::Jobs,
            ["jobs", id] if !id.is_empty() => Route::Job(id),
            ["jobs", id, "stop"] if !id.is_empty() => Route::Stop(id),
            ["jobs", id, "cancel"] if !id.is_empty() => Route::Cancel(id),
            ["jobs", id, "transcript"] if !id.is_empty() => Route::Transcript(id),
            ["jobs", id, "events", "ws"] if !id.is_empty() => Route::EventsWs(id),
            _ => return None,
        })
    }

    /// The methods the route answers.
    fn allowed(self) -> &'static [Method] {
        match self {
            Route::Jobs => &[Method::GET, Method::POST],
            Route::Stop(_) | Route::Cancel(_) => &[Method::POST],
            _ => &[Method::GET],
        }
    }
}

/// The query string of `req` as `(name, value)` pairs, percent-decoded; every name must
/// be one of `known` and appear once (400 otherwise).
fn query(query: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, RestError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(RestError::bad_request(format!(
                "unknown query parameter {:?}; known: {}",
                crate::job::echo(&name),
                known.join(", ")
            )));
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(RestError::bad_request(format!(
                "query parameter {name} given twice"
            )));
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// Query value `name` as a `u64`, if given.
fn query_u64(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, RestError> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| {
            v.parse::<u64>().map_err(|_| {
                RestError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_params",
                    format!(
                        "{name} must be a non-negative integer, not {:?}",
                        crate::job::echo(v)
                    ),
                )
            })
        })
        .transpose()
}

impl Rest {
    async fn handle<B>(&self, req: Request<B>) -> Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_owned();
        let Some(route) = Route::parse(&path) else {
            return RestError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {}", crate::job::echo(&path)),
            )
            .response();
        };
        let allowed = route.allowed();
        if !allowed.contains(req.method()) {
            let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let mut resp = RestError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} answers {}", route_name(route), names.join(", ")),
            )
            .response();
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                resp.headers_mut().insert(ALLOW, v);
            }
            return resp;
        }
        let answer = match route {
            Route::Runtime => self.runtime(req.extensions().clone()).await,
            Route::OpenApi => Ok(openapi_response()),
            Route::Jobs if req.method() == Method::POST => self.submit(req).await,
            Route::Jobs => self.list(req.uri().query(), req.extensions().clone()).await,
            Route::Job(id) => self.get_job(id, req.extensions().clone()).await,
            Route::Stop(id) | Route::Cancel(id) => self.stop(id, req).await,
            Route::Transcript(id) => {
                self.transcript(id, req.uri().query(), req.extensions().clone())
                    .await
            }
            Route::EventsWs(id) => self.events_ws(id, req).await,
        };
        answer.unwrap_or_else(RestError::response)
    }

    /// Calls served method `method` with `params` as the request's caller.
    async fn call(&self, method: &str, params: Value, ext: Extensions) -> Result<Value, RestError> {
        let answer = call_method(
            &self.config.methods,
            method,
            &params.to_string(),
            ext,
            self.config.max_response_body_bytes,
        )
        .await
        .ok_or_else(|| {
            RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("method {method} is not served"),
            )
        })??;
        serde_json::from_str(&answer).map_err(|e| {
            RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("unreadable answer of {method}: {e}"),
            )
        })
    }

    /// The request body as JSON (empty: `None`), read up to the body limit.
    async fn json_body<B>(&self, req: Request<B>) -> Result<Option<Value>, RestError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let max = self.config.max_request_body_bytes;
        let too_large = || {
            RestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let body = http_body_util::Limited::new(req.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    RestError::bad_request(format!("the request body could not be read: {e}"))
                }
            })?
            .to_bytes();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| RestError::bad_request(format!("the request body is not JSON: {e}")))
    }

    /// `GET /v1/runtime`: who the caller is, the version, and for server admins the
    /// server's figures (`stats`).
    async fn runtime(&self, ext: Extensions) -> Result<Response<HttpBody>, RestError> {
        let identity = self.call("whoami", json!([]), ext.clone()).await?;
        let mut answer = json!({
            "identity": identity,
            "version": env!("CARGO_PKG_VERSION"),
            "server_admin": false,
        });
        match self.call("stats", json!([]), ext).await {
            Ok(Value::Object(stats)) => {
                if let Some(answer) = answer.as_object_mut() {
                    answer.extend(stats);
                    answer.insert("server_admin".into(), Value::Bool(true));
                }
            }
            Ok(_) => {}
            Err(e) if e.status == StatusCode::FORBIDDEN => {}
            Err(e) => return Err(e),
        }
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// `GET /v1/jobs`: one page of `list_jobs` with the query as its filter.
    async fn list(
        &self,
        query_string: Option<&str>,
        ext: Extensions,
    ) -> Result<Response<HttpBody>, RestError> {
        const FILTERS: [&str; 8] = [
            "status",
            "script_type",
            "context_id",
            "caller_id",
            "created_after",
            "created_before",
            "limit",
            "cursor",
        ];
        let pairs = query(query_string, &FILTERS)?;
        let mut filter = Map::new();
        for (name, value) in &pairs {
            let value = if name == "limit" {
                let limit = query_u64(&pairs, "limit")?.unwrap_or_default();
                Value::from(limit)
            } else {
                Value::from(value.as_str())
            };
            filter.insert(name.clone(), value);
        }
        let page = self.call("list_jobs", json!([filter]), ext).await?;
        Ok(json_response(StatusCode::OK, &page))
    }

    /// `POST /v1/jobs`: `create_job` with the body (less `start`), then `start_job`
    /// unless `start` is false. 201 with `{id, status}` and a `Location`; an
    /// `idempotency_key` seen before answers 200 with the first job.
    async fn submit<B>(&self, req: Request<B>) -> Result<Response<HttpBody>, RestError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let ext = req.extensions().clone();
        let Some(Value::Object(mut params)) = self.json_body(req).await? else {
            return Err(RestError::bad_request(
                "the body must be a JSON object: {script, script_type, ..}",
            ));
        };
        let start = match params.remove("start") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                return Err(RestError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_params",
                    "start must be true or false",
                ));
            }
        };
        let id = self
            .call("create_job", json!([params]), ext.clone())
            .await?;
        let mut created = StatusCode::CREATED;
        if start {
            match self.call("start_job", json!([id]), ext.clone()).await {
                Ok(_) => {}
                // Started before: the first call of this idempotency key.
                Err(e) if e.status == StatusCode::CONFLICT => created = StatusCode::OK,
                Err(e) => return Err(e),
            }
        }
        let status = self.call("get_job_status", json!([id]), ext).await?;
        let mut resp = json_response(created, &json!({ "id": id, "status": status }));
        if let Some(id) = id.as_str()
            && let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{id}"))
        {
            resp.headers_mut().insert(LOCATION, location);
        }
        Ok(resp)
    }

    /// `GET /v1/jobs/{id}`: `get_job`.
    async fn get_job(&self, id: &str, ext: Extensions) -> Result<Response<HttpBody>, RestError> {
        let job = self.call("get_job", json!([id]), ext).await?;
        Ok(json_response(StatusCode::OK, &job))
    }

    /// `POST /v1/jobs/{id}/stop` and `/cancel`: `stop_job`, with an optional
    /// `{"reason"}` that goes to the server log with the job id. Answers `{id, status}`.
    async fn stop<B>(&self, id: &str, req: Request<B>) -> Result<Response<HttpBody>, RestError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let ext = req.extensions().clone();
        let reason = match self.json_body(req).await? {
            None => None,
            Some(Value::Object(mut body)) => {
                let reason = body.remove("reason");
                if let Some(name) = body.keys().next() {
                    return Err(RestError::bad_request(format!(
                        "unknown field {:?}; known: reason",
                        crate::job::echo(name)
                    )));
                }
                match reason {
                    None | Some(Value::Null) => None,
                    Some(Value::String(r))
                        if r.chars().count() <= MAX_REASON_CHARS
                            && !r.chars().any(char::is_control) =>
                    {
                        Some(r)
                    }
                    Some(_) => {
                        return Err(RestError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_params",
                            format!(
                                "reason must be a string of at most {MAX_REASON_CHARS} characters, without control characters"
                            ),
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(RestError::bad_request(
                    "the body must be empty or a JSON object: {reason?}",
                ));
            }
        };
        self.call("stop_job", json!([id]), ext.clone()).await?;
        if let Some(reason) = &reason {
            tracing::info!(job = %id, %reason, "job stopped through REST");
        }
        let status = self.call("get_job_status", json!([id]), ext).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "id": id, "status": status }),
        ))
    }

    /// `GET /v1/jobs/{id}/transcript?start=&limit=`: one page of the job's log lines,
    /// `get_job_logs` with `start` (default 0) and `limit` (its default and maximum):
    /// `{job_id, start, next, lines: [{seq, line}], dropped}`.
    async fn transcript(
        &self,
        id: &str,
        query_string: Option<&str>,
        ext: Extensions,
    ) -> Result<Response<HttpBody>, RestError> {
        let pairs = query(query_string, &["start", "limit"])?;
        let mut params = json!({
            "job_id": id,
            "start": query_u64(&pairs, "start")?.unwrap_or(0),
        });
        if let Some(limit) = query_u64(&pairs, "limit")? {
            params["limit"] = Value::from(limit);
        }
        let page = self.call("get_job_logs", params, ext).await?;
        let unreadable = || {
            RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "get_job_logs answered no page",
            )
        };
        let start = page
            .get("start")
            .and_then(Value::as_u64)
            .ok_or_else(unreadable)?;
        let next = page
            .get("next")
            .and_then(Value::as_u64)
            .ok_or_else(unreadable)?;
        let lines = page
            .get("lines")
            .and_then(Value::as_array)
            .ok_or_else(unreadable)?;
        let lines: Vec<Value> = (start..)
            .zip(lines)
            .map(|(seq, line)| json!({ "seq": seq, "line": line }))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "job_id": id,
                "start": start,
                "next": next,
                "lines": lines,
                "dropped": page.get("dropped").cloned().unwrap_or(Value::Null),
            }),
        ))
    }

    /// `GET /v1/jobs/{id}/events/ws?cursor=`: a WebSocket of the job's events (see
    /// [`Frames`]). Access is `get_job`'s; the store's events are subscribed to before
    /// it is called, so nothing after the snapshot is missed.
    async fn events_ws<B>(
        &self,
        id: &str,
        mut req: Request<B>,
    ) -> Result<Response<HttpBody>, RestError> {
        let pairs = query(req.uri().query(), &["cursor"])?;
        let cursor = query_u64(&pairs, "cursor")?.unwrap_or(0);
        if !soketto::handshake::http::is_upgrade_request(&req) {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                "this route is a WebSocket: send an upgrade request (Connection: upgrade, Upgrade: websocket)",
            ));
        }
        let events = self.config.supervisor.subscribe();
        let job = self
            .call("get_job", json!([id]), req.extensions().clone())
            .await?;
        let job_id = crate::rpc::error::parse_job_id(id)?;
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return Err(RestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{} event streams are open already; try again later",
                    self.config.max_event_streams
                ),
            ));
        };
        let mut handshake = soketto::handshake::http::Server::new();
        let accepted = handshake.receive_request(&req).map_err(|e| {
            RestError::bad_request(format!("not a usable WebSocket upgrade request: {e}"))
        })?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        drop(req);
        let supervisor = self.config.supervisor.clone();
        self.config
            .supervisor
            .spawn_background(move |stop| async move {
                let upgraded = match on_upgrade.await {
                    Ok(upgraded) => upgraded,
                    Err(e) => {
                        tracing::debug!(error = %e, "event WebSocket upgrade failed");
                        return;
                    }
                };
                let io = tokio_util::compat::TokioAsyncReadCompatExt::compat(
                    hyper_util::rt::TokioIo::new(upgraded),
                );
                let mut builder = handshake.into_builder(io);
                builder.set_max_message_size(WS_MAX_INCOMING);
                builder.set_max_frame_size(WS_MAX_INCOMING);
                let (sender, receiver) = builder.finish();
                let gone = CancellationToken::new();
                // Reads what the client sends (pings are answered by soketto, data is
                // ignored) until it closes or the stream ends.
                let reader = tokio::spawn(read_until_closed(receiver, gone.clone()));
                let mut frames = Frames {
                    sender,
                    gone: gone.clone(),
                    job_id,
                    cursor,
                };
                tokio::select! {
                    () = frames.run(&supervisor, job, events) => {}
                    () = stop.cancelled() => frames.shutdown().await,
                }
                gone.cancel();
                reader.abort();
                drop(permit);
            });
        let (parts, ()) = accepted.into_parts();
        Ok(Response::from_parts(parts, HttpBody::empty()))
    }
}

/// The route's name for messages.
fn route_name(route: Route<'_>) -> &'static str {
    match route {
        Route::Runtime => "/v1/runtime",
        Route::OpenApi => "/v1/openapi.json",
        Route::Jobs => "/v1/jobs",
        Route::Job(_) => "/v1/jobs/{id}",
        Route::Stop(_) => "/v1/jobs/{id}/stop",
        Route::Cancel(_) => "/v1/jobs/{id}/cancel",
        Route::Transcript(_) => "/v1/jobs/{id}/transcript",
        Route::EventsWs(_) => "/v1/jobs/{id}/events/ws",
    }
}

fn openapi_response() -> Response<HttpBody> {
    let mut resp = Response::new(HttpBody::from(OPENAPI_JSON));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

type WsIo = tokio_util::compat::Compat<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Reads the client's side of an event WebSocket until it closes (or fails), then
/// cancels `gone`.
async fn read_until_closed(
    mut receiver: soketto::connection::Receiver<WsIo>,
    gone: CancellationToken,
) {
    let mut message = Vec::new();
    loop {
        message.clear();
        match receiver.receive(&mut message).await {
            Ok(soketto::Incoming::Closed(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    gone.cancel();
}

/// The frames of one event WebSocket. Every frame is a JSON text with `type`,
/// `job_id`, `cursor` (the sequence number of the next log line: pass it back as
/// `?cursor=` to resume after this frame) and `event_id` (stable for the same event
/// across connections, so a client that resumes can drop what it saw):
///
/// - `snapshot` first: `job` is the job as `GET /v1/jobs/{id}` shows it;
/// - `log` (`index`, `line`), `status` (`status`) and `cursor_expired` (`requested`,
///   `resumed_at`: the lines in between were dropped by the log cap) as the
///   subscription `subscribe_job_events` sends them;
/// - `end` (`status`) once the job ended, then the close;
/// - `error` (`error: {code, message}`) when the stream can't go on (the job was
///   deleted, the server shuts down), then the close.
struct Frames {
    sender: soketto::connection::Sender<WsIo>,
    gone: CancellationToken,
    job_id: crate::job::JobId,
    /// The next log line's sequence number, as far as the frames sent so far tell.
    cursor: u64,
}

impl Frames {
    async fn run(
        &mut self,
        supervisor: &Supervisor,
        job: Value,
        events: tokio::sync::broadcast::Receiver<crate::store::StoreEvent>,
    ) {
        let snapshot = json!({
            "type": "snapshot",
            "job_id": self.job_id,
            "event_id": format!("snapshot:{}", self.cursor),
            "cursor": self.cursor,
            "job": job,
        });
        if !self.send_value(&snapshot).await {
            return;
        }
        let job_id = self.job_id;
        let cursor = self.cursor;
        match stream_job_events(supervisor, job_id, self, events, cursor).await {
            Ok(Some(status)) => {
                let end = json!({
                    "type": "end",
                    "job_id": job_id,
                    "event_id": format!("end:{status}"),
                    "cursor": self.cursor,
                    "status": status,
                });
                if self.send_value(&end).await {
                    let _ = self.sender.close().await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let rest = http_error(&e);
                self.error_frame(rest.code, &rest.message).await;
            }
        }
    }

    /// The server shuts down: says so, then closes.
    async fn shutdown(&mut self) {
        self.error_frame("shutting_down", "the server is shutting down")
            .await;
    }

    async fn error_frame(&mut self, code: &str, message: &str) {
        let frame = json!({
            "type": "error",
            "job_id": self.job_id,
            "event_id": format!("error:{code}:{}", self.cursor),
            "cursor": self.cursor,
            "error": { "code": code, "message": message },
        });
        if self.send_value(&frame).await {
            let _ = self.sender.close().await;
        }
    }

    /// Sends one frame; `false` when the client is gone or does not read within
    /// [`WS_SEND_TIMEOUT`].
    async fn send_value(&mut self, value: &Value) -> bool {
        if self.gone.is_cancelled() {
            return false;
        }
        let text = value.to_string();
        let sent = tokio::time::timeout(WS_SEND_TIMEOUT, async {
            self.sender.send_text_owned(text).await?;
            self.sender.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(job = %self.job_id, error = %e, "event WebSocket closed");
                false
            }
            Err(_) => {
                tracing::debug!(job = %self.job_id, "event WebSocket client does not read; closed");
                false
            }
        }
    }
}

impl EventSink for Frames {
    async fn send(&mut self, event: &JobEvent) -> bool {
        let (cursor, event_id) = match event {
            JobEvent::Log { index, .. } => (index.saturating_add(1), format!("log:{index}")),
            JobEvent::Status { status, cursor, .. } => {
                (*cursor, format!("status:{status}:{cursor}"))
            }
            JobEvent::CursorExpired {
                requested,
                resumed_at,
                ..
            } => (
                *resumed_at,
                format!("cursor_expired:{requested}:{resumed_at}"),
            ),
        };
        self.cursor = self.cursor.max(cursor);
        let mut value = match serde_json::to_value(event) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                tracing::error!("job event does not serialize as an object");
                return false;
            }
        };
        value.insert("cursor".into(), Value::from(self.cursor));
        value.insert("event_id".into(), Value::from(event_id));
        self.send_value(&Value::Object(value)).await
    }

    async fn closed(&self) {
        self.gone.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router and [`ROUTES`] agree: each template (with an id) parses to a route
    /// of that name answering exactly its methods, and nothing else under `/v1` parses.
    #[test]
    fn the_router_serves_exactly_the_listed_routes() {
        for (template, methods) in ROUTES {
            let path = template.replace("{id}", "some-id");
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{path} has no route"));
            assert_eq!(route_name(route), template);
            let allowed: Vec<&str> = route.allowed().iter().map(Method::as_str).collect();
            assert_eq!(allowed, methods, "{template}");
        }
        for unrouted in [
            "/v1",
            "/v1/",
            "/v1/jobs/",
            "/v1/jobs//stop",
            "/v1/jobs/x/stop/now",
            "/v1/jobs/x/events",
            "/v1/runtime/",
            "/v2/jobs",
        ] {
            assert_eq!(Route::parse(unrouted), None, "{unrouted}");
        }
    }

    #[test]
    fn json_rpc_errors_map_onto_statuses_and_codes() {
        use crate::rpc::error;
        let id = crate::job::JobId::new();
        let check = |e: ErrorObjectOwned, status: u16, code: &str| {
            let r = http_error(&e);
            assert_eq!((r.status.as_u16(), r.code), (status, code), "{e:?}");
        };
        check(error::invalid_params("x"), 400, "invalid_params");
        check(error::parse_job_id("x").unwrap_err(), 400, "invalid_job_id");
        check(error::unauthorized("x"), 401, "unauthorized");
        check(error::forbidden("x"), 403, "forbidden");
        check(
            error::to_rpc_error(crate::service::SupervisorError::NotFound(id)),
            404,
            "not_found",
        );
        check(error::context_not_found("7"), 404, "not_found");
        check(error::conflict("x"), 409, "conflict");
        check(
            error::to_rpc_error(crate::service::SupervisorError::Storage("down".into())),
            503,
            "storage_unavailable",
        );
        check(error::internal("x"), 500, "internal");
        let not_found = http_error(&error::to_rpc_error(
            crate::service::SupervisorError::NotFound(id),
        ));
        assert_eq!(not_found.extra["job_id"], Value::from(id.to_string()));
    }
}
