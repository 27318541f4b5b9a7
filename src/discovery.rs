//! The pure core of discovery: which OData filters a poll sends, how the watermark moves, which
//! followed actions are read again by id and how they are batched into `id eq '…' or …`
//! filters under a URL-length cap, which configured action ids are asked for, what stays
//! followed after a poll (and what is abandoned past the horizon), why a `RunScript` command
//! never ran, and whether a sweep is due and there is spare list quota for it.
//!
//! Owns these decisions as functions of their inputs (times, ids, statuses, quota windows); no
//! sockets, no clock, no state file. Does not own sending (the client), remembering (the
//! state, whose [`Tracked`] record it decides about) nor the order of work in a poll (the
//! collector).
//!
//! Only documented filter fields are used: `type`, `status`, `creationDateTimeUtc`,
//! `requestor`, `machineId` and `id`, each with `eq`/`ge` joined by `and`/`or`. The API
//! documentation does not say whether `in (…)` works on `id`, so ids are batched as
//! `id eq 'a' or id eq 'b'`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::config::Selectors;
use crate::mde::model::{ActionStatus, CommandStatus, MachineAction};
use crate::state::Tracked;

/// How far back discovery reaches at most when catching up after an outage.
pub const MAX_CATCH_UP: chrono::Duration = chrono::Duration::days(30);
/// Longest URL-encoded `$filter` value an id batch may have. Proxies and IIS commonly refuse
/// query strings beyond 2,048 bytes; this leaves room for the path and `$filter=`.
pub const MAX_FILTER_URL_BYTES: usize = 1_500;
/// The page size assumed when estimating a sweep's cost from the actions it found last time.
/// The API's default page size is not documented; 100 is what the simulator serves.
pub const ASSUMED_PAGE: usize = 100;

/// `2026-11-26T12:00:00Z`, as OData datetime literals are written.
pub fn odata_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// ` and requestor eq '…' and (machineId eq '…' or …)` from the tenant's selectors.
fn selector_clauses(sel: &Selectors) -> String {
    let mut f = String::new();
    if let Some(r) = &sel.requestor {
        f.push_str(&format!(" and requestor eq {}", quote(r)));
    }
    if !sel.machine_ids.is_empty() {
        let ids: Vec<String> = sel
            .machine_ids
            .iter()
            .map(|m| format!("machineId eq {}", quote(m)))
            .collect();
        f.push_str(&format!(" and ({})", ids.join(" or ")));
    }
    f
}

fn duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1))
}

/// The start of the full window: `lookback` back from now, or from the last completed
/// discovery when that is older (after an outage), never more than [`MAX_CATCH_UP`] back. A
/// last discovery in the future (the wall clock jumped back) is ignored.
pub fn full_window_since(
    sel: &Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let lookback = duration(sel.lookback);
    let from = last_discovery.filter(|t| *t < now).unwrap_or(now);
    let floor = now.checked_sub_signed(MAX_CATCH_UP).unwrap_or(now);
    from.checked_sub_signed(lookback).unwrap_or(from).max(floor)
}

/// The full-window filter: final actions created within the window of
/// [`full_window_since`]. Every poll sent this before #9; now the reconciliation sweep and
/// `discovery.incremental: false` do.
pub fn discovery_filter(
    sel: &Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> String {
    let since = full_window_since(sel, now, last_discovery);
    format!(
        "type eq 'LiveResponse' and creationDateTimeUtc ge {} and (status eq 'Succeeded' or status eq 'Failed' or status eq 'TimeOut' or status eq 'Cancelled'){}",
        odata_time(since),
        selector_clauses(sel)
    )
}

/// The first discovery of a tenant (no watermark yet): final actions over the full window, and
/// actions still in flight over the whole `in_flight_horizon`, so that an action queued days
/// ago is followed to its end.
pub fn bootstrap_filter(
    sel: &Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> String {
    let since = full_window_since(sel, now, last_discovery);
    let horizon = duration(sel.discovery.in_flight_horizon);
    let flight_since = now.checked_sub_signed(horizon).unwrap_or(now);
    let window = if flight_since < since {
        format!(
            "(creationDateTimeUtc ge {} or (creationDateTimeUtc ge {} and (status eq 'Pending' or status eq 'InProgress')))",
            odata_time(since),
            odata_time(flight_since)
        )
    } else {
        format!("creationDateTimeUtc ge {}", odata_time(since))
    };
    format!(
        "type eq 'LiveResponse' and {window}{}",
        selector_clauses(sel)
    )
}

/// Where an incremental listing starts: the watermark minus the overlap, but never more than
/// [`MAX_CATCH_UP`] before now. The watermark holds API timestamps, so a local wall clock that
/// jumped does not move it.
pub fn incremental_since(
    watermark: DateTime<Utc>,
    overlap: std::time::Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let since = watermark
        .checked_sub_signed(duration(overlap))
        .unwrap_or(watermark);
    let floor = now.checked_sub_signed(MAX_CATCH_UP).unwrap_or(now);
    since.max(floor)
}

/// The incremental filter: every status, created since `since`.
pub fn incremental_filter(sel: &Selectors, since: DateTime<Utc>) -> String {
    format!(
        "type eq 'LiveResponse' and creationDateTimeUtc ge {}{}",
        odata_time(since),
        selector_clauses(sel)
    )
}

/// The new watermark: the newest `creationDateTimeUtc` listed so far. It never goes back, and
/// never past `now` (an API clock ahead of ours would otherwise make the overlap too short).
pub fn next_watermark(
    old: Option<DateTime<Utc>>,
    listed: impl IntoIterator<Item = DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let newest = listed.into_iter().max().map(|t| t.min(now));
    match (old, newest) {
        (Some(o), Some(n)) => Some(o.max(n)),
        (o, n) => o.or(n),
    }
}

/// `id eq 'a' or id eq 'b' …` filters, each with at most `batch_size` ids and a URL-encoded
/// length of at most `max_url_bytes` (an id too long for that alone still gets its own
/// filter). Order is kept.
pub fn id_batches(ids: &[String], batch_size: usize, max_url_bytes: usize) -> Vec<String> {
    let encoded_len = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .map(str::len)
            .sum::<usize>()
    };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut n = 0;
    for id in ids {
        let clause = format!("id eq {}", quote(id));
        let candidate = if current.is_empty() {
            clause.clone()
        } else {
            format!("{current} or {clause}")
        };
        if n > 0 && (n >= batch_size.max(1) || encoded_len(&candidate) > max_url_bytes) {
            out.push(std::mem::replace(&mut current, clause));
            n = 1;
        } else {
            current = candidate;
            n += 1;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Why a `RunScript` command of a final action produced no transcript; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRunReason {
    /// The command itself failed (for example, the script is not in the library).
    CommandFailed,
    /// The action timed out (often queued on an offline device) before the command ran.
    ActionTimeout,
    /// The action was cancelled before the command ran.
    ActionCancelled,
    /// An earlier command of the action failed, so this one never started.
    ActionFailed,
}

impl NotRunReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotRunReason::CommandFailed => "command_failed",
            NotRunReason::ActionTimeout => "action_timeout",
            NotRunReason::ActionCancelled => "action_cancelled",
            NotRunReason::ActionFailed => "action_failed",
        }
    }
}

/// Why a command of a *final* action did not run, or `None` when it completed (or the
/// combination is one the API does not produce: a command not completed in a succeeded action).
pub fn not_run_reason(action: &ActionStatus, command: &CommandStatus) -> Option<NotRunReason> {
    match command {
        CommandStatus::Completed => None,
        CommandStatus::Failed => Some(NotRunReason::CommandFailed),
        _ => match action {
            ActionStatus::TimeOut => Some(NotRunReason::ActionTimeout),
            ActionStatus::Cancelled => Some(NotRunReason::ActionCancelled),
            ActionStatus::Failed => Some(NotRunReason::ActionFailed),
            _ => None,
        },
    }
}

/// Whether an action created at `created` is past the in-flight horizon at `now`.
pub fn past_horizon(
    created: DateTime<Utc>,
    horizon: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    now.signed_duration_since(created) > duration(horizon)
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
/// the horizon.
pub fn what_stays_followed<'a>(
    found: impl IntoIterator<Item = &'a MachineAction>,
    tracked: &[(String, Tracked)],
    queued: &HashSet<&str>,
    restored: bool,
    horizon: std::time::Duration,
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
        if !a.status.is_final() && past_horizon(created, horizon, now) {
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
        } else if past_horizon(tr.created, horizon, now) {
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

/// List calls still allowed now by the list budget (the smallest `remaining` over its
/// windows; `all` for a shared budget).
pub fn spare_list_calls(windows: &[crate::quota::WindowStatus]) -> u32 {
    windows
        .iter()
        .filter(|w| w.endpoint == "list_machine_actions" || w.endpoint == "all")
        .map(|w| w.remaining)
        .min()
        .unwrap_or(0)
}

/// Whether a sweep expected to take `sweep_pages` list calls fits in `spare` while leaving
/// `next_poll_calls` for the next poll's own discovery.
pub fn sweep_fits(spare: u32, sweep_pages: usize, next_poll_calls: usize) -> bool {
    (spare as usize) >= sweep_pages.saturating_add(next_poll_calls)
}

/// The list calls one incremental poll needs: one listing plus one per batch of in-flight ids.
pub fn poll_cost(in_flight: usize, batch_size: usize) -> usize {
    1 + in_flight.div_ceil(batch_size.max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn sel() -> Selectors {
        Selectors {
            lookback: Duration::from_secs(24 * 3600),
            requestor: Some("o'brien".into()),
            machine_ids: vec!["m1".into(), "m2".into()],
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn since(filter: &str) -> &str {
        filter
            .split("creationDateTimeUtc ge ")
            .nth(1)
            .and_then(|r| r.split([' ', ')']).next())
            .unwrap()
    }

    #[test]
    fn filter_uses_documented_fields_and_escapes_quotes() {
        let f = discovery_filter(&sel(), now(), None);
        assert_eq!(
            f,
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-25T12:00:00Z and (status eq 'Succeeded' or status eq 'Failed' or status eq 'TimeOut' or status eq 'Cancelled') and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
    }

    #[test]
    fn after_an_outage_discovery_reaches_back_from_the_last_one() {
        // Down for three days: look back from the last discovery.
        let last = now() - chrono::Duration::days(3);
        assert_eq!(
            since(&discovery_filter(&sel(), now(), Some(last))),
            "2026-11-22T12:00:00Z"
        );
        // Never more than 30 days back.
        let ancient = now() - chrono::Duration::days(365);
        assert_eq!(
            since(&discovery_filter(&sel(), now(), Some(ancient))),
            "2026-10-27T12:00:00Z"
        );
    }

    #[test]
    fn a_clock_that_jumped_back_does_not_narrow_discovery() {
        // The last discovery is "in the future": the wall clock went back. Use now.
        let future = now() + chrono::Duration::hours(5);
        assert_eq!(
            since(&discovery_filter(&sel(), now(), Some(future))),
            "2026-11-25T12:00:00Z"
        );
    }

    // See: #9
    #[test]
    fn the_first_discovery_follows_in_flight_actions_over_the_whole_horizon() {
        let f = bootstrap_filter(&sel(), now(), None);
        assert_eq!(
            f,
            "type eq 'LiveResponse' and (creationDateTimeUtc ge 2026-11-25T12:00:00Z or (creationDateTimeUtc ge 2026-11-19T12:00:00Z and (status eq 'Pending' or status eq 'InProgress'))) and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
        // A lookback longer than the horizon needs no second clause.
        let mut long = sel();
        long.lookback = Duration::from_secs(10 * 86400);
        long.requestor = None;
        long.machine_ids.clear();
        assert_eq!(
            bootstrap_filter(&long, now(), None),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-16T12:00:00Z"
        );
    }

    // See: #9
    #[test]
    fn incremental_lists_every_status_since_the_watermark_minus_the_overlap() {
        let wm = Utc.with_ymd_and_hms(2026, 11, 26, 11, 58, 30).unwrap();
        let s = incremental_since(wm, Duration::from_secs(300), now());
        assert_eq!(
            incremental_filter(&sel(), s),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-26T11:53:30Z and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
        // A watermark from long ago (a long outage) is capped at 30 days.
        let old = now() - chrono::Duration::days(90);
        assert_eq!(
            incremental_since(old, Duration::from_secs(300), now()),
            now() - MAX_CATCH_UP
        );
        // Our wall clock behind the API's: the API's watermark is kept as is.
        let ahead = now() + chrono::Duration::hours(1);
        assert_eq!(
            incremental_since(ahead, Duration::from_secs(300), now()),
            ahead - chrono::Duration::minutes(5)
        );
    }

    #[test]
    fn the_watermark_only_moves_forward_and_not_past_now() {
        let t = |m: u32| Utc.with_ymd_and_hms(2026, 11, 26, 11, m, 0).unwrap();
        assert_eq!(next_watermark(None, [], now()), None);
        assert_eq!(next_watermark(None, [t(1), t(5), t(3)], now()), Some(t(5)));
        assert_eq!(next_watermark(Some(t(7)), [t(5)], now()), Some(t(7)));
        assert_eq!(next_watermark(Some(t(7)), [], now()), Some(t(7)));
        let future = now() + chrono::Duration::hours(2);
        assert_eq!(next_watermark(Some(t(7)), [future], now()), Some(now()));
    }

    // See: #9
    #[test]
    fn id_batches_respect_the_count_and_the_url_length() {
        let ids: Vec<String> = (0..45)
            .map(|i| format!("6f0c2b1e-8d3a-4c55-9a0e-3b7d41f2c{i:03}"))
            .collect();
        let batches = id_batches(&ids, 20, MAX_FILTER_URL_BYTES);
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].matches("id eq").count(), 5);
        assert!(batches[0].starts_with("id eq '6f0c2b1e-8d3a-4c55-9a0e-3b7d41f2c000' or id eq "));
        // Every id once, in order.
        let back: Vec<String> = batches
            .iter()
            .flat_map(|b| b.split(" or "))
            .map(|c| {
                c.trim_start_matches("id eq '")
                    .trim_end_matches('\'')
                    .to_string()
            })
            .collect();
        assert_eq!(back, ids);
        // A tight URL cap splits sooner, whatever the batch size.
        let short = id_batches(&ids, 50, 200);
        assert!(short.len() > 3);
        for b in &short {
            let len: usize = url::form_urlencoded::byte_serialize(b.as_bytes())
                .map(str::len)
                .sum();
            assert!(len <= 200, "{len}");
        }
        // Quotes are doubled, and nothing gives no filter.
        assert_eq!(id_batches(&["a'b".into()], 5, 100), vec!["id eq 'a''b'"]);
        assert!(id_batches(&[], 5, 100).is_empty());
    }

    // See: #9
    #[test]
    fn why_a_script_did_not_run() {
        use ActionStatus as A;
        use CommandStatus as C;
        assert_eq!(not_run_reason(&A::Succeeded, &C::Completed), None);
        assert_eq!(not_run_reason(&A::Failed, &C::Completed), None);
        assert_eq!(
            not_run_reason(&A::Failed, &C::Failed),
            Some(NotRunReason::CommandFailed)
        );
        assert_eq!(
            not_run_reason(&A::Failed, &C::Created),
            Some(NotRunReason::ActionFailed)
        );
        assert_eq!(
            not_run_reason(&A::TimeOut, &C::Created),
            Some(NotRunReason::ActionTimeout)
        );
        assert_eq!(
            not_run_reason(&A::Cancelled, &C::InProgress),
            Some(NotRunReason::ActionCancelled)
        );
        assert_eq!(
            not_run_reason(&A::TimeOut, &C::Failed),
            Some(NotRunReason::CommandFailed)
        );
        assert_eq!(not_run_reason(&A::Succeeded, &C::Created), None);
    }

    #[test]
    fn horizon_and_sweep_arithmetic() {
        let day = Duration::from_secs(86400);
        assert!(!past_horizon(
            now() - chrono::Duration::days(3),
            7 * day,
            now()
        ));
        assert!(past_horizon(
            now() - chrono::Duration::days(8),
            7 * day,
            now()
        ));
        let hour = Duration::from_secs(3600);
        assert!(sweep_due(None, now(), hour));
        assert!(!sweep_due(
            Some(now() - chrono::Duration::minutes(59)),
            now(),
            hour
        ));
        assert!(sweep_due(
            Some(now() - chrono::Duration::hours(1)),
            now(),
            hour
        ));
        assert_eq!(poll_cost(0, 20), 1);
        assert_eq!(poll_cost(21, 20), 3);
        let w = |endpoint, remaining| crate::quota::WindowStatus {
            endpoint,
            window: "1m",
            limit: 100,
            effective: 100,
            used: 100 - remaining,
            remaining,
        };
        let windows = [
            w("list_machine_actions", 40),
            w("list_machine_actions", 90),
            w("get_result_download_link", 0),
        ];
        assert_eq!(spare_list_calls(&windows), 40);
        assert!(sweep_fits(40, 30, 10));
        assert!(!sweep_fits(40, 31, 10));
        assert_eq!(spare_list_calls(&[w("all", 7)]), 7);
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
        let horizon = 7 * day;
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
}
