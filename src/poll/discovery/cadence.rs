//! The cadence of a tenant's polls (#20 item 5, #33): fast while there is something to wait
//! for, as often as a share of the list endpoint's hour budget allows (never faster than
//! `discovery.min_interval`); backing off step by step towards `poll_interval` while nothing
//! happens; back to fast as soon as a poll finds something.
//!
//! Owns the choice of the next interval, the cadence it is on and why, and the count of quiet
//! polls in a row, as a pure function of what the tenant has (actions in flight, configured
//! ids not final), what the last poll found and cost, and the budget. Does not own measuring
//! any of these nor sleeping (the collector), nor the quota windows themselves (`quota`).

use std::time::Duration;

/// What a tenant has, and what its last poll found: what the list budget can buy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Followed actions not final yet: each poll may find one final.
    pub in_flight: usize,
    /// Configured `action_ids` the API answered as not final yet.
    pub configured_open: usize,
    /// The poll listed an action created since the one before, read a followed action that
    /// had changed, or fetched a result.
    pub found_new: bool,
}

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
    /// What the tenant has and what the last poll found.
    pub activity: Activity,
    /// The last poll succeeded. A failed poll tells nothing about the tenant: the quiet count
    /// stays as it was.
    pub ok: bool,
}

/// Which cadence a tenant is on (`mde_liveresponse_discovery_cadence`'s `cadence` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Something to wait for, or just found: as often as the budget share allows.
    Fast,
    /// Quiet: the interval doubles with each quiet poll in a row.
    BackingOff,
    /// At `poll_interval`: quiet for long enough, or the budget share allows no more.
    PollInterval,
}

impl Cadence {
    pub const ALL: [Cadence; 3] = [Cadence::Fast, Cadence::BackingOff, Cadence::PollInterval];

    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Fast => "fast",
            Cadence::BackingOff => "backing_off",
            Cadence::PollInterval => "poll_interval",
        }
    }
}

/// Why the tenant is on its cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Followed actions are in flight (how many).
    InFlight(usize),
    /// Configured `action_ids` are not final yet (how many).
    ConfiguredIds(usize),
    /// The last poll found something new.
    FoundNew,
    /// Nothing in flight and nothing new for this many polls in a row.
    Quiet(u32),
}

impl Why {
    /// The `reason` label of `mde_liveresponse_discovery_cadence`.
    pub fn reason(self) -> &'static str {
        match self {
            Why::InFlight(_) => "in_flight",
            Why::ConfiguredIds(_) => "configured_ids",
            Why::FoundNew => "found_new",
            Why::Quiet(_) => "quiet",
        }
    }
}

/// What bounds the interval of a cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `min_interval`: the budget share would allow polling faster.
    MinInterval,
    /// The last poll's list calls spread over the budget share.
    Budget,
    /// Doubled for each quiet poll.
    BackOff,
    /// `poll_interval`, the upper bound.
    PollInterval,
}

/// The next interval and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub interval: Duration,
    pub cadence: Cadence,
    pub why: Why,
    pub bound: Bound,
    /// Quiet polls in a row, this one included: the next decision's `quiet_polls`.
    pub quiet_polls: u32,
}

impl Decision {
    /// The status page's line: the cadence, why, and what bounds it.
    pub fn describe(&self, cost: u32) -> String {
        let why = match self.why {
            Why::InFlight(n) => format!("{n} actions in flight"),
            Why::ConfiguredIds(n) => format!("{n} configured action ids not final"),
            Why::FoundNew => "the last poll found something new".to_string(),
            Why::Quiet(n) => format!("quiet for {n} polls: nothing in flight, nothing new"),
        };
        let bound = match self.bound {
            Bound::MinInterval => "min_interval: the list budget allows more",
            Bound::Budget => {
                "the last poll's list calls spread over list_budget_share of the hour budget"
            }
            Bound::BackOff => "backing off towards poll_interval",
            Bound::PollInterval => "poll_interval, the upper bound",
        };
        let calls = if cost == 1 { "call" } else { "calls" };
        format!(
            "{} ({why}): {bound}; last poll: {cost} list {calls}",
            self.cadence.as_str()
        )
    }
}

/// The time from one poll's start to the next, the cadence and why. `quiet_polls` is the
/// count of quiet polls in a row before this one.
///
/// Fast: `max(min_interval, cost / (share × hour_budget) × hour)`, never above
/// `poll_interval` (a spent or zero budget gives `poll_interval`). A tenant with nothing in
/// flight, no configured id open and nothing new is quiet: the fast interval doubles with
/// each quiet poll in a row, up to `poll_interval`. Anything in flight or found resets it.
pub fn decide(i: &CadenceInput, quiet_polls: u32) -> Decision {
    let a = &i.activity;
    let busy = if a.in_flight > 0 {
        Some(Why::InFlight(a.in_flight))
    } else if a.configured_open > 0 {
        Some(Why::ConfiguredIds(a.configured_open))
    } else if a.found_new {
        Some(Why::FoundNew)
    } else {
        None
    };
    let quiet_polls = match (i.ok, busy) {
        (false, _) => quiet_polls,
        (true, Some(_)) => 0,
        (true, None) => quiet_polls.saturating_add(1),
    };
    let why = match busy {
        Some(why) if i.ok || quiet_polls == 0 => why,
        _ => Why::Quiet(quiet_polls),
    };
    let upper = i.poll_interval;
    let lower = i.min_interval.min(upper);
    let calls_per_window = i.list_budget_share * f64::from(i.hour_budget);
    let budget = if calls_per_window > 0.0 {
        i.hour.as_secs_f64() * f64::from(i.cost.max(1)) / calls_per_window
    } else {
        f64::INFINITY
    };
    let (mut secs, mut bound) = if budget > lower.as_secs_f64() {
        (budget, Bound::Budget)
    } else {
        (lower.as_secs_f64(), Bound::MinInterval)
    };
    let mut cadence = Cadence::Fast;
    if quiet_polls > 0 {
        cadence = Cadence::BackingOff;
        let backed_off = secs * 2f64.powi(quiet_polls.min(30) as i32);
        if backed_off > secs {
            secs = backed_off;
            bound = Bound::BackOff;
        }
    }
    if !secs.is_finite() || secs >= upper.as_secs_f64() {
        return Decision {
            interval: upper,
            cadence: Cadence::PollInterval,
            why,
            bound: Bound::PollInterval,
            quiet_polls,
        };
    }
    Decision {
        interval: Duration::from_secs_f64(secs),
        cadence,
        why,
        bound,
        quiet_polls,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn input(cost: u32, activity: Activity) -> CadenceInput {
        CadenceInput {
            poll_interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(5),
            list_budget_share: 0.5,
            hour_budget: 1500,
            hour: Duration::from_secs(3600),
            cost,
            activity,
            ok: true,
        }
    }

    fn in_flight(n: usize) -> Activity {
        Activity {
            in_flight: n,
            ..Activity::default()
        }
    }

    const QUIET: Activity = Activity {
        in_flight: 0,
        configured_open: 0,
        found_new: false,
    };

    fn secs(i: &CadenceInput, quiet: u32) -> (f64, Cadence, Bound) {
        let d = decide(i, quiet);
        (d.interval.as_secs_f64(), d.cadence, d.bound)
    }

    // See: #20 item 5
    #[test]
    fn the_fast_interval_spends_the_budget_share_within_the_bounds() {
        use Bound::{Budget, MinInterval};
        use Cadence::Fast;
        let slow = (Cadence::PollInterval, Bound::PollInterval);
        // One call a poll: 750 calls an hour allow one every 4.8 s; min_interval is 5 s.
        assert_eq!(secs(&input(1, in_flight(3)), 0), (5.0, Fast, MinInterval));
        // Two calls (a listing and an id batch): 9.6 s, 375 polls and 750 calls an hour.
        assert_eq!(secs(&input(2, in_flight(3)), 0), (9.6, Fast, Budget));
        // A poll that read 2,000 in flight by id (101 calls): the upper bound.
        assert_eq!(
            secs(&input(101, in_flight(2000)), 0),
            (60.0, slow.0, slow.1)
        );
        // The whole hour budget: twice as often.
        let all = CadenceInput {
            list_budget_share: 1.0,
            ..input(2, in_flight(3))
        };
        assert_eq!(secs(&all, 0), (5.0, Fast, MinInterval));
        // A budget lowered to nothing (429s).
        let none = CadenceInput {
            hour_budget: 0,
            ..input(2, in_flight(3))
        };
        assert_eq!(secs(&none, 0), (60.0, slow.0, slow.1));
        // A min_interval above poll_interval (the demo's scaled poll) is capped by it.
        let short = CadenceInput {
            poll_interval: Duration::from_secs(1),
            ..input(1, in_flight(3))
        };
        assert_eq!(secs(&short, 0), (1.0, slow.0, slow.1));
    }

    // See: #33. The metric's label values are the cadence's own names.
    #[test]
    fn the_cadence_metric_names_every_cadence_and_reason() {
        let cadences: Vec<&str> = Cadence::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(cadences, crate::metrics::poll::CADENCES);
        let reasons: Vec<&str> = [
            Why::InFlight(1),
            Why::ConfiguredIds(1),
            Why::FoundNew,
            Why::Quiet(1),
        ]
        .iter()
        .map(|w| w.reason())
        .collect();
        assert_eq!(reasons, crate::metrics::poll::CADENCE_REASONS);
    }

    // See: #33
    #[test]
    fn what_keeps_a_tenant_fast_and_what_it_says() {
        let fast = |a: Activity, quiet: u32| {
            let d = decide(&input(1, a), quiet);
            (d.cadence, d.why, d.quiet_polls)
        };
        // Anything to wait for resets a long quiet spell at once.
        assert_eq!(
            fast(in_flight(2000), 9),
            (Cadence::Fast, Why::InFlight(2000), 0)
        );
        let configured = Activity {
            configured_open: 2,
            ..QUIET
        };
        assert_eq!(
            fast(configured, 9),
            (Cadence::Fast, Why::ConfiguredIds(2), 0)
        );
        let found = Activity {
            found_new: true,
            ..QUIET
        };
        assert_eq!(fast(found, 9), (Cadence::Fast, Why::FoundNew, 0));
        assert_eq!(fast(QUIET, 0), (Cadence::BackingOff, Why::Quiet(1), 1));
        // A failed poll tells nothing: the quiet count stays, and so does the back-off.
        let failed = CadenceInput {
            ok: false,
            ..input(1, QUIET)
        };
        assert_eq!(decide(&failed, 3).quiet_polls, 3);
        assert_eq!(decide(&failed, 3).interval, Duration::from_secs(40));
        let d = decide(&input(1, in_flight(412)), 0);
        assert_eq!(
            d.describe(1),
            "fast (412 actions in flight): min_interval: the list budget allows more; last poll: 1 list call"
        );
        let d = decide(&input(1, QUIET), 7);
        assert_eq!(
            d.describe(1),
            "poll_interval (quiet for 8 polls: nothing in flight, nothing new): poll_interval, the upper bound; last poll: 1 list call"
        );
    }

    // See: #20 item 5, #33
    #[test]
    fn a_quiet_tenant_backs_off_towards_poll_interval() {
        let mut quiet = 0;
        let mut steps = Vec::new();
        for _ in 0..6 {
            let d = decide(&input(1, QUIET), quiet);
            quiet = d.quiet_polls;
            steps.push((d.interval.as_secs_f64(), d.cadence));
        }
        assert_eq!(
            steps,
            [
                (10.0, Cadence::BackingOff),
                (20.0, Cadence::BackingOff),
                (40.0, Cadence::BackingOff),
                (60.0, Cadence::PollInterval),
                (60.0, Cadence::PollInterval),
                (60.0, Cadence::PollInterval),
            ]
        );
        // However long it has been quiet.
        assert_eq!(decide(&input(1, QUIET), u32::MAX).interval.as_secs(), 60);
    }

    /// A tenant driven over simulated hours under paused time: the collector's loop in
    /// miniature (sleep the chosen interval, poll, decide), against a script of what the
    /// tenant has at each moment.
    async fn drive(
        hours: u32,
        what: impl Fn(Duration) -> Activity,
        cost: impl Fn(&Activity) -> u32,
    ) -> Vec<(Duration, Decision)> {
        let start = tokio::time::Instant::now();
        let end = start + Duration::from_secs(3600 * u64::from(hours));
        let mut quiet = 0;
        let mut polls = Vec::new();
        while tokio::time::Instant::now() < end {
            let at = start.elapsed();
            let a = what(at);
            let d = decide(&input(cost(&a), a), quiet);
            quiet = d.quiet_polls;
            polls.push((at, d));
            tokio::time::sleep(d.interval).await;
        }
        polls
    }

    // See: #33. The budget goes where it buys something: a busy hour lists at the floor
    // within half the list budget, a quiet hour about once a minute, and activity brings the
    // fast cadence back at the first poll that sees it.
    #[tokio::test(start_paused = true)]
    async fn under_paused_time_the_budget_goes_where_there_is_something_to_wait_for() {
        // 2,000 in flight for a whole hour, one listing a poll.
        let busy = drive(1, |_| in_flight(2000), |_| 1).await;
        assert_eq!(busy.len(), 720);
        assert!(
            busy.iter()
                .all(|(_, d)| d.interval == Duration::from_secs(5))
        );
        // The same while followed actions turn final, were each poll to cost two listings:
        // half the budget (750 calls an hour), at the price of 9.6 s between polls (#33: why
        // changed actions are read on the get-by-id endpoint instead).
        let dear = drive(1, |_| in_flight(2000), |_| 2).await;
        assert!((748..=752).contains(&(dear.len() * 2)), "{}", dear.len());
        // Quiet: 62 polls (and list calls) in the hour instead of 720: 10, 20, 40 s, then 60.
        let quiet = drive(1, |_| QUIET, |_| 1).await;
        assert_eq!(quiet.len(), 62);
        // Quiet, then 400 in flight from minute 30 to 40, then quiet again.
        let spell = |at: Duration| {
            let m = at.as_secs() / 60;
            if (30..40).contains(&m) {
                in_flight(400)
            } else {
                QUIET
            }
        };
        let polls = drive(1, spell, |_| 1).await;
        let first_busy = polls
            .iter()
            .position(|(at, _)| at.as_secs() >= 30 * 60)
            .unwrap();
        let (seen_at, d) = polls[first_busy];
        // Seen at the first poll after it began (at most poll_interval later), fast from then on.
        assert!(seen_at <= Duration::from_secs(31 * 60));
        assert_eq!(d.cadence, Cadence::Fast);
        let during: Vec<&(Duration, Decision)> = polls
            .iter()
            .filter(|(at, _)| at.as_secs() >= seen_at.as_secs() && at.as_secs() < 40 * 60)
            .collect();
        assert!(during.iter().all(|(_, d)| d.interval.as_secs() == 5));
        // Then backing off again, step by step: 10, 20, 40, 60 s.
        let after: Vec<u64> = polls
            .iter()
            .filter(|(at, _)| at.as_secs() >= 40 * 60)
            .map(|(_, d)| d.interval.as_secs())
            .take(5)
            .collect();
        assert_eq!(after, [10, 20, 40, 60, 60]);
        let total = polls.len();
        assert!((150..=200).contains(&total), "{total}");
    }
}
