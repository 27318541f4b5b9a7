//! Incremental discovery, actions in flight, scripts that never ran, and fetching that resumes
//! when a Retry-After ends, against the simulator. See: #9

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::record::state::{ResultKey, State};
use mde_sim::SimConfig;

/// Not-run counter samples as (script, reason) → count.
fn not_run_by_script_reason(m: &Samples) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for ((name, labels), v) in m {
        if name == "mde_liveresponse_script_not_run_total" && *v > 0.0 {
            *out.entry((labels["script"].clone(), labels["reason"].clone()))
                .or_insert(0) += *v as u64;
        }
    }
    out
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_queued_for_days_are_followed_to_their_end_and_counted_once() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 909,
        machines: 8,
        actions: 40,
        queued_for_days: 6,
        not_run: 8,
        finish_within: Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await;
    // Actions created more than a day ago, still Pending: beyond the default lookback (24h).
    let day_old: BTreeSet<String> = sim
        .in_flight()
        .into_iter()
        .filter(|(_, _, created)| chrono::Utc::now() - *created > chrono::Duration::days(1))
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(day_old.len(), 6);
    let oldest_pending = sim.in_flight().iter().map(|(_, _, c)| *c).min().unwrap();
    let exporter = start_exporter_on(&sim, addr).await;
    let a = exporter.addr;

    // While they are in flight, the gauges show them: the oldest was queued days ago.
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1)).timestamp() as f64;
    eventually(
        "the in-flight gauges show an action queued for days",
        || async move {
            let m = scrape(a).await;
            let oldest = sum(
                &m,
                "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
                &[("tenant", "sim")],
            );
            sum(
                &m,
                "mde_liveresponse_actions_in_flight",
                &[("status", "Pending")],
            ) > 0.0
                && oldest > 0.0
                && oldest < day_ago
        },
    )
    .await;
    let m = scrape(a).await;
    let oldest = sum(
        &m,
        "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
        &[("tenant", "sim")],
    );
    assert!(
        oldest >= oldest_pending.timestamp_millis() as f64 / 1000.0 - 0.002,
        "{oldest} is older than any action of the scenario"
    );

    no_action_in_flight(&sim).await;
    let truth = sim.truth();
    let want_runs = truth.runs_by_script();
    eventually("every transcript and not-run counted", || {
        let want_runs = want_runs.clone();
        async move {
            let m = scrape(a).await;
            by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]) == want_runs
                && sum(&m, "mde_liveresponse_actions_in_flight", &[]) == 0.0
        }
    })
    .await;
    // Two more polls: nothing is counted again.
    let p = polls(&scrape(a).await);
    eventually("two more polls", || async move {
        polls(&scrape(a).await) >= p + 2.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert_eq!(
        by_label(&m, "mde_liveresponse_actions_total", "status", &[]),
        truth.actions_by_status(),
        "every final action counted once, the day-old ones included"
    );
    let shared = exporter.shared();
    for id in &day_old {
        assert!(shared.with_state(|s| s.action_seen("sim", id)), "{id}");
    }
    // Every queued action that succeeded had its transcript counted.
    let day_old_transcripts = truth
        .transcripts
        .iter()
        .filter(|t| day_old.contains(&t.action_id))
        .count();
    assert!(day_old_transcripts > 0);
    for t in truth
        .transcripts
        .iter()
        .filter(|t| day_old.contains(&t.action_id))
    {
        let key = ResultKey {
            tenant: "sim".into(),
            action_id: t.action_id.clone(),
            index: t.index,
        };
        assert!(shared.with_state(|s| s.is_done(&key)), "{key:?}");
    }
    // Not-run commands: each counted once, with its reason.
    assert_eq!(
        not_run_by_script_reason(&m),
        truth.not_run_by_script_reason()
    );
    let reasons: BTreeSet<&str> = truth.not_run.iter().map(|n| n.reason).collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            "action_cancelled",
            "action_failed",
            "action_timeout",
            "command_failed"
        ])
    );
    // The per-machine gauge is 1 where no attempt of the script ran on that machine at all.
    let never_ran: BTreeSet<(String, String)> = truth
        .not_run
        .iter()
        .map(|n| (n.machine.clone(), n.script.clone()))
        .filter(|(machine, script)| {
            !truth
                .transcripts
                .iter()
                .any(|t| &t.machine == machine && &t.script == script)
        })
        .collect();
    assert!(!never_ran.is_empty());
    for (machine, script) in &never_ran {
        let v = sum(
            &m,
            "mde_liveresponse_script_not_run",
            &[("machine", machine), ("script", script)],
        );
        assert_eq!(v, 1.0, "{machine} {script}");
    }
    // Nothing in flight: no oldest-creation series for the alert to misread.
    assert!(
        !m.keys()
            .any(|(n, _)| n == "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds")
    );
    assert_eq!(sum(&m, "mde_liveresponse_discovery_missed_total", &[]), 0.0);
    exporter.shutdown().await.unwrap();
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_watermark_without_listing_the_window_again() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 910,
        machines: 10,
        actions: 300,
        page_size: 50,
        minute: Duration::from_millis(500),
        hour: Duration::from_secs(30),
        finish_within: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let secret = sim.credentials().2.to_string();
    let yaml = config_yaml(
        &sim,
        addr,
        &secret,
        "",
        &format!("state_path: {}\n", state.display()),
    );
    no_action_in_flight(&sim).await;
    let want_runs = sim.truth().runs_by_script();
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    eventually("first life fetches everything", || {
        let want_runs = want_runs.clone();
        async move {
            let m = scrape(a).await;
            // A poll that ended after everything was fetched or given up (malformed
            // transcripts get a second try at a later poll).
            by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]) == want_runs
                && polls(&m) >= 3.0
                && m.keys()
                    .any(|(n, _)| n == "mde_liveresponse_pending_results")
                && sum(&m, "mde_liveresponse_pending_results", &[]) == 0.0
        }
    })
    .await;
    let first_life_items = sim.stats().list_items;
    assert!(
        first_life_items >= 300,
        "the first discovery lists the whole window ({first_life_items})"
    );
    exporter.shutdown().await.unwrap();
    let before = sim.stats();
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    eventually("three polls in the second life", || async move {
        polls(&scrape(a).await) >= 3.0
    })
    .await;
    let calls_at = list_calls(&sim);
    let polls_at = polls(&scrape(a).await);
    eventually("five more polls", || async move {
        polls(&scrape(a).await) >= polls_at + 5.0
    })
    .await;
    let after = sim.stats();
    let m = scrape(a).await;
    let polls_now = polls(&m);
    let items = after.list_items - before.list_items;
    // Each poll lists only what was created within the overlap before the watermark.
    assert!(
        items as f64 <= polls_now * 300.0 / 5.0,
        "{items} actions listed in {polls_now} polls: the window was listed again"
    );
    // Nothing in flight: one list call per poll, and one more for a poll in progress at each
    // end (its call counted, its end not, or the other way round: the calls and the polls
    // are read one after the other). Two calls a poll would be at least 10.
    let calls = list_calls(&sim) - calls_at;
    assert!(
        calls as f64 <= polls_now - polls_at + 2.0,
        "{calls} list calls in {} polls",
        polls_now - polls_at
    );
    // Nothing counted again, nothing fetched again.
    assert!(by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]).is_empty());
    let truth = sim.truth();
    let again: Vec<String> = after
        .link_requests
        .iter()
        .filter(|(k, n)| before.link_requests.get(*k) != Some(*n))
        .map(|((id, index), n)| {
            let t = truth
                .transcripts
                .iter()
                .find(|t| &t.action_id == id && t.index == *index);
            format!("{id}/{index} x{n} {t:?}")
        })
        .collect();
    assert!(again.is_empty(), "fetched again: {again:#?}");
    exporter.shutdown().await.unwrap();
    let s = State::open(Some(&state)).unwrap();
    assert!(s.watermark("sim").is_some());
}

/// (action id, index) of each not-run event in a life's logs.
fn not_run_events(logs: &[String]) -> Vec<(String, u32, String)> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "script_not_run")
        .map(|v| {
            (
                v["action_id"].as_str().unwrap_or_default().to_string(),
                v["index"].as_u64().unwrap_or(u64::MAX) as u32,
                v["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_run_commands_are_counted_once_across_kill_9() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 912,
        machines: 10,
        actions: 60,
        not_run: 24,
        queued_for_days: 4,
        per_minute: 6,
        per_hour: 5000,
        minute: Duration::from_millis(500),
        hour: Duration::from_secs(60),
        finish_within: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let (_dir, config, state) = config_dir(&sim, addr);
    // The actions queued for days turn final within 3 s of the simulator's start; on a busy
    // host no life may have finished a first discovery by then, and an action final before
    // the exporter first looked and older than `lookback` is out of reach by design. A
    // lookback over the whole history keeps this test about counting once across kill -9.
    let secret = sim.credentials().2.to_string();
    std::fs::write(
        &config,
        config_yaml(&sim, addr, &secret, "    lookback: 4d\n", ""),
    )
    .unwrap();
    let spawn = || Binary::on_state(&config, &state, &[], &[]);
    let mut lives = Vec::new();
    let kills = 8;
    for i in 0..kills {
        let mut e = spawn();
        tokio::time::sleep(Duration::from_millis(150 + 131 * (i % 4))).await;
        e.kill();
        lives.push(not_run_events(&e.logs()));
    }
    no_action_in_flight(&sim).await;
    let truth = sim.truth();
    let mut last = spawn();
    let a = last.addr;
    eventually("the last life finishes the work", || async move {
        let m = scrape(a).await;
        polls(&m) >= 2.0
            && sum(&m, "mde_liveresponse_pending_results", &[]) == 0.0
            && sum(&m, "mde_liveresponse_actions_in_flight", &[]) == 0.0
    })
    .await;
    // Two more polls: a final action followed for its results is forgotten at the poll after
    // its last result is done.
    let p = polls(&scrape(a).await);
    eventually("two more polls", || async move {
        polls(&scrape(a).await) >= p + 2.0
    })
    .await;
    assert_eq!(last.terminate(), Some(0));
    lives.push(not_run_events(&last.logs()));

    let want: BTreeMap<(String, u32), String> = truth
        .not_run
        .iter()
        .map(|n| ((n.action_id.clone(), n.index), n.reason.to_string()))
        .collect();
    let mut seen = BTreeSet::new();
    for (life, events) in lives.iter().enumerate() {
        for (id, index, reason) in events {
            assert!(
                seen.insert((id.clone(), *index)),
                "({id}, {index}) counted again in life {life}"
            );
            assert_eq!(
                want.get(&(id.clone(), *index)),
                Some(reason),
                "{id} {index}"
            );
        }
    }
    // Every not-run command is done in the state; a log line cut off by a SIGKILL right after
    // its commit is the only way one can be done and not logged: at most one per kill.
    let s = State::open(Some(&state)).unwrap();
    for (id, index) in want.keys() {
        let key = ResultKey {
            tenant: "sim".into(),
            action_id: id.clone(),
            index: *index,
        };
        assert!(s.is_not_run_done(&key), "{key:?} missed");
    }
    let unlogged = want.len() - seen.len();
    assert!(
        unlogged <= kills as usize,
        "{unlogged} done but never logged"
    );
    assert!(s.tracked("sim").is_empty(), "nothing left to follow");
}

// See: #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_sweep_counts_what_incremental_discovery_missed() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 913,
        machines: 6,
        actions: 30,
        finish_within: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    // An old final action the list leaves out at first, as a lagging index would.
    let truth = sim.truth();
    let missed = truth
        .actions
        .iter()
        .find(|a| a.status == "Succeeded")
        .unwrap()
        .id
        .clone();
    sim.faults()
        .hide_from_list(std::slice::from_ref(&missed), true);
    let secret = sim.credentials().2.to_string();
    let yaml = config_yaml(
        &sim,
        addr,
        &secret,
        "    discovery:\n      reconcile_interval: 2s\n",
        "",
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    let want = truth.actions_by_status().values().sum::<u64>() as f64 - 1.0;
    eventually("everything else counted", || async move {
        sum(&scrape(a).await, "mde_liveresponse_actions_total", &[]) == want
    })
    .await;
    assert_eq!(
        sum(
            &scrape(a).await,
            "mde_liveresponse_discovery_missed_total",
            &[]
        ),
        0.0
    );
    // The index catches up; the watermark has moved on, so only the sweep can find it.
    sim.faults()
        .hide_from_list(std::slice::from_ref(&missed), false);
    eventually("the sweep finds it", || async move {
        sum(
            &scrape(a).await,
            "mde_liveresponse_discovery_missed_total",
            &[("tenant", "sim")],
        ) == 1.0
    })
    .await;
    let p = polls(&scrape(a).await);
    eventually("more polls and sweeps", || async move {
        polls(&scrape(a).await) >= p + 15.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        by_label(&m, "mde_liveresponse_actions_total", "status", &[]),
        truth.actions_by_status(),
        "counted, once"
    );
    assert_eq!(sum(&m, "mde_liveresponse_discovery_missed_total", &[]), 1.0);
    exporter.shutdown().await.unwrap();
}
