//! Logs and traces: JSON (default) or logfmt lines on stderr, and OpenTelemetry spans over
//! OTLP (gRPC or HTTP/protobuf) when an endpoint is configured.
//!
//! Owns the subscriber, the OTLP pipeline, the ids that tie logs and metric exemplars to the
//! trace, and flushing at shutdown. Does not own what is logged (see `events`) nor which
//! spans exist (they are declared where the work happens).

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{OtelConfig, Protocol};
use crate::metrics::{OTLP_EXPORT_FAILURES, TraceLabel};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Logfmt,
}

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

    pub fn effective_protocol(&self) -> Result<Protocol, String> {
        if let Some(p) = self.protocol {
            return Ok(p);
        }
        let env = Self::env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| Self::env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        match env.as_deref() {
            // The OTLP specification's default.
            None | Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
            Some("grpc") => Ok(Protocol::Grpc),
            Some(other) => Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (use grpc or http/protobuf)"
            )),
        }
    }
}

/// What `init` set up; keep it until shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flush and stop the span pipeline. The exporters block, so this runs off the runtime.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = provider.force_flush();
                let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
            })
            .await;
        }
    }
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

/// Build the tracer provider, or `None` when no endpoint is configured. Call inside the
/// Tokio runtime: the gRPC client needs it.
pub fn tracer_provider(cfg: &OtelConfig) -> Result<Option<SdkTracerProvider>, String> {
    let Some(endpoint) = cfg.effective_endpoint() else {
        return Ok(None);
    };
    let protocol = cfg.effective_protocol()?;
    let exporter = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build(),
        Protocol::HttpProtobuf => {
            // An explicit endpoint is used as given; the base form gets the traces path.
            let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(Duration::from_secs(5))
                .with_headers(Default::default())
                .build()
        }
    }
    .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let name = cfg
        .service_name
        .clone()
        .or_else(|| OtelConfig::env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "mde-liveresponse-exporter".into());
    resource = resource
        .with_service_name(name)
        .with_attributes([opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        )]);
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(CountingExporter(exporter))
        .with_resource(resource.build());
    if let Some(ratio) = cfg.sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("otel.sample_ratio {ratio} must be between 0 and 1"));
        }
        builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
        )));
    }
    Ok(Some(builder.build()))
}

/// Install the global subscriber. `RUST_LOG`, when set, wins over `level`. With a tracer
/// provider, spans are exported too.
pub fn init(
    level: &str,
    format: LogFormat,
    provider: Option<SdkTracerProvider>,
) -> Result<Telemetry, String> {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG={v:?}: {e}"))?
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("--log.level={level:?}: {e}"))?,
    };
    // The OpenTelemetry SDK reports export problems through `tracing`; they are counted in
    // mde_exporter_otlp_export_failures_total instead of repeated on every batch.
    for quiet in [
        "opentelemetry=off",
        "opentelemetry_sdk=off",
        "opentelemetry_otlp=off",
        "h2=warn",
        "tonic=warn",
        "hyper=warn",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Logfmt => tracing_logfmt::builder()
            .layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mde-liveresponse-exporter"))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Telemetry { provider })
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
