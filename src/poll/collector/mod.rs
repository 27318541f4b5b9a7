//! The poll loop of one tenant: discover Live Response actions, fetch each command result
//! once, count it, and keep the per-machine gauges on the latest run.
//!
//! Owns the order of work within a poll: discovery ([`discover`]), then accounting what it
//! found and fetching results oldest first while the quota has room ([`results`]), and again
//! as soon as a `Retry-After` ends; and the poll metrics, which are recorded whether the poll
//! succeeds or not. Does not own HTTP, quota arithmetic, parsing, the pure decisions of
//! discovery (`crate::poll::discovery`), nor the retry policy ([`retry`]).
//!
//! - [`discover`]: the list calls of a poll and what is remembered of them, one contract for
//!   both discovery modes.
//! - [`bootstrap`]: a tenant's first discovery, which a poll cut short by quota leaves for the
//!   next poll to go on with.
//! - [`results`]: counting final actions and not-run commands, filling the pending queue, fetching
//!   and accounting results exactly once.
//! - [`error`]: why a poll (or one result) did not complete.
//! - [`names`]: which machine id a `machine` label stands for.
//! - [`reread`]: followed actions read again by id, one by one or in batches.
//! - [`pending`]: the queue of results waiting to be fetched.
//! - [`poller`]: what one tenant's collector holds between and during polls.
//! - [`retry`]: how often and how long a failed result is tried again (pure).

mod bootstrap;
mod discover;
mod error;
mod names;
mod pending;
mod poller;
mod reread;
mod results;
mod retry;

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::{self, Client};
use crate::config::Tenant;
use crate::poll::discovery::is_final_status;
use crate::record::state::{IdentityCheck, TenantIdentity};
use crate::shared::Shared;

pub use error::PollError;
use pending::PendingQueue;
use poller::PollStats;
pub use poller::TenantCollector;

impl TenantCollector {
    pub fn new(tenant: Tenant, client: Client, shared: Arc<Shared>) -> Self {
        // Assumed until the API refuses it (#20).
        shared
            .metrics
            .poll
            .set_in_flight_filter_supported(&tenant.name, true);
        TenantCollector {
            tenant,
            client,
            shared,
            pending: PendingQueue::default(),
            stats: PollStats::default(),
            resume_at: None,
            restored: false,
            rereads: Vec::new(),
            last_sweep_actions: 0,
            unrestored: 0,
            bootstrap: None,
            names: Default::default(),
            in_flight_filter_refused: false,
            combined_filter_refused: false,
            interval: Duration::ZERO,
            quiet_polls: 0,
            feed: None,
        }
        .with_identity()
        .with_unrestored()
    }

    /// Check that the state's entries of this tenant name are this tenant's (#24): pointed
    /// at another tenant_id or API, it starts afresh (see `State::check_identity`), logged
    /// and counted. Before the followed actions are counted, which a change drops.
    fn with_identity(self) -> Self {
        let name = self.tenant.name.clone();
        let identity = TenantIdentity {
            tenant_id: self.tenant.tenant_id.clone(),
            api_url: self.tenant.api_url.as_str().to_string(),
        };
        match self
            .shared
            .with_state(|s| s.check_identity(&name, &identity))
        {
            Ok(IdentityCheck::Changed { was }) => {
                tracing::warn!(
                    tenant = %name,
                    tenant_id = %identity.tenant_id,
                    api_url = %identity.api_url,
                    was_tenant_id = %was.tenant_id,
                    was_api_url = %was.api_url,
                    "the state's entries of this tenant name were recorded for another tenant_id or api_url: this tenant starts afresh (its watermark and followed actions are dropped; what was counted stays counted)"
                );
                self.shared
                    .metrics
                    .exporter
                    .record_tenant_identity_change(&name);
            }
            Ok(IdentityCheck::Same | IdentityCheck::Adopted) => {}
            Err(e) => {
                tracing::warn!(tenant = %name, error = %e, "cannot record the tenant's identity in the state file; checked again at the next start or reload")
            }
        }
        self
    }

    /// Take each configuration put in force later from `feed` (see [`Self::run`]).
    pub fn following(mut self, feed: crate::shared::SharedFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Take the configuration in force now, if the feed has a newer one.
    fn follow(&mut self) {
        if let Some(shared) = crate::shared::newer_shared(&mut self.feed) {
            self.shared = shared;
        }
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

    /// Poll until `shutdown` says stop, each poll `interval` after the start of the one
    /// before, as the cadence chose it ([`Self::choose_interval`]). A poll in flight is
    /// dropped at shutdown; nothing is lost, since a result is marked done only once it is
    /// counted.
    ///
    /// A poll's future is boxed for the time it runs: the task itself, which lives as long as
    /// the tenant, then holds the collector and a timer between polls instead of room for the
    /// deepest poll (11 KiB a tenant before), which with polls spread over the interval
    /// almost every tenant is not in. See: #11
    ///
    /// A configuration put in force by a reload that kept the tenant (`following`, #34) is
    /// taken between two polls.
    ///
    /// An `async` block, not an `async fn`: an `async fn` moves its arguments into the locals
    /// of its future and keeps their first place too, so the task held the collector twice
    /// for the tenant's life (1.2 KiB a tenant in a debug build). See: #34
    #[allow(clippy::manual_async_fn)]
    pub fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        async move {
            let mut next_poll = Instant::now();
            loop {
                // A Retry-After (or a full budget) that ends before the next poll, with results
                // waiting: go on then, not at the next poll. One timer for both: each one the
                // task holds is room kept for the tenant's life (#34).
                let (wake, resumed) = match self.resume_at {
                    Some(resume) if resume < next_poll => (resume, true),
                    _ => (next_poll, false),
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = shutdown.changed() => return,
                    _ = crate::shared::next_shared(&mut self.feed) => {
                        self.follow();
                        continue;
                    }
                };
                if resumed {
                    self.resume_at = None;
                    tokio::select! {
                        _ = Box::pin(self.resume_fetching()) => {}
                        _ = shutdown.changed() => return,
                    }
                } else {
                    let started = Instant::now();
                    tokio::select! {
                        _ = Box::pin(self.poll_once()) => {}
                        _ = shutdown.changed() => return,
                    }
                    // A poll longer than its interval is followed at once.
                    next_poll = started + self.interval;
                }
                // A cluster member that gave the tenant up (or lost it) ends here, its poll done
                // (#31); in one process a configured tenant is always served.
                if *shutdown.borrow() || !self.shared.serves(&self.tenant.name) {
                    return;
                }
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
            .poll
            .set_pending_results(&self.tenant.name, self.waiting());
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
        let used_before = self.list_hour_window();
        let result = self.poll_inner(started).await;
        self.choose_interval(used_before, result.is_ok());
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, &e.to_string());
        }
        let m = &self.shared.metrics;
        m.poll.record_poll(
            &self.tenant.name,
            result.is_ok(),
            started.elapsed(),
            Utc::now().timestamp_millis() as f64 / 1000.0,
            self.pending.len(),
            crate::telemetry::current_trace_label(),
        );
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

    /// The list endpoint's long window now: (calls used, limit in force). With a shared
    /// budget (`quota.scope: shared`) the window of all endpoints.
    fn list_hour_window(&self) -> Option<(u32, u32)> {
        let mut quota = self
            .client
            .quota()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(quota.hour_window(crate::quota::Endpoint::ListMachineActions, Instant::now()))
    }

    /// The cadence (#20 item 5, #33): the time until the next poll, from this poll's list
    /// calls, the budget share, and what the tenant has and found (the pure
    /// `discovery::cadence`); shown in `mde_liveresponse_discovery_interval_seconds`, the
    /// cadence and why in `mde_liveresponse_discovery_cadence`, and all three on the status
    /// page.
    fn choose_interval(&mut self, used_before: Option<(u32, u32)>, ok: bool) {
        let name = self.tenant.name.clone();
        let d = &self.tenant.selectors.discovery;
        let after = self.list_hour_window();
        let cost = match (used_before, after) {
            (Some((before, _)), Some((now, _))) => now.saturating_sub(before),
            _ => 1,
        };
        let in_flight = self
            .shared
            .with_state(|s| s.tracked(&name))
            .iter()
            .filter(|(_, t)| !is_final_status(&t.status))
            .count();
        let input = crate::poll::discovery::CadenceInput {
            poll_interval: self.shared.settings.poll_interval,
            min_interval: d.min_interval,
            list_budget_share: d.list_budget_share,
            hour_budget: after.map_or(self.tenant.quota.per_hour, |(_, effective)| effective),
            hour: self.tenant.quota.hour,
            cost,
            activity: crate::poll::discovery::Activity {
                in_flight,
                configured_open: self.stats.configured_open,
                found_new: self.stats.new_actions,
            },
            ok,
        };
        let decision = crate::poll::discovery::decide(&input, self.quiet_polls);
        self.quiet_polls = decision.quiet_polls;
        self.interval = decision.interval;
        let poll = &self.shared.metrics.poll;
        poll.set_discovery_interval(&name, decision.interval);
        poll.set_discovery_cadence(
            &name,
            Some((decision.cadence.as_str(), decision.why.reason())),
        );
        self.shared.update_status(&name, |s| {
            s.discovery.interval = Some(decision.interval);
            s.discovery.interval_reason = decision.describe(cost);
        });
    }

    /// One info line per poll: what was found and fetched, what waits, the result-link quota
    /// left (the smallest of its windows) and how long it took.
    fn log_poll(&self, started: Instant, ok: bool, waiting: usize) {
        let quota_left = Some(
            self.client
                .quota()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remaining(
                    crate::quota::Endpoint::GetResultDownloadLink,
                    Instant::now(),
                ),
        );
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
        let discovered = match self.discover(deadline).await {
            Ok(d) => d,
            // No room for discovery before the next poll (our budget is spent, or a 429
            // blocked the endpoint). Known results are still fetched; if none could be either,
            // nothing got through and the poll is not a success: a steady storm of 429s must
            // show in `mde_exporter_poll_success`, not hide behind it.
            Err(PollError::Api(e @ (api::Error::Quota { .. } | api::Error::Throttled { .. }))) => {
                tracing::info!(tenant = %self.tenant.name, error = %e, "discovery deferred: no API quota left before the next poll; consider a longer poll_interval");
                self.note_outcome(format!(
                    "deferred: no list quota before the next poll ({})",
                    e.kind().as_str()
                ));
                let drained = self.drain().await?;
                if drained.settled == 0 {
                    return Err(PollError::Throttled(drained.stopped_by.unwrap_or(e)));
                }
                return Ok(());
            }
            Err(e) => {
                self.note_outcome(format!("failed: {e}"));
                // Results already known are still fetched: discovery and result links have
                // separate budgets, and nothing found earlier should wait on a failed list.
                self.drain().await?;
                return Err(e);
            }
        };
        self.account_discovered(discovered)?;
        self.drain().await.map(|_| ())
    }
}
