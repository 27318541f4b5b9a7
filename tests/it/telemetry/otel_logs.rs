//! OpenTelemetry log records: with OTLP configured, the per-transcript event (and every info
//! event of the exporter) also goes out as a log record carrying the trace and span it
//! happened in, so a log backend links it to the same trace. Spans do not depend on
//! `--log.level`: a quiet log level keeps traces and exemplars. See: #12

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Binary, DEMO_ARGS, otlp_grpc_env};
use fake_opentelemetry_collector::{ExportedLog, ExportedSpan, FakeCollectorServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_events_are_log_records_in_their_trace_even_at_warn() {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    // Log lines at warn, except the one the test harness reads the address from.
    let child = Binary::spawn(
        &[
            &DEMO_ARGS[..],
            &["--log.level", "warn,mde_liveresponse_exporter::app=info"],
        ]
        .concat(),
        &otlp_grpc_env(&collector.endpoint()),
    );
    let mut spans: Vec<ExportedSpan> = Vec::new();
    let mut logs: Vec<ExportedLog> = Vec::new();
    let is_transcript = |l: &ExportedLog| {
        l.body
            .as_deref()
            .is_some_and(|b| b.contains("transcript retrieved"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let linked = loop {
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(200))
                .await,
        );
        logs.extend(collector.exported_logs(1, Duration::from_millis(200)).await);
        let by_id: BTreeMap<&str, &ExportedSpan> =
            spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
        // A transcript record whose span is an exported `result` span of the same trace.
        let found = logs.iter().find(|l| {
            is_transcript(l)
                && by_id
                    .get(l.span_id.as_str())
                    .is_some_and(|s| s.name == "result" && s.trace_id == l.trace_id)
        });
        if let Some(l) = found {
            break l.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no transcript log record linked to an exported span: {} spans, records {:?}",
            spans.len(),
            logs.iter()
                .map(|l| (&l.body, &l.trace_id))
                .collect::<Vec<_>>()
        );
    };
    assert_eq!(linked.severity_text, "INFO");
    assert!(
        linked
            .attributes
            .get("event")
            .is_some_and(|v| v.contains("transcript")),
        "{linked:?}"
    );
    for key in ["action_id", "exit_code", "script", "machine"] {
        assert!(linked.attributes.contains_key(key), "{key} in {linked:?}");
    }
    assert!(linked.trace_id.len() == 32 && linked.trace_id != "0".repeat(32));
    // Only the exporter's own events go out: none from the HTTP or OTLP crates.
    for l in &logs {
        assert!(
            !l.attributes
                .values()
                .any(|v| v.contains("sim-client-secret")),
            "{l:?}"
        );
    }
    drop(child);
}

#[test]
fn no_log_records_when_otel_logs_exporter_is_none() {
    // The standard opt-out: spans still go out (nothing listens here), log records do not.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Binary::demo(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ]);
    // Let it poll once (and install its SIGTERM handler, just after it says it listens).
    let metrics = format!("http://{}/metrics", child.addr);
    for _ in 0..300 {
        let body = reqwest::blocking::get(&metrics)
            .and_then(|r| r.text())
            .unwrap_or_default();
        if body.contains("mde_exporter_poll_success{tenant=\"demo\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(child.terminate(), Some(0));
    let logs = child.logs();
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == "exporting spans over OTLP")
        .expect("the OTLP line");
    assert_eq!(line["log_records"], false, "{line}");
}
