//! Script output as metrics through the simulator (#21): the simulator's transcripts carry
//! PowerShell noise, NUL bytes and non-ASCII text; one of its scripts prints a line that
//! starts like a sample and does not parse (`Collected 42 items`). See: #21

use std::collections::BTreeSet;

use crate::common::{
    config_yaml, parse_config, settled, start_exporter, start_exporter_with, start_sim, sum,
};
use mde_sim::SimConfig;

const RULES: &str = "script_metrics:
  - script: collect-triage.ps1
    format: prometheus
  - script: check-bitlocker.ps1
    format: prometheus
  - script: hunt-persistence.ps1
    format: json
    metrics:
      - name: persistence_found
        path: found
";

#[tokio::test]
async fn script_output_becomes_per_machine_series() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let exporter = start_exporter_with(&sim, addr, "", RULES).await;
    let m = settled(&sim, exporter.addr).await;
    let truth = sim.truth();
    let runs = truth.runs_by_script();
    let invalid = |script: &str| {
        sum(
            &m,
            "mde_script_metrics_lines_invalid_total",
            &[("tenant", "sim"), ("script", script)],
        )
    };
    // One line that starts like a sample per collect-triage transcript; the transcript
    // header, footer and the rest are noise.
    assert_eq!(
        invalid("collect-triage.ps1"),
        runs["collect-triage.ps1"] as f64
    );
    assert_eq!(invalid("check-bitlocker.ps1"), 0.0);
    // No JSON object in the output: the one path is missing, once per transcript.
    assert_eq!(
        invalid("hunt-persistence.ps1"),
        runs["hunt-persistence.ps1"] as f64
    );
    // Every (machine, script) of a rule has its set and its time.
    for script in ["collect-triage.ps1", "check-bitlocker.ps1"] {
        let want: BTreeSet<String> = truth
            .last_by_machine_script()
            .into_keys()
            .filter(|(_, s)| s == script)
            .map(|(machine, _)| machine)
            .collect();
        let got: BTreeSet<String> = m
            .keys()
            .filter(|(n, l)| {
                n == "mde_script_metrics_last_transcript_timestamp_seconds"
                    && l.get("script").map(String::as_str) == Some(script)
            })
            .map(|(_, l)| l["machine"].clone())
            .collect();
        assert_eq!(got, want, "{script}");
    }
    // A script without a rule has no set.
    assert_eq!(
        sum(
            &m,
            "mde_script_metrics_last_transcript_timestamp_seconds",
            &[("script", "get-av-status.ps1")]
        ),
        0.0
    );
    exporter.shutdown().await.unwrap();
}

/// The sets are written with the transcript that gave them: after a restart they are served
/// at the first scrape, before any poll, and no transcript is fetched again.
#[tokio::test]
async fn sets_survive_a_restart() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let global = format!("state_path: {}\n{RULES}", state.display());
    let text = config_yaml(&sim, addr, sim.credentials().2, "", &global);
    let exporter = start_exporter(parse_config(&text)).await;
    let before = settled(&sim, exporter.addr).await;
    exporter.shutdown().await.unwrap();
    let sets = |m: &crate::common::Samples| {
        m.iter()
            .filter(|((n, _), _)| n == "mde_script_metrics_last_transcript_timestamp_seconds")
            .map(|((_, l), v)| (l.clone(), *v))
            .collect::<Vec<_>>()
    };
    assert!(!sets(&before).is_empty());
    let downloads = sim.stats().downloads;
    // The restarted exporter's first scrape, before its first poll has fetched anything.
    let mut config = parse_config(&text);
    config.poll_interval = std::time::Duration::from_secs(3600);
    let again = start_exporter(config).await;
    let after = crate::common::scrape(again.addr).await;
    assert_eq!(sets(&after), sets(&before));
    assert_eq!(sim.stats().downloads, downloads, "nothing fetched again");
    again.shutdown().await.unwrap();
}

/// See: #21. The simulator's script_metrics scenario: one script prints text-format samples
/// (one with a `machine` label of its own) and another one JSON object, amid the transcript
/// noise; each machine's series carry what its latest transcript (by the action's
/// `lastUpdateDateTimeUtc`, then the command index) printed.
#[tokio::test]
async fn each_machine_serves_what_its_latest_transcript_printed() {
    let (sim, addr) = start_sim(SimConfig {
        script_metrics: true,
        ..SimConfig::default()
    })
    .await;
    let rules = mde_sim::script_metrics_rules();
    let exporter = start_exporter_with(&sim, addr, "", &rules).await;
    let m = settled(&sim, exporter.addr).await;
    let truth = sim.truth();
    let mut latest: std::collections::BTreeMap<(String, String), mde_sim::TruthTranscript> =
        Default::default();
    for t in truth.transcripts.iter().filter(|t| !t.malformed) {
        let key = (t.machine.clone(), t.script.clone());
        if latest
            .get(&key)
            .is_none_or(|e| (e.last_update, e.index) < (t.last_update, t.index))
        {
            latest.insert(key, t.clone());
        }
    }
    let name_of = |script: &str, printed: &str| match (script, printed) {
        (mde_sim::TEXT_SCRIPT, name) => format!("mde_script_{name}"),
        (_, "antivirus_enabled") => "mde_script_av_enabled".into(),
        (_, "signature.age_seconds") => "mde_script_av_signature_age_seconds".into(),
        (_, path) => format!("mde_script_av_{path}"),
    };
    let mut checked = 0;
    for ((machine, script), t) in &latest {
        if script != mde_sim::TEXT_SCRIPT && script != mde_sim::JSON_SCRIPT {
            continue;
        }
        assert_eq!(t.printed.len(), 3, "{t:?}");
        for (printed, value) in &t.printed {
            let name = name_of(script, printed);
            let own = [("tenant", "sim"), ("machine", machine), ("script", script)];
            let series: Vec<_> = m
                .iter()
                .filter(|((n, l), _)| {
                    *n == name
                        && own
                            .iter()
                            .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                })
                .collect();
            assert_eq!(series.len(), 1, "{name} on {machine}: {series:?}");
            assert_eq!(*series[0].1, *value as f64, "{name} on {machine}");
            checked += 1;
        }
        if script == mde_sim::TEXT_SCRIPT {
            // The script's own `machine` label does not replace the real one.
            assert_eq!(
                sum(
                    &m,
                    "mde_script_bitlocker_protection_on",
                    &[
                        ("machine", machine),
                        ("exported_machine", machine),
                        ("volume", "C:")
                    ]
                ),
                t.printed[0].1 as f64
            );
        }
    }
    assert!(checked >= 12, "{checked}");
    // Noise only: no invalid line, nothing dropped.
    for script in [mde_sim::TEXT_SCRIPT, mde_sim::JSON_SCRIPT] {
        let filter = [("script", script)];
        assert_eq!(
            sum(&m, "mde_script_metrics_lines_invalid_total", &filter),
            0.0
        );
        assert_eq!(sum(&m, "mde_script_metrics_dropped_total", &filter), 0.0);
    }
    exporter.shutdown().await.unwrap();
}

/// See: #21. A rule the configuration no longer has takes its series with it: at once after a
/// reload, and at the next start (its sets stay in the state file until their ttl, and are not
/// restored). The other rules' sets stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_rule_takes_its_series_with_it() {
    use std::sync::Arc;
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let path = dir.path().join("config.yml");
    let with = |rules: &str| {
        let global = format!("state_path: {}\n{rules}", state.display());
        config_yaml(&sim, addr, sim.credentials().2, "", &global)
    };
    let narrowed = RULES.replace(
        "  - script: collect-triage.ps1\n    format: prometheus\n",
        "",
    );
    assert_ne!(narrowed, RULES);
    std::fs::write(&path, with(RULES)).unwrap();
    let file = path.clone();
    let loader: mde_liveresponse_exporter::app::Loader =
        Arc::new(move || mde_liveresponse_exporter::config::Config::load(&file));
    let exporter =
        crate::common::start_exporter_with_loader(parse_config(&with(RULES)), loader).await;
    let m = settled(&sim, exporter.addr).await;
    let sets = |m: &crate::common::Samples, script: &str| {
        sum(
            m,
            "mde_script_metrics_last_transcript_timestamp_seconds",
            &[("script", script)],
        ) > 0.0
    };
    let invalid = |m: &crate::common::Samples, script: &str| {
        sum(
            m,
            "mde_script_metrics_lines_invalid_total",
            &[("script", script)],
        )
    };
    assert!(sets(&m, "collect-triage.ps1") && sets(&m, "check-bitlocker.ps1"));
    assert!(invalid(&m, "collect-triage.ps1") > 0.0);
    std::fs::write(&path, with(&narrowed)).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/-/reload", exporter.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let m = crate::common::scrape(exporter.addr).await;
    assert!(
        !sets(&m, "collect-triage.ps1"),
        "the removed rule's sets are gone"
    );
    assert_eq!(invalid(&m, "collect-triage.ps1"), 0.0);
    assert!(
        !m.keys().any(|(n, l)| n.starts_with("mde_script_")
            && l.get("script").map(String::as_str) == Some("collect-triage.ps1")),
        "no mde_script_* series of the removed rule"
    );
    assert!(
        sets(&m, "check-bitlocker.ps1"),
        "the other rules' sets stay"
    );
    exporter.shutdown().await.unwrap();
    // The next start restores only the rules configured.
    let mut config = parse_config(&with(&narrowed));
    config.poll_interval = std::time::Duration::from_secs(3600);
    let again = start_exporter(config).await;
    let m = crate::common::scrape(again.addr).await;
    assert!(!sets(&m, "collect-triage.ps1"));
    assert!(sets(&m, "check-bitlocker.ps1"));
    again.shutdown().await.unwrap();
}
