//! The poll loop of one tenant: discover finished Live Response actions, fetch each command
//! result once, count it, and keep the per-machine gauges on the latest run.
//!
//! Owns the order of work within a poll (discovery, then results oldest first while the quota
//! has room, and again as soon as a `Retry-After` ends), the exactly-once accounting of
//! results and of RunScript commands that never ran, the in-flight gauges and the poll
//! metrics, which are recorded whether the poll succeeds or not. Does not own HTTP, quota
//! arithmetic, parsing, nor the filter and watermark arithmetic of discovery (`discovery`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Tenant;
use crate::discovery::{self as disc, NotRunReason};
use crate::events::{ResultFetchFailed, ScriptNotRun, TranscriptRetrieved};
use crate::mde::model::{CommandType, MachineAction};
use crate::mde::{self, Client, ErrorKind, QuotaWait};
use crate::metrics::{CommandLabels, MachineScriptLabels, StatusLabels, tenant};
use crate::shared::{RecentTranscript, Shared};
use crate::state::{
    Attempt, Committed, DiscoveryUpdate, LastRun, ResultKey, RunUpdate, StoreError, Tracked,
};

/// Why a poll (or one result) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] mde::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing could be asked of the API this poll: every call was throttled (a 429, or
    /// the quota blocked after one) or had no room in the budget.
    #[error("no API call got through this poll: {0}")]
    Throttled(mde::Error),
}

pub use crate::discovery::discovery_filter;
/// Longest wait between two tries of a result that fails transiently.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How many tries a result gets for a kind of permanent failure before it is given up.
/// Transient failures (5xx, timeouts, transport and token errors) have no count: they are
/// retried until the result leaves the in-flight horizon (see [`retry_decision`]).
fn attempts_allowed(e: &mde::Error) -> u32 {
    match e.kind() {
        // The cap will not change; a link to a foreign host will not become trustworthy.
        ErrorKind::TooLarge | ErrorKind::UntrustedLink => 1,
        // Usually permanent, but a damaged download, a result not yet visible to the API or
        // a link refused twice can heal: one more try, then give up.
        ErrorKind::Malformed
        | ErrorKind::NotFound
        | ErrorKind::Forbidden
        | ErrorKind::ExpiredLink => 2,
        _ if e.is_transient() => u32::MAX,
        _ => 1,
    }
}

/// The wait before the next try of a result that failed `attempts` times in a row: one poll
/// interval, doubling with each failure, at most `MAX_RETRY_DELAY` (but never less than one
/// poll). A five-minute outage thus costs a handful of tries per result, not one per poll.
pub fn retry_delay(attempts: u32, poll_interval: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    poll_interval
        .saturating_mul(1u32 << doublings)
        .min(MAX_RETRY_DELAY.max(poll_interval))
}

/// What to do with a result whose fetch just failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// Try again, not before this long from now.
    After(Duration),
    /// Give it up (and count it by its reason).
    GiveUp,
}

/// Pure retry policy. Permanent answers give a result up after `attempts_allowed` tries;
/// transient ones are retried with backoff for as long as the result is within the in-flight
/// horizon (`age`: time since its command ended).
pub fn retry_decision(
    kind_limit: u32,
    transient: bool,
    attempts: u32,
    age: Duration,
    horizon: Duration,
    poll_interval: Duration,
) -> Retry {
    let exhausted = if transient {
        age >= horizon
    } else {
        attempts >= kind_limit
    };
    if exhausted {
        Retry::GiveUp
    } else {
        Retry::After(retry_delay(attempts, poll_interval))
    }
}

/// What a result download gave.
enum Fetched {
    Transcript(crate::mde::model::Transcript),
    /// A `GetFile` result's size.
    File(u64),
}

/// A result waiting to be fetched.
#[derive(Debug, Clone)]
struct Pending {
    key: ResultKey,
    kind: CommandType,
    script: Option<String>,
    machine: String,
    end_time: Option<DateTime<Utc>>,
    /// When this exporter first queued it (the age of a result without an `endTime`).
    queued_at: DateTime<Utc>,
    attempts: u32,
    /// Not tried again before this instant (backoff after a transient failure).
    not_before: Option<Instant>,
    /// The download link of an earlier try, reused while it is valid.
    link: Option<crate::mde::model::DownloadLink>,
}

/// The results waiting to be fetched: a list kept in fetch order, and its keys, so that asking
/// "is this one already queued?" costs O(1) whatever the backlog.
#[derive(Debug, Default)]
struct PendingQueue {
    items: Vec<Pending>,
    keys: HashSet<ResultKey>,
}

impl PendingQueue {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn contains(&self, key: &ResultKey) -> bool {
        self.keys.contains(key)
    }

    fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.items.iter()
    }

    /// Queue a result unless it is already queued.
    fn push_new(&mut self, p: Pending) {
        if self.keys.insert(p.key.clone()) {
            self.items.push(p);
        }
    }

    /// Take every item out in fetch order (oldest command first); their keys stay, since each
    /// is either put back with [`Self::put_back`] or settled with [`Self::settled`].
    fn take_sorted(&mut self) -> VecDeque<Pending> {
        self.items
            .sort_by(|a, b| a.end_time.cmp(&b.end_time).then(a.key.cmp(&b.key)));
        std::mem::take(&mut self.items).into()
    }

    fn put_back(&mut self, p: Pending) {
        self.items.push(p);
    }

    /// A result taken out is done (counted or given up): forget its key.
    fn settled(&mut self, key: &ResultKey) {
        self.keys.remove(key);
    }
}

/// What one drain did.
#[derive(Debug, Default)]
struct Drained {
    /// Results counted or given up.
    settled: usize,
    /// Fetching stopped for quota or a 429 (with that error).
    stopped_by: Option<mde::Error>,
}

/// The collector of one tenant.
pub struct TenantCollector {
    tenant: Tenant,
    client: Client,
    shared: Arc<Shared>,
    pending: PendingQueue,
    /// What the poll in progress did, for its log line.
    stats: PollStats,
    /// When result fetching may go on after a 429 or a full budget, before the next poll.
    resume_at: Option<Instant>,
    /// The actions followed by id were read again since this collector started, so the
    /// results of final ones are queued again (they are not in `pending` after a restart).
    restored: bool,
    /// Actions the last full-window listing returned: the next sweep's expected cost.
    last_sweep_actions: usize,
    /// Final actions followed for their results that were not read again yet since the
    /// start: each has at least one result waiting, which `pending` does not hold yet.
    unrestored: usize,
}

/// Counts for the one info line each poll writes.
#[derive(Debug, Default, Clone, Copy)]
struct PollStats {
    discovered: usize,
    fetched: usize,
}

impl TenantCollector {
    pub fn new(tenant: Tenant, client: Client, shared: Arc<Shared>) -> Self {
        TenantCollector {
            tenant,
            client,
            shared,
            pending: PendingQueue::default(),
            stats: PollStats::default(),
            resume_at: None,
            restored: false,
            last_sweep_actions: 0,
            unrestored: 0,
        }
        .with_unrestored()
    }

    /// Count the final actions the state says still have results waiting.
    fn with_unrestored(mut self) -> Self {
        let name = self.tenant.name.clone();
        self.unrestored = self
            .shared
            .with_state(|s| s.tracked(&name))
            .iter()
            .filter(|(_, t)| is_final_status(&t.status))
            .count();
        self
    }

    /// Finished results waiting: those queued, and at least one per followed final action not
    /// read again yet since the start (`mde_liveresponse_pending_results`).
    fn waiting(&self) -> usize {
        self.pending.len() + self.unrestored
    }

    /// Poll every `poll_interval` until `shutdown` says stop. A poll in flight is dropped at
    /// shutdown; nothing is lost, since a result is marked done only once it is counted.
    ///
    /// A poll's future is boxed for the time it runs: the task itself, which lives as long as
    /// the tenant, then holds the collector and a timer between polls instead of room for the
    /// deepest poll (11 KiB a tenant before), which with polls spread over the interval
    /// almost every tenant is not in. See: #11
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.shared.settings.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let resume = self.resume_at;
            let resumed = tokio::select! {
                _ = ticks.tick() => false,
                // A Retry-After (or a full budget) ended with results waiting: go on now,
                // not at the next poll.
                _ = tokio::time::sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => true,
                _ = shutdown.changed() => return,
            };
            if resumed {
                self.resume_at = None;
                tokio::select! {
                    _ = Box::pin(self.resume_fetching()) => {}
                    _ = shutdown.changed() => return,
                }
            } else {
                tokio::select! {
                    _ = Box::pin(self.poll_once()) => {}
                    _ = shutdown.changed() => return,
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Fetch waiting results between polls, once the quota has room again.
    async fn resume_fetching(&mut self) {
        if let Err(e) = self.drain().await {
            tracing::warn!(tenant = %self.tenant.name, error = %e, "result fetching failed");
        }
        self.shared
            .metrics
            .pending_results
            .get_or_create(&tenant(&self.tenant.name))
            .set(self.waiting() as i64);
        let pending = self.waiting();
        self.shared
            .update_status(&self.tenant.name, |s| s.pending = pending);
    }

    /// One poll; always records `mde_exporter_poll_success` and the duration.
    #[tracing::instrument(name = "poll", skip(self), fields(tenant = %self.tenant.name, trace_id = tracing::field::Empty, span_id = tracing::field::Empty))]
    pub async fn poll_once(&mut self) -> Result<(), PollError> {
        let span = tracing::Span::current();
        crate::telemetry::record_ids(&span);
        let started = Instant::now();
        self.stats = PollStats::default();
        self.resume_at = None;
        let result = self.poll_inner(started).await;
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, &e.to_string());
        }
        let m = &self.shared.metrics;
        let labels = tenant(&self.tenant.name);
        m.poll_duration.get_or_create(&labels).observe(
            started.elapsed().as_secs_f64(),
            crate::telemetry::current_trace_label(),
            None,
        );
        m.poll_success
            .get_or_create(&labels)
            .set(i64::from(result.is_ok()));
        if result.is_ok() {
            m.last_poll_success
                .get_or_create(&labels)
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        m.pending_results
            .get_or_create(&labels)
            .set(self.pending.len() as i64);
        let has_token = self.client.has_token().await;
        let pending = self.pending.len();
        let error = result.as_ref().err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::warn!(tenant = %self.tenant.name, error = %e, "poll failed");
        }
        self.log_poll(started, error.is_none(), pending);
        self.shared.update_status(&self.tenant.name, |s| {
            s.polls += 1;
            s.last_poll_at = Some(Utc::now());
            s.last_poll_ok = error.is_none();
            if let Some(e) = &error {
                s.push_error(format!("poll failed: {e}"));
            }
            s.last_error = error;
            s.has_token = has_token;
            s.pending = pending;
        });
        self.shared.housekeeping();
        result
    }

    /// One info line per poll: what was found and fetched, what waits, the result-link quota
    /// left (the smallest of its windows) and how long it took.
    fn log_poll(&self, started: Instant, ok: bool, waiting: usize) {
        let link = crate::quota::Endpoint::GetResultDownloadLink.as_str();
        let quota_left = self
            .shared
            .quota_status_of(&self.tenant.name)
            .and_then(|ws| {
                ws.iter()
                    .filter(|w| w.endpoint == link || w.endpoint == "all")
                    .map(|w| w.remaining)
                    .min()
            });
        tracing::info!(
            tenant = %self.tenant.name,
            ok,
            discovered = self.stats.discovered,
            fetched = self.stats.fetched,
            waiting,
            quota_left,
            duration_s = started.elapsed().as_secs_f64(),
            "poll done"
        );
    }

    async fn poll_inner(&mut self, started: Instant) -> Result<(), PollError> {
        self.client.ensure_token().await?;
        // Discovery may wait for quota, but not past the next poll.
        let deadline = started + self.shared.settings.poll_interval;
        let discovered = if self.tenant.selectors.discovery.incremental {
            self.discover_incremental(deadline).await
        } else {
            self.discover(deadline).await
        };
        let actions = match discovered {
            Ok(a) => {
                // Incremental discovery counted what it found itself.
                self.stats.discovered += a.len();
                a
            }
            // No room for discovery before the next poll (our budget is spent, or a 429
            // blocked the endpoint). Known results are still fetched; if none could be either,
            // nothing got through and the poll is not a success: a steady storm of 429s must
            // show in `mde_exporter_poll_success`, not hide behind it.
            Err(PollError::Api(e @ (mde::Error::Quota { .. } | mde::Error::Throttled { .. }))) => {
                tracing::info!(tenant = %self.tenant.name, error = %e, "discovery deferred: no API quota left before the next poll; consider a longer poll_interval");
                let drained = self.drain().await?;
                if drained.settled == 0 {
                    return Err(PollError::Throttled(drained.stopped_by.unwrap_or(e)));
                }
                return Ok(());
            }
            Err(e) => {
                // Results already known are still fetched: discovery and result links have
                // separate budgets, and nothing found earlier should wait on a failed list.
                self.drain().await?;
                return Err(e);
            }
        };
        for a in &actions {
            self.consider(a)?;
        }
        self.drain().await.map(|_| ())
    }

    async fn discover(&mut self, deadline: Instant) -> Result<Vec<MachineAction>, PollError> {
        let started_at = Utc::now();
        let last = self
            .shared
            .with_state(|s| s.last_discovery(&self.tenant.name));
        let mut actions = self
            .client
            .list_machine_actions(
                &discovery_filter(&self.tenant.selectors, started_at, last),
                QuotaWait::Until(deadline),
            )
            .await?;
        // Explicit ids are asked for until they are final; then never again.
        let name = self.tenant.name.clone();
        let explicit: Vec<String> = self
            .tenant
            .selectors
            .action_ids
            .iter()
            .filter(|id| !actions.iter().any(|a| &a.id == *id))
            .filter(|id| !self.shared.with_state(|s| s.action_seen(&name, id)))
            .cloned()
            .collect();
        for id in explicit {
            match self
                .client
                .get_machine_action(&id, QuotaWait::Until(deadline))
                .await
            {
                Ok(a) => actions.push(a),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::warn!(tenant = %name, action_id = %id, "configured action id does not exist");
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Stored before the actions are processed: if we die now, the next discovery still
        // reaches back `lookback` before this one, which covers every action seen here.
        self.shared
            .with_state(|s| s.set_last_discovery(&self.tenant.name, started_at))?;
        Ok(actions)
    }

    /// Incremental discovery (#9): list what was created since the watermark minus the
    /// overlap (every status), read the actions followed by id again in batches, sweep the full
    /// window now and then when the list budget has room, count and queue what is final, and
    /// commit the followed set and the watermark in one transaction. Returns nothing left to
    /// consider: it considers what it finds itself, because what stays followed depends on
    /// the results that remain queued.
    async fn discover_incremental(
        &mut self,
        deadline: Instant,
    ) -> Result<Vec<MachineAction>, PollError> {
        let now = Utc::now();
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
        let filter = match watermark {
            Some(w) => disc::incremental_filter(&sel, disc::incremental_since(w, d.overlap, now)),
            None => disc::bootstrap_filter(&sel, now, last_discovery),
        };
        let listed = self
            .client
            .list_machine_actions(&filter, QuotaWait::Until(deadline))
            .await?;
        let listed_ids: HashSet<String> = listed.iter().map(|a| a.id.clone()).collect();
        // Follow by id what is not final yet; after a start, also final actions whose results
        // were still queued when the exporter stopped.
        let follow: Vec<String> = tracked
            .iter()
            .filter(|(id, tr)| {
                !listed_ids.contains(id) && (!self.restored || !is_final_status(&tr.status))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut refreshed = Vec::new();
        for batch in disc::id_batches(&follow, d.batch_size, disc::MAX_FILTER_URL_BYTES) {
            refreshed.extend(
                self.client
                    .list_machine_actions(&batch, QuotaWait::Until(deadline))
                    .await?,
            );
        }
        let mut reconciled = None;
        let mut swept = Vec::new();
        if bootstrap {
            // The first listing covered the whole window: it is this tenant's first sweep.
            reconciled = Some(now);
            self.last_sweep_actions = listed.len();
        } else if last_reconcile.is_none_or(|r| {
            now.signed_duration_since(r)
                >= chrono::Duration::from_std(d.reconcile_interval).unwrap_or(chrono::Duration::MAX)
        }) {
            let spare = self
                .shared
                .quota_status_of(&name)
                .map(|w| disc::spare_list_calls(&w))
                .unwrap_or(0);
            let pages = self.last_sweep_actions.max(1).div_ceil(disc::ASSUMED_PAGE);
            let in_flight = tracked
                .iter()
                .filter(|(_, t)| !is_final_status(&t.status))
                .count();
            if disc::sweep_fits(spare, pages, disc::poll_cost(in_flight, d.batch_size)) {
                let f = discovery_filter(&sel, now, None);
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
        let explicit = self.explicit_actions(&listed, deadline).await?;

        // Everything found, once per id.
        let refreshed_ids: HashSet<String> = refreshed.iter().map(|a| a.id.clone()).collect();
        let mut found: BTreeMap<String, MachineAction> = BTreeMap::new();
        for a in swept {
            if a.is_live_response()
                && a.status.is_final()
                && !listed_ids.contains(&a.id)
                && !refreshed_ids.contains(&a.id)
                && !self.shared.with_state(|s| s.action_seen(&name, &a.id))
            {
                self.shared
                    .metrics
                    .discovery_missed
                    .get_or_create(&tenant(&name))
                    .inc();
                tracing::warn!(tenant = %name, action_id = %a.id, created = ?a.creation_date_time_utc, status = a.status.as_str(), "reconciliation sweep found an action incremental discovery missed");
            }
            found.insert(a.id.clone(), a);
        }
        let new_watermark = disc::next_watermark(
            watermark,
            listed.iter().filter_map(|a| a.creation_date_time_utc),
            now,
        )
        .or(Some(now));
        for a in listed.into_iter().chain(refreshed).chain(explicit) {
            found.insert(a.id.clone(), a);
        }
        self.stats.discovered = found.len();
        for a in found.values() {
            self.consider(a)?;
        }

        // What stays followed: not final yet, or final with results still queued.
        let queued: HashSet<&str> = self
            .pending
            .iter()
            .map(|p| p.key.action_id.as_str())
            .collect();
        let mut update = DiscoveryUpdate {
            tenant: name.clone(),
            watermark: new_watermark,
            reconciled,
            ..Default::default()
        };
        for a in found.values().filter(|a| a.is_live_response()) {
            let created = a.creation_date_time_utc.unwrap_or(now);
            if !a.status.is_final() && disc::past_horizon(created, d.in_flight_horizon, now) {
                // Still not final past the horizon: stop following it, loudly.
                if tracked.iter().any(|(id, _)| id == &a.id) {
                    update.remove.push(a.id.clone());
                }
                self.abandon(&a.id, created, a.status.as_str());
                continue;
            }
            let keep = !a.status.is_final() || queued.contains(a.id.as_str());
            if keep {
                update.upsert.push((
                    a.id.clone(),
                    Tracked {
                        created,
                        status: a.status.as_str().to_string(),
                    },
                ));
            } else {
                update.remove.push(a.id.clone());
            }
        }
        for (id, tr) in &tracked {
            if found.contains_key(id) {
                continue;
            }
            if is_final_status(&tr.status) {
                // Followed for its results only: forget it once none is queued.
                if self.restored && !queued.contains(id.as_str()) {
                    update.remove.push(id.clone());
                }
            } else if disc::past_horizon(tr.created, d.in_flight_horizon, now) {
                update.remove.push(id.clone());
                self.abandon(id, tr.created, &tr.status);
            }
        }
        self.shared.with_state(|s| s.commit_discovery(update))?;
        // Kept for the full-window filter (sweeps, `incremental: false`) after an outage.
        self.shared
            .with_state(|s| s.set_last_discovery(&name, now))?;
        self.restored = true;
        self.unrestored = 0;
        self.set_in_flight_gauges();
        Ok(Vec::new())
    }

    /// An action still not final past `in_flight_horizon`: counted and logged, not followed.
    fn abandon(&self, id: &str, created: DateTime<Utc>, status: &str) {
        let name = &self.tenant.name;
        self.shared
            .metrics
            .in_flight_abandoned
            .get_or_create(&tenant(name))
            .inc();
        tracing::warn!(tenant = %name, action_id = %id, created = %created, status, "action still not final past discovery.in_flight_horizon: no longer followed");
    }

    /// Configured action ids not listed yet and not counted: asked for one by one until final.
    async fn explicit_actions(
        &self,
        listed: &[MachineAction],
        deadline: Instant,
    ) -> Result<Vec<MachineAction>, PollError> {
        let name = &self.tenant.name;
        let ids: Vec<String> = self
            .tenant
            .selectors
            .action_ids
            .iter()
            .filter(|id| !listed.iter().any(|a| &a.id == *id))
            .filter(|id| !self.shared.with_state(|s| s.action_seen(name, id)))
            .cloned()
            .collect();
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
        let m = &self.shared.metrics;
        for (status, n) in by_status {
            m.actions_in_flight
                .get_or_create(&StatusLabels {
                    tenant: name.clone(),
                    status,
                })
                .set(n);
        }
        match oldest {
            Some(t) => {
                m.in_flight_oldest
                    .get_or_create(&tenant(name))
                    .set(t.timestamp_millis() as f64 / 1000.0);
            }
            // No series rather than 0: an alert on its age must not fire on "nothing".
            None => {
                m.in_flight_oldest.remove(&tenant(name));
            }
        }
    }

    /// After a start: `mde_liveresponse_script_not_run` comes back from the state.
    fn restore_not_run_gauges(&self) {
        let name = &self.tenant.name;
        let attempts = self.shared.with_state(|s| s.attempts().clone());
        for ((t, machine, script), a) in attempts.into_iter().filter(|((t, _, _), _)| t == name) {
            self.shared
                .metrics
                .script_not_run
                .get_or_create(&MachineScriptLabels {
                    tenant: t,
                    machine,
                    script,
                })
                .set(i64::from(!a.ran));
        }
    }

    /// Whether a RunScript command's script is one the tenant watches.
    fn wants_script(&self, name: Option<&str>) -> bool {
        let scripts = &self.tenant.selectors.scripts;
        scripts.is_empty() || name.is_some_and(|n| scripts.iter().any(|s| s == n))
    }

    /// Count each RunScript command of a final action that never ran, once, and keep
    /// `mde_liveresponse_script_not_run` on the latest attempt per machine and script.
    fn account_not_run(&self, a: &MachineAction) -> Result<(), StoreError> {
        let t = &self.tenant.name;
        let at = a
            .last_update_date_time_utc
            .or(a.creation_date_time_utc)
            .unwrap_or_else(Utc::now);
        for c in &a.commands {
            if c.command.kind != CommandType::RunScript || !self.wants_script(c.script_name()) {
                continue;
            }
            let script = c.script_name().unwrap_or("unknown").to_string();
            let series = (t.clone(), a.machine().to_string(), script.clone());
            let labels = MachineScriptLabels {
                tenant: t.clone(),
                machine: a.machine().to_string(),
                script: script.clone(),
            };
            let attempt = |ran| Attempt {
                at,
                ran,
                action_id: a.id.clone(),
            };
            let reason: Option<NotRunReason> = disc::not_run_reason(&a.status, &c.command_status);
            let ran = c.command_status == crate::mde::model::CommandStatus::Completed;
            match reason {
                None if ran => {
                    let later = self
                        .shared
                        .with_state(|s| s.offer_ran(series, attempt(true)))?;
                    if later {
                        self.shared
                            .metrics
                            .script_not_run
                            .get_or_create(&labels)
                            .set(0);
                    }
                }
                None => {}
                Some(reason) => {
                    let key = ResultKey {
                        tenant: t.clone(),
                        action_id: a.id.clone(),
                        index: c.index,
                    };
                    if self.shared.with_state(|s| s.is_not_run_done(&key)) {
                        continue;
                    }
                    let Some(update) = self
                        .shared
                        .with_state(|s| s.commit_not_run(key, series, attempt(false)))?
                    else {
                        continue;
                    };
                    let errors = crate::events::errors_text(&c.errors);
                    ScriptNotRun {
                        tenant: t,
                        action_id: &a.id,
                        index: c.index,
                        machine: a.machine(),
                        script: &script,
                        reason: reason.as_str(),
                        action_status: a.status.as_str(),
                        command_status: c.command_status.as_str(),
                        last_update: a.last_update_date_time_utc,
                        errors: if errors.is_empty() {
                            None
                        } else {
                            self.shared.settings.transcript_log.apply(&errors)
                        },
                    }
                    .emit(&self.shared.metrics);
                    if update == RunUpdate::Latest {
                        self.shared
                            .metrics
                            .script_not_run
                            .get_or_create(&labels)
                            .set(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Count a final action once and queue its results that are not done yet.
    fn consider(&mut self, a: &MachineAction) -> Result<(), StoreError> {
        if !a.is_live_response() || !a.status.is_final() {
            return Ok(());
        }
        let t = self.tenant.name.clone();
        let first_time = self.shared.with_state(|s| s.mark_action_seen(&t, &a.id))?;
        if first_time {
            let m = &self.shared.metrics;
            m.actions
                .get_or_create(&StatusLabels {
                    tenant: t.clone(),
                    status: a.status.as_str().to_string(),
                })
                .inc();
            for c in &a.commands {
                m.commands
                    .get_or_create(&CommandLabels {
                        tenant: t.clone(),
                        command: c.command.kind.as_str().to_string(),
                        status: c.command_status.as_str().to_string(),
                    })
                    .inc();
            }
        }
        self.account_not_run(a)?;
        let scripts = &self.tenant.selectors.scripts;
        for c in &a.commands {
            if c.command_status != crate::mde::model::CommandStatus::Completed {
                continue;
            }
            match c.command.kind {
                CommandType::RunScript => {
                    if !scripts.is_empty()
                        && !c
                            .script_name()
                            .is_some_and(|n| scripts.iter().any(|s| s == n))
                    {
                        continue;
                    }
                }
                CommandType::GetFile => {}
                // PutFile has no result; unknown types are not asked for.
                _ => continue,
            }
            let key = ResultKey {
                tenant: t.clone(),
                action_id: a.id.clone(),
                index: c.index,
            };
            if self.pending.contains(&key) || self.shared.with_state(|s| s.is_done(&key)) {
                continue;
            }
            self.pending.push_new(Pending {
                key,
                kind: c.command.kind.clone(),
                script: c.script_name().map(str::to_string),
                machine: a.machine().to_string(),
                end_time: c.end_time.or(a.last_update_date_time_utc),
                queued_at: Utc::now(),
                attempts: 0,
                not_before: None,
                link: None,
            });
        }
        Ok(())
    }

    /// Fetch pending results, oldest first, while the result-link budget has room now.
    /// Results backing off after a transient failure wait for their time.
    async fn drain(&mut self) -> Result<Drained, PollError> {
        let mut queue = self.pending.take_sorted();
        let mut drained = Drained::default();
        while let Some(mut p) = queue.pop_front() {
            if p.not_before.is_some_and(|t| t > Instant::now()) {
                self.pending.put_back(p);
                continue;
            }
            match self.fetch(&mut p).await {
                Ok(()) => {
                    self.pending.settled(&p.key);
                    self.stats.fetched += 1;
                    drained.settled += 1;
                }
                Err(PollError::Api(
                    e @ (mde::Error::Quota { .. } | mde::Error::Throttled { .. }),
                )) => {
                    // No room now: this and everything after it waits until the budget has
                    // room again (or the next poll, whichever comes first).
                    let wait = match &e {
                        mde::Error::Quota { wait, .. } => *wait,
                        mde::Error::Throttled { retry_after, .. } => *retry_after,
                        _ => Duration::ZERO,
                    };
                    self.resume_at = Some(Instant::now() + wait.max(Duration::from_millis(10)));
                    tracing::debug!(tenant = %self.tenant.name, error = %e, waiting = queue.len() + 1, "result fetching paused for quota");
                    self.pending.put_back(p);
                    queue.into_iter().for_each(|q| self.pending.put_back(q));
                    drained.stopped_by = Some(e);
                    return Ok(drained);
                }
                Err(PollError::Api(e)) => {
                    p.attempts += 1;
                    let ended = p.end_time.unwrap_or(p.queued_at).min(Utc::now());
                    let age = (Utc::now() - ended).to_std().unwrap_or_default();
                    let settings = &self.shared.settings;
                    match retry_decision(
                        attempts_allowed(&e),
                        e.is_transient(),
                        p.attempts,
                        age,
                        self.tenant.selectors.discovery.in_flight_horizon,
                        settings.poll_interval,
                    ) {
                        Retry::GiveUp => {
                            if let Err(store) = self.give_up(&p, &e) {
                                self.pending.put_back(p);
                                queue.into_iter().for_each(|q| self.pending.put_back(q));
                                return Err(store.into());
                            }
                            self.pending.settled(&p.key);
                            drained.settled += 1;
                        }
                        Retry::After(wait) => {
                            tracing::info!(tenant = %self.tenant.name, action_id = %p.key.action_id, index = p.key.index, attempts = p.attempts, retry_in_s = wait.as_secs_f64(), error = %e, "result fetch failed, will retry");
                            p.not_before = Some(Instant::now() + wait);
                            self.pending.put_back(p);
                        }
                    }
                }
                Err(e) => {
                    // The store failed (or anything else not the API's): nothing was counted;
                    // the result is tried again once the store works.
                    self.pending.put_back(p);
                    queue.into_iter().for_each(|q| self.pending.put_back(q));
                    return Err(e);
                }
            }
        }
        Ok(drained)
    }

    fn give_up(&self, p: &Pending, e: &mde::Error) -> Result<(), StoreError> {
        let reason = e.kind().as_str();
        if self.shared.with_state(|s| s.mark_done(p.key.clone()))? {
            self.shared.update_status(&self.tenant.name, |s| {
                s.push_error(format!(
                    "gave up on action {} index {} ({reason}): {e}",
                    p.key.action_id, p.key.index
                ));
            });
            ResultFetchFailed {
                tenant: &self.tenant.name,
                action_id: &p.key.action_id,
                index: p.key.index,
                reason,
                attempts: p.attempts,
                error: &e.to_string(),
            }
            .emit(&self.shared.metrics);
        }
        Ok(())
    }

    /// Link, download, read and count one result.
    #[tracing::instrument(name = "result", skip(self, p), fields(tenant = %self.tenant.name, mde.action_id = %p.key.action_id, mde.command_index = p.key.index, mde.command = p.kind.as_str(), trace_id = tracing::field::Empty, span_id = tracing::field::Empty))]
    async fn fetch(&self, p: &mut Pending) -> Result<(), PollError> {
        let span = tracing::Span::current();
        crate::telemetry::record_ids(&span);
        let result = self.fetch_inner(p).await;
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, &e.to_string());
        }
        result
    }

    async fn fetch_inner(&self, p: &mut Pending) -> Result<(), PollError> {
        let max = self.shared.settings.max_transcript_bytes;
        let what = format!("transcript of {} index {}", p.key.action_id, p.key.index);
        let mut expired_once = false;
        loop {
            // A link minted by an earlier try is used again: it is valid for 30 minutes, and
            // a retry then costs no API quota.
            let (link, cached) = match p.link.take() {
                Some(link) => (link, true),
                None => {
                    let link = self
                        .client
                        .get_result_download_link(&p.key.action_id, p.key.index, QuotaWait::No)
                        .await?;
                    (link, false)
                }
            };
            let outcome = match p.kind {
                CommandType::RunScript => self
                    .client
                    .fetch_transcript(&link, max, &what)
                    .await
                    .map(Fetched::Transcript),
                _ => self.client.measure_file(&link).await.map(Fetched::File),
            };
            match outcome {
                // An expired link (403 AuthenticationFailed) is minted again, once per try;
                // the script is never re-run.
                Err(e) if e.kind() == ErrorKind::ExpiredLink && (cached || !expired_once) => {
                    expired_once |= !cached;
                    tracing::info!(tenant = %self.tenant.name, action_id = %p.key.action_id, index = p.key.index, "download link expired, asking for a new one");
                }
                Err(e) => {
                    p.link = Some(link);
                    return Err(e.into());
                }
                Ok(Fetched::File(bytes)) => {
                    if self.shared.with_state(|s| s.mark_done(p.key.clone()))? {
                        let m = &self.shared.metrics;
                        m.files.get_or_create(&tenant(&self.tenant.name)).inc();
                        m.file_bytes
                            .get_or_create(&tenant(&self.tenant.name))
                            .inc_by(bytes);
                    }
                    return Ok(());
                }
                Ok(Fetched::Transcript(transcript)) => {
                    self.account(p, &transcript)?;
                    return Ok(());
                }
            }
        }
    }

    fn account(&self, p: &Pending, t: &crate::mde::model::Transcript) -> Result<(), StoreError> {
        let script = p.script.clone().unwrap_or_else(|| t.script_name.clone());
        let errors_present = t.errors_present();
        let end_time = p.end_time;
        let series = (self.tenant.name.clone(), p.machine.clone(), script.clone());
        // Marking done and offering the run as the latest happen in one durable transaction,
        // before anything is counted: a result is counted exactly when it becomes done.
        let run = end_time.map(|end| LastRun {
            end_time: end,
            exit_code: t.exit_code,
            errors_present,
            action_id: p.key.action_id.clone(),
            // The transcript page's excerpt, committed with the run (#22).
            excerpt: Some(crate::excerpt::Excerpt::new(
                &self.shared.settings.transcript_log,
                &t.script_output,
                &t.script_errors,
                p.key.index,
                chrono::Utc::now(),
            )),
        });
        let offered = run.clone().map(|r| (series.clone(), r));
        let update = match self
            .shared
            .with_state(|s| s.commit_result(p.key.clone(), offered))?
        {
            Committed::AlreadyDone => return Ok(()),
            Committed::Done(update) => update,
        };
        TranscriptRetrieved {
            tenant: &self.tenant.name,
            action_id: &p.key.action_id,
            index: p.key.index,
            machine: &p.machine,
            script: &script,
            exit_code: t.exit_code,
            errors_present,
            output_bytes: t.script_output.len(),
            errors_bytes: t.script_errors.len(),
            end_time,
            script_output: self.shared.settings.transcript_log.apply(&t.script_output),
            script_errors: self.shared.settings.transcript_log.apply(&t.script_errors),
        }
        .emit(&self.shared.metrics);
        if let (RunUpdate::Latest, Some(run)) = (update, &run) {
            let (tenant, machine, script) = series;
            self.shared.set_series(
                MachineScriptLabels {
                    tenant,
                    machine,
                    script,
                },
                run,
            );
        }
        self.shared.update_status(&self.tenant.name, |s| {
            s.push_recent(RecentTranscript {
                action_id: p.key.action_id.clone(),
                index: p.key.index,
                machine: p.machine.clone(),
                script,
                exit_code: t.exit_code,
                errors_present,
                end_time,
                trace_id: crate::telemetry::current_trace_label().map(|t| t.trace_id),
            });
        });
        Ok(())
    }
}

/// Whether a stored status string is final (unknown values are not: followed, not forgotten).
fn is_final_status(status: &str) -> bool {
    crate::mde::model::ActionStatus::from(status.to_string()).is_final()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    /// See: #13. A transient failure is retried with a doubling, capped backoff for as long
    /// as the result is inside the in-flight horizon; five minutes of outage no longer give a
    /// result up. Permanent answers give up after their tries.
    #[test]
    fn transient_failures_back_off_until_the_horizon() {
        let poll = Duration::from_secs(60);
        let week = Duration::from_secs(7 * 86400);
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n, poll).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(retry_delay(u32::MAX, poll), Duration::from_secs(3600));
        // A poll interval above the cap: never retried faster than polls come.
        assert_eq!(
            retry_delay(3, Duration::from_secs(7200)),
            Duration::from_secs(7200)
        );
        // Fifty failures in a row, a day after the command ended: still retried.
        let minute = Duration::from_secs(60);
        assert_eq!(
            retry_decision(u32::MAX, true, 50, Duration::from_secs(86400), week, minute),
            Retry::After(Duration::from_secs(3600))
        );
        assert_eq!(
            retry_decision(u32::MAX, true, 5, Duration::from_secs(300), week, minute),
            Retry::After(Duration::from_secs(960))
        );
        // Past the horizon: given up.
        assert_eq!(
            retry_decision(u32::MAX, true, 3, week, week, minute),
            Retry::GiveUp
        );
        // Permanent answers: their own count, whatever the age.
        assert_eq!(
            retry_decision(2, false, 1, Duration::ZERO, week, minute),
            Retry::After(minute)
        );
        assert_eq!(
            retry_decision(2, false, 2, Duration::ZERO, week, minute),
            Retry::GiveUp
        );
        assert_eq!(
            retry_decision(1, false, 1, Duration::ZERO, week, minute),
            Retry::GiveUp
        );
    }

    fn pending(action: &str, end: i64) -> Pending {
        Pending {
            key: ResultKey {
                tenant: "t".into(),
                action_id: action.into(),
                index: 0,
            },
            kind: CommandType::RunScript,
            script: None,
            machine: "m".into(),
            end_time: Utc.timestamp_opt(end, 0).single(),
            queued_at: Utc.timestamp_opt(0, 0).unwrap(),
            attempts: 0,
            not_before: None,
            link: None,
        }
    }

    /// See: #13. The duplicate check is a set lookup; keys stay while an item is out being
    /// fetched, and go when it is settled.
    #[test]
    fn the_pending_queue_is_keyed() {
        let mut q = PendingQueue::default();
        for i in (0..20_000).rev() {
            q.push_new(pending(&format!("a{i}"), i));
            q.push_new(pending(&format!("a{i}"), i));
        }
        assert_eq!(q.len(), 20_000);
        let mut taken = q.take_sorted();
        assert_eq!(q.len(), 0);
        let first = taken.pop_front().unwrap();
        assert_eq!(first.key.action_id, "a0", "oldest first");
        assert!(q.contains(&first.key), "still known while being fetched");
        q.push_new(pending("a0", 0));
        assert_eq!(q.len(), 0, "not queued twice while out");
        q.settled(&first.key);
        assert!(!q.contains(&first.key));
        taken.into_iter().for_each(|p| q.put_back(p));
        assert_eq!(q.len(), 19_999);
    }
}
