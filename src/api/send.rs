//! Sending one API request: a slot among the requests in flight, the quota check, the
//! bearer token, one token renewal on 401, `Retry-After` on 429, the answer's size cap, and
//! the per-call metrics, recorded whether the call succeeds or not.
//!
//! Owns the exchange of one quota'd, authenticated GET. Does not own which endpoint to call
//! (`mod`), result downloads (`download`), the exchange's span (`span`) nor the quota policy
//! (`quota`).

use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use super::http::{ReadError, error_chain, location_host, read_capped};
use super::model::{self, redact_url};
use super::span::{http_span, record_exchange};
use super::{Client, Error, QuotaWait, Slot};
use crate::quota::{Endpoint, Quota};

/// Largest API answer we read (a full `$top=10000` page is a few MiB).
const MAX_API_BODY: u64 = 64 * 1024 * 1024;
/// Longest `Retry-After` we accept; beyond it we assume a broken header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Client {
    /// Record the request metrics for one HTTP exchange and turn transport errors into ours.
    pub(super) fn observe(
        &self,
        ep: &'static str,
        started: Instant,
        sent: reqwest::Result<reqwest::Response>,
        shown: &str,
        span: &tracing::Span,
    ) -> Result<reqwest::Response, Error> {
        let (code, sent) = record_exchange(span, sent, ep, shown);
        let sent = sent.map_err(|e| transport(ep, shown, e));
        let exemplar = || {
            crate::telemetry::span_ids(span)
                .map(|(trace_id, _)| crate::metrics::TraceLabel { trace_id })
        };
        self.metrics
            .api
            .record_request(&self.tenant, ep, code, started.elapsed(), exemplar());
        sent
    }

    /// Count and, the first time, log what an answer says of its endpoint's end (#20).
    fn deprecation_notices(
        &self,
        ep: Endpoint,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        shown: &str,
    ) {
        for n in super::deprecation::notices(ep, status, headers) {
            if self.metrics.api.record_deprecation_notice(
                &self.tenant,
                ep.as_str(),
                n.reason,
                &n.detail,
            ) {
                tracing::warn!(
                    tenant = %self.tenant,
                    endpoint = ep.as_str(),
                    url = %shown,
                    reason = n.reason,
                    detail = %n.detail,
                    "the MDE API announces the end of an endpoint the exporter uses: check Microsoft's API changelog (counted in mde_api_endpoint_deprecation_notices_total; logged once per endpoint and reason)"
                );
            }
        }
    }

    pub(super) fn with_quota<R>(&self, f: impl FnOnce(&mut Quota) -> R) -> R {
        f(&mut self.quota.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A slot among the requests in flight, then room in the quota, in that order: the quota
    /// records the instant a call is sent, which must not be earlier than the real one, so the
    /// wait for a slot comes first. The slot is given back while the quota makes the call wait.
    pub(super) async fn slot_and_quota(
        &self,
        ep: Endpoint,
        wait: QuotaWait,
    ) -> Result<Slot, Error> {
        loop {
            let slot = self.http.slot().await;
            let now = Instant::now();
            let decision = self.with_quota(|q| q.try_acquire(ep, now));
            match (decision, wait) {
                (Ok(()), _) => return Ok(slot),
                (Err(w), QuotaWait::Until(deadline)) if now + w <= deadline => {
                    drop(slot);
                    tokio::time::sleep(w).await;
                }
                (Err(w), _) => {
                    return Err(Error::Quota {
                        endpoint: ep.as_str(),
                        wait: w,
                    });
                }
            }
        }
    }

    /// A quota'd, authenticated GET that returns the body of a 2xx answer.
    pub(super) async fn api_get(
        &self,
        ep: Endpoint,
        url: &Url,
        wait: QuotaWait,
        action: Option<(&str, Option<u32>)>,
    ) -> Result<Bytes, Error> {
        let shown = redact_url(url);
        let mut renewed = false;
        loop {
            // The token first: a token request takes no slot, and no slot waits for one.
            let token = self.auth.token().await?;
            let slot = self.slot_and_quota(ep, wait).await?;
            let span = http_span(
                "GET",
                ep.as_str(),
                url,
                &shown,
                &self.api_url_template(ep),
                action,
            );
            let started = Instant::now();
            let sent = self
                .http
                .client
                .get(url.clone())
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .instrument(span.clone())
                .await;
            let resp = self.observe(ep.as_str(), started, sent, &shown, &span)?;
            let status = resp.status();
            self.note_date(resp.headers());
            self.deprecation_notices(ep, status, resp.headers(), &shown);
            if status == StatusCode::UNAUTHORIZED && !renewed {
                // The token may have been revoked or expired early: renew once.
                self.auth.invalidate(&token).await;
                renewed = true;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                return Err(self.throttled(ep, retry_after));
            }
            self.with_quota(|q| q.succeeded(ep, Instant::now()));
            let location = resp.headers().get(reqwest::header::LOCATION).cloned();
            let body = read_capped(resp, MAX_API_BODY).await;
            drop(slot);
            let body = body.map_err(|e| {
                let e = match e {
                    ReadError::TooLarge => Error::TooLarge {
                        endpoint: ep.as_str(),
                        url: shown.clone(),
                        limit: MAX_API_BODY,
                    },
                    ReadError::Io(message) => Error::Transport {
                        endpoint: ep.as_str(),
                        url: shown.clone(),
                        message,
                        timeout: false,
                    },
                };
                body_failed(&span, &e);
                e
            })?;
            if status.is_redirection() {
                return Err(Error::Status {
                    endpoint: ep.as_str(),
                    url: shown,
                    status: status.as_u16(),
                    code: "redirect".into(),
                    message: format!(
                        "not followed: redirects to another host are refused (Location {})",
                        location_host(&location)
                    ),
                });
            }
            if !status.is_success() {
                let (code, message) = model::parse_api_error(&body)
                    .map(|e| (e.code, e.message))
                    .unwrap_or_else(|| (String::new(), String::new()));
                return Err(Error::Status {
                    endpoint: ep.as_str(),
                    url: shown,
                    status: status.as_u16(),
                    code,
                    message,
                });
            }
            return Ok(body);
        }
    }

    fn throttled(&self, ep: Endpoint, retry_after: Option<Duration>) -> Error {
        // The quota decides the wait (Retry-After, or a backoff without one) and lowers
        // the limit in force: a 429 means someone else spends the same quota.
        let header_given = retry_after.is_some();
        let retry_after = self.with_quota(|q| q.throttled(ep, Instant::now(), retry_after));
        self.metrics
            .api
            .record_throttled(&self.tenant, ep.as_str(), retry_after);
        tracing::warn!(tenant = %self.tenant, endpoint = ep.as_str(), wait_s = retry_after.as_secs_f64(), retry_after_header = header_given, "throttled by the MDE API");
        Error::Throttled {
            endpoint: ep.as_str(),
            retry_after,
        }
    }
}

/// An answer whose head was fine and whose body was not (cut off, or over the cap): the
/// exchange failed, so its span gets `error.type` (the error's kind: `io`, `timeout`,
/// `too_large`) and the error status. API calls and result downloads alike. See: #32
pub(super) fn body_failed(span: &tracing::Span, e: &Error) {
    span.record("error.type", e.kind().as_str());
    crate::telemetry::record_error(span, &e.to_string());
}

pub(super) fn transport(endpoint: &'static str, shown: &str, e: reqwest::Error) -> Error {
    Error::Transport {
        endpoint,
        url: shown.to_string(),
        timeout: e.is_timeout(),
        message: error_chain(&e.without_url()),
    }
}

/// `Retry-After` as seconds or an HTTP date; absurd values are ignored.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    (d <= MAX_RETRY_AFTER).then_some(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999", now), None);
    }
}
