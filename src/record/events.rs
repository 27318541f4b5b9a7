//! Notable events: one struct each, whose `emit()` both logs and counts, so that logs and
//! metrics cannot drift apart.
//!
//! Every event here at `info` or above also goes out as an OpenTelemetry log record with the
//! trace context of the span it is emitted in, when OTLP is configured: `telemetry` sends
//! all of this crate's events (keep the target under `mde_liveresponse_exporter`), so a new
//! event needs nothing more.
//!
//! Owns the structured log fields of the per-transcript event and of fetch failures. Does not
//! own the per-machine gauges (the collector decides which run is the latest).

use sha2::{Digest, Sha256};

use crate::config::{RedactMode, Redaction};
use crate::metrics::Metrics;

impl Redaction {
    /// The text as it may be logged, or `None` when it is dropped.
    pub fn apply(&self, text: &str) -> Option<String> {
        if self.mode == RedactMode::Drop {
            return None;
        }
        if self.mode == RedactMode::Hash {
            return Some(format!("sha256:{:x}", Sha256::digest(text.as_bytes())));
        }
        // Without scrubbers only the part that is kept is copied: a transcript near
        // `max_transcript_bytes` is not copied whole to log 256 bytes of it.
        if self.mode == RedactMode::Truncate && self.scrubbers.is_empty() {
            if text.len() <= self.max_bytes {
                return Some(text.to_string());
            }
            let mut cut = self.max_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return Some(format!("{}…", &text[..cut]));
        }
        let mut out = text.to_string();
        for re in &self.scrubbers {
            out = re.replace_all(&out, "[REDACTED]").into_owned();
        }
        if self.mode == RedactMode::Truncate && out.len() > self.max_bytes {
            let mut cut = self.max_bytes;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
        }
        Some(out)
    }
}

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
    /// `script_output` after the redaction policy (`None`: dropped).
    pub script_output: Option<String>,
    /// `script_errors` after the redaction policy (`None`: dropped).
    pub script_errors: Option<String>,
}

impl TranscriptRetrieved<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        // The transcript text can hold anything a script printed: it is logged only as the
        // redaction policy allows (see `Redaction`).
        tracing::info!(
            target: "mde_liveresponse_exporter::transcript",
            event = "transcript",
            tenant = self.tenant,
            action_id = self.action_id,
            index = self.index,
            machine = self.machine,
            script = self.script,
            exit_code = self.exit_code,
            // The OpenTelemetry convention's name beside the older `exit_code`, for one
            // release (docs/operations.md#semantic-conventions).
            process.exit.code = self.exit_code,
            errors_present = self.errors_present,
            output_bytes = self.output_bytes,
            errors_bytes = self.errors_bytes,
            end_time = self.end_time.map(|t| t.to_rfc3339()),
            script_output = self.script_output.as_deref(),
            script_errors = self.script_errors.as_deref(),
            "transcript retrieved"
        );
        // Each counter carries the trace that retrieved the transcript as its exemplar.
        metrics.results.record_transcript(
            self.tenant,
            self.script,
            self.exit_code,
            self.errors_present,
            crate::telemetry::current_trace_label,
        );
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
        metrics.results.record_fetch_failure(
            self.tenant,
            self.reason,
            crate::telemetry::current_trace_label(),
        );
    }
}

/// A RunScript command of a final action produced no transcript (#9).
#[derive(Debug)]
pub struct ScriptNotRun<'a> {
    pub tenant: &'a str,
    pub action_id: &'a str,
    pub index: u32,
    pub machine: &'a str,
    pub script: &'a str,
    /// `command_failed`, `action_timeout`, `action_cancelled` or `action_failed`.
    pub reason: &'a str,
    pub action_status: &'a str,
    pub command_status: &'a str,
    pub last_update: Option<chrono::DateTime<chrono::Utc>>,
    /// The command's `errors` text, joined, after the redaction policy (`None`: dropped or
    /// empty). It can name paths and accounts, like a transcript.
    pub errors: Option<String>,
}

impl ScriptNotRun<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            target: "mde_liveresponse_exporter::transcript",
            event = "script_not_run",
            tenant = self.tenant,
            action_id = self.action_id,
            index = self.index,
            machine = self.machine,
            script = self.script,
            reason = self.reason,
            action_status = self.action_status,
            command_status = self.command_status,
            last_update = self.last_update.map(|t| t.to_rfc3339()),
            errors = self.errors.as_deref(),
            "script did not run"
        );
        metrics.results.record_script_not_run(
            self.tenant,
            self.script,
            self.reason,
            crate::telemetry::current_trace_label(),
        );
    }
}

/// The text of a command's `errors` array: strings as they are, anything else as JSON, one
/// per line.
pub fn errors_text(errors: &[serde_json::Value]) -> String {
    errors
        .iter()
        .map(|e| match e {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn policy(mode: RedactMode, max_bytes: usize, scrub: &[&str]) -> Redaction {
        Redaction {
            mode,
            max_bytes,
            scrub: scrub.iter().map(|r| r.to_string()).collect(),
            scrubbers: scrub
                .iter()
                .map(|r| regex::Regex::new(r).unwrap())
                .collect(),
        }
    }

    #[test]
    fn each_mode() {
        let text = "user=alice password=hunter2 café";
        let scrub = [r"password=\S+"];
        assert_eq!(
            policy(RedactMode::None, 5, &scrub).apply(text).unwrap(),
            "user=alice [REDACTED] café"
        );
        assert_eq!(
            policy(RedactMode::Truncate, 10, &scrub)
                .apply(text)
                .unwrap(),
            "user=alice…"
        );
        // Never cuts inside a character.
        assert_eq!(
            policy(RedactMode::Truncate, 29, &[]).apply(text).unwrap(),
            "user=alice password=hunter2 c…"
        );
        assert_eq!(
            policy(RedactMode::Hash, 10, &[]).apply("abc").unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(policy(RedactMode::Drop, 10, &[]).apply(text), None);
        // At the limit, nothing is cut and no marker is added.
        assert_eq!(
            policy(RedactMode::Truncate, text.len(), &[])
                .apply(text)
                .unwrap(),
            text
        );
        assert_eq!(
            policy(RedactMode::Truncate, 0, &[]).apply(text).unwrap(),
            "…"
        );
    }

    // See: #9
    #[test]
    fn command_errors_are_text_under_the_policy() {
        let errors = [
            serde_json::json!("Script 'x.ps1' was not found in the library password=hunter2"),
            serde_json::json!({"code": 5}),
        ];
        let text = errors_text(&errors);
        assert_eq!(
            text,
            "Script 'x.ps1' was not found in the library password=hunter2\n{\"code\":5}"
        );
        assert_eq!(
            policy(RedactMode::None, 0, &[r"password=\S+"])
                .apply(&text)
                .unwrap(),
            "Script 'x.ps1' was not found in the library [REDACTED]\n{\"code\":5}"
        );
        assert_eq!(errors_text(&[]), "");
    }
}
