//! The accept loop: TCP connections in, TLS terminated, HTTP/1.1 served to an axum [`Router`].
//!
//! Owns accepting (and what to do when accepting fails), the cap on open connections, the TLS
//! handshake, the timeouts of a connection, the HTTP/1 connection itself, the peer address
//! handed to handlers and graceful shutdown. Does not own what a request must carry (see
//! [`crate::guard`]) nor the TLS settings (see [`crate::tls`]).
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
//!   handler's business.
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
//!   happen; see `docs/deploy.md` for the limit itself.
//!
//! [`ServeStats`] counts what these rules did, for an exporter that wants to expose it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::WebConfig;
use crate::guard::{Admitted, GuardOptions, challenge, guard};

/// How [`serve_with`] treats connections and requests; [`Default`] is what [`serve`] uses.
///
/// Set the fields you care about on a default value (the struct is `#[non_exhaustive]` so new
/// settings can come without breaking callers):
///
/// ```
/// let mut options = exporter_web::ServeOptions::default();
/// options.realm = "my-exporter".to_string();
/// options.max_connections = 128;
/// let stats = options.stats.clone(); // read it while serving
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The realm of the `WWW-Authenticate: Basic realm="…"` challenge sent with a 401 (browsers
    /// show it in the login prompt). Default: `mde-liveresponse-exporter`, the exporter this
    /// crate was written for; another exporter should set its own name.
    pub realm: String,
    /// How long a TLS handshake may take. Default: 10 s.
    pub tls_handshake_timeout: Duration,
    /// How long a client has to send a complete request head: from when the connection is
    /// ready (accepted, or its TLS handshake done) for the first request, from its first byte
    /// for later ones. Also bounds the idle time of a connection that is not yet established.
    /// Default: 10 s, plenty for a scraper, which sends its request as soon as it connects.
    pub header_read_timeout: Duration,
    /// How long an established connection may stay idle between requests. Default: 2 min,
    /// longer than common scrape intervals so a scraper can keep its connection (and its
    /// reserved slot) from one scrape to the next.
    pub idle_timeout: Duration,
    /// Most connections open at once; one accepted beyond this is closed at once. Default: 512,
    /// well under the common limit of 1,024 file descriptors, leaving room for the exporter's
    /// own outbound connections and files.
    pub max_connections: usize,
    /// Most connections that have not yet had a request through the guard. Default: 448, so 64
    /// slots stay reserved for established clients. Clamped to `max_connections`.
    pub max_pending_connections: usize,
    /// Most bcrypt verifications running at once. Default: the number of CPUs the process may
    /// use, so bad passwords cannot take more than the machine's share of bcrypt work, and the
    /// async workers never run it (it runs on the blocking pool).
    pub max_concurrent_auth_checks: usize,
    /// Most requests with unknown credentials waiting for a bcrypt slot; a request beyond that
    /// is answered 429 at once, without checking its password. Credentials that verified
    /// recently skip the queue. Default: 32.
    pub max_queued_auth_checks: usize,
    /// Counters of what the limits did; clone the `Arc` before passing the options to read
    /// them while serving.
    pub stats: Arc<ServeStats>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            realm: "mde-liveresponse-exporter".to_string(),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 512,
            max_pending_connections: 448,
            max_concurrent_auth_checks: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            max_queued_auth_checks: 32,
            stats: Arc::default(),
        }
    }
}

/// What the connection limits and timeouts did, counted since [`serve_with`] started. All
/// counters only go up, except [`open_connections`](ServeStats::open_connections).
#[derive(Debug, Default)]
pub struct ServeStats {
    open: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    /// Shared with the guard, which does the counting.
    auth_overloaded: Arc<AtomicU64>,
}

impl ServeStats {
    /// Connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed as soon as they were accepted: no slot was free and no pending
    /// connection could make room (all established, or with a request in flight).
    pub fn rejected_connections(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Pending connections closed to make room for a new one.
    pub fn evicted_connections(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections closed by a timeout: TLS handshake, request head or idle.
    pub fn timed_out_connections(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Requests answered 429 because the queue of bcrypt checks was full.
    pub fn auth_overloaded_requests(&self) -> u64 {
        self.auth_overloaded.load(Ordering::Relaxed)
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
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            address = %addr,
            tls = acceptor.is_some(),
            basic_auth,
            web_config = ?web.as_ref().map(|w| w.path()),
            max_connections,
            max_pending_connections = max_pending,
            "listening"
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

/// Log lines about rejected connections and accept errors come at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

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

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    tls_handshake: Duration,
    header_read: Duration,
    idle: Duration,
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
                // The request counts as in flight until its body has been handed to hyper.
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
                    conn.stats().timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %peer, "closing a connection that sent no complete request in time");
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

// ---------------------------------------------------------------------------------------------
// Connection bookkeeping.

/// Counts open connections and keeps the pending ones in age order, for [`Tracker::admit`].
struct Tracker {
    max_connections: usize,
    max_pending: usize,
    state: Mutex<TrackerState>,
    stats: Arc<ServeStats>,
}

#[derive(Default)]
struct TrackerState {
    open: usize,
    next_id: u64,
    /// Connections not yet established, by id, so oldest first.
    pending: BTreeMap<u64, Arc<Conn>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // The counts stay consistent under a panic elsewhere: each update is one statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: `None` if it must be closed at once. When every slot or
    /// every pending slot is taken, evicts the oldest idle pending connection to make room (see
    /// the module docs).
    fn admit(self: &Arc<Tracker>) -> Option<Admission> {
        let mut state = self.lock();
        let full = state.open >= self.max_connections || state.pending.len() >= self.max_pending;
        // Evicting frees both a pending and an open slot.
        if full && !self.evict_one(&mut state) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        state.open += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let id = state.next_id;
        state.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            tracker: self.clone(),
            established: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            released: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            clock: Mutex::new(Clock {
                idle_since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
        });
        state.pending.insert(id, conn.clone());
        Some(Admission { conn })
    }

    /// Evict the oldest pending connection with no request in flight; false if there is none.
    fn evict_one(&self, state: &mut TrackerState) -> bool {
        let Some(id) = state
            .pending
            .values()
            .find(|c| c.in_flight.load(Ordering::Relaxed) == 0)
            .map(|c| c.id)
        else {
            return false;
        };
        if let Some(victim) = state.pending.remove(&id) {
            // Its slot passes to the new connection now rather than when its task gets round
            // to closing it, or a fast stream of new connections would find every slot held
            // by connections already on their way out.
            victim.release(state);
            victim.evicted.store(true, Ordering::Relaxed);
            victim.changed.notify_one();
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

/// A connection's hold on its slot; dropping it frees the slot.
struct Admission {
    conn: Arc<Conn>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.conn.tracker.lock();
        state.pending.remove(&self.conn.id);
        self.conn.release(&mut state);
    }
}

/// One connection's state, shared by its task, its I/O wrapper and the requests on it.
struct Conn {
    id: u64,
    tracker: Arc<Tracker>,
    /// A request has gone through the guard: no longer pending, gets `idle_timeout`.
    established: AtomicBool,
    /// Closed by [`Tracker::evict_one`] to make room.
    evicted: AtomicBool,
    /// No longer counted as open (evicted, or ended); set under the tracker's lock.
    released: AtomicBool,
    /// Requests whose response body hyper has not finished with.
    in_flight: AtomicUsize,
    clock: Mutex<Clock>,
    /// Wakes the connection task when its deadline may have moved or it was evicted.
    changed: Notify,
}

/// What the deadline is computed from.
struct Clock {
    /// When the connection last had nothing to do: ready for HTTP, or a response finished.
    idle_since: Instant,
    /// The first byte read since `idle_since`: a request head has started arriving.
    first_byte: Option<Instant>,
}

impl Conn {
    fn stats(&self) -> &ServeStats {
        &self.tracker.stats
    }

    /// Stop counting this connection as open, once. Takes the tracker's state to show the
    /// caller holds its lock.
    fn release(&self, state: &mut TrackerState) {
        if !self.released.swap(true, Ordering::Relaxed) {
            state.open = state.open.saturating_sub(1);
            self.tracker.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready for HTTP (accepted, or TLS done): the request-head clock starts now.
    fn ready(&self) {
        let mut clock = self.clock();
        clock.idle_since = Instant::now();
        clock.first_byte = None;
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in
    /// flight.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let clock = self.clock();
        Some(match clock.first_byte {
            Some(first) => first + timeouts.header_read,
            None if self.established.load(Ordering::Relaxed) => clock.idle_since + timeouts.idle,
            None => clock.idle_since + timeouts.header_read,
        })
    }

    fn bytes_read(&self) {
        let mut clock = self.clock();
        if clock.first_byte.is_none() {
            clock.first_byte = Some(Instant::now());
            drop(clock);
            self.changed.notify_one();
        }
    }

    /// A request went through the guard (or there is no basic auth): leave the pending set.
    fn establish(&self) {
        if !self.established.swap(true, Ordering::Relaxed) {
            self.tracker.lock().pending.remove(&self.id);
        }
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Resolves once the connection has been evicted.
    async fn evicted(&self) {
        while !self.is_evicted() {
            self.changed.notified().await;
        }
    }
}

/// A request in flight on a connection, from its head being read to its response body being
/// done (or dropped): no timeout applies meanwhile.
struct InFlight {
    conn: Arc<Conn>,
}

impl InFlight {
    fn start(conn: Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.changed.notify_one();
        InFlight { conn }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut clock = self.conn.clock();
            clock.idle_since = Instant::now();
            clock.first_byte = None;
        }
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.conn.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's byte stream (below HTTP, above TLS), noting when request bytes arrive.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    fn new(inner: S, conn: Arc<Conn>) -> Watched<S> {
        Watched { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// ---------------------------------------------------------------------------------------------
// Accept errors.

/// What to do when `accept` fails. Per-connection errors (the client gave up before we
/// accepted) are ignored; anything else (typically EMFILE or ENFILE) is retried after a pause
/// that doubles from 10 ms to 1 s while failures continue, as Go's `net/http` does, so a full
/// file table does not turn into a busy loop, and is logged at most every [`LOG_EVERY`].
#[derive(Default)]
struct AcceptBackoff {
    /// The next pause; zero when the last accept succeeded.
    delay: Duration,
    /// Failures since the last log line.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    async fn failed(&mut self, e: io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::error!(
                error = %e,
                failures = self.unlogged,
                retry_in = ?self.delay,
                "accept failed"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        }
        tokio::time::sleep(self.delay).await;
    }
}
