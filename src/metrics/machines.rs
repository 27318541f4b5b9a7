//! The machine context's families: `mde_machine_info`, `mde_machine_tag` (and how many
//! there are, all tenants together, which count against `max_series`) and
//! `mde_machine_tags_dropped` (#10, #24).
//!
//! Owns those families ([`MachineMetrics`], fields private: the methods here are their one
//! writer), their registration and their writing. Does not own which machines and tags are
//! exposed, nor when (the machine-context refresh, `poll::machines`).

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::{MachineInfoLabels, MachineTagLabels, ReasonLabels, reason};
use super::per_tenant::{Forget, TenantFamily};
use super::registry::Parts;

/// The families the machine-context refresh writes.
pub struct MachineMetrics {
    machine_info: TenantFamily<MachineInfoLabels, Gauge>,
    machine_tag: TenantFamily<MachineTagLabels, Gauge>,
    /// How many `mde_machine_tag` series there are, all tenants together: they count against
    /// `max_series` (#24).
    machine_tag_series: AtomicUsize,
    /// Allowed tags left out by a cap, by reason (#24).
    machine_tags_dropped: TenantFamily<ReasonLabels, Counter>,
}

impl MachineMetrics {
    /// The families, registered in `r`.
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = MachineMetrics {
            machine_info: TenantFamily::default(),
            machine_tag: TenantFamily::default(),
            machine_tag_series: AtomicUsize::new(0),
            machine_tags_dropped: TenantFamily::default(),
        };
        r.register_per_tenant(
            "mde_machine_info",
            "Machine context, 1 for every machine with per-machine series: device group (rbac_group), OS platform and health status, read with GET /api/machines on its own slow schedule and quota budget (endpoint list_machines), never at scrape time. Join on tenant and machine to route alerts by device group",
            &m.machine_info,
        );
        r.register_per_tenant(
            "mde_machine_tag",
            "1 for every machine tag allowed by the tenant's machine_tags regexes, on machines with per-machine series; no tag becomes a label without the allow-list",
            &m.machine_tag,
        );
        r.register_per_tenant(
            "mde_machine_tags_dropped",
            "Allowed machine tags left out, counted each time a machine's context is read, by reason: too_long (over max_tag_length characters; dropped whole, never cut), per_machine (beyond max_tags_per_machine, the first in alphabetical order kept) or max_series (no room left under max_series by the per-machine script series and the other tags)",
            &m.machine_tags_dropped,
        );
        m
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

    /// The bookkeeping beside the series of a tenant being forgotten (`Metrics::forget_tenant`
    /// removes the series): its tags leave the count against `max_series`.
    pub(super) fn forget_tenant(&self, t: &str) {
        let n = self.machine_tag.forget(t);
        self.machine_tag_series.fetch_sub(n, Ordering::Relaxed);
    }

    /// No machine context is exposed (before a configuration's refreshes start).
    pub fn clear_machines(&self) {
        self.machine_info.clear();
        self.machine_tag.clear();
        self.machine_tag_series.store(0, Ordering::Relaxed);
    }
}
