//! The families of retrieving results: final actions and their commands
//! (`mde_liveresponse_actions`, `_commands`), transcripts (`_script_runs`, `_script_failures`,
//! `_script_errors`), results given up on (`_result_fetch_failures`), GetFile sizes
//! (`_files`, `_file_bytes`), scripts that did not run (`_script_not_run` counter and gauge),
//! and the per-machine script series (`_script_exit_code`, `_script_errors_present`,
//! `_script_last_run_timestamp_seconds`) with their evictions
//! (`mde_exporter_series_evicted`) and the machines per failure signature of their latest run
//! (`_script_failure_signatures`, `_folded`: [`Signatures`], kept as the series are set and
//! removed), and which machines of a tenant have per-machine script
//! series ([`MachineIndex`], kept as they are set and evicted, for the machine context).
//!
//! Owns those families ([`ResultMetrics`], fields private: the methods here are their one
//! writer), their registration, their series started at 0 for a tenant, and their writing.
//! Does not own when a result counts (`collector`, `state`) nor which series expire
//! (`series`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::{
    CommandLabels, LabelValue, MachineScriptLabels, NotRunLabels, ReasonLabels, ScriptLabels,
    StatusLabels, TenantLabels, TenantSeries, TraceLabel, reason, tenant,
};
use super::per_tenant::TenantFamily;
use super::registry::{ExCounter, FloatGauge, Parts, background};
use super::signatures::{Signatures, SignaturesCollector};

/// The families retrieving results writes.
pub struct ResultMetrics {
    script_runs: TenantFamily<ScriptLabels, ExCounter>,
    script_failures: TenantFamily<ScriptLabels, ExCounter>,
    script_errors: TenantFamily<ScriptLabels, ExCounter>,
    script_exit_code: TenantFamily<MachineScriptLabels, Gauge>,
    script_errors_present: TenantFamily<MachineScriptLabels, Gauge>,
    script_last_run: TenantFamily<MachineScriptLabels, FloatGauge>,
    /// Which machines have those series, per tenant (#24).
    script_machines: MachineIndex,
    /// Machines per failure signature of their latest run (#36), kept with those series.
    script_signatures: Arc<Signatures>,
    commands: TenantFamily<CommandLabels, Counter>,
    actions: TenantFamily<StatusLabels, Counter>,
    fetch_failures: TenantFamily<ReasonLabels, ExCounter>,
    files: TenantFamily<TenantLabels, Counter>,
    file_bytes: TenantFamily<TenantLabels, Counter>,
    script_not_run_total: TenantFamily<NotRunLabels, ExCounter>,
    script_not_run: TenantFamily<MachineScriptLabels, Gauge>,
    /// Per-machine series removed from /metrics and the state, by reason (`ttl`, `max_series`).
    series_evicted: TenantFamily<ReasonLabels, Counter>,
}

impl ResultMetrics {
    /// The families, registered in `r`.
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = ResultMetrics {
            script_runs: TenantFamily::default(),
            script_failures: TenantFamily::default(),
            script_errors: TenantFamily::default(),
            script_exit_code: TenantFamily::default(),
            script_errors_present: TenantFamily::default(),
            script_last_run: TenantFamily::default(),
            script_machines: MachineIndex::default(),
            script_signatures: Arc::default(),
            commands: TenantFamily::default(),
            actions: TenantFamily::default(),
            fetch_failures: TenantFamily::default(),
            files: TenantFamily::default(),
            file_bytes: TenantFamily::default(),
            script_not_run_total: TenantFamily::default(),
            script_not_run: TenantFamily::default(),
            series_evicted: TenantFamily::default(),
        };
        r.register_per_tenant(
            "mde_liveresponse_script_runs",
            background("RunScript transcripts retrieved, by script."),
            &m.script_runs,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_failures",
            background("Retrieved transcripts whose exit_code was not 0, by script."),
            &m.script_failures,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_errors",
            background("Retrieved transcripts with non-empty script_errors, by script."),
            &m.script_errors,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_exit_code",
            background(
                "Exit code of the latest run (by command endTime) of a script on a machine.",
            ),
            &m.script_exit_code,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_errors_present",
            background(
                "1 if the latest run of a script on a machine wrote to script_errors, else 0.",
            ),
            &m.script_errors_present,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_last_run_timestamp_seconds",
            background("End time (Unix seconds) of the latest run of a script on a machine."),
            &m.script_last_run,
        );
        r.register_collector(
            "mde_liveresponse_script_failure_signatures",
            Box::new(SignaturesCollector(m.script_signatures.clone())),
        );
        r.register_per_tenant(
            "mde_liveresponse_commands",
            background(
                "Commands of final Live Response actions, by command type and commandStatus.",
            ),
            &m.commands,
        );
        r.register_per_tenant(
            "mde_liveresponse_actions",
            background("Final Live Response machine actions seen, by status."),
            &m.actions,
        );
        r.register_per_tenant(
            "mde_liveresponse_result_fetch_failures",
            background("Command results that could not be retrieved or read, by reason; given up, not retried."),
            &m.fetch_failures,
        );
        r.register_per_tenant(
            "mde_liveresponse_files",
            background("GetFile results whose size was recorded."),
            &m.files,
        );
        r.register_per_tenant(
            "mde_liveresponse_file_bytes",
            background("Compressed bytes of GetFile results (sized, not kept)."),
            &m.file_bytes,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_not_run",
            background("RunScript commands of final actions that produced no transcript, by script and reason (command_failed, action_timeout, action_cancelled, action_failed)."),
            &m.script_not_run_total,
        );
        // The gauge's first name is the counter's family name in OpenMetrics (which drops
        // `_total`), a clash strict parsers refuse: it stays in the Prometheus text format,
        // where it never clashed, and OpenMetrics has the same series under `_current` only.
        // See: #24
        r.register_per_tenant_text_only(
            "mde_liveresponse_script_not_run",
            background("1 while the latest attempt (by the action's lastUpdateDateTimeUtc) of a script on a machine did not run, 0 once a later attempt ran."),
            &m.script_not_run,
        );
        r.register_per_tenant(
            "mde_liveresponse_script_not_run_current",
            background("1 while the latest attempt (by the action's lastUpdateDateTimeUtc) of a script on a machine did not run, 0 once a later attempt ran; the same series as mde_liveresponse_script_not_run, whose name OpenMetrics leaves out (it is the family name of mde_liveresponse_script_not_run_total there)."),
            &m.script_not_run,
        );
        r.register_per_tenant(
            "mde_exporter_series_evicted",
            "Per-machine series (mde_liveresponse_script_exit_code and its siblings) removed, by reason: ttl (no run within series_ttl) or max_series (the oldest beyond the cap)",
            &m.series_evicted,
        );
        m
    }

    /// Start at 0 the series of tenant `t` for the reasons and final statuses in `known`.
    pub(super) fn init_tenant_series(&self, t: &str, known: &TenantSeries<'_>) {
        for r in known.fetch_failures {
            let _ = self.fetch_failures.get_or_create(&reason(t, r));
        }
        for r in known.evicted {
            let _ = self.series_evicted.get_or_create(&reason(t, r));
        }
        for status in known.final_statuses {
            let _ = self.actions.get_or_create(&StatusLabels {
                tenant: t.into(),
                status: (*status).into(),
            });
        }
        let labels = tenant(t);
        let _ = self.files.get_or_create(&labels);
        let _ = self.file_bytes.get_or_create(&labels);
    }

    /// A final action seen for the first time, with the (type, commandStatus) of its commands.
    pub fn record_final_action<'a>(
        &self,
        tenant_name: &str,
        status: &str,
        commands: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.actions
            .get_or_create(&StatusLabels {
                tenant: tenant_name.into(),
                status: status.into(),
            })
            .inc();
        for (command, status) in commands {
            self.commands
                .get_or_create(&CommandLabels {
                    tenant: tenant_name.into(),
                    command: command.into(),
                    status: status.into(),
                })
                .inc();
        }
    }

    /// A transcript retrieved (counted once); each counter carries `exemplar`, the trace that
    /// retrieved it.
    pub fn record_transcript(
        &self,
        tenant_name: &str,
        script: &str,
        exit_code: i64,
        errors_present: bool,
        exemplar: impl Fn() -> Option<TraceLabel>,
    ) {
        let labels = ScriptLabels {
            tenant: tenant_name.into(),
            script: script.into(),
        };
        self.script_runs
            .get_or_create(&labels)
            .inc_by(1, exemplar(), None);
        if exit_code != 0 {
            self.script_failures
                .get_or_create(&labels)
                .inc_by(1, exemplar(), None);
        }
        if errors_present {
            self.script_errors
                .get_or_create(&labels)
                .inc_by(1, exemplar(), None);
        }
    }

    /// A result given up on, by reason.
    pub fn record_fetch_failure(&self, tenant_name: &str, why: &str, exemplar: Option<TraceLabel>) {
        self.fetch_failures
            .get_or_create(&reason(tenant_name, why))
            .inc_by(1, exemplar, None);
    }

    /// A GetFile result sized (counted once).
    pub fn record_file(&self, tenant_name: &str, bytes: u64) {
        let labels = tenant(tenant_name);
        self.files.get_or_create(&labels).inc();
        self.file_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// A RunScript command of a final action that produced no transcript, by reason.
    pub fn record_script_not_run(
        &self,
        tenant_name: &str,
        script: &str,
        why: &str,
        exemplar: Option<TraceLabel>,
    ) {
        self.script_not_run_total
            .get_or_create(&NotRunLabels {
                tenant: tenant_name.into(),
                script: script.into(),
                reason: why.into(),
            })
            .inc_by(1, exemplar, None);
    }

    /// `mde_liveresponse_script_not_run` of a (tenant, machine, script): 1 while its latest
    /// attempt did not run.
    pub fn set_script_not_run(&self, labels: &MachineScriptLabels, not_run: bool) {
        self.script_not_run
            .get_or_create(labels)
            .set(i64::from(not_run));
    }

    /// The value of `mde_liveresponse_script_not_run` of a (tenant, machine, script), for tests.
    #[cfg(test)]
    pub(crate) fn script_not_run_value(&self, labels: &MachineScriptLabels) -> Option<i64> {
        self.script_not_run.get(labels).map(|g| g.get())
    }

    /// The `mde_liveresponse_script_not_run` series of a (tenant, machine, script) expired.
    pub fn remove_script_not_run(&self, labels: &MachineScriptLabels) {
        self.script_not_run.remove(labels);
    }

    /// The per-machine series of a (tenant, machine, script) show `run`.
    pub fn set_script_series(&self, labels: &MachineScriptLabels, run: ScriptSeries) {
        let new = self.script_exit_code.get(labels).is_none();
        self.script_exit_code
            .get_or_create(labels)
            .set(run.exit_code);
        if new {
            self.script_machines.added(labels);
        }
        self.script_errors_present
            .get_or_create(labels)
            .set(i64::from(run.errors_present));
        self.script_last_run.get_or_create(labels).set(run.end_time);
    }

    /// The per-machine series of a (tenant, machine, script) are removed, for `why` (`ttl`,
    /// `max_series`), counted in `mde_exporter_series_evicted`.
    pub fn evict_script_series(&self, labels: &MachineScriptLabels, why: &str) {
        self.series_evicted
            .get_or_create(&reason(&labels.tenant, why))
            .inc();
        self.remove_script_series(labels);
    }

    /// The per-machine series of a (tenant, machine, script) are removed, not counted: a
    /// tenant this process no longer serves (another shard's, or removed by a reload). (#24)
    pub fn remove_script_series(&self, labels: &MachineScriptLabels) {
        if self.script_exit_code.remove(labels) {
            self.script_machines.removed(labels);
        }
        self.script_errors_present.remove(labels);
        self.script_last_run.remove(labels);
        self.script_signatures.remove(labels);
    }

    /// The bookkeeping beside the series of a tenant being forgotten (`Metrics::forget_tenant`
    /// removes the series): its machines and its failure signatures. See: #32
    pub(super) fn forget_tenant(&self, t: &str) {
        self.script_machines.lock().remove(t);
        self.script_signatures.forget_tenant(t);
    }

    /// The failure signature, `(id, template)`, of the latest run of a (tenant, machine,
    /// script), `None` when it did not fail (#36); counted while its series are there.
    pub fn set_script_signature(
        &self,
        labels: &MachineScriptLabels,
        signature: Option<(&str, &str)>,
    ) {
        self.script_signatures.set(labels, signature);
    }

    /// The machines per failure signature (#36): K is set through it, pages and tests read it.
    pub fn signatures(&self) -> &Signatures {
        &self.script_signatures
    }

    /// The machines of `tenant_name` with per-machine script series now; what changed before
    /// is forgotten (the caller knows it all). For the machine context's first refresh.
    pub fn script_machines(&self, tenant_name: &str) -> Vec<String> {
        let mut all = self.script_machines.lock();
        let Some(t) = all.get_mut(tenant_name) else {
            return Vec::new();
        };
        t.changed.clear();
        t.scripts.keys().map(|m| m.to_string()).collect()
    }

    /// The machines of `tenant_name` that got their first per-machine script series or lost
    /// their last one since the previous call (or [`ResultMetrics::script_machines`]), each with
    /// whether it has series now. Costs what changed.
    pub fn take_changed_script_machines(&self, tenant_name: &str) -> Vec<(String, bool)> {
        let mut all = self.script_machines.lock();
        let Some(t) = all.get_mut(tenant_name) else {
            return Vec::new();
        };
        let changed = std::mem::take(&mut t.changed);
        changed
            .into_iter()
            .map(|m| {
                let present = t.scripts.contains_key(&m);
                (m.to_string(), present)
            })
            .collect()
    }
}

/// Per tenant, the machines with per-machine script series and which of them appeared or
/// went since the machine context last asked, so that its refresh costs what changed, not
/// every series of the tenant (#24).
#[derive(Debug, Default)]
pub struct MachineIndex(Mutex<HashMap<LabelValue, TenantMachines>>);

#[derive(Debug, Default)]
struct TenantMachines {
    /// Machine (as the series spell it) → how many scripts have series on it.
    scripts: BTreeMap<LabelValue, usize>,
    /// Machines that appeared (first script) or went (last script) since the last take.
    changed: BTreeSet<LabelValue>,
}

impl MachineIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LabelValue, TenantMachines>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn added(&self, labels: &MachineScriptLabels) {
        let mut all = self.lock();
        let t = all.entry(labels.tenant.clone()).or_default();
        let n = t.scripts.entry(labels.machine.clone()).or_default();
        *n += 1;
        if *n == 1 {
            t.changed.insert(labels.machine.clone());
        }
    }

    fn removed(&self, labels: &MachineScriptLabels) {
        let mut all = self.lock();
        let Some(t) = all.get_mut(&labels.tenant) else {
            return;
        };
        if let Some(n) = t.scripts.get_mut(&labels.machine) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.scripts.remove(&labels.machine);
                t.changed.insert(labels.machine.clone());
            }
        }
    }
}

/// The latest run of a script on a machine, as the per-machine series show it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScriptSeries {
    pub exit_code: i64,
    pub errors_present: bool,
    /// End time, Unix seconds.
    pub end_time: f64,
}
