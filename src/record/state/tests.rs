//! The exactly-once rules of the state, in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::fixtures::{rkey, run, series};
use super::*;
use chrono::TimeZone;

#[test]
fn latest_by_end_time_whatever_the_order() {
    let mut s = State::default();
    let c = s
        .commit_result(rkey("b", 0), Some((series("m"), run(200, 1))))
        .unwrap();
    assert_eq!(c, Committed::Done(RunUpdate::Latest));
    let c = s
        .commit_result(rkey("a", 0), Some((series("m"), run(100, 0))))
        .unwrap();
    assert_eq!(c, Committed::Done(RunUpdate::Older));
    assert_eq!(s.last_run(&series("m")).unwrap().exit_code, 1);
    s.commit_result(rkey("c", 0), Some((series("m"), run(300, 0))))
        .unwrap();
    assert_eq!(s.last_run(&series("m")).unwrap().exit_code, 0);
    let again = s
        .commit_result(rkey("c", 0), Some((series("m"), run(400, 9))))
        .unwrap();
    assert_eq!(again, Committed::AlreadyDone);
    assert_eq!(s.last_run(&series("m")).unwrap().exit_code, 0);
}

/// The same cutoff for every tenant, at `secs` past the epoch.
fn at(secs: i64) -> impl Fn(&str) -> Option<DateTime<Utc>> {
    move |_| Some(Utc.timestamp_opt(secs, 0).unwrap())
}

#[test]
fn expiry_then_cap_oldest_first() {
    let mut s = State::default();
    for (i, m) in ["a", "b", "c", "d"].iter().enumerate() {
        s.commit_result(rkey(m, 0), Some((series(m), run(100 * (i as i64 + 1), 0))))
            .unwrap();
    }
    let removed = s.expire(&at(150), 2).unwrap();
    assert_eq!(removed, vec![series("a"), series("b")]);
    let removed = s.expire(&at(0), 1).unwrap();
    assert_eq!(removed, vec![series("c")]);
    assert_eq!(s.last_runs_len(), 1);
    // A tenant whose clock refuses the judgement keeps its series past the TTL; the cap
    // still holds. See: #24 item 7
    let removed = s.expire(&|_| None, 1).unwrap();
    assert!(removed.is_empty());
    let removed = s.expire(&|_| None, 0).unwrap();
    assert_eq!(removed, vec![series("d")]);
}

#[test]
fn done_is_once() {
    let mut s = State::default();
    let k = rkey("x", 0);
    assert!(!s.is_done(&k));
    assert!(s.mark_done(k.clone()).unwrap());
    assert!(!s.mark_done(k.clone()).unwrap());
    assert!(s.is_done(&k));
    assert!(s.mark_action_seen("t", "x").unwrap());
    assert!(!s.mark_action_seen("t", "x").unwrap());
}

#[test]
fn attempts_expire_like_the_other_series() {
    let mut s = State::default();
    for (i, m) in ["a", "b", "c"].iter().enumerate() {
        s.commit_not_run(
            rkey(m, 0),
            series(m),
            Attempt {
                at: Utc.timestamp_opt(100 * (i as i64 + 1), 0).unwrap(),
                ran: false,
                action_id: (*m).into(),
            },
        )
        .unwrap();
    }
    let removed = s.expire_attempts(&at(150), 10).unwrap();
    assert_eq!(removed, vec![series("a")]);
    let removed = s.expire_attempts(&at(0), 1).unwrap();
    assert_eq!(removed, vec![series("b")]);
    assert!(s.is_not_run_done(&rkey("a", 0)), "still counted once");
}

/// See: #34. A tenant's followed actions and latest attempts are found by their place in the
/// order, not by a scan of every tenant's: only that tenant's, whatever the other names (one
/// the prefix of another, one sorting before or after).
#[test]
fn a_tenants_entries_are_its_own_whatever_the_other_names() {
    let mut s = State::default();
    let at = Utc.timestamp_opt(1_000, 0).unwrap();
    for t in ["t", "", "tw", "s", "t\u{0}", "u"] {
        s.commit_discovery(DiscoveryUpdate {
            tenant: t.into(),
            upsert: vec![
                (
                    format!("{t}-b"),
                    Tracked {
                        created: at,
                        status: "Pending".into(),
                    },
                ),
                (
                    String::new(),
                    Tracked {
                        created: at,
                        status: "InProgress".into(),
                    },
                ),
            ],
            remove: vec![],
            watermark: None,
            reconciled: None,
        })
        .unwrap();
        for (i, m) in ["", "ws-1"].iter().enumerate() {
            let series = (t.to_string(), (*m).to_string(), "a.ps1".to_string());
            s.commit_not_run(
                ResultKey {
                    tenant: t.into(),
                    action_id: format!("{t}-{i}"),
                    index: 0,
                },
                series,
                Attempt {
                    at,
                    ran: false,
                    action_id: format!("{t}-{i}"),
                },
            )
            .unwrap();
        }
    }
    for t in ["t", "", "tw", "s", "t\u{0}", "u"] {
        let mut ids: Vec<String> = s.tracked(t).into_iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, vec![String::new(), format!("{t}-b")], "tenant {t:?}");
        let attempts = s.attempts_of(t);
        assert_eq!(attempts.len(), 2, "tenant {t:?}");
        assert!(attempts.iter().all(|((tenant, _, _), _)| tenant == t));
    }
    assert!(s.tracked("v").is_empty() && s.attempts_of("v").is_empty());
    assert!(s.tracked("tv").is_empty() && s.attempts_of("tv").is_empty());
}
