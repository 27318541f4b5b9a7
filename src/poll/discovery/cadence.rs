//! The cadence of a tenant's polls (#20 item 5): as often as a share of the list endpoint's
//! hour budget allows, never faster than `discovery.min_interval` nor slower than
//! `poll_interval`, and backing off towards `poll_interval` while the tenant is quiet.
//!
//! Owns the choice of the next interval and its reason, as a pure function of the last poll's
//! cost, the budget and what the poll found. Does not own measuring the cost nor sleeping
//! (the collector), nor the quota windows themselves (`quota`).

use std::time::Duration;

/// What the next interval is chosen from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CadenceInput {
    /// `poll_interval`: the longest time between two polls.
    pub poll_interval: Duration,
    /// `discovery.min_interval`: the shortest (never above `poll_interval`).
    pub min_interval: Duration,
    /// `discovery.list_budget_share`, in (0, 1].
    pub list_budget_share: f64,
    /// The list endpoint's long window: its limit in force (lowered after 429s) and its length
    /// (documented: 1,500 an hour).
    pub hour_budget: u32,
    pub hour: Duration,
    /// List calls the last poll made: its listings, id batches, sweep or bootstrap pages.
    pub cost: u32,
    /// Polls in a row that found nothing in flight and nothing new.
    pub quiet_polls: u32,
}

/// Why the interval is what it is (the status page shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CadenceReason {
    /// `min_interval`: the budget would allow polling faster.
    MinInterval,
    /// The last poll's cost spread over the budget share.
    Budget,
    /// Quiet: backing off towards `poll_interval`.
    Quiet,
    /// `poll_interval`, the upper bound: the budget share allows no more.
    PollInterval,
}

impl CadenceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CadenceReason::MinInterval => "min_interval: the list budget allows more",
            CadenceReason::Budget => {
                "the last poll's list calls spread over list_budget_share of the hour budget"
            }
            CadenceReason::Quiet => {
                "quiet (nothing in flight, nothing new): backing off towards poll_interval"
            }
            CadenceReason::PollInterval => "poll_interval, the upper bound",
        }
    }
}

/// The time from one poll's start to the next, and why:
/// `max(min_interval, cost / (share × hour_budget) × hour)`, doubled for each quiet poll in a
/// row, never above `poll_interval`. A spent or zero budget gives `poll_interval`.
pub fn next_interval(i: &CadenceInput) -> (Duration, CadenceReason) {
    let upper = i.poll_interval;
    let lower = i.min_interval.min(upper);
    let calls_per_window = i.list_budget_share * f64::from(i.hour_budget);
    let budget = if calls_per_window > 0.0 {
        i.hour.as_secs_f64() * f64::from(i.cost.max(1)) / calls_per_window
    } else {
        f64::INFINITY
    };
    let (base, mut reason) = if budget > lower.as_secs_f64() {
        (budget, CadenceReason::Budget)
    } else {
        (lower.as_secs_f64(), CadenceReason::MinInterval)
    };
    let mut secs = base;
    if i.quiet_polls > 0 {
        let backed_off = base * 2f64.powi(i.quiet_polls.min(30) as i32);
        if backed_off > secs {
            secs = backed_off;
            reason = CadenceReason::Quiet;
        }
    }
    if !secs.is_finite() || secs >= upper.as_secs_f64() {
        if reason != CadenceReason::Quiet {
            reason = CadenceReason::PollInterval;
        }
        return (upper, reason);
    }
    (Duration::from_secs_f64(secs), reason)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn input(cost: u32, quiet_polls: u32) -> CadenceInput {
        CadenceInput {
            poll_interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(5),
            list_budget_share: 0.5,
            hour_budget: 1500,
            hour: Duration::from_secs(3600),
            cost,
            quiet_polls,
        }
    }

    fn secs(i: &CadenceInput) -> (f64, CadenceReason) {
        let (d, r) = next_interval(i);
        (d.as_secs_f64(), r)
    }

    // See: #20 item 5
    #[test]
    fn the_interval_spends_the_budget_share_within_the_bounds() {
        // One call a poll: 750 calls an hour allow one every 4.8 s; min_interval is 5 s.
        assert_eq!(secs(&input(1, 0)), (5.0, CadenceReason::MinInterval));
        // Two listings (what is in flight): 9.6 s, 375 polls and 750 calls an hour.
        assert_eq!(secs(&input(2, 0)), (9.6, CadenceReason::Budget));
        // A poll that read 2,000 in flight by id (101 calls): the upper bound.
        assert_eq!(secs(&input(101, 0)), (60.0, CadenceReason::PollInterval));
        // The whole hour budget: twice as often.
        let all = CadenceInput {
            list_budget_share: 1.0,
            ..input(2, 0)
        };
        assert_eq!(secs(&all), (5.0, CadenceReason::MinInterval));
        // A budget lowered to nothing (429s) or a poll that cost nothing.
        let none = CadenceInput {
            hour_budget: 0,
            ..input(2, 0)
        };
        assert_eq!(secs(&none), (60.0, CadenceReason::PollInterval));
        assert_eq!(secs(&input(0, 0)), (5.0, CadenceReason::MinInterval));
        // A min_interval above poll_interval (the demo's scaled poll) is capped by it.
        let short = CadenceInput {
            poll_interval: Duration::from_secs(1),
            ..input(1, 0)
        };
        assert_eq!(secs(&short), (1.0, CadenceReason::PollInterval));
    }

    // See: #20 item 5
    #[test]
    fn a_quiet_tenant_backs_off_towards_poll_interval() {
        let steps: Vec<(f64, CadenceReason)> = (0..6).map(|q| secs(&input(1, q))).collect();
        assert_eq!(
            steps,
            [
                (5.0, CadenceReason::MinInterval),
                (10.0, CadenceReason::Quiet),
                (20.0, CadenceReason::Quiet),
                (40.0, CadenceReason::Quiet),
                (60.0, CadenceReason::Quiet),
                (60.0, CadenceReason::Quiet),
            ]
        );
        // However long it has been quiet.
        assert_eq!(secs(&input(1, u32::MAX)), (60.0, CadenceReason::Quiet));
        // A quiet hour costs 63 polls (one call each), not the 720 of min_interval.
        let (mut t, mut polls) = (0.0, 0);
        while t < 3600.0 {
            t += secs(&input(1, polls)).0;
            polls += 1;
        }
        assert_eq!(polls, 63);
    }
}
