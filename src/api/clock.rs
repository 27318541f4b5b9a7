//! The API's clock, per tenant (#24 item 7): what time the MDE API says it is, read from the
//! `Date` header of its answers, and the rule that decides whether a time-based decision
//! (abandoning an in-flight action past `in_flight_horizon`, giving a result up past it,
//! expiring a per-machine series past `series_ttl` or a script-output set past its `ttl`)
//! may be taken now.
//!
//! Owns the reading (the latest `Date` and the monotonic instant it came at), the API time
//! derived from it, the skew (local minus API), and the verdict with its once-per-episode
//! warning. Does not own reading the header off an answer (`api`), the skew gauge (written
//! through `metrics`' recording method by `api` and `shared`), nor the decisions themselves
//! (`discovery`, `collector`, `series`, `script_metrics`).
//!
//! Why the monotonic clock: the API time at any moment is the latest `Date` plus the time
//! elapsed since on the monotonic clock, which a jump of the wall clock does not move. Local
//! time corrected by the last measured skew would not do: a wall clock that jumps between two
//! answers would carry the decision with it until the next answer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Whether a time-based decision may be taken, and by which time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The clocks agree within the bound: decide by the API's time.
    Act(DateTime<Utc>),
    /// No answer with a `Date` header yet: nothing to check the local clock against.
    NoApiTime,
    /// The local clock is `skew` (local minus API) from the API's, beyond the bound: one of
    /// the two is wrong, and nothing is abandoned or expired until they agree again.
    Skewed(chrono::Duration),
}

impl Verdict {
    /// The time to decide by, or `None` when the decision is refused.
    pub fn time(self) -> Option<DateTime<Utc>> {
        match self {
            Verdict::Act(t) => Some(t),
            _ => None,
        }
    }
}

/// The verdict for the API time `api` (if known) and the local time `local`: act on the API's
/// time when the two are within `bound` of each other.
pub fn verdict(api: Option<DateTime<Utc>>, local: DateTime<Utc>, bound: Duration) -> Verdict {
    let Some(api) = api else {
        return Verdict::NoApiTime;
    };
    let skew = local.signed_duration_since(api);
    let bound = chrono::Duration::from_std(bound).unwrap_or(chrono::Duration::MAX);
    if skew.abs() > bound {
        Verdict::Skewed(skew)
    } else {
        Verdict::Act(api)
    }
}

/// One tenant's view of the API's clock, shared by its client (which reads answers) and the
/// decisions (which ask for the time). Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct ApiClock(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    /// The latest `Date` and the monotonic instant its answer came.
    reading: Option<(DateTime<Utc>, Instant)>,
    /// Decisions are refused for skew now (the warning was logged once for this episode).
    refusing: bool,
}

impl ApiClock {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An answer said (its `Date` header) it was `api` when the monotonic clock read `at`.
    pub fn observe(&self, api: DateTime<Utc>, at: Instant) {
        self.inner().reading = Some((api, at));
    }

    /// Read the `Date` header of an answer (an HTTP date); a missing or malformed one is
    /// ignored. Returns whether it was read.
    pub fn observe_header(&self, date: Option<&str>, at: Instant) -> bool {
        let Some(api) = date.and_then(parse_http_date) else {
            return false;
        };
        self.observe(api, at);
        true
    }

    /// The API's time at `at`: the latest `Date` plus the monotonic time elapsed since.
    pub fn api_now(&self, at: Instant) -> Option<DateTime<Utc>> {
        let (api, then) = self.inner().reading?;
        let elapsed = chrono::Duration::from_std(at.saturating_duration_since(then)).ok()?;
        api.checked_add_signed(elapsed)
    }

    /// Local minus API time, at the local time `local` and the monotonic instant `at`.
    pub fn skew(&self, local: DateTime<Utc>, at: Instant) -> Option<chrono::Duration> {
        self.api_now(at).map(|api| local.signed_duration_since(api))
    }

    /// The verdict now (local time `local`, monotonic `at`), logging a warning the first
    /// time a skew beyond `bound` refuses a decision for `tenant`, and once more when the
    /// clocks agree again. Before any answer, decisions are refused silently: that is how
    /// every start begins, and the first poll's answers end it.
    pub fn decide(
        &self,
        tenant: &str,
        local: DateTime<Utc>,
        at: Instant,
        bound: Duration,
    ) -> Verdict {
        let v = verdict(self.api_now(at), local, bound);
        let mut inner = self.inner();
        match v {
            Verdict::Skewed(skew) if !inner.refusing => {
                inner.refusing = true;
                tracing::warn!(
                    tenant,
                    skew_s = skew.num_seconds(),
                    max_clock_skew_s = bound.as_secs(),
                    "the local clock disagrees with the MDE API's (its Date header) by more than max_clock_skew: no in-flight action is abandoned and no per-machine series expires until they agree again (mde_exporter_clock_skew_seconds)"
                );
            }
            Verdict::Act(_) if inner.refusing => {
                inner.refusing = false;
                tracing::info!(
                    tenant,
                    "the local clock agrees with the MDE API's again: in-flight horizon and series expiry resume"
                );
            }
            _ => {}
        }
        v
    }

    /// The API's time when known, else the local time: the "now" of discovery's windows,
    /// which are compared with the API's own timestamps.
    pub fn now_or_local(&self, local: DateTime<Utc>, at: Instant) -> DateTime<Utc> {
        self.api_now(at).unwrap_or(local)
    }
}

fn parse_http_date(v: &str) -> Option<DateTime<Utc>> {
    httpdate::parse_http_date(v.trim()).ok().map(DateTime::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    const BOUND: Duration = Duration::from_secs(300);

    #[test]
    fn verdict_acts_on_api_time_within_the_bound_only() {
        let api = t0();
        assert_eq!(verdict(None, api, BOUND), Verdict::NoApiTime);
        let local = api + chrono::Duration::seconds(30);
        assert_eq!(verdict(Some(api), local, BOUND), Verdict::Act(api));
        let jumped = api + chrono::Duration::days(8);
        assert_eq!(
            verdict(Some(api), jumped, BOUND),
            Verdict::Skewed(chrono::Duration::days(8))
        );
        let behind = api - chrono::Duration::minutes(6);
        assert_eq!(
            verdict(Some(api), behind, BOUND),
            Verdict::Skewed(chrono::Duration::minutes(-6))
        );
    }

    /// See: #24 item 7. The API time follows the monotonic clock from the latest `Date`:
    /// a wall clock that jumps 8 days after the last answer neither moves it nor lets a
    /// decision through.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_between_answers_is_refused_not_acted_on() {
        let clock = ApiClock::default();
        let start = Instant::now();
        assert_eq!(clock.api_now(start), None);
        assert_eq!(clock.decide("t", t0(), start, BOUND), Verdict::NoApiTime);
        assert!(clock.observe_header(Some("Thu, 03 Dec 2026 12:00:00 GMT"), start));
        tokio::time::advance(Duration::from_secs(90)).await;
        let at = Instant::now();
        let api = t0() + chrono::Duration::seconds(90);
        assert_eq!(clock.api_now(at), Some(api));
        // The local clock ran with it: act, by the API's time.
        let local = api + chrono::Duration::seconds(1);
        assert_eq!(clock.decide("t", local, at, BOUND), Verdict::Act(api));
        assert_eq!(clock.skew(local, at), Some(chrono::Duration::seconds(1)));
        // Then the wall clock jumps 8 days: refused, and the skew shows it at once.
        let jumped = local + chrono::Duration::days(8);
        assert!(matches!(
            clock.decide("t", jumped, at, BOUND),
            Verdict::Skewed(_)
        ));
        assert!(clock.inner().refusing);
        assert_eq!(clock.decide("t", jumped, at, BOUND).time(), None);
        // It comes back: decisions resume.
        assert_eq!(clock.decide("t", local, at, BOUND), Verdict::Act(api));
        assert!(!clock.inner().refusing);
    }

    #[test]
    fn malformed_or_missing_dates_are_ignored() {
        let clock = ApiClock::default();
        let now = Instant::now();
        assert!(!clock.observe_header(None, now));
        assert!(!clock.observe_header(Some("yesterday"), now));
        assert_eq!(clock.api_now(now), None);
        assert_eq!(clock.now_or_local(t0(), now), t0());
    }
}
