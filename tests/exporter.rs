//! End to end: the simulator and the exporter on 127.0.0.1:0; metric values are compared with
//! the simulator's ground truth, and the simulator's call log proves exactly-once fetching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use mde_sim::{SimConfig, Simulator};

fn scenario(seed: u64, actions: usize) -> SimConfig {
    SimConfig {
        seed,
        machines: 8,
        actions,
        finish_within: Duration::from_millis(800),
        ..SimConfig::default()
    }
}

/// Exactly once: one link and one successful download per result. A malformed transcript
/// is downloaded once more (with the same link, at no quota cost) before it is given up.
fn assert_fetched_once(sim: &Simulator) {
    let truth = sim.truth();
    let stats = sim.stats();
    assert_eq!(
        stats.link_requests.len(),
        truth.transcripts.len() + truth.files.len()
    );
    assert_eq!(
        stats.downloads.len(),
        truth.transcripts.len() + truth.files.len()
    );
    let results = truth
        .transcripts
        .iter()
        .map(|t| {
            (
                (t.action_id.clone(), t.index),
                if t.malformed { 2 } else { 1 },
            )
        })
        .chain(
            truth
                .files
                .iter()
                .map(|f| ((f.action_id.clone(), f.index), 1)),
        );
    for (key, downloads) in results {
        assert_eq!(stats.link_requests.get(&key), Some(&1), "links for {key:?}");
        assert_eq!(
            stats.downloads.get(&key),
            Some(&downloads),
            "downloads of {key:?}"
        );
    }
}

/// Wait until every result of the scenario is accounted for (counted or given up).
async fn all_accounted(addr: std::net::SocketAddr, sim: &Simulator) {
    let truth = sim.truth();
    let transcripts = truth.transcripts.len() as f64;
    let files = truth.files.len() as f64;
    eventually("every result accounted for", || async move {
        let m = scrape(addr).await;
        let got = sum(&m, "mde_liveresponse_script_runs_total", &[])
            + sum(&m, "mde_liveresponse_result_fetch_failures_total", &[]);
        got >= transcripts && sum(&m, "mde_liveresponse_files_total", &[]) >= files
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_scenario_and_each_result_is_fetched_once() {
    let (sim, addr) = start_sim(scenario(7, 60)).await;
    let secret = sim.credentials().2.to_string();
    let exporter = start_exporter(parse_config(&config_yaml(&sim, addr, &secret, "", ""))).await;
    all_final(&sim).await;
    all_accounted(exporter.addr, &sim).await;
    // One more poll must not change anything: nothing is counted twice.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let truth = sim.truth();
    let m = scrape(exporter.addr).await;
    assert!(!truth.transcripts.is_empty() && !truth.files.is_empty());
    assert_eq!(
        by_label(
            &m,
            "mde_liveresponse_script_runs_total",
            "script",
            &[("tenant", "sim")]
        ),
        truth.runs_by_script()
    );
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_failures_total", "script", &[]),
        truth.failures_by_script()
    );
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_errors_total", "script", &[]),
        truth.errors_by_script()
    );
    assert_eq!(
        by_label(&m, "mde_liveresponse_actions_total", "status", &[]),
        truth.actions_by_status()
    );
    let malformed = truth.transcripts.iter().filter(|t| t.malformed).count() as f64;
    assert!(malformed > 0.0, "the scenario has malformed transcripts");
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_result_fetch_failures_total",
            &[("reason", "malformed")]
        ),
        malformed
    );
    assert_eq!(
        sum(&m, "mde_liveresponse_result_fetch_failures_total", &[]),
        malformed
    );
    assert_eq!(
        sum(&m, "mde_liveresponse_files_total", &[]),
        truth.files.len() as f64
    );
    assert_eq!(
        sum(&m, "mde_liveresponse_file_bytes_total", &[]),
        truth
            .files
            .iter()
            .map(|f| f.compressed_bytes as f64)
            .sum::<f64>()
    );

    // Last exit code per machine and script, by endTime.
    let last = truth.last_by_machine_script();
    let mut exit_codes = BTreeMap::new();
    let mut errors_present = BTreeMap::new();
    let mut last_run = BTreeMap::new();
    for ((name, labels), v) in &m {
        let key = (
            labels.get("machine").cloned().unwrap_or_default(),
            labels.get("script").cloned().unwrap_or_default(),
        );
        match name.as_str() {
            "mde_liveresponse_script_exit_code" => {
                exit_codes.insert(key, *v as i64);
            }
            "mde_liveresponse_script_errors_present" => {
                errors_present.insert(key, *v == 1.0);
            }
            "mde_liveresponse_script_last_run_timestamp_seconds" => {
                last_run.insert(key, *v);
            }
            _ => {}
        }
    }
    let want_codes: BTreeMap<_, _> = last.iter().map(|(k, t)| (k.clone(), t.exit_code)).collect();
    let want_errors: BTreeMap<_, _> = last
        .iter()
        .map(|(k, t)| (k.clone(), t.errors_present))
        .collect();
    assert_eq!(exit_codes, want_codes);
    assert_eq!(errors_present, want_errors);
    for (k, t) in &last {
        let want = t.end_time.timestamp_millis() as f64 / 1000.0;
        assert!(
            (last_run[k] - want).abs() < 0.001,
            "{k:?}: {} != {want}",
            last_run[k]
        );
    }

    assert_fetched_once(&sim);
    let stats = sim.stats();
    assert_eq!(stats.throttled.values().sum::<u64>(), 0);
    assert_eq!(sum(&m, "mde_api_throttled_total", &[]), 0.0);
    assert_eq!(
        sum(&m, "mde_exporter_poll_success", &[("tenant", "sim")]),
        1.0
    );
    assert_eq!(
        sum(&m, "mde_exporter_token_success", &[("tenant", "sim")]),
        1.0
    );
    assert_eq!(sum(&m, "mde_liveresponse_pending_results", &[]), 0.0);

    let (status, _, _) = get(exporter.addr, "/-/ready", None).await;
    assert_eq!(status, 200);
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_a_metric_not_a_crash() {
    let (sim, addr) = start_sim(scenario(3, 10)).await;
    let exporter = start_exporter(parse_config(&config_yaml(
        &sim,
        addr,
        "not-the-secret",
        "",
        "",
    )))
    .await;
    let a = exporter.addr;
    eventually("a failed poll", || async move {
        let m = scrape(a).await;
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "token"), ("code", "401")],
        ) >= 2.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(&m, "mde_exporter_poll_success", &[("tenant", "sim")]),
        0.0
    );
    assert_eq!(
        sum(&m, "mde_exporter_token_success", &[("tenant", "sim")]),
        0.0
    );
    assert_eq!(sum(&m, "mde_liveresponse_script_runs_total", &[]), 0.0);
    let (status, _, _) = get(a, "/-/ready", None).await;
    assert_eq!(status, 503);
    let (status, _, page) = get(a, "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("AADSTS7000215"), "{page}");
    assert!(!page.contains("not-the-secret"));
    // No MDE API call is made without a token.
    assert_eq!(
        sim.stats()
            .requests
            .get("list_machine_actions")
            .copied()
            .unwrap_or(0),
        0
    );
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
        ..scenario(11, 12)
    };
    let (sim, addr) = start_sim(cfg).await;
    let secret = sim.credentials().2.to_string();
    let exporter = start_exporter(parse_config(&config_yaml(&sim, addr, &secret, "", ""))).await;
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
    let (sim, addr) = start_sim(scenario(5, 20)).await;
    let faults = sim.faults();
    faults.throttle_next("get_result_download_link", 1, Some(1));
    faults.revoke_tokens();
    let secret = sim.credentials().2.to_string();
    let exporter = start_exporter(parse_config(&config_yaml(&sim, addr, &secret, "", ""))).await;
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
async fn selectors_narrow_what_is_fetched() {
    let (sim, addr) = start_sim(scenario(9, 40)).await;
    all_final(&sim).await;
    let truth = sim.truth();
    let script = truth
        .transcripts
        .iter()
        .find(|t| !t.malformed)
        .unwrap()
        .script
        .clone();
    let secret = sim.credentials().2.to_string();
    let extra = format!("    scripts: [\"{script}\"]\n");
    let exporter =
        start_exporter(parse_config(&config_yaml(&sim, addr, &secret, &extra, ""))).await;
    let want = truth.runs_by_script()[&script];
    let a = exporter.addr;
    let s = script.clone();
    eventually("the selected script's runs", || {
        let s = s.clone();
        async move {
            sum(
                &scrape(a).await,
                "mde_liveresponse_script_runs_total",
                &[("script", &s)],
            ) >= want as f64
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = scrape(a).await;
    let runs = by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]);
    assert_eq!(runs, BTreeMap::from([(script, want)]));
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tenants_each_with_their_own_credentials_and_quota() {
    let (sim_a, addr_a) = start_sim(scenario(31, 15)).await;
    let (sim_b, addr_b) = start_sim(SimConfig {
        client_secret: "another-secret".into(),
        per_minute: 50,
        ..scenario(32, 15)
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
