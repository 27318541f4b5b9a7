//! Our API quota policy: two sliding windows per budget, and `Retry-After` blocks.
//!
//! Owns the decision "may this call be sent now, and if not, how long until it may". It is a
//! pure core: calls and `Instant`s in, decisions out; no sockets, no sleeping (the client does
//! that). Counting is exact (a log of send instants), so the limits are never exceeded in any
//! window position, which a token bucket cannot promise for a sliding window.
//! Does not own which call goes first (the collector) nor the HTTP retry (the client).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{QuotaConfig, QuotaScope};

/// The three MDE endpoints that count against the API quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    ListMachineActions,
    GetMachineAction,
    GetResultDownloadLink,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::ListMachineActions,
        Endpoint::GetMachineAction,
        Endpoint::GetResultDownloadLink,
    ];
    /// The `endpoint` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ListMachineActions => "list_machine_actions",
            Endpoint::GetMachineAction => "get_machine_action",
            Endpoint::GetResultDownloadLink => "get_result_download_link",
        }
    }
}

/// One sliding window: at most `limit` sends within any span of `length`.
#[derive(Debug)]
struct Window {
    label: &'static str,
    limit: u32,
    length: Duration,
    sent: VecDeque<Instant>,
}

impl Window {
    fn new(label: &'static str, limit: u32, length: Duration) -> Self {
        Window {
            label,
            limit,
            length,
            sent: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&first) = self.sent.front() {
            if now.saturating_duration_since(first) >= self.length {
                self.sent.pop_front();
            } else {
                break;
            }
        }
    }

    fn used(&self) -> u32 {
        u32::try_from(self.sent.len()).unwrap_or(u32::MAX)
    }

    /// How long until one more send fits (zero if it fits now). Call after `prune`.
    fn wait(&self, now: Instant) -> Duration {
        if self.used() < self.limit {
            return Duration::ZERO;
        }
        // The send that must leave the window for a new one to fit.
        let idx = self.sent.len() - self.limit as usize;
        (self.sent[idx] + self.length).saturating_duration_since(now)
    }
}

/// One budget: a short and a long window, plus a block set by `Retry-After`.
#[derive(Debug)]
struct Budget {
    windows: [Window; 2],
    blocked_until: Option<Instant>,
}

impl Budget {
    fn new(cfg: &QuotaConfig) -> Self {
        Budget {
            windows: [
                Window::new("1m", cfg.per_minute, cfg.minute),
                Window::new("1h", cfg.per_hour, cfg.hour),
            ],
            blocked_until: None,
        }
    }

    fn wait(&mut self, now: Instant) -> Duration {
        let mut wait = self
            .blocked_until
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default();
        for w in &mut self.windows {
            w.prune(now);
            wait = wait.max(w.wait(now));
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
    pub limit: u32,
    pub used: u32,
    pub remaining: u32,
}

/// The budgets of one tenant.
#[derive(Debug)]
pub struct Quota {
    scope: QuotaScope,
    /// One budget per endpoint (in `Endpoint::ALL` order), or a single shared one.
    budgets: Vec<(&'static str, Budget)>,
}

impl Quota {
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

    /// How long until a call to `ep` may be sent; zero means now.
    pub fn wait(&mut self, ep: Endpoint, now: Instant) -> Duration {
        self.budget(ep).wait(now)
    }

    /// Record a send if it fits now; otherwise say how long to wait. Nothing is recorded then.
    pub fn try_acquire(&mut self, ep: Endpoint, now: Instant) -> Result<(), Duration> {
        let budget = self.budget(ep);
        let wait = budget.wait(now);
        if !wait.is_zero() {
            return Err(wait);
        }
        for w in &mut budget.windows {
            w.sent.push_back(now);
        }
        Ok(())
    }

    /// A 429 arrived: send nothing more on this budget until `retry_after` has passed.
    pub fn throttled(&mut self, ep: Endpoint, now: Instant, retry_after: Duration) {
        let budget = self.budget(ep);
        let until = now + retry_after;
        budget.blocked_until = Some(budget.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Used and remaining calls in every window of every budget.
    pub fn status(&mut self, now: Instant) -> Vec<WindowStatus> {
        let mut out = Vec::new();
        for (key, budget) in &mut self.budgets {
            for w in &mut budget.windows {
                w.prune(now);
                out.push(WindowStatus {
                    endpoint: key,
                    window: w.label,
                    limit: w.limit,
                    used: w.used(),
                    remaining: w.limit.saturating_sub(w.used()),
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
        let now = start + Duration::from_secs(3600);
        // The first 100 sends (at t=0) leave the hour window exactly now.
        assert_eq!(q.wait(Endpoint::ListMachineActions, now), Duration::ZERO);
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
        assert_eq!(err, Duration::from_secs(40));
        // Other endpoints have their own budget.
        assert!(
            q.try_acquire(Endpoint::ListMachineActions, t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(
            q.try_acquire(Endpoint::GetMachineAction, t0 + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_the_budget() {
        let mut q = Quota::new(&cfg(100, 1500));
        let t0 = Instant::now();
        q.throttled(Endpoint::GetResultDownloadLink, t0, Duration::from_secs(7));
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
    async fn shared_scope_is_one_budget() {
        let mut q = Quota::new(&QuotaConfig {
            scope: QuotaScope::Shared,
            ..cfg(2, 10)
        });
        let t0 = Instant::now();
        q.try_acquire(Endpoint::ListMachineActions, t0).unwrap();
        q.try_acquire(Endpoint::GetMachineAction, t0).unwrap();
        assert!(q.try_acquire(Endpoint::GetResultDownloadLink, t0).is_err());
        let status = q.status(t0);
        assert_eq!(status.len(), 2);
        assert_eq!(
            status[0],
            WindowStatus {
                endpoint: "all",
                window: "1m",
                limit: 2,
                used: 2,
                remaining: 0
            }
        );
    }
}
