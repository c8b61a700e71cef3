//! TLS on the JSON-RPC port: HTTPS and WSS on the one port, with rustls.
//!
//! [`TlsFiles`] names a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or
//! SEC1); [`load`] reads and checks both (the key must match the certificate) into a
//! [`TlsServer`], a `rustls` server configuration on the `ring` provider offering TLS 1.3
//! and 1.2 and ALPN `http/1.1` (WebSocket upgrades need HTTP/1.1). Every failure is a
//! [`TlsError`] naming the file; no error repeats a byte of the key.
//!
//! [`serve`] is the accept loop: per TCP connection a TLS handshake (bounded in time and
//! in how many run at once), then jsonrpsee's service over the encrypted stream, the same
//! service (bearer auth layer, limits) a plain server runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::Methods;
use jsonrpsee::server::{StopHandle, TowerServiceBuilder, serve_with_graceful_shutdown};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tower::layer::util::{Identity, Stack};
use tower::util::Either;
use tower_http::cors::CorsLayer;

use super::auth::BearerAuthLayer;
use super::metrics::{MetricsLayer, RpcMetricsLayer};
use super::origin::OriginGuardLayer;
use super::rest::RestLayer;
use super::ui::UiLayer;

/// How long a client has to finish the TLS handshake; a connection that has not is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once (or `max_connections`, if that is larger); a
/// connection beyond it is closed at once. Generous, so that a few hundred idle sockets
/// do not lock clients out, yet bounding the memory of half-open handshakes.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The certificate and key files to serve TLS with (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key can't be used. The key's contents never appear.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("invalid TLS certificate file {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file holds no PEM private key, or a broken one.
    #[error(
        "invalid TLS key file {path}: expected a PEM private key \
         (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
    )]
    Key {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (the key does not match the certificate, an unsupported
    /// key type).
    #[error("cannot use TLS certificate {cert} with key {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// A loaded certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads and checks the certificate chain and key `files` name.
pub fn load(files: &TlsFiles) -> Result<TlsServer, TlsError> {
    let cert_pem = read("certificate", &files.cert)?;
    let bad_cert = |reason: String| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| bad_cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad_cert("no BEGIN CERTIFICATE block".into()));
    }
    let key_pem = read("key", &files.key)?;
    // The parser's error may quote the file; for a key that could be secret bytes.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Key {
        path: files.key.clone(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_error = |e: rustls::Error| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(pair_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsServer {
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// jsonrpsee's per-connection service builder with the HTTP middleware every server
/// of this crate runs (CORS when configured, the origin guard, the dashboard, the bearer
/// auth layer, `/metrics`, the REST face) and the RPC middleware counting calls.
pub(super) type ServiceBuilder = TowerServiceBuilder<
    Stack<RpcMetricsLayer, Identity>,
    Stack<
        RestLayer,
        Stack<
            MetricsLayer,
            Stack<
                BearerAuthLayer,
                Stack<
                    UiLayer,
                    Stack<OriginGuardLayer, Stack<Either<CorsLayer, Identity>, Identity>>,
                >,
            >,
        >,
    >,
>;

/// What each connection is served with.
pub(super) struct Serving {
    /// jsonrpsee's service builder: limits, the shared connection guard, the middleware.
    pub(super) builder: ServiceBuilder,
    /// The API's methods.
    pub(super) methods: Methods,
    /// The server's stop handle.
    pub(super) stop: StopHandle,
    /// Handshakes in progress at once; beyond it a new connection is closed at once.
    pub(super) max_handshakes: usize,
}

/// Accepts connections on `listener` until `serving.stop` fires: a TLS handshake each,
/// then jsonrpsee's service over the stream. Every task holds a clone of the stop handle,
/// so the server's handle reports stopped only once every connection has ended.
pub(super) async fn serve(listener: TcpListener, tls: TlsServer, serving: Serving) {
    let Serving {
        builder,
        methods,
        stop,
        max_handshakes,
    } = serving;
    let handshakes = Arc::new(Semaphore::new(max_handshakes.max(1)));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: wait a moment instead of spinning.
                    tracing::debug!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.clone().shutdown() => break,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let acceptor = tls.acceptor.clone();
        let service = builder.clone().build(methods.clone(), stop.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = stop.clone().shutdown() => return,
            };
            drop(permit);
            if let Err(e) = serve_with_graceful_shutdown(stream, service, stop.shutdown()).await {
                tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
            }
        });
    }
}
