//! The `self_monitoring:` section: how much of the exporter's own per-tenant series it keeps
//! when nothing has happened yet (#34).
//!
//! Owns the section whole: its one struct as serde reads it (unknown keys are errors) and its
//! defaults. Does not own the series (`crate::metrics`), nor which series a tenant starts with
//! (`crate::record::series::init_tenant_series`, called by `crate::shared` and `crate::app`
//! when this section says so).

use serde::Deserialize;

/// The `self_monitoring:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfMonitoring {
    /// `true` (the default): every served tenant starts its self-monitoring series at 0 (per
    /// API endpoint: requests throttled, Retry-After, request durations; per reason, per final
    /// status, and the per-tenant counters), so that `rate()` and dashboards see 0 before the
    /// first event. `false`: a series appears with its first event; the families and their
    /// labels are the same, an idle tenant just has fewer series (67 instead of 167 for one
    /// whose API cannot be reached).
    pub tenant_series_at_zero: bool,
}

impl Default for SelfMonitoring {
    fn default() -> Self {
        SelfMonitoring {
            tenant_series_at_zero: true,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    #[test]
    fn default_is_every_series_at_zero_and_false_is_read() {
        let c = parse(GOOD).unwrap();
        assert!(c.self_monitoring.tenant_series_at_zero);
        assert_eq!(c.self_monitoring, SelfMonitoring::default());
        let c = parse(&format!(
            "self_monitoring:\n  tenant_series_at_zero: false\n{GOOD}"
        ))
        .unwrap();
        assert!(!c.self_monitoring.tenant_series_at_zero);
    }

    #[test]
    fn errors_name_the_key() {
        assert_errors(&[(
            format!("self_monitoring:\n  tenant_series_at_zero: sometimes\n{GOOD}"),
            "config file cfg.yml: self_monitoring.tenant_series_at_zero: invalid type: string \"sometimes\", expected a boolean at line 2 column 26",
        )]);
        let e = parse(&format!(
            "self_monitoring:\n  tenant_series_at_zer0: false\n{GOOD}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "config file cfg.yml: self_monitoring: unknown field `tenant_series_at_zer0`"
            ),
            "{e}"
        );
    }
}
