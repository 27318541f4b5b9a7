//! Discovery, the collector's side: one contract for both modes. [`TenantCollector::discover`]
//! lists (full window, or incremental: what is new and what is in flight in one listing, or
//! apart when the API refuses the combination, by id the followed actions missing from it
//! ([`reread`](super::reread)), a sweep now and then, configured ids) and returns every
//! action found once per id; [`TenantCollector::account_discovered`] counts and queues them,
//! then commits what stays followed and the watermark in one transaction.
//!
//! Owns the list calls of a poll, their order and what is remembered of them (the last
//! discovery time, the followed set, the watermark, the sweep time, a first discovery's
//! listings cut short by quota until the next poll goes on with them), the fallbacks (two
//! listings when the API refuses the combined one, id batches when it refuses the status
//! filter), the sweep's "missed" warning, the
//! in-flight gauges, and the discovery outcome (re-reads waiting, status page). Does not own the decisions themselves (filters, which
//! ids, what stays followed: the pure `discovery` module), nor counting and fetching what was
//! found (`results`).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::error::PollError;
use super::poller::TenantCollector;
use crate::api::model::MachineAction;
use crate::api::{self, ErrorKind, QuotaWait};
use crate::metrics::MachineScriptLabels;
use crate::poll::discovery::{self as disc, is_final_status};
use crate::record::state::{DiscoveryUpdate, StoreError, Tracked};

/// What one discovery pass found.
pub(super) struct Discovered {
    /// Every action found, once per id, in id order.
    actions: Vec<MachineAction>,
    /// Incremental discovery: what to commit once the actions are accounted (what stays
    /// followed depends on the results that remain queued then).
    follow: Option<FollowCommit>,
}

/// The bookkeeping an incremental pass commits after accounting.
struct FollowCommit {
    now: DateTime<Utc>,
    /// The followed set as it was when the pass started.
    tracked: Vec<(String, Tracked)>,
    watermark: Option<DateTime<Utc>>,
    reconciled: Option<DateTime<Utc>>,
    /// Every followed action was read again (not cut short by quota).
    complete: bool,
}

impl TenantCollector {
    /// One discovery pass, full window or incremental as configured. List calls may wait for
    /// quota until `deadline` (the next poll).
    pub(super) async fn discover(&mut self, deadline: Instant) -> Result<Discovered, PollError> {
        if self.tenant.selectors.discovery.incremental {
            self.discover_incremental(deadline).await
        } else {
            self.discover_full(deadline).await
        }
    }

    /// Count and queue what a pass found, then (incremental) commit what stays followed, the
    /// watermark and the sweep time in one transaction.
    pub(super) fn account_discovered(&mut self, d: Discovered) -> Result<(), StoreError> {
        self.stats.discovered += d.actions.len();
        for a in &d.actions {
            self.consider(a)?;
        }
        let Some(f) = d.follow else {
            return Ok(());
        };
        let name = self.tenant.name.clone();
        let queued: HashSet<&str> = self
            .pending
            .iter()
            .map(|p| p.key.action_id.as_str())
            .collect();
        let following = disc::what_stays_followed(
            &d.actions,
            &f.tracked,
            &queued,
            self.restored,
            disc::Horizon {
                length: self.tenant.selectors.discovery.in_flight_horizon,
                at: self.judge_time(),
            },
            f.now,
        );
        for a in &following.abandoned {
            self.abandon(&a.id, a.created, &a.status);
        }
        let update = DiscoveryUpdate {
            tenant: name.clone(),
            upsert: following.upsert,
            remove: following.remove,
            watermark: f.watermark,
            reconciled: f.reconciled,
        };
        self.shared.with_state(|s| s.commit_discovery(update))?;
        // Kept for the full-window filter (sweeps, `incremental: false`) after an outage.
        self.shared
            .with_state(|s| s.set_last_discovery(&name, f.now))?;
        // Cut short right after a start, final actions with results still to fetch may not
        // have been read again yet: they are, at the next poll.
        if f.complete {
            self.restored = true;
            self.unrestored = 0;
        }
        self.set_in_flight_gauges();
        Ok(())
    }

    /// `discovery.incremental: false`: the final actions of the full window, every poll.
    async fn discover_full(&mut self, deadline: Instant) -> Result<Discovered, PollError> {
        let started_at = self.api_now();
        let last = self
            .shared
            .with_state(|s| s.last_discovery(&self.tenant.name));
        let mut actions = self
            .client
            .list_machine_actions(
                &disc::discovery_filter(&self.tenant.selectors, started_at, last),
                QuotaWait::Until(deadline),
            )
            .await?;
        let known: HashSet<String> = actions.iter().map(|a| a.id.clone()).collect();
        let explicit = self.explicit_actions(&known, deadline).await?;
        self.stats.configured_open = explicit.iter().filter(|a| !a.status.is_final()).count();
        actions.extend(explicit);
        // Stored before the actions are processed: if we die now, the next discovery still
        // reaches back `lookback` before this one, which covers every action seen here.
        self.shared
            .with_state(|s| s.set_last_discovery(&self.tenant.name, started_at))?;
        self.note_outcome("complete".into());
        Ok(Discovered {
            actions: once_per_id(actions),
            follow: None,
        })
    }

    /// Incremental discovery (#9): list what was created since the watermark minus the
    /// overlap (every status), read the actions followed by id again in batches, sweep the full
    /// window now and then when the list budget has room, and ask for configured ids not found.
    async fn discover_incremental(&mut self, deadline: Instant) -> Result<Discovered, PollError> {
        let now = self.api_now();
        let name = self.tenant.name.clone();
        let sel = self.tenant.selectors.clone();
        let d = sel.discovery.clone();
        let (watermark, last_discovery, last_reconcile, tracked) = self.shared.with_state(|s| {
            (
                s.watermark(&name),
                s.last_discovery(&name),
                s.last_reconcile(&name),
                s.tracked(&name),
            )
        });
        if !self.restored {
            self.restore_not_run_gauges();
        }
        let bootstrap = watermark.is_none();
        // A first start lists what is in flight first and on its own, then the window (#20);
        // cut short by quota, it goes on at the next poll from the page it stopped at (#32
        // item 4), and it counts from the time it started.
        let (now, in_flight, bootstrap_listed) = if bootstrap {
            match self
                .bootstrap_listings(now, last_discovery, deadline)
                .await?
            {
                Some((started, in_flight, window)) => (started, in_flight, Some(window)),
                None => {
                    return Ok(Discovered {
                        actions: Vec::new(),
                        follow: None,
                    });
                }
            }
        } else {
            (now, Vec::new(), None)
        };
        let since = watermark.map(|w| disc::incremental_since(w, d.overlap, now));
        // With followed actions in flight from before the window, what is new and what is in
        // flight come in one listing (#20): a poll costs one call, not two.
        let combined = match since {
            Some(since) if self.rereads.is_empty() => {
                self.list_combined(&tracked, since, now, deadline).await?
            }
            _ => None,
        };
        let in_flight_answered = combined.is_some();
        let mut listed = match (combined, bootstrap_listed, since) {
            (Some(found), _, _) | (None, Some(found), _) => found,
            (None, None, since) => {
                let since = since.unwrap_or(now);
                self.client
                    .list_machine_actions(
                        &disc::incremental_filter(&sel, since),
                        QuotaWait::Until(deadline),
                    )
                    .await?
            }
        };
        // Of two answers for one action, the window's is the later one: it wins.
        let windowed: HashSet<String> = listed.iter().map(|a| a.id.clone()).collect();
        listed.extend(in_flight.into_iter().filter(|a| !windowed.contains(&a.id)));
        let listed_ids: HashSet<String> = listed.iter().map(|a| a.id.clone()).collect();
        // What a poll cut short did not read again comes first (#20 item 2), still followed
        // and not in this poll's listing.
        let followed: HashSet<&str> = tracked.iter().map(|(id, _)| id.as_str()).collect();
        let carried: Vec<String> = std::mem::take(&mut self.rereads)
            .into_iter()
            .filter(|id| followed.contains(id.as_str()) && !listed_ids.contains(id))
            .collect();
        // After the first poll, what is in flight comes in one listing (#20 item 1); only the
        // followed actions missing from it (they became final) are read again by id.
        let mut cut_short = None;
        let still_in_flight = if bootstrap || !carried.is_empty() || in_flight_answered {
            Vec::new()
        } else {
            match self
                .list_in_flight(&tracked, &listed_ids, now, deadline)
                .await
            {
                Ok(found) => found,
                Err(e @ (api::Error::Quota { .. } | api::Error::Throttled { .. })) => {
                    cut_short = Some(e);
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            }
        };
        let answered: HashSet<String> = listed_ids
            .iter()
            .cloned()
            .chain(still_in_flight.iter().map(|a| a.id.clone()))
            .collect();
        // Cut short before the in-flight listing answered, nothing is known to have changed:
        // the next poll lists the in-flight set again.
        let follow = match (&cut_short, carried.is_empty()) {
            (Some(_), _) => Vec::new(),
            (None, true) => disc::ids_to_reread(&tracked, &answered, self.restored),
            (None, false) => carried,
        };
        // Read one by one on the get-by-id endpoint when they fit its budget (#33): the poll
        // then costs one list call, and the cadence stays at its floor while results finish.
        let reread = self.reread(&follow, deadline).await?;
        let refreshed = reread.found;
        if reread.cut_short.is_some() {
            cut_short = reread.cut_short;
        }
        // A followed action read again has changed: the tenant is not quiet (#33).
        self.stats.new_actions |= !refreshed.is_empty();
        let waiting = reread.unread.len();
        if let Some(e) = &cut_short {
            tracing::info!(tenant = %name, error = %e, reread = follow.len() - waiting, waiting, "discovery cut short by quota: the rest is read again at the next poll");
        }
        self.note_discovery_outcome(cut_short.as_ref(), waiting);
        if cut_short.is_some() {
            self.rereads = reread.unread;
        }
        let mut reconciled = None;
        let mut swept = Vec::new();
        if bootstrap {
            // The first listing covered the whole window: it is this tenant's first sweep.
            reconciled = Some(now);
            self.last_sweep_actions = windowed.len();
        } else if cut_short.is_none() && disc::sweep_due(last_reconcile, now, d.reconcile_interval)
        {
            let spare = self
                .client
                .quota()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remaining(crate::quota::Endpoint::ListMachineActions, Instant::now());
            let pages = self.last_sweep_actions.max(1).div_ceil(disc::ASSUMED_PAGE);
            let in_flight = tracked
                .iter()
                .filter(|(_, t)| !is_final_status(&t.status))
                .count();
            let next_poll =
                disc::poll_cost(in_flight, d.batch_size, !self.in_flight_filter_refused);
            if disc::sweep_fits(spare, pages, next_poll) {
                let f = disc::discovery_filter(&sel, now, None);
                match self
                    .client
                    .list_machine_actions(&f, QuotaWait::Until(deadline))
                    .await
                {
                    Ok(all) => {
                        self.last_sweep_actions = all.len();
                        reconciled = Some(now);
                        swept = all;
                    }
                    // The sweep is a safety net: it is tried again at the next poll.
                    Err(e) => {
                        tracing::info!(tenant = %name, error = %e, "reconciliation sweep failed, will retry")
                    }
                }
            } else {
                tracing::debug!(tenant = %name, spare, pages, "reconciliation sweep postponed: no spare list quota");
            }
        }
        let refreshed_ids: HashSet<String> = refreshed.iter().map(|a| a.id.clone()).collect();
        for a in &swept {
            if a.is_live_response()
                && a.status.is_final()
                && !answered.contains(&a.id)
                && !refreshed_ids.contains(&a.id)
                && !self.shared.with_state(|s| s.action_seen(&name, &a.id))
            {
                self.shared.metrics.poll.record_discovery_missed(&name);
                tracing::warn!(tenant = %name, action_id = %a.id, created = ?a.creation_date_time_utc, status = a.status.as_str(), "reconciliation sweep found an action incremental discovery missed");
            }
        }
        // A configured id already found by a listing is not asked for again.
        let known: HashSet<String> = answered
            .iter()
            .chain(&refreshed_ids)
            .chain(swept.iter().map(|a| &a.id))
            .cloned()
            .collect();
        let explicit = match cut_short {
            None => self.explicit_actions(&known, deadline).await?,
            Some(_) => Vec::new(),
        };
        self.stats.configured_open = explicit.iter().filter(|a| !a.status.is_final()).count();
        let new_watermark = disc::next_watermark(
            watermark,
            listed.iter().filter_map(|a| a.creation_date_time_utc),
            now,
        )
        .or(Some(now));
        // Something was created since the last poll: the tenant is not quiet (cadence). The
        // state keeps the watermark in milliseconds.
        let ms = |w: Option<DateTime<Utc>>| w.map(|w| w.timestamp_millis());
        self.stats.new_actions |= watermark.is_none() || ms(new_watermark) > ms(watermark);
        // Everything found, once per id; a newer answer replaces an older one.
        let actions = once_per_id(
            swept
                .into_iter()
                .chain(listed)
                .chain(still_in_flight)
                .chain(refreshed)
                .chain(explicit),
        );
        Ok(Discovered {
            actions,
            follow: Some(FollowCommit {
                now,
                tracked,
                watermark: new_watermark,
                reconciled,
                complete: cut_short.is_none(),
            }),
        })
    }

    /// The in-flight set in one status-filtered listing, when some followed action in flight
    /// was not in this poll's listing (else nothing is asked: a quiet tenant costs one call).
    /// A 400 switches this collector to reading them by id; a listing refused for quota cuts
    /// the poll's discovery short (the error is returned for that).
    async fn list_in_flight(
        &mut self,
        tracked: &[(String, Tracked)],
        listed: &HashSet<String>,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<Vec<MachineAction>, api::Error> {
        let unlisted = tracked
            .iter()
            .any(|(id, t)| !is_final_status(&t.status) && !listed.contains(id));
        if self.in_flight_filter_refused || !unlisted {
            return Ok(Vec::new());
        }
        let filter = disc::in_flight_listing_filter(&self.tenant.selectors, now);
        match self.status_listing(&filter, deadline).await? {
            Ok(found) => Ok(found),
            Err(refused) => {
                self.filter_refused(&refused);
                Ok(Vec::new())
            }
        }
    }

    /// The one listing of what is new and what is in flight, when some followed action in
    /// flight was created before `since` (else the window's listing holds it: a quiet tenant
    /// costs one plain call). `None` when not sent, or refused (400): the caller then lists
    /// the two apart, and this collector does not ask again until it is started again.
    async fn list_combined(
        &mut self,
        tracked: &[(String, Tracked)],
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<Option<Vec<MachineAction>>, api::Error> {
        let older_in_flight = tracked
            .iter()
            .any(|(_, t)| !is_final_status(&t.status) && t.created < since);
        if self.in_flight_filter_refused || self.combined_filter_refused || !older_in_flight {
            return Ok(None);
        }
        let filter = disc::combined_listing_filter(&self.tenant.selectors, since, now);
        match self.status_listing(&filter, deadline).await? {
            Ok(found) => Ok(Some(found)),
            Err(refused) => {
                self.combined_filter_refused = true;
                tracing::warn!(tenant = %self.tenant.name, error = %refused, "the API refused the one listing of new and in-flight actions: they are listed apart (two list calls a poll) until the exporter restarts or a reload changes this tenant");
                Ok(None)
            }
        }
    }

    /// One listing whose filter selects by status. An answer shows the status filter as
    /// supported; a 400 (the API does not take the filter) is the inner `Err`, for the caller
    /// to fall back from; any other error is the outer one.
    async fn status_listing(
        &self,
        filter: &str,
        deadline: Instant,
    ) -> Result<Result<Vec<MachineAction>, api::Error>, api::Error> {
        match self
            .client
            .list_machine_actions(filter, QuotaWait::Until(deadline))
            .await
        {
            Ok(found) => {
                self.set_filter_supported(true);
                Ok(Ok(found))
            }
            Err(e) if refused_filter(&e) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    }

    pub(super) fn set_filter_supported(&self, supported: bool) {
        let name = &self.tenant.name;
        self.shared
            .metrics
            .poll
            .set_in_flight_filter_supported(name, supported);
        self.shared
            .update_status(name, |s| s.discovery.in_flight_filter = Some(supported));
    }

    /// The API refused the status filter: logged once, shown, and not asked again.
    pub(super) fn filter_refused(&mut self, e: &api::Error) {
        self.in_flight_filter_refused = true;
        self.set_filter_supported(false);
        tracing::warn!(tenant = %self.tenant.name, error = %e, "the API refused the status-filtered listing of actions in flight: every action in flight is read by id instead (one list call per discovery.batch_size ids) until the exporter restarts or a reload changes this tenant");
    }

    /// The discovery outcome of this poll, for `mde_liveresponse_discovery_rereads_pending`
    /// and the status page.
    fn note_discovery_outcome(&self, cut_short: Option<&api::Error>, waiting: usize) {
        let name = &self.tenant.name;
        self.shared
            .metrics
            .poll
            .set_discovery_rereads_pending(name, waiting);
        let outcome = match cut_short {
            None => "complete".to_string(),
            Some(e) => format!(
                "cut short by quota ({}): {waiting} followed actions wait to be read again at the next poll",
                e.kind().as_str()
            ),
        };
        self.shared
            .update_status(name, |s| s.discovery.rereads_pending = waiting);
        self.note_outcome(outcome);
    }

    /// The last poll's discovery outcome on the status page.
    pub(super) fn note_outcome(&self, outcome: String) {
        self.shared
            .update_status(&self.tenant.name, |s| s.discovery.outcome = outcome);
    }

    /// An action still not final past `in_flight_horizon`: counted and logged, not followed.
    fn abandon(&self, id: &str, created: DateTime<Utc>, status: &str) {
        let name = &self.tenant.name;
        self.shared.metrics.poll.record_in_flight_abandoned(name);
        tracing::warn!(tenant = %name, action_id = %id, created = %created, status, "action still not final past discovery.in_flight_horizon: no longer followed");
    }

    /// Configured action ids not found by this poll's listings (`known`) and not counted yet:
    /// asked for one by one until final.
    async fn explicit_actions(
        &self,
        known: &HashSet<String>,
        deadline: Instant,
    ) -> Result<Vec<MachineAction>, PollError> {
        let name = &self.tenant.name;
        let ids = disc::explicit_ids_to_ask(&self.tenant.selectors.action_ids, known, |id| {
            self.shared.with_state(|s| s.action_seen(name, id))
        });
        let mut out = Vec::new();
        for id in ids {
            match self
                .client
                .get_machine_action(&id, QuotaWait::Until(deadline))
                .await
            {
                Ok(a) => out.push(a),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::warn!(tenant = %name, action_id = %id, "configured action id does not exist");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// `mde_liveresponse_actions_in_flight` and the oldest creation time, from the followed set.
    fn set_in_flight_gauges(&self) {
        let name = &self.tenant.name;
        let tracked = self.shared.with_state(|s| s.tracked(name));
        let mut by_status: BTreeMap<String, i64> =
            [("Pending".to_string(), 0), ("InProgress".to_string(), 0)].into();
        let mut oldest: Option<DateTime<Utc>> = None;
        for (_, t) in tracked.iter().filter(|(_, t)| !is_final_status(&t.status)) {
            *by_status.entry(t.status.clone()).or_insert(0) += 1;
            oldest = Some(oldest.map_or(t.created, |o| o.min(t.created)));
        }
        // No oldest series rather than 0: an alert on its age must not fire on "nothing".
        self.shared.metrics.poll.set_in_flight(
            name,
            by_status,
            oldest.map(|t| t.timestamp_millis() as f64 / 1000.0),
        );
    }

    /// After a start: `mde_liveresponse_script_not_run` comes back from the state.
    fn restore_not_run_gauges(&self) {
        let name = &self.tenant.name;
        let attempts = self.shared.with_state(|s| s.attempts_of(name));
        for ((t, machine, script), a) in attempts {
            self.shared.metrics.results.set_script_not_run(
                &MachineScriptLabels {
                    tenant: t.into(),
                    machine: machine.into(),
                    script: script.into(),
                },
                !a.ran,
            );
        }
    }
}

/// A 400 to a listing: the API does not accept its filter.
pub(super) fn refused_filter(e: &api::Error) -> bool {
    matches!(e, api::Error::Status { status: 400, .. })
}

/// Actions once per id, in id order; of two answers for one id the later one wins.
fn once_per_id(actions: impl IntoIterator<Item = MachineAction>) -> Vec<MachineAction> {
    let mut by_id: BTreeMap<String, MachineAction> = BTreeMap::new();
    for a in actions {
        by_id.insert(a.id.clone(), a);
    }
    by_id.into_values().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn action(id: &str, status: &str) -> MachineAction {
        serde_json::from_value(
            serde_json::json!({"id": id, "type": "LiveResponse", "status": status}),
        )
        .unwrap()
    }

    /// A sweep, the listing, the followed set and configured ids can return one action more
    /// than once: it is accounted once, with the answer read last (the freshest status).
    #[test]
    fn every_action_found_once_the_last_answer_winning() {
        let found = once_per_id([
            action("b", "Pending"),
            action("a", "Succeeded"),
            action("b", "Succeeded"),
        ]);
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|a| (a.id.as_str(), a.status.as_str()))
            .collect();
        assert_eq!(got, [("a", "Succeeded"), ("b", "Succeeded")]);
    }
}
