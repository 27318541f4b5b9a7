//! The numbers [`serve_with`](super::serve_with) works with: [`ServeOptions`] (every limit and
//! timeout, with defaults meant for an exporter) and [`ServeStats`] (what the limits did).
//!
//! Owns those types and their defaults. Does not own applying them (see the parent module,
//! `conn`, `accept`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How [`serve_with`](super::serve_with) treats connections and requests; [`Default`] is what [`serve`](super::serve()) uses.
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

/// What the connection limits and timeouts did, counted since [`serve_with`](super::serve_with) started. All
/// counters only go up, except [`open_connections`](ServeStats::open_connections).
#[derive(Debug, Default)]
pub struct ServeStats {
    pub(super) open: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) timed_out: AtomicU64,
    /// Shared with the guard, which does the counting.
    pub(super) auth_overloaded: Arc<AtomicU64>,
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

/// Log lines about rejected connections and accept errors come at most this often.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) tls_handshake: Duration,
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}
