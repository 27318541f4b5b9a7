//! A tenant's `discovery:` section: how its machine actions are found.
//!
//! Owns the section whole: its one struct as serde reads it (unknown keys are errors), its
//! defaults, its checks, the largest batch size, and `min_interval`'s default that depends on
//! `poll_interval`. Does not own discovery itself (`crate::poll::discovery`, `collector`).

use std::time::Duration;

use serde::Deserialize;

use super::check::Invalid;

/// Largest `discovery.batch_size`: more ids would not fit a URL of a safe length anyway.
pub const MAX_DISCOVERY_BATCH: usize = 50;

/// `discovery.list_budget_share` when not written.
pub const DEFAULT_LIST_BUDGET_SHARE: f64 = 0.5;
/// `discovery.min_interval` when not written (and `poll_interval` is not shorter).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// How a tenant's machine actions are discovered: the `discovery:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Each poll lists actions created since the watermark minus this margin, for API
    /// indexing lag and clock skew.
    #[serde(with = "humantime_serde")]
    pub overlap: Duration,
    /// Actions not final are followed this long after their creation; past it they are
    /// counted as abandoned. Also how far back in-flight actions are looked up at first start.
    #[serde(with = "humantime_serde")]
    pub in_flight_horizon: Duration,
    /// How often a full-window reconciliation sweep runs (only with spare list quota).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// At most this many ids per `id eq '…' or …` filter when actions in flight are read again.
    pub batch_size: usize,
    /// `false`: the pre-#9 behaviour, every poll lists the whole `lookback` window (kept for
    /// comparison benchmarks and as an escape hatch).
    pub incremental: bool,
    /// The share of the list endpoint's hour budget the polls of this tenant may spend: the
    /// cadence polls as often as that allows (#20).
    pub list_budget_share: f64,
    /// The shortest time between two polls; `poll_interval` is the longest. Not written: 5 s,
    /// or `poll_interval` when that is shorter (set by [`DiscoveryConfig::validate`]).
    #[serde(skip)]
    pub min_interval: Duration,
    /// `min_interval` as written; `validate` turns it into `min_interval` and leaves `None`,
    /// so two validated sections compare by what they mean.
    #[serde(rename = "min_interval", with = "humantime_serde")]
    written_min_interval: Option<Duration>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            overlap: Duration::from_secs(5 * 60),
            in_flight_horizon: Duration::from_secs(7 * 24 * 3600),
            reconcile_interval: Duration::from_secs(6 * 3600),
            batch_size: 20,
            incremental: true,
            list_budget_share: DEFAULT_LIST_BUDGET_SHARE,
            min_interval: DEFAULT_MIN_INTERVAL,
            written_min_interval: None,
        }
    }
}

impl DiscoveryConfig {
    /// Check the section and resolve `min_interval`; the error's key is the key under
    /// `discovery.`. `poll_interval` is the longest time between two polls, which
    /// `min_interval` must not exceed.
    pub(super) fn validate(&mut self, poll_interval: Duration) -> Result<(), Invalid> {
        let d = &*self;
        if d.overlap > Duration::from_secs(24 * 3600) {
            return Err(Invalid::new("overlap", "must be at most 24h"));
        }
        if d.in_flight_horizon < Duration::from_secs(3600) {
            return Err(Invalid::new(
                "in_flight_horizon",
                "must be at least 1h (Live Response actions of an offline device wait in the queue for up to 2 hours; older documentation said 3 days)",
            ));
        }
        if d.overlap >= d.in_flight_horizon {
            return Err(Invalid::new(
                "overlap",
                "must be shorter than discovery.in_flight_horizon",
            ));
        }
        if d.reconcile_interval.is_zero() {
            return Err(Invalid::new("reconcile_interval", "must be greater than 0"));
        }
        if d.batch_size == 0 || d.batch_size > MAX_DISCOVERY_BATCH {
            return Err(Invalid::new(
                "batch_size",
                format!("must be between 1 and {MAX_DISCOVERY_BATCH}"),
            ));
        }
        // `!(x > 0.0)` also refuses NaN.
        if !(d.list_budget_share > 0.0 && d.list_budget_share <= 1.0) {
            return Err(Invalid::new(
                "list_budget_share",
                format!(
                    "must be greater than 0 and at most 1 (got {})",
                    d.list_budget_share
                ),
            ));
        }
        self.min_interval = match self.written_min_interval.take() {
            None => DEFAULT_MIN_INTERVAL.min(poll_interval),
            Some(m) if m.is_zero() => {
                return Err(Invalid::new("min_interval", "must be greater than 0"));
            }
            Some(m) if m > poll_interval => {
                return Err(Invalid::new(
                    "min_interval",
                    "must be at most poll_interval (the longest time between two polls)",
                ));
            }
            Some(m) => m,
        };
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    #[test]
    fn discovery_defaults_and_keys() {
        let d = &parse(GOOD).unwrap().tenants[0].selectors.discovery;
        assert_eq!(d, &DiscoveryConfig::default());
        assert_eq!(d.overlap, Duration::from_secs(300));
        assert_eq!(d.in_flight_horizon, Duration::from_secs(7 * 86400));
        assert_eq!(d.reconcile_interval, Duration::from_secs(6 * 3600));
        let c = parse(&format!(
            "{GOOD}    discovery:\n      overlap: 2m\n      in_flight_horizon: 3d\n      reconcile_interval: 1h\n      batch_size: 10\n      incremental: false\n"
        ))
        .unwrap();
        let d = &c.tenants[0].selectors.discovery;
        assert_eq!(d.overlap, Duration::from_secs(120));
        assert_eq!(d.in_flight_horizon, Duration::from_secs(3 * 86400));
        assert_eq!(d.batch_size, 10);
        assert!(!d.incremental);
        // See: #20. The cadence's keys; min_interval never above a shorter poll_interval.
        assert_eq!(d.list_budget_share, 0.5);
        assert_eq!(d.min_interval, Duration::from_secs(5));
        let c = parse(&format!(
            "{GOOD}    discovery:\n      list_budget_share: 1\n      min_interval: 30s\n"
        ))
        .unwrap();
        let d = &c.tenants[0].selectors.discovery;
        assert_eq!(
            (d.list_budget_share, d.min_interval),
            (1.0, Duration::from_secs(30))
        );
        let c = parse(&format!("poll_interval: 2s\n{GOOD}")).unwrap();
        assert_eq!(
            c.tenants[0].selectors.discovery.min_interval,
            Duration::from_secs(2)
        );
    }

    // See: #9
    #[test]
    fn discovery_errors_name_the_key() {
        let bad = |section: &str| format!("{GOOD}    discovery:\n{section}");
        assert_errors(&[
            (
                bad("      batch_size: 0\n"),
                "config file cfg.yml: tenants[0].discovery.batch_size: must be between 1 and 50",
            ),
            (
                bad("      batch_size: 51\n"),
                "config file cfg.yml: tenants[0].discovery.batch_size: must be between 1 and 50",
            ),
            (
                bad("      in_flight_horizon: 10m\n"),
                "config file cfg.yml: tenants[0].discovery.in_flight_horizon: must be at least 1h (Live Response actions of an offline device wait in the queue for up to 2 hours; older documentation said 3 days)",
            ),
            (
                bad("      overlap: 2d\n"),
                "config file cfg.yml: tenants[0].discovery.overlap: must be at most 24h",
            ),
            (
                bad("      overlap: 2h\n      in_flight_horizon: 1h\n"),
                "config file cfg.yml: tenants[0].discovery.overlap: must be shorter than discovery.in_flight_horizon",
            ),
            (
                bad("      reconcile_interval: 0s\n"),
                "config file cfg.yml: tenants[0].discovery.reconcile_interval: must be greater than 0",
            ),
            // See: #20
            (
                bad("      list_budget_share: 0\n"),
                "config file cfg.yml: tenants[0].discovery.list_budget_share: must be greater than 0 and at most 1 (got 0)",
            ),
            (
                bad("      list_budget_share: 1.5\n"),
                "config file cfg.yml: tenants[0].discovery.list_budget_share: must be greater than 0 and at most 1 (got 1.5)",
            ),
            (
                bad("      list_budget_share: -0.2\n"),
                "config file cfg.yml: tenants[0].discovery.list_budget_share: must be greater than 0 and at most 1 (got -0.2)",
            ),
            (
                bad("      min_interval: 0s\n"),
                "config file cfg.yml: tenants[0].discovery.min_interval: must be greater than 0",
            ),
            (
                format!("poll_interval: 30s\n{}", bad("      min_interval: 31s\n")),
                "config file cfg.yml: tenants[0].discovery.min_interval: must be at most poll_interval (the longest time between two polls)",
            ),
        ]);
        let e = parse(&bad("      overlpa: 1m\n")).unwrap_err().to_string();
        assert!(
            e.starts_with("config file cfg.yml: tenants[0].discovery: unknown field `overlpa`"),
            "{e}"
        );
    }
}
