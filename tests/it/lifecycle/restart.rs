//! Durable state: the real binary is killed with SIGKILL again and again in the middle of its
//! work against one simulator scenario, and restarted on the same state file. Across all its
//! lives no result may be counted twice, none may be missed, and the per-machine gauges must
//! come back after a restart. See: #3

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::record::state::{ResultKey, State};
use mde_sim::SimConfig;

/// (action id, index) of each transcript event in a life's logs.
fn counted(logs: &[String]) -> Vec<(String, u32)> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "transcript")
        .map(|v| {
            (
                v["action_id"].as_str().unwrap_or_default().to_string(),
                v["index"].as_u64().unwrap_or(u64::MAX) as u32,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_counts_every_result_exactly_once() {
    // A tight quota keeps results queued, so kills land in the middle of the work.
    let (sim, addr) = start_sim(SimConfig {
        seed: 77,
        machines: 10,
        actions: 60,
        per_minute: 6,
        per_hour: 5000,
        minute: Duration::from_millis(500),
        hour: Duration::from_secs(60),
        finish_within: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let (_dir, config, state) = config_dir(&sim, addr);

    let mut lives: Vec<Vec<(String, u32)>> = Vec::new();
    let kills = 12;
    for i in 0..kills {
        let mut e = Binary::on_state(&config, &state, &[], &[]);
        // Let it work a different while each time, then SIGKILL: no chance to clean up.
        tokio::time::sleep(Duration::from_millis(150 + 97 * (i % 5))).await;
        e.kill();
        lives.push(counted(&e.logs()));
    }

    // A last life runs until everything is accounted for, then stops cleanly.
    let s = sim.clone();
    let want_final = sim.config().actions;
    eventually("every simulated action is final", || {
        let s = s.clone();
        async move { s.truth().actions.len() == want_final }
    })
    .await;
    let truth = sim.truth();
    let mut last = Binary::on_state(&config, &state, &[], &[]);
    let a = last.addr;
    eventually("the last life finishes the work", || async move {
        let m = scrape(a).await;
        // Two polls after every action was final, and nothing left waiting.
        sum(&m, "mde_exporter_poll_duration_seconds", &[]) >= 2.0
            && sum(&m, "mde_liveresponse_pending_results", &[]) == 0.0
            && sum(&m, "mde_exporter_poll_success", &[]) == 1.0
    })
    .await;
    // The per-machine gauges are served from the state, whichever life counted the run.
    let m = scrape(a).await;
    let want: BTreeMap<(String, String), i64> = truth
        .last_by_machine_script()
        .into_iter()
        .map(|(k, t)| (k, t.exit_code))
        .collect();
    let mut got = BTreeMap::new();
    for ((name, labels), v) in &m {
        if name == "mde_liveresponse_script_exit_code" {
            got.insert(
                (labels["machine"].clone(), labels["script"].clone()),
                *v as i64,
            );
        }
    }
    assert_eq!(got, want);
    assert_eq!(last.terminate(), Some(0), "SIGTERM exits 0");
    lives.push(counted(&last.logs()));

    // Never counted twice, across all lives.
    let mut seen = BTreeSet::new();
    for (life, keys) in lives.iter().enumerate() {
        for k in keys {
            assert!(seen.insert(k.clone()), "{k:?} counted again in life {life}");
        }
    }
    // Nothing missed: every result is done in the state file. A result whose log line was
    // cut off by a SIGKILL right after its commit is done but not in any log: at most one
    // per kill.
    let state = State::open(Some(&state)).unwrap();
    let good: BTreeSet<(String, u32)> = truth
        .transcripts
        .iter()
        .filter(|t| !t.malformed)
        .map(|t| (t.action_id.clone(), t.index))
        .collect();
    for t in &truth.transcripts {
        let key = ResultKey {
            tenant: "sim".into(),
            action_id: t.action_id.clone(),
            index: t.index,
        };
        assert!(state.is_done(&key), "{key:?} missed");
    }
    for f in &truth.files {
        let key = ResultKey {
            tenant: "sim".into(),
            action_id: f.action_id.clone(),
            index: f.index,
        };
        assert!(state.is_done(&key), "{key:?} missed");
    }
    assert!(seen.is_subset(&good), "only valid transcripts are counted");
    let unlogged = good.difference(&seen).count();
    assert!(
        unlogged <= kills as usize,
        "{unlogged} results done but never logged"
    );
    assert!(
        lives.iter().take(kills as usize).any(|l| !l.is_empty()),
        "kills should land mid-work"
    );
}
