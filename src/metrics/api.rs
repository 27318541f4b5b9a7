//! The MDE API client's families: requests and their durations (`mde_api_requests`,
//! `mde_api_request_duration_seconds`), 429 answers (`mde_api_throttled`,
//! `mde_api_retry_after_seconds`), the slots of requests in flight
//! (`mde_exporter_requests_in_flight*`, `mde_exporter_request_slot_wait_seconds`), tokens
//! (`mde_exporter_token_success`, `mde_exporter_permission_missing`), transcript bytes,
//! invalid actions, endpoint deprecation notices (`mde_api_endpoint_deprecation_notices_total`,
//! and what the latest said, for the status page) and the quotas read for `mde_api_quota_*`
//! (a collector, see `collectors`).
//!
//! Owns those families ([`ApiMetrics`], fields private: the methods here are their one
//! writer), their registration, their series started at 0 for a tenant, and their writing.
//! Does not own when a request is sent (`api`) nor the quota windows (`quota`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::collectors::QuotaGauges;
use super::labels::{
    EndpointLabels, NoticeLabels, PermissionLabels, RequestLabels, TenantLabels, TenantSeries,
    TraceLabel, endpoint, tenant,
};
use super::native::Buckets;
use super::per_tenant::{TenantFamily, TenantHistogramFamily};
use super::registry::{ExCounter, FloatGauge, Parts, background};

const API_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The families the MDE API client writes.
pub struct ApiMetrics {
    api_requests: TenantFamily<RequestLabels, ExCounter>,
    api_duration: TenantHistogramFamily<EndpointLabels>,
    api_throttled: TenantFamily<EndpointLabels, Counter>,
    retry_after: TenantFamily<EndpointLabels, FloatGauge>,
    /// Deprecation/Sunset headers and 404/410 on collection endpoints (#20), and what the
    /// latest of each said, for the status page.
    deprecation_notices: TenantFamily<NoticeLabels, Counter>,
    deprecation_seen: Mutex<std::collections::BTreeMap<NoticeLabels, String>>,
    /// The quotas behind `mde_api_quota_*`, read at scrape time (see [`QuotaGauges`]).
    quota_gauges: Arc<QuotaGauges>,
    transcript_bytes: TenantFamily<TenantLabels, Counter>,
    invalid_actions: TenantFamily<TenantLabels, Counter>,
    token_success: TenantFamily<TenantLabels, Gauge>,
    permission_missing: TenantFamily<PermissionLabels, Gauge>,
    /// API calls and result downloads in flight across tenants, their cap
    /// (`max_requests_in_flight`) and the time requests waited for a slot (see `api::http`).
    requests_in_flight: Gauge,
    requests_in_flight_limit: Gauge,
    request_slot_wait: Counter<f64>,
}

impl ApiMetrics {
    /// The families, registered in `r`.
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = ApiMetrics {
            api_requests: TenantFamily::default(),
            api_duration: TenantFamily::new_with_constructor(Buckets(API_BUCKETS)),
            api_throttled: TenantFamily::default(),
            retry_after: TenantFamily::default(),
            deprecation_notices: TenantFamily::default(),
            deprecation_seen: Mutex::default(),
            quota_gauges: Arc::new(QuotaGauges::default()),
            transcript_bytes: TenantFamily::default(),
            invalid_actions: TenantFamily::default(),
            token_success: TenantFamily::default(),
            permission_missing: TenantFamily::default(),
            requests_in_flight: Gauge::default(),
            requests_in_flight_limit: Gauge::default(),
            request_slot_wait: Counter::default(),
        };
        r.register_per_tenant(
            "mde_liveresponse_transcript_bytes",
            background("Bytes of RunScript transcripts downloaded."),
            &m.transcript_bytes,
        );
        r.register_per_tenant(
            "mde_liveresponse_invalid_actions",
            background("Machine actions in API answers that could not be parsed and were skipped."),
            &m.invalid_actions,
        );
        r.register_per_tenant(
            "mde_api_requests",
            background(
                "HTTP requests sent, by endpoint and status code (\"error\" when no answer came).",
            ),
            &m.api_requests,
        );
        r.register_per_tenant(
            "mde_api_request_duration_seconds",
            background("Duration of HTTP requests, by endpoint."),
            &m.api_duration,
        );
        r.register_per_tenant(
            "mde_api_throttled",
            background("HTTP 429 answers, by endpoint."),
            &m.api_throttled,
        );
        r.register_per_tenant(
            "mde_api_retry_after_seconds",
            background("Retry-After of the latest 429 answer, by endpoint."),
            &m.retry_after,
        );
        r.register_per_tenant(
            "mde_api_endpoint_deprecation_notices",
            background("API answers that announce an endpoint's end, by endpoint and reason: a Deprecation (deprecation_header) or Sunset (sunset_header) header, or 404/410 on a collection endpoint (gone)."),
            &m.deprecation_notices,
        );
        r.register_collector("mde_api_quota_*", Box::new(m.quota_gauges.clone()));
        r.register_per_tenant(
            "mde_exporter_permission_missing",
            "1 if the roles claim of the tenant's latest token lacks an application permission the exporter needs (Machine.Read.All, satisfied by Machine.ReadWrite.All too), else 0; read from each new token, no API call",
            &m.permission_missing,
        );
        r.register_per_tenant(
            "mde_exporter_token_success",
            background("1 if the latest OAuth2 token request of a tenant succeeded, else 0."),
            &m.token_success,
        );
        r.register(
            "mde_exporter_requests_in_flight",
            "API calls and result downloads in flight now, across all tenants (token requests are not counted)",
            m.requests_in_flight.clone(),
        );
        r.register(
            "mde_exporter_requests_in_flight_limit",
            "The most API calls and result downloads in flight at once across all tenants (max_requests_in_flight)",
            m.requests_in_flight_limit.clone(),
        );
        r.register(
            "mde_exporter_request_slot_wait_seconds",
            "Time requests waited for a free slot under max_requests_in_flight, summed over requests; when it grows by about a second every second, the cap, not the API, sets the pace",
            m.request_slot_wait.clone(),
        );
        m
    }

    /// Start at 0 the series of tenant `t` for the endpoints in `known`.
    pub(super) fn init_tenant_series(&self, t: &str, known: &TenantSeries<'_>) {
        for ep in known.endpoints {
            let labels = endpoint(t, ep);
            let _ = self.api_throttled.get_or_create(&labels);
            let _ = self.retry_after.get_or_create(&labels);
            let _ = self.api_duration.get_or_create(&labels);
        }
        let _ = self
            .api_duration
            .get_or_create(&endpoint(t, known.download));
        let labels = tenant(t);
        let _ = self.transcript_bytes.get_or_create(&labels);
        let _ = self.invalid_actions.get_or_create(&labels);
    }

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
                tenant: tenant.into(),
                endpoint: endpoint_name.into(),
                code: code.into(),
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
            tenant: tenant.into(),
            endpoint: endpoint_name.into(),
            reason: reason.into(),
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
                (
                    l.endpoint.to_string(),
                    l.reason.to_string(),
                    count,
                    detail.clone(),
                )
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
                tenant: tenant_name.into(),
                permission: permission.into(),
            })
            .set(i64::from(missing));
    }

    /// The quotas of the tenants configured now, read at scrape time for `mde_api_quota_*`.
    pub fn set_quotas<'a>(
        &self,
        quotas: impl IntoIterator<Item = (&'a String, &'a crate::quota::SharedQuota)>,
        served: super::collectors::Served,
    ) {
        self.quota_gauges.set(quotas, served);
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
