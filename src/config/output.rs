//! What the exporter emits besides metrics: the `otel:` section (traces) and the
//! `transcript_log:` section (how transcript text appears in logs).
//!
//! Owns both sections' checks (the scrubbers must be valid regular expressions). Does not own
//! their types and defaults (`types`), setting up the exporters (`telemetry`) nor applying the
//! redaction (`events`).

use super::check::Invalid;
use super::raw::RawTranscriptLog;
use super::types::Redaction;

impl RawTranscriptLog {
    /// The policy; the error's key is the key under `transcript_log.`.
    pub(super) fn validate(&self) -> Result<Redaction, Invalid> {
        let mut scrubbers = Vec::with_capacity(self.scrub.len());
        for (i, pattern) in self.scrub.iter().enumerate() {
            let re = regex::Regex::new(pattern).map_err(|e| {
                Invalid::new(
                    format!("scrub[{i}]"),
                    format!("invalid regular expression: {e}"),
                )
            })?;
            scrubbers.push(re);
        }
        Ok(Redaction {
            mode: self.output,
            max_bytes: self.max_bytes,
            scrubbers,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, parse};
    use super::super::types::{OtelConfig, Protocol, RedactMode};

    #[test]
    fn transcript_log_policy() {
        let c = parse(&format!(
            "transcript_log:\n  output: hash\n  scrub: ['password=\\S+']\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.transcript_log.mode, RedactMode::Hash);
        assert_eq!(c.transcript_log.scrubbers.len(), 1);
        let err = parse(&format!("transcript_log:\n  scrub: ['(unclosed']\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "config file cfg.yml: transcript_log.scrub[0]: invalid regular expression: "
            ),
            "{err}"
        );
        assert_eq!(
            parse(GOOD).unwrap().transcript_log.mode,
            RedactMode::Truncate
        );
    }

    #[test]
    fn otel_section() {
        let c = parse(&format!(
            "otel:\n  endpoint: http://collector:4318\n  protocol: http/protobuf\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.otel.protocol, Some(Protocol::HttpProtobuf));
        assert_eq!(parse(GOOD).unwrap().otel, OtelConfig::default());
    }
}
