//! Notable events: one struct each, whose `emit()` both logs and counts, so that logs and
//! metrics cannot drift apart.
//!
//! Owns the structured log fields of the per-transcript event and of fetch failures. Does not
//! own the per-machine gauges (the collector decides which run is the latest).

use crate::metrics::{Metrics, ScriptLabels, reason};

/// A RunScript transcript was retrieved and read.
#[derive(Debug)]
pub struct TranscriptRetrieved<'a> {
    pub tenant: &'a str,
    pub action_id: &'a str,
    pub index: u32,
    pub machine: &'a str,
    pub script: &'a str,
    pub exit_code: i64,
    pub errors_present: bool,
    pub output_bytes: usize,
    pub errors_bytes: usize,
    pub end_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl TranscriptRetrieved<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        // The transcript text itself is not logged: it can hold anything a script printed.
        tracing::info!(
            target: "mde_liveresponse_exporter::transcript",
            event = "transcript",
            tenant = self.tenant,
            action_id = self.action_id,
            index = self.index,
            machine = self.machine,
            script = self.script,
            exit_code = self.exit_code,
            errors_present = self.errors_present,
            output_bytes = self.output_bytes,
            errors_bytes = self.errors_bytes,
            end_time = self.end_time.map(|t| t.to_rfc3339()),
            "transcript retrieved"
        );
        let labels = ScriptLabels {
            tenant: self.tenant.to_string(),
            script: self.script.to_string(),
        };
        // Each counter carries the trace that retrieved the transcript as its exemplar.
        let exemplar = crate::telemetry::current_trace_label;
        metrics
            .script_runs
            .get_or_create(&labels)
            .inc_by(1, exemplar(), None);
        if self.exit_code != 0 {
            metrics
                .script_failures
                .get_or_create(&labels)
                .inc_by(1, exemplar(), None);
        }
        if self.errors_present {
            metrics
                .script_errors
                .get_or_create(&labels)
                .inc_by(1, exemplar(), None);
        }
    }
}

/// A result was given up on: it will not be asked for again.
#[derive(Debug)]
pub struct ResultFetchFailed<'a> {
    pub tenant: &'a str,
    pub action_id: &'a str,
    pub index: u32,
    pub reason: &'a str,
    pub attempts: u32,
    pub error: &'a str,
}

impl ResultFetchFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            event = "result_fetch_failed",
            tenant = self.tenant,
            action_id = self.action_id,
            index = self.index,
            reason = self.reason,
            attempts = self.attempts,
            error = self.error,
            "giving up on a command result"
        );
        metrics
            .fetch_failures
            .get_or_create(&reason(self.tenant, self.reason))
            .inc_by(1, crate::telemetry::current_trace_label(), None);
    }
}
