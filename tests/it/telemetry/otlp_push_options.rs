//! The OTLP metrics push's transport options (#32, last round's notes): a request a receiver
//! refuses with 503 is sent again with backoff, within the export's bound, and the export
//! succeeds without a failure counted; `gzip` compresses the body (`Content-Encoding: gzip`);
//! `http/json` sends OTLP/JSON. A receiver on loopback counts what it refused and decodes
//! what it took, as a collector would, without our encoder's help.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::config::{Compression, Protocol};
use mde_liveresponse_exporter::otlp_metrics::PushConfig;
use mde_sim::SimConfig;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tokio::sync::mpsc;

/// What the receiver took: its headers and the request, decoded.
struct Taken {
    content_type: String,
    content_encoding: Option<String>,
    request: ExportMetricsServiceRequest,
}

/// An OTLP/HTTP receiver on loopback that answers 503 to the first `refuse` requests, then
/// takes every one: gunzips a gzip body, reads JSON or protobuf by the content type.
async fn receiver(refuse: usize) -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<Taken>) {
    use axum::body::Bytes;
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    let app = axum::Router::new().route(
        "/v1/metrics",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let (tx, count) = (tx.clone(), count.clone());
            async move {
                if count.load(Ordering::Relaxed) < refuse {
                    count.fetch_add(1, Ordering::Relaxed);
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                }
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let content_type = header("content-type").unwrap_or_default();
                let content_encoding = header("content-encoding");
                let mut raw = body.to_vec();
                if content_encoding.as_deref() == Some("gzip") {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    raw = out;
                }
                let request = if content_type == "application/json" {
                    serde_json::from_slice::<ExportMetricsServiceRequest>(&raw).unwrap()
                } else {
                    ExportMetricsServiceRequest::decode(&raw[..]).unwrap()
                };
                let answer = if content_type == "application/json" {
                    serde_json::to_vec(&ExportMetricsServiceResponse::default()).unwrap()
                } else {
                    ExportMetricsServiceResponse::default().encode_to_vec()
                };
                let _ = tx.send(Taken {
                    content_type,
                    content_encoding,
                    request,
                });
                (axum::http::StatusCode::OK, answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/metrics"), refused, rx)
}

fn push(endpoint: &str, protocol: Protocol, compression: Compression) -> PushConfig {
    PushConfig {
        endpoint: endpoint.to_string(),
        protocol,
        compression,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        export_timeout: Duration::from_secs(10),
        headers: vec![],
        resource: vec![],
    }
}

/// The metric names of a request.
fn names(r: &ExportMetricsServiceRequest) -> Vec<String> {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect()
}

// See: #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_is_sent_again_with_backoff_and_counts_no_failure() {
    let (sim, sim_addr) = start_sim(SimConfig::default()).await;
    let mut handle = start_exporter_on(&sim, sim_addr).await;
    let (endpoint, refused, mut rx) = receiver(3).await;
    handle
        .push_metrics(push(&endpoint, Protocol::HttpProtobuf, Compression::None))
        .unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a push within 30 s")
        .unwrap();
    // The first export's first request was refused three times, then taken: its retries
    // (100, 200, 400 ms and jitter) fit in the interval.
    assert_eq!(refused.load(Ordering::Relaxed), 3);
    assert!(names(&taken.request).contains(&"mde_exporter_build_info".to_string()));
    assert_eq!(taken.content_encoding, None);
    let a = handle.addr;
    eventually("the export counted as a success", || async move {
        sum(
            &scrape(a).await,
            "mde_exporter_otlp_metrics_exports_total",
            &[("result", "success")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        sum(
            &scrape(a).await,
            "mde_exporter_otlp_metrics_exports_total",
            &[("result", "failure")],
        ),
        0.0,
        "a retried export that got through is no failure"
    );
    handle.shutdown().await.unwrap();
}

// See: #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_json_reach_the_receiver_as_a_collector_reads_them() {
    let (sim, sim_addr) = start_sim(SimConfig::default()).await;
    let mut handle = start_exporter_on(&sim, sim_addr).await;
    for (protocol, compression, content_type, encoding) in [
        (
            Protocol::HttpProtobuf,
            Compression::Gzip,
            "application/x-protobuf",
            Some("gzip"),
        ),
        (
            Protocol::HttpJson,
            Compression::None,
            "application/json",
            None,
        ),
        (
            Protocol::HttpJson,
            Compression::Gzip,
            "application/json",
            Some("gzip"),
        ),
    ] {
        let (endpoint, _, mut rx) = receiver(0).await;
        handle
            .push_metrics(push(&endpoint, protocol, compression))
            .unwrap();
        let taken = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a push within 30 s")
            .unwrap();
        assert_eq!(taken.content_type, content_type, "{protocol:?}");
        assert_eq!(taken.content_encoding.as_deref(), encoding, "{protocol:?}");
        let names = names(&taken.request);
        assert!(
            names.contains(&"mde_exporter_build_info".to_string()),
            "{protocol:?} {compression:?}: {names:?}"
        );
    }
    handle.shutdown().await.unwrap();
}

/// Spans (opentelemetry-otlp's pipeline) take the same options from the standard variables:
/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` and `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` give
/// gzip-compressed OTLP/JSON on `/v1/traces`. See: #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_as_gzip_json_when_asked() {
    use axum::body::Bytes;
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<String>, Vec<String>)>();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (kind, encoding) = (
                    header("content-type").unwrap_or_default(),
                    header("content-encoding"),
                );
                let mut raw = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut raw)
                    .unwrap_or_default();
                let names = serde_json::from_slice::<ExportTraceServiceRequest>(&raw)
                    .map(|r| {
                        r.resource_spans
                            .into_iter()
                            .flat_map(|rs| rs.scope_spans)
                            .flat_map(|ss| ss.spans)
                            .map(|s| s.name)
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = tx.send((kind, encoding, names));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let child = Binary::demo(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_LOGS_EXPORTER", "none"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (kind, encoding, names) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("spans within 60 s")
            .unwrap();
        assert_eq!(kind, "application/json");
        assert_eq!(encoding.as_deref(), Some("gzip"));
        if names.iter().any(|n| n == "poll") {
            break;
        }
    }
    drop(child);
}
