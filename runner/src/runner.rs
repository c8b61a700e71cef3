//! The [`Runner`]: handlers by function name, plus how it serves them (stdio, TCP, any
//! byte stream).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RunnerConfig;
use crate::connection::{self, ConnectionOptions};
use crate::handler::Handler;
use crate::shared::Shared;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without an auth token: anyone who connects could run code.
    #[error("refusing to listen on non-loopback address {0} without an auth token")]
    NonLoopbackWithoutAuth(SocketAddr),
    /// Binding or accepting failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Builds a [`Runner`].
#[derive(Default)]
pub struct RunnerBuilder {
    config: RunnerConfig,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("config", &self.config)
            .field("functions", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RunnerBuilder {
    /// The name sent in `hello`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The version sent in `hello`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.config.version = version.into();
        self
    }

    /// See [`RunnerConfig::max_in_flight`] (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
        self
    }

    /// See [`RunnerConfig::cancel_grace`].
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// See [`RunnerConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// See [`RunnerConfig::max_frame_len`].
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.config.max_frame_len = len;
        self
    }

    /// See [`RunnerConfig::auth_token`].
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.config.auth_token = Some(token.into());
        self
    }

    /// Replaces the whole configuration (handlers are kept).
    pub fn config(mut self, config: RunnerConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves `handler` as `function_name`. A request's `function_name` is matched exactly
    /// first, then ignoring ASCII case (`sal` finds `SAL`). A later registration of the
    /// same name replaces the earlier one.
    pub fn handler(self, function_name: impl Into<String>, handler: impl Handler) -> Self {
        self.handler_arc(function_name, Arc::new(handler))
    }

    /// [`handler`](Self::handler) for a handler already behind an `Arc`.
    pub fn handler_arc(
        mut self,
        function_name: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> Self {
        self.handlers.insert(function_name.into(), handler);
        self
    }

    /// The runner.
    pub fn build(self) -> Runner {
        Runner {
            inner: Arc::new(Shared::new(self.config, self.handlers)),
        }
    }
}

/// A set of handlers by function name, served over stdio, TCP, or any byte stream.
/// Cheap to clone.
///
/// ```no_run
/// use hero_runner::Runner;
/// use serde_json::json;
///
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let runner = Runner::builder()
///     .name("echo-runner")
///     .max_in_flight(16)
///     .handler("echo", |req: hero_protocol::ExecutionRequest, _ctx| async move {
///         Ok(json!(req.args))
///     })
///     .build();
/// // Frames on stdin/stdout until stdin closes; logs go to stderr.
/// runner.serve_stdio().await
/// # }
/// ```
#[derive(Clone)]
pub struct Runner {
    pub(crate) inner: Arc<Shared>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.inner.config)
            .field("functions", &self.functions())
            .finish()
    }
}

impl Runner {
    /// Starts building a runner.
    pub fn builder() -> RunnerBuilder {
        RunnerBuilder::default()
    }

    /// The configuration.
    pub fn config(&self) -> &RunnerConfig {
        &self.inner.config
    }

    /// The registered function names, sorted.
    pub fn functions(&self) -> Vec<String> {
        self.inner.hello().functions
    }

    /// Serves one connection until the peer closes it, sends a malformed frame, or fails
    /// authentication. Every request still in flight then is cancelled (hard). When an
    /// auth token is configured, the connection must open with a `hello` carrying it.
    pub async fn serve_connection<R, W>(&self, reader: R, writer: W)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_connection_until(reader, writer, CancellationToken::new())
            .await;
    }

    /// [`serve_connection`](Self::serve_connection) that also ends on `shutdown`: new
    /// requests are then answered `runner_busy`, in-flight ones get
    /// [`RunnerConfig::shutdown_grace`] to finish, then are cancelled.
    pub async fn serve_connection_until<R, W>(
        &self,
        reader: R,
        writer: W,
        shutdown: CancellationToken,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let options = ConnectionOptions {
            require_auth: self.inner.config.auth_token.is_some(),
            shutdown,
        };
        connection::serve(self.inner.clone(), reader, writer, options).await;
    }

    /// Serves frames on this process's stdin/stdout until stdin closes. Never requires
    /// auth: whoever holds the pipes spawned this process. Log lines of the runner itself
    /// must go to stderr (the binary sets `tracing` up that way).
    pub async fn serve_stdio(&self) -> io::Result<()> {
        self.serve_stdio_until(CancellationToken::new()).await
    }

    /// [`serve_stdio`](Self::serve_stdio) that also ends (gracefully) on `shutdown`.
    pub async fn serve_stdio_until(&self, shutdown: CancellationToken) -> io::Result<()> {
        let options = ConnectionOptions {
            require_auth: false,
            shutdown,
        };
        let (reader, writer) = stdio();
        connection::serve(self.inner.clone(), reader, writer, options).await;
        Ok(())
    }

    /// Binds `addr` and serves every connection until `shutdown` fires, then lets the
    /// connections drain (see [`serve_connection_until`](Self::serve_connection_until)).
    /// A non-loopback address is refused without an auth token.
    pub async fn serve_tcp(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let listener = self.bind_tcp(addr).await?;
        self.serve_listener(listener, shutdown).await
    }

    /// Binds `addr` for [`serve_listener`](Self::serve_listener), refusing a non-loopback
    /// address without an auth token. Bind port 0 and read `local_addr()` to learn the port.
    pub async fn bind_tcp(&self, addr: SocketAddr) -> Result<TcpListener, ServeError> {
        if !addr.ip().is_loopback() && self.inner.config.auth_token.is_none() {
            return Err(ServeError::NonLoopbackWithoutAuth(addr));
        }
        Ok(TcpListener::bind(addr).await?)
    }

    /// Serves connections accepted from `listener` until `shutdown` fires. At most
    /// [`RunnerConfig::max_connections`] are served at once.
    pub async fn serve_listener(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let connections = TaskTracker::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.inner.config.max_connections.max(1),
        ));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // Per-connection failures (e.g. the peer reset before accept) must
                        // not stop the listener; back off a little on resource exhaustion.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            tracing::debug!(%peer, "connection accepted");
            let this = self.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let (r, w) = stream.into_split();
                this.serve_connection_until(r, w, shutdown).await;
                tracing::debug!(%peer, "connection closed");
                drop(permit);
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        Ok(())
    }
}

/// This process's stdin and stdout for the wire. When they are pipes (a supervisor
/// spawned us), they become non-blocking pipes driven by the reactor: each read and
/// write is one syscall on the runtime's own thread. Otherwise (a terminal, a file)
/// tokio's stdin/stdout, which hand every read and write to a blocking thread.
fn stdio() -> (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let reader = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)));
    let writer = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)));
    let reader: Box<dyn AsyncRead + Unpin + Send> = match reader {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let writer: Box<dyn AsyncWrite + Unpin + Send> = match writer {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (reader, writer)
}
