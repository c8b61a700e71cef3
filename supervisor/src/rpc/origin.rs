//! The origin guard: a request a browser sends from another site is refused, unless
//! that site is one of the configured CORS origins.
//!
//! Why: browsers apply no CORS rule to a WebSocket upgrade, and a "simple" cross-site
//! POST reaches the server before anyone reads its answer. On the embedded default (a
//! loopback bind without tokens, where the local user is a server admin) any web page
//! the user visits could otherwise open `ws://127.0.0.1:9652` and run scripts. Browsers
//! always send `Origin` on such requests; command-line tools and the client libraries
//! send none, and are not affected.
//!
//! The rule, for a request with an `Origin` header:
//! - allowed when the origin is in [`super::RpcConfig::cors_origins`] (or that is `*`);
//! - allowed when it is the server's own origin: its `host[:port]` equals the request's
//!   `Host` (a page served by this server, such as a dashboard);
//! - otherwise 403 `{"error": {"code": "forbidden_origin", ..}}`, before the bearer
//!   token is looked at (so a refused page learns nothing about tokens either).
//!
//! `Origin: null` (sandboxed frames, `file://` pages) is refused unless `*` is configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HOST, ORIGIN};
use http::{Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use tower::{Layer, Service};

use super::rest::RestError;

/// Which cross-site origins may call.
#[derive(Debug, Clone)]
enum Allowed {
    /// Every origin (`cors_origins = ["*"]`).
    Any,
    /// These serialized origins (`scheme://host[:port]`).
    List(Arc<[String]>),
}

/// Tower layer of the origin guard (module docs).
#[derive(Debug, Clone)]
pub struct OriginGuardLayer {
    allowed: Allowed,
}

impl OriginGuardLayer {
    /// The guard allowing `cors_origins` (already checked by [`super::cors_layer`]).
    pub fn new(cors_origins: &[String]) -> Self {
        let allowed = if cors_origins.iter().any(|o| o == "*") {
            Allowed::Any
        } else {
            Allowed::List(
                cors_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
            )
        };
        OriginGuardLayer { allowed }
    }

    /// Whether a request with `origin` and `host` headers may go on.
    fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        match &self.allowed {
            Allowed::Any => return true,
            Allowed::List(list) if list.iter().any(|o| o == origin) => return true,
            Allowed::List(_) => {}
        }
        // Same origin: `scheme://authority` whose authority is the Host header.
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

impl<S> Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of [`OriginGuardLayer`].
#[derive(Debug, Clone)]
pub struct OriginGuard<S> {
    inner: S,
    guard: OriginGuardLayer,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl<S, B> Service<Request<B>> for OriginGuard<S>
where
    S: Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(origin) = req.headers().get(ORIGIN) {
            let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
            let allowed = origin
                .to_str()
                .is_ok_and(|origin| self.guard.allows(origin, host));
            if !allowed {
                let shown = String::from_utf8_lossy(origin.as_bytes())
                    .chars()
                    .take(200)
                    .collect::<String>();
                tracing::debug!(origin = %shown, uri = %req.uri(), "request refused: cross-site origin");
                let message = format!(
                    "requests from origin {shown} are refused: it is not this server's origin \
                     nor one of its cors_origins"
                );
                return Box::pin(async move {
                    Ok(
                        RestError::new(StatusCode::FORBIDDEN, "forbidden_origin", &message)
                            .response(),
                    )
                });
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_pass_others_do_not() {
        let none = OriginGuardLayer::new(&[]);
        let host = Some("127.0.0.1:9652");
        assert!(none.allows("http://127.0.0.1:9652", host));
        assert!(none.allows("https://127.0.0.1:9652", host));
        assert!(!none.allows("http://evil.example", host));
        assert!(!none.allows("http://127.0.0.1:9653", host));
        assert!(!none.allows("null", host));
        assert!(!none.allows("http://127.0.0.1:9652", None));
        let listed = OriginGuardLayer::new(&["https://ui.example/".to_owned()]);
        assert!(listed.allows("https://ui.example", host));
        assert!(!listed.allows("http://ui.example", host));
        let any = OriginGuardLayer::new(&["*".to_owned()]);
        assert!(any.allows("null", None));
    }
}
