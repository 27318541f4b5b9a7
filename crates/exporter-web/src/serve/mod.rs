//! The accept loop: TCP connections in, TLS terminated, HTTP/1.1 served to an axum [`Router`].
//!
//! Owns accepting (and what to do when accepting fails), the cap on open connections, the TLS
//! handshake, the timeouts of a connection, the HTTP/1 connection itself, the peer address
//! handed to handlers and graceful shutdown. Does not own what a request must carry (see
//! [`crate::guard`]) nor the TLS settings (see [`crate::tls`]).
//!
//! - `options`: [`ServeOptions`] and [`ServeStats`].
//! - `conn`: the connection cap, eviction, deadlines and requests in flight.
//! - `accept`: backing off when `accept` fails.
//!
//! # Slow and idle clients
//!
//! A connection costs a file descriptor, and the process has a fixed number of them (often
//! 1,024). Clients that connect and then send nothing, or send a request head a byte at a time,
//! must not be able to use them all, or scrapes fail with "accept failed: Too many open files".
//! So, with every number a [`ServeOptions`] field:
//!
//! - **Timeouts.** The TLS handshake must finish within `tls_handshake_timeout`. Then a request
//!   head must be complete within `header_read_timeout` of the connection being ready (this
//!   covers a client that never sends a byte, which hyper's own header timeout does not when
//!   hyper-util's `auto` builder first reads to sniff for HTTP/2: only HTTP/1.1 is served, so
//!   hyper's `http1` connection is used directly and the timing is done here), or of the first
//!   byte of a later request. Between requests a connection may stay open `idle_timeout`, but
//!   only once it is *established* (below); until then its idle time is bounded by
//!   `header_read_timeout` too. There is no limit while a request is being handled: that is the
//!   handler's business. Once the handler has answered, the response must be written within
//!   `send_timeout`; a client that does not read it has its connection closed and the response
//!   dropped, so it cannot hold the response's memory for long (see: #24).
//! - **A cap with a reserve.** At most `max_connections` are open at once. Of those, at most
//!   `max_pending_connections` may be *pending*: not yet established, where established means a
//!   request went through the guard (authenticated, when basic auth is on; any request, when it
//!   is off). So the last `max_connections - max_pending_connections` slots are only ever held
//!   by clients that proved themselves, such as a Prometheus that keeps its connection alive
//!   between scrapes. When a new connection finds no slot (or no pending slot) free, it takes
//!   the place of the oldest pending connection that has no request in flight, which is closed.
//!   So a scraper that connects afresh is served even while idle clients hold every pending
//!   slot: to push it out they would have to open `max_pending_connections` connections in the
//!   moment between its connect and its request. When there is no such connection to close
//!   (all established, or busy), the new one is closed at once rather than left in the listen
//!   backlog, where it would only time out.
//! - **Accept errors** such as EMFILE back off (from 10 ms up to 1 s) instead of spinning, and
//!   are logged at most every 10 s. With the cap below the descriptor limit they should not
//!   happen; see `docs/security-hardening.md` for the limit itself.
//!
//! [`ServeStats`] counts what these rules did, for an exporter that wants to expose it.

mod accept;
mod conn;
mod options;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::WebConfig;
use crate::guard::{Admitted, GuardOptions, challenge, guard};

use accept::AcceptBackoff;
use conn::{Admission, Conn, InFlight, TrackedBody, Tracker, TrackerState, Watched};
use options::{LOG_EVERY, Timeouts};
pub use options::{ServeOptions, ServeStats};

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
/// server. Connections are limited and timed out as the [module docs](self) describe.
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
        max_concurrent_checks: options.max_concurrent_auth_checks.max(1),
        max_queued_checks: options.max_queued_auth_checks,
        max_checks_per_peer: options.max_auth_checks_per_peer.max(1),
        overloaded: options.stats.auth_overloaded.clone(),
    };
    let basic_auth = web.as_ref().is_some_and(|w| w.basic_auth_enabled());
    let (router, acceptor) = match &web {
        Some(web) => (
            guard(router, web, &guard_options),
            web.tls.clone().map(TlsAcceptor::from),
        ),
        None => (router, None),
    };
    let max_connections = options.max_connections.max(1);
    let max_pending = options.max_pending_connections.clamp(1, max_connections);
    // The caller logs the one "listening" line (it knows what it serves); this is the
    // detail behind it, for debugging. See: #24 (item 10)
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(
            address = %addr,
            tls = acceptor.is_some(),
            basic_auth,
            web_config = ?web.as_ref().map(|w| w.path()),
            max_connections,
            max_pending_connections = max_pending,
            "serving"
        );
    }
    let mut builder = http1::Builder::new();
    // The request-head and idle timeouts are enforced by `run_connection`, which can tell them
    // apart; hyper's own header timer restarts as soon as a response is written, so it would
    // cut every keep-alive connection at the header timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        builder,
        acceptor,
        router,
        basic_auth,
        timeouts: Timeouts {
            tls_handshake: options.tls_handshake_timeout,
            header_read: options.header_read_timeout,
            idle: options.idle_timeout,
            send: web
                .as_ref()
                .and_then(|w| w.send_timeout)
                .unwrap_or(options.send_timeout),
        },
    });
    let tracker = Arc::new(Tracker {
        max_connections,
        max_pending,
        state: Mutex::new(TrackerState::default()),
        stats: options.stats.clone(),
    });
    // Tells connections to finish their request and close.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone; `recv` returns `None` once all of them have ended.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_failures = AcceptBackoff::default();
    let mut last_reject_log: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    accept_failures.succeeded();
                    conn
                }
                Err(e) => {
                    accept_failures.failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admission) = tracker.admit() else {
            // Closing it now tells the client at once, and frees the descriptor; leaving it in
            // the backlog would only make it time out.
            drop(stream);
            let now = Instant::now();
            if last_reject_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                last_reject_log = Some(now);
                tracing::warn!(
                    peer = %peer,
                    max_connections,
                    max_pending_connections = max_pending,
                    rejected_total = tracker.stats.rejected_connections(),
                    "connection limit reached; closing new connections"
                );
            }
            continue;
        };
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            run_connection(shared, admission, stream, peer, stop).await;
            drop(done);
        });
    }
    // Dropping the listener closes the socket so new clients are refused, not left queued.
    drop(listener);
    tracing::info!(
        connections = tracker.stats.open_connections(),
        "shutting down HTTP server; waiting for in-flight requests"
    );
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

/// What every connection task needs, built once.
struct Shared {
    builder: http1::Builder,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    /// Whether requests are established by the guard (after authenticating) rather than on
    /// arrival.
    basic_auth: bool,
    timeouts: Timeouts,
}

/// Serve one connection until it ends, times out, is evicted or the server stops.
async fn run_connection(
    shared: Arc<Shared>,
    admission: Admission,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let conn = admission.conn.clone();
    let timeouts = shared.timeouts;
    match &shared.acceptor {
        None => {
            conn.ready();
            serve_http(
                &shared,
                &conn,
                Watched::new(stream, conn.clone()),
                peer,
                stop,
            )
            .await;
        }
        Some(acceptor) => {
            // The handshake runs here, not in the accept loop, so a slow client cannot hold up
            // others. It is pending, so it can be evicted like an idle connection.
            let handshake = tokio::time::timeout(timeouts.tls_handshake, acceptor.accept(stream));
            let tls = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        conn.stats().timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = conn.evicted() => {
                    tracing::debug!(peer = %peer, "closed a connection still in its TLS handshake to make room");
                    return;
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            conn.ready();
            serve_http(&shared, &conn, Watched::new(tls, conn.clone()), peer, stop).await;
        }
    }
    drop(admission);
}

/// The HTTP part of a connection: hyper's HTTP/1 state machine raced against the connection's
/// deadline, eviction and shutdown.
async fn serve_http<S>(
    shared: &Shared,
    conn: &Arc<Conn>,
    io: Watched<S>,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = TowerToHyperService::new(shared.router.clone());
    let basic_auth = shared.basic_auth;
    // Given to the guard through the request, so it can establish the connection once a
    // request authenticates.
    let admitted = {
        let conn = conn.clone();
        Admitted::new(move || conn.establish())
    };
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(conn.clone());
            if !basic_auth {
                conn.establish();
            }
            // The peer address as `ConnectInfo`, so handlers and logs can see who is calling.
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(admitted.clone());
            let response = router.call(req);
            async move {
                let response = response.await?;
                // The request counts as in flight until its body has been handed to hyper, and
                // from now on that must happen within the send timeout.
                in_flight.sending();
                Ok::<_, Infallible>(response.map(|inner| TrackedBody {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let connection = shared
        .builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&shared.timeouts);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if conn.deadline(&shared.timeouts).is_some_and(|d| d <= Instant::now()) {
                    if conn.is_sending() {
                        conn.stats().timed_out_responses.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer, "dropping a response the client did not read in time");
                    } else {
                        conn.stats().timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer, "closing a connection that sent no complete request in time");
                    }
                    return;
                }
            }
            // Something moved the deadline (a byte arrived, a request started or ended), or the
            // connection was evicted; go round again to find out which.
            () = conn.changed.notified() => {
                if conn.is_evicted() {
                    tracing::debug!(peer = %peer, "closed a pending connection to make room");
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Finish the request in flight, if any, then close.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
