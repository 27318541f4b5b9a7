//! What a tenant's poll records: its outcome and duration (`mde_exporter_poll_*`,
//! `mde_exporter_last_poll_success_timestamp_seconds`), results waiting
//! (`mde_liveresponse_pending_results`), and discovery (`mde_liveresponse_actions_in_flight`,
//! `_in_flight_oldest_creation_timestamp_seconds`, `_in_flight_abandoned`,
//! `_discovery_missed`, and of #20 `_discovery_in_flight_filter_supported`,
//! `_discovery_rereads_pending`, `_discovery_interval_seconds`).
//!
//! Owns the writing of those families. Does not own the poll (`collector`).

use std::time::Duration;

use super::{Metrics, StatusLabels, TraceLabel, tenant};

impl Metrics {
    /// One poll of a tenant ended (`ok` or not) after `elapsed`, at `now` (Unix seconds),
    /// with `pending` results waiting.
    pub fn record_poll(
        &self,
        tenant_name: &str,
        ok: bool,
        elapsed: Duration,
        now: f64,
        pending: usize,
        exemplar: Option<TraceLabel>,
    ) {
        let labels = tenant(tenant_name);
        self.poll_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64(), exemplar, None);
        self.poll_success.get_or_create(&labels).set(i64::from(ok));
        if ok {
            self.last_poll_success.get_or_create(&labels).set(now);
        }
        self.pending_results
            .get_or_create(&labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Results waiting to be fetched, between polls.
    pub fn set_pending_results(&self, tenant_name: &str, pending: usize) {
        self.pending_results
            .get_or_create(&tenant(tenant_name))
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The actions not final yet, by status, and the creation time (Unix seconds) of the
    /// oldest; no oldest series when none is in flight (an alert on its age must not fire on
    /// "nothing").
    pub fn set_in_flight(
        &self,
        tenant_name: &str,
        by_status: impl IntoIterator<Item = (String, i64)>,
        oldest: Option<f64>,
    ) {
        for (status, n) in by_status {
            self.actions_in_flight
                .get_or_create(&StatusLabels {
                    tenant: tenant_name.to_string(),
                    status,
                })
                .set(n);
        }
        match oldest {
            Some(t) => {
                self.in_flight_oldest
                    .get_or_create(&tenant(tenant_name))
                    .set(t);
            }
            None => {
                self.in_flight_oldest.remove(&tenant(tenant_name));
            }
        }
    }

    /// An action still not final past `in_flight_horizon`, no longer followed.
    pub fn record_in_flight_abandoned(&self, tenant_name: &str) {
        self.in_flight_abandoned
            .get_or_create(&tenant(tenant_name))
            .inc();
    }

    /// A final action the reconciliation sweep found that incremental discovery missed.
    pub fn record_discovery_missed(&self, tenant_name: &str) {
        self.discovery_missed
            .get_or_create(&tenant(tenant_name))
            .inc();
    }

    /// Whether the API accepts the status-filtered listing of what is in flight (1), or
    /// refused it with a 400 and discovery reads every action in flight by id instead (0).
    pub fn set_in_flight_filter_supported(&self, tenant_name: &str, supported: bool) {
        self.in_flight_filter_supported
            .get_or_create(&tenant(tenant_name))
            .set(i64::from(supported));
    }

    /// Followed actions a poll cut short by quota did not read again: the next poll does.
    pub fn set_discovery_rereads_pending(&self, tenant_name: &str, waiting: usize) {
        self.discovery_rereads_pending
            .get_or_create(&tenant(tenant_name))
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The time until this tenant's next poll, as the cadence chose it.
    pub fn set_discovery_interval(&self, tenant_name: &str, interval: Duration) {
        self.discovery_interval
            .get_or_create(&tenant(tenant_name))
            .set(interval.as_secs_f64());
    }
}
