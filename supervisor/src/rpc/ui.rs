//! The dashboard: a few static files (plain ES modules, one stylesheet) served under
//! `/ui/` on the API's port, embedded in the binary with `include_str!` (no build step,
//! no CDN, nothing fetched at run time).
//!
//! [`UiLayer`] is a tower layer in jsonrpsee's HTTP middleware, outside the bearer auth
//! layer: the files are public (they hold no data), while everything the page shows
//! comes through the same API (`/v1` REST and JSON-RPC) with the token the user typed,
//! sent as `Authorization: Bearer` (and, on the event WebSocket, as the
//! `hero-bearer.<hex>` subprotocol: [`super::auth::BEARER_PROTOCOL_PREFIX`]). It sits
//! inside the origin guard, so a page of another site cannot fetch it either.
//!
//! - `GET`/`HEAD /ui` redirects (308) to `/ui/`; `/ui/` is `index.html`;
//! - `GET`/`HEAD /ui/<file>` for the embedded files ([`ASSETS`]), 404 for any other;
//! - other methods 405.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's scripts,
//! styles, images and connections; no inline script; no framing), `nosniff`,
//! `no-referrer` and `Cache-Control: no-cache` (a new binary's files are fetched again).

use std::task::{Context, Poll};

use futures::future::Either;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue,
    LOCATION, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use tower::{Layer, Service};

/// The path prefix the dashboard is served under.
pub const PREFIX: &str = "/ui";

/// The Content-Security-Policy of every dashboard answer: scripts, styles, images and
/// connections (HTTP and WebSocket) of this origin only, no inline script, no plugins,
/// no `<base>`, forms only to this origin, never inside a frame.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded files: path under `/ui/`, content type, content.
pub const ASSETS: [(&str, &str, &str); 9] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/dom.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/overview.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/jobs.js"),
    ),
    (
        "flows.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/flows.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../ui/favicon.svg"),
    ),
];

/// The embedded file at `path` (below `/ui/`; empty is `index.html`): its content type
/// and content.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, content_type, body)| (*content_type, *body))
}

/// Tower layer: answers `/ui` and `/ui/...` (module docs), passes everything else on.
#[derive(Debug, Clone, Copy, Default)]
pub struct UiLayer;

impl<S> Layer<S> for UiLayer {
    type Service = UiService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        UiService { inner }
    }
}

/// The service of [`UiLayer`].
#[derive(Debug, Clone)]
pub struct UiService<S> {
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type Ready = std::future::Ready<Result<Response<HttpBody>, BoxError>>;

impl<S, B> Service<Request<B>> for UiService<S>
where
    S: Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Either<Ready, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path == PREFIX || path.starts_with("/ui/") {
            Either::Left(std::future::ready(Ok(answer(req.method(), path))))
        } else {
            Either::Right(self.inner.call(req))
        }
    }
}

/// The answer to `method` on `path` (`/ui` or below).
fn answer(method: &Method, path: &str) -> Response<HttpBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard answers GET\n",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let head = method == Method::HEAD;
    let Some(file) = path.strip_prefix("/ui/") else {
        let mut resp = plain(StatusCode::PERMANENT_REDIRECT, "");
        resp.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/ui/"));
        return resp;
    };
    let Some((content_type, body)) = asset(file) else {
        return plain(StatusCode::NOT_FOUND, "no such file in the dashboard\n");
    };
    let mut resp = Response::new(if head {
        HttpBody::empty()
    } else {
        HttpBody::from(body)
    });
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    secure(headers);
    resp
}

/// A short plain-text answer with the dashboard's headers.
fn plain(status: StatusCode, text: &'static str) -> Response<HttpBody> {
    let mut resp = Response::new(HttpBody::from(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(headers);
    resp
}

/// The security headers of every dashboard answer.
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_redirect_and_refusals() {
        let index = answer(&Method::GET, "/ui/");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            index.headers()[CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY_VALUE
        );
        assert_eq!(index.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let js = answer(&Method::HEAD, "/ui/app.js");
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(js.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        let redirect = answer(&Method::GET, "/ui");
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[LOCATION], "/ui/");
        for missing in [
            "/ui/nope.js",
            "/ui/../Cargo.toml",
            "/ui/app.js/",
            "/ui//app.js",
        ] {
            assert_eq!(
                answer(&Method::GET, missing).status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        assert_eq!(
            answer(&Method::POST, "/ui/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// Every module the page imports is embedded, and the page has no inline script
    /// (the policy would block it).
    #[test]
    fn every_import_is_embedded_and_nothing_is_inline() {
        for (name, _, body) in ASSETS {
            for line in body.lines() {
                let line = line.trim();
                if let Some(from) = line
                    .strip_prefix("import ")
                    .and_then(|l| l.split(" from ").nth(1))
                {
                    let target = from.trim_end_matches(';').trim_matches(['"', '\'']);
                    let target = target.strip_prefix("./").unwrap_or(target);
                    assert!(asset(target).is_some(), "{name} imports {target}");
                }
            }
        }
        let (_, index) = asset("").unwrap();
        for script in index.split("<script").skip(1) {
            assert!(script.contains("src="), "inline script in index.html");
        }
        assert!(!index.contains(" style="), "inline style in index.html");
        assert!(!index.contains("http://") && !index.contains("https://"));
    }
}
