//! OTLP metrics push (#23 item 3): the metric contract pushed over OTLP as well as served on
//! /metrics. A receiver on loopback decodes the protobuf (HTTP) or is the fake collector
//! (gRPC); pushed names translated back as Prometheus's OTLP receiver does
//! (UnderscoreEscapingWithSuffixes: a monotonic sum gets `_total`) equal the scraped ones,
//! with the same values; failures are counted and logged without header values; shutdown
//! pushes once more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::config::{Compression, Protocol};
use mde_liveresponse_exporter::otlp_metrics::PushConfig;
use mde_sim::SimConfig;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use prost::Message;
use tokio::sync::mpsc;

/// One request as the receiver got it.
struct Received {
    headers: axum::http::HeaderMap,
    request: ExportMetricsServiceRequest,
}

/// An OTLP/HTTP metrics receiver on loopback.
struct Receiver {
    endpoint: String,
    /// What it answers: 200 unless changed.
    status: Arc<AtomicU16>,
    /// Requests it refused.
    refused: Arc<AtomicUsize>,
    rx: mpsc::UnboundedReceiver<Received>,
}

async fn receiver() -> Receiver {
    use axum::body::Bytes;
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(AtomicU16::new(200));
    let refused = Arc::new(AtomicUsize::new(0));
    let (answer, count) = (status.clone(), refused.clone());
    let app = axum::Router::new().route(
        "/v1/metrics",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let (answer, count) = (answer.clone(), count.clone());
            async move {
                let code = answer.load(Ordering::Relaxed);
                if code != 200 {
                    count.fetch_add(1, Ordering::Relaxed);
                    return (
                        axum::http::StatusCode::from_u16(code).unwrap(),
                        b"receiver says no".to_vec(),
                    );
                }
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportMetricsServiceRequest::decode(body).unwrap();
                let _ = tx.send(Received { headers, request });
                (
                    axum::http::StatusCode::OK,
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        endpoint: format!("http://{addr}/v1/metrics"),
        status,
        refused,
        rx,
    }
}

fn string(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The pushed points as Prometheus's OTLP translation names them, in the shape of
/// [`Samples`]: a monotonic cumulative sum `<name>_total`, a gauge `<name>`, a histogram
/// `<name>` with its count (as `parse_samples` keeps histograms) and `<name>_sum`,
/// `<name>_count`. Panics on a name that would
/// not come back: a counter sent with `_total` or a unit (the translation would add suffixes).
fn translated(requests: &[ExportMetricsServiceRequest]) -> Samples {
    let mut out = Samples::new();
    for r in requests {
        for rm in &r.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    assert_eq!(m.unit, "", "{}: a unit would add a suffix", m.name);
                    let labels = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                        attrs
                            .iter()
                            .map(|kv| (kv.key.clone(), string(&kv.value)))
                            .collect::<BTreeMap<_, _>>()
                    };
                    let number = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| {
                        match p.value {
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            None => f64::NAN,
                        }
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            assert!(s.is_monotonic, "{}", m.name);
                            assert_eq!(
                                s.aggregation_temporality,
                                AggregationTemporality::Cumulative as i32,
                                "{}",
                                m.name
                            );
                            assert!(!m.name.ends_with("_total"), "{}", m.name);
                            for p in &s.data_points {
                                assert!(p.start_time_unix_nano > 0);
                                assert!(p.start_time_unix_nano <= p.time_unix_nano);
                                out.insert(
                                    (format!("{}_total", m.name), labels(&p.attributes)),
                                    number(p),
                                );
                            }
                        }
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                out.insert((m.name.clone(), labels(&p.attributes)), number(p));
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            assert_eq!(
                                h.aggregation_temporality,
                                AggregationTemporality::Cumulative as i32
                            );
                            for p in &h.data_points {
                                assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                                assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
                                let l = labels(&p.attributes);
                                out.insert((m.name.clone(), l.clone()), p.count as f64);
                                out.insert(
                                    (format!("{}_sum", m.name), l.clone()),
                                    p.sum.unwrap_or(f64::NAN),
                                );
                                out.insert((format!("{}_count", m.name), l), p.count as f64);
                            }
                        }
                        other => panic!("{}: unexpected {other:?}", m.name),
                    }
                }
            }
        }
    }
    out
}

fn push_to(endpoint: &str, interval: Duration) -> PushConfig {
    PushConfig {
        endpoint: endpoint.to_string(),
        protocol: Protocol::HttpProtobuf,
        compression: Compression::None,
        interval,
        timeout: Duration::from_secs(5),
        export_timeout: Duration::from_secs(10),
        headers: vec![("authorization".into(), "Bearer s3cret-push-token".into())],
        resource: vec![],
    }
}

/// Every request of the first export that starts after now: what arrives after the queue
/// is drained and a full interval has passed.
async fn next_export(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    interval: Duration,
) -> Vec<Received> {
    while rx.try_recv().is_ok() {}
    // An export that was being sent while we drained may still land: skip it.
    tokio::time::sleep(interval / 2).await;
    while rx.try_recv().is_ok() {}
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an export within 30 s")
        .expect("the receiver runs");
    let mut all = vec![first];
    // The rest of the same export comes right after (one request per 2,000 points).
    while let Ok(Some(more)) = tokio::time::timeout(interval / 4, rx.recv()).await {
        all.push(more);
    }
    all
}

/// The whole contract, pushed: once the scenario is settled, the pushed series translated
/// back are the scraped ones by name and label, and the result families have the values
/// /metrics shows. The push carries the configured headers and the resource's instance id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_names_and_values_are_the_scraped_ones() {
    let (sim, sim_addr) = start_sim(SimConfig::default()).await;
    let mut handle = start_exporter_on(&sim, sim_addr).await;
    let Receiver {
        endpoint, mut rx, ..
    } = receiver().await;
    let interval = Duration::from_millis(300);
    handle.push_metrics(push_to(&endpoint, interval)).unwrap();

    let scraped = settled(&sim, handle.addr).await;
    let export = next_export(&mut rx, interval).await;
    assert_eq!(
        export[0].headers["authorization"], "Bearer s3cret-push-token",
        "the configured headers go with the push"
    );
    let resource = export[0].request.resource_metrics[0]
        .resource
        .clone()
        .unwrap();
    let instance = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.instance.id")
        .map(|kv| string(&kv.value))
        .unwrap_or_default();
    assert!(
        instance.ends_with(&format!(":{}", handle.addr.port())),
        "{instance}"
    );
    let requests: Vec<ExportMetricsServiceRequest> =
        export.into_iter().map(|r| r.request).collect();
    let pushed = translated(&requests);

    // Every scraped name comes back from the push, and nothing else.
    let names = |s: &Samples| {
        s.keys()
            .map(|(n, _)| n.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // Except the not-run gauge's old name, which only the text format keeps: in OpenMetrics,
    // and so in the push, it would clash with the counter's family name; its series are
    // pushed as `mde_liveresponse_script_not_run_current` (#24 item 10).
    let mut want = names(&scraped);
    assert!(want.remove("mde_liveresponse_script_not_run"));
    assert!(want.contains("mde_liveresponse_script_not_run_current"));
    let got = names(&pushed);
    assert_eq!(
        want.difference(&got).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "scraped, not pushed"
    );
    assert_eq!(
        got.difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "pushed, not scraped"
    );
    // The results, settled, are equal series by series (the API and process families move on
    // with every poll and are compared by name only).
    let settled_only = |s: &Samples| -> Samples {
        s.iter()
            .filter(|((n, _), _)| {
                n.starts_with("mde_liveresponse_script_") && n != "mde_liveresponse_script_not_run"
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let (want, got) = (settled_only(&scraped), settled_only(&pushed));
    assert!(sum(&want, "mde_liveresponse_script_runs_total", &[]) > 0.0);
    assert_eq!(got, want);
    handle.shutdown().await.unwrap();
}

/// A receiver that is down or refuses costs a counted failure per export and never holds up
/// /metrics; once it accepts again the push succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_and_the_push_recovers() {
    let (sim, sim_addr) = start_sim(SimConfig::default()).await;
    let mut handle = start_exporter_on(&sim, sim_addr).await;
    let Receiver {
        endpoint,
        status,
        mut rx,
        ..
    } = receiver().await;
    status.store(503, Ordering::Relaxed);
    let interval = Duration::from_millis(200);
    handle.push_metrics(push_to(&endpoint, interval)).unwrap();
    let a = handle.addr;
    let exports = |m: &Samples, result: &str| {
        sum(
            m,
            "mde_exporter_otlp_metrics_exports_total",
            &[("result", result)],
        )
    };
    eventually("two failed exports", || async move {
        exports(&scrape(a).await, "failure") >= 2.0
    })
    .await;
    assert_eq!(exports(&scrape(a).await, "success"), 0.0);
    status.store(200, Ordering::Relaxed);
    eventually("a successful export", || async move {
        exports(&scrape(a).await, "success") >= 1.0
    })
    .await;
    assert!(rx.recv().await.is_some());
    handle.shutdown().await.unwrap();
}

/// The real binary, configured by the standard variables only: with a 10-minute interval no
/// export is due, and SIGTERM pushes once. A receiver that refuses is logged once per export,
/// with the endpoint and status but never a header's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_pushes_at_shutdown_and_logs_failures_without_secrets() {
    let Receiver {
        endpoint,
        status,
        refused,
        mut rx,
    } = receiver().await;
    let mut child = Binary::demo(&[
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20s3cret-push-token",
        ),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=otlp-test"),
    ]);
    // Results are counted before the shutdown push.
    let a = child.addr;
    eventually("a transcript counted", || async move {
        sum(&scrape(a).await, "mde_liveresponse_script_runs_total", &[]) > 0.0
    })
    .await;
    assert!(rx.try_recv().is_err(), "no export before the interval");
    assert_eq!(
        tokio::task::spawn_blocking(move || {
            let code = child.terminate();
            (code, child.logs())
        })
        .await
        .map(|(code, logs)| {
            let pushing: Vec<&String> = logs
                .iter()
                .filter(|l| l.contains("pushing metrics over OTLP"))
                .collect();
            assert_eq!(pushing.len(), 1, "{logs:?}");
            assert!(pushing[0].contains("authorization"), "{}", pushing[0]);
            assert!(
                logs.iter().all(|l| !l.contains("s3cret-push-token")),
                "{logs:?}"
            );
            code
        })
        .unwrap(),
        Some(0)
    );
    let last = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.headers["authorization"], "Bearer s3cret-push-token",
        "the header value is percent-decoded"
    );
    let resource = last.request.resource_metrics[0].resource.clone().unwrap();
    let attr = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| string(&kv.value))
    };
    assert_eq!(attr("service.instance.id").as_deref(), Some("otlp-test"));
    assert_eq!(
        attr("service.name").as_deref(),
        Some("mde-liveresponse-exporter")
    );
    let pushed = translated(&[last.request]);
    assert!(sum(&pushed, "mde_liveresponse_script_runs_total", &[]) > 0.0);

    // Refused: one log line per export, naming the status, no secret.
    status.store(500, Ordering::Relaxed);
    let mut child = Binary::demo(&[
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "x-api-key=s3cret-push-token",
        ),
    ]);
    let a = child.addr;
    eventually("three failed exports", || async move {
        sum(
            &scrape(a).await,
            "mde_exporter_otlp_metrics_exports_total",
            &[("result", "failure")],
        ) >= 3.0
    })
    .await;
    let logs = tokio::task::spawn_blocking(move || {
        child.terminate();
        child.logs()
    })
    .await
    .unwrap();
    let failed: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("OTLP metrics export failed"))
        .collect();
    assert!(failed[0].contains("HTTP 500"), "{}", failed[0]);
    assert!(failed[0].contains("receiver says no"), "{}", failed[0]);
    // One line per failed export (each stopped at its first refused request).
    assert_eq!(failed.len(), refused.load(Ordering::Relaxed));
    assert!(logs.iter().all(|l| !l.contains("s3cret-push-token")));
}

/// gRPC, to the fake collector: the script counters arrive as monotonic sums named without
/// `_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_pushes_over_grpc() {
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start()
        .await
        .unwrap();
    let endpoint = collector.endpoint();
    let child = Binary::demo(&[
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let exported = collector
            .exported_metrics(1, Duration::from_millis(500))
            .await;
        let runs = exported
            .iter()
            .flat_map(|e| &e.metrics)
            .find(|m| m.name == "mde_liveresponse_script_runs");
        if let Some(m) = runs {
            let shown = format!("{:?}", m.data);
            assert!(shown.contains("is_monotonic: true"), "{shown}");
            assert!(
                exported
                    .iter()
                    .flat_map(|e| &e.metrics)
                    .all(|m| !m.name.ends_with("_total")),
                "counters go without _total"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mde_liveresponse_script_runs over gRPC"
        );
    }
    drop(child);
    collector.abort();
}

/// See: #32 item 9. Every OTLP endpoint (traces, logs, metrics) accepts connections and never
/// answers. Before, SIGTERM took 22 s (each pipeline's flush and the last metrics push waited
/// for their own timeouts, one after the other); the harness gives a process 10 s. Now the
/// last push and the flush each have a bound of a few seconds, and the runtime's shutdown one
/// of its own: the process ends in time, with code 0, and says what it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_endpoint_that_never_answers_does_not_hold_the_shutdown() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    // Accept every connection and keep it open, never answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming() {
            held.push(conn);
        }
    });
    let mut child = Binary::demo(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ]);
    let a = child.addr;
    eventually("a transcript counted", || async move {
        sum(&scrape(a).await, "mde_liveresponse_script_runs_total", &[]) > 0.0
    })
    .await;
    let (code, logs) = tokio::task::spawn_blocking(move || {
        let code = child.terminate();
        (code, child.logs())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("the last export, at shutdown")),
        "{logs:?}"
    );
}
