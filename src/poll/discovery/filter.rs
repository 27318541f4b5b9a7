//! The OData filters discovery sends (the full window, the bootstrap, the incremental
//! listing, the in-flight set, id batches under a URL-length cap) and how the watermark moves.
//!
//! Owns these as pure functions of the selectors, times and ids. Does not own which ids are
//! read again nor what stays followed (`follow`), nor sending them (the collector).
//!
//! Only documented filter fields are used: `type`, `status`, `creationDateTimeUtc`,
//! `requestor`, `machineId` and `id`, each with `eq`/`ge` joined by `and`/`or`. The API
//! documentation does not say whether `in (…)` works on `id`, so ids are batched as
//! `id eq 'a' or id eq 'b'`.

use chrono::{DateTime, Utc};

use crate::config::Selectors;

/// How far back discovery reaches at most when catching up after an outage.
pub const MAX_CATCH_UP: chrono::Duration = chrono::Duration::days(30);
/// Longest URL-encoded `$filter` value an id batch may have. Proxies and IIS commonly refuse
/// query strings beyond 2,048 bytes; this leaves room for the path and `$filter=`.
pub const MAX_FILTER_URL_BYTES: usize = 1_500;

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

pub(super) fn duration(d: std::time::Duration) -> chrono::Duration {
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

/// The first discovery of a tenant (no watermark yet), its first listing: the actions still
/// in flight (`Pending`, `InProgress`) created within the whole `in_flight_horizon`, so that an
/// action queued days ago is followed to its end. Listed first and on its own (#20): were it
/// part of the window's listing, an old action turning final while the window's pages are
/// read would leave the answer between two page requests (the status is evaluated per
/// request), shift the pages after it, and be listed nowhere. `None` when the window reaches
/// back as far as the horizon: the window's listing then holds every in-flight action.
pub fn in_flight_filter(
    sel: &Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> Option<String> {
    let since = full_window_since(sel, now, last_discovery);
    let flight_since = in_flight_since(sel, now);
    (flight_since < since).then(|| in_flight_created_since(sel, flight_since))
}

/// The start of the in-flight set: `in_flight_horizon` back from now.
pub fn in_flight_since(sel: &Selectors, now: DateTime<Utc>) -> DateTime<Utc> {
    let horizon = duration(sel.discovery.in_flight_horizon);
    now.checked_sub_signed(horizon).unwrap_or(now)
}

/// Every poll after the first, the in-flight set in one listing (#20): the actions still
/// `Pending` or `InProgress` created within `in_flight_horizon`. A followed action missing
/// from its answer became final (or left the horizon): only those are read again by id, so a
/// poll costs one or two listings and a batch per 20 changed actions, not per 20 in flight.
pub fn in_flight_listing_filter(sel: &Selectors, now: DateTime<Utc>) -> String {
    in_flight_created_since(sel, in_flight_since(sel, now))
}

fn in_flight_created_since(sel: &Selectors, since: DateTime<Utc>) -> String {
    format!(
        "type eq 'LiveResponse' and creationDateTimeUtc ge {} and (status eq 'Pending' or status eq 'InProgress'){}",
        odata_time(since),
        selector_clauses(sel)
    )
}

/// The first discovery's second listing: every action of the full window, whatever its
/// status, so that none leaves the answer while its pages are read (#20).
pub fn bootstrap_filter(
    sel: &Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> String {
    incremental_filter(sel, full_window_since(sel, now, last_discovery))
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

/// What is new and what is in flight in one listing (#20): every status created since
/// `since`, or `Pending`/`InProgress` created within `in_flight_horizon`. A poll with actions in
/// flight then costs one listing instead of two, so half the list budget allows a poll every
/// 5 s rather than every 9.6 s. The documentation lists `or` and parentheses but does not say
/// the API accepts a status clause nested in an `or` of dates: a 400 to this filter falls
/// back to the two listings ([`incremental_filter`], [`in_flight_listing_filter`]).
pub fn combined_listing_filter(
    sel: &Selectors,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    format!(
        "type eq 'LiveResponse' and (creationDateTimeUtc ge {} or (creationDateTimeUtc ge {} and (status eq 'Pending' or status eq 'InProgress'))){}",
        odata_time(since),
        odata_time(in_flight_since(sel, now)),
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
        assert_eq!(
            in_flight_filter(&sel(), now(), None).unwrap(),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-19T12:00:00Z and (status eq 'Pending' or status eq 'InProgress') and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
        // See: #20. The window is listed on its own, whatever the status.
        assert_eq!(
            bootstrap_filter(&sel(), now(), None),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-25T12:00:00Z and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
        // A lookback longer than the horizon needs no in-flight listing.
        let mut long = sel();
        long.lookback = Duration::from_secs(10 * 86400);
        long.requestor = None;
        long.machine_ids.clear();
        assert_eq!(in_flight_filter(&long, now(), None), None);
        // See: #20. Every later poll lists the in-flight set over the horizon the same way.
        assert_eq!(
            in_flight_listing_filter(&long, now()),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-19T12:00:00Z and (status eq 'Pending' or status eq 'InProgress')"
        );
        assert_eq!(
            bootstrap_filter(&long, now(), None),
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-16T12:00:00Z"
        );
    }

    // See: #20. What is new and what is in flight in one listing, selectors applied to both.
    #[test]
    fn a_poll_with_actions_in_flight_lists_new_and_in_flight_in_one_filter() {
        let since = Utc.with_ymd_and_hms(2026, 11, 26, 11, 58, 0).unwrap();
        assert_eq!(
            combined_listing_filter(&sel(), since, now()),
            "type eq 'LiveResponse' and (creationDateTimeUtc ge 2026-11-26T11:58:00Z or (creationDateTimeUtc ge 2026-11-19T12:00:00Z and (status eq 'Pending' or status eq 'InProgress'))) and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
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
}
