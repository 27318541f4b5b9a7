//! OTLP metrics push: with `OTEL_METRICS_EXPORTER=otlp` the exporter sends the metric
//! contract over OTLP every `OTEL_METRIC_EXPORT_INTERVAL` as well as serving `/metrics`.
//!
//! How: a periodic task takes every family a scrape in OpenMetrics shows, as the structs of
//! prometheus-client's Prometheus protobuf encoder (`Metrics::encode_structs`: the same
//! families and values, no text written nor read back), turns each into an OTLP metric
//! (`build`) and sends `ExportMetricsServiceRequest`s built with opentelemetry-proto's types
//! (`send`: protobuf or JSON over HTTP POST with reqwest, or gRPC with tonic; gzip on request;
//! a transient failure sent again with backoff within the export's bound, `retry`). Why not the
//! OpenTelemetry SDK's `MeterProvider` (opentelemetry 0.33): every family would need an SDK
//! instrument beside its prometheus-client one, two writers per family that could drift; and
//! opentelemetry-otlp's `MetricExporter` takes only the SDK's `ResourceMetrics`, not a request
//! of our own. Encoding the registry costs a pass over it once per interval, off the runtime's
//! worker threads (`spawn_blocking`), and guarantees that a pushed value is one a scrape would
//! have shown at that moment. (Reading back the OpenMetrics text instead cost 2-3 times the
//! CPU and twice the memory: docs/benchmarks.md, "OTLP push: text read back or structs".)
//!
//! Owns the `OTEL_*` variables of the metrics signal (see [`PushConfig::resolve`]), the
//! resource of the pushed metrics, the export loop (one export per interval, none
//! overlapping, a last one at shutdown), and reporting failures: each export is counted in
//! `mde_exporter_otlp_metrics_exports_total{result}` and a failed one is logged once (so at
//! most once per interval) without header values; what can go wrong setting the push up
//! ([`Error`], in `error`). Does not own the families (`metrics`), the
//! `/metrics` endpoint (`server`, never blocked by a push: it encodes on its own thread), nor
//! the span and log pipelines (`telemetry`).

mod build;
mod error;
mod retry;
mod send;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Compression, OtelConfig, Protocol};
use crate::metrics::Metrics;

pub use error::Error;
pub use send::shown as shown_endpoint;

/// `OTEL_METRIC_EXPORT_INTERVAL`'s default (the specification's), in milliseconds.
const DEFAULT_INTERVAL_MS: u64 = 60_000;
/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default, per request, in milliseconds.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// `OTEL_METRIC_EXPORT_TIMEOUT`'s default, for one whole export, in milliseconds.
const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 30_000;
/// The longest the last export, at shutdown, may take whatever `OTEL_METRIC_EXPORT_TIMEOUT`
/// says: with a receiver that accepts and never answers, a SIGTERM must end the process well
/// within Kubernetes' grace period (30 s by default), and the traces and logs flush after it
/// (`crate::telemetry`). See: #32 item 9
pub const SHUTDOWN_EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where, how and how often metrics are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// HTTP: the full URL (`…/v1/metrics`); gRPC: the server's URL.
    pub endpoint: String,
    pub protocol: Protocol,
    /// gzip or none, for every protocol.
    pub compression: Compression,
    pub interval: Duration,
    /// Each request's.
    pub timeout: Duration,
    /// One whole export's (all its requests).
    pub export_timeout: Duration,
    /// Sent with every request; never logged.
    pub headers: Vec<(String, String)>,
    /// The resource's attributes; `service.instance.id` is added when missing (see
    /// [`with_instance_id`]).
    pub resource: Vec<KeyValue>,
}

impl PushConfig {
    /// The push the environment asks for, or `None` (the default: `/metrics` only).
    ///
    /// On with `OTEL_METRICS_EXPORTER` naming `otlp` (a comma-separated list; `prometheus`
    /// and `none` are accepted and push nothing), off with `OTEL_SDK_DISABLED=true`. The
    /// endpoint: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` as given, else the `otel.endpoint` key
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/metrics` (HTTP; the spans' rule), else the
    /// specification's default `http://localhost:4318/v1/metrics` (gRPC:
    /// `http://localhost:4317`). The metrics variable comes first so that metrics can go
    /// elsewhere than spans (a trace backend such as Jaeger takes no metrics). The protocol:
    /// `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, `otel.protocol`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else `http/protobuf` (`http/json` too). Compression, the same way:
    /// `OTEL_EXPORTER_OTLP_METRICS_COMPRESSION`, `otel.compression`,
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`, else none. Headers: `OTEL_EXPORTER_OTLP_HEADERS`, then
    /// `OTEL_EXPORTER_OTLP_METRICS_HEADERS` (its keys win), `k=v` pairs with percent-encoded
    /// values. Times in milliseconds: `OTEL_METRIC_EXPORT_INTERVAL` (60000),
    /// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` per request
    /// (10000), `OTEL_METRIC_EXPORT_TIMEOUT` per export (30000). The resource is the spans'
    /// (`service.name` from `otel.service_name`, `OTEL_SERVICE_NAME` or
    /// mde-liveresponse-exporter, `service.version`, `OTEL_RESOURCE_ATTRIBUTES`); the process
    /// environment is read for it, `env` for the rest (tests pass a map).
    pub fn resolve(
        otel: &OtelConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<PushConfig>, Error> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(exporters) = env("OTEL_METRICS_EXPORTER") else {
            return Ok(None);
        };
        let mut otlp = false;
        for word in exporters.split(',').map(str::trim) {
            match word {
                "otlp" => otlp = true,
                "prometheus" | "none" | "" => {}
                other => return Err(Error::Exporter(other.to_string())),
            }
        }
        if !otlp {
            return Ok(None);
        }
        let protocol = match env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") {
            Some(p) => parse_protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", &p)?,
            None => match (otel.protocol, env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                (Some(p), _) => p,
                (None, Some(p)) => parse_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &p)?,
                (None, None) => Protocol::HttpProtobuf,
            },
        };
        let endpoint = match env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some(e) => e.trim().to_string(),
            None => {
                let base = otel
                    .endpoint
                    .clone()
                    .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
                match (protocol, base) {
                    (Protocol::Grpc, Some(b)) => b.trim().to_string(),
                    (Protocol::Grpc, None) => "http://localhost:4317".into(),
                    (_, Some(b)) => crate::telemetry::signal_url(b.trim(), "metrics"),
                    (_, None) => "http://localhost:4318/v1/metrics".into(),
                }
            }
        };
        let compression = match env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION") {
            Some(c) => parse_compression("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", &c)?,
            None => match (otel.compression, env("OTEL_EXPORTER_OTLP_COMPRESSION")) {
                (Some(c), _) => c,
                (None, Some(c)) => parse_compression("OTEL_EXPORTER_OTLP_COMPRESSION", &c)?,
                (None, None) => Compression::None,
            },
        };
        let millis = |names: &[&'static str], default: u64| -> Result<Duration, Error> {
            for &name in names {
                if let Some(v) = env(name) {
                    return match v.trim().parse::<u64>() {
                        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                        _ => Err(Error::Millis {
                            variable: name,
                            value: v,
                        }),
                    };
                }
            }
            Ok(Duration::from_millis(default))
        };
        let mut all = headers(
            "OTEL_EXPORTER_OTLP_HEADERS",
            env("OTEL_EXPORTER_OTLP_HEADERS"),
        )?;
        for (k, v) in headers(
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            env("OTEL_EXPORTER_OTLP_METRICS_HEADERS"),
        )? {
            all.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
            all.push((k, v));
        }
        Ok(Some(PushConfig {
            endpoint,
            protocol,
            compression,
            interval: millis(&["OTEL_METRIC_EXPORT_INTERVAL"], DEFAULT_INTERVAL_MS)?,
            timeout: millis(
                &[
                    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                ],
                DEFAULT_TIMEOUT_MS,
            )?,
            export_timeout: millis(&["OTEL_METRIC_EXPORT_TIMEOUT"], DEFAULT_EXPORT_TIMEOUT_MS)?,
            headers: all,
            resource: resource_attributes(&crate::telemetry::resource(otel)),
        }))
    }

    /// The header names, for a log line (never their values).
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}

fn parse_compression(name: &'static str, value: &str) -> Result<Compression, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        _ => Err(Error::Compression {
            variable: name,
            value: value.trim().to_string(),
        }),
    }
}

fn parse_protocol(name: &'static str, value: &str) -> Result<Protocol, Error> {
    match value.trim() {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Ok(Protocol::HttpJson),
        "grpc" => Ok(Protocol::Grpc),
        other => Err(Error::Protocol {
            variable: name,
            value: other.to_string(),
        }),
    }
}

/// `k=v,k2=v2` with percent-encoded values. The error never quotes a value: headers carry
/// credentials.
fn headers(name: &'static str, value: Option<String>) -> Result<Vec<(String, String)>, Error> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = entry.split_once('=') else {
            return Err(Error::HeaderWithoutEquals {
                variable: name,
                entry: i + 1,
            });
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::HeaderEmptyKey {
                variable: name,
                entry: i + 1,
            });
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| Error::HeaderNotUtf8 {
                variable: name,
                key: k.to_string(),
            })?;
        // Checked here, not when the first request goes: `--config.check` and start-up
        // refuse a header no request could carry.
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(&v).is_err()
        {
            return Err(Error::HeaderUnsendable {
                variable: name,
                key: k.to_string(),
            });
        }
        out.push((k.to_string(), v.into_owned()));
    }
    Ok(out)
}

/// An SDK resource's attributes as OTLP key-values.
fn resource_attributes(resource: &opentelemetry_sdk::Resource) -> Vec<KeyValue> {
    use opentelemetry::{Array, Value};
    let string = |s: String| any_value::Value::StringValue(s);
    let array = |values: Vec<any_value::Value>| {
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        })
    };
    let mut out: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Bool(b) => any_value::Value::BoolValue(*b),
                Value::I64(i) => any_value::Value::IntValue(*i),
                Value::F64(f) => any_value::Value::DoubleValue(*f),
                Value::String(s) => string(s.to_string()),
                Value::Array(Array::Bool(a)) => {
                    array(a.iter().map(|b| any_value::Value::BoolValue(*b)).collect())
                }
                Value::Array(Array::I64(a)) => {
                    array(a.iter().map(|i| any_value::Value::IntValue(*i)).collect())
                }
                Value::Array(Array::F64(a)) => array(
                    a.iter()
                        .map(|f| any_value::Value::DoubleValue(*f))
                        .collect(),
                ),
                Value::Array(Array::String(a)) => {
                    array(a.iter().map(|s| string(s.to_string())).collect())
                }
                other => string(other.to_string()),
            };
            KeyValue {
                key: k.to_string(),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// `attributes` with `service.instance.id` set to `default` unless they hold one
/// (`OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...`). Prometheus's OTLP receiver makes it
/// the `instance` label (and `service.name` the `job`).
pub fn with_instance_id(mut attributes: Vec<KeyValue>, default: &str) -> Vec<KeyValue> {
    if !attributes.iter().any(|kv| kv.key == "service.instance.id") {
        attributes.push(build::attribute("service.instance.id", default));
    }
    attributes
}

/// This host's name: `HOSTNAME` (a pod's name), else the kernel's, else `localhost`.
pub fn hostname() -> String {
    crate::config::hostname()
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The OTLP metrics of one push, with the times every point carries (Unix nanoseconds):
/// `now`, and `start` for counters and histograms. Public for the render benchmark
/// (`BENCH_OTLP=1`).
#[doc(hidden)]
pub fn built(
    metrics: &Metrics,
    now: u64,
    start: u64,
) -> Result<Vec<opentelemetry_proto::tonic::metrics::v1::Metric>, String> {
    build::metrics(metrics.encode_structs(), build::Times { now, start })
}

/// What one export did.
struct Pusher {
    metrics: Arc<Metrics>,
    transport: send::Transport,
    resource: Resource,
    scope: InstrumentationScope,
    /// When the counters started (the pusher is started with the exporter).
    start: u64,
    export_timeout: Duration,
    /// The push interval: retries of an export end before the next one is due.
    interval: Duration,
    endpoint: String,
    /// Whether the latest export failed (to log the recovery once).
    failing: bool,
}

impl Pusher {
    /// Encode, build and send every request, each sent again while its failure is transient
    /// and `deadline` allows (`retry`); the data points the receiver rejected.
    async fn export(&self, deadline: tokio::time::Instant) -> Result<i64, String> {
        let metrics = self.metrics.clone();
        let (now, start) = (unix_nanos(), self.start);
        let (resource, scope) = (self.resource.clone(), self.scope.clone());
        let requests = tokio::task::spawn_blocking(move || {
            let built = built(&metrics, now, start)?;
            Ok::<_, String>(build::requests(
                built,
                &resource,
                &scope,
                build::MAX_POINTS,
                build::MAX_BYTES,
            ))
        })
        .await
        .map_err(|e| format!("encoding the metrics: {e}"))??;
        let mut rejected = 0;
        for request in requests {
            let payload = self.transport.encode(request)?;
            let mut backoff = retry::backoff();
            let mut retries = 0u32;
            loop {
                match self.transport.send(&payload).await {
                    Ok(r) => {
                        rejected += r;
                        break;
                    }
                    Err(failure) => {
                        let now = tokio::time::Instant::now();
                        let Some(wait) =
                            retry::next_wait(failure.retry, &mut backoff, now, deadline)
                        else {
                            return Err(match retries {
                                0 => failure.message,
                                n => format!("{} (after {n} retries)", failure.message),
                            });
                        };
                        retries += 1;
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Ok(rejected)
    }

    /// One export, counted, and logged when it fails (once: one export per interval), when
    /// the receiver rejects points, and when exports work again after failing.
    async fn export_and_report(&mut self, timeout: Duration) {
        // Retries stop at the export's bound, and never run into the next interval: the next
        // export sends the current values anyway.
        let deadline = tokio::time::Instant::now() + timeout.min(self.interval);
        let outcome = match tokio::time::timeout(timeout, self.export(deadline)).await {
            Ok(r) => r,
            Err(_) if timeout < self.export_timeout => Err(format!(
                "the last export, at shutdown, to {} took longer than {timeout:?}",
                self.endpoint
            )),
            Err(_) => Err(format!(
                "export to {} took longer than {:?} (OTEL_METRIC_EXPORT_TIMEOUT)",
                self.endpoint, self.export_timeout
            )),
        };
        self.metrics
            .exporter
            .record_otlp_metrics_export(outcome.is_ok());
        match outcome {
            Ok(rejected) => {
                if rejected > 0 {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        rejected,
                        "the OTLP metrics receiver rejected data points"
                    );
                } else if self.failing {
                    tracing::info!(endpoint = %self.endpoint, "OTLP metrics export works again");
                }
                self.failing = false;
            }
            Err(error) => {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    %error,
                    "OTLP metrics export failed; the next interval sends the current values"
                );
                self.failing = true;
            }
        }
    }
}

/// Start pushing `metrics` as `cfg` says, with `service.instance.id` defaulting to
/// `instance`; the first export one interval from now. When `stop` turns true (or its sender
/// is dropped) one last export is made and the task ends. Errors: a transport that cannot be
/// built (a header or endpoint that is not valid).
pub fn spawn(
    metrics: Arc<Metrics>,
    cfg: PushConfig,
    instance: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, Error> {
    let transport = send::Transport::new(
        cfg.protocol,
        cfg.compression,
        &cfg.endpoint,
        &cfg.headers,
        cfg.timeout,
    )?;
    metrics.exporter.record_otlp_metrics_export_start();
    let mut pusher = Pusher {
        metrics,
        transport,
        resource: Resource {
            attributes: with_instance_id(cfg.resource, instance),
            ..Default::default()
        },
        scope: InstrumentationScope {
            name: "mde-liveresponse-exporter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
        start: unix_nanos(),
        export_timeout: cfg.export_timeout,
        interval: cfg.interval,
        endpoint: shown_endpoint(&cfg.endpoint),
        failing: false,
    };
    let interval = cfg.interval;
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick = tokio::select! {
                _ = ticks.tick() => true,
                // (The guard `wait_for` returns is not held across the export.)
                _ = stop.wait_for(|s| *s) => false,
            };
            if !tick {
                break;
            }
            // A stop ends an export in progress: a receiver that never answers must not hold
            // a shutdown for OTEL_METRIC_EXPORT_TIMEOUT (#32 item 9).
            let timeout = pusher.export_timeout;
            let stopped = tokio::select! {
                _ = pusher.export_and_report(timeout) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                break;
            }
        }
        // Shutdown: the values since the last export, within a bound of its own.
        let timeout = pusher.export_timeout.min(SHUTDOWN_EXPORT_TIMEOUT);
        pusher.export_and_report(timeout).await;
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
