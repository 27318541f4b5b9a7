//! What the exporter records about itself: configuration loads
//! (`mde_exporter_config_last_reload_*`), state-file write errors
//! (`mde_exporter_state_write_errors`), tenant identity changes of the state
//! (`mde_exporter_state_tenant_identity_changes`), the shard (`mde_exporter_shard_info`, see
//! [`set_shard`]), the skew of the local clock from the API's (`mde_exporter_clock_skew_seconds`),
//! machine context (`mde_machine_info`, `mde_machine_tag` and how many there are,
//! `mde_machine_tags_dropped`) and OTLP metrics pushes (`mde_exporter_otlp_metrics_exports_total`).
//!
//! Owns the writing of those families. Does not own reloading (`app`), the state file
//! (`state`), the API's clock (`api::clock`), the machine-context refresh (`machines`) nor pushing
//! (`otlp_metrics`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;

use super::{ExportResultLabels, MachineInfoLabels, MachineTagLabels, Metrics, reason, tenant};

/// Record this process's shard, once, before the metrics are built (start-up): every
/// [`Metrics`] built afterwards serves `mde_exporter_shard_info{index,count}`. A second call
/// changes nothing: the shard flags cannot change on a reload.
pub fn set_shard(index: u32, count: u32) {
    let _ = super::SHARD.set((index, count));
}

impl Metrics {
    /// A configuration load (start-up, SIGHUP or `POST /-/reload`) ended, at `now` (Unix
    /// seconds); a failed one leaves the success timestamp as it was.
    pub fn record_config_load(&self, ok: bool, now: f64) {
        self.config_reload_success.set(i64::from(ok));
        if ok {
            self.config_reload_timestamp.set(now);
        }
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

    /// The local clock is `seconds` ahead of the tenant's API (negative: behind).
    pub fn record_clock_skew(&self, tenant_name: &str, seconds: f64) {
        self.clock_skew
            .get_or_create(&tenant(tenant_name))
            .set(seconds);
    }

    /// A machine's context is exposed: its info series and its allowed tags.
    pub fn expose_machine<'a>(
        &self,
        info: &MachineInfoLabels,
        tags: impl IntoIterator<Item = &'a MachineTagLabels>,
    ) {
        self.machine_info.get_or_create(info).set(1);
        for t in tags {
            if self.machine_tag.get(t).is_none() {
                self.machine_tag_series.fetch_add(1, Ordering::Relaxed);
            }
            self.machine_tag.get_or_create(t).set(1);
        }
    }

    /// How many `mde_machine_tag` series are exposed, all tenants together (#24).
    pub fn machine_tag_series(&self) -> usize {
        self.machine_tag_series.load(Ordering::Relaxed)
    }

    /// `n` allowed tags of a tenant's machine left out, for `why` (`too_long`,
    /// `per_machine`, `max_series`); `n` = 0 starts the series (#24).
    pub fn record_machine_tags_dropped(&self, tenant_name: &str, why: &str, n: u64) {
        self.machine_tags_dropped
            .get_or_create(&reason(tenant_name, why))
            .inc_by(n);
    }

    /// A machine's context is no longer exposed.
    pub fn unexpose_machine<'a>(
        &self,
        info: &MachineInfoLabels,
        tags: impl IntoIterator<Item = &'a MachineTagLabels>,
    ) {
        self.machine_info.remove(info);
        for t in tags {
            if self.machine_tag.remove(t) {
                self.machine_tag_series.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// No machine context is exposed (before a configuration's refreshes start).
    pub fn clear_machines(&self) {
        self.machine_info.clear();
        self.machine_tag.clear();
        self.machine_tag_series.store(0, Ordering::Relaxed);
    }
}
