//! End to end: the simulator and the exporter on 127.0.0.1:0; metric values are compared with
//! the simulator's ground truth, and the simulator's call log proves exactly-once fetching.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use mde_sim::{SimConfig, Simulator};

pub(crate) fn scenario(seed: u64, actions: usize) -> SimConfig {
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
pub(crate) fn assert_fetched_once(sim: &Simulator) {
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
pub(crate) async fn all_accounted(addr: std::net::SocketAddr, sim: &Simulator) {
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
    let exporter = start_exporter_on(&sim, addr).await;
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
    let extra = format!("    scripts: [\"{script}\"]\n");
    let exporter = start_exporter_with(&sim, addr, &extra, "").await;
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
