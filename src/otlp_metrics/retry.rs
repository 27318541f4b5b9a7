//! When a refused OTLP metrics request is sent again: the OTLP specification's rules (HTTP 429,
//! 502, 503, 504 and no answer at all; gRPC `UNAVAILABLE` and the other transient codes) with
//! an exponential backoff with jitter (backon's, as the API quota uses), the receiver's
//! `Retry-After` honoured, and never past the export's deadline (its timeout, and never past
//! the next interval: the next export sends the current values anyway). See: #32
//!
//! Owns that decision, a pure function of the failure and the time. Does not own sending
//! (`send`, which classifies each failure) nor the loop that waits and sends again (`mod`).

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// The first wait before sending again (the SDKs' recommended policy starts at 100 ms).
pub const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait the backoff grows to (a `Retry-After` may ask for longer, within the
/// deadline).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Refused for good (a 4xx other than 429, a 500, a gRPC `INVALID_ARGUMENT`...): sending
    /// the same data again would be refused again.
    No,
    /// Transient: after the receiver's `Retry-After` if it gave one, else after the backoff.
    After(Option<Duration>),
}

/// The waits of one request's retries: exponential from [`FIRST_WAIT`] to [`MAX_WAIT`], with
/// jitter, as many as the deadline allows.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_WAIT)
        .with_max_delay(MAX_WAIT)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The wait before sending again, or `None`: the failure is not transient, or the wait would
/// end at or past `deadline` (then the export fails with the latest error).
pub fn next_wait(
    retry: Retry,
    backoff: &mut impl Iterator<Item = Duration>,
    now: Instant,
    deadline: Instant,
) -> Option<Duration> {
    let Retry::After(after) = retry else {
        return None;
    };
    let wait = match after {
        Some(after) => after,
        None => backoff.next()?,
    };
    (now + wait < deadline).then_some(wait)
}

/// A `Retry-After` value: seconds, or an HTTP date (a date past is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_wait_longer_each_time_until_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(2);
        let mut b = backoff();
        let mut waits = Vec::new();
        while let Some(w) = next_wait(Retry::After(None), &mut b, Instant::now(), deadline) {
            waits.push(w);
            tokio::time::advance(w).await;
        }
        // 100 ms, 200 ms, 400 ms, 800 ms (each with up to its own length of jitter): the
        // deadline stops them, never a count.
        assert!((2..=4).contains(&waits.len()), "{waits:?}");
        assert!(waits[0] >= FIRST_WAIT, "{waits:?}");
        assert!(waits[1] >= 2 * FIRST_WAIT, "{waits:?}");
        assert!(Instant::now() < deadline);
        assert_eq!(Instant::now() - start, waits.iter().sum::<Duration>());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_the_deadline_and_permanent_failures_are_not_retried() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut b = backoff();
        assert_eq!(
            next_wait(
                Retry::After(Some(Duration::from_secs(3))),
                &mut b,
                now,
                deadline
            ),
            Some(Duration::from_secs(3))
        );
        // Asked to wait past the deadline: give up now rather than fail later.
        assert_eq!(
            next_wait(
                Retry::After(Some(Duration::from_secs(10))),
                &mut b,
                now,
                deadline
            ),
            None
        );
        assert_eq!(next_wait(Retry::No, &mut b, now, deadline), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
