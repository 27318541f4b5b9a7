//! One connection's bookkeeping: the cap on open and pending connections (and evicting the
//! oldest idle pending one), the connection's deadline, its requests in flight, and the byte
//! stream wrapper that notes when request bytes arrive.
//!
//! Owns those rules. Does not own the accept loop or the HTTP state machine (the parent module)
//! nor the numbers (`options`).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::options::{ServeStats, Timeouts};

/// Counts open connections and keeps the pending ones in age order, for [`Tracker::admit`].
pub(super) struct Tracker {
    pub(super) max_connections: usize,
    pub(super) max_pending: usize,
    pub(super) state: Mutex<TrackerState>,
    pub(super) stats: Arc<ServeStats>,
}

#[derive(Default)]
pub(super) struct TrackerState {
    pub(super) open: usize,
    pub(super) next_id: u64,
    /// Connections not yet established, by id, so oldest first.
    pub(super) pending: BTreeMap<u64, Arc<Conn>>,
}

impl Tracker {
    pub(super) fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // The counts stay consistent under a panic elsewhere: each update is one statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: `None` if it must be closed at once. When every slot or
    /// every pending slot is taken, evicts the oldest idle pending connection to make room (see
    /// the module docs).
    pub(super) fn admit(self: &Arc<Tracker>) -> Option<Admission> {
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
    pub(super) fn evict_one(&self, state: &mut TrackerState) -> bool {
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
pub(super) struct Admission {
    pub(super) conn: Arc<Conn>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.conn.tracker.lock();
        state.pending.remove(&self.conn.id);
        self.conn.release(&mut state);
    }
}

/// One connection's state, shared by its task, its I/O wrapper and the requests on it.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) tracker: Arc<Tracker>,
    /// A request has gone through the guard: no longer pending, gets `idle_timeout`.
    pub(super) established: AtomicBool,
    /// Closed by [`Tracker::evict_one`] to make room.
    pub(super) evicted: AtomicBool,
    /// No longer counted as open (evicted, or ended); set under the tracker's lock.
    pub(super) released: AtomicBool,
    /// Requests whose response body hyper has not finished with.
    pub(super) in_flight: AtomicUsize,
    pub(super) clock: Mutex<Clock>,
    /// Wakes the connection task when its deadline may have moved or it was evicted.
    pub(super) changed: Notify,
}

/// What the deadline is computed from.
pub(super) struct Clock {
    /// When the connection last had nothing to do: ready for HTTP, or a response finished.
    pub(super) idle_since: Instant,
    /// The first byte read since `idle_since`: a request head has started arriving.
    pub(super) first_byte: Option<Instant>,
}

impl Conn {
    pub(super) fn stats(&self) -> &ServeStats {
        &self.tracker.stats
    }

    /// Stop counting this connection as open, once. Takes the tracker's state to show the
    /// caller holds its lock.
    pub(super) fn release(&self, state: &mut TrackerState) {
        if !self.released.swap(true, Ordering::Relaxed) {
            state.open = state.open.saturating_sub(1);
            self.tracker.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready for HTTP (accepted, or TLS done): the request-head clock starts now.
    pub(super) fn ready(&self) {
        let mut clock = self.clock();
        clock.idle_since = Instant::now();
        clock.first_byte = None;
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in
    /// flight.
    pub(super) fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
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

    pub(super) fn bytes_read(&self) {
        let mut clock = self.clock();
        if clock.first_byte.is_none() {
            clock.first_byte = Some(Instant::now());
            drop(clock);
            self.changed.notify_one();
        }
    }

    /// A request went through the guard (or there is no basic auth): leave the pending set.
    pub(super) fn establish(&self) {
        if !self.established.swap(true, Ordering::Relaxed) {
            self.tracker.lock().pending.remove(&self.id);
        }
    }

    pub(super) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Resolves once the connection has been evicted.
    pub(super) async fn evicted(&self) {
        while !self.is_evicted() {
            self.changed.notified().await;
        }
    }
}

/// A request in flight on a connection, from its head being read to its response body being
/// done (or dropped): no timeout applies meanwhile.
pub(super) struct InFlight {
    pub(super) conn: Arc<Conn>,
}

impl InFlight {
    pub(super) fn start(conn: Arc<Conn>) -> InFlight {
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
pub(super) struct TrackedBody {
    pub(super) inner: Body,
    pub(super) _in_flight: InFlight,
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
pub(super) struct Watched<S> {
    pub(super) inner: S,
    pub(super) conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, conn: Arc<Conn>) -> Watched<S> {
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
