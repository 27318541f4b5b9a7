//! The exchanges #32 found without telemetry (last round's notes): the sign-in token request
//! has a client span like an API call's (`POST token`, `url.template` without the tenant id,
//! `error.type` when it fails), and a result download whose body breaks after a good head
//! records `error.type` on its span. The binary runs against the simulator, which refuses the
//! first token request and cuts the first download short, and exports to a real OTLP
//! receiver.

use std::time::Duration;

use crate::common::{Binary, config_yaml, otlp_grpc_env, span_attr, start_sim};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use mde_sim::{BlobFault, SimConfig};

fn failed_token(s: &ExportedSpan) -> bool {
    s.name == "POST token" && span_attr(s, "error.type").as_deref() == Some("503")
}

fn good_token(s: &ExportedSpan) -> bool {
    s.name == "POST token" && span_attr(s, "http.response.status_code").as_deref() == Some("200")
}

fn cut_download(s: &ExportedSpan) -> bool {
    s.name == "GET download" && span_attr(s, "error.type").as_deref() == Some("io")
}

// See: #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_have_spans_and_a_cut_download_has_an_error_type() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    sim.faults().fail_next("token", 503, 1);
    sim.faults().blob_fault(BlobFault::Truncated, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let state = dir.path().join("state.redb");
    let secret = sim.credentials().2.to_string();
    std::fs::write(&config, config_yaml(&sim, addr, &secret, "", "")).unwrap();

    let mut collector = FakeCollectorServer::start().await.unwrap();
    let _child = Binary::on_state(&config, &state, &[], &otlp_grpc_env(&collector.endpoint()));

    let mut spans: Vec<ExportedSpan> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !(spans.iter().any(failed_token)
        && spans.iter().any(good_token)
        && spans.iter().any(cut_download))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every case arrived: spans {:?}",
            spans
                .iter()
                .filter(|s| s.name == "POST token" || s.name == "GET download")
                .map(|s| (&s.name, span_attr(s, "error.type")))
                .collect::<Vec<_>>()
        );
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(200))
                .await,
        );
    }

    let tenant_id = sim.credentials().0.to_string();
    for s in spans.iter().filter(|s| s.name == "POST token") {
        assert_eq!(span_attr(s, "http.request.method").as_deref(), Some("POST"));
        assert_eq!(span_attr(s, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            span_attr(s, "url.template").as_deref(),
            Some("/{tenant}/oauth2/v2.0/token")
        );
        assert_eq!(s.kind, "SPAN_KIND_CLIENT", "{s:?}");
        let full = span_attr(s, "url.full").unwrap_or_default();
        assert!(
            full.ends_with(&format!("/{tenant_id}/oauth2/v2.0/token")),
            "{full}"
        );
        // The secret travels in the body, never on the span.
        assert!(!s.attributes.values().any(|v| v.contains(&secret)), "{s:?}");
    }
    let failed = spans.iter().find(|s| failed_token(s)).unwrap();
    assert_eq!(
        span_attr(failed, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        failed.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
    let good = spans.iter().find(|s| good_token(s)).unwrap();
    assert_eq!(span_attr(good, "error.type"), None);

    // The download answered 200, then its body broke: the exchange failed.
    let cut = spans.iter().find(|s| cut_download(s)).unwrap();
    assert_eq!(
        span_attr(cut, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        cut.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
}
