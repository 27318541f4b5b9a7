//! The exporter's own signals: log lines (JSON, logfmt), OpenTelemetry spans and log
//! records with their semantic conventions, and the OTLP metrics push.

mod logs;
mod otel_logs;
mod otlp;
mod otlp_metrics;
mod otlp_push_options;
mod semconv;
mod token_span;
