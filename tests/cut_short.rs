//! A poll whose discovery is cut short by the list quota keeps what it has. See: #20
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mde_sim::SimConfig;

/// See: #20 item 2. Forty actions in flight are read again two ids per call, 21 list calls
/// a poll, while the list budget allows 6 a second: no poll can read them all. Before, the
/// discovery that ran out of quota returned an error and threw away every batch it had read,
/// so the actions that turned final were never counted. Now each poll accounts what it read,
/// and the next one starts where it stopped: every action is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_cut_short_by_quota_keeps_what_it_read() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 2002,
        machines: 8,
        actions: 10,
        page_size: 200,
        queued_for_days: 40,
        per_minute: 6,
        per_hour: 100_000,
        minute: Duration::from_secs(1),
        hour: Duration::from_secs(60),
        finish_within: Duration::from_secs(6),
        ..SimConfig::default()
    })
    .await;
    let secret = sim.credentials().2.to_string();
    let yaml = config_yaml(
        &sim,
        addr,
        &secret,
        "    discovery:\n      batch_size: 2\n      reconcile_interval: 1h\n",
        "",
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    no_action_in_flight(&sim).await;
    let truth = sim.truth();
    let want = truth.actions_by_status();
    eventually("every final action counted", || {
        let want = want.clone();
        async move {
            let m = scrape(a).await;
            by_label(&m, "mde_liveresponse_actions_total", "status", &[]) == want
                && sum(&m, "mde_liveresponse_actions_in_flight", &[]) == 0.0
                && sum(&m, "mde_liveresponse_pending_results", &[]) == 0.0
        }
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert_eq!(sum(&m, "mde_liveresponse_discovery_missed_total", &[]), 0.0);
    // Nothing waits to be read again once all is counted, and the status page says how the
    // last discovery went and when the next poll is.
    assert_eq!(
        sum(&m, "mde_liveresponse_discovery_rereads_pending", &[]),
        0.0
    );
    let (_, _, page) = get(a, "/", None).await;
    assert!(
        page.contains("<p class=\"discovery\">Discovery: <span"),
        "{page}"
    );
    assert!(page.contains(" · re-reads waiting: "), "{page}");
    assert!(page.contains(" · next poll in 0.2 s ("), "{page}");
}
