//! What can go wrong setting up logs and traces: a level or filter that does not parse, an
//! OTLP protocol or sample ratio out of range, an exporter that cannot be built, a subscriber
//! already installed.
//!
//! Owns the error type of `telemetry` and its messages (the text `--log.level`, `RUST_LOG`
//! and the `otel` settings are refused with). Does not own the checks themselves (`telemetry`).

/// Why logs or traces could not be set up. The causes are in the messages (as the text errors
/// before them were), not chained as `source`: `{:#}` would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty log level: use one of {levels}")]
    EmptyLevel { levels: String },
    #[error(
        "unknown log level {word:?}: use one of {levels} (or a filter such as info,mde_liveresponse_exporter=debug)"
    )]
    UnknownLevel { word: String, levels: String },
    /// A `--log.level`/`RUST_LOG` value that `EnvFilter` refuses.
    #[error("log filter {value:?}: {error}")]
    LevelFilter {
        value: String,
        error: tracing_subscriber::filter::ParseError,
    },
    /// Which setting (`RUST_LOG`, `--log.level`) a level error is about.
    #[error("{setting}: {error}")]
    Setting {
        setting: &'static str,
        error: Box<Error>,
    },
    /// A filter built from a checked level that still does not parse.
    #[error("{filter:?}: {error}")]
    Filter {
        filter: String,
        error: tracing_subscriber::filter::ParseError,
    },
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported (use grpc, http/protobuf or http/json)"
    )]
    Protocol(String),
    #[error("otel.sample_ratio {0} must be between 0 and 1")]
    SampleRatio(f64),
    #[error("OTLP exporter for {endpoint}: {error}")]
    SpanExporter {
        endpoint: String,
        error: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("OTLP log exporter for {endpoint}: {error}")]
    LogExporter {
        endpoint: String,
        error: opentelemetry_otlp::ExporterBuildError,
    },
    /// The log records' own filter (a constant) did not parse.
    #[error("{0}")]
    RecordFilter(tracing_subscriber::filter::ParseError),
    /// The global subscriber could not be installed (one already is).
    #[error("{0}")]
    Install(tracing_subscriber::util::TryInitError),
}
