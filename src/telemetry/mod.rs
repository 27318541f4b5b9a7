//! Logs and traces: flat JSON (default) or logfmt lines on stderr, the way Prometheus writes
//! its own (`ts`, `level`, `msg`, then the fields, each key once), and OpenTelemetry spans and
//! log records over OTLP (gRPC, HTTP/protobuf or HTTP/JSON, gzip on request) when an endpoint
//! is configured.
//!
//! Owns the subscriber, the level words, the choice of line format (the line itself is written
//! by the `flat-log` crate, which the simulator shares), the OTLP pipelines, the ids that tie
//! logs and metric exemplars to the trace, flushing at shutdown, and the errors of setting
//! them up ([`Error`], in `error`). Does not own what is
//! logged (see `events`) nor which spans exist (they are declared where the work happens).

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format (`--log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Logfmt,
}

impl From<LogFormat> for flat_log::Format {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Json => flat_log::Format::Json,
            LogFormat::Logfmt => flat_log::Format::Logfmt,
        }
    }
}

/// The crates whose events are the exporter's own (known by their message, no `target`): the
/// exporter and the simulator it runs in `--demo` and `simulate`.
const OWN_TARGETS: &[&str] = &["mde_liveresponse_exporter", "mde_sim"];

mod error;
pub use error::Error;

use crate::config::{Compression, OtelConfig, Protocol};
use crate::metrics::{OTLP_EXPORT_FAILURES, TraceLabel};

impl OtelConfig {
    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    /// The endpoint in force, if tracing is on.
    pub fn effective_endpoint(&self) -> Option<String> {
        if Self::env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        self.endpoint
            .clone()
            .or_else(|| Self::env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| Self::env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    }

    pub fn effective_protocol(&self) -> Result<Protocol, Error> {
        if let Some(p) = self.protocol {
            return Ok(p);
        }
        let env = Self::env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| Self::env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        match env.as_deref() {
            // The OTLP specification's default.
            None | Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
            Some("http/json") => Ok(Protocol::HttpJson),
            Some("grpc") => Ok(Protocol::Grpc),
            Some(other) => Err(Error::Protocol(other.to_string())),
        }
    }
}

/// The longest the traces and logs may take to flush at shutdown, in all. See: #32 item 9
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Wait for `flush` at most `bound`; past it, say so on stderr (the log pipeline is what is
/// being flushed) and go on without it.
async fn within<T>(bound: Duration, flush: tokio::task::JoinHandle<T>) -> bool {
    match tokio::time::timeout(bound, flush).await {
        Ok(_) => true,
        Err(_) => {
            eprintln!(
                "mde-liveresponse-exporter: the OTLP traces and logs did not flush within {bound:?} at shutdown; what was not sent is dropped"
            );
            false
        }
    }
}

/// What `init` set up; keep it until shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Whether events also go out as OpenTelemetry log records.
    pub fn logs_enabled(&self) -> bool {
        self.logs.is_some()
    }

    /// Flush and stop the OTLP pipelines, within [`SHUTDOWN_FLUSH_TIMEOUT`] in all. The
    /// exporters block, so this runs off the runtime; past the bound what was not sent is
    /// dropped and the shutdown goes on (an endpoint that accepts and never answers held a
    /// SIGTERM for 22 s before, #32 item 9). The blocking flush may go on a moment on its
    /// thread; the runtime's own shutdown is bounded too (`app::run::RUNTIME_SHUTDOWN`).
    pub async fn shutdown(self) {
        let (provider, logs) = (self.provider, self.logs);
        if provider.is_none() && logs.is_none() {
            return;
        }
        let each = SHUTDOWN_FLUSH_TIMEOUT / 2;
        let flush = tokio::task::spawn_blocking(move || {
            // Logs first: a record may name a span that is flushed just after.
            if let Some(logs) = logs {
                let _ = logs.force_flush();
                let _ = logs.shutdown_with_timeout(each);
            }
            if let Some(provider) = provider {
                let _ = provider.force_flush();
                let _ = provider.shutdown_with_timeout(each);
            }
        });
        within(SHUTDOWN_FLUSH_TIMEOUT, flush).await;
    }
}

/// The OTLP pipelines `init` installs: spans, and log records (on with spans unless
/// `OTEL_LOGS_EXPORTER=none`).
#[derive(Default)]
pub struct Pipelines {
    pub traces: Option<SdkTracerProvider>,
    pub logs: Option<SdkLoggerProvider>,
}

/// Build both OTLP pipelines from one configuration (same endpoint and protocol), or none
/// when no endpoint is configured. Call inside the Tokio runtime: the gRPC client needs it.
pub fn pipelines(cfg: &OtelConfig) -> Result<Pipelines, Error> {
    let traces = tracer_provider(cfg)?;
    let logs_off =
        OtelConfig::env("OTEL_LOGS_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let logs = if traces.is_some() && !logs_off {
        logger_provider(cfg)?
    } else {
        None
    };
    Ok(Pipelines { traces, logs })
}

/// Counts failed exports instead of letting each one become a log line.
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.0.export(batch).await;
        if result.is_err() {
            OTLP_EXPORT_FAILURES.inc();
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The resource both pipelines (and the OTLP metrics push, `otlp_metrics`) describe
/// themselves with.
pub(crate) fn resource(cfg: &OtelConfig) -> opentelemetry_sdk::Resource {
    let name = cfg
        .service_name
        .clone()
        .or_else(|| OtelConfig::env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "mde-liveresponse-exporter".into());
    opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .with_attributes([opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        )])
        .build()
}

/// The HTTP/protobuf URL for a signal (`traces`, `logs`, `metrics`): an explicit signal path is used as
/// given, another signal's path is swapped, and the base form gets the signal's path.
pub(crate) fn signal_url(endpoint: &str, signal: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    for other in ["traces", "logs", "metrics"] {
        if let Some(root) = base.strip_suffix(&format!("/v1/{other}")) {
            return format!("{root}/v1/{signal}");
        }
    }
    format!("{base}/v1/{signal}")
}

/// The crate's HTTP encoding of one of our HTTP protocols. Compression: `otel.compression:
/// gzip` is passed on; otherwise the crate reads `OTEL_EXPORTER_OTLP_{TRACES,LOGS}_COMPRESSION`
/// and `OTEL_EXPORTER_OTLP_COMPRESSION` itself. Retries (429, 502, 503, 504, gRPC
/// `UNAVAILABLE`, with backoff and `Retry-After`) are the crate's own recommended policy.
fn http_protocol(p: Protocol) -> opentelemetry_otlp::Protocol {
    match p {
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        Protocol::HttpProtobuf | Protocol::Grpc => opentelemetry_otlp::Protocol::HttpBinary,
    }
}

/// `b` with gzip compression when `gzip` (`otel.compression`), as it is otherwise (the
/// exporters' default: none). One for each transport's builder trait.
fn tonic_gzip<B: WithTonicConfig>(b: B, gzip: bool) -> B {
    if gzip {
        b.with_compression(opentelemetry_otlp::Compression::Gzip)
    } else {
        b
    }
}

/// See [`tonic_gzip`].
fn http_gzip<B: WithHttpConfig>(b: B, gzip: bool) -> B {
    if gzip {
        b.with_compression(opentelemetry_otlp::Compression::Gzip)
    } else {
        b
    }
}

/// Build the log record pipeline to the same endpoint and protocol as the spans.
fn logger_provider(cfg: &OtelConfig) -> Result<Option<SdkLoggerProvider>, Error> {
    let Some(endpoint) = cfg
        .endpoint
        .clone()
        .or_else(|| OtelConfig::env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
        .or_else(|| cfg.effective_endpoint())
    else {
        return Ok(None);
    };
    let gzip = cfg.compression == Some(Compression::Gzip);
    let exporter = match cfg.effective_protocol()? {
        Protocol::Grpc => tonic_gzip(
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5)),
            gzip,
        )
        .build(),
        http => http_gzip(
            opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(http_protocol(http))
                .with_endpoint(signal_url(&endpoint, "logs"))
                .with_timeout(Duration::from_secs(5))
                .with_headers(Default::default()),
            gzip,
        )
        .build(),
    }
    .map_err(|error| Error::LogExporter {
        endpoint: endpoint.clone(),
        error,
    })?;
    Ok(Some(
        SdkLoggerProvider::builder()
            .with_batch_exporter(CountingLogExporter(exporter))
            .with_resource(resource(cfg))
            .build(),
    ))
}

/// Counts failed log exports, as [`CountingExporter`] does for spans.
#[derive(Debug)]
struct CountingLogExporter<E>(E);

impl<E: LogExporter> LogExporter for CountingLogExporter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.0.export(batch).await;
        if result.is_err() {
            OTLP_EXPORT_FAILURES.inc();
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Build the tracer provider, or `None` when no endpoint is configured. Call inside the
/// Tokio runtime: the gRPC client needs it.
pub fn tracer_provider(cfg: &OtelConfig) -> Result<Option<SdkTracerProvider>, Error> {
    let Some(endpoint) = cfg.effective_endpoint() else {
        return Ok(None);
    };
    let protocol = cfg.effective_protocol()?;
    let gzip = cfg.compression == Some(Compression::Gzip);
    let exporter = match protocol {
        Protocol::Grpc => tonic_gzip(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5)),
            gzip,
        )
        .build(),
        http => http_gzip(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(http_protocol(http))
                .with_endpoint(signal_url(&endpoint, "traces"))
                .with_timeout(Duration::from_secs(5))
                .with_headers(Default::default()),
            gzip,
        )
        .build(),
    }
    .map_err(|error| Error::SpanExporter {
        endpoint: endpoint.clone(),
        error,
    })?;
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(CountingExporter(exporter))
        .with_resource(resource(cfg));
    if let Some(ratio) = cfg.sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::SampleRatio(ratio));
        }
        builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
        )));
    }
    Ok(Some(builder.build()))
}

/// The level words `--log.level` accepts, least verbose first.
pub const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Check a `--log.level` value: a level word, or a `RUST_LOG`-style filter whose bare words
/// are level words too (a target needs `target=level`). An unknown word would otherwise be
/// taken for a target name and silence every line. Used by clap as the flag's value parser.
pub fn parse_level(value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::EmptyLevel {
            levels: LEVELS.join(", "),
        });
    }
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bare = !part.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part)) {
            return Err(Error::UnknownLevel {
                word: part.to_string(),
                levels: LEVELS.join(", "),
            });
        }
    }
    EnvFilter::try_new(value).map_err(|error| Error::LevelFilter {
        value: value.to_string(),
        error,
    })?;
    Ok(value.to_string())
}

/// Crates whose own logs are noise, or feed back into the OTLP pipeline that reports them.
/// The OpenTelemetry SDK reports export problems through `tracing`; they are counted in
/// mde_exporter_otlp_export_failures_total instead of repeated on every batch.
const QUIET: [&str; 6] = [
    "opentelemetry=off",
    "opentelemetry_sdk=off",
    "opentelemetry_otlp=off",
    "h2=warn",
    "tonic=warn",
    "hyper=warn",
];

fn filter(base: &str) -> Result<EnvFilter, Error> {
    let mut filter = EnvFilter::try_new(base).map_err(|error| Error::Filter {
        filter: base.to_string(),
        error,
    })?;
    for d in QUIET {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    Ok(filter)
}

/// The log lines' filter: `RUST_LOG` when set, else `--log.level`.
fn log_filter(level: &str) -> Result<EnvFilter, Error> {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            let v = parse_level(&v).map_err(|e| Error::Setting {
                setting: "RUST_LOG",
                error: Box::new(e),
            })?;
            filter(&v)
        }
        _ => {
            let level = parse_level(level).map_err(|e| Error::Setting {
                setting: "--log.level",
                error: Box::new(e),
            })?;
            filter(&level)
        }
    }
}

/// Install the global subscriber: log lines on stderr filtered by `level` (`RUST_LOG`, when
/// set, wins), and with a [`Pipelines`] the spans and log records over OTLP. Spans have a
/// filter of their own (info), so that a quieter `--log.level` never switches off traces and
/// exemplars; log records go out for every info (or worse) event of the exporter itself,
/// with the trace context of the span they happen in.
pub fn init(level: &str, format: LogFormat, pipelines: Pipelines) -> Result<Telemetry, Error> {
    let lines = tracing_subscriber::fmt::layer()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(flat_log::FlatFormat::new(format.into(), OWN_TARGETS))
        .with_writer(std::io::stderr)
        .with_filter(log_filter(level)?);
    let spans = match &pipelines.traces {
        Some(p) => Some(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("mde-liveresponse-exporter"))
                .with_filter(filter("info")?),
        ),
        None => None,
    };
    let records = match &pipelines.logs {
        Some(p) => Some(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p)
                // Only the exporter's own events: the HTTP and OTLP crates logging through
                // the pipeline that carries their logs would feed on themselves.
                .with_filter(
                    EnvFilter::try_new("off,mde_liveresponse_exporter=info")
                        .map_err(Error::RecordFilter)?,
                ),
        ),
        None => None,
    };
    tracing_subscriber::registry()
        .with(spans)
        .with(records)
        .with(lines)
        .try_init()
        .map_err(Error::Install)?;
    Ok(Telemetry {
        provider: pipelines.traces,
        logs: pipelines.logs,
    })
}

/// The OpenTelemetry ids of a span, when it is being traced.
pub fn span_ids(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Record `trace_id` and `span_id` on a span that declared them (`= tracing::field::Empty`),
/// so that every log line inside it carries them.
pub fn record_ids(span: &tracing::Span) {
    if let Some((trace_id, span_id)) = span_ids(span) {
        span.record("trace_id", trace_id.as_str());
        span.record("span_id", span_id.as_str());
    }
}

/// The exemplar for a metric changed inside the current span, if it is traced.
pub fn current_trace_label() -> Option<TraceLabel> {
    span_ids(&tracing::Span::current()).map(|(trace_id, _)| TraceLabel { trace_id })
}

/// Mark the current span failed, with a message (shown as the span status).
pub fn record_error(span: &tracing::Span, message: &str) {
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// See: #32 item 9. A flush blocked for good (an endpoint that accepts and never answers)
    /// is given up at the bound and the shutdown goes on; one that ends is waited for. (Real
    /// time: a blocking task in flight stops a paused clock from advancing.)
    #[tokio::test]
    async fn a_flush_that_never_ends_is_given_up_at_the_bound() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let blocked = tokio::task::spawn_blocking(move || rx.recv());
        assert!(!within(Duration::from_millis(50), blocked).await);
        drop(tx);
        let done = tokio::task::spawn_blocking(|| ());
        assert!(within(SHUTDOWN_FLUSH_TIMEOUT, done).await);
    }

    // See: #12
    #[test]
    fn log_records_go_to_the_logs_path_of_the_same_endpoint() {
        assert_eq!(signal_url("http://c:4318", "logs"), "http://c:4318/v1/logs");
        assert_eq!(
            signal_url("http://c:4318/", "traces"),
            "http://c:4318/v1/traces"
        );
        // A traces-specific endpoint gives its collector's logs path.
        assert_eq!(
            signal_url("http://c:4318/v1/traces", "logs"),
            "http://c:4318/v1/logs"
        );
        assert_eq!(
            signal_url("http://c:4318/v1/traces", "traces"),
            "http://c:4318/v1/traces"
        );
    }

    // See: #12
    #[test]
    fn level_words_and_filters() {
        for ok in [
            "info",
            "WARN",
            "off",
            "info,hyper=debug",
            "mde_liveresponse_exporter::collector",
        ] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_level("info,loud").unwrap_err().to_string(),
            "unknown log level \"loud\": use one of off, error, warn, info, debug, trace (or a filter such as info,mde_liveresponse_exporter=debug)"
        );
        assert_eq!(
            parse_level(" ").unwrap_err().to_string(),
            "empty log level: use one of off, error, warn, info, debug, trace"
        );
    }
}
