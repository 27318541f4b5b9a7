//! The API quota end to end: a small quota never exceeded while results wait for it
//! (`mde_liveresponse_pending_results`) and the quota gauges in both windows, a quota per
//! tenant, 429s with and without Retry-After, fetching that resumes when a Retry-After ends,
//! a noisy neighbour spending the same quota, a storm of 429s, and a poll whose discovery the
//! list quota cuts short. The quota's own arithmetic is unit-tested in `src/quota.rs`; the
//! status page's quota table is in `web::status_page`.

use std::time::Duration;

use crate::common::*;
use crate::results::exporter::{self, all_accounted, assert_fetched_once};
use crate::results::resilience::{self, assert_exactly_once, run_to_the_end};
use crate::web::hardening::{self, exporter_for, last_error, runs_match_truth};
use mde_sim::{SimConfig, Simulator};

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

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_resumes_when_retry_after_ends_not_at_the_next_poll() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 911,
        machines: 6,
        actions: 20,
        finish_within: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    // The first result link is refused with Retry-After: 1; the next poll is 30 s away.
    sim.faults()
        .throttle_next("get_result_download_link", 1, Some(1));
    let secret = sim.credentials().2.to_string();
    let yaml = config_yaml(&sim, addr, &secret, "", "")
        .replace("poll_interval: 200ms", "poll_interval: 30s");
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    let want_runs = sim.truth().runs_by_script();
    assert!(!want_runs.is_empty());
    eventually("every transcript counted", || {
        let want_runs = want_runs.clone();
        async move {
            by_label(
                &scrape(a).await,
                "mde_liveresponse_script_runs_total",
                "script",
                &[],
            ) == want_runs
        }
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(
            &m,
            "mde_api_throttled_total",
            &[("endpoint", "get_result_download_link")]
        ),
        1.0
    );
    assert_eq!(polls(&m), 1.0, "fetched before the second poll");
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_quota_is_never_exceeded_and_everything_arrives() {
    // A minute lasts one second and allows 4 calls per endpoint: results queue for quota.
    let cfg = SimConfig {
        per_minute: 4,
        per_hour: 1000,
        minute: Duration::from_secs(1),
        hour: Duration::from_secs(60),
        ..exporter::scenario(11, 12)
    };
    let (sim, addr) = start_sim(cfg).await;
    let exporter = start_exporter_on(&sim, addr).await;
    let a = exporter.addr;
    let mut saw_backlog = false;
    all_final(&sim).await;
    let truth = sim.truth();
    let want = (truth.transcripts.len() + truth.files.len()) as f64;
    for _ in 0..600 {
        let m = scrape(a).await;
        saw_backlog |= sum(&m, "mde_liveresponse_pending_results", &[]) > 0.0;
        if results_done(&m) >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert!(saw_backlog, "results should have waited for quota");
    assert_eq!(
        sim.stats().throttled.values().sum::<u64>(),
        0,
        "the exporter must never be throttled"
    );
    assert_eq!(
        sum(
            &m,
            "mde_api_quota_limit",
            &[("endpoint", "get_result_download_link"), ("window", "1m")]
        ),
        4.0
    );
    let used = sum(
        &m,
        "mde_api_quota_used",
        &[("endpoint", "get_result_download_link"), ("window", "1h")],
    );
    let remaining = sum(
        &m,
        "mde_api_quota_remaining",
        &[("endpoint", "get_result_download_link"), ("window", "1h")],
    );
    assert_eq!(used + remaining, 1000.0);
    assert!(
        used >= want,
        "every result link was counted against the hour: {used}"
    );
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_revoked_tokens_are_survived() {
    let (sim, addr) = start_sim(exporter::scenario(5, 20)).await;
    let faults = sim.faults();
    faults.throttle_next("get_result_download_link", 1, Some(1));
    faults.revoke_tokens();
    let exporter = start_exporter_on(&sim, addr).await;
    all_final(&sim).await;
    let a = exporter.addr;
    eventually("a first throttle", || async move {
        sum(&scrape(a).await, "mde_api_throttled_total", &[]) >= 1.0
    })
    .await;
    faults.revoke_tokens();
    all_accounted(a, &sim).await;
    let truth = sim.truth();
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert_eq!(
        sum(
            &m,
            "mde_api_throttled_total",
            &[("endpoint", "get_result_download_link")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "mde_api_retry_after_seconds",
            &[("endpoint", "get_result_download_link")]
        ),
        1.0
    );
    // The revoked token was renewed: more than one token request succeeded.
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "token"), ("code", "200")]
        ) >= 2.0
    );
    assert_fetched_once(&sim);
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tenants_each_with_their_own_credentials_and_quota() {
    let (sim_a, addr_a) = start_sim(exporter::scenario(31, 15)).await;
    let (sim_b, addr_b) = start_sim(SimConfig {
        client_secret: "another-secret".into(),
        per_minute: 50,
        ..exporter::scenario(32, 15)
    })
    .await;
    let tenant = |name: &str, sim: &Simulator, addr: std::net::SocketAddr| {
        let (tenant_id, client_id, secret) = sim.credentials();
        format!(
            "  - name: {name}\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    quota:\n      per_minute: {}\n",
            sim.config().per_minute
        )
    };
    let yaml = format!(
        "poll_interval: 200ms\ntenants:\n{}{}",
        tenant("alpha", &sim_a, addr_a),
        tenant("beta", &sim_b, addr_b)
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    all_final(&sim_a).await;
    all_final(&sim_b).await;
    let a = exporter.addr;
    let (ta, tb) = (sim_a.truth(), sim_b.truth());
    let want_a = ta.runs_by_script();
    let want_b = tb.runs_by_script();
    eventually("both tenants counted", || {
        let (want_a, want_b) = (want_a.clone(), want_b.clone());
        async move {
            let m = scrape(a).await;
            by_label(
                &m,
                "mde_liveresponse_script_runs_total",
                "script",
                &[("tenant", "alpha")],
            ) == want_a
                && by_label(
                    &m,
                    "mde_liveresponse_script_runs_total",
                    "script",
                    &[("tenant", "beta")],
                ) == want_b
        }
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(
            &m,
            "mde_api_quota_limit",
            &[
                ("tenant", "beta"),
                ("endpoint", "list_machine_actions"),
                ("window", "1m")
            ]
        ),
        50.0
    );
    assert_eq!(
        sum(
            &m,
            "mde_api_quota_limit",
            &[
                ("tenant", "alpha"),
                ("endpoint", "list_machine_actions"),
                ("window", "1m")
            ]
        ),
        100.0
    );
    let (status, _, _) = get(a, "/-/ready", None).await;
    assert_eq!(status, 200);
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_with_and_without_retry_after() {
    let (sim, addr) = start_sim(resilience::scenario(104)).await;
    let f = sim.faults();
    f.throttle_next("list_machine_actions", 1, Some(1));
    f.throttle_next("get_result_download_link", 2, None);
    let m = run_to_the_end(&sim, addr, "").await;
    assert_eq!(sum(&m, "mde_api_throttled_total", &[]), 3.0);
    assert!(
        sum(
            &m,
            "mde_api_retry_after_seconds",
            &[("endpoint", "get_result_download_link")]
        ) > 0.0
    );
    assert_exactly_once(&sim, &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_neighbour_lowers_our_budget_and_we_stop_hitting_429() {
    // Someone else spends most of the same quota: after a few 429s we adapt.
    let (sim, addr) = start_sim(SimConfig {
        per_minute: 10,
        minute: Duration::from_secs(1),
        hour: Duration::from_secs(600),
        per_hour: 10_000,
        ..resilience::scenario(105)
    })
    .await;
    sim.faults().spend_quota("get_result_download_link", 10);
    let m = run_to_the_end(&sim, addr, "").await;
    assert!(sum(&m, "mde_api_throttled_total", &[]) >= 1.0);
    assert_exactly_once(&sim, &m);
}

/// Issue #13 item 5: a storm of 429s (Retry-After longer than the poll interval) is not a
/// healthy poll; it recovers when the storm ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_is_not_a_success() {
    let (sim, addr) = start_sim(hardening::scenario(133)).await;
    let exporter = exporter_for(&sim, addr, "").await;
    let a = exporter.addr;
    let m = settled(&sim, a).await;
    runs_match_truth(&sim, &m);
    sim.faults()
        .throttle_next("list_machine_actions", 3, Some(1));
    eventually("the storm shows", || async move {
        sum(&scrape(a).await, "mde_exporter_poll_success", &[]) == 0.0
    })
    .await;
    // Polls inside a Retry-After block are refused by our own quota: still not a success.
    let mut zeros = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        zeros += (sum(&scrape(a).await, "mde_exporter_poll_success", &[]) == 0.0) as u32;
    }
    assert!(zeros >= 5, "poll_success was 1 during the storm");
    let err = last_error(&exporter);
    assert!(
        err.starts_with("no API call got through this poll: "),
        "{err}"
    );
    eventually("recovered", || async move {
        sum(&scrape(a).await, "mde_exporter_poll_success", &[]) == 1.0
    })
    .await;
    exporter.shutdown().await.unwrap();
}
