//! The metrics contract: every family the exporter serves, composed of one group per
//! subsystem, each the owner of its families.
//!
//! Names and labels are a contract with dashboards, alerts and users: add, never rename.
//! Values come from background polls; a scrape only encodes (the quota gauges are read from
//! the local windows as it encodes), it never calls the MDE API.
//!
//! Owns [`Metrics`], the composition of the groups (pub fields: a subsystem writes through its
//! group, `metrics.api.record_request(..)`), the script-output store's place in the registry,
//! the order of the families in `/metrics` (`EXPOSITION_ORDER`), starting a tenant's series at
//! 0 across the groups ([`Metrics::init_tenant_series`]), and the exposition formats.
//!
//! Does not own the families: each group declares its own as private fields, registers them
//! and is their one writer — [`api`] (the MDE API client: requests, 429s, slots, tokens,
//! quotas), [`results`] (final actions, transcripts, results, per-machine script series, with
//! the machines per failure signature counted in [`signatures`]),
//! [`poll`] (a tenant's poll and discovery), [`machines`] (the machine context), [`exporter`]
//! (build, shard, configuration loads, state writes, clock skew, OTLP exports, the process and
//! HTTP server collectors). Nor `registry` (what the groups register into: the parts, the
//! metric kinds, the help suffix), `encode` (the `/metrics` body), `native` (the latency
//! histograms, native in protobuf too), `collectors` (families computed at scrape time),
//! `labels` (the label sets), `shared_text` (label values held once), nor *when* values change (collector, client).

pub mod api;
pub mod cluster;
mod collectors;
mod encode;
pub mod exporter;
mod labels;
pub mod machines;
mod native;
mod per_tenant;
pub mod poll;
mod registry;
pub mod results;
mod shared_text;
pub mod signatures;

use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;

use api::ApiMetrics;
use exporter::ExporterMetrics;
use machines::MachineMetrics;
use poll::PollMetrics;
use registry::Parts;
use results::ResultMetrics;

pub use collectors::{QuotaGauges, Served};
pub use exporter::OTLP_EXPORT_FAILURES;
pub use labels::*;
pub use native::{ClassicAndNative, ExHistogramFamily, keep_exemplars};
pub use registry::{ExCounter, FloatGauge};
pub use results::ScriptSeries;

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

/// The order of the families in `/metrics` (a collector or the script-output store by the
/// name it registers under): the order they were registered in when one constructor
/// registered them all, kept so that the body stays the same since each group registers its
/// own. A family not listed here comes after these, in the order the groups register it.
const EXPOSITION_ORDER: &[&str] = &[
    "mde_liveresponse_script_runs",
    "mde_liveresponse_script_failures",
    "mde_liveresponse_script_errors",
    "mde_liveresponse_script_exit_code",
    "mde_liveresponse_script_errors_present",
    "mde_liveresponse_script_last_run_timestamp_seconds",
    "mde_liveresponse_script_failure_signatures",
    "mde_liveresponse_commands",
    "mde_liveresponse_actions",
    "mde_liveresponse_result_fetch_failures",
    "mde_liveresponse_files",
    "mde_liveresponse_file_bytes",
    "mde_liveresponse_transcript_bytes",
    "mde_liveresponse_pending_results",
    "mde_liveresponse_invalid_actions",
    "mde_liveresponse_actions_in_flight",
    "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
    "mde_liveresponse_in_flight_abandoned",
    "mde_liveresponse_discovery_missed",
    "mde_liveresponse_discovery_in_flight_filter_supported",
    "mde_liveresponse_discovery_rereads_pending",
    "mde_liveresponse_discovery_interval_seconds",
    "mde_liveresponse_discovery_cadence",
    // The counter (`_total`), then the gauge of the same name (text format only).
    "mde_liveresponse_script_not_run",
    "mde_liveresponse_script_not_run_current",
    "mde_api_requests",
    "mde_api_request_duration_seconds",
    "mde_api_throttled",
    "mde_api_retry_after_seconds",
    "mde_api_endpoint_deprecation_notices",
    "mde_api_quota_*",
    "mde_exporter_build_info",
    "mde_exporter_shard_info",
    "mde_exporter_shard_ordinal",
    "mde_exporter_total_shards",
    "mde_exporter_poll_success",
    "mde_exporter_last_poll_success_timestamp_seconds",
    "mde_exporter_poll_duration_seconds",
    "mde_machine_info",
    "mde_machine_tag",
    "mde_machine_tags_dropped",
    "mde_exporter_permission_missing",
    "mde_exporter_token_success",
    "mde_exporter_config_last_reload_successful",
    "mde_exporter_config_last_reload_success_timestamp_seconds",
    "mde_exporter_tenant_file_last_load_successful",
    "mde_exporter_tenant_file_tenants",
    "mde_exporter_tenants_refused",
    "mde_exporter_otlp_export_failures",
    "mde_exporter_otlp_metrics_exports",
    "mde_exporter_series_evicted",
    "mde_exporter_state_write_errors",
    "mde_exporter_state_tenant_identity_changes",
    "mde_exporter_clock_skew_seconds",
    "mde_exporter_requests_in_flight",
    "mde_exporter_requests_in_flight_limit",
    "mde_exporter_request_slot_wait_seconds",
    "mde_script_*",
    "process_*",
    "mde_exporter_http_*",
];

/// Every metric the exporter serves: one group per subsystem that writes them.
pub struct Metrics {
    registry: Parts,
    /// What the MDE API client writes.
    pub api: ApiMetrics,
    /// What retrieving results writes.
    pub results: ResultMetrics,
    /// What a tenant's poll and discovery write.
    pub poll: PollMetrics,
    /// What the machine-context refresh writes.
    pub machines: MachineMetrics,
    /// What the exporter writes about itself.
    pub exporter: ExporterMetrics,
    /// What a cluster member writes about its leases (#31).
    pub cluster: cluster::ClusterMetrics,
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
        let results = ResultMetrics::register(&mut registry);
        let poll = PollMetrics::register(&mut registry);
        let api = ApiMetrics::register(&mut registry);
        let machines = MachineMetrics::register(&mut registry);
        let exporter = ExporterMetrics::register(&mut registry);
        let cluster = cluster::ClusterMetrics::register(&mut registry);
        let script_metrics = Arc::<crate::script_metrics::store::Store>::default();
        // In two parts: the two threads encoding a large body share the script series. (#21)
        for part in script_metrics.parts(2) {
            registry.register_script_part("mde_script_*", part);
        }
        registry.put_in_order(EXPOSITION_ORDER);
        Metrics {
            registry,
            api,
            results,
            poll,
            machines,
            exporter,
            cluster,
            script_metrics,
        }
    }

    /// Take every series of tenant `t` out of `/metrics`: each family with a `tenant` label
    /// (all of them are walked, `per_tenant`), with the bookkeeping kept beside them, and the
    /// tenant's script-output sets. For a tenant a reload or a tenant file removed, or one a
    /// cluster member no longer owns; the other tenants' series are untouched. Returns how
    /// many series went (script-output sets not counted). See: #32
    pub fn forget_tenant(&self, t: &str) -> usize {
        // The groups' bookkeeping first: it is kept as their series are removed.
        self.results.forget_tenant(t);
        self.machines.forget_tenant(t);
        self.script_metrics.retain(&|tenant, _| tenant != t);
        self.registry.per_tenant.iter().map(|f| f.forget(t)).sum()
    }

    /// The tenants with a series in some family with a `tenant` label.
    pub fn tenants_shown(&self) -> std::collections::BTreeSet<String> {
        let mut all = std::collections::BTreeSet::new();
        for f in &self.registry.per_tenant {
            f.tenants(&mut all);
        }
        all
    }

    /// Start at 0 the series of tenant `t` for the label values in `known`, in every group;
    /// values already there are kept, so a reload can call it again.
    pub fn init_tenant_series(&self, t: &str, known: &TenantSeries<'_>) {
        self.api.init_tenant_series(t, known);
        self.results.init_tenant_series(t, known);
        self.poll.init_tenant_series(t);
        self.exporter.init_tenant_series(t);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        for _ in 0..2 {
            m.results.record_transcript("t", "a.ps1", 0, false, || None);
        }
        m.api.record_request(
            "t",
            "download",
            "200".into(),
            std::time::Duration::from_millis(200),
            None,
        );
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
        // A failed run: its runs and failures counters carry the trace.
        m.results.record_transcript("t", "a.ps1", 1, false, || {
            Some(TraceLabel {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            })
        });
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
        m.results
            .record_script_not_run("t", "a.ps1", "action_timeout", None);
        m.results.set_script_not_run(&labels, true);
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
        m.results
            .record_script_not_run("t", "a.ps1", "action_timeout", None);
        m.results.set_script_not_run(
            &MachineScriptLabels {
                tenant: "t".into(),
                machine: "m".into(),
                script: "a.ps1".into(),
            },
            true,
        );
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

    /// Every name in the exposition order is one a group registers: a misspelt one would
    /// silently move its family to the end of the body.
    #[test]
    fn the_exposition_order_names_registered_parts() {
        let m = Metrics::new();
        for name in EXPOSITION_ORDER {
            assert!(m.registry.has(name), "{name} is not registered");
        }
    }

    /// Write a series of tenant `t` into every group's families that take one.
    fn fill(m: &Metrics, t: &str) {
        let known = TenantSeries {
            endpoints: &["list_machine_actions"],
            download: "download",
            fetch_failures: &["io"],
            evicted: &["ttl"],
            final_statuses: &["Succeeded"],
        };
        m.init_tenant_series(t, &known);
        let d = std::time::Duration::from_millis(20);
        m.api.record_request(t, "token", "200".into(), d, None);
        m.api.record_throttled(t, "download", d);
        m.api
            .record_deprecation_notice(t, "list_machines", "sunset", "x");
        m.api.record_transcript_bytes(t, 10);
        m.api.set_permission_missing(t, "Machine.Read.All", true);
        m.results.record_transcript(t, "a.ps1", 1, true, || None);
        m.results.record_file(t, 5);
        let series = MachineScriptLabels {
            tenant: t.into(),
            machine: "m".into(),
            script: "a.ps1".into(),
        };
        m.results.set_script_series(
            &series,
            ScriptSeries {
                exit_code: 1,
                errors_present: true,
                end_time: 1.0,
            },
        );
        m.results
            .set_script_signature(&series, Some(("sig1", "failed <n>")));
        m.results.set_script_not_run(&series, true);
        m.poll.set_pending_results(t, 2);
        m.poll.set_discovery_interval(t, d);
        m.exporter.record_clock_skew(t, 0.5);
        m.exporter.record_tenant_identity_change(t);
        m.machines.expose_machine(
            &MachineInfoLabels {
                tenant: t.into(),
                machine: "m".into(),
                machine_id: "id".into(),
                rbac_group: "g".into(),
                os_platform: "Windows11".into(),
                health_status: "Active".into(),
            },
            &[MachineTagLabels {
                tenant: t.into(),
                machine: "m".into(),
                tag: "prod".into(),
            }],
        );
        m.machines.record_machine_tags_dropped(t, "too_long", 1);
    }

    // See: #32
    #[test]
    fn forgetting_a_tenant_leaves_no_series_of_it_and_the_others_untouched() {
        let m = Metrics::new();
        fill(&m, "gone");
        fill(&m, "kept");
        let kept_before = m.encode(false).unwrap();
        let lines_of = |text: &str, t: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains(&format!("tenant=\"{t}\"")))
                .map(str::to_string)
                .collect()
        };
        assert!(lines_of(&kept_before, "gone").len() > 40);
        assert_eq!(
            m.tenants_shown(),
            ["gone".to_string(), "kept".to_string()].into()
        );
        assert_eq!(m.machines.machine_tag_series(), 2);

        assert!(m.forget_tenant("gone") > 0);
        for openmetrics in [false, true] {
            let text = m.encode(openmetrics).unwrap();
            assert_eq!(lines_of(&text, "gone"), Vec::<String>::new(), "{text}");
        }
        // The other tenant's series are all there, with their values.
        let after = m.encode(false).unwrap();
        assert_eq!(lines_of(&after, "kept"), lines_of(&kept_before, "kept"));
        assert_eq!(m.tenants_shown(), ["kept".to_string()].into());
        // The bookkeeping beside the series forgot the tenant too.
        assert_eq!(m.machines.machine_tag_series(), 1);
        assert!(m.results.signatures().top("gone", "a.ps1").top.is_empty());
        assert_eq!(m.results.script_machines("gone"), Vec::<String>::new());
        assert_eq!(m.results.script_machines("kept"), vec!["m".to_string()]);
    }
}
