//! What discovery keeps following: which followed actions a poll reads again by id (and on
//! which endpoint), which
//! configured ids it asks for, whether a sweep is due, and what stays followed after the poll
//! (or is abandoned past the in-flight horizon, judged by the API's clock: see [`Horizon`]).
//!
//! Owns these decisions as pure functions of the followed set, what was found and the times.
//! Does not own remembering them (the state, whose [`Tracked`] record this decides about) nor
//! the order of work in a poll (the collector).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::filter::duration;
use crate::api::model::{ActionStatus, MachineAction};
use crate::record::state::Tracked;

/// Whether an action created at `created` is past the in-flight horizon at `now`.
pub fn past_horizon(
    created: DateTime<Utc>,
    horizon: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    now.signed_duration_since(created) > duration(horizon)
}

/// The in-flight horizon and the time it is judged at: the API's time, or `None` when the
/// local clock disagrees with the API's or no answer told the API's time yet (see
/// `crate::api::clock`). Nothing is abandoned without a time to judge by: a local clock that
/// jumped ahead would otherwise abandon every action in flight for good. See: #24 item 7
#[derive(Debug, Clone, Copy)]
pub struct Horizon {
    pub length: std::time::Duration,
    pub at: Option<DateTime<Utc>>,
}

impl Horizon {
    /// Whether an action created at `created` is past this horizon (never, with no time).
    pub fn passed(&self, created: DateTime<Utc>) -> bool {
        self.at
            .is_some_and(|at| past_horizon(created, self.length, at))
    }
}

/// Whether a stored status string is final (unknown values are not: followed, not forgotten).
pub fn is_final_status(status: &str) -> bool {
    ActionStatus::from(status.to_string()).is_final()
}

/// The followed actions a poll reads again by id: those its listing did not return. Right
/// after a start (`restored` false) that includes final actions whose results were still
/// queued when the exporter stopped (their results are queued again from the answer); after
/// that, only the ones not final yet.
pub fn ids_to_reread(
    tracked: &[(String, Tracked)],
    listed: &HashSet<String>,
    restored: bool,
) -> Vec<String> {
    tracked
        .iter()
        .filter(|(id, tr)| !listed.contains(id) && (!restored || !is_final_status(&tr.status)))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Whether the followed actions that changed (left the in-flight listing) are read one by
/// one on the get-by-id endpoint rather than in `id eq … or …` batches on the list endpoint
/// (#33): when there are at most `batch_size` of them (one batch's worth, which would be a
/// second list call in the poll and double the wait the cadence puts before the next one)
/// and the get-by-id budget has room for them now beside the `configured` action ids that
/// discovery also asks for there. With one budget for every endpoint (`quota.scope:
/// shared`) a call is a call, and a batch of 20 costs less.
pub fn reread_one_by_one(
    changed: usize,
    batch_size: usize,
    get_room: u32,
    configured: usize,
    shared_budget: bool,
) -> bool {
    !shared_budget
        && changed > 0
        && changed <= batch_size
        && changed.saturating_add(configured) <= get_room as usize
}

/// The configured action ids to ask for one by one: those not found by this poll's listings
/// (`known`) and not counted yet (`seen`). Each id is asked for at most once per poll.
pub fn explicit_ids_to_ask(
    configured: &[String],
    known: &HashSet<String>,
    seen: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut asked = HashSet::new();
    configured
        .iter()
        .filter(|id| !known.contains(*id) && !seen(id) && asked.insert(id.as_str()))
        .cloned()
        .collect()
}

/// Whether the full-window reconciliation sweep is due: never ran, or ran `interval` ago.
pub fn sweep_due(
    last_reconcile: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    interval: std::time::Duration,
) -> bool {
    last_reconcile.is_none_or(|r| {
        now.signed_duration_since(r)
            >= chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX)
    })
}

/// An action still not final past the in-flight horizon: no longer followed, and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    pub id: String,
    pub created: DateTime<Utc>,
    pub status: String,
}

/// What stays followed after a poll: the changes to the followed set, and what is abandoned.
#[derive(Debug, Default, PartialEq)]
pub struct Following {
    /// Followed (again, or with a new status).
    pub upsert: Vec<(String, Tracked)>,
    /// No longer followed.
    pub remove: Vec<String>,
    /// Not final past the horizon: dropped, to be counted and logged.
    pub abandoned: Vec<Abandoned>,
}

/// What stays followed once a poll has accounted what it `found`: an action not final yet,
/// within `horizon`; a final action only while some of its results are still `queued`.
/// Followed actions this poll did not find are kept, except a final one with nothing queued
/// once the followed set was read again since the start (`restored`), and one not final past
/// the horizon. `now` stands for a creation time the API did not give.
pub fn what_stays_followed<'a>(
    found: impl IntoIterator<Item = &'a MachineAction>,
    tracked: &[(String, Tracked)],
    queued: &HashSet<&str>,
    restored: bool,
    horizon: Horizon,
    now: DateTime<Utc>,
) -> Following {
    let followed: HashSet<&str> = tracked.iter().map(|(id, _)| id.as_str()).collect();
    let mut out = Following::default();
    let mut found_ids = HashSet::new();
    for a in found {
        found_ids.insert(a.id.as_str());
        if !a.is_live_response() {
            continue;
        }
        let created = a.creation_date_time_utc.unwrap_or(now);
        if !a.status.is_final() && horizon.passed(created) {
            if followed.contains(a.id.as_str()) {
                out.remove.push(a.id.clone());
            }
            out.abandoned.push(Abandoned {
                id: a.id.clone(),
                created,
                status: a.status.as_str().to_string(),
            });
            continue;
        }
        if !a.status.is_final() || queued.contains(a.id.as_str()) {
            let status = a.status.as_str().to_string();
            out.upsert.push((a.id.clone(), Tracked { created, status }));
        } else {
            out.remove.push(a.id.clone());
        }
    }
    for (id, tr) in tracked {
        if found_ids.contains(id.as_str()) {
            continue;
        }
        if is_final_status(&tr.status) {
            // Followed for its results only: forgotten once none is queued.
            if restored && !queued.contains(id.as_str()) {
                out.remove.push(id.clone());
            }
        } else if horizon.passed(tr.created) {
            out.remove.push(id.clone());
            out.abandoned.push(Abandoned {
                id: id.clone(),
                created: tr.created,
                status: tr.status.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn action(id: &str, status: &str, created: DateTime<Utc>) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "type": "LiveResponse",
            "status": status,
            "creationDateTimeUtc": created,
        }))
        .unwrap()
    }

    fn tracked(id: &str, status: &str, created: DateTime<Utc>) -> (String, Tracked) {
        let status = status.to_string();
        (id.to_string(), Tracked { created, status })
    }

    // See: #33
    #[test]
    fn changed_actions_are_read_one_by_one_when_the_get_budget_has_room() {
        // A few changed, room on the get-by-id endpoint: no second list call.
        assert!(reread_one_by_one(1, 20, 100, 0, false));
        assert!(reread_one_by_one(20, 20, 100, 0, false));
        // More than a batch: a batch is one call where they would be 21.
        assert!(!reread_one_by_one(21, 20, 100, 0, false));
        // The room now, beside the configured ids that are asked for there too.
        assert!(reread_one_by_one(5, 20, 7, 2, false));
        assert!(!reread_one_by_one(5, 20, 6, 2, false));
        assert!(!reread_one_by_one(1, 20, 0, 0, false));
        // One budget for every endpoint: a batch costs less.
        assert!(!reread_one_by_one(1, 20, 100, 0, true));
        // Nothing changed: nothing to read.
        assert!(!reread_one_by_one(0, 20, 100, 0, false));
    }

    #[test]
    fn what_is_read_again_by_id() {
        let t = now();
        let followed = vec![
            tracked("pending", "Pending", t),
            tracked("listed", "InProgress", t),
            tracked("final", "Succeeded", t),
        ];
        let listed: HashSet<String> = ["listed".to_string()].into();
        // Right after a start, final ones too (their results are queued again).
        assert_eq!(
            ids_to_reread(&followed, &listed, false),
            ["pending", "final"]
        );
        assert_eq!(ids_to_reread(&followed, &listed, true), ["pending"]);
    }

    #[test]
    fn configured_ids_are_asked_for_once_and_only_when_unknown() {
        let configured: Vec<String> = ["a", "b", "c", "a"].map(String::from).to_vec();
        let known: HashSet<String> = ["b".to_string()].into();
        assert_eq!(
            explicit_ids_to_ask(&configured, &known, |id| id == "c"),
            ["a"]
        );
    }

    // See: #9
    #[test]
    fn what_stays_followed_after_a_poll() {
        let day = Duration::from_secs(86400);
        let horizon = Horizon {
            length: 7 * day,
            at: Some(now()),
        };
        let recent = now() - chrono::Duration::hours(1);
        let old = now() - chrono::Duration::days(8);
        let found = [
            action("new-pending", "Pending", recent),
            action("done-queued", "Succeeded", recent),
            action("done", "Failed", recent),
            action("stale", "Pending", old),
        ];
        let followed = vec![
            tracked("done", "InProgress", recent),
            tracked("stale", "Pending", old),
            tracked("quiet", "Pending", recent),
            tracked("quiet-old", "InProgress", old),
            tracked("final-unread", "Succeeded", recent),
        ];
        let queued: HashSet<&str> = ["done-queued"].into();
        let f = what_stays_followed(&found, &followed, &queued, true, horizon, now());
        assert_eq!(
            f.upsert,
            vec![
                tracked("new-pending", "Pending", recent),
                tracked("done-queued", "Succeeded", recent)
            ]
        );
        assert_eq!(f.remove, ["done", "stale", "quiet-old", "final-unread"]);
        let abandoned: Vec<&str> = f.abandoned.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(abandoned, ["stale", "quiet-old"]);
        // Before the followed set was read again since the start, a final action not found
        // keeps being followed (its results are not queued yet).
        let f = what_stays_followed(&found, &followed, &queued, false, horizon, now());
        assert!(!f.remove.contains(&"final-unread".to_string()));
        // An action abandoned that was never followed is counted but not removed.
        let f = what_stays_followed(&found[3..], &[], &queued, true, horizon, now());
        assert!(f.remove.is_empty());
        assert_eq!(f.abandoned.len(), 1);
    }

    /// See: #24 item 7. Without a time to judge by (the local clock disagrees with the API's),
    /// nothing is abandoned: what is not final stays followed, however old it looks.
    #[test]
    fn nothing_is_abandoned_without_the_apis_time() {
        let horizon = Horizon {
            length: Duration::from_secs(7 * 86400),
            at: None,
        };
        let old = now() - chrono::Duration::days(8);
        let found = [action("stale", "Pending", old)];
        let followed = vec![tracked("quiet-old", "InProgress", old)];
        let f = what_stays_followed(&found, &followed, &HashSet::new(), true, horizon, now());
        assert!(f.abandoned.is_empty());
        assert!(f.remove.is_empty());
        assert_eq!(f.upsert, vec![tracked("stale", "Pending", old)]);
    }
}
