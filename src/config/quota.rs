//! A tenant's `quota:` section: the API budget the exporter holds itself to.
//!
//! Owns the section whole: its one struct as serde reads it (unknown keys are errors), its
//! defaults (the documented 100 per minute and 1500 per hour), its checks and the time
//! scaling of demo and benchmark. Does not own spending the budget (`crate::quota`).

use std::time::Duration;

use serde::Deserialize;

use super::check::{Invalid, check_range};
use super::limits;

/// Whether each endpoint has its own budget or all endpoints share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// The documented behaviour: every endpoint has its own 100/min and 1500/h.
    #[default]
    PerEndpoint,
    /// One budget for all endpoints, for app registrations shared with other tools.
    Shared,
}

/// The API quota we hold ourselves to, per tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Calls allowed in one short window (documented: 100 per minute).
    pub per_minute: u32,
    /// Calls allowed in one long window (documented: 1500 per hour).
    pub per_hour: u32,
    /// Length of the short window; shrink it only for tests and benchmarks.
    #[serde(with = "humantime_serde")]
    pub minute: Duration,
    /// Length of the long window.
    #[serde(with = "humantime_serde")]
    pub hour: Duration,
    pub scope: QuotaScope,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            per_minute: 100,
            per_hour: 1500,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
            scope: QuotaScope::PerEndpoint,
        }
    }
}

impl QuotaConfig {
    /// Divide the window lengths by `factor` (demo and benchmark: a minute lasting a second).
    pub fn time_scaled(mut self, factor: f64) -> Self {
        self.minute = self.minute.div_f64(factor);
        self.hour = self.hour.div_f64(factor);
        self
    }

    /// The section's checks; the key is `quota` or a key under it.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.per_minute == 0 || self.per_hour == 0 {
            return Err(Invalid::new(
                "quota",
                "per_minute and per_hour must be greater than 0",
            ));
        }
        if self.minute.is_zero() || self.hour.is_zero() {
            return Err(Invalid::new(
                "quota",
                "window lengths must be greater than 0",
            ));
        }
        for (field, v) in [("quota.minute", self.minute), ("quota.hour", self.hour)] {
            check_range(v, (Duration::ZERO, limits::QUOTA_WINDOW_MAX))
                .map_err(|m| Invalid::new(field, m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    #[test]
    fn defaults_follow_the_documented_limits() {
        let q = &parse(GOOD).unwrap().tenants[0].quota;
        assert_eq!(q, &QuotaConfig::default());
        assert_eq!((q.per_minute, q.per_hour), (100, 1500));
        let q = &parse(&format!(
            "{GOOD}    quota:\n      per_minute: 10\n      scope: shared\n"
        ))
        .unwrap()
        .tenants[0]
            .quota;
        assert_eq!((q.per_minute, q.scope), (10, QuotaScope::Shared));
    }

    #[test]
    fn errors_name_the_key() {
        assert_errors(&[
            (
                format!("{GOOD}    quota:\n      per_hour: 0\n"),
                "config file cfg.yml: tenants[0].quota: per_minute and per_hour must be greater than 0",
            ),
            (
                format!("{GOOD}    quota:\n      minute: 0s\n"),
                "config file cfg.yml: tenants[0].quota: window lengths must be greater than 0",
            ),
            (
                format!("{GOOD}    quota:\n      minute: 8days\n"),
                "config file cfg.yml: tenants[0].quota.minute: must be at most 7d (got 8d)",
            ),
        ]);
    }
}
