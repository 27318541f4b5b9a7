//! What the exporter emits besides metrics: the `otel:` section (traces) and the
//! `transcript_log:` section (how transcript text appears in logs).
//!
//! Owns both sections whole: their one struct each as serde reads it (unknown keys are
//! errors), their defaults and their checks (the scrubbers must be valid regular
//! expressions, compiled once at load). Does not own setting up the exporters (`telemetry`)
//! nor applying the redaction (`crate::record::events`, `excerpt`).

use serde::Deserialize;

use super::check::Invalid;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/JSON over HTTP (#32).
    #[serde(rename = "http/json")]
    HttpJson,
}

/// OTLP payload compression (`otel.compression`, `OTEL_EXPORTER_OTLP_COMPRESSION`); the
/// specification's default is none. See: #32
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    #[default]
    None,
}

/// Tracing settings: the `otel:` section of the config file; unset keys fall back to the
/// standard `OTEL_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    /// e.g. `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP).
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    /// gzip | none; unset: the `OTEL_EXPORTER_OTLP_*COMPRESSION` variables, else none.
    pub compression: Option<Compression>,
    pub service_name: Option<String>,
    /// Fraction of polls traced, 0.0..=1.0 (parent-based); default: `OTEL_TRACES_SAMPLER` or all.
    pub sample_ratio: Option<f64>,
    /// Link from the status page to a trace UI, with `{trace_id}` replaced, e.g.
    /// `http://jaeger:16686/trace/{trace_id}`.
    pub trace_url: Option<String>,
}

/// How `script_output` and `script_errors` appear in the transcript event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactMode {
    /// As the script wrote them (after the scrubbers).
    None,
    /// The first `max_bytes` bytes (after the scrubbers).
    #[default]
    Truncate,
    /// `sha256:<hex>` of the text: equal outputs can be matched, nothing is revealed.
    Hash,
    /// Left out.
    Drop,
}

/// The redaction policy for transcript text in logs, the `transcript_log:` section; the
/// scrubbers run first and replace every match with `[REDACTED]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redaction {
    /// `output`: none | truncate | hash | drop.
    #[serde(rename = "output")]
    pub mode: RedactMode,
    pub max_bytes: usize,
    /// Regular expressions whose matches become `[REDACTED]`, as written.
    pub scrub: Vec<String>,
    /// `scrub` compiled, by [`Redaction::validate`] at load.
    #[serde(skip)]
    pub scrubbers: Vec<regex::Regex>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            mode: RedactMode::Truncate,
            max_bytes: 256,
            scrub: Vec::new(),
            scrubbers: Vec::new(),
        }
    }
}

impl Redaction {
    /// Compile `scrub` into `scrubbers`; the error's key is the key under `transcript_log.`.
    pub(super) fn validate(&mut self) -> Result<(), Invalid> {
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
        self.scrubbers = scrubbers;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, parse};
    use super::{Compression, OtelConfig, Protocol, RedactMode};

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

    // See: #32
    #[test]
    fn otel_compression_and_json() {
        let c = parse(&format!(
            "otel:\n  protocol: http/json\n  compression: gzip\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.otel.protocol, Some(Protocol::HttpJson));
        assert_eq!(c.otel.compression, Some(Compression::Gzip));
        let c = parse(&format!("otel:\n  compression: none\n{GOOD}")).unwrap();
        assert_eq!(c.otel.compression, Some(Compression::None));
        assert_eq!(
            parse(&format!("otel:\n  compression: zstd\n{GOOD}"))
                .unwrap_err()
                .to_string(),
            "config file cfg.yml: otel.compression: unknown variant `zstd`, expected `gzip` or `none` at line 2 column 16"
        );
        assert_eq!(
            parse(&format!("otel:\n  protocol: http/xml\n{GOOD}"))
                .unwrap_err()
                .to_string(),
            "config file cfg.yml: otel.protocol: unknown variant `http/xml`, expected one of `grpc`, `http/protobuf`, `http/json` at line 2 column 13"
        );
    }
}
