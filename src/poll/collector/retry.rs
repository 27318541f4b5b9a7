//! The retry policy of a result whose fetch failed: how many tries each kind of failure gets,
//! and how long to wait before the next one.
//!
//! Owns these decisions as pure functions of the error kind, the count of tries, the result's
//! age and the intervals. Does not own the tries themselves nor the pending queue (`results`).

use std::time::Duration;

use crate::api::{self, ErrorKind};

/// Longest wait between two tries of a result that fails transiently.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How many tries a result gets for a kind of permanent failure before it is given up.
/// Transient failures (5xx, timeouts, transport and token errors) have no count: they are
/// retried until the result leaves the in-flight horizon (see [`retry_decision`]).
pub(super) fn attempts_allowed(e: &api::Error) -> u32 {
    tries_for(e.kind(), e.is_transient())
}

/// [`attempts_allowed`] for an error of this kind, transient or not.
fn tries_for(kind: ErrorKind, transient: bool) -> u32 {
    match kind {
        // The cap will not change; a link to a foreign host will not become trustworthy.
        ErrorKind::TooLarge | ErrorKind::UntrustedLink => 1,
        // Usually permanent, but a damaged download, a result not yet visible to the API or
        // a link refused twice can heal: one more try, then give up.
        ErrorKind::Malformed
        | ErrorKind::NotFound
        | ErrorKind::Forbidden
        | ErrorKind::ExpiredLink => 2,
        _ if transient => u32::MAX,
        _ => 1,
    }
}

/// The wait before the next try of a result that failed `attempts` times in a row: one poll
/// interval, doubling with each failure, at most `MAX_RETRY_DELAY` (but never less than one
/// poll). A five-minute outage thus costs a handful of tries per result, not one per poll.
pub fn retry_delay(attempts: u32, poll_interval: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    poll_interval
        .saturating_mul(1u32 << doublings)
        .min(MAX_RETRY_DELAY.max(poll_interval))
}

/// What to do with a result whose fetch just failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// Try again, not before this long from now.
    After(Duration),
    /// Give it up (and count it by its reason).
    GiveUp,
}

/// Pure retry policy. Permanent answers give a result up after `attempts_allowed` tries;
/// transient ones are retried with backoff for as long as the result is within the in-flight
/// horizon (`age`: time since its command ended).
pub fn retry_decision(
    kind_limit: u32,
    transient: bool,
    attempts: u32,
    age: Duration,
    horizon: Duration,
    poll_interval: Duration,
) -> Retry {
    let exhausted = if transient {
        age >= horizon
    } else {
        attempts >= kind_limit
    };
    if exhausted {
        Retry::GiveUp
    } else {
        Retry::After(retry_delay(attempts, poll_interval))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// See: #13. A transient failure is retried with a doubling, capped backoff for as long
    /// as the result is inside the in-flight horizon; five minutes of outage no longer give a
    /// result up. Permanent answers give up after their tries.
    #[test]
    fn transient_failures_back_off_until_the_horizon() {
        let poll = Duration::from_secs(60);
        let week = Duration::from_secs(7 * 86400);
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n, poll).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(retry_delay(u32::MAX, poll), Duration::from_secs(3600));
        // A poll interval above the cap: never retried faster than polls come.
        assert_eq!(
            retry_delay(3, Duration::from_secs(7200)),
            Duration::from_secs(7200)
        );
        // Fifty failures in a row, a day after the command ended: still retried.
        let minute = Duration::from_secs(60);
        assert_eq!(
            retry_decision(u32::MAX, true, 50, Duration::from_secs(86400), week, minute),
            Retry::After(Duration::from_secs(3600))
        );
        assert_eq!(
            retry_decision(u32::MAX, true, 5, Duration::from_secs(300), week, minute),
            Retry::After(Duration::from_secs(960))
        );
        // Past the horizon: given up.
        assert_eq!(
            retry_decision(u32::MAX, true, 3, week, week, minute),
            Retry::GiveUp
        );
        // Permanent answers: their own count, whatever the age.
        assert_eq!(
            retry_decision(2, false, 1, Duration::ZERO, week, minute),
            Retry::After(minute)
        );
        assert_eq!(
            retry_decision(2, false, 2, Duration::ZERO, week, minute),
            Retry::GiveUp
        );
        assert_eq!(
            retry_decision(1, false, 1, Duration::ZERO, week, minute),
            Retry::GiveUp
        );
    }

    #[test]
    fn each_kind_of_failure_gets_its_tries() {
        assert_eq!(tries_for(ErrorKind::TooLarge, false), 1);
        assert_eq!(tries_for(ErrorKind::UntrustedLink, false), 1);
        for k in [
            ErrorKind::Malformed,
            ErrorKind::NotFound,
            ErrorKind::Forbidden,
            ErrorKind::ExpiredLink,
        ] {
            assert_eq!(tries_for(k, false), 2, "{k:?}");
        }
        assert_eq!(tries_for(ErrorKind::Timeout, true), u32::MAX);
        assert_eq!(tries_for(ErrorKind::HttpError, true), u32::MAX);
        assert_eq!(tries_for(ErrorKind::HttpError, false), 1);
    }
}
