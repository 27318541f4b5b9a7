//! The accept loop: TCP connections in, TLS terminated, HTTP/1.1 served to an axum [`Router`].
//!
//! Owns accepting (and what to do when accepting fails), the TLS handshake and its timeout,
//! the HTTP/1 connection settings, the peer address handed to handlers and graceful shutdown.
//! Does not own what a request must carry (see [`crate::guard`]) nor the TLS settings (see
//! [`crate::tls`]).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::WebConfig;
use crate::guard::{GuardOptions, challenge, guard};

/// A TLS client gets this long to finish its handshake; stops half-open connections from
/// pinning a task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1 client gets this long to send its request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`serve_with`] treats connections and requests; [`Default`] is what [`serve`] uses.
///
/// Set the fields you care about on a default value (the struct is `#[non_exhaustive]` so new
/// settings can come without breaking callers):
///
/// ```
/// let mut options = exporter_web::ServeOptions::default();
/// options.realm = "my-exporter".to_string();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The realm of the `WWW-Authenticate: Basic realm="…"` challenge sent with a 401 (browsers
    /// show it in the login prompt). Default: `mde-liveresponse-exporter`, the exporter this
    /// crate was written for; another exporter should set its own name.
    pub realm: String,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            realm: "mde-liveresponse-exporter".to_string(),
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// in-flight requests to finish. The same as [`serve_with`] with [`ServeOptions::default()`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<WebConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, web, shutdown, ServeOptions::default()).await
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// in-flight requests to finish.
///
/// Plain HTTP when `web` is `None` or has no TLS settings, TLS (optionally mutual) otherwise.
/// When users are configured every request, including unknown paths, needs valid basic-auth
/// credentials. Handlers can extract [`ConnectInfo<SocketAddr>`](ConnectInfo) for the peer.
/// A failed TLS handshake or a broken connection is logged at debug and does not stop the
/// server.
///
/// Fails at once, before accepting anything, if `options` cannot be used (a realm with control
/// characters).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<WebConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> io::Result<()> {
    let guard_options = GuardOptions {
        challenge: challenge(&options.realm).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("realm {:?} cannot be sent in a header", options.realm),
            )
        })?,
    };
    let (router, acceptor) = match &web {
        Some(web) => (
            guard(router, web, &guard_options),
            web.tls.clone().map(TlsAcceptor::from),
        ),
        None => (router, None),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            address = %addr,
            tls = acceptor.is_some(),
            basic_auth = web.as_ref().is_some_and(|w| w.basic_auth_enabled()),
            web_config = ?web.as_ref().map(|w| w.path()),
            "listening"
        );
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        // The peer address as `ConnectInfo`, so handlers and logs can see who is calling.
        let router = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.call(req)
        });
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let io = TokioIo::new(stream);
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    // The handshake runs here, not in the accept loop, so a slow client
                    // cannot hold up others.
                    let handshake = acceptor.accept(stream);
                    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = TokioIo::new(tls);
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Dropping the listener closes the socket so new clients are refused, not left queued.
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down HTTP server; waiting for in-flight requests"
    );
    graceful.shutdown().await;
    Ok(())
}

/// What to do when `accept` fails. Per-connection errors (the client gave up before we
/// accepted) are ignored; anything else (typically EMFILE) is logged and retried after a pause
/// so a full file table does not turn into a busy loop. Same policy as `axum::serve`.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
