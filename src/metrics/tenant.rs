//! A tenant's series started at 0 (`Metrics::init_tenant_series`): per API endpoint
//! (throttled, Retry-After, request durations), per known reason (fetch failures, evicted
//! series), per final action status, and the per-tenant counters.
//!
//! Owns writing those zero-valued series. Does not own which endpoints, reasons and statuses
//! exist (the caller, `series`, lists them from `api` and `quota`) nor when it runs (`shared`).

use super::{Metrics, StatusLabels, endpoint, reason, tenant};

/// The label values a tenant's zero-valued series are started for.
#[derive(Clone, Copy, Debug)]
pub struct TenantSeries<'a> {
    /// Every quota endpoint (`mde_api_throttled`, `_retry_after_seconds`, request durations).
    pub endpoints: &'a [&'a str],
    /// The download endpoint (request durations only).
    pub download: &'a str,
    /// Every reason of `mde_liveresponse_fetch_failures_total`.
    pub fetch_failures: &'a [&'a str],
    /// Every reason of `mde_exporter_series_evicted_total`.
    pub evicted: &'a [&'a str],
    /// Every final action status (`mde_liveresponse_actions_total`).
    pub final_statuses: &'a [&'a str],
}

impl Metrics {
    /// Start at 0 the series of tenant `t` for the label values in `known`; values already
    /// there are kept, so a reload can call it again.
    pub fn init_tenant_series(&self, t: &str, known: &TenantSeries<'_>) {
        for ep in known.endpoints {
            let labels = endpoint(t, ep);
            let _ = self.api_throttled.get_or_create(&labels);
            let _ = self.retry_after.get_or_create(&labels);
            let _ = self.api_duration.get_or_create(&labels);
        }
        let _ = self
            .api_duration
            .get_or_create(&endpoint(t, known.download));
        for r in known.fetch_failures {
            let _ = self.fetch_failures.get_or_create(&reason(t, r));
        }
        for r in known.evicted {
            let _ = self.series_evicted.get_or_create(&reason(t, r));
        }
        for status in known.final_statuses {
            let _ = self.actions.get_or_create(&StatusLabels {
                tenant: t.to_string(),
                status: status.to_string(),
            });
        }
        let labels = tenant(t);
        let _ = self.poll_duration.get_or_create(&labels);
        let _ = self.files.get_or_create(&labels);
        let _ = self.file_bytes.get_or_create(&labels);
        let _ = self.transcript_bytes.get_or_create(&labels);
        let _ = self.invalid_actions.get_or_create(&labels);
        let _ = self.pending_results.get_or_create(&labels);
        let _ = self.discovery_rereads_pending.get_or_create(&labels);
        let _ = self.state_identity_changes.get_or_create(&labels);
    }
}
