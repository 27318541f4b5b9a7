//! What the MDE API client records: requests and their durations (`mde_api_requests`,
//! `mde_api_request_duration_seconds`), 429 answers (`mde_api_throttled`,
//! `mde_api_retry_after_seconds`), the slots of requests in flight
//! (`mde_exporter_requests_in_flight*`, `mde_exporter_request_slot_wait_seconds`), tokens
//! (`mde_exporter_token_success`, `mde_exporter_permission_missing`), transcript bytes,
//! endpoint deprecation notices (`mde_api_endpoint_deprecation_notices_total`, and what the
//! latest said, for the status page) and the quotas read for `mde_api_quota_*`.
//!
//! Owns the writing of those families. Does not own when a request is sent (`api`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{Metrics, NoticeLabels, PermissionLabels, RequestLabels, TraceLabel, endpoint, tenant};

impl Metrics {
    /// One HTTP exchange with `endpoint` ended with `code` (the status, or `"error"` when no
    /// answer came) after `elapsed`; `exemplar` is the trace that sent it.
    pub fn record_request(
        &self,
        tenant: &str,
        endpoint_name: &str,
        code: String,
        elapsed: Duration,
        exemplar: Option<TraceLabel>,
    ) {
        self.api_requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_string(),
                endpoint: endpoint_name.to_string(),
                code,
            })
            .inc_by(1, exemplar.clone(), None);
        self.api_duration
            .get_or_create(&endpoint(tenant, endpoint_name))
            .observe(elapsed.as_secs_f64(), exemplar, None);
    }

    /// A 429 answer from `endpoint`; `retry_after` is the wait the quota decided.
    pub fn record_throttled(&self, tenant: &str, endpoint_name: &str, retry_after: Duration) {
        let labels = endpoint(tenant, endpoint_name);
        self.api_throttled.get_or_create(&labels).inc();
        self.retry_after
            .get_or_create(&labels)
            .set(retry_after.as_secs_f64());
    }

    /// An answer of `endpoint` announced its end (`reason`, see `mde::deprecation`); `detail`
    /// is what it said. Returns true for the first notice of this tenant, endpoint and reason
    /// in this process, which the caller logs.
    pub fn record_deprecation_notice(
        &self,
        tenant: &str,
        endpoint_name: &str,
        reason: &str,
        detail: &str,
    ) -> bool {
        let labels = NoticeLabels {
            tenant: tenant.to_string(),
            endpoint: endpoint_name.to_string(),
            reason: reason.to_string(),
        };
        let first = self.deprecation_notices.get_or_create(&labels).inc() == 0;
        self.deprecation_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(labels, detail.to_string());
        first
    }

    /// The deprecation notices of `tenant` seen in this process: (endpoint, reason, count,
    /// what the latest said), for the status page.
    pub fn deprecation_notices(&self, tenant: &str) -> Vec<(String, String, u64, String)> {
        let seen = self
            .deprecation_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter()
            .filter(|(l, _)| l.tenant == tenant)
            .map(|(l, detail)| {
                let count = self.deprecation_notices.get_or_create(l).get();
                (l.endpoint.clone(), l.reason.clone(), count, detail.clone())
            })
            .collect()
    }

    /// Bytes of a RunScript transcript downloaded.
    pub fn record_transcript_bytes(&self, tenant_name: &str, bytes: usize) {
        self.transcript_bytes
            .get_or_create(&tenant(tenant_name))
            .inc_by(bytes as u64);
    }

    /// Machine actions of an API answer that did not parse and were skipped.
    pub fn record_invalid_actions(&self, tenant_name: &str, n: usize) {
        self.invalid_actions
            .get_or_create(&tenant(tenant_name))
            .inc_by(n as u64);
    }

    /// Whether the latest token request of a tenant succeeded.
    pub fn record_token(&self, tenant_name: &str, ok: bool) {
        self.token_success
            .get_or_create(&tenant(tenant_name))
            .set(i64::from(ok));
    }

    /// Whether the latest token's roles claim lacks `permission`.
    pub fn set_permission_missing(&self, tenant_name: &str, permission: &str, missing: bool) {
        self.permission_missing
            .get_or_create(&PermissionLabels {
                tenant: tenant_name.to_string(),
                permission: permission.to_string(),
            })
            .set(i64::from(missing));
    }

    /// The quotas of the tenants configured now, read at scrape time for `mde_api_quota_*`.
    pub fn set_quotas<'a>(
        &self,
        quotas: impl IntoIterator<Item = (&'a String, &'a crate::quota::SharedQuota)>,
    ) {
        self.quota_gauges.set(quotas);
    }

    /// (in flight, cap, seconds waited) of the request slots, for tests.
    #[cfg(test)]
    pub(crate) fn request_slots_now(&self) -> (i64, i64, f64) {
        (
            self.requests_in_flight.get(),
            self.requests_in_flight_limit.get(),
            self.request_slot_wait.get(),
        )
    }

    /// The slots of requests in flight, capped at `max_in_flight` (see `mde::http`).
    pub fn request_slots(&self, max_in_flight: usize) -> RequestSlots {
        self.requests_in_flight_limit
            .set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
        RequestSlots {
            in_flight: self.requests_in_flight.clone(),
            waited: self.request_slot_wait.clone(),
        }
    }
}

/// The one writer of `mde_exporter_requests_in_flight` and
/// `mde_exporter_request_slot_wait_seconds`, held by `mde::Http` (a request takes a slot
/// on the hot path: no family lookup there).
#[derive(Clone, Debug)]
pub struct RequestSlots {
    in_flight: Gauge,
    waited: Counter<f64>,
}

impl RequestSlots {
    /// A request took a slot after waiting `waited` for it.
    pub fn taken(&self, waited: Duration) {
        if !waited.is_zero() {
            self.waited.inc_by(waited.as_secs_f64());
        }
        self.in_flight.inc();
    }

    /// A request gave its slot back.
    pub fn given_back(&self) {
        self.in_flight.dec();
    }
}
