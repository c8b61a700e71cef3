//! `/metrics` on the JSON-RPC port, and the counting of JSON-RPC calls.
//!
//! - [`MetricsLayer`]: a tower layer in jsonrpsee's HTTP middleware, inside the origin
//!   guard and the bearer auth layer, so it is behind the same token as the API:
//!   `GET /metrics` answers the process's [`Metrics`](crate::metrics::Metrics) in the
//!   OpenMetrics text format, with the store's figures read at scrape time (one
//!   `counts` of the job store, one `ZCARD` per signed-call queue). With tokens
//!   configured it takes a server admin's token (the figures are `stats`'s, a server
//!   admin's method); on the token-less loopback default it is open like the rest.
//! - [`RpcMetricsLayer`]: jsonrpsee RPC middleware counting each call by method and
//!   answer code (calls inside a batch one by one). A method name that is not served
//!   counts as `other`. It also runs each call in its `rpc.call` span
//!   ([`crate::trace`]), a child of the caller's `traceparent`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::server::{BatchResponseBuilder, HttpBody, MethodResponse};
use jsonrpsee::types::Request as RpcRequest;
use tower::{Layer, Service};
use tracing::Instrument;

use super::auth::Grant;
use super::rest::RestError;
use crate::calls::{CallStore, Queue};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics, RpcCode, Snapshot};
use crate::service::Supervisor;
use crate::trace::{OTEL_TARGET, TraceParent};

/// The path [`MetricsLayer`] answers.
pub const PATH: &str = "/metrics";

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, BoxError>> + Send>>;

/// Where a scrape reads from.
struct Source {
    supervisor: Supervisor,
    calls: Arc<dyn CallStore>,
}

impl Source {
    async fn snapshot(&self) -> Snapshot {
        let jobs = self.supervisor.job_counts().await.ok();
        let calls = match (
            self.calls.queue_len(Queue::Outbox).await,
            self.calls.queue_len(Queue::Running).await,
        ) {
            (Ok(outbox), Ok(running)) => Some((outbox, running)),
            _ => None,
        };
        Snapshot {
            jobs,
            calls,
            runners: self.supervisor.list_runners(),
            uptime: self.supervisor.uptime(),
        }
    }

    /// The answer to a request for `/metrics` with `method`, from a caller `actor` (an
    /// actor's token) or not.
    async fn answer(&self, method: Method, actor: bool) -> Response<HttpBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut resp = RestError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            )
            .response();
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        if actor {
            return RestError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "metrics are a server admin's: use a server admin's token",
            )
            .response();
        }
        let text = self.supervisor.metrics().render(&self.snapshot().await);
        let body = if method == Method::HEAD {
            HttpBody::empty()
        } else {
            HttpBody::from(text)
        };
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
        resp
    }
}

/// Tower layer: answers `/metrics`, passes everything else on.
#[derive(Clone)]
pub struct MetricsLayer {
    source: Arc<Source>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// Serves `supervisor`'s metrics, with the signed-call queues of `calls`.
    pub(crate) fn new(supervisor: Supervisor, calls: Arc<dyn CallStore>) -> Self {
        MetricsLayer {
            source: Arc::new(Source { supervisor, calls }),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    source: Arc<Source>,
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Either<BoxFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() == PATH {
            let source = self.source.clone();
            let method = req.method().clone();
            let actor = matches!(req.extensions().get::<Grant>(), Some(Grant::Actor(_)));
            drop(req);
            Either::Left(Box::pin(
                async move { Ok(source.answer(method, actor).await) },
            ))
        } else {
            Either::Right(self.inner.call(req))
        }
    }
}

/// jsonrpsee RPC middleware: counts every call by method and answer code.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    counting: Arc<Counting>,
}

struct Counting {
    metrics: Arc<Metrics>,
    /// The served methods: a name outside them counts as `other`.
    methods: HashSet<&'static str>,
    /// The largest batch answer (the server's `max_response_body_size`).
    max_response_body_bytes: usize,
}

impl Counting {
    /// `method` as a label: a served method's name, or `other`.
    fn label(&self, method: &str) -> &'static str {
        self.methods.get(method).copied().unwrap_or("other")
    }

    fn count(&self, method: &'static str, response: &MethodResponse) {
        let code = match response.as_error_code() {
            Some(code) => RpcCode::Error(code),
            None => RpcCode::Ok,
        };
        self.metrics.rpc_call(method, code);
    }
}

impl std::fmt::Debug for RpcMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetricsLayer").finish_non_exhaustive()
    }
}

impl RpcMetricsLayer {
    /// Counts into `metrics`; `methods` are the served method names.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        methods: impl IntoIterator<Item = &'static str>,
        max_response_body_bytes: usize,
    ) -> Self {
        RpcMetricsLayer {
            counting: Arc::new(Counting {
                metrics,
                methods: methods.into_iter().collect(),
                max_response_body_bytes,
            }),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, service: S) -> Self::Service {
        RpcMetrics {
            service,
            counting: self.counting.clone(),
        }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Clone)]
pub struct RpcMetrics<S> {
    service: S,
    counting: Arc<Counting>,
}

impl<S> std::fmt::Debug for RpcMetrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetrics").finish_non_exhaustive()
    }
}

impl<S> RpcServiceT for RpcMetrics<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: RpcRequest<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let service = self.service.clone();
        let counting = self.counting.clone();
        let method = counting.label(request.method_name());
        // The call's span (for OTLP export; never built otherwise), a child of the
        // caller's `traceparent` header when it sent one.
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "rpc.call",
            otel.kind = "server",
            rpc.system = "jsonrpc",
            rpc.method = method,
        );
        if let Some(parent) = request.extensions().get::<TraceParent>() {
            crate::trace::set_parent(&span, parent);
        }
        async move {
            let response = service.call(request).await;
            counting.count(method, &response);
            response
        }
        .instrument(span)
    }

    /// The calls of a batch one by one through [`RpcMetrics::call`] (as jsonrpsee's own
    /// batch handling does with its inner service), so each is counted.
    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let mut answers =
                BatchResponseBuilder::new_with_limit(this.counting.max_response_body_bytes);
            let mut got_notification = false;
            for entry in batch {
                match entry {
                    Ok(BatchEntry::Call(request)) => {
                        if let Err(too_big) = answers.append(this.call(request).await) {
                            return too_big;
                        }
                    }
                    Ok(BatchEntry::Notification(n)) => {
                        got_notification = true;
                        this.service.notification(n).await;
                    }
                    Err(e) => {
                        let (error, id) = e.into_parts();
                        if let Err(too_big) = answers.append(MethodResponse::error(id, error)) {
                            return too_big;
                        }
                    }
                }
            }
            if answers.is_empty() && got_notification {
                MethodResponse::notification()
            } else {
                MethodResponse::from_batch(answers.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.service.notification(n)
    }
}
