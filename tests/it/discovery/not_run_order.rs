//! The latest attempt wins, whatever the order: `mde_liveresponse_script_not_run{machine,script}`
//! follows the attempt with the newest `lastUpdateDateTimeUtc` (a run wins a tie), whether the
//! attempts are seen in one poll or across polls, in any order, and across a `kill -9`.
//!
//! The attempts of one (machine, script) are offered to the state the way the collector
//! offers them (a command that ran through `offer_ran`, one that never ran through
//! `commit_not_run`), shuffled, with the state file dropped and opened again at a random point
//! (what survives a `kill -9` is what was committed). See: #20

use chrono::{DateTime, TimeZone, Utc};
use mde_liveresponse_exporter::record::state::{Attempt, ResultKey, SeriesKey, State};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
}

fn series(machine: usize) -> SeriesKey {
    ("t".into(), format!("m{machine}"), "s.ps1".into())
}

/// One action's attempt: on which machine, when (few distinct times, so ties are common),
/// and whether the command ran.
fn attempts() -> impl Strategy<Value = Vec<(usize, i64, bool)>> {
    prop::collection::vec((0usize..3, 0i64..6, any::<bool>()), 1..12)
}

/// What the gauge must show per machine: absent if the machine never had a not-run; else
/// 1 when its newest attempt did not run, 0 when it ran (a run wins a tie).
fn expected(all: &[(usize, i64, bool)]) -> Vec<Option<bool>> {
    (0..3)
        .map(|m| {
            let mine: Vec<_> = all.iter().filter(|(mm, _, _)| *mm == m).collect();
            if !mine.iter().any(|(_, _, ran)| !ran) {
                return None;
            }
            let newest = mine.iter().map(|(_, t, _)| *t).max()?;
            let ran = mine.iter().any(|(_, t, ran)| *t == newest && *ran);
            Some(!ran)
        })
        .collect()
}

fn offer(s: &mut State, i: usize, (machine, secs, ran): (usize, i64, bool)) {
    let action_id = format!("a{i}");
    let attempt = Attempt {
        at: at(secs),
        ran,
        action_id: action_id.clone(),
    };
    if ran {
        s.offer_ran(series(machine), attempt).unwrap();
    } else {
        let key = ResultKey {
            tenant: "t".into(),
            action_id,
            index: 0,
        };
        s.commit_not_run(key, series(machine), attempt).unwrap();
    }
}

/// What the state says the gauge shows per machine.
fn shown(s: &State) -> Vec<Option<bool>> {
    (0..3)
        .map(|m| s.attempt(&series(m)).map(|a| !a.ran))
        .collect()
}

proptest! {
    #![proptest_config(cases())]

    /// See: #20. The same attempts, in any order, across a reopen of the file.
    #[test]
    fn the_latest_attempt_wins_whatever_the_order(
        all in attempts(),
        cut in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        // A shuffle of the same attempts (Fisher-Yates on a small seeded generator).
        let mut idx: Vec<usize> = (0..all.len()).collect();
        let mut x = seed | 1;
        for i in (1..idx.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            idx.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let cut = cut.index(idx.len() + 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let mut s = State::open(Some(&path)).unwrap();
            for &i in &idx[..cut] {
                offer(&mut s, i, all[i]);
            }
            // Dropped without anything else: what a kill -9 leaves.
        }
        let mut s = State::open(Some(&path)).unwrap();
        for &i in &idx[cut..] {
            offer(&mut s, i, all[i]);
        }
        prop_assert_eq!(shown(&s), expected(&all), "order {:?}, reopened after {}", idx, cut);
        // And after one more reopen, the same.
        drop(s);
        let s = State::open(Some(&path)).unwrap();
        prop_assert_eq!(shown(&s), expected(&all));
    }
}
