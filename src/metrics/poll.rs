//! A tenant's poll's families: its outcome and duration (`mde_exporter_poll_*`,
//! `mde_exporter_last_poll_success_timestamp_seconds`), results waiting
//! (`mde_liveresponse_pending_results`), and discovery (`mde_liveresponse_actions_in_flight`,
//! `_in_flight_oldest_creation_timestamp_seconds`, `_in_flight_abandoned`,
//! `_discovery_missed`, and of #20 `_discovery_in_flight_filter_supported`,
//! `_discovery_rereads_pending`, `_discovery_interval_seconds`, and of #33
//! `_discovery_cadence`).
//!
//! Owns those families ([`PollMetrics`], fields private: the methods here are their one
//! writer), their registration, their series started at 0 for a tenant, and their writing.
//! Does not own the poll (`collector`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::{CadenceLabels, StatusLabels, TenantLabels, TraceLabel, tenant};
use super::native::Buckets;
use super::per_tenant::{TenantFamily, TenantHistogramFamily};
use super::registry::{FloatGauge, Parts, background};

/// The `cadence` label's values of `mde_liveresponse_discovery_cadence` (the discovery
/// cadence's names, checked against it there).
pub const CADENCES: [&str; 3] = ["fast", "backing_off", "poll_interval"];
/// Its `reason` label's values: why the tenant is on its cadence.
pub const CADENCE_REASONS: [&str; 4] = ["in_flight", "configured_ids", "found_new", "quiet"];

const POLL_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The families a tenant's poll writes.
pub struct PollMetrics {
    poll_success: TenantFamily<TenantLabels, Gauge>,
    last_poll_success: TenantFamily<TenantLabels, FloatGauge>,
    poll_duration: TenantHistogramFamily<TenantLabels>,
    pending_results: TenantFamily<TenantLabels, Gauge>,
    // Discovery, in flight (#9).
    actions_in_flight: TenantFamily<StatusLabels, Gauge>,
    in_flight_oldest: TenantFamily<TenantLabels, FloatGauge>,
    in_flight_abandoned: TenantFamily<TenantLabels, Counter>,
    discovery_missed: TenantFamily<TenantLabels, Counter>,
    // Discovery at fleet scale (#20).
    in_flight_filter_supported: TenantFamily<TenantLabels, Gauge>,
    discovery_rereads_pending: TenantFamily<TenantLabels, Gauge>,
    discovery_interval: TenantFamily<TenantLabels, FloatGauge>,
    // The cadence a tenant is on and why (#33): one series a tenant, the current one.
    discovery_cadence: TenantFamily<CadenceLabels, Gauge>,
}

impl PollMetrics {
    /// The families, registered in `r`.
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = PollMetrics {
            poll_success: TenantFamily::default(),
            last_poll_success: TenantFamily::default(),
            poll_duration: TenantFamily::new_with_constructor(Buckets(POLL_BUCKETS)),
            pending_results: TenantFamily::default(),
            actions_in_flight: TenantFamily::default(),
            in_flight_oldest: TenantFamily::default(),
            in_flight_abandoned: TenantFamily::default(),
            discovery_missed: TenantFamily::default(),
            in_flight_filter_supported: TenantFamily::default(),
            discovery_rereads_pending: TenantFamily::default(),
            discovery_interval: TenantFamily::default(),
            discovery_cadence: TenantFamily::default(),
        };
        r.register_per_tenant(
            "mde_liveresponse_pending_results",
            background(
                "Finished command results waiting to be retrieved (for example for API quota).",
            ),
            &m.pending_results,
        );
        r.register_per_tenant(
            "mde_liveresponse_actions_in_flight",
            background("Live Response actions not final yet (Pending, InProgress), by status."),
            &m.actions_in_flight,
        );
        r.register_per_tenant(
            "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
            background("creationDateTimeUtc (Unix seconds) of the oldest Live Response action still in flight; absent when none is."),
            &m.in_flight_oldest,
        );
        r.register_per_tenant(
            "mde_liveresponse_in_flight_abandoned",
            background(
                "Actions still not final past discovery.in_flight_horizon, no longer followed.",
            ),
            &m.in_flight_abandoned,
        );
        r.register_per_tenant(
            "mde_liveresponse_discovery_missed",
            background("Final actions the reconciliation sweep found that incremental discovery had missed (expected to stay 0)."),
            &m.discovery_missed,
        );
        r.register_per_tenant(
            "mde_liveresponse_discovery_in_flight_filter_supported",
            background("1 while the API accepts the status-filtered listing of the actions in flight; 0 once it refused it (400) and discovery reads every action in flight by id."),
            &m.in_flight_filter_supported,
        );
        r.register_per_tenant(
            "mde_liveresponse_discovery_rereads_pending",
            background("Followed actions a poll cut short by quota did not read again; the next poll reads them first."),
            &m.discovery_rereads_pending,
        );
        r.register_per_tenant(
            "mde_liveresponse_discovery_interval_seconds",
            background("Time until the tenant's next poll, as the cadence chose it (discovery.list_budget_share, discovery.min_interval, poll_interval)."),
            &m.discovery_interval,
        );
        r.register_per_tenant(
            "mde_liveresponse_discovery_cadence",
            background("1 for the cadence the tenant's polls are on (fast, backing_off, poll_interval) and why (in_flight, configured_ids, found_new, quiet); one series a tenant."),
            &m.discovery_cadence,
        );
        r.register_per_tenant(
            "mde_exporter_poll_success",
            background("1 if the latest poll of a tenant succeeded, else 0."),
            &m.poll_success,
        );
        r.register_per_tenant(
            "mde_exporter_last_poll_success_timestamp_seconds",
            background("Unix time of the latest successful poll of a tenant."),
            &m.last_poll_success,
        );
        r.register_per_tenant(
            "mde_exporter_poll_duration_seconds",
            background("Duration of polls, by tenant."),
            &m.poll_duration,
        );
        m
    }

    /// Start at 0 the series of tenant `t`.
    pub(super) fn init_tenant_series(&self, t: &str) {
        let labels = tenant(t);
        let _ = self.poll_duration.get_or_create(&labels);
        let _ = self.pending_results.get_or_create(&labels);
        let _ = self.discovery_rereads_pending.get_or_create(&labels);
    }

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
                    tenant: tenant_name.into(),
                    status: status.into(),
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

    /// The cadence the tenant is on and why (`cadence`, `reason`: values of [`CADENCES`] and
    /// [`CADENCE_REASONS`]): that series at 1, the tenant's others removed; `None` removes
    /// them all. The new one is set before the old one goes, so a scrape never sees none.
    pub fn set_discovery_cadence(&self, tenant_name: &str, now: Option<(&str, &str)>) {
        let labels = |cadence: &str, reason: &str| CadenceLabels {
            tenant: tenant_name.into(),
            cadence: cadence.into(),
            reason: reason.into(),
        };
        if let Some((c, r)) = now {
            self.discovery_cadence.get_or_create(&labels(c, r)).set(1);
        }
        for c in CADENCES {
            for r in CADENCE_REASONS {
                if now != Some((c, r)) {
                    self.discovery_cadence.remove(&labels(c, r));
                }
            }
        }
    }
}
