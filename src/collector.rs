//! The poll loop of one tenant: discover finished Live Response actions, fetch each command
//! result once, count it, and keep the per-machine gauges on the latest run.
//!
//! Owns the order of work within a poll (discovery, then results oldest first while the quota
//! has room), the exactly-once accounting and the poll metrics, which are recorded whether the
//! poll succeeds or not. Does not own HTTP, quota arithmetic or parsing.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Tenant;
use crate::events::{ResultFetchFailed, TranscriptRetrieved};
use crate::mde::model::{CommandType, MachineAction};
use crate::mde::{self, Client, ErrorKind, QuotaWait};
use crate::metrics::{CommandLabels, MachineScriptLabels, StatusLabels, tenant};
use crate::shared::{RecentTranscript, Shared};
use crate::state::{Committed, LastRun, ResultKey, RunUpdate, StoreError};

/// Why a poll (or one result) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] mde::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Give up on a result after this many failed attempts of a kind that may be transient.
const MAX_ATTEMPTS: u32 = 5;
/// How far back discovery reaches at most when catching up after an outage.
const MAX_CATCH_UP: chrono::Duration = chrono::Duration::days(30);

/// The OData filter for discovery, from documented fields only. It looks back `lookback`
/// from now, or from the last completed discovery when that is older (after an outage), but
/// never more than `MAX_CATCH_UP` back. A last discovery in the future (the wall clock jumped
/// back) is ignored.
pub fn discovery_filter(
    sel: &crate::config::Selectors,
    now: DateTime<Utc>,
    last_discovery: Option<DateTime<Utc>>,
) -> String {
    let lookback = chrono::Duration::from_std(sel.lookback).unwrap_or(chrono::Duration::days(1));
    let from = last_discovery.filter(|t| *t < now).unwrap_or(now);
    let floor = now.checked_sub_signed(MAX_CATCH_UP).unwrap_or(now);
    let since = from.checked_sub_signed(lookback).unwrap_or(from).max(floor);
    let mut f = format!(
        "type eq 'LiveResponse' and creationDateTimeUtc ge {} and (status eq 'Succeeded' or status eq 'Failed' or status eq 'TimeOut' or status eq 'Cancelled')",
        since.format("%Y-%m-%dT%H:%M:%SZ")
    );
    if let Some(r) = &sel.requestor {
        f.push_str(&format!(" and requestor eq '{}'", r.replace('\'', "''")));
    }
    if !sel.machine_ids.is_empty() {
        let ids: Vec<String> = sel
            .machine_ids
            .iter()
            .map(|m| format!("machineId eq '{m}'"))
            .collect();
        f.push_str(&format!(" and ({})", ids.join(" or ")));
    }
    f
}

/// How many tries a result gets for a kind of failure before it is given up.
fn attempts_allowed(e: &mde::Error) -> u32 {
    match e.kind() {
        // The cap will not change.
        ErrorKind::TooLarge => 1,
        // Usually permanent, but a damaged download, a result not yet visible to the API or
        // a link refused twice can heal: one more try, then give up.
        ErrorKind::Malformed
        | ErrorKind::NotFound
        | ErrorKind::Forbidden
        | ErrorKind::ExpiredLink => 2,
        _ if e.is_transient() => MAX_ATTEMPTS,
        _ => 1,
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
    attempts: u32,
    /// The download link of an earlier try, reused while it is valid.
    link: Option<crate::mde::model::DownloadLink>,
}

/// The collector of one tenant.
pub struct TenantCollector {
    tenant: Tenant,
    client: Client,
    shared: Arc<Shared>,
    pending: Vec<Pending>,
    /// What the poll in progress did, for its log line.
    stats: PollStats,
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
            pending: Vec::new(),
            stats: PollStats::default(),
        }
    }

    /// Poll every `poll_interval` until `shutdown` says stop. A poll in flight is dropped at
    /// shutdown; nothing is lost, since a result is marked done only once it is counted.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.shared.settings.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = self.poll_once() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One poll; always records `mde_exporter_poll_success` and the duration.
    #[tracing::instrument(name = "poll", skip(self), fields(tenant = %self.tenant.name, trace_id = tracing::field::Empty, span_id = tracing::field::Empty))]
    pub async fn poll_once(&mut self) -> Result<(), PollError> {
        let span = tracing::Span::current();
        crate::telemetry::record_ids(&span);
        let started = Instant::now();
        self.stats = PollStats::default();
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
            .quota_status()
            .get(&self.tenant.name)
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
        let discovered = self.discover(deadline).await;
        let actions = match discovered {
            Ok(a) => {
                self.stats.discovered = a.len();
                a
            }
            // Our own budget has no room for discovery before the next poll: that is the
            // quota policy at work, not a failure. Known results are still fetched.
            Err(PollError::Api(e @ mde::Error::Quota { .. })) => {
                tracing::info!(tenant = %self.tenant.name, error = %e, "discovery deferred: no API quota left before the next poll; consider a longer poll_interval");
                return self.drain().await;
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
        self.drain().await
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
            if self.shared.with_state(|s| s.is_done(&key))
                || self.pending.iter().any(|p| p.key == key)
            {
                continue;
            }
            self.pending.push(Pending {
                key,
                kind: c.command.kind.clone(),
                script: c.script_name().map(str::to_string),
                machine: a.machine().to_string(),
                end_time: c.end_time.or(a.last_update_date_time_utc),
                attempts: 0,
                link: None,
            });
        }
        Ok(())
    }

    /// Fetch pending results, oldest first, while the result-link budget has room now.
    async fn drain(&mut self) -> Result<(), PollError> {
        self.pending
            .sort_by(|a, b| a.end_time.cmp(&b.end_time).then(a.key.cmp(&b.key)));
        let mut queue: VecDeque<Pending> = std::mem::take(&mut self.pending).into();
        while let Some(mut p) = queue.pop_front() {
            match self.fetch(&mut p).await {
                Ok(()) => self.stats.fetched += 1,
                Err(PollError::Api(
                    e @ (mde::Error::Quota { .. } | mde::Error::Throttled { .. }),
                )) => {
                    // No room now: this and everything after it waits for the next poll.
                    tracing::debug!(tenant = %self.tenant.name, error = %e, waiting = queue.len() + 1, "result fetching paused for quota");
                    self.pending.push(p);
                    self.pending.extend(queue);
                    return Ok(());
                }
                Err(PollError::Store(e)) => {
                    // Nothing was counted; the result is tried again once the store works.
                    self.pending.push(p);
                    self.pending.extend(queue);
                    return Err(e.into());
                }
                Err(PollError::Api(e)) => {
                    p.attempts += 1;
                    if p.attempts >= attempts_allowed(&e) {
                        if let Err(store) = self.give_up(&p, &e) {
                            self.pending.push(p);
                            self.pending.extend(queue);
                            return Err(store.into());
                        }
                    } else {
                        tracing::info!(tenant = %self.tenant.name, action_id = %p.key.action_id, index = p.key.index, attempts = p.attempts, error = %e, "result fetch failed, will retry");
                        self.pending.push(p);
                    }
                }
            }
        }
        Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn sel() -> crate::config::Selectors {
        crate::config::Selectors {
            lookback: Duration::from_secs(24 * 3600),
            requestor: Some("o'brien".into()),
            machine_ids: vec!["m1".into(), "m2".into()],
            ..Default::default()
        }
    }

    fn since(filter: &str) -> &str {
        filter
            .split("creationDateTimeUtc ge ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
    }

    #[test]
    fn filter_uses_documented_fields_and_escapes_quotes() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let f = discovery_filter(&sel(), now, None);
        assert_eq!(
            f,
            "type eq 'LiveResponse' and creationDateTimeUtc ge 2026-11-25T12:00:00Z and (status eq 'Succeeded' or status eq 'Failed' or status eq 'TimeOut' or status eq 'Cancelled') and requestor eq 'o''brien' and (machineId eq 'm1' or machineId eq 'm2')"
        );
    }

    #[test]
    fn after_an_outage_discovery_reaches_back_from_the_last_one() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        // Down for three days: look back from the last discovery.
        let last = now - chrono::Duration::days(3);
        assert_eq!(
            since(&discovery_filter(&sel(), now, Some(last))),
            "2026-11-22T12:00:00Z"
        );
        // Never more than 30 days back.
        let ancient = now - chrono::Duration::days(365);
        assert_eq!(
            since(&discovery_filter(&sel(), now, Some(ancient))),
            "2026-10-27T12:00:00Z"
        );
    }

    #[test]
    fn a_clock_that_jumped_back_does_not_narrow_discovery() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        // The last discovery is "in the future": the wall clock went back. Use now.
        let future = now + chrono::Duration::hours(5);
        assert_eq!(
            since(&discovery_filter(&sel(), now, Some(future))),
            "2026-11-25T12:00:00Z"
        );
    }
}
