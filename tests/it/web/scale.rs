//! Scale: a scrape is served while collectors keep every worker thread busy. See: #11

use std::sync::mpsc;
use std::time::Duration;

use crate::common::{
    eventually, parse_config, start_exporter, start_exporter_on, start_sim, tenant_yaml,
};
use mde_sim::SimConfig;

// See: #11. With thousands of tenants a poll may block its worker thread (the state file's
// durable commit waits for the disk); `/metrics` used to wait behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn issue_11_a_scrape_is_not_queued_behind_busy_collectors() {
    let (sim, addr) = start_sim(SimConfig {
        actions: 5,
        ..SimConfig::default()
    })
    .await;
    let handle = start_exporter_on(&sim, addr).await;
    let exporter = handle.addr;

    // Occupy the runtime's only worker thread until the scrape below has its answer.
    let (release, released) = mpsc::channel::<()>();
    let (started, is_blocking) = mpsc::channel::<()>();
    let blocker = tokio::spawn(async move {
        started.send(()).unwrap();
        // The bound only turns a deadlock into a failure; it is not a timing assertion.
        released.recv_timeout(Duration::from_secs(60)).is_ok()
    });
    is_blocking.recv_timeout(Duration::from_secs(60)).unwrap();

    // Scrape from a thread of its own (reqwest's blocking client has its own runtime).
    let scrape = std::thread::spawn(move || {
        let answer = reqwest::blocking::get(format!("http://{exporter}/metrics"))
            .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
        let _ = release.send(());
        answer
    })
    .join()
    .unwrap();
    let (status, body) = scrape.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mde_exporter_build_info"), "{body}");
    assert!(
        blocker.await.unwrap(),
        "the scrape was answered only after the busy worker let go"
    );
    handle.shutdown().await.unwrap();
}

/// N tenants of a multi-tenant simulator whose every answer takes 40 ms, under one exporter
/// with `max_requests_in_flight: cap`; returns the most requests the simulator answered at
/// once and the exporter's final scrape, once every finished result of every tenant is counted.
async fn drain_with_cap(tenants: usize, cap: usize) -> (usize, crate::common::Samples) {
    let base = SimConfig {
        seed: 5,
        machines: 4,
        actions: 4,
        finish_within: Duration::ZERO,
        ..SimConfig::default()
    };
    let multi = mde_sim::multi::MultiSim::new(&base, tenants);
    for sim in multi.tenants() {
        for ep in [
            "list_machine_actions",
            "get_machine_action",
            "get_result_download_link",
            "download",
            "list_machines",
        ] {
            sim.faults().delay(ep, Duration::from_millis(40));
        }
    }
    let summary = multi.summary();
    let want = (summary.transcripts + summary.files) as f64;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(multi.clone().serve(listener, std::future::pending()));
    let mut yaml = format!("poll_interval: 300ms\nmax_requests_in_flight: {cap}\ntenants:\n");
    for (i, sim) in multi.tenants().iter().enumerate() {
        yaml.push_str(&tenant_yaml(&format!("t{i}"), sim, addr));
    }
    let handle = start_exporter(parse_config(&yaml)).await;
    let a = handle.addr;
    eventually("every result of every tenant counted", || async move {
        let m = crate::common::scrape(a).await;
        let got = crate::common::sum(&m, "mde_liveresponse_script_runs_total", &[])
            + crate::common::sum(&m, "mde_liveresponse_files_total", &[])
            + crate::common::sum(
                &m,
                "mde_liveresponse_result_fetch_failures_total",
                &[("reason", "malformed")],
            );
        got >= want
    })
    .await;
    let last = crate::common::scrape(a).await;
    handle.shutdown().await.unwrap();
    (multi.max_in_flight(), last)
}

// See: #11. Hundreds of tenants polling at once used to hold a connection and an answer each;
// `max_requests_in_flight` caps the API calls and downloads in flight across tenants, and
// every tenant is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_requests_in_flight_are_capped_across_tenants() {
    let (most, m) = drain_with_cap(12, 2).await;
    assert!(
        (1..=2).contains(&most),
        "{most} requests were in flight at once with max_requests_in_flight: 2"
    );
    assert_eq!(
        crate::common::sum(&m, "mde_exporter_requests_in_flight_limit", &[]),
        2.0
    );
    assert!(crate::common::sum(&m, "mde_exporter_request_slot_wait_seconds_total", &[]) > 0.0);
    assert_eq!(crate::common::sum(&m, "mde_api_throttled_total", &[]), 0.0);
    // Every tenant got its results.
    for i in 0..12 {
        let t = format!("t{i}");
        assert!(
            crate::common::sum(&m, "mde_liveresponse_commands_total", &[("tenant", &t)]) > 0.0,
            "tenant {t} has no result"
        );
    }

    // The same tenants with room for all: the simulator does see requests overlap, so the
    // bound above is the cap's doing.
    let (most, _) = drain_with_cap(12, 64).await;
    assert!(
        most > 2,
        "only {most} requests ever overlapped without a cap"
    );
}
