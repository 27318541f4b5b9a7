//! The HTTP side all tenants share: one `reqwest` client (one connection pool, one TLS
//! configuration) and the cap on requests in flight across tenants (`max_requests_in_flight`).
//!
//! Owns the slots: an API call or a result download holds one from just before it is sent
//! until its body has been read, so the answers being read and the connections open at once
//! are bounded however many tenants poll at the same moment. A slot is never held while
//! waiting for anything but that one exchange (not for a token, not for quota room), so a
//! slow tenant holds at most the one slot of its current request, for at most
//! `request_timeout`. Does not own what a request is (`mde::Client`), the quota (a call takes
//! its slot first and its quota unit second, so the send instant the quota records is the
//! real one), nor token requests, which are rare and take no slot.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Requests in flight across all tenants when the configuration does not say; the default
/// is the configuration's (it owns its defaults), named here too for the callers of [`Http::new`].
pub use crate::config::DEFAULT_MAX_REQUESTS_IN_FLIGHT;

/// The shared client and its slots. Cloning is cheap and shares both.
#[derive(Clone)]
pub struct Http {
    pub(crate) client: reqwest::Client,
    slots: Arc<Semaphore>,
    in_flight: Gauge,
    waited: Counter<f64>,
}

/// One request's right to be in flight; given back when dropped.
pub struct Slot {
    // `None` only if the semaphore were closed, which nothing does: the request then goes
    // ahead without a slot rather than failing.
    _permit: Option<OwnedSemaphorePermit>,
    in_flight: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl Http {
    /// `client` with at most `max_in_flight` requests in flight through this handle and its
    /// clones; the gauges and the wait counter are `metrics`' (`mde_exporter_requests_*`).
    pub fn new(client: reqwest::Client, max_in_flight: usize, metrics: &Metrics) -> Http {
        let max_in_flight = max_in_flight.max(1);
        metrics
            .requests_in_flight_limit
            .set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
        Http {
            client,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            in_flight: metrics.requests_in_flight.clone(),
            waited: metrics.request_slot_wait.clone(),
        }
    }

    /// Wait for a free slot (first come, first served) and take it.
    pub async fn slot(&self) -> Slot {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let started = Instant::now();
                let p = self.slots.clone().acquire_owned().await.ok();
                self.waited.inc_by(started.elapsed().as_secs_f64());
                p
            }
        };
        self.in_flight.inc();
        Slot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        }
    }

    /// Slots free now (for tests).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn slots_are_first_come_first_served_and_counted() {
        let metrics = Metrics::new();
        let http = Http::new(reqwest::Client::new(), 2, &metrics);
        assert_eq!(metrics.requests_in_flight_limit.get(), 2);
        let a = http.slot().await;
        let _b = http.slot().await;
        assert_eq!(metrics.requests_in_flight.get(), 2);
        assert_eq!(http.available(), 0);
        // A third request waits until one of the two is done, and the wait is counted.
        let h = http.clone();
        let third = tokio::spawn(async move {
            let s = h.slot().await;
            drop(s);
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!third.is_finished());
        drop(a);
        third.await.unwrap();
        assert_eq!(metrics.requests_in_flight.get(), 1);
        assert!(
            (metrics.request_slot_wait.get() - 3.0).abs() < 0.01,
            "{}",
            metrics.request_slot_wait.get()
        );
    }

    #[test]
    fn a_zero_limit_means_one() {
        let metrics = Metrics::new();
        let http = Http::new(reqwest::Client::new(), 0, &metrics);
        assert_eq!(http.available(), 1);
        assert_eq!(metrics.requests_in_flight_limit.get(), 1);
    }
}
