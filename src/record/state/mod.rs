//! What the exporter remembers between polls: results already counted, final actions already
//! counted, and the latest run per (tenant, machine, script) behind the per-machine gauges;
//! since schema 2 (#9) also the discovery watermark, the actions followed by id (in flight, or
//! final with results to fetch), the RunScript commands counted as not run and the latest
//! attempt behind `mde_liveresponse_script_not_run`.
//!
//! Owns the in-memory indexes and the exactly-once rules over them (a result or an action is
//! committed once; which run is the latest), and the expiry/cap of per-machine entries; the
//! not-run commands and latest attempts have theirs in [`attempts`]. Every change is applied to its storage ([`storage::Storage`]: the
//! redb file, [`redb_file`], with a `state_path`) before the indexes change and before it is
//! counted, so a restart (even `kill -9`) neither counts a result twice nor loses the
//! per-machine gauges. Without a storage it lives in memory only. Does not own the records
//! kept ([`model`]: result and series keys, runs, tracked actions, attempts), the vocabulary of
//! writes ([`storage`]), the file format, opening and reopening ([`redb_file`]), whether
//! another process holds the file ([`lock`]), nor the metrics set from it.

mod attempts;
#[cfg(test)]
mod fixtures;
mod identity;
mod lock;
mod model;
mod packed;
mod redb_file;
pub mod storage;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

pub use identity::IdentityCheck;
pub use lock::Holder;
pub use model::{Attempt, LastRun, ResultKey, SeriesKey, TenantIdentity, Tracked};
pub use redb_file::{Opener, SCHEMA, reset};
pub use storage::{Loaded, PerMachine, Storage, StoreError, Write};

use packed::{Done, Pair, Series};

/// What a discovery pass changes, committed in one transaction.
#[derive(Debug, Default)]
pub struct DiscoveryUpdate {
    pub tenant: String,
    pub upsert: Vec<(String, Tracked)>,
    pub remove: Vec<String>,
    pub watermark: Option<DateTime<Utc>>,
    pub reconciled: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Results done, and final actions counted, per (tenant, action id): packed, since they
    /// grow with every result and never expire (#34).
    done: HashSet<Done>,
    actions_seen: HashSet<Pair>,
    last_runs: BTreeMap<Series, LastRun>,
    /// Per tenant: when discovery last completed (Unix ms), so that after a long outage the
    /// next discovery looks back far enough to miss no finished command.
    discovered: BTreeMap<String, i64>,
    /// Per tenant: the discovery watermark (Unix ms).
    watermarks: BTreeMap<String, i64>,
    /// Per tenant: the last reconciliation sweep (Unix ms).
    reconciled: BTreeMap<String, i64>,
    /// Actions followed by id, per (tenant, action id).
    tracked: BTreeMap<(String, String), Tracked>,
    /// RunScript commands already counted as not run (packed, as `done`).
    not_run: HashSet<Done>,
    /// Latest attempt per series that ever had a not-run (its series packed, #34).
    attempts: BTreeMap<Series, Attempt>,
    /// Schema 3 (#20): the newest attempt that ran, per series, whether or not it had a
    /// not-run, so that an older not-run seen after it does not win. Its series packed
    /// (#34): it holds one for every script that ran on every machine.
    ran: BTreeMap<Series, Attempt>,
    /// Script output as metrics (#21): the sets the file held when opened, until
    /// [`State::take_script_sets`] hands them over.
    script_sets: BTreeMap<SeriesKey, Vec<u8>>,
    /// #24: per tenant, whose history the entries of that tenant are.
    identities: BTreeMap<String, TenantIdentity>,
    /// The storage behind it (the redb file), if any: every change is applied to it before
    /// the indexes change.
    store: Option<Box<dyn Storage>>,
}

/// What `commit_result` did.
#[derive(Debug, PartialEq)]
pub enum Committed {
    /// The result was already done: count nothing.
    AlreadyDone,
    /// Now done, and whether a run offered with it became the latest of its series.
    Done(RunUpdate),
}

/// What `commit_result` did to the per-machine series.
#[derive(Debug, PartialEq)]
pub enum RunUpdate {
    /// This run is now the latest for its series.
    Latest,
    /// A later run is already known (or none was offered); the gauges keep what they show.
    Older,
}

impl State {
    /// Open (or create) the state file, or keep state in memory when `path` is `None`.
    ///
    /// A file that exists but is empty (truncated to 0 bytes) or corrupt stops start-up with
    /// a message naming it: starting afresh silently would count again every result still in
    /// the lookback window. `--state.reset` (see [`reset`]) is for operators who mean that.
    pub fn open(path: Option<&Path>) -> Result<State, StoreError> {
        match path {
            None => Ok(State::default()),
            Some(path) => redb_file::open(path).map(State::from_file),
        }
    }

    /// Open through `opener` (also used to reopen after a write error); `path` names the
    /// file in messages.
    pub fn open_with(path: &Path, opener: Opener) -> Result<State, StoreError> {
        redb_file::open_with(path, opener).map(State::from_file)
    }

    /// Cluster mode (#31): an empty state over `store`; each tenant's entries are read in
    /// when this member takes the tenant ([`State::adopt`]) and dropped when it loses it
    /// ([`State::forget`]).
    pub fn over(store: impl Storage + 'static) -> State {
        State {
            store: Some(Box::new(store)),
            ..State::default()
        }
    }

    /// Take in the entries of `tenant` (read from the cluster's store when this member took
    /// its lease), replacing whatever was held of it.
    pub fn adopt(&mut self, tenant: &str, loaded: Loaded) {
        self.forget(tenant);
        self.absorb(loaded, |t| t == tenant);
    }

    /// Add to the indexes the entries of `loaded` whose tenant `keep` accepts.
    fn absorb(&mut self, loaded: Loaded, keep: impl Fn(&str) -> bool) {
        let Loaded {
            done,
            actions_seen,
            last_runs,
            discovered,
            watermarks,
            reconciled,
            tracked,
            not_run,
            attempts,
            ran,
            script_sets,
            identities,
        } = loaded;
        self.done
            .extend(done.iter().filter(|k| keep(&k.tenant)).map(Done::new));
        self.actions_seen.extend(
            actions_seen
                .iter()
                .filter(|(t, _)| keep(t))
                .map(|(t, a)| Pair::new(t, a)),
        );
        self.last_runs.extend(
            last_runs
                .into_iter()
                .filter(|(k, _)| keep(&k.0))
                .map(|(k, r)| (Series::new(&k), r)),
        );
        self.discovered
            .extend(discovered.into_iter().filter(|(t, _)| keep(t)));
        self.watermarks
            .extend(watermarks.into_iter().filter(|(t, _)| keep(t)));
        self.reconciled
            .extend(reconciled.into_iter().filter(|(t, _)| keep(t)));
        self.tracked
            .extend(tracked.into_iter().filter(|((t, _), _)| keep(t)));
        self.not_run
            .extend(not_run.iter().filter(|k| keep(&k.tenant)).map(Done::new));
        self.attempts.extend(
            attempts
                .into_iter()
                .filter(|(k, _)| keep(&k.0))
                .map(|(k, a)| (Series::new(&k), a)),
        );
        self.ran.extend(
            ran.into_iter()
                .filter(|(k, _)| keep(&k.0))
                .map(|(k, a)| (Series::new(&k), a)),
        );
        self.script_sets
            .extend(script_sets.into_iter().filter(|(k, _)| keep(&k.0)));
        self.identities
            .extend(identities.into_iter().filter(|(t, _)| keep(t)));
    }

    /// Drop what is held of `tenant` in memory (its stored entries stay): this member lost
    /// or gave up its lease.
    pub fn forget(&mut self, tenant: &str) {
        let other = |t: &str| t != tenant;
        self.done.retain(|k| other(k.tenant()));
        self.actions_seen.retain(|p| other(p.tenant()));
        self.last_runs.retain(|k, _| other(k.tenant()));
        self.discovered.retain(|t, _| other(t));
        self.watermarks.retain(|t, _| other(t));
        self.reconciled.retain(|t, _| other(t));
        self.tracked.retain(|(t, _), _| other(t));
        self.not_run.retain(|k| other(k.tenant()));
        self.attempts.retain(|k, _| other(k.tenant()));
        self.ran.retain(|k, _| other(k.tenant()));
        self.script_sets.retain(|k, _| other(&k.0));
        self.identities.retain(|t, _| other(t));
    }

    /// Everything held, as a store would load it (`--state.import` copies a file's state
    /// into the cluster's database with it).
    pub fn into_loaded(self) -> Loaded {
        Loaded {
            done: self.done.iter().map(Done::key).collect(),
            actions_seen: self
                .actions_seen
                .iter()
                .map(|p| (p.tenant().to_string(), p.action_id().to_string()))
                .collect(),
            last_runs: self
                .last_runs
                .into_iter()
                .map(|(k, r)| (k.key(), r))
                .collect(),
            discovered: self.discovered,
            watermarks: self.watermarks,
            reconciled: self.reconciled,
            tracked: self.tracked,
            not_run: self.not_run.iter().map(Done::key).collect(),
            attempts: self
                .attempts
                .into_iter()
                .map(|(k, a)| (k.key(), a))
                .collect(),
            ran: self.ran.into_iter().map(|(k, a)| (k.key(), a)).collect(),
            script_sets: self.script_sets,
            identities: self.identities,
        }
    }

    /// The state read from a store, written to it from now on.
    fn from_file((store, loaded): (impl Storage + 'static, Loaded)) -> State {
        let mut state = State::over(store);
        state.absorb(loaded, |_| true);
        state
    }

    /// Apply `writes` to the storage, if any, in one transaction.
    fn apply(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        match &mut self.store {
            Some(store) => store.apply(writes),
            None => Ok(()),
        }
    }

    /// Count failed state writes in this counter (`mde_exporter_state_write_errors_total`).
    pub fn count_write_errors_in(&mut self, counter: Counter) {
        if let Some(store) = &mut self.store {
            store.count_write_errors_in(counter);
        }
    }

    /// When discovery last completed for a tenant.
    pub fn last_discovery(&self, tenant: &str) -> Option<DateTime<Utc>> {
        self.discovered
            .get(tenant)
            .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(*ms))
    }

    /// Remember that discovery completed at `at`.
    pub fn set_last_discovery(
        &mut self,
        tenant: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ms = at.timestamp_millis();
        self.apply(&[Write::Discovered { tenant, at_ms: ms }])?;
        self.discovered.insert(tenant.to_string(), ms);
        Ok(())
    }

    /// How many results are done (counted or given up).
    pub fn done_len(&self) -> usize {
        self.done.len()
    }

    pub fn is_done(&self, key: &ResultKey) -> bool {
        self.done.contains(&Done::new(key))
    }

    /// Mark a result counted (or given up), durably. Returns false if it already was.
    pub fn mark_done(&mut self, key: ResultKey) -> Result<bool, StoreError> {
        Ok(self.commit_result(key, None)? != Committed::AlreadyDone)
    }

    /// Mark a result done and, for a transcript, offer its run as the latest of its series;
    /// both in one durable transaction, before anything is counted.
    pub fn commit_result(
        &mut self,
        key: ResultKey,
        run: Option<(SeriesKey, LastRun)>,
    ) -> Result<Committed, StoreError> {
        self.commit_result_with_set(key, run, None)
    }

    /// As [`State::commit_result`], writing in the same transaction the script_metrics set
    /// the transcript gave (#21): after a restart or a kill -9 the set is served at once and
    /// the transcript is not fetched again.
    pub fn commit_result_with_set(
        &mut self,
        key: ResultKey,
        run: Option<(SeriesKey, LastRun)>,
        set: Option<(SeriesKey, Vec<u8>)>,
    ) -> Result<Committed, StoreError> {
        let done = Done::new(&key);
        if self.done.contains(&done) {
            return Ok(Committed::AlreadyDone);
        }
        let newer = run
            .map(|(k, r)| (Series::new(&k), k, r))
            .filter(|(series, _, run)| {
                self.last_runs
                    .get(series)
                    .is_none_or(|existing| existing.end_time <= run.end_time)
            });
        let mut writes = vec![Write::Done(&key)];
        if let Some((_, key, run)) = &newer {
            writes.push(Write::Run(key, run));
        }
        if let Some((series, set)) = &set {
            writes.push(Write::ScriptSet(series, set));
        }
        self.apply(&writes)?;
        let update = match newer {
            Some((series, _, run)) => {
                self.last_runs.insert(series, run);
                RunUpdate::Latest
            }
            None => RunUpdate::Older,
        };
        self.done.insert(done);
        Ok(Committed::Done(update))
    }

    pub fn action_seen(&self, tenant: &str, action_id: &str) -> bool {
        self.actions_seen.contains(&Pair::new(tenant, action_id))
    }

    /// Mark a final action counted, durably. Returns false if it already was.
    pub fn mark_action_seen(&mut self, tenant: &str, action_id: &str) -> Result<bool, StoreError> {
        let pair = Pair::new(tenant, action_id);
        if self.actions_seen.contains(&pair) {
            return Ok(false);
        }
        self.apply(&[Write::ActionSeen { tenant, action_id }])?;
        Ok(self.actions_seen.insert(pair))
    }

    /// The discovery watermark of a tenant: the newest `creationDateTimeUtc` listed.
    pub fn watermark(&self, tenant: &str) -> Option<DateTime<Utc>> {
        self.watermarks
            .get(tenant)
            .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(*ms))
    }

    /// When the last reconciliation sweep of a tenant ran.
    pub fn last_reconcile(&self, tenant: &str) -> Option<DateTime<Utc>> {
        self.reconciled
            .get(tenant)
            .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(*ms))
    }

    /// The actions of a tenant followed by id.
    pub fn tracked(&self, tenant: &str) -> Vec<(String, Tracked)> {
        self.tracked_of(tenant)
            .map(|((_, id), tr)| (id.clone(), tr.clone()))
            .collect()
    }

    /// The entries of `tenant` in `tracked`, found by their place in the order (a poll asks
    /// for its own several times: a scan of every tenant's would cost each poll what the
    /// whole fleet follows, #34).
    fn tracked_of<'a>(
        &'a self,
        tenant: &'a str,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Tracked)> + 'a {
        self.tracked
            .range((tenant.to_string(), String::new())..)
            .take_while(move |((t, _), _)| t == tenant)
    }

    /// Commit what a discovery pass learnt (actions to follow or forget, the watermark, the
    /// sweep time) in one durable transaction. Unchanged entries are not written again.
    pub fn commit_discovery(&mut self, u: DiscoveryUpdate) -> Result<(), StoreError> {
        let t = &u.tenant;
        let upsert: Vec<&(String, Tracked)> = u
            .upsert
            .iter()
            .filter(|(id, tr)| self.tracked.get(&(t.clone(), id.clone())) != Some(tr))
            .collect();
        let remove: Vec<&String> = u
            .remove
            .iter()
            .filter(|id| self.tracked.contains_key(&(t.clone(), (*id).clone())))
            .collect();
        let watermark = u
            .watermark
            .map(|w| w.timestamp_millis())
            .filter(|w| self.watermarks.get(t) != Some(w));
        let reconciled = u.reconciled.map(|w| w.timestamp_millis());
        if upsert.is_empty() && remove.is_empty() && watermark.is_none() && reconciled.is_none() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(upsert.len() + remove.len() + 2);
        for (id, tr) in &upsert {
            writes.push(Write::Track {
                tenant: t,
                action_id: id,
                tracked: tr,
            });
        }
        for id in &remove {
            writes.push(Write::Untrack {
                tenant: t,
                action_id: id,
            });
        }
        if let Some(w) = watermark {
            writes.push(Write::Watermark {
                tenant: t,
                at_ms: w,
            });
        }
        if let Some(r) = reconciled {
            writes.push(Write::Reconciled {
                tenant: t,
                at_ms: r,
            });
        }
        self.apply(&writes)?;
        for (id, tr) in upsert {
            self.tracked.insert((t.clone(), id.clone()), tr.clone());
        }
        for id in remove {
            self.tracked.remove(&(t.clone(), id.clone()));
        }
        if let Some(w) = watermark {
            self.watermarks.insert(t.clone(), w);
        }
        if let Some(r) = reconciled {
            self.reconciled.insert(t.clone(), r);
        }
        Ok(())
    }

    /// The script_metrics sets the file held when it was opened (#21), handed over once for
    /// the restore at start: the state does not hold them in memory after that (the
    /// script-output store holds the sets; their JSON copy would be a second 20 MB with
    /// 200,000 script series). Empty on a second call.
    pub fn take_script_sets(&mut self) -> BTreeMap<SeriesKey, Vec<u8>> {
        std::mem::take(&mut self.script_sets)
    }

    /// Forget the script_metrics sets of `keys` (expired).
    pub fn remove_script_sets(&mut self, keys: &[SeriesKey]) -> Result<(), StoreError> {
        // From the file only: the sets in memory were handed over at start.
        self.remove(PerMachine::ScriptSets, keys)
    }

    /// Remove per-machine entries of one kind from the storage, in one transaction.
    fn remove(&mut self, kind: PerMachine, keys: &[SeriesKey]) -> Result<(), StoreError> {
        let writes: Vec<Write<'_>> = keys.iter().map(|k| Write::Remove(kind, k)).collect();
        self.apply(&writes)
    }

    /// Hold every kept transcript excerpt to `policy` (see `Excerpt::under`): those it
    /// changes are written back in one transaction, so a stricter `transcript_log` reaches
    /// what the state file holds too. Returns how many changed.
    pub fn restrict_excerpts(
        &mut self,
        policy: &crate::config::Redaction,
    ) -> Result<usize, StoreError> {
        let changed: Vec<(Series, LastRun)> = self
            .last_runs
            .iter()
            .filter_map(|(k, run)| {
                let e = run.excerpt.as_ref()?;
                let held = e.under(policy);
                (held != *e).then(|| {
                    let mut run = run.clone();
                    run.excerpt = Some(held);
                    (k.clone(), run)
                })
            })
            .collect();
        let keys: Vec<SeriesKey> = changed.iter().map(|(k, _)| k.key()).collect();
        let writes: Vec<Write<'_>> = keys
            .iter()
            .zip(&changed)
            .map(|(k, (_, r))| Write::Run(k, r))
            .collect();
        self.apply(&writes)?;
        let n = changed.len();
        for (k, r) in changed {
            self.last_runs.insert(k, r);
        }
        Ok(n)
    }

    /// Every series' latest run, in the order of their keys: (tenant, machine, script).
    pub fn last_runs(&self) -> impl Iterator<Item = ((&str, &str, &str), &LastRun)> {
        self.last_runs.iter().map(|(k, r)| (k.parts(), r))
    }

    /// The latest run of `series`.
    pub fn last_run(&self, series: &SeriesKey) -> Option<&LastRun> {
        self.last_runs.get(&Series::new(series))
    }

    /// How many series have a latest run.
    pub fn last_runs_len(&self) -> usize {
        self.last_runs.len()
    }

    /// Drop series whose run ended before their tenant's `cutoff`, then the oldest beyond
    /// `max`. Returns the keys removed so the gauges can be removed too.
    pub fn expire(&mut self, cutoff: Cutoff<'_>, max: usize) -> Result<Vec<SeriesKey>, StoreError> {
        let runs = self.last_runs.iter().map(|(k, r)| (r.end_time, k));
        let gone = expired(runs, Series::tenant, cutoff, max);
        let removed: Vec<SeriesKey> = gone.iter().map(Series::key).collect();
        self.remove(PerMachine::Runs, &removed)?;
        for k in &gone {
            self.last_runs.remove(k);
        }
        Ok(removed)
    }
}

/// Whether `attempt` is newer than `than`: a later `lastUpdateDateTimeUtc`, or the same
/// instant and a run over a not-run (so the gauge does not flap).
fn is_newer(attempt: &Attempt, than: Option<&Attempt>) -> bool {
    than.is_none_or(|a| a.at < attempt.at || (a.at == attempt.at && attempt.ran && !a.ran))
}

/// Where `series_ttl` cuts, per tenant: entries older than it expire. `None`: the tenant's
/// clock refuses the judgement (see `crate::api::clock`) and none of its entries expires by age;
/// the cap `max` applies all the same.
pub type Cutoff<'a> = &'a dyn Fn(&str) -> Option<DateTime<Utc>>;

/// Which per-machine entries expire: every one older than its tenant's `cutoff`, and the
/// oldest beyond `max`.
fn expired<'a, K: Ord + Clone + 'a>(
    entries: impl Iterator<Item = (DateTime<Utc>, &'a K)>,
    tenant: impl Fn(&K) -> &str,
    cutoff: Cutoff<'_>,
    max: usize,
) -> Vec<K> {
    let mut by_age: Vec<(DateTime<Utc>, &K)> = entries.collect();
    by_age.sort();
    let over = by_age.len().saturating_sub(max);
    by_age
        .into_iter()
        .enumerate()
        .filter(|(i, (at, k))| *i < over || cutoff(tenant(k)).is_some_and(|c| *at < c))
        .map(|(_, (_, k))| k.clone())
        .collect()
}

#[cfg(test)]
mod tests;
