//! The first start of a tenant (no watermark) against a history where actions turn final
//! while the bootstrap listing's pages are read. See: #20

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

/// See: #20 item 3. Five actions queued for days (older than `lookback`, within the
/// in-flight horizon) turn final right after the first page of the first listing is served.
/// Listed in the same long listing as the window, with the status evaluated per page
/// request, they left its answer while it was read: the pages after shifted, and actions
/// listed nowhere were never counted (the sweep, an hour away, is the only net). With the
/// in-flight set listed first and on its own, and the window listed whatever the status,
/// every action is counted once and no sweep has anything to find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_turning_final_while_the_bootstrap_reads_pages_are_all_counted_once() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 2020,
        machines: 10,
        actions: 400,
        page_size: 50,
        queued_for_days: 5,
        per_minute: 5000,
        per_hour: 100_000,
        minute: Duration::from_secs(1),
        hour: Duration::from_secs(60),
        finish_within: Duration::from_secs(120),
        ..SimConfig::default()
    })
    .await;
    let day_old: BTreeSet<String> = sim
        .in_flight()
        .into_iter()
        .filter(|(_, _, created)| chrono::Utc::now() - *created > chrono::Duration::days(1))
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(day_old.len(), 5);
    // Everything in flight turns final between the first and the second page.
    sim.advance_after_list_pages(1, Duration::from_secs(300));
    let secret = sim.credentials().2.to_string();
    let yaml = config_yaml(
        &sim,
        addr,
        &secret,
        "    discovery:\n      reconcile_interval: 1h\n",
        "",
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    no_action_in_flight(&sim).await;
    let truth = sim.truth();
    eventually("the work is done", || async move {
        let m = scrape(a).await;
        polls(&m) >= 3.0
            && sum(&m, "mde_liveresponse_pending_results", &[]) == 0.0
            && sum(&m, "mde_liveresponse_actions_in_flight", &[]) == 0.0
    })
    .await;
    let p = polls(&scrape(a).await);
    eventually("three more polls", || async move {
        polls(&scrape(a).await) >= p + 3.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_actions_total", "status", &[]),
        truth.actions_by_status(),
        "every final action counted once"
    );
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    let shared = exporter.shared();
    for id in &day_old {
        assert!(shared.with_state(|s| s.action_seen("sim", id)), "{id}");
    }
    assert_eq!(
        sum(&m, "mde_liveresponse_discovery_missed_total", &[]),
        0.0,
        "nothing left for a sweep"
    );
}
