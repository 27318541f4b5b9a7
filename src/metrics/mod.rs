//! The metrics contract: every family the exporter serves, with its name, help and labels,
//! and the recording methods through which each subsystem changes them.
//!
//! Names and labels here are a contract with dashboards, alerts and users: add, never rename.
//! Values come from background polls; a scrape only encodes (the quota gauges are read from
//! the local windows as it encodes), it never calls the MDE API.
//!
//! Owns the families and their registration order ([`Metrics::new`]), and, per subsystem, the
//! methods that write them: [`api`] (the MDE API client: requests, 429s, slots, tokens),
//! [`results`] (transcripts, results, per-machine script series), [`poll`] (a tenant's poll
//! and discovery), [`exporter`] (configuration loads, state writes, machine context),
//! `tenant` (a tenant's series started at 0). A subsystem calls a method; it does not reach
//! into a family: the family fields are private to this module, so each has one writer here.
//! `encode` turns the families into a `/metrics` body (text, OpenMetrics or protobuf), from
//! the registry cut into `parts`;
//! `native` is the latency histograms' type, native histograms too in protobuf; `collectors` are the families
//! computed at scrape time (process, HTTP server, quota windows). `labels` holds the label
//! sets. Does not own *when* values change (collector, client).

pub mod api;
mod collectors;
mod encode;
pub mod exporter;
mod labels;
mod native;
mod parts;
pub mod poll;
pub mod results;
mod tenant;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

pub use collectors::QuotaGauges;
use collectors::{HttpCollector, ProcessCollector};
pub use labels::*;
use native::Buckets;
pub use native::ClassicAndNative;
pub use results::ScriptSeries;
pub use tenant::TenantSeries;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format (0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Content type of the Prometheus protobuf format: length-delimited `MetricFamily` messages.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, the default.
    Text,
    /// OpenMetrics text, with exemplars.
    OpenMetrics,
    /// Prometheus protobuf: the latency histograms are native histograms too (#23).
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Protobuf => PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// Span batches the OTLP exporter could not deliver (collector down, refused...). Counted,
/// not logged: a collector outage must not flood the logs. Process-wide, because the span
/// pipeline is; `telemetry` increments it and every [`Metrics`] registers it.
pub static OTLP_EXPORT_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// This process's shard (`--shard.index`, `--shard.count`), set once at start-up by
/// [`exporter::set_shard`] before the metrics are built; unsharded: index 0 of 1 (#24).
static SHARD: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();

const BACKGROUND: &str =
    "Updated by background polls, not at scrape time (the MDE API quota forbids polling on scrape)";

pub type ExCounter = CounterWithExemplar<TraceLabel>;
pub type FloatGauge = Gauge<f64, AtomicU64>;

const API_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const POLL_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A latency histogram family: classic buckets with exemplars, native buckets as well in
/// protobuf (see `native`).
pub type ExHistogramFamily<L> = Family<L, ClassicAndNative, Buckets>;

/// Every metric the exporter serves.
pub struct Metrics {
    registry: Parts,
    pub(super) script_runs: Family<ScriptLabels, ExCounter>,
    pub(super) script_failures: Family<ScriptLabels, ExCounter>,
    pub(super) script_errors: Family<ScriptLabels, ExCounter>,
    pub(super) script_exit_code: Family<MachineScriptLabels, Gauge>,
    pub(super) script_errors_present: Family<MachineScriptLabels, Gauge>,
    pub(super) script_last_run: Family<MachineScriptLabels, FloatGauge>,
    /// Which machines have those series, per tenant (#24).
    pub(super) script_machines: results::MachineIndex,
    pub(super) commands: Family<CommandLabels, Counter>,
    pub(super) actions: Family<StatusLabels, Counter>,
    pub(super) fetch_failures: Family<ReasonLabels, ExCounter>,
    pub(super) files: Family<TenantLabels, Counter>,
    pub(super) file_bytes: Family<TenantLabels, Counter>,
    pub(super) transcript_bytes: Family<TenantLabels, Counter>,
    pub(super) pending_results: Family<TenantLabels, Gauge>,
    pub(super) invalid_actions: Family<TenantLabels, Counter>,
    pub(super) api_requests: Family<RequestLabels, ExCounter>,
    pub(super) api_duration: ExHistogramFamily<EndpointLabels>,
    pub(super) api_throttled: Family<EndpointLabels, Counter>,
    pub(super) retry_after: Family<EndpointLabels, FloatGauge>,
    /// Deprecation/Sunset headers and 404/410 on collection endpoints (#20), and what the
    /// latest of each said, for the status page.
    pub(super) deprecation_notices: Family<NoticeLabels, Counter>,
    pub(super) deprecation_seen: std::sync::Mutex<std::collections::BTreeMap<NoticeLabels, String>>,
    /// The quotas behind `mde_api_quota_*`, read at scrape time (see [`QuotaGauges`]).
    pub(super) quota_gauges: Arc<QuotaGauges>,
    /// What the HTTP server's connection limits and bcrypt queue did; `app` hands it to
    /// `exporter_web::serve_with` and it is read at scrape time.
    pub(super) http_stats: Arc<exporter_web::ServeStats>,
    pub(super) build_info: Family<BuildLabels, Gauge>,
    pub(super) shard_info: Family<ShardLabels, Gauge>,
    pub(super) poll_success: Family<TenantLabels, Gauge>,
    pub(super) last_poll_success: Family<TenantLabels, FloatGauge>,
    pub(super) poll_duration: ExHistogramFamily<TenantLabels>,
    pub(super) token_success: Family<TenantLabels, Gauge>,
    pub(super) config_reload_success: Gauge,
    pub(super) config_reload_timestamp: FloatGauge,
    /// Per-machine series removed from /metrics and the state, by reason (`ttl`, `max_series`).
    pub(super) series_evicted: Family<ReasonLabels, Counter>,
    pub(super) machine_info: Family<MachineInfoLabels, Gauge>,
    pub(super) machine_tag: Family<MachineTagLabels, Gauge>,
    /// How many `mde_machine_tag` series there are, all tenants together: they count against
    /// `max_series` (#24).
    pub(super) machine_tag_series: AtomicUsize,
    /// Allowed tags left out by a cap, by reason (#24).
    pub(super) machine_tags_dropped: Family<ReasonLabels, Counter>,
    pub(super) permission_missing: Family<PermissionLabels, Gauge>,
    // Discovery, in flight and not-run (#9).
    pub(super) actions_in_flight: Family<StatusLabels, Gauge>,
    pub(super) in_flight_oldest: Family<TenantLabels, FloatGauge>,
    pub(super) in_flight_abandoned: Family<TenantLabels, Counter>,
    pub(super) discovery_missed: Family<TenantLabels, Counter>,
    // Discovery at fleet scale (#20).
    pub(super) in_flight_filter_supported: Family<TenantLabels, Gauge>,
    pub(super) discovery_rereads_pending: Family<TenantLabels, Gauge>,
    pub(super) discovery_interval: Family<TenantLabels, FloatGauge>,
    pub(super) script_not_run_total: Family<NotRunLabels, ExCounter>,
    pub(super) script_not_run: Family<MachineScriptLabels, Gauge>,
    /// Writes to the state file that failed (each is retried once after reopening the file).
    pub(super) state_write_errors: Counter,
    /// Tenants whose name came back pointing at another tenant_id or API (#24).
    pub(super) state_identity_changes: Family<TenantLabels, Counter>,
    /// Local minus API time per tenant, from the answers' `Date` header (#24 item 7).
    pub(super) clock_skew: Family<TenantLabels, FloatGauge>,
    /// API calls and result downloads in flight across tenants, their cap
    /// (`max_requests_in_flight`) and the time requests waited for a slot (see `mde::http`).
    pub(super) requests_in_flight: Gauge,
    pub(super) requests_in_flight_limit: Gauge,
    pub(super) request_slot_wait: Counter<f64>,
    /// OTLP metrics pushes, by result (`otlp_metrics`, see `exporter`).
    pub(super) otlp_metrics_exports: Family<ExportResultLabels, Counter>,
    /// Script output as metrics (`mde_script_*`, `mde_script_metrics_*`), rendered from its
    /// store at scrape time. See: #21
    pub script_metrics: Arc<crate::script_metrics::store::Store>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Parts::default();
        let m = Metrics {
            registry: Parts::default(),
            script_runs: Family::default(),
            script_failures: Family::default(),
            script_errors: Family::default(),
            script_exit_code: Family::default(),
            script_errors_present: Family::default(),
            script_last_run: Family::default(),
            script_machines: results::MachineIndex::default(),
            commands: Family::default(),
            actions: Family::default(),
            fetch_failures: Family::default(),
            files: Family::default(),
            file_bytes: Family::default(),
            transcript_bytes: Family::default(),
            pending_results: Family::default(),
            invalid_actions: Family::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(Buckets(API_BUCKETS)),
            api_throttled: Family::default(),
            retry_after: Family::default(),
            deprecation_notices: Family::default(),
            deprecation_seen: std::sync::Mutex::default(),
            quota_gauges: Arc::new(QuotaGauges::default()),
            http_stats: Arc::default(),
            build_info: Family::default(),
            shard_info: Family::default(),
            poll_success: Family::default(),
            last_poll_success: Family::default(),
            poll_duration: Family::new_with_constructor(Buckets(POLL_BUCKETS)),
            token_success: Family::default(),
            config_reload_success: Gauge::default(),
            config_reload_timestamp: FloatGauge::default(),
            series_evicted: Family::default(),
            machine_info: Family::default(),
            machine_tag: Family::default(),
            machine_tag_series: AtomicUsize::new(0),
            machine_tags_dropped: Family::default(),
            permission_missing: Family::default(),
            actions_in_flight: Family::default(),
            in_flight_oldest: Family::default(),
            in_flight_abandoned: Family::default(),
            discovery_missed: Family::default(),
            in_flight_filter_supported: Family::default(),
            discovery_rereads_pending: Family::default(),
            discovery_interval: Family::default(),
            script_not_run_total: Family::default(),
            script_not_run: Family::default(),
            state_write_errors: Counter::default(),
            state_identity_changes: Family::default(),
            clock_skew: Family::default(),
            requests_in_flight: Gauge::default(),
            requests_in_flight_limit: Gauge::default(),
            request_slot_wait: Counter::default(),
            otlp_metrics_exports: Family::default(),
            script_metrics: Arc::default(),
        };
        let bg = |s: &str| format!("{s} {BACKGROUND}");
        let r = &mut registry;
        r.register(
            "mde_liveresponse_script_runs",
            bg("RunScript transcripts retrieved, by script."),
            m.script_runs.clone(),
        );
        r.register(
            "mde_liveresponse_script_failures",
            bg("Retrieved transcripts whose exit_code was not 0, by script."),
            m.script_failures.clone(),
        );
        r.register(
            "mde_liveresponse_script_errors",
            bg("Retrieved transcripts with non-empty script_errors, by script."),
            m.script_errors.clone(),
        );
        r.register(
            "mde_liveresponse_script_exit_code",
            bg("Exit code of the latest run (by command endTime) of a script on a machine."),
            m.script_exit_code.clone(),
        );
        r.register(
            "mde_liveresponse_script_errors_present",
            bg("1 if the latest run of a script on a machine wrote to script_errors, else 0."),
            m.script_errors_present.clone(),
        );
        r.register(
            "mde_liveresponse_script_last_run_timestamp_seconds",
            bg("End time (Unix seconds) of the latest run of a script on a machine."),
            m.script_last_run.clone(),
        );
        r.register(
            "mde_liveresponse_commands",
            bg("Commands of final Live Response actions, by command type and commandStatus."),
            m.commands.clone(),
        );
        r.register(
            "mde_liveresponse_actions",
            bg("Final Live Response machine actions seen, by status."),
            m.actions.clone(),
        );
        r.register(
            "mde_liveresponse_result_fetch_failures",
            bg("Command results that could not be retrieved or read, by reason; given up, not retried."),
            m.fetch_failures.clone(),
        );
        r.register(
            "mde_liveresponse_files",
            bg("GetFile results whose size was recorded."),
            m.files.clone(),
        );
        r.register(
            "mde_liveresponse_file_bytes",
            bg("Compressed bytes of GetFile results (sized, not kept)."),
            m.file_bytes.clone(),
        );
        r.register(
            "mde_liveresponse_transcript_bytes",
            bg("Bytes of RunScript transcripts downloaded."),
            m.transcript_bytes.clone(),
        );
        r.register(
            "mde_liveresponse_pending_results",
            bg("Finished command results waiting to be retrieved (for example for API quota)."),
            m.pending_results.clone(),
        );
        r.register(
            "mde_liveresponse_invalid_actions",
            bg("Machine actions in API answers that could not be parsed and were skipped."),
            m.invalid_actions.clone(),
        );
        r.register(
            "mde_liveresponse_actions_in_flight",
            bg("Live Response actions not final yet (Pending, InProgress), by status."),
            m.actions_in_flight.clone(),
        );
        r.register(
            "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
            bg("creationDateTimeUtc (Unix seconds) of the oldest Live Response action still in flight; absent when none is."),
            m.in_flight_oldest.clone(),
        );
        r.register(
            "mde_liveresponse_in_flight_abandoned",
            bg("Actions still not final past discovery.in_flight_horizon, no longer followed."),
            m.in_flight_abandoned.clone(),
        );
        r.register(
            "mde_liveresponse_discovery_missed",
            bg("Final actions the reconciliation sweep found that incremental discovery had missed (expected to stay 0)."),
            m.discovery_missed.clone(),
        );
        r.register(
            "mde_liveresponse_discovery_in_flight_filter_supported",
            bg("1 while the API accepts the status-filtered listing of the actions in flight; 0 once it refused it (400) and discovery reads every action in flight by id."),
            m.in_flight_filter_supported.clone(),
        );
        r.register(
            "mde_liveresponse_discovery_rereads_pending",
            bg("Followed actions a poll cut short by quota did not read again; the next poll reads them first."),
            m.discovery_rereads_pending.clone(),
        );
        r.register(
            "mde_liveresponse_discovery_interval_seconds",
            bg("Time until the tenant's next poll, as the cadence chose it (discovery.list_budget_share, discovery.min_interval, poll_interval)."),
            m.discovery_interval.clone(),
        );
        r.register(
            "mde_liveresponse_script_not_run",
            bg("RunScript commands of final actions that produced no transcript, by script and reason (command_failed, action_timeout, action_cancelled, action_failed)."),
            m.script_not_run_total.clone(),
        );
        // The gauge's first name is the counter's family name in OpenMetrics (which drops
        // `_total`), a clash strict parsers refuse: it stays in the Prometheus text format,
        // where it never clashed, and OpenMetrics has the same series under `_current` only.
        // See: #24
        r.register_text_only(
            "mde_liveresponse_script_not_run",
            bg("1 while the latest attempt (by the action's lastUpdateDateTimeUtc) of a script on a machine did not run, 0 once a later attempt ran."),
            m.script_not_run.clone(),
        );
        r.register(
            "mde_liveresponse_script_not_run_current",
            bg("1 while the latest attempt (by the action's lastUpdateDateTimeUtc) of a script on a machine did not run, 0 once a later attempt ran; the same series as mde_liveresponse_script_not_run, whose name OpenMetrics leaves out (it is the family name of mde_liveresponse_script_not_run_total there)."),
            m.script_not_run.clone(),
        );
        r.register(
            "mde_api_requests",
            bg("HTTP requests sent, by endpoint and status code (\"error\" when no answer came)."),
            m.api_requests.clone(),
        );
        r.register(
            "mde_api_request_duration_seconds",
            bg("Duration of HTTP requests, by endpoint."),
            m.api_duration.clone(),
        );
        r.register(
            "mde_api_throttled",
            bg("HTTP 429 answers, by endpoint."),
            m.api_throttled.clone(),
        );
        r.register(
            "mde_api_retry_after_seconds",
            bg("Retry-After of the latest 429 answer, by endpoint."),
            m.retry_after.clone(),
        );
        r.register(
            "mde_api_endpoint_deprecation_notices",
            bg("API answers that announce an endpoint's end, by endpoint and reason: a Deprecation (deprecation_header) or Sunset (sunset_header) header, or 404/410 on a collection endpoint (gone)."),
            m.deprecation_notices.clone(),
        );
        r.register_collector(Box::new(m.quota_gauges.clone()));
        r.register(
            "mde_exporter_build_info",
            "A metric with a constant '1' value labelled by version, revision and rustc",
            m.build_info.clone(),
        );
        r.register(
            "mde_exporter_shard_info",
            "The shard this process serves (--shard.index of --shard.count; index 0 of 1 when not sharded), value 1. Two targets with the same index and count serve the same tenants twice",
            m.shard_info.clone(),
        );
        r.register(
            "mde_exporter_poll_success",
            bg("1 if the latest poll of a tenant succeeded, else 0."),
            m.poll_success.clone(),
        );
        r.register(
            "mde_exporter_last_poll_success_timestamp_seconds",
            bg("Unix time of the latest successful poll of a tenant."),
            m.last_poll_success.clone(),
        );
        r.register(
            "mde_exporter_poll_duration_seconds",
            bg("Duration of polls, by tenant."),
            m.poll_duration.clone(),
        );
        r.register(
            "mde_machine_info",
            "Machine context, 1 for every machine with per-machine series: device group (rbac_group), OS platform and health status, read with GET /api/machines on its own slow schedule and quota budget (endpoint list_machines), never at scrape time. Join on tenant and machine to route alerts by device group",
            m.machine_info.clone(),
        );
        r.register(
            "mde_machine_tag",
            "1 for every machine tag allowed by the tenant's machine_tags regexes, on machines with per-machine series; no tag becomes a label without the allow-list",
            m.machine_tag.clone(),
        );
        r.register(
            "mde_machine_tags_dropped",
            "Allowed machine tags left out, counted each time a machine's context is read, by reason: too_long (over max_tag_length characters; dropped whole, never cut), per_machine (beyond max_tags_per_machine, the first in alphabetical order kept) or max_series (no room left under max_series by the per-machine script series and the other tags)",
            m.machine_tags_dropped.clone(),
        );
        r.register(
            "mde_exporter_permission_missing",
            "1 if the roles claim of the tenant's latest token lacks an application permission the exporter needs (Machine.Read.All, satisfied by Machine.ReadWrite.All too), else 0; read from each new token, no API call",
            m.permission_missing.clone(),
        );
        r.register(
            "mde_exporter_token_success",
            bg("1 if the latest OAuth2 token request of a tenant succeeded, else 0."),
            m.token_success.clone(),
        );
        r.register(
            "mde_exporter_config_last_reload_successful",
            "1 if the latest configuration load (start-up, SIGHUP or POST /-/reload) succeeded, else 0",
            m.config_reload_success.clone(),
        );
        r.register(
            "mde_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration load",
            m.config_reload_timestamp.clone(),
        );
        r.register(
            "mde_exporter_otlp_export_failures",
            "Span and log record batches that could not be exported over OTLP (counted instead of logged)",
            OTLP_EXPORT_FAILURES.clone(),
        );
        r.register(
            "mde_exporter_otlp_metrics_exports",
            "Pushes of the metrics over OTLP (OTEL_METRICS_EXPORTER=otlp), one per OTEL_METRIC_EXPORT_INTERVAL and one at shutdown, by result: success, or failure (the receiver down or refusing; logged once per push)",
            m.otlp_metrics_exports.clone(),
        );
        r.register(
            "mde_exporter_series_evicted",
            "Per-machine series (mde_liveresponse_script_exit_code and its siblings) removed, by reason: ttl (no run within series_ttl) or max_series (the oldest beyond the cap)",
            m.series_evicted.clone(),
        );
        r.register(
            "mde_exporter_state_write_errors",
            "Writes to the state file that failed (a full disk, an I/O error); after each the file is reopened and the write tried again, so polls recover when the disk does",
            m.state_write_errors.clone(),
        );
        r.register(
            "mde_exporter_state_tenant_identity_changes",
            "Times a tenant name's tenant_id or api_url differed from the identity its state entries were recorded under; each time that tenant's discovery state was dropped and it started afresh (bootstrap)",
            m.state_identity_changes.clone(),
        );
        r.register(
            "mde_exporter_clock_skew_seconds",
            "The local clock minus the MDE API's, per tenant: the API's time is the latest answer's Date header plus the monotonic time since (1 s resolution). Beyond max_clock_skew no in-flight action is abandoned and no per-machine series expires by time",
            m.clock_skew.clone(),
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
        // In two parts: the two threads encoding a large body share the script series. (#21)
        for part in m.script_metrics.parts(2) {
            r.register_script_part(part);
        }
        r.register_collector(Box::new(ProcessCollector));
        r.register_collector(Box::new(HttpCollector(m.http_stats.clone())));
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                revision: env!("MDE_EXPORTER_REVISION").to_string(),
                rustc: env!("MDE_EXPORTER_RUSTC_VERSION").to_string(),
            })
            .set(1);
        let (index, count) = SHARD.get().copied().unwrap_or((0, 1));
        m.shard_info
            .get_or_create(&ShardLabels {
                index: index.to_string(),
                count: count.to_string(),
            })
            .set(1);
        Metrics { registry, ..m }
    }
}

use parts::Parts;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        m.script_runs
            .get_or_create(&ScriptLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
            })
            .inc_by(2, None, None);
        m.api_duration
            .get_or_create(&endpoint("t", "download"))
            .observe(0.2, None, None);
        let text = m.encode(false).unwrap();
        assert!(
            text.contains("mde_liveresponse_script_runs_total{tenant=\"t\",script=\"a.ps1\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE mde_api_request_duration_seconds histogram"));
        assert!(text.contains("mde_exporter_build_info{version=\""));
        assert!(text.contains("background polls"));
        let om = m.encode(true).unwrap();
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn exemplars_only_in_openmetrics() {
        let m = Metrics::new();
        m.script_failures
            .get_or_create(&ScriptLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
            })
            .inc_by(
                1,
                Some(TraceLabel {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                }),
                None,
            );
        let om = m.encode(true).unwrap();
        assert!(
            om.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1"),
            "{om}"
        );
        let plain = m.encode(false).unwrap();
        assert!(!plain.contains("trace_id"), "{plain}");
    }

    /// See: #24 item 10. In OpenMetrics a counter's family name has no `_total`: the counter
    /// `mde_liveresponse_script_not_run_total` is the family `mde_liveresponse_script_not_run`,
    /// the name of the old gauge too, which strict parsers refuse. Every family name there
    /// is one family's.
    #[test]
    fn openmetrics_family_names_are_unique() {
        let m = Metrics::new();
        let labels = MachineScriptLabels {
            tenant: "t".into(),
            machine: "m".into(),
            script: "a.ps1".into(),
        };
        m.record_script_not_run("t", "a.ps1", "action_timeout", None);
        m.set_script_not_run(&labels, true);
        let om = m.encode(true).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for line in om.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(seen.insert(name.to_string()), "{name} twice: {line}");
        }
    }

    // See: #9
    #[test]
    fn not_run_counter_and_gauge_keep_their_contract_names() {
        let m = Metrics::new();
        m.script_not_run_total
            .get_or_create(&NotRunLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
                reason: "action_timeout".into(),
            })
            .inc_by(1, None, None);
        m.script_not_run
            .get_or_create(&MachineScriptLabels {
                tenant: "t".into(),
                machine: "m".into(),
                script: "a.ps1".into(),
            })
            .set(1);
        for openmetrics in [false, true] {
            let text = m.encode(openmetrics).unwrap();
            assert!(
                text.contains(
                    "mde_liveresponse_script_not_run_total{tenant=\"t\",script=\"a.ps1\",reason=\"action_timeout\"} 1"
                ),
                "{text}"
            );
            // The gauge under its first name in the text format only; under `_current` in
            // both (#24).
            assert_eq!(
                text.contains(
                    "mde_liveresponse_script_not_run{tenant=\"t\",machine=\"m\",script=\"a.ps1\"} 1\n"
                ),
                !openmetrics,
                "{text}"
            );
            assert!(
                text.contains(
                    "mde_liveresponse_script_not_run_current{tenant=\"t\",machine=\"m\",script=\"a.ps1\"} 1\n"
                ),
                "{text}"
            );
        }
    }
}
