//! Series whose labels are known from the configuration are there from the first scrape, at
//! 0, before anything happened (no 429, no failure, no poll); a reload adds the new tenants'
//! series (unless `self_monitoring.tenant_series_at_zero` is false, #34). Per-machine series
//! evicted by `max_series` are counted. See: #12

use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    all_final, eventually, get, parse_config, scrape, start_exporter_with,
    start_exporter_with_loader, start_sim, sum,
};
use mde_liveresponse_exporter::app;
use mde_liveresponse_exporter::config::Config;
use mde_sim::SimConfig;

/// A one-tenant config whose API is a closed port: nothing can be throttled or fetched.
fn unreachable(name: &str, port: u16) -> String {
    format!(
        "poll_interval: 1h\ntenants:\n  - name: {name}\n    tenant_id: 00000000-0000-4000-8000-000000000001\n    client_id: 11111111-1111-4111-8111-111111111111\n    client_secret: s\n    api_url: http://127.0.0.1:{port}\n    login_url: http://127.0.0.1:{port}\n"
    )
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of one exact sample line of the Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .and_then(|v| v.parse().ok())
}

fn check_zero(text: &str, tenant: &str) {
    for ep in [
        "list_machine_actions",
        "get_machine_action",
        "get_result_download_link",
    ] {
        let labels = format!("{{tenant=\"{tenant}\",endpoint=\"{ep}\"}}");
        for family in ["mde_api_throttled_total", "mde_api_retry_after_seconds"] {
            assert_eq!(
                sample(text, &format!("{family}{labels}")),
                Some(0.0),
                "{family}{labels} in {text}"
            );
        }
    }
    for reason in [
        "not_found",
        "forbidden",
        "expired_link",
        "http_error",
        "timeout",
        "io",
        "malformed",
        "too_large",
        "token",
        "untrusted_link",
    ] {
        let s = format!(
            "mde_liveresponse_result_fetch_failures_total{{tenant=\"{tenant}\",reason=\"{reason}\"}}"
        );
        assert_eq!(sample(text, &s), Some(0.0), "{s}");
    }
    for reason in ["ttl", "max_series"] {
        let s =
            format!("mde_exporter_series_evicted_total{{tenant=\"{tenant}\",reason=\"{reason}\"}}");
        assert_eq!(sample(text, &s), Some(0.0), "{s}");
    }
    // Polls: the duration histogram's count is there (0 before the first poll ends).
    assert!(
        sample(
            text,
            &format!("mde_exporter_poll_duration_seconds_count{{tenant=\"{tenant}\"}}")
        )
        .is_some(),
        "poll count of {tenant}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_series_start_at_zero_and_a_reload_adds_new_tenants() {
    let port = closed_port();
    let first = unreachable("one", port);
    let second = format!(
        "{first}{}",
        unreachable("two", port).split("tenants:\n").nth(1).unwrap()
    );
    let reloaded: Config = parse_config(&second);
    let loader: app::Loader = Arc::new(move || Ok(reloaded.clone()));
    let exporter = start_exporter_with_loader(parse_config(&first), loader).await;
    let (_, _, text) = get(exporter.addr, "/metrics", None).await;
    check_zero(&text, "one");
    assert!(!text.contains("tenant=\"two\""));

    exporter.reload().await.unwrap();
    let (_, _, text) = get(exporter.addr, "/metrics", None).await;
    check_zero(&text, "two");
    exporter.shutdown().await.unwrap();
}

// See: #34. `self_monitoring: {tenant_series_at_zero: false}`: none of those series is
// started at 0, for the tenants of the start or of a reload; the families stay (the help and
// type lines, and the series an event made: the failed poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_series_at_zero_an_idle_tenant_has_only_what_happened() {
    let port = closed_port();
    let off = "self_monitoring:\n  tenant_series_at_zero: false\n";
    let first = format!("{off}{}", unreachable("one", port));
    let second = format!(
        "{first}{}",
        unreachable("two", port).split("tenants:\n").nth(1).unwrap()
    );
    let reloaded: Config = parse_config(&second);
    let loader: app::Loader = Arc::new(move || Ok(reloaded.clone()));
    let exporter = start_exporter_with_loader(parse_config(&first), loader).await;
    let a = exporter.addr;
    // The first tenant has polled once (and failed: the API is a closed port).
    eventually("a poll of the first tenant", || async move {
        let m = scrape(a).await;
        sum(
            &m,
            "mde_exporter_poll_duration_seconds_count",
            &[("tenant", "one")],
        ) >= 1.0
    })
    .await;
    exporter.reload().await.unwrap();
    let (_, _, text) = get(exporter.addr, "/metrics", None).await;
    for t in ["one", "two"] {
        // Served: its quota windows are shown (computed at scrape time).
        let quota = format!("mde_api_quota_limit{{tenant=\"{t}\"");
        assert!(text.contains(&quota), "{quota} in {text}");
        for zero in [
            format!("mde_api_throttled_total{{tenant=\"{t}\",endpoint=\"list_machine_actions\"}}"),
            format!(
                "mde_liveresponse_result_fetch_failures_total{{tenant=\"{t}\",reason=\"not_found\"}}"
            ),
            format!("mde_exporter_series_evicted_total{{tenant=\"{t}\",reason=\"ttl\"}}"),
            format!("mde_liveresponse_actions_total{{tenant=\"{t}\",status=\"Succeeded\"}}"),
        ] {
            assert_eq!(sample(&text, &zero), None, "{zero} in {text}");
        }
    }
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_evicted_by_max_series_are_counted() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 3,
        machines: 6,
        actions: 30,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    all_final(&sim).await;
    let exporter = start_exporter_with(&sim, addr, "", "max_series: 2\n").await;
    let a = exporter.addr;
    eventually("series evicted over max_series", || async move {
        let m = scrape(a).await;
        sum(
            &m,
            "mde_exporter_series_evicted_total",
            &[("tenant", "sim"), ("reason", "max_series")],
        ) > 0.0
    })
    .await;
    let m = scrape(a).await;
    let gauges = m
        .keys()
        .filter(|(n, _)| n == "mde_liveresponse_script_exit_code")
        .count();
    assert!(gauges <= 2, "at most max_series series: {gauges}");
    exporter.shutdown().await.unwrap();
}
