//! What a poll found, accounted: each final action counted once, each RunScript command that
//! never ran counted once (with `mde_liveresponse_script_not_run` on the latest attempt), and
//! each result queued, fetched oldest first and accounted exactly once.
//!
//! Owns filling and draining the pending queue, the result fetch (link, download, the
//! expired-link retry), reading a transcript's script output off the async workers within
//! its bound (`script_metrics::pool`, #32 item 1), the durable commit before anything is
//! counted, and the per-result events and status lines. Does not own the queue itself (`pending`), discovery
//! (`discover`), the retry policy (`retry`), nor the HTTP calls and the transcript parser
//! (`api`).

use std::time::Duration;

use tokio::time::Instant;

use super::error::PollError;
use super::pending::Pending;
use super::poller::TenantCollector;
use super::retry::{Retry, attempts_allowed, retry_decision};
use crate::api::model::{CommandType, MachineAction};
use crate::api::{self, ErrorKind, QuotaWait};
use crate::metrics::MachineScriptLabels;
use crate::poll::discovery::{self as disc, NotRunReason};
use crate::record::events::{ResultFetchFailed, ScriptNotRun};
use crate::record::outcome::{Outcome, Retrieved};
use crate::record::state::{Attempt, ResultKey, RunUpdate, StoreError};
use crate::script_metrics::pool::{Abandoned, Pool};
use crate::script_metrics::store::extract;

/// What a result download gave.
enum Fetched {
    Transcript(crate::api::model::Transcript),
    /// A `GetFile` result's size.
    File(u64),
}

/// What one drain did.
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// Results counted or given up.
    pub(super) settled: usize,
    /// Fetching stopped for quota or a 429 (with that error).
    pub(super) stopped_by: Option<api::Error>,
}

impl TenantCollector {
    /// Whether a RunScript command's script is one the tenant watches.
    fn wants_script(&self, name: Option<&str>) -> bool {
        let scripts = &self.tenant.selectors.scripts;
        scripts.is_empty() || name.is_some_and(|n| scripts.iter().any(|s| s == n))
    }

    /// Count each RunScript command of a final action that never ran, once, and keep
    /// `mde_liveresponse_script_not_run` on the latest attempt per machine and script.
    fn account_not_run(&self, a: &MachineAction, machine: &str) -> Result<(), StoreError> {
        let t = &self.tenant.name;
        let at = a
            .last_update_date_time_utc
            .or(a.creation_date_time_utc)
            .unwrap_or_else(|| self.api_now());
        for c in &a.commands {
            if c.command.kind != CommandType::RunScript || !self.wants_script(c.script_name()) {
                continue;
            }
            let script = c.script_name().unwrap_or("unknown").to_string();
            let series = (t.clone(), machine.to_string(), script.clone());
            let labels = MachineScriptLabels {
                tenant: t.as_str().into(),
                machine: machine.into(),
                script: script.as_str().into(),
            };
            let attempt = |ran| Attempt {
                at,
                ran,
                action_id: a.id.clone(),
            };
            let reason: Option<NotRunReason> = disc::not_run_reason(&a.status, &c.command_status);
            let ran = c.command_status == crate::api::model::CommandStatus::Completed;
            match reason {
                None if ran => {
                    let later = self
                        .shared
                        .with_state(|s| s.offer_ran(series, attempt(true)))?;
                    if later {
                        self.shared
                            .metrics
                            .results
                            .set_script_not_run(&labels, false);
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
                        .with_state(|s| s.commit_not_run(key, series.clone(), attempt(false)))?
                    else {
                        continue;
                    };
                    let errors = crate::record::events::errors_text(&c.errors);
                    ScriptNotRun {
                        tenant: t,
                        action_id: &a.id,
                        index: c.index,
                        machine,
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
                    // The series shows its latest attempt: this one, or a newer one (a run seen
                    // earlier, whatever the order; the series starts then, at 0). See: #20
                    let shown = match update {
                        RunUpdate::Latest => Some(true),
                        RunUpdate::Older => self
                            .shared
                            .with_state(|s| s.attempt(&series).map(|a| !a.ran)),
                    };
                    if let Some(not_run) = shown {
                        self.shared
                            .metrics
                            .results
                            .set_script_not_run(&labels, not_run);
                    }
                }
            }
        }
        Ok(())
    }

    /// Count a final action once and queue its results that are not done yet.
    pub(super) fn consider(&mut self, a: &MachineAction) -> Result<(), StoreError> {
        if !a.is_live_response() || !a.status.is_final() {
            return Ok(());
        }
        let t = self.tenant.name.clone();
        let first_time = self.shared.with_state(|s| s.mark_action_seen(&t, &a.id))?;
        if first_time {
            self.shared.metrics.results.record_final_action(
                &t,
                a.status.as_str(),
                a.commands
                    .iter()
                    .map(|c| (c.command.kind.as_str(), c.command_status.as_str())),
            );
        }
        // Keyed by the machine id behind the name (#32 item 8).
        let machine = self.names.label(&t, a);
        self.account_not_run(a, &machine)?;
        let scripts = &self.tenant.selectors.scripts;
        for c in &a.commands {
            if c.command_status != crate::api::model::CommandStatus::Completed {
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
                machine: machine.clone(),
                end_time: c.end_time.or(a.last_update_date_time_utc),
                last_update: a.last_update_date_time_utc,
                queued_at: self.api_now(),
                attempts: 0,
                not_before: None,
                link: None,
            });
        }
        Ok(())
    }

    /// Fetch pending results, oldest first, while the result-link budget has room now.
    /// Results backing off after a transient failure wait for their time.
    pub(super) async fn drain(&mut self) -> Result<Drained, PollError> {
        let mut queue = self.pending.take_sorted();
        let mut drained = Drained::default();
        while let Some(mut p) = queue.pop_front() {
            // A cluster member giving the tenant up fetches nothing more: what it fetches now
            // it could not commit once the next owner holds the lease (#31).
            if !self.shared.serves(&self.tenant.name) {
                self.pending.put_back(p);
                queue.into_iter().for_each(|q| self.pending.put_back(q));
                return Ok(drained);
            }
            if p.not_before.is_some_and(|t| t > Instant::now()) {
                self.pending.put_back(p);
                continue;
            }
            match self.fetch(&mut p).await {
                Ok(()) => {
                    self.pending.settled(&p.key);
                    self.stats.fetched += 1;
                    self.stats.new_actions = true;
                    drained.settled += 1;
                }
                Err(PollError::Api(
                    e @ (api::Error::Quota { .. } | api::Error::Throttled { .. }),
                )) => {
                    // No room now: this and everything after it waits until the budget has
                    // room again (or the next poll, whichever comes first).
                    let wait = match &e {
                        api::Error::Quota { wait, .. } => *wait,
                        api::Error::Throttled { retry_after, .. } => *retry_after,
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
                    // Judged by the API's time; none (a local clock that disagrees with the
                    // API's): not past the horizon, retried (#24 item 7).
                    let age = self.judge_time().map_or(Duration::ZERO, |now| {
                        let ended = p.end_time.unwrap_or(p.queued_at).min(now);
                        (now - ended).to_std().unwrap_or_default()
                    });
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

    fn give_up(&self, p: &Pending, e: &api::Error) -> Result<(), StoreError> {
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
                        self.shared
                            .metrics
                            .results
                            .record_file(&self.tenant.name, bytes);
                    }
                    return Ok(());
                }
                Ok(Fetched::Transcript(transcript)) => {
                    self.account(p, transcript).await?;
                    return Ok(());
                }
            }
        }
    }

    /// What the transcript becomes (see [`Outcome`]): built once, applied to the state, the
    /// script-output set, the gauges, the log event and the status page, in that order.
    async fn account(
        &self,
        p: &Pending,
        t: crate::api::model::Transcript,
    ) -> Result<(), StoreError> {
        let settings = &self.shared.settings;
        let result = Retrieved {
            key: &p.key,
            machine: &p.machine,
            script: p.script.as_deref(),
            end_time: p.end_time,
            produced: p
                .last_update
                .or(p.end_time)
                .unwrap_or_else(|| self.api_now()),
        };
        let mut outcome = Outcome::new(
            result,
            &t,
            &settings.script_metrics,
            &settings.transcript_log,
            chrono::Utc::now(),
        );
        if let Some(rule) = outcome.rule() {
            let script = p.script.as_deref().unwrap_or(&t.script_name).to_string();
            // The output is read off the async workers, within its bound (#32 item 1); the
            // outcome already took what else it needs of the transcript.
            let output = t.script_output;
            let read = rule.clone();
            let bound = settings.script_metrics.parse_timeout;
            match Pool::shared()
                .run(&self.tenant.name, bound, move || {
                    extract(&read, output.as_bytes())
                })
                .await
            {
                Ok(extracted) => outcome.read(extracted),
                Err(Abandoned) => {
                    tracing::warn!(
                        tenant = %self.tenant.name,
                        action_id = %p.key.action_id,
                        index = p.key.index,
                        machine = %p.machine,
                        script = %script,
                        timeout = ?bound,
                        "script_metrics: reading the script's output took longer than script_metrics_parse_timeout and was abandoned; this transcript gives no set (the one held stays)"
                    );
                    let store = &self.shared.metrics.script_metrics;
                    store.count_abandoned(&self.tenant.name, &script);
                }
            }
        }
        outcome.apply(&self.shared.state, &self.shared.metrics, |recent| {
            self.shared
                .update_status(&self.tenant.name, |s| s.push_recent(recent));
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::poll::collector::pending::PendingQueue;
    use chrono::{TimeZone, Utc};

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
            last_update: None,
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
        // Drained, the queue holds no room for its keys (#34).
        for p in q.take_sorted() {
            q.settled(&p.key);
        }
        assert_eq!((q.len(), q.keys.capacity()), (0, 0));
    }
}
