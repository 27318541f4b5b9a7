//! The exporter's families about itself: configuration loads
//! (`mde_exporter_config_last_reload_*`), tenant files and tenants refused alone
//! (`mde_exporter_tenant_file_*`, `mde_exporter_tenants_refused`, with what the status page
//! shows of them: [`TenantFileStatus`]), state-file write errors
//! (`mde_exporter_state_write_errors`), tenant identity changes of the state
//! (`mde_exporter_state_tenant_identity_changes`), the build and the shard
//! (`mde_exporter_build_info`, `mde_exporter_shard_info`, see [`set_shard`]), the skew of the
//! local clock from the API's (`mde_exporter_clock_skew_seconds`), OTLP exports
//! (`mde_exporter_otlp_export_failures_total`, [`OTLP_EXPORT_FAILURES`], and
//! `mde_exporter_otlp_metrics_exports_total`), and the collectors read at scrape time for the
//! process (`process_*`) and the HTTP server (`mde_exporter_http_*`, see `collectors`).
//!
//! Owns those families ([`ExporterMetrics`], fields private: the methods here are their one
//! writer, but for the process-wide [`OTLP_EXPORT_FAILURES`] that `telemetry` increments),
//! their registration, their series started at 0 for a tenant, and their writing. Does not own
//! reloading (`app`), the state file (`state`), the API's clock (`api::clock`), exporting
//! (`telemetry`, `otlp_metrics`) nor what the collectors read.

use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::collectors::{HttpCollector, ProcessCollector};
use super::labels::{BuildLabels, ExportResultLabels, ShardLabels, TenantLabels, tenant};
use super::per_tenant::TenantFamily;
use super::registry::{FloatGauge, Parts};

/// Span batches the OTLP exporter could not deliver (collector down, refused...). Counted,
/// not logged: a collector outage must not flood the logs. Process-wide, because the span
/// pipeline is; `telemetry` increments it and every [`ExporterMetrics`] registers it.
pub static OTLP_EXPORT_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// This process's shard (`--shard.index`, `--shard.count`), set once at start-up by
/// [`set_shard`] before the metrics are built; unsharded: index 0 of 1 (#24).
static SHARD: OnceLock<(u32, u32)> = OnceLock::new();

/// Record this process's shard, once, before the metrics are built (start-up): every
/// [`ExporterMetrics`] built afterwards serves `mde_exporter_shard_info{index,count}`. A
/// second call changes nothing: the shard flags cannot change on a reload.
pub fn set_shard(index: u32, count: u32) {
    let _ = SHARD.set((index, count));
}

/// One tenant file as last read: the status page's row (#34).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFileStatus {
    pub file: String,
    /// The tenants it brings now (its last good content).
    pub tenants: usize,
    /// Why its latest read was not used, when it was not.
    pub error: Option<String>,
}

/// The tenant files and the tenants refused alone (name, and why), as last loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSourcesStatus {
    pub files: Vec<TenantFileStatus>,
    pub refused: Vec<(String, String)>,
}

/// The families the exporter writes about itself.
pub struct ExporterMetrics {
    build_info: Family<BuildLabels, Gauge>,
    shard_info: Family<ShardLabels, Gauge>,
    /// The shard index and count as values, for arithmetic across targets (#31: the model is
    /// kube-state-metrics' `kube_state_metrics_shard_ordinal` and `_total_shards`).
    shard_ordinal: Gauge,
    shard_count: Gauge,
    config_reload_success: Gauge,
    config_reload_timestamp: FloatGauge,
    /// Per tenant file: 1 if its latest read was used, 0 if it keeps its last good tenants.
    tenant_file_success: Family<Vec<(String, String)>, Gauge>,
    /// Per tenant file: the tenants it brings now.
    tenant_file_tenants: Family<Vec<(String, String)>, Gauge>,
    /// Tenants refused alone (sign-in not resolvable), all sources.
    tenants_refused: Gauge,
    /// The tenant files and the tenants refused, as the status page shows them.
    tenant_sources: Mutex<TenantSourcesStatus>,
    /// OTLP metrics pushes, by result (`otlp_metrics`).
    otlp_metrics_exports: Family<ExportResultLabels, Counter>,
    /// Writes to the state file that failed (each is retried once after reopening the file).
    state_write_errors: Counter,
    /// Tenants whose name came back pointing at another tenant_id or API (#24).
    state_identity_changes: TenantFamily<TenantLabels, Counter>,
    /// Local minus API time per tenant, from the answers' `Date` header (#24 item 7).
    clock_skew: TenantFamily<TenantLabels, FloatGauge>,
    /// What the HTTP server's connection limits and bcrypt queue did; `app` hands it to
    /// `exporter_web::serve_with` and it is read at scrape time.
    http_stats: Arc<exporter_web::ServeStats>,
}

impl ExporterMetrics {
    /// The families and the process and HTTP server collectors, registered in `r`; the build
    /// and the shard set.
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = ExporterMetrics {
            build_info: Family::default(),
            shard_info: Family::default(),
            shard_ordinal: Gauge::default(),
            shard_count: Gauge::default(),
            config_reload_success: Gauge::default(),
            config_reload_timestamp: FloatGauge::default(),
            tenant_file_success: Family::default(),
            tenant_file_tenants: Family::default(),
            tenants_refused: Gauge::default(),
            tenant_sources: Mutex::default(),
            otlp_metrics_exports: Family::default(),
            state_write_errors: Counter::default(),
            state_identity_changes: TenantFamily::default(),
            clock_skew: TenantFamily::default(),
            http_stats: Arc::default(),
        };
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
            "mde_exporter_shard_ordinal",
            "This process's --shard.index as a value (0 when not sharded), for MdeExporterShardsMissing",
            m.shard_ordinal.clone(),
        );
        r.register(
            "mde_exporter_total_shards",
            "This process's --shard.count as a value (1 when not sharded), for MdeExporterShardsMissing and MdeExporterShardingMismatch",
            m.shard_count.clone(),
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
            "mde_exporter_tenant_file_last_load_successful",
            "Per file of tenant_files: 1 if its latest read was used, 0 if it could not be (it does not parse or validate, or brings a tenant name served from elsewhere) and keeps its last good tenants",
            m.tenant_file_success.clone(),
        );
        r.register(
            "mde_exporter_tenant_file_tenants",
            "Per file of tenant_files: the tenants it brings now (its last good content)",
            m.tenant_file_tenants.clone(),
        );
        r.register(
            "mde_exporter_tenants_refused",
            "Tenant entries refused alone because their sign-in cannot be resolved (an environment variable not set, a certificate or secret file missing or not acceptable); the other tenants are served",
            m.tenants_refused.clone(),
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
            "mde_exporter_state_write_errors",
            "Writes to the state file that failed (a full disk, an I/O error); after each the file is reopened and the write tried again, so polls recover when the disk does",
            m.state_write_errors.clone(),
        );
        r.register_per_tenant(
            "mde_exporter_state_tenant_identity_changes",
            "Times a tenant name's tenant_id or api_url differed from the identity its state entries were recorded under; each time that tenant's discovery state was dropped and it started afresh (bootstrap)",
            &m.state_identity_changes,
        );
        r.register_per_tenant(
            "mde_exporter_clock_skew_seconds",
            "The local clock minus the MDE API's, per tenant: the API's time is the latest answer's Date header plus the monotonic time since (1 s resolution). Beyond max_clock_skew no in-flight action is abandoned and no per-machine series expires by time",
            &m.clock_skew,
        );
        r.register_collector("process_*", Box::new(ProcessCollector));
        r.register_collector(
            "mde_exporter_http_*",
            Box::new(HttpCollector(m.http_stats.clone())),
        );
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
        m.shard_ordinal.set(i64::from(index));
        m.shard_count.set(i64::from(count));
        m
    }

    /// Start at 0 the series of tenant `t`.
    pub(super) fn init_tenant_series(&self, t: &str) {
        let _ = self.state_identity_changes.get_or_create(&tenant(t));
    }

    /// A configuration load (start-up, SIGHUP or `POST /-/reload`) ended, at `now` (Unix
    /// seconds); a failed one leaves the success timestamp as it was.
    pub fn record_config_load(&self, ok: bool, now: f64) {
        self.config_reload_success.set(i64::from(ok));
        if ok {
            self.config_reload_timestamp.set(now);
        }
    }

    /// The tenant files as last read and the tenants refused alone: the families are set
    /// anew (a file no longer named loses its series) and the status page's copy replaced.
    pub fn set_tenant_sources(&self, status: TenantSourcesStatus) {
        self.tenant_file_success.clear();
        self.tenant_file_tenants.clear();
        for f in &status.files {
            let labels = vec![("file".to_string(), f.file.clone())];
            self.tenant_file_success
                .get_or_create(&labels)
                .set(i64::from(f.error.is_none()));
            self.tenant_file_tenants
                .get_or_create(&labels)
                .set(i64::try_from(f.tenants).unwrap_or(i64::MAX));
        }
        self.tenants_refused
            .set(i64::try_from(status.refused.len()).unwrap_or(i64::MAX));
        *self
            .tenant_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// The tenant files and tenants refused, for the status page.
    pub fn tenant_sources(&self) -> TenantSourcesStatus {
        self.tenant_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the HTTP server's connection limits and bcrypt queue did: `app` hands it to
    /// `exporter_web::serve_with`, and it is read at scrape time.
    pub fn http_stats(&self) -> Arc<exporter_web::ServeStats> {
        self.http_stats.clone()
    }

    /// The counter the state store increments on each failed write (`State::count_write_errors_in`).
    pub fn state_write_errors(&self) -> Counter {
        self.state_write_errors.clone()
    }

    /// OTLP metrics pushing starts: both results are served from 0.
    pub fn record_otlp_metrics_export_start(&self) {
        for result in ["success", "failure"] {
            let _ = self
                .otlp_metrics_exports
                .get_or_create(&ExportResultLabels {
                    result: result.into(),
                });
        }
    }

    /// An OTLP metrics push (all its requests) ended.
    pub fn record_otlp_metrics_export(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.otlp_metrics_exports
            .get_or_create(&ExportResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The tenant's state entries belonged to another tenant_id or API: it started afresh.
    pub fn record_tenant_identity_change(&self, tenant_name: &str) {
        self.state_identity_changes
            .get_or_create(&tenant(tenant_name))
            .inc();
    }

    /// The local clock is `seconds` ahead of the tenant's API (negative: behind): what the
    /// tenant's client reads in an answer's `Date`.
    pub fn record_clock_skew(&self, tenant_name: &str, seconds: f64) {
        self.clock_skew
            .get_or_create(&tenant(tenant_name))
            .set(seconds);
    }

    /// As [`ExporterMetrics::record_clock_skew`] for a series already there, never creating
    /// one: the housekeeping's refresh as the local clock moves. It may run on a `Shared` a
    /// reload has just replaced, or for a tenant this cluster member no longer owns, after
    /// the tenant's series were taken out; creating the gauge there brought it back. See: #32
    pub fn refresh_clock_skew(&self, tenant_name: &str, seconds: f64) {
        if let Some(g) = self.clock_skew.get(&tenant(tenant_name)) {
            g.set(seconds);
        }
    }
}
