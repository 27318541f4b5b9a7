//! What a retrieved transcript becomes: one value, [`Outcome`], built once from the result as
//! the poll knows it ([`Retrieved`]), the transcript, the script-output rule and the
//! redaction policy, then applied to its sinks in one fixed order: the state first (the
//! exactly-once commit, with the run and the script-output set), then the script-output set
//! served, the per-machine gauges (with the run's failure signature, #36), the log event and
//! the status page. Every sink reads the same facts from it. Also the restore, at start, of
//! the script-output sets the state holds ([`restore_script_sets`]).
//!
//! Owns that order, and what each sink gets of a transcript. Does not own fetching the
//! transcript (the collector in `poll`), the exactly-once rules (`state`), reading script
//! output and where that runs (`script_metrics`, given to [`Outcome::read`] by the collector)
//! or the families written (`metrics`).

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::api::model::Transcript;
use crate::config::{Redaction, ScriptMetrics, ScriptRule};
use crate::metrics::{MachineScriptLabels, Metrics};
use crate::record::events::TranscriptRetrieved;
use crate::record::excerpt::Excerpt;
use crate::record::signature::Signature;
use crate::record::state::{
    Committed, LastRun, ResultKey, RunUpdate, SeriesKey, State, StoreError,
};
use crate::script_metrics::store::{Extracted, Set};

/// The result a transcript answers, as the poll knows it from the action.
#[derive(Debug, Clone, Copy)]
pub struct Retrieved<'a> {
    pub key: &'a ResultKey,
    pub machine: &'a str,
    /// The script's name in the action; `None`: the transcript's own.
    pub script: Option<&'a str>,
    /// When the command ended (or the action's last update).
    pub end_time: Option<DateTime<Utc>>,
    /// When the script-output set counts as produced: the action's last update, else the end
    /// time, else the API's time now.
    pub produced: DateTime<Utc>,
}

/// A transcript as shown on the landing page. Its texts are boxed `str`s: a tenant keeps 20,
/// and a `String`'s spare capacity word made each a third larger (#34).
#[derive(Debug, Clone)]
pub struct RecentTranscript {
    pub action_id: Box<str>,
    pub index: u32,
    pub machine: Box<str>,
    pub script: Box<str>,
    pub exit_code: i64,
    pub errors_present: bool,
    pub end_time: Option<DateTime<Utc>>,
    /// The trace that retrieved it, when tracing is on.
    pub trace_id: Option<Box<str>>,
}

/// The script-output set a transcript gives under its rule.
struct ScriptSet<'r> {
    rule: &'r ScriptRule,
    produced: DateTime<Utc>,
    /// The output as read under the rule; `None` until it is read ([`Outcome::read`]), and
    /// for good when the reading was abandoned: the transcript then gives no set.
    extracted: Option<Extracted>,
}

/// What one transcript becomes, built once (pure), applied once.
pub struct Outcome<'r> {
    key: ResultKey,
    series: SeriesKey,
    exit_code: i64,
    errors_present: bool,
    end_time: Option<DateTime<Utc>>,
    output_bytes: usize,
    errors_bytes: usize,
    /// `script_output` and `script_errors` after the redaction policy (`None`: dropped).
    script_output: Option<String>,
    script_errors: Option<String>,
    /// The run offered as the latest of its series (none without an end time).
    run: Option<LastRun>,
    set: Option<ScriptSet<'r>>,
}

impl<'r> Outcome<'r> {
    /// The outcome of `transcript`, answering `result`: a pure function of its inputs and of
    /// `now` (when the transcript page's excerpt was taken).
    pub fn new(
        result: Retrieved<'_>,
        transcript: &Transcript,
        rules: &'r ScriptMetrics,
        redaction: &Redaction,
        now: DateTime<Utc>,
    ) -> Outcome<'r> {
        let script = result
            .script
            .map_or_else(|| transcript.script_name.clone(), str::to_string);
        let errors_present = transcript.errors_present();
        let series = (
            result.key.tenant.clone(),
            result.machine.to_string(),
            script,
        );
        // Why it failed (#36), from the full text, as the policy lets the template out.
        let signature = Signature::of(
            &transcript.script_errors,
            &transcript.script_output,
            transcript.exit_code,
            result.machine,
        )
        .map(|s| s.redacted(redaction));
        let run = result.end_time.map(|end| LastRun {
            end_time: end,
            exit_code: transcript.exit_code,
            errors_present,
            action_id: result.key.action_id.clone(),
            // The transcript page's excerpt, committed with the run.
            excerpt: Some(Excerpt::new(
                redaction,
                &transcript.script_output,
                &transcript.script_errors,
                result.key.index,
                now,
            )),
            signature,
        });
        // Script output as metrics, read from the full output before any redaction: by the
        // caller, off the async workers (`Outcome::read`).
        let set = rules.rule_for(&series.0, &series.2).map(|rule| ScriptSet {
            rule,
            produced: result.produced,
            extracted: None,
        });
        Outcome {
            key: result.key.clone(),
            series,
            exit_code: transcript.exit_code,
            errors_present,
            end_time: result.end_time,
            output_bytes: transcript.script_output.len(),
            errors_bytes: transcript.script_errors.len(),
            script_output: redaction.apply(&transcript.script_output),
            script_errors: redaction.apply(&transcript.script_errors),
            run,
            set,
        }
    }

    /// The rule the transcript's output is to be read under, if any (see [`Outcome::read`]).
    pub fn rule(&self) -> Option<&'r ScriptRule> {
        self.set.as_ref().map(|s| s.rule)
    }

    /// The transcript's output as read under [`Outcome::rule`] (`script_metrics::store::
    /// extract`; the caller runs it off the async workers, #32 item 1). Not called (the
    /// reading abandoned): the transcript gives no set, the set held stays.
    pub fn read(&mut self, extracted: Extracted) {
        if let Some(s) = &mut self.set {
            s.extracted = Some(extracted);
        }
    }

    /// Apply the outcome to its sinks, in order: the state (marking the result done, offering
    /// the run as the latest and keeping the script-output set, in one durable transaction,
    /// before anything is counted), the script-output set served, the per-machine gauges, the
    /// log event, and last `status` (the landing page). A result already done, or a state
    /// write that fails, changes and counts nothing.
    pub fn apply(
        mut self,
        state: &Mutex<State>,
        metrics: &Metrics,
        status: impl FnOnce(RecentTranscript),
    ) -> Result<(), StoreError> {
        let store = &metrics.script_metrics;
        // The state keeps the set as it is served: within the rule's total (which depends on
        // what the other machines' sets hold, so the script-output store is asked), and only
        // when it is not older than the set already held, so a restart serves what was served.
        let durable = self.set.as_mut().and_then(|s| {
            let extracted = s.extracted.as_mut()?;
            store.cap_to_total(&self.series, s.rule, extracted);
            let set = Set::new(s.produced, self.key.index, s.rule, extracted);
            let held = store.produced(&self.series);
            if held.is_some_and(|h| h > (set.produced, set.index)) {
                return None;
            }
            serde_json::to_vec(&set)
                .ok()
                .map(|bytes| (self.series.clone(), bytes))
        });
        let offered = self.run.clone().map(|r| (self.series.clone(), r));
        let committed = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .commit_result_with_set(self.key.clone(), offered, durable)?;
        let update = match committed {
            Committed::AlreadyDone => return Ok(()),
            Committed::Done(update) => update,
        };
        let (tenant, machine, script) = &self.series;
        if let Some(ScriptSet {
            rule,
            produced,
            extracted: Some(extracted),
        }) = self.set
        {
            let dropped: u64 = extracted.dropped.values().sum();
            if dropped > 0 || extracted.invalid > 0 {
                // Once per transcript, however many lines: the counts are in the metrics.
                tracing::warn!(
                    tenant = %tenant,
                    action_id = %self.key.action_id,
                    index = self.key.index,
                    machine = %machine,
                    script = %script,
                    invalid_lines = extracted.invalid,
                    dropped,
                    "script_metrics: some of the script's output was left out"
                );
            }
            store.record(
                self.series.clone(),
                produced,
                self.key.index,
                rule,
                extracted,
            );
        }
        if let (RunUpdate::Latest, Some(run)) = (update, &self.run) {
            let labels = MachineScriptLabels {
                tenant: tenant.as_str().into(),
                machine: machine.as_str().into(),
                script: script.as_str().into(),
            };
            crate::record::series::set(metrics, &labels, run);
        }
        TranscriptRetrieved {
            tenant,
            action_id: &self.key.action_id,
            index: self.key.index,
            machine,
            script,
            exit_code: self.exit_code,
            errors_present: self.errors_present,
            output_bytes: self.output_bytes,
            errors_bytes: self.errors_bytes,
            end_time: self.end_time,
            script_output: self.script_output.take(),
            script_errors: self.script_errors.take(),
        }
        .emit(metrics);
        let (_, machine, script) = self.series;
        status(RecentTranscript {
            action_id: self.key.action_id.into(),
            index: self.key.index,
            machine: machine.into(),
            script: script.into(),
            exit_code: self.exit_code,
            errors_present: self.errors_present,
            end_time: self.end_time,
            trace_id: crate::telemetry::current_trace_label().map(|t| t.trace_id.into()),
        });
        Ok(())
    }
}

/// The script-output sets the state holds, back in `/metrics` before any poll: those `served`
/// here (a tenant served here with a rule for the script). A set left out that is past its
/// own ttl by the local clock (no API clock for a tenant not served) leaves the state too, and
/// so does a set that does not parse (written by another version, or damaged): it could never
/// be served, and it would be warned about at every start. Returns the keys removed.
pub fn restore_script_sets(
    state: &Mutex<State>,
    metrics: &Metrics,
    served: impl Fn(&str, &str) -> bool,
) -> Vec<SeriesKey> {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let sets = lock().take_script_sets();
    let now = Utc::now();
    let mut stale = Vec::new();
    for (key, bytes) in sets {
        let set = match serde_json::from_slice::<Set>(&bytes) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(tenant = %key.0, machine = %key.1, script = %key.2, error = %e, "removing a script_metrics set the state file holds that does not parse");
                stale.push(key);
                continue;
            }
        };
        // Only the tenants served here: another shard's (or a removed tenant's) sets would
        // show their series twice across shards, one copy frozen. Nor the sets of a rule the
        // configuration no longer has.
        if served(&key.0, &key.2) {
            metrics.script_metrics.restore(key, set);
        } else if set.is_past_ttl(now) {
            stale.push(key);
        }
    }
    if !stale.is_empty()
        && let Err(e) = lock().remove_script_sets(&stale)
    {
        tracing::error!(error = %e, "cannot remove expired script_metrics sets");
    }
    stale
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A set the state file holds that does not parse leaves the file at the first start that
    /// reads it, instead of a warning at every start; a good set is served.
    #[test]
    fn a_set_that_does_not_parse_leaves_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = |m: &str| ("t".to_string(), m.to_string(), "s.ps1".to_string());
        let good = Set {
            produced: Utc::now(),
            index: 0,
            ttl: std::time::Duration::from_secs(3600),
            families: Vec::new(),
        };
        {
            let mut s = State::open(Some(&path)).unwrap();
            for (m, bytes) in [
                ("bad", b"{not a set".to_vec()),
                ("good", serde_json::to_vec(&good).unwrap()),
            ] {
                let done = ResultKey {
                    tenant: "t".into(),
                    action_id: m.into(),
                    index: 0,
                };
                s.commit_result_with_set(done, None, Some((key(m), bytes)))
                    .unwrap();
            }
        }
        let state = Mutex::new(State::open(Some(&path)).unwrap());
        let metrics = Metrics::new();
        let removed = restore_script_sets(&state, &metrics, |_, _| true);
        assert_eq!(removed, vec![key("bad")]);
        assert!(metrics.script_metrics.get(&key("good")).is_some());
        drop(state);
        let mut again = State::open(Some(&path)).unwrap();
        let held: Vec<SeriesKey> = again.take_script_sets().into_keys().collect();
        assert_eq!(held, vec![key("good")], "the bad set is gone from the file");
    }
}
