//! Our API quota policy: two sliding windows per budget, `Retry-After` blocks, backoff when a
//! 429 comes without one, and an adaptive limit that drops when someone else spends the same
//! quota.
//!
//! Owns the decision "may this call be sent now, and if not, how long until it may". It is a
//! pure core: calls and `Instant`s in, decisions out; no sockets, no sleeping (the client does
//! that). Counting is exact (a log of send instants), so the limits are never exceeded in any
//! window position, which a token bucket cannot promise for a sliding window.
//! Does not own which call goes first (the collector) nor the HTTP retry (the client).
//! Defines [`SharedQuota`], the one name of a tenant's quota handle.

mod handover;

pub use handover::fingerprint;

use std::collections::VecDeque;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

use crate::config::{QuotaConfig, QuotaScope};

/// The MDE endpoints that count against the API quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    ListMachineActions,
    GetMachineAction,
    GetResultDownloadLink,
    /// `GET /api/machines`: the slow machine-context refresh (`machines`).
    ListMachines,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ListMachineActions,
        Endpoint::GetMachineAction,
        Endpoint::GetResultDownloadLink,
        Endpoint::ListMachines,
    ];
    /// The `endpoint` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ListMachineActions => "list_machine_actions",
            Endpoint::GetMachineAction => "get_machine_action",
            Endpoint::GetResultDownloadLink => "get_result_download_link",
            Endpoint::ListMachines => "list_machines",
        }
    }
}

/// 1 % of the window plus 250 ms for the trip to the API, at most a tenth of the window.
fn send_margin(length: Duration) -> Duration {
    (length / 100 + Duration::from_millis(250)).min(length / 10)
}

/// Smallest capacity a window's log keeps once it has been used.
const MIN_LOG: usize = 8;

/// One sliding window: at most `effective` (≤ `limit`) sends within any span of `length`.
#[derive(Debug)]
struct Window {
    label: &'static str,
    /// The configured limit.
    limit: u32,
    /// The limit in force: lowered after a 429, raised back slowly after successes.
    effective: u32,
    length: Duration,
    /// How long after `length` a send still counts here. We note a send before it leaves;
    /// the API counts it when it arrives, a little later. Without this margin a slot we
    /// think free at `sent + length` is still taken on the server, and the call is a 429.
    margin: Duration,
    /// Send instants still inside the window (plus margin), oldest first. Never longer than
    /// `limit`: a send is recorded only when it fits. Its capacity follows what is in it
    /// (grown at most to `limit`, shrunk after pruning), so a tenant that once drained a
    /// backlog does not keep a 1,500-entry log for ever. See: #11
    sent: VecDeque<Instant>,
}

impl Window {
    fn new(label: &'static str, limit: u32, length: Duration) -> Self {
        Window {
            label,
            limit,
            effective: limit,
            length,
            margin: send_margin(length),
            sent: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&first) = self.sent.front() {
            if now.saturating_duration_since(first) >= self.length + self.margin {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        // Give back room when at most a quarter of it is used (so that a window that fills
        // and empties again does not reallocate on every send).
        let len = self.sent.len();
        if self.sent.capacity() > 4 * len.max(MIN_LOG) {
            self.sent.shrink_to(2 * len.max(MIN_LOG));
        }
    }

    /// Record a send. The log grows by doubling, but never past `limit` entries.
    fn record(&mut self, now: Instant) {
        let len = self.sent.len();
        if len == self.sent.capacity() {
            let limit = self.limit.max(1) as usize;
            let target = (2 * len).max(MIN_LOG).min(limit.max(len + 1));
            self.sent.reserve_exact(target - len);
        }
        self.sent.push_back(now);
    }

    fn used(&self) -> u32 {
        u32::try_from(self.sent.len()).unwrap_or(u32::MAX)
    }

    /// Sends still allowed under the limit in force. Call after `prune`.
    fn remaining(&self) -> u32 {
        self.effective.saturating_sub(self.used())
    }

    /// How long until one more send fits while leaving `reserve` sends free (zero if it
    /// fits now). Call after `prune`.
    fn wait(&self, now: Instant, reserve: u32) -> Duration {
        // A reserve never takes the whole window: someone must be able to send.
        let allowed = self.effective.saturating_sub(reserve).max(1) as usize;
        if self.sent.len() < allowed {
            return Duration::ZERO;
        }
        // The send that must leave the window for a new one to fit.
        let idx = self.sent.len() - allowed;
        (self.sent[idx] + self.length + self.margin).saturating_duration_since(now)
    }
}

/// One budget: a short and a long window, plus what 429s taught us.
#[derive(Debug)]
struct Budget {
    windows: [Window; 2],
    blocked_until: Option<Instant>,
    /// Set while 429s without `Retry-After` keep coming; dropped at the first success. Boxed:
    /// it is rarely there, and inline it took 136 bytes in every budget of every tenant
    /// (four a tenant). See: #34
    backoff: Option<Box<ExponentialBackoff>>,
}

impl Budget {
    fn new(cfg: &QuotaConfig) -> Self {
        Budget {
            windows: [
                Window::new("1m", cfg.per_minute, cfg.minute),
                Window::new("1h", cfg.per_hour, cfg.hour),
            ],
            blocked_until: None,
            backoff: None,
        }
    }

    fn wait(&mut self, now: Instant, reserve: u32) -> Duration {
        let mut wait = self
            .blocked_until
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default();
        for w in &mut self.windows {
            w.prune(now);
            wait = wait.max(w.wait(now, reserve));
        }
        wait
    }
}

/// What the quota gauges show for one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStatus {
    /// `list_machine_actions`…, or `all` for a shared budget.
    pub endpoint: &'static str,
    /// `1m` or `1h`.
    pub window: &'static str,
    /// The configured limit.
    pub limit: u32,
    /// The limit in force (lower than `limit` after 429s).
    pub effective: u32,
    pub used: u32,
    /// Calls still allowed under the limit in force.
    pub remaining: u32,
}

/// One tenant's quota as its holders share it (the client that spends it, the scrape that
/// reads it, a reload that carries it over): one name for it everywhere. A std mutex is
/// fine, it is never held across an await.
pub type SharedQuota = std::sync::Arc<std::sync::Mutex<Quota>>;

/// The budgets of one tenant.
#[derive(Debug)]
pub struct Quota {
    scope: QuotaScope,
    /// One budget per endpoint (in `Endpoint::ALL` order), or a single shared one.
    budgets: Vec<(&'static str, Budget)>,
}

impl Quota {
    /// A new quota for `config`, as its holders share it.
    pub fn shared(config: &QuotaConfig) -> SharedQuota {
        std::sync::Arc::new(std::sync::Mutex::new(Quota::new(config)))
    }

    pub fn new(cfg: &QuotaConfig) -> Self {
        let keys: Vec<&'static str> = match cfg.scope {
            QuotaScope::PerEndpoint => Endpoint::ALL.iter().map(|e| e.as_str()).collect(),
            QuotaScope::Shared => vec!["all"],
        };
        Quota {
            scope: cfg.scope,
            budgets: keys.into_iter().map(|k| (k, Budget::new(cfg))).collect(),
        }
    }

    fn budget(&mut self, ep: Endpoint) -> &mut Budget {
        // `new` builds one budget per endpoint, in `Endpoint::ALL` order, or one shared.
        let idx = match self.scope {
            QuotaScope::PerEndpoint => ep as usize,
            QuotaScope::Shared => 0,
        };
        &mut self.budgets[idx].1
    }

    /// How many sends a call to `ep` must leave free for discovery. Result links are
    /// background work: with one shared budget they leave one call per window, so discovery
    /// is never starved. Discovery itself, and separate budgets, need no reserve.
    fn reserve_for(&self, ep: Endpoint) -> u32 {
        match (self.scope, ep) {
            (QuotaScope::Shared, Endpoint::GetResultDownloadLink) => 1,
            // Machine context is the least urgent: it never takes the last call either.
            (QuotaScope::Shared, Endpoint::ListMachines) => 1,
            _ => 0,
        }
    }

    /// How long until a call to `ep` may be sent; zero means now.
    pub fn wait(&mut self, ep: Endpoint, now: Instant) -> Duration {
        let reserve = self.reserve_for(ep);
        self.budget(ep).wait(now, reserve)
    }

    /// Record a send if it fits now (leaving the discovery reserve where `ep` must); otherwise
    /// say how long to wait. Nothing is recorded then.
    pub fn try_acquire(&mut self, ep: Endpoint, now: Instant) -> Result<(), Duration> {
        let reserve = self.reserve_for(ep);
        let budget = self.budget(ep);
        let wait = budget.wait(now, reserve);
        if !wait.is_zero() {
            return Err(wait);
        }
        for w in &mut budget.windows {
            w.record(now);
        }
        Ok(())
    }

    /// A call was answered (not with 429): forget the backoff, and raise a lowered limit by
    /// 5 % of the configured one per success (additive increase).
    pub fn succeeded(&mut self, ep: Endpoint, _now: Instant) {
        let budget = self.budget(ep);
        budget.backoff = None;
        for w in &mut budget.windows {
            let step = (w.limit / 20).max(1);
            w.effective = (w.effective + step).min(w.limit);
        }
    }

    /// A 429 arrived: someone else spends the same quota. Send nothing more on this budget
    /// until `retry_after` (or, without one, an exponential backoff with jitter up to one
    /// short window) has passed, and lower the short window's limit in force to three
    /// quarters of what we had sent in it when the 429 came (at least a tenth of the
    /// configured limit). Returns the wait applied.
    pub fn throttled(
        &mut self,
        ep: Endpoint,
        now: Instant,
        retry_after: Option<Duration>,
    ) -> Duration {
        let budget = self.budget(ep);
        let wait = match retry_after {
            Some(d) => d,
            None => {
                let max = budget.windows[0].length;
                let backoff = budget.backoff.get_or_insert_with(|| {
                    Box::new(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_secs(1).min(max))
                            .with_max_delay(max)
                            .with_factor(2.0)
                            .with_jitter()
                            .without_max_times()
                            .build(),
                    )
                });
                backoff.next().unwrap_or(max).min(max)
            }
        };
        let until = now + wait;
        budget.blocked_until = Some(budget.blocked_until.map_or(until, |b| b.max(until)));
        // Only the short window is lowered: a 429 does not say which window was exceeded,
        // and lowering the hour by a quarter of a minute's use would stall us for an hour.
        // When the hour is what ran out, the server's Retry-After says so.
        // Never below a tenth of the limit: one 429 after a single call must not leave us
        // with one call per window.
        let short = &mut budget.windows[0];
        short.prune(now);
        let floor = (short.limit / 10).max(1);
        short.effective = (short.effective.min(short.used()) * 3 / 4).max(floor);
        wait
    }

    /// Used and remaining calls in every window of every budget.
    /// What calls to `ep` may still spend now: the smallest `remaining` over the windows of
    /// the budget they spend (the one shared budget with `scope: shared`).
    pub fn remaining(&mut self, ep: Endpoint, now: Instant) -> u32 {
        let budget = self.budget(ep);
        budget
            .windows
            .iter_mut()
            .map(|w| {
                w.prune(now);
                w.remaining()
            })
            .min()
            .unwrap_or(0)
    }

    /// The long (hour) window of the budget calls to `ep` spend: (calls used, limit in force).
    pub fn hour_window(&mut self, ep: Endpoint, now: Instant) -> (u32, u32) {
        let [_, hour] = &mut self.budget(ep).windows;
        hour.prune(now);
        (hour.used(), hour.effective)
    }

    pub fn status(&mut self, now: Instant) -> Vec<WindowStatus> {
        let mut out = Vec::new();
        for (key, budget) in &mut self.budgets {
            for w in &mut budget.windows {
                w.prune(now);
                out.push(WindowStatus {
                    endpoint: key,
                    window: w.label,
                    limit: w.limit,
                    effective: w.effective,
                    used: w.used(),
                    remaining: w.remaining(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg(per_minute: u32, per_hour: u32) -> QuotaConfig {
        QuotaConfig {
            per_minute,
            per_hour,
            ..QuotaConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_sliding_minute() {
        let mut q = Quota::new(&cfg(100, 1500));
        let start = Instant::now();
        let mut sends = Vec::new();
        // Try to send every 100 ms for 5 minutes; record what was allowed.
        for step in 0..3000u64 {
            let now = start + Duration::from_millis(step * 100);
            if q.try_acquire(Endpoint::GetResultDownloadLink, now).is_ok() {
                sends.push(now);
            }
        }
        for (i, &t) in sends.iter().enumerate() {
            let in_window = sends[i..]
                .iter()
                .take_while(|&&s| s < t + Duration::from_secs(60))
                .count();
            assert!(
                in_window <= 100,
                "{in_window} sends in the minute after {i}"
            );
        }
        // 5 full minutes of demand: exactly 100 per minute get through, no more, no less.
        assert_eq!(sends.len(), 500);
    }

    // See: #11
    #[tokio::test(start_paused = true)]
    async fn issue_11_the_log_is_sized_by_what_it_holds() {
        let mut q = Quota::new(&cfg(100, 1500));
        let start = Instant::now();
        let ep = Endpoint::GetResultDownloadLink;
        // A backlog: try every 100 ms for an hour and a half.
        let mut sent = 0;
        for step in 0..54_000u64 {
            if q.try_acquire(ep, start + Duration::from_millis(step * 100))
                .is_ok()
            {
                sent += 1;
            }
            let [minute, hour] = &q.budgets[ep as usize].1.windows;
            assert!(minute.sent.len() <= 100 && hour.sent.len() <= 1500);
            assert!(minute.sent.capacity() <= 100, "{}", minute.sent.capacity());
            assert!(hour.sent.capacity() <= 1500, "{}", hour.sent.capacity());
        }
        assert!(sent > 1500, "the hour window filled and slid: {sent}");
        // Idle for two hours: the logs are empty and give their room back.
        let status = q.status(start + Duration::from_secs(5 * 3600));
        assert!(status.iter().all(|w| w.used == 0));
        for w in &q.budgets[ep as usize].1.windows {
            assert!(w.sent.capacity() <= 4 * MIN_LOG, "{}", w.sent.capacity());
        }
    }

    /// See: #34. A budget is its two windows and little more: the backoff of a 429 storm is
    /// not kept inline in every budget of every tenant.
    #[test]
    fn a_budget_holds_its_windows_and_little_more() {
        assert!(
            size_of::<Budget>() <= 2 * size_of::<Window>() + 32,
            "{} bytes",
            size_of::<Budget>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hourly_limit_binds_after_fifteen_minutes() {
        let mut q = Quota::new(&cfg(100, 1500));
        let start = Instant::now();
        let mut allowed = 0;
        for step in 0..(3600 * 2) {
            let now =
                start + Duration::from_secs(step / 2) + Duration::from_millis((step % 2) * 500);
            if q.try_acquire(Endpoint::ListMachineActions, now).is_ok() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 1500);
        // The first 100 sends (at t=0) leave the hour window an hour and its margin later
        // (36.25 s: 1 % of the hour and 250 ms for the trip to the API).
        let margin = Duration::from_millis(36_250);
        let now = start + Duration::from_secs(3600);
        assert_eq!(q.wait(Endpoint::ListMachineActions, now), margin);
        assert_eq!(
            q.wait(Endpoint::ListMachineActions, now + margin),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_says_when_the_oldest_send_leaves() {
        let mut q = Quota::new(&cfg(2, 1500));
        let t0 = Instant::now();
        q.try_acquire(Endpoint::GetMachineAction, t0).unwrap();
        q.try_acquire(Endpoint::GetMachineAction, t0 + Duration::from_secs(10))
            .unwrap();
        let err = q
            .try_acquire(Endpoint::GetMachineAction, t0 + Duration::from_secs(20))
            .unwrap_err();
        // 60 s after the first send, plus the margin (600 ms + 250 ms).
        assert_eq!(err, Duration::from_millis(40_850));
        // Other endpoints have their own budget.
        assert!(
            q.try_acquire(Endpoint::ListMachineActions, t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(
            q.try_acquire(
                Endpoint::GetMachineAction,
                t0 + Duration::from_millis(60_849)
            )
            .is_err()
        );
        assert!(
            q.try_acquire(
                Endpoint::GetMachineAction,
                t0 + Duration::from_millis(60_850)
            )
            .is_ok()
        );
    }

    #[test]
    fn the_margin_is_small_but_covers_the_trip() {
        assert_eq!(
            send_margin(Duration::from_secs(60)),
            Duration::from_millis(850)
        );
        assert_eq!(
            send_margin(Duration::from_secs(3600)),
            Duration::from_millis(36_250)
        );
        // Short (scaled) windows: at most a tenth.
        assert_eq!(
            send_margin(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_the_budget() {
        let mut q = Quota::new(&cfg(100, 1500));
        let t0 = Instant::now();
        let applied = q.throttled(
            Endpoint::GetResultDownloadLink,
            t0,
            Some(Duration::from_secs(7)),
        );
        assert_eq!(applied, Duration::from_secs(7));
        assert_eq!(
            q.try_acquire(Endpoint::GetResultDownloadLink, t0 + Duration::from_secs(2)),
            Err(Duration::from_secs(5))
        );
        assert!(
            q.try_acquire(Endpoint::GetResultDownloadLink, t0 + Duration::from_secs(7))
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_without_retry_after_grows_and_is_capped() {
        let mut q = Quota::new(&cfg(100, 1500));
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..10)
            .map(|i| {
                q.throttled(
                    Endpoint::ListMachineActions,
                    t0 + Duration::from_secs(i),
                    None,
                )
            })
            .collect();
        // Jitter adds up to one more base delay; the cap is one short window.
        assert!(
            waits[0] >= Duration::from_secs(1) && waits[0] <= Duration::from_secs(2),
            "{waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(60)),
            "{waits:?}"
        );
        assert!(waits[9] >= Duration::from_secs(30), "{waits:?}");
        // A success resets it.
        q.succeeded(Endpoint::ListMachineActions, t0 + Duration::from_secs(20));
        let again = q.throttled(
            Endpoint::ListMachineActions,
            t0 + Duration::from_secs(21),
            None,
        );
        assert!(again <= Duration::from_secs(2), "{again:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_lowers_the_limit_until_calls_succeed_again() {
        let mut q = Quota::new(&cfg(100, 1500));
        let t0 = Instant::now();
        for _ in 0..40 {
            q.try_acquire(Endpoint::GetResultDownloadLink, t0).unwrap();
        }
        // Someone else spent the other 60: we hear a 429 after 40.
        q.throttled(
            Endpoint::GetResultDownloadLink,
            t0,
            Some(Duration::from_secs(1)),
        );
        let s = q.status(t0);
        let minute = s
            .iter()
            .find(|w| w.endpoint == "get_result_download_link" && w.window == "1m")
            .unwrap();
        assert_eq!(
            (
                minute.limit,
                minute.effective,
                minute.used,
                minute.remaining
            ),
            (100, 30, 40, 0)
        );
        // After the window slides, only 30 per minute are sent...
        let t1 = t0 + Duration::from_secs(61);
        let sent = (0..100)
            .filter(|_| q.try_acquire(Endpoint::GetResultDownloadLink, t1).is_ok())
            .count();
        assert_eq!(sent, 30);
        // ...and successes raise it back, 5 per success, to the configured limit, never beyond.
        q.succeeded(Endpoint::GetResultDownloadLink, t1);
        let limit_now = |q: &mut Quota, ep: &str| {
            q.status(t1)
                .into_iter()
                .find(|w| w.endpoint == ep && w.window == "1m")
                .unwrap()
                .effective
        };
        assert_eq!(limit_now(&mut q, "get_result_download_link"), 35);
        for _ in 0..50 {
            q.succeeded(Endpoint::GetResultDownloadLink, t1);
        }
        assert_eq!(limit_now(&mut q, "get_result_download_link"), 100);

        // A 429 after a single call of ours leaves a tenth of the limit, not one call.
        q.try_acquire(Endpoint::ListMachineActions, t1).unwrap();
        q.throttled(
            Endpoint::ListMachineActions,
            t1,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(limit_now(&mut q, "list_machine_actions"), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn shared_scope_is_one_budget_with_a_discovery_reserve() {
        let mut q = Quota::new(&QuotaConfig {
            scope: QuotaScope::Shared,
            ..cfg(3, 10)
        });
        let t0 = Instant::now();
        q.try_acquire(Endpoint::GetResultDownloadLink, t0).unwrap();
        q.try_acquire(Endpoint::GetMachineAction, t0).unwrap();
        // Results may not take the last call of the window...
        assert!(q.try_acquire(Endpoint::GetResultDownloadLink, t0).is_err());
        assert!(!q.wait(Endpoint::GetResultDownloadLink, t0).is_zero());
        // ...discovery may.
        assert!(q.wait(Endpoint::ListMachineActions, t0).is_zero());
        q.try_acquire(Endpoint::ListMachineActions, t0).unwrap();
        let status = q.status(t0);
        assert_eq!(status.len(), 2);
        assert_eq!(
            status[0],
            WindowStatus {
                endpoint: "all",
                window: "1m",
                limit: 3,
                effective: 3,
                used: 3,
                remaining: 0
            }
        );
    }

    /// What a poll reads of its own budget: the smallest `remaining` over the windows of the
    /// budget an endpoint spends, and that budget's hour window; with `scope: shared` the one
    /// budget of all endpoints.
    #[tokio::test(start_paused = true)]
    async fn remaining_and_hour_window_read_the_budget_an_endpoint_spends() {
        let t0 = Instant::now();
        let mut q = Quota::new(&cfg(3, 10));
        q.try_acquire(Endpoint::ListMachineActions, t0).unwrap();
        q.try_acquire(Endpoint::ListMachineActions, t0).unwrap();
        assert_eq!(
            q.remaining(Endpoint::ListMachineActions, t0),
            1,
            "the minute is smaller"
        );
        assert_eq!(q.remaining(Endpoint::GetResultDownloadLink, t0), 3);
        assert_eq!(q.hour_window(Endpoint::ListMachineActions, t0), (2, 10));
        assert_eq!(q.hour_window(Endpoint::GetMachineAction, t0), (0, 10));
        let mut shared = Quota::new(&QuotaConfig {
            scope: QuotaScope::Shared,
            ..cfg(30, 7)
        });
        shared.try_acquire(Endpoint::GetMachineAction, t0).unwrap();
        assert_eq!(shared.remaining(Endpoint::ListMachineActions, t0), 6);
        assert_eq!(shared.hour_window(Endpoint::ListMachineActions, t0), (1, 7));
    }
}
