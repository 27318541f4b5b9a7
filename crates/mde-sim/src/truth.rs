//! The ground truth [`crate::Simulator::truth`] returns: the final Live Response actions, their
//! transcripts, files and commands that never ran, and the tallies tests compare with the
//! exporter's metrics.
//!
//! Owns those types and tallies. Does not own deciding what is final (`scenario`, the
//! simulator's clock) nor building the truth (`Simulator::truth`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Ground truth: what is final *now*, Live Response actions only.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub actions: Vec<TruthAction>,
    /// Every Completed RunScript command of a final Live Response action.
    pub transcripts: Vec<TruthTranscript>,
    /// Every Completed GetFile command of a final Live Response action.
    pub files: Vec<TruthFile>,
    /// Every RunScript command of a final Live Response action that never completed.
    pub not_run: Vec<TruthNotRun>,
}

/// A RunScript command that produced no transcript, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthNotRun {
    pub action_id: String,
    pub index: u32,
    pub machine: String,
    pub script: String,
    /// `command_failed`, `action_timeout`, `action_cancelled` or `action_failed`.
    pub reason: &'static str,
    /// The action's final `lastUpdateDateTimeUtc`.
    pub last_update: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthAction {
    pub id: String,
    pub machine_id: String,
    pub computer_dns_name: String,
    pub status: String,
    pub requestor: String,
    /// (command type, final commandStatus), by index.
    pub commands: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthTranscript {
    pub action_id: String,
    pub index: u32,
    /// The machine's `computerDnsName`.
    pub machine: String,
    pub script: String,
    pub exit_code: i64,
    pub errors_present: bool,
    /// The command's `endTime` (same instant the API serves).
    pub end_time: DateTime<Utc>,
    /// The action's `lastUpdateDateTimeUtc` once final: with `index`, which transcript of a
    /// machine and script is the latest for `script_metrics` (#21).
    pub last_update: DateTime<Utc>,
    /// The blob is not valid transcript JSON.
    pub malformed: bool,
    /// What the output reports with `script_metrics` on: (sample name, value) for
    /// [`TEXT_SCRIPT`] (each name printed once, labels aside), (dotted path, value; a boolean
    /// as 1/0) for [`JSON_SCRIPT`]; empty otherwise.
    pub printed: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthFile {
    pub action_id: String,
    pub index: u32,
    pub compressed_bytes: u64,
}

impl Truth {
    /// Non-malformed transcripts per script.
    pub fn runs_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|_| true)
    }
    /// Non-malformed transcripts with a non-zero exit code, per script.
    pub fn failures_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|t| t.exit_code != 0)
    }
    /// Non-malformed transcripts with non-empty `script_errors`, per script.
    pub fn errors_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|t| t.errors_present)
    }
    fn count(&self, f: impl Fn(&TruthTranscript) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.transcripts.iter().filter(|t| !t.malformed && f(t)) {
            *out.entry(t.script.clone()).or_insert(0) += 1;
        }
        out
    }
    /// The latest (by `end_time`) non-malformed transcript per (machine, script).
    pub fn last_by_machine_script(&self) -> BTreeMap<(String, String), TruthTranscript> {
        let mut out: BTreeMap<(String, String), TruthTranscript> = BTreeMap::new();
        for t in self.transcripts.iter().filter(|t| !t.malformed) {
            let key = (t.machine.clone(), t.script.clone());
            if out.get(&key).is_none_or(|e| e.end_time <= t.end_time) {
                out.insert(key, t.clone());
            }
        }
        out
    }
    /// Not-run RunScript commands per (script, reason).
    pub fn not_run_by_script_reason(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for n in &self.not_run {
            *out.entry((n.script.clone(), n.reason.to_string()))
                .or_insert(0) += 1;
        }
        out
    }
    pub fn actions_by_status(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in &self.actions {
            *out.entry(a.status.clone()).or_insert(0) += 1;
        }
        out
    }
}
