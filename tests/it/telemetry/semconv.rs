//! OpenTelemetry semantic conventions on real spans and log records (#23 item 5): the binary
//! runs against the simulator, which answers one result-link call with a 429 and lets the
//! first listings time out, and exports to a real OTLP receiver. API spans carry
//! `http.request.method`, `http.response.status_code`, `server.address`, a `url.template`
//! without ids or signatures, and, when they fail, `error.type` (`429`, `timeout`); transcript
//! spans and log records carry `process.exit.code` beside the older `exit_code`.

use std::time::Duration;

use crate::common::{Binary, config_yaml, otlp_attribute, otlp_grpc_env, span_attr, start_sim};
use fake_opentelemetry_collector::{ExportedLog, ExportedSpan, FakeCollectorServer};
use mde_sim::SimConfig;

fn is_transcript(l: &ExportedLog) -> bool {
    l.body
        .as_deref()
        .is_some_and(|b| b.contains("transcript retrieved"))
}

/// Whether the spans and records hold every case the test checks.
fn complete(spans: &[ExportedSpan], logs: &[ExportedLog]) -> bool {
    let throttled = spans.iter().any(|s| {
        s.name == "GET get_result_download_link"
            && span_attr(s, "error.type").as_deref() == Some("429")
    });
    let timed_out = spans.iter().any(|s| {
        s.name == "GET list_machine_actions"
            && span_attr(s, "error.type").as_deref() == Some("timeout")
    });
    let failing_parse = spans
        .iter()
        .any(|s| s.name == "parse" && span_attr(s, "process.exit.code").is_some_and(|c| c != "0"));
    let failing_record = logs.iter().any(|l| {
        is_transcript(l)
            && otlp_attribute(&l.attributes, "process.exit.code").is_some_and(|c| c != "0")
    });
    let download = spans.iter().any(|s| s.name == "GET download");
    throttled && timed_out && failing_parse && failing_record && download
}

// See: #23
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_transcript_telemetry_follow_the_semantic_conventions() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    // The first result-link call is throttled; listings time out until the test lifts the
    // delay (the exporter gives up on a call after `request_timeout`).
    sim.faults()
        .throttle_next("get_result_download_link", 1, Some(1));
    sim.faults()
        .delay("list_machine_actions", Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let state = dir.path().join("state.redb");
    let secret = sim.credentials().2.to_string();
    std::fs::write(
        &config,
        config_yaml(&sim, addr, &secret, "", "request_timeout: 500ms\n"),
    )
    .unwrap();

    let mut collector = FakeCollectorServer::start().await.unwrap();
    let _child = Binary::on_state(&config, &state, &[], &otlp_grpc_env(&collector.endpoint()));

    let mut spans: Vec<ExportedSpan> = Vec::new();
    let mut logs: Vec<ExportedLog> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut delayed = true;
    while !complete(&spans, &logs) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every case arrived: spans {:?}",
            spans
                .iter()
                .map(|s| (&s.name, span_attr(s, "error.type")))
                .collect::<Vec<_>>()
        );
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(200))
                .await,
        );
        logs.extend(collector.exported_logs(1, Duration::from_millis(200)).await);
        if delayed
            && spans.iter().any(|s| {
                s.name == "GET list_machine_actions"
                    && span_attr(s, "error.type").as_deref() == Some("timeout")
            })
        {
            sim.faults().delay("list_machine_actions", Duration::ZERO);
            delayed = false;
        }
    }

    // Every API span: method, status (when answered), host and a template with no id.
    let api: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.name.starts_with("GET ") && s.name != "GET download")
        .collect();
    assert!(!api.is_empty());
    for s in &api {
        assert_eq!(span_attr(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(span_attr(s, "server.address").as_deref(), Some("127.0.0.1"));
        let template = span_attr(s, "url.template").unwrap_or_default();
        let want = match s.name.as_str() {
            "GET list_machine_actions" => "/api/machineactions",
            "GET get_machine_action" => "/api/machineactions/{id}",
            "GET get_result_download_link" => {
                "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})"
            }
            "GET list_machines" => "/api/machines",
            other => panic!("unexpected API span {other}"),
        };
        assert_eq!(template, want, "{}", s.name);
        if span_attr(s, "error.type").as_deref() != Some("timeout") {
            assert!(
                span_attr(s, "http.response.status_code").is_some(),
                "{} has a status code",
                s.name
            );
        }
    }
    // A 429: `error.type` is the status code, and the span failed.
    let throttled = api
        .iter()
        .find(|s| span_attr(s, "error.type").as_deref() == Some("429"))
        .unwrap();
    assert_eq!(
        span_attr(throttled, "http.response.status_code").as_deref(),
        Some("429")
    );
    assert_eq!(
        throttled.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
    // A timeout: no answer, so no status code.
    let timed_out = api
        .iter()
        .find(|s| span_attr(s, "error.type").as_deref() == Some("timeout"))
        .unwrap();
    assert_eq!(span_attr(timed_out, "http.response.status_code"), None);
    // A successful call has no `error.type`.
    let ok = api
        .iter()
        .find(|s| span_attr(s, "http.response.status_code").as_deref() == Some("200"))
        .unwrap();
    assert_eq!(span_attr(ok, "error.type"), None, "{}", ok.name);

    // Downloads: the blob template, neither the blob's name nor its signature.
    for s in spans.iter().filter(|s| s.name == "GET download") {
        assert_eq!(
            span_attr(s, "url.template").as_deref(),
            Some("/{container}/{blob}")
        );
    }

    // Transcript spans and records: `process.exit.code` beside the older `exit_code`.
    for s in spans
        .iter()
        .filter(|s| s.name == "parse" && s.attributes.contains_key("exit_code"))
    {
        assert_eq!(span_attr(s, "process.exit.code"), span_attr(s, "exit_code"));
    }
    let failing = logs
        .iter()
        .find(|l| {
            is_transcript(l)
                && otlp_attribute(&l.attributes, "process.exit.code").is_some_and(|c| c != "0")
        })
        .unwrap();
    assert_eq!(
        otlp_attribute(&failing.attributes, "process.exit.code"),
        otlp_attribute(&failing.attributes, "exit_code")
    );
}
