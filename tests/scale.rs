//! Scale: a scrape is served while collectors keep every worker thread busy. See: #11
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{config_yaml, parse_config, start_exporter, start_sim};
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
    let handle = start_exporter(parse_config(&config_yaml(
        &sim,
        addr,
        "sim-client-secret",
        "",
        "",
    )))
    .await;
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
