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

/// See: #32 item 4. Two hundred actions pending on offline devices, pages of five and twenty
/// list calls a (one-second) minute: the first discovery's two listings take about ninety
/// pages, more than four quota minutes. Before, each poll spent its minute, kept nothing, and
/// the next started over: the first discovery never ended and every poll failed ("no API call
/// got through this poll" after twenty had). Now a poll cut short keeps the pages it read,
/// the next goes on from the page it stopped at, and each poll that read pages is a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_discovery_longer_than_the_list_quota_goes_on_at_the_next_poll() {
    use crate::discovery::fleet::collector_with;
    let (sim, addr) = start_sim(SimConfig {
        seed: 324,
        machines: 4,
        actions: 6,
        fleet: 200,
        page_size: 5,
        per_minute: 100_000,
        per_hour: 1_000_000,
        finish_within: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let (mut c, shared) = collector_with(
        &sim,
        addr,
        "poll_interval: 500ms\n",
        "    quota:\n      per_minute: 20\n      per_hour: 100000\n      minute: 1s\n      hour: 1h\n",
    );
    let in_flight: BTreeSet<String> = sim.in_flight().into_iter().map(|(id, _, _)| id).collect();
    assert!(in_flight.len() >= 200);
    let mut polls = 0;
    while shared.with_state(|s| s.watermark("fleet")).is_none() && polls < 12 {
        // Each poll starts with a full minute of quota: twenty list calls.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.poll_once()
            .await
            .expect("a poll that read pages is a success");
        polls += 1;
    }
    let calls = list_calls(&sim);
    assert!(
        shared.with_state(|s| s.watermark("fleet")).is_some(),
        "the first discovery never ended: {polls} polls, {calls} list calls"
    );
    // About ninety pages, each read once: the pages of a poll cut short are not read again.
    assert!((5..=6).contains(&polls), "{polls} polls");
    assert!(calls <= 100, "{calls} list calls");
    let followed: BTreeSet<String> = shared
        .with_state(|s| s.tracked("fleet"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<&String> = in_flight.difference(&followed).collect();
    assert!(missing.is_empty(), "not followed: {missing:?}");
    assert_eq!(
        shared.status_snapshot()["fleet"].discovery.outcome,
        "complete"
    );
}
