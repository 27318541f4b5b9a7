//! The endpoint-gone early warning (#20 item 6): a `Deprecation` or `Sunset` header on any API
//! answer, and a 404/410 on a collection endpoint, are counted per endpoint and reason in
//! `mde_api_endpoint_deprecation_notices_total`, shown on the status page and logged once.

use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 3,
        actions: 6,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunset_headers_and_a_gone_collection_are_counted_and_shown() {
    let (sim, addr) = start_sim(sim_config(2001)).await;
    // Every answer under /api/machineactions (the listing, one action, the result links).
    sim.faults().announce(
        "/api/machineactions",
        "Sunset",
        "Wed, 01 Jul 2026 00:00:00 GMT",
    );
    // The first listing: the collection itself is not found.
    sim.faults().fail_next("list_machine_actions", 404, 1);
    let exporter = start_exporter_on(&sim, addr).await;
    let at = exporter.addr;
    let m = settled(&sim, at).await;
    let notices = |m: &Samples, endpoint: &str, reason: &str| {
        sum(
            m,
            "mde_api_endpoint_deprecation_notices_total",
            &[
                ("tenant", "sim"),
                ("endpoint", endpoint),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(notices(&m, "list_machine_actions", "gone"), 1.0);
    // Each answer with the header is one notice: as many as the calls answered.
    let listed = sum(
        &m,
        "mde_api_requests_total",
        &[("endpoint", "list_machine_actions")],
    );
    assert_eq!(notices(&m, "list_machine_actions", "sunset_header"), listed);
    assert!(notices(&m, "get_result_download_link", "sunset_header") >= 1.0);
    // Not announced: no header notice; a Deprecation header was never sent.
    assert_eq!(notices(&m, "list_machines", "sunset_header"), 0.0);
    assert_eq!(
        sum(
            &m,
            "mde_api_endpoint_deprecation_notices_total",
            &[("reason", "deprecation_header")]
        ),
        0.0
    );

    let (_, _, page) = get(at, "/", None).await;
    assert!(
        page.contains("<h3>Endpoint deprecation notices</h3>"),
        "{page}"
    );
    assert!(
        page.contains("<td>list_machine_actions</td><td>sunset_header</td>")
            && page.contains("<code>sunset: Wed, 01 Jul 2026 00:00:00 GMT</code>"),
        "{page}"
    );
    assert!(
        page.contains(
            "<td>list_machine_actions</td><td>gone</td><td>1</td><td><code>HTTP 404</code></td>"
        ),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notices_the_status_page_has_no_such_section() {
    let (sim, addr) = start_sim(sim_config(2002)).await;
    let exporter = start_exporter_on(&sim, addr).await;
    let m = settled(&sim, exporter.addr).await;
    assert_eq!(
        sum(&m, "mde_api_endpoint_deprecation_notices_total", &[]),
        0.0
    );
    let (_, _, page) = get(exporter.addr, "/", None).await;
    assert!(!page.contains("deprecation notices"), "{page}");
}

#[test]
fn the_first_notice_of_each_endpoint_and_reason_is_logged_once() {
    let m = mde_liveresponse_exporter::metrics::Metrics::new();
    assert!(
        m.api
            .record_deprecation_notice("a", "list_machines", "sunset_header", "sunset: x")
    );
    assert!(
        !m.api
            .record_deprecation_notice("a", "list_machines", "sunset_header", "sunset: y")
    );
    assert!(
        m.api
            .record_deprecation_notice("a", "list_machines", "gone", "HTTP 404")
    );
    assert!(
        m.api
            .record_deprecation_notice("b", "list_machines", "sunset_header", "sunset: x")
    );
    assert_eq!(
        m.api.deprecation_notices("a"),
        vec![
            ("list_machines".into(), "gone".into(), 1, "HTTP 404".into()),
            (
                "list_machines".into(),
                "sunset_header".into(),
                2,
                "sunset: y".into()
            ),
        ]
    );
}
