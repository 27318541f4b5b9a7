//! Rendered bodies shared between concurrent scrapes (`/metrics` and `/probe`), and the cap on
//! the bytes unfinished responses hold: a client that never reads pins at most about
//! [`MAX_HELD_RESPONSE_BYTES`] plus one body, however many there are.
//!
//! Owns the newest render per format, when a scrape shares it, and counting what responses
//! still hold. Does not own encoding (`metrics`), negotiation and routes (`server`), nor what a
//! probe keeps of a body (`web::probe`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::{Format, Metrics};

/// Bytes the bodies of unfinished `/metrics` responses may hold before a new scrape shares the
/// newest body still held instead of rendering another. With the send timeout (30 s by
/// default, see `exporter_web`), this bounds the memory that clients which never read can pin:
/// about this plus one body. See: #24
pub const MAX_HELD_RESPONSE_BYTES: usize = 64 << 20;

/// The rendered `/metrics` bodies, one slot per format, so concurrent scrapes share one render.
/// See: #24
pub struct Renders {
    slots: [tokio::sync::Mutex<Option<Slot>>; 3],
    /// Bytes of the bodies some response still holds.
    held: Arc<AtomicUsize>,
    cap: usize,
    /// Renders done, for tests.
    count: AtomicUsize,
}

/// The newest render of one format.
struct Slot {
    done: Instant,
    /// How long it took: a scrape arriving within that long after `done` shares it.
    took: std::time::Duration,
    /// Alive while a response still sends it.
    body: Weak<Held>,
}

/// One rendered body; its bytes count as held until the last response sending it is dropped.
pub struct Held {
    pub chunks: Vec<Bytes>,
    pub len: usize,
    held: Arc<AtomicUsize>,
    /// The render this body was made from, kept alive while this body is (a probe's part of
    /// it), so probes arriving meanwhile share that render instead of making their own.
    _source: Option<Arc<Held>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl Renders {
    pub fn new(cap: usize) -> Renders {
        Renders {
            slots: [
                tokio::sync::Mutex::new(None),
                tokio::sync::Mutex::new(None),
                tokio::sync::Mutex::new(None),
            ],
            held: Arc::default(),
            cap,
            count: AtomicUsize::new(0),
        }
    }

    /// The body for a scrape arriving now: the newest render when it finished less than its
    /// own render time ago (the scrapes were concurrent; the server's one thread just could not
    /// start this one sooner) or when unfinished responses already hold `cap` bytes; otherwise
    /// a new render.
    pub async fn body(
        &self,
        metrics: &Metrics,
        format: Format,
    ) -> Result<Arc<Held>, std::fmt::Error> {
        let arrived = Instant::now();
        let mut slot = self.slots[format as usize].lock().await;
        if let Some(last) = slot.as_ref()
            && let Some(body) = last.body.upgrade()
            && (arrived <= last.done + last.took || self.held.load(Ordering::Relaxed) >= self.cap)
        {
            return Ok(body);
        }
        let start = Instant::now();
        let chunks = match format {
            Format::Text => metrics.encode_chunks(false)?,
            Format::OpenMetrics => metrics.encode_chunks(true)?,
            Format::Protobuf => vec![metrics.encode_protobuf()?],
        };
        let len = chunks.iter().map(Bytes::len).sum();
        self.held.fetch_add(len, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let body = Arc::new(Held {
            chunks,
            len,
            held: self.held.clone(),
            _source: None,
        });
        let done = Instant::now();
        *slot = Some(Slot {
            done,
            took: done - start,
            body: Arc::downgrade(&body),
        });
        Ok(body)
    }
}

impl Renders {
    /// Whether unfinished responses hold the cap: a new answer made from a render (a probe's)
    /// would only add to what readers that never read pin.
    pub fn full(&self) -> bool {
        self.held.load(Ordering::Relaxed) >= self.cap
    }

    /// Hold `chunks` (a body made from the render `source`, such as a probe's one tenant) as
    /// a response that counts against the cap and keeps its render alive for others to share.
    pub fn hold(&self, chunks: Vec<Bytes>, source: Arc<Held>) -> Arc<Held> {
        let len = chunks.iter().map(Bytes::len).sum();
        self.held.fetch_add(len, Ordering::Relaxed);
        Arc::new(Held {
            chunks,
            len,
            held: self.held.clone(),
            _source: Some(source),
        })
    }

    /// Bytes unfinished responses hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Renders done so far.
    pub fn renders(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Held {
    /// The body as a stream of its chunks, each sent as it is (shared `Bytes`, no copy), so
    /// the send timeout applies to a reader that stalls between them.
    pub fn into_body(self: Arc<Self>) -> axum::body::Body {
        let chunks = (0..self.chunks.len()).map(move |i| {
            Ok::<_, std::convert::Infallible>(self.chunks.get(i).cloned().unwrap_or_default())
        });
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// See: #24 (item 1). Scrapes arriving together share one render (the same bytes, not a
    /// copy each); a later one renders afresh.
    #[tokio::test(start_paused = true)]
    async fn concurrent_scrapes_share_one_render() {
        let metrics = Metrics::new();
        let renders = Renders::new(MAX_HELD_RESPONSE_BYTES);
        let a = renders.body(&metrics, Format::Text).await.unwrap();
        let b = renders.body(&metrics, Format::Text).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "rendered once for both");
        let om = renders.body(&metrics, Format::OpenMetrics).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &om), "each format has its own render");
        assert_eq!(renders.renders(), 2);
        assert_eq!(renders.held(), a.len + om.len);
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let c = renders.body(&metrics, Format::Text).await.unwrap();
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a scrape after the window renders afresh"
        );
        drop((a, b, c, om));
        assert_eq!(renders.held(), 0, "nothing held once sent");
    }

    /// See: #24 (item 1). Once unfinished responses hold the cap, a new scrape gets the newest
    /// body still held instead of a new one, so readers that never finish cannot make the
    /// process hold one body each.
    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_scrape_shares_the_newest_body() {
        let metrics = Metrics::new();
        let renders = Renders::new(1);
        let stalled = renders.body(&metrics, Format::Text).await.unwrap();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        let next = renders.body(&metrics, Format::Text).await.unwrap();
        assert!(Arc::ptr_eq(&stalled, &next));
        assert_eq!(renders.renders(), 1);
        drop((stalled, next));
        let fresh = renders.body(&metrics, Format::Text).await.unwrap();
        assert_eq!(renders.renders(), 2, "under the cap again: render");
        assert_eq!(renders.held(), fresh.len);
    }
}
