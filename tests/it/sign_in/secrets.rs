//! The client secret, bearer tokens and SAS link signatures never appear in logs (at trace
//! level), spans, metrics or the status page, for a good secret and a wrong one. See: #4

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

const GOOD_SECRET: &str = "S3cr3t-never-logged-7f1c";
const WRONG_SECRET: &str = "Wr0ng-secret-also-hidden-91ab";
/// Every token the simulator issues starts like this.
const TOKEN_PREFIX: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0";

fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for secret in [GOOD_SECRET, WRONG_SECRET, TOKEN_PREFIX] {
        if text.contains(secret) {
            found.push(secret.to_string());
        }
    }
    // A SAS signature may only ever be shown as REDACTED.
    for marker in ["sig=", "sig%3D", "sig%3d"] {
        for (i, _) in text.match_indices(marker) {
            let rest = &text[i + marker.len()..];
            if !rest.starts_with("REDACTED") {
                found.push(format!(
                    "{marker}{}",
                    rest.chars().take(12).collect::<String>()
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_signature_anywhere() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 61,
        machines: 4,
        actions: 16,
        client_secret: GOOD_SECRET.into(),
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    // A raw OTLP/HTTP receiver: the exported bytes are searched as they are.
    let bodies: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend_from_slice(&body);
                "{}"
            }
        }),
    );
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(otlp, app).await });

    let (tenant_id, client_id, _) = sim.credentials();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "poll_interval: 200ms\ntranscript_log:\n  output: none\ntenants:\n  - name: good\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: ${{GOOD}}\n    api_url: http://{addr}\n    login_url: http://{addr}\n  - name: wrong\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {WRONG_SECRET}\n    api_url: http://{addr}\n    login_url: http://{addr}\n"
        ),
    )
    .unwrap();
    let otlp_endpoint = format!("http://{otlp_addr}");
    let mut child = Binary::on_config(
        &config,
        &["--log.level", "trace"],
        &[
            ("GOOD", GOOD_SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let exporter = child.addr;

    eventually(
        "transcripts counted and the wrong secret refused",
        || async move {
            let m = scrape(exporter).await;
            sum(
                &m,
                "mde_liveresponse_script_runs_total",
                &[("tenant", "good")],
            ) > 0.0
                && sum(
                    &m,
                    "mde_liveresponse_result_fetch_failures_total",
                    &[("tenant", "good")],
                ) > 0.0
                && sum(
                    &m,
                    "mde_api_requests_total",
                    &[("tenant", "wrong"), ("endpoint", "token"), ("code", "401")],
                ) > 0.0
        },
    )
    .await;
    let (_, _, plain) = get(exporter, "/metrics", None).await;
    let (_, _, openmetrics) = get(
        exporter,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await;
    let (_, _, page) = get(exporter, "/", None).await;
    assert!(
        page.contains("AADSTS7000215"),
        "the wrong secret's error is shown: {page}"
    );
    // SIGTERM flushes the last spans to the receiver, which runs on this runtime.
    let code = tokio::task::block_in_place(|| child.terminate());
    assert_eq!(code, Some(0));
    let logs = child.logs().join("\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = String::from_utf8_lossy(&bodies.lock().unwrap()).to_string();

    // With tracing on, every transcript event carries the ids of the span it happened in.
    for line in logs
        .lines()
        .filter(|l| l.contains("\"event\":\"transcript\""))
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["trace_id"].as_str().map(str::len), Some(32), "{line}");
        assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    // The checks must have material to look at.
    assert!(
        logs.contains("\"event\":\"transcript\""),
        "transcript events logged"
    );
    assert!(
        logs.contains("sig=REDACTED") || spans.contains("sig=REDACTED"),
        "links appear, redacted"
    );
    assert!(
        spans.contains("GET get_result_download_link"),
        "spans exported"
    );
    for (what, text) in [
        ("logs", &logs),
        ("spans", &spans),
        ("metrics", &plain),
        ("openmetrics", &openmetrics),
        ("status page", &page),
    ] {
        assert_eq!(leaks(text), Vec::<String>::new(), "leak in {what}");
    }
}
