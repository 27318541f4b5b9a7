//! What can go wrong setting up the OTLP metrics push: an `OTEL_*` variable of the metrics
//! signal that does not parse, a header that cannot be sent, an endpoint or client that
//! cannot be built.
//!
//! Owns the error type of `otlp_metrics` and its messages (the text `--config.check` and
//! start-up refuse the variables with); a header's value is never in one. Does not own the
//! checks themselves (`otlp_metrics`, `send`), nor a failed export (logged by the loop).

/// Why the push could not be set up. The causes are in the messages (as the text errors before
/// them were), not chained as `source`: `{:#}` would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "OTEL_METRICS_EXPORTER={0:?} is not supported (use otlp to push over OTLP as well as serve /metrics, or none)"
    )]
    Exporter(String),
    #[error("{variable}={value:?} is not supported (use grpc, http/protobuf or http/json)")]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?} is not supported (use gzip or none)")]
    Compression {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?} is not a positive number of milliseconds")]
    Millis {
        variable: &'static str,
        value: String,
    },
    /// `entry` counts from 1.
    #[error(
        "{variable}: entry {entry} has no '=' (key=value pairs, comma-separated; values not shown)"
    )]
    HeaderWithoutEquals {
        variable: &'static str,
        entry: usize,
    },
    #[error("{variable}: entry {entry} has an empty key")]
    HeaderEmptyKey {
        variable: &'static str,
        entry: usize,
    },
    #[error("{variable}: the value of {key:?} is not UTF-8 once decoded")]
    HeaderNotUtf8 { variable: &'static str, key: String },
    #[error("{variable}: header {key:?} cannot be sent (its value is not shown)")]
    HeaderUnsendable { variable: &'static str, key: String },
    /// A header the transport refuses (its value is not shown).
    #[error("OTLP metrics header {0:?} is not valid")]
    InvalidHeader(String),
    #[error("OTLP metrics HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// `endpoint` as `send::shown` redacts it.
    #[error("OTLP metrics endpoint {endpoint}: {error}")]
    HttpEndpoint {
        endpoint: String,
        error: url::ParseError,
    },
    /// `endpoint` as `send::shown` redacts it.
    #[error("OTLP metrics endpoint {endpoint}: {error}")]
    GrpcEndpoint {
        endpoint: String,
        error: tonic::transport::Error,
    },
}
