//! The HTTP side all tenants share: one `reqwest` client (one connection pool, one TLS
//! configuration, one policy) and the cap on requests in flight across tenants
//! (`max_requests_in_flight`).
//!
//! Owns the client's policy: same-origin redirects only, never a Referer, the proxy of the
//! configuration (never read from the environment by the client itself), the instance
//! metadata address never proxied, the idle pool sized to the cap. Owns the slots: an API
//! call or a result download holds one from just before it is sent until its body has been
//! read, so the answers being read and the connections open at once are bounded however many
//! tenants poll at the same moment. A slot is never held while waiting for anything but that
//! one exchange (not for a token, not for quota room), so a slow tenant holds at most the one
//! slot of its current request, for at most `request_timeout`. Does not own what a request
//! is (`api::Client`), the quota (a call takes its slot first and its quota unit second, so
//! the send instant the quota records is the real one), nor token requests, which are rare
//! and take no slot.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::metrics::api::RequestSlots;

/// Requests in flight across all tenants when the configuration does not say; the default
/// is the configuration's (it owns its defaults), named here too for the callers of [`Http::new`].
pub use crate::config::DEFAULT_MAX_REQUESTS_IN_FLIGHT;

/// The client could not be built (a proxy URL reqwest refuses, no TLS backend).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

/// The one HTTP client all tenants share, without a proxy.
pub fn client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    client_with_proxy(timeout, None)
}

/// The one HTTP client of token, API and result-download requests. The proxy is the
/// configuration's (`proxy_url`, else `HTTPS_PROXY`, with `NO_PROXY`), resolved at load; the
/// client never reads proxy variables itself, so what a test or a reload configures is what
/// is used. The instance metadata address never goes through a proxy (Azure IMDS refuses
/// proxied requests).
pub fn client_with_proxy(
    timeout: Duration,
    proxy: Option<&ProxyConfig>,
) -> Result<reqwest::Client, BuildError> {
    client_with_pool(timeout, proxy, DEFAULT_MAX_REQUESTS_IN_FLIGHT)
}

/// As [`client_with_proxy`], keeping at most `idle_per_host` idle connections per host.
/// Every tenant talks to the same few hosts (its cloud's API and login hosts, and the blob
/// storage) through this one client, and at most `max_requests_in_flight` requests are in
/// flight at once (see [`Http`]), so that many connections per host are all it can use: a
/// smaller idle pool would close and reopen connections (a TLS handshake each) whenever more
/// are busy, a larger one could never fill. See: #11
pub fn client_with_pool(
    timeout: Duration,
    proxy: Option<&ProxyConfig>,
    idle_per_host: usize,
) -> Result<reqwest::Client, BuildError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!(
            "mde-liveresponse-exporter/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        // Same-origin redirects only, and never a Referer: reqwest sets one by default, and
        // it would carry a SAS link's signature to wherever the link redirects.
        .redirect(redirect_policy())
        .referer(false)
        .pool_max_idle_per_host(idle_per_host)
        .no_proxy();
    if let Some(p) = proxy {
        let mut exceptions = "169.254.169.254".to_string();
        if let Some(more) = &p.no_proxy {
            exceptions.push(',');
            exceptions.push_str(more);
        }
        let proxy = reqwest::Proxy::all(p.url.as_str())
            .map_err(|e| BuildError(format!("proxy: {e}")))?
            .no_proxy(reqwest::NoProxy::from_string(&exceptions));
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|e| BuildError(e.to_string()))
}

/// The redirect policy of every client: follow only to the same origin (scheme, host and
/// port), at most 5 times. A redirect elsewhere is answered to the caller as the 3xx it is,
/// which refuses it: an API answer from a foreign host is never trusted, and a SAS link's
/// signature or a bearer token never travels to another host.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= 5 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The host of a `Location` header, for messages (never its query: it may hold a signature).
pub(crate) fn location_host(location: &Option<reqwest::header::HeaderValue>) -> String {
    location
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Url::parse(v).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "not an absolute URL".into())
}

/// An error and its sources on one line ("error sending request: connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("body larger than the limit")]
    TooLarge,
    #[error("{0}")]
    Io(String),
}

impl ReadError {
    /// The `error.type` of an exchange whose body failed so (as `Error::kind` names it).
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            ReadError::TooLarge => "too_large",
            ReadError::Io(_) => "io",
        }
    }
}

/// Read a body, stopping as soon as it passes `max` bytes: memory stays bounded.
pub(crate) async fn read_capped(resp: reqwest::Response, max: u64) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(ReadError::TooLarge);
    }
    // Room for the announced length (at most the cap) at once: growing by doubling would
    // hold up to twice the body while copying.
    let announced = resp.content_length().unwrap_or(0).min(max);
    let mut buf = BytesMut::with_capacity(usize::try_from(announced).unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Io(error_chain(&e.without_url())))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The shared client and its slots. Cloning is cheap and shares both.
#[derive(Clone)]
pub struct Http {
    pub(crate) client: reqwest::Client,
    slots: Arc<Semaphore>,
    metrics: RequestSlots,
}

/// One request's right to be in flight; given back when dropped.
pub struct Slot {
    // `None` only if the semaphore were closed, which nothing does: the request then goes
    // ahead without a slot rather than failing.
    _permit: Option<OwnedSemaphorePermit>,
    metrics: RequestSlots,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.given_back();
    }
}

impl Http {
    /// `client` with at most `max_in_flight` requests in flight through this handle and its
    /// clones; the gauges and the wait counter are `metrics`' (`mde_exporter_requests_*`).
    pub fn new(client: reqwest::Client, max_in_flight: usize, metrics: &Metrics) -> Http {
        let max_in_flight = max_in_flight.max(1);
        Http {
            client,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            metrics: metrics.api.request_slots(max_in_flight),
        }
    }

    /// Wait for a free slot (first come, first served) and take it.
    pub async fn slot(&self) -> Slot {
        let (permit, waited) = match self.slots.clone().try_acquire_owned() {
            Ok(p) => (Some(p), Duration::ZERO),
            Err(_) => {
                let started = Instant::now();
                let p = self.slots.clone().acquire_owned().await.ok();
                (p, started.elapsed())
            }
        };
        self.metrics.taken(waited);
        Slot {
            _permit: permit,
            metrics: self.metrics.clone(),
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
        assert_eq!(metrics.api.request_slots_now().1, 2);
        let a = http.slot().await;
        let _b = http.slot().await;
        assert_eq!(metrics.api.request_slots_now().0, 2);
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
        assert_eq!(metrics.api.request_slots_now().0, 1);
        assert!(
            (metrics.api.request_slots_now().2 - 3.0).abs() < 0.01,
            "{}",
            metrics.api.request_slots_now().2
        );
    }

    #[test]
    fn a_zero_limit_means_one() {
        let metrics = Metrics::new();
        let http = Http::new(reqwest::Client::new(), 0, &metrics);
        assert_eq!(http.available(), 1);
        assert_eq!(metrics.api.request_slots_now().1, 1);
    }
}
