//! OpenTelemetry spans over OTLP, gRPC and HTTP/protobuf: the real binary in demo mode exports
//! to a real OTLP receiver on loopback; the spans arrive with their parent/child structure and
//! their attributes, and no signature or secret is in them. Exemplars on /metrics carry the
//! trace ids that were exported. See: #4

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Binary, span_attr};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use prost::Message;
use tokio::sync::mpsc;

/// Start the demo exporting spans to `endpoint`.
fn start_demo(endpoint: &str, protocol: &str) -> Binary {
    Binary::demo(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_SERVICE_NAME", "mde-lr-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
}

/// Wait until the spans include a parse span, then check the tree and the attributes.
fn check_spans(spans: &[ExportedSpan]) {
    let by_id: BTreeMap<&str, &ExportedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_name =
        |s: &ExportedSpan| by_id.get(s.parent_span_id.as_str()).map(|p| p.name.clone());
    let poll = spans
        .iter()
        .find(|s| s.name == "poll")
        .expect("a poll span");
    assert_eq!(poll.parent_span_id, "", "poll is a root span");
    assert_eq!(span_attr(poll, "tenant").as_deref(), Some("demo"));

    let list = spans
        .iter()
        .find(|s| s.name == "GET list_machine_actions")
        .expect("a list call span");
    assert_eq!(parent_name(list).as_deref(), Some("poll"));
    assert_eq!(list.kind, "SPAN_KIND_CLIENT");
    assert_eq!(
        span_attr(list, "http.request.method").unwrap_or_default(),
        "GET"
    );
    assert_eq!(
        span_attr(list, "http.response.status_code").unwrap_or_default(),
        "200"
    );
    assert_eq!(
        span_attr(list, "server.address").unwrap_or_default(),
        "127.0.0.1"
    );
    assert!(
        span_attr(list, "url.full")
            .unwrap_or_default()
            .contains("/api/machineactions")
    );

    let link = spans
        .iter()
        .find(|s| s.name == "GET get_result_download_link")
        .expect("a result link span");
    assert_eq!(parent_name(link).as_deref(), Some("result"));
    assert!(link.attributes.contains_key("mde.action_id"));
    assert!(link.attributes.contains_key("mde.command_index"));
    let result = by_id[link.parent_span_id.as_str()];
    assert_eq!(parent_name(result).as_deref(), Some("poll"));
    assert_eq!(
        by_id[result.parent_span_id.as_str()].trace_id,
        result.trace_id,
        "one trace per poll"
    );
    assert_eq!(link.trace_id, result.trace_id);

    let download = spans
        .iter()
        .find(|s| s.name == "GET download")
        .expect("a download span");
    assert_eq!(parent_name(download).as_deref(), Some("result"));
    let url = &span_attr(download, "url.full").unwrap_or_default();
    assert!(url.contains("sig=REDACTED"), "{url}");
    assert!(url.contains("se="), "{url}");

    let parse = spans
        .iter()
        .find(|s| s.name == "parse" && s.attributes.contains_key("exit_code"))
        .expect("a parse span");
    assert_eq!(parent_name(parse).as_deref(), Some("result"));
    assert!(parse.attributes.contains_key("errors_present"));
    // A malformed transcript sets an error status on its parse span.
    let failed = spans.iter().find(|s| {
        s.name == "parse"
            && s.status
                .as_ref()
                .is_some_and(|st| st.code == "STATUS_CODE_ERROR")
    });
    assert!(
        failed.is_some(),
        "the demo has malformed transcripts; their parse spans fail"
    );

    let token = spans
        .iter()
        .find(|s| s.name == "token")
        .expect("a token span");
    assert_eq!(parent_name(token).as_deref(), Some("poll"));
    for s in spans {
        for (k, v) in &s.attributes {
            assert!(!v.contains("sim-client-secret"), "secret in {}.{k}", s.name);
            assert!(!k.contains("access_token"), "token in {}.{k}", s.name);
        }
    }
}

async fn collect_until_parse(rx: &mut mpsc::Receiver<ExportedSpan>) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have_all = [
            "poll",
            "token",
            "GET list_machine_actions",
            "GET get_result_download_link",
            "GET download",
        ]
        .iter()
        .all(|n| spans.iter().any(|s: &ExportedSpan| s.name == *n))
            && spans
                .iter()
                .any(|s| s.name == "parse" && s.attributes.contains_key("exit_code"))
            && spans.iter().any(|s| {
                s.name == "parse"
                    && s.status
                        .as_ref()
                        .is_some_and(|st| st.code == "STATUS_CODE_ERROR")
            });
        if have_all {
            // Parents end after children: give the batch with them a moment.
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Some(s)) = tokio::time::timeout_at(until, rx.recv()).await {
                spans.push(s);
            }
            return spans;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => spans.push(s),
            _ => panic!(
                "spans did not arrive: got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            ),
        }
    }
}

async fn exemplar_trace_ids(addr: std::net::SocketAddr) -> Vec<String> {
    let client = reqwest::Client::new();
    let text = client
        .get(format!("http://{addr}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("mde_liveresponse_script_runs_total{"))
        .filter_map(|l| l.split("trace_id=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_grpc_with_exemplars() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let child = start_demo(&collector.endpoint(), "grpc");
    let addr = child.addr;
    let pump = tokio::spawn(async move {
        loop {
            let batch = collector
                .exported_spans(1, Duration::from_millis(200))
                .await;
            for s in batch {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    let spans = collect_until_parse(&mut rx).await;
    check_spans(&spans);
    // The counters carry the trace that retrieved the transcript.
    let ids = exemplar_trace_ids(addr).await;
    assert!(!ids.is_empty(), "exemplars with trace ids");
    // Exemplars hold the latest trace per series, whose spans may still be in the batch
    // queue: keep receiving until one matches.
    let mut spans = spans;
    let mut matched = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exported: std::collections::BTreeSet<String> =
            spans.iter().map(|s| s.trace_id.clone()).collect();
        matched |= exemplar_trace_ids(addr)
            .await
            .iter()
            .any(|id| exported.contains(id));
        if matched || tokio::time::Instant::now() >= deadline {
            break;
        }
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            spans.push(s);
        }
    }
    assert!(
        matched,
        "an exemplar's trace id is one of the exported traces"
    );
    drop(child);
    pump.abort();
}

/// A minimal OTLP/HTTP receiver: POST /v1/traces with a protobuf body.
async fn http_receiver() -> (String, mpsc::Receiver<ExportedSpan>) {
    use axum::body::Bytes;
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let (tx, rx) = mpsc::channel(100_000);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                        .and_then(|a| a.value.clone())
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default();
                    assert!(service.contains("mde-lr-test"), "{service}");
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            let _ = tx.send(ExportedSpan::from(span)).await;
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_otlp_http_protobuf() {
    let (endpoint, mut rx) = http_receiver().await;
    let child = start_demo(&endpoint, "http/protobuf");
    let spans = collect_until_parse(&mut rx).await;
    check_spans(&spans);
    drop(child);
}

#[test]
fn a_missing_collector_is_counted_not_logged() {
    // Nothing listens on this port: every export fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = start_demo(&format!("http://127.0.0.1:{port}"), "http/protobuf");
    let addr = child.addr;
    let mut failures = 0.0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(resp) = reqwest::blocking::get(format!("http://{addr}/metrics")) {
            let body = resp.text().unwrap_or_default();
            failures = body
                .lines()
                .find(|l| l.starts_with("mde_exporter_otlp_export_failures_total "))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if failures >= 2.0 {
                break;
            }
        }
    }
    assert!(failures >= 2.0, "export failures are counted");
    assert_eq!(child.terminate(), Some(0));
    let lines = child.logs();
    let noisy: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("opentelemetry") || l.contains("OTLP") && l.contains("ERROR"))
        .collect();
    assert!(
        noisy.len() <= 1,
        "collector errors must not flood the logs: {noisy:?}"
    );
}
