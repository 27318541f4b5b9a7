//! What the exporter remembers between polls: results already counted, final actions already
//! counted, and the latest run per (tenant, machine, script) behind the per-machine gauges;
//! since schema 2 (#9) also the discovery watermark, the actions followed by id (in flight, or
//! final with results to fetch), the RunScript commands counted as not run and the latest
//! attempt behind `mde_liveresponse_script_not_run`.
//!
//! Owns the exactly-once bookkeeping and the expiry/cap of per-machine series. With a
//! `state_path` every change is committed to an embedded redb file before it is counted, so a
//! restart (even `kill -9`) neither counts a result twice nor loses the per-machine gauges.
//! Without one it lives in memory only.

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DONE: TableDefinition<&str, u8> = TableDefinition::new("done");
const ACTIONS: TableDefinition<&str, u8> = TableDefinition::new("actions_seen");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("last_runs");
const DISCOVERY: TableDefinition<&str, i64> = TableDefinition::new("discovery");
/// Schema 2 (#9): per tenant, the newest `creationDateTimeUtc` listed (Unix ms).
const WATERMARKS: TableDefinition<&str, i64> = TableDefinition::new("discovery_watermark");
/// Schema 2: per tenant, when the last full-window reconciliation sweep ran (Unix ms).
const RECONCILED: TableDefinition<&str, i64> = TableDefinition::new("discovery_reconciled");
/// Schema 2: actions followed by id, [tenant, action id] → JSON [`Tracked`].
const TRACKED: TableDefinition<&str, &[u8]> = TableDefinition::new("tracked_actions");
/// Schema 2: RunScript commands counted as not run, [tenant, action id, index].
const NOT_RUN: TableDefinition<&str, u8> = TableDefinition::new("not_run_done");
/// Schema 2: the latest attempt per series that ever had a not-run, key as `last_runs`.
const ATTEMPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("script_attempts");
/// The layout of the state file this version writes and reads. 1 → 2 (#9) only adds tables,
/// so a schema-1 file is migrated by creating them and writing the new number.
pub const SCHEMA: u64 = 2;

/// A state file problem; every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open state file {path}: {message}. If it is corrupt, move it away (or start once with --state.reset, which does that): the exporter then starts afresh and counts again the results still inside each tenant's lookback window"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "state file {path} was written by a newer version of the exporter (state schema {found}, this version reads {SCHEMA}): run that version or newer, or move the file away"
    )]
    Newer { path: PathBuf, found: u64 },
    #[error("state file {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// One command result: (tenant, action id, command index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultKey {
    pub tenant: String,
    pub action_id: String,
    pub index: u32,
}

/// The latest run of a script on a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub end_time: DateTime<Utc>,
    pub exit_code: i64,
    pub errors_present: bool,
    pub action_id: String,
    /// What the transcript page shows of this run (#22), committed with it; absent in files
    /// written before, so the field is optional in both directions (state format: added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<crate::excerpt::Excerpt>,
}

/// (tenant, machine, script).
pub type SeriesKey = (String, String, String);

/// An action discovery follows by id: not final yet, or final with results still to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub created: DateTime<Utc>,
    /// The status last seen (`Pending`, `InProgress`, or a final one).
    pub status: String,
}

/// The latest attempt to run a script on a machine, by the action's `lastUpdateDateTimeUtc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// Whether the command ran (Completed); false: it never ran.
    pub ran: bool,
    pub action_id: String,
}

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
    done: HashSet<ResultKey>,
    actions_seen: HashSet<(String, String)>,
    last_runs: BTreeMap<SeriesKey, LastRun>,
    /// Per tenant: when discovery last completed (Unix ms), so that after a long outage the
    /// next discovery looks back far enough to miss no finished command.
    discovered: BTreeMap<String, i64>,
    /// Per tenant: the discovery watermark (Unix ms).
    watermarks: BTreeMap<String, i64>,
    /// Per tenant: the last reconciliation sweep (Unix ms).
    reconciled: BTreeMap<String, i64>,
    /// Actions followed by id, per (tenant, action id).
    tracked: BTreeMap<(String, String), Tracked>,
    /// RunScript commands already counted as not run.
    not_run: HashSet<ResultKey>,
    /// Latest attempt per series that ever had a not-run.
    attempts: BTreeMap<SeriesKey, Attempt>,
    /// The file behind it, if any.
    store: Option<Store>,
}

/// How the state file is opened, and opened again after a write error: from its path; tests
/// plug in a storage backend that fails like a full disk.
pub type Opener = Arc<dyn Fn() -> Result<redb::Database, String> + Send + Sync>;

struct Store {
    /// `None` only between closing and reopening after a write error.
    db: Option<redb::Database>,
    path: PathBuf,
    opener: Opener,
    /// A write failed and the file has not been reopened since: the next write reopens first.
    /// (After an I/O error redb refuses every later write until the database is reopened.)
    broken: bool,
    /// `mde_exporter_state_write_errors_total`.
    write_errors: Counter,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// The text of a panic caught from the storage library.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// redb's page cache. Its default, 1 GiB, let the process grow with its state file: the
/// whole file is read into memory once at start and only written after, so the cache only
/// holds pages being written and a few recently read ones. See: #11
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Open the file at `path` with redb, its integrity checked. redb panics on some corruptions
/// (a flipped byte can reach an `unreachable!`): that is caught and reported as an error.
fn open_file(path: &Path) -> Result<redb::Database, String> {
    match catch_unwind(|| {
        redb::Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
    }) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!(
            "the file is corrupt (reading it failed: {})",
            panic_text(p.as_ref())
        )),
    }
}

fn done_key(k: &ResultKey) -> String {
    // JSON keeps the parts apart whatever characters they hold.
    serde_json::json!([k.tenant, k.action_id, k.index]).to_string()
}

/// The [`ResultKey`] a [`done_key`] was made from (`None` for a key this version cannot read).
fn parse_done_key(key: &str) -> Option<ResultKey> {
    let (tenant, action_id, index) = serde_json::from_str::<(String, String, u32)>(key).ok()?;
    Some(ResultKey {
        tenant,
        action_id,
        index,
    })
}

fn action_key(tenant: &str, action_id: &str) -> String {
    serde_json::json!([tenant, action_id]).to_string()
}

fn series_key(k: &SeriesKey) -> String {
    serde_json::json!([k.0, k.1, k.2]).to_string()
}

impl Store {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Run `f` in one write transaction, committed durably before returning. After a write
    /// error (a full disk, an I/O error) the file is closed, opened again and the write tried
    /// once more; if that fails too, the next write starts by reopening. So the exporter
    /// recovers by itself once the disk does.
    fn write<R>(
        &mut self,
        f: impl Fn(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        match self.write_once(&f) {
            Ok(r) => Ok(r),
            Err(first) => {
                self.write_errors.inc();
                self.broken = true;
                tracing::warn!(path = %self.path.display(), error = %first, "state write failed; reopening the state file to try again");
                self.write_once(&f).inspect_err(|_| {
                    self.write_errors.inc();
                    self.broken = true;
                })
            }
        }
    }

    /// One try, reopening first if an earlier write failed.
    fn write_once<R>(
        &mut self,
        f: &impl Fn(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        if self.broken || self.db.is_none() {
            self.reopen()?;
        }
        self.try_write(f)
    }

    fn try_write<R>(
        &self,
        f: &impl Fn(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        let db = self.db.as_ref().ok_or_else(|| self.err("not open"))?;
        catch_unwind(AssertUnwindSafe(|| {
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            let r = f(&txn).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
            Ok(r)
        }))
        .unwrap_or_else(|p| Err(self.err(panic_text(p.as_ref()))))
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        // Close first: redb holds a lock on the file while it is open.
        self.db = None;
        let db = (self.opener)()
            .map_err(|m| self.err(format!("cannot reopen after a write error: {m}")))?;
        self.db = Some(db);
        self.broken = false;
        tracing::info!(path = %self.path.display(), "state file reopened");
        Ok(())
    }
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
        let Some(path) = path else {
            return Ok(State::default());
        };
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "the file is empty (0 bytes): it was truncated, or it is not a state file this exporter wrote".into(),
            });
        }
        let owned = path.to_path_buf();
        State::open_with(path, Arc::new(move || open_file(&owned)))
    }

    /// Open through `opener` (also used to reopen after a write error); `path` names the
    /// file in messages.
    pub fn open_with(path: &Path, opener: Opener) -> Result<State, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = opener().map_err(|e| open_err(&e))?;
        let mut store = Store {
            db: Some(db),
            path: path.to_path_buf(),
            opener,
            broken: false,
            write_errors: Counter::default(),
        };
        // Make sure every table exists and the schema is one we understand.
        let found = store
            .write(|txn| {
                let mut meta = txn.open_table(META)?;
                let found = meta.get("schema")?.map(|v| v.value());
                // New file, or an older schema this version migrates (1 → 2 adds tables).
                if found.is_none_or(|f| f < SCHEMA) {
                    meta.insert("schema", SCHEMA)?;
                }
                txn.open_table(DONE)?;
                txn.open_table(ACTIONS)?;
                txn.open_table(RUNS)?;
                txn.open_table(DISCOVERY)?;
                txn.open_table(WATERMARKS)?;
                txn.open_table(RECONCILED)?;
                txn.open_table(TRACKED)?;
                txn.open_table(NOT_RUN)?;
                txn.open_table(ATTEMPTS)?;
                Ok(found)
            })
            .map_err(|e| match e {
                StoreError::Io { message, .. } => open_err(&message),
                other => other,
            })?;
        if let Some(found) = found.filter(|f| *f > SCHEMA) {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found,
            });
        }
        let mut state = State::default();
        let Some(db) = store.db.as_ref() else {
            return Err(open_err(&"not open"));
        };
        let loaded = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
            let read = db.begin_read()?;
            for entry in read.open_table(DONE)?.iter()? {
                let (k, _) = entry?;
                if let Some(key) = parse_done_key(k.value()) {
                    state.done.insert(key);
                }
            }
            for entry in read.open_table(ACTIONS)?.iter()? {
                let (k, _) = entry?;
                if let Ok(pair) = serde_json::from_str::<(String, String)>(k.value()) {
                    state.actions_seen.insert(pair);
                }
            }
            for entry in read.open_table(DISCOVERY)?.iter()? {
                let (k, v) = entry?;
                state.discovered.insert(k.value().to_string(), v.value());
            }
            for entry in read.open_table(WATERMARKS)?.iter()? {
                let (k, v) = entry?;
                state.watermarks.insert(k.value().to_string(), v.value());
            }
            for entry in read.open_table(RECONCILED)?.iter()? {
                let (k, v) = entry?;
                state.reconciled.insert(k.value().to_string(), v.value());
            }
            for entry in read.open_table(TRACKED)?.iter()? {
                let (k, v) = entry?;
                if let (Ok(pair), Ok(t)) = (
                    serde_json::from_str::<(String, String)>(k.value()),
                    serde_json::from_slice::<Tracked>(v.value()),
                ) {
                    state.tracked.insert(pair, t);
                }
            }
            for entry in read.open_table(NOT_RUN)?.iter()? {
                let (k, _) = entry?;
                if let Some(key) = parse_done_key(k.value()) {
                    state.not_run.insert(key);
                }
            }
            for entry in read.open_table(ATTEMPTS)?.iter()? {
                let (k, v) = entry?;
                if let (Ok(key), Ok(a)) = (
                    serde_json::from_str::<SeriesKey>(k.value()),
                    serde_json::from_slice::<Attempt>(v.value()),
                ) {
                    state.attempts.insert(key, a);
                }
            }
            for entry in read.open_table(RUNS)?.iter()? {
                let (k, v) = entry?;
                if let (Ok(key), Ok(run)) = (
                    serde_json::from_str::<SeriesKey>(k.value()),
                    serde_json::from_slice::<LastRun>(v.value()),
                ) {
                    state.last_runs.insert(key, run);
                }
            }
            Ok(())
        }));
        match loaded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(open_err(&e)),
            Err(p) => {
                return Err(open_err(&format!(
                    "the file is corrupt (reading it failed: {})",
                    panic_text(p.as_ref())
                )));
            }
        }
        state.store = Some(store);
        Ok(state)
    }

    /// Count failed state writes in this counter (`mde_exporter_state_write_errors_total`).
    pub fn count_write_errors_in(&mut self, counter: Counter) {
        if let Some(store) = &mut self.store {
            store.write_errors = counter;
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
        if let Some(store) = &mut self.store {
            store.write(|txn| {
                txn.open_table(DISCOVERY)?.insert(tenant, ms)?;
                Ok(())
            })?;
        }
        self.discovered.insert(tenant.to_string(), ms);
        Ok(())
    }

    /// How many results are done (counted or given up).
    pub fn done_len(&self) -> usize {
        self.done.len()
    }

    pub fn is_done(&self, key: &ResultKey) -> bool {
        self.done.contains(key)
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
        if self.done.contains(&key) {
            return Ok(Committed::AlreadyDone);
        }
        let newer = run.filter(|(series, run)| {
            self.last_runs
                .get(series)
                .is_none_or(|existing| existing.end_time <= run.end_time)
        });
        if let Some(store) = &mut self.store {
            let encoded = match &newer {
                Some((series, run)) => Some((
                    series_key(series),
                    serde_json::to_vec(run).map_err(|e| store.err(e))?,
                )),
                None => None,
            };
            store.write(|txn| {
                txn.open_table(DONE)?.insert(done_key(&key).as_str(), 1u8)?;
                if let Some((k, v)) = &encoded {
                    txn.open_table(RUNS)?.insert(k.as_str(), v.as_slice())?;
                }
                Ok(())
            })?;
        }
        let update = match newer {
            Some((series, run)) => {
                self.last_runs.insert(series, run);
                RunUpdate::Latest
            }
            None => RunUpdate::Older,
        };
        self.done.insert(key);
        Ok(Committed::Done(update))
    }

    pub fn action_seen(&self, tenant: &str, action_id: &str) -> bool {
        self.actions_seen
            .contains(&(tenant.to_string(), action_id.to_string()))
    }

    /// Mark a final action counted, durably. Returns false if it already was.
    pub fn mark_action_seen(&mut self, tenant: &str, action_id: &str) -> Result<bool, StoreError> {
        let pair = (tenant.to_string(), action_id.to_string());
        if self.actions_seen.contains(&pair) {
            return Ok(false);
        }
        if let Some(store) = &mut self.store {
            store.write(|txn| {
                txn.open_table(ACTIONS)?
                    .insert(action_key(tenant, action_id).as_str(), 1u8)?;
                Ok(())
            })?;
        }
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
        self.tracked
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, id), tr)| (id.clone(), tr.clone()))
            .collect()
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
        if let Some(store) = &mut self.store {
            let mut encoded = Vec::with_capacity(upsert.len());
            for (id, tr) in &upsert {
                encoded.push((
                    action_key(t, id),
                    serde_json::to_vec(tr).map_err(|e| store.err(e))?,
                ));
            }
            store.write(|txn| {
                let mut table = txn.open_table(TRACKED)?;
                for (k, v) in &encoded {
                    table.insert(k.as_str(), v.as_slice())?;
                }
                for id in &remove {
                    table.remove(action_key(t, id).as_str())?;
                }
                if let Some(w) = watermark {
                    txn.open_table(WATERMARKS)?.insert(t.as_str(), w)?;
                }
                if let Some(r) = reconciled {
                    txn.open_table(RECONCILED)?.insert(t.as_str(), r)?;
                }
                Ok(())
            })?;
        }
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

    pub fn is_not_run_done(&self, key: &ResultKey) -> bool {
        self.not_run.contains(key)
    }

    /// Mark a RunScript command counted as not run and offer its attempt as the latest of its
    /// series, in one durable transaction, before anything is counted (like
    /// [`State::commit_result`]). `None`: it already was; else whether the attempt is now the
    /// latest of its series.
    pub fn commit_not_run(
        &mut self,
        key: ResultKey,
        series: SeriesKey,
        attempt: Attempt,
    ) -> Result<Option<RunUpdate>, StoreError> {
        if self.not_run.contains(&key) {
            return Ok(None);
        }
        let newer = self.is_newer_attempt(&series, &attempt);
        if let Some(store) = &mut self.store {
            let encoded = serde_json::to_vec(&attempt).map_err(|e| store.err(e))?;
            store.write(|txn| {
                txn.open_table(NOT_RUN)?
                    .insert(done_key(&key).as_str(), 1u8)?;
                if newer {
                    txn.open_table(ATTEMPTS)?
                        .insert(series_key(&series).as_str(), encoded.as_slice())?;
                }
                Ok(())
            })?;
        }
        self.not_run.insert(key);
        Ok(Some(if newer {
            self.attempts.insert(series, attempt);
            RunUpdate::Latest
        } else {
            RunUpdate::Older
        }))
    }

    /// A command that ran: it becomes the latest attempt of its series if that series already
    /// had a not-run (other series are not tracked, to keep the cardinality of
    /// `mde_liveresponse_script_not_run` to machines that had a problem).
    pub fn offer_ran(&mut self, series: SeriesKey, attempt: Attempt) -> Result<bool, StoreError> {
        if !self.attempts.contains_key(&series)
            || !self.is_newer_attempt(&series, &attempt)
            || self.attempts.get(&series) == Some(&attempt)
        {
            return Ok(false);
        }
        if let Some(store) = &mut self.store {
            let encoded = serde_json::to_vec(&attempt).map_err(|e| store.err(e))?;
            store.write(|txn| {
                txn.open_table(ATTEMPTS)?
                    .insert(series_key(&series).as_str(), encoded.as_slice())?;
                Ok(())
            })?;
        }
        self.attempts.insert(series, attempt);
        Ok(true)
    }

    fn is_newer_attempt(&self, series: &SeriesKey, attempt: &Attempt) -> bool {
        self.attempts.get(series).is_none_or(|a| {
            // Same instant: a run wins over a not-run, so the gauge does not flap.
            a.at < attempt.at || (a.at == attempt.at && attempt.ran && !a.ran)
        })
    }

    pub fn attempts(&self) -> &BTreeMap<SeriesKey, Attempt> {
        &self.attempts
    }

    /// Drop attempts older than `cutoff`, then the oldest beyond `max`; returns their keys.
    pub fn expire_attempts(
        &mut self,
        cutoff: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<SeriesKey>, StoreError> {
        let removed = expired(self.attempts.iter().map(|(k, a)| (a.at, k)), cutoff, max);
        remove_keys(&mut self.store, ATTEMPTS, &removed)?;
        for k in &removed {
            self.attempts.remove(k);
        }
        Ok(removed)
    }

    pub fn last_runs(&self) -> &BTreeMap<SeriesKey, LastRun> {
        &self.last_runs
    }

    /// Drop series whose run ended before `cutoff`, then the oldest beyond `max`.
    /// Returns the keys removed so the gauges can be removed too.
    pub fn expire(
        &mut self,
        cutoff: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<SeriesKey>, StoreError> {
        let removed = expired(
            self.last_runs.iter().map(|(k, r)| (r.end_time, k)),
            cutoff,
            max,
        );
        remove_keys(&mut self.store, RUNS, &removed)?;
        for k in &removed {
            self.last_runs.remove(k);
        }
        Ok(removed)
    }
}

/// Which per-machine entries expire: every one older than `cutoff`, and the oldest beyond
/// `max`. Sorted by age, that is the first `max(older than cutoff, len - max)` of them.
fn expired<'a>(
    entries: impl Iterator<Item = (DateTime<Utc>, &'a SeriesKey)>,
    cutoff: DateTime<Utc>,
    max: usize,
) -> Vec<SeriesKey> {
    let mut by_age: Vec<(DateTime<Utc>, &SeriesKey)> = entries.collect();
    by_age.sort();
    let over = by_age.len().saturating_sub(max);
    by_age
        .into_iter()
        .enumerate()
        .filter(|(i, (at, _))| *i < over || *at < cutoff)
        .map(|(_, (_, k))| k.clone())
        .collect()
}

/// Remove `keys` from a per-machine table of the file, if there is one, in one transaction.
fn remove_keys(
    store: &mut Option<Store>,
    table: TableDefinition<&str, &[u8]>,
    keys: &[SeriesKey],
) -> Result<(), StoreError> {
    let Some(store) = store else {
        return Ok(());
    };
    if keys.is_empty() {
        return Ok(());
    }
    store.write(|txn| {
        let mut t = txn.open_table(table)?;
        for k in keys {
            t.remove(series_key(k).as_str())?;
        }
        Ok(())
    })
}

/// `--state.reset`: move the state file aside (renamed with the time, in the same
/// directory) so that the exporter starts afresh. Returns where it went, or `None` when there
/// was no file. Results still in each tenant's lookback window are then counted again.
pub fn reset(path: &Path, now: DateTime<Utc>) -> Result<Option<PathBuf>, StoreError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".reset-{}", now.format("%Y%m%dT%H%M%SZ")));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        message: format!("--state.reset cannot move it to {}: {e}", aside.display()),
    })?;
    Ok(Some(aside))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(secs: i64, code: i64) -> LastRun {
        LastRun {
            end_time: Utc.timestamp_opt(secs, 0).unwrap(),
            exit_code: code,
            errors_present: false,
            action_id: format!("a{secs}"),
            excerpt: None,
        }
    }

    fn series(m: &str) -> SeriesKey {
        ("t".into(), m.into(), "s.ps1".into())
    }

    fn rkey(action: &str, index: u32) -> ResultKey {
        ResultKey {
            tenant: "t".into(),
            action_id: action.into(),
            index,
        }
    }

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
        assert_eq!(s.last_runs()[&series("m")].exit_code, 1);
        s.commit_result(rkey("c", 0), Some((series("m"), run(300, 0))))
            .unwrap();
        assert_eq!(s.last_runs()[&series("m")].exit_code, 0);
        let again = s
            .commit_result(rkey("c", 0), Some((series("m"), run(400, 9))))
            .unwrap();
        assert_eq!(again, Committed::AlreadyDone);
        assert_eq!(s.last_runs()[&series("m")].exit_code, 0);
    }

    #[test]
    fn expiry_then_cap_oldest_first() {
        let mut s = State::default();
        for (i, m) in ["a", "b", "c", "d"].iter().enumerate() {
            s.commit_result(rkey(m, 0), Some((series(m), run(100 * (i as i64 + 1), 0))))
                .unwrap();
        }
        let removed = s.expire(Utc.timestamp_opt(150, 0).unwrap(), 2).unwrap();
        assert_eq!(removed, vec![series("a"), series("b")]);
        let removed = s.expire(Utc.timestamp_opt(0, 0).unwrap(), 1).unwrap();
        assert_eq!(removed, vec![series("c")]);
        assert_eq!(s.last_runs().len(), 1);
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
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let mut s = State::open(Some(&path)).unwrap();
            s.commit_result(rkey("a", 1), Some((series("m"), run(100, 3))))
                .unwrap();
            s.mark_done(rkey("a", 2)).unwrap();
            s.mark_action_seen("t", "a").unwrap();
            s.set_last_discovery("t", Utc.timestamp_opt(1000, 0).unwrap())
                .unwrap();
            s.commit_result(rkey("z", 0), Some((series("old"), run(5, 0))))
                .unwrap();
            s.expire(Utc.timestamp_opt(50, 0).unwrap(), 10).unwrap();
        }
        let s = State::open(Some(&path)).unwrap();
        assert!(s.is_done(&rkey("a", 1)) && s.is_done(&rkey("a", 2)) && s.is_done(&rkey("z", 0)));
        assert_eq!(s.done_len(), 3);
        assert!(s.action_seen("t", "a"));
        assert_eq!(
            s.last_discovery("t"),
            Some(Utc.timestamp_opt(1000, 0).unwrap())
        );
        assert_eq!(s.last_runs().len(), 1, "the expired series stays gone");
        assert_eq!(s.last_runs()[&series("m")].exit_code, 3);
    }

    // See: #9
    #[test]
    fn a_schema_1_file_is_migrated_and_keeps_what_it_knew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            // What version 1 wrote: its tables only, schema 1.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema", 1u64)
                .unwrap();
            txn.open_table(DONE)
                .unwrap()
                .insert(done_key(&rkey("a", 0)).as_str(), 1u8)
                .unwrap();
            txn.open_table(DISCOVERY)
                .unwrap()
                .insert("t", 5_000i64)
                .unwrap();
            txn.commit().unwrap();
        }
        let mut s = State::open(Some(&path)).unwrap();
        assert!(s.is_done(&rkey("a", 0)));
        assert_eq!(
            s.last_discovery("t"),
            Some(Utc.timestamp_opt(5, 0).unwrap())
        );
        assert_eq!(
            s.watermark("t"),
            None,
            "no watermark yet: a first discovery"
        );
        s.commit_discovery(DiscoveryUpdate {
            tenant: "t".into(),
            watermark: Some(Utc.timestamp_opt(9, 0).unwrap()),
            ..Default::default()
        })
        .unwrap();
        drop(s);
        let db = redb::Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        let schema = read
            .open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(schema, SCHEMA);
        drop(read);
        drop(db);
        let s = State::open(Some(&path)).unwrap();
        assert_eq!(s.watermark("t"), Some(Utc.timestamp_opt(9, 0).unwrap()));
    }

    // See: #9
    #[test]
    fn tracked_actions_watermark_and_not_run_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        let tracked = |st: &str| Tracked {
            created: at(10),
            status: st.into(),
        };
        {
            let mut s = State::open(Some(&path)).unwrap();
            s.commit_discovery(DiscoveryUpdate {
                tenant: "t".into(),
                upsert: vec![
                    ("a".into(), tracked("Pending")),
                    ("b".into(), tracked("InProgress")),
                ],
                watermark: Some(at(100)),
                reconciled: Some(at(50)),
                ..Default::default()
            })
            .unwrap();
            s.commit_discovery(DiscoveryUpdate {
                tenant: "t".into(),
                remove: vec!["b".into()],
                ..Default::default()
            })
            .unwrap();
            let attempt = |secs, ran| Attempt {
                at: at(secs),
                ran,
                action_id: format!("x{secs}"),
            };
            assert_eq!(
                s.commit_not_run(rkey("x", 1), series("m"), attempt(200, false))
                    .unwrap(),
                Some(RunUpdate::Latest)
            );
            assert_eq!(
                s.commit_not_run(rkey("x", 1), series("m"), attempt(200, false))
                    .unwrap(),
                None,
                "counted once"
            );
            // A run on a series that never had a not-run is not tracked.
            assert!(!s.offer_ran(series("other"), attempt(300, true)).unwrap());
            // An older run does not hide the newer not-run; a later one does.
            assert!(!s.offer_ran(series("m"), attempt(150, true)).unwrap());
            assert!(s.offer_ran(series("m"), attempt(250, true)).unwrap());
        }
        let s = State::open(Some(&path)).unwrap();
        assert_eq!(s.watermark("t"), Some(at(100)));
        assert_eq!(s.last_reconcile("t"), Some(at(50)));
        assert_eq!(s.tracked("t"), vec![("a".to_string(), tracked("Pending"))]);
        assert!(s.tracked("u").is_empty());
        assert!(s.is_not_run_done(&rkey("x", 1)));
        assert!(s.attempts()[&series("m")].ran);
        assert_eq!(s.attempts().len(), 1);
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
        let removed = s
            .expire_attempts(Utc.timestamp_opt(150, 0).unwrap(), 10)
            .unwrap();
        assert_eq!(removed, vec![series("a")]);
        let removed = s
            .expire_attempts(Utc.timestamp_opt(0, 0).unwrap(), 1)
            .unwrap();
        assert_eq!(removed, vec![series("b")]);
        assert!(s.is_not_run_done(&rkey("a", 0)), "still counted once");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        std::fs::write(&path, b"this is not a redb file at all, just some text").unwrap();
        let err = State::open(Some(&path)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot open state file {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("move it away"), "{err}");
    }

    fn filled(path: &Path) {
        let mut s = State::open(Some(path)).unwrap();
        for i in 0..200 {
            s.commit_result(
                rkey(&format!("action-{i}"), 0),
                Some((series(&format!("m{i}")), run(100 + i, 0))),
            )
            .unwrap();
        }
    }

    /// See: #13. A file truncated to 0 bytes is not a fresh start.
    #[test]
    fn an_empty_file_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        filled(&path);
        std::fs::File::create(&path).unwrap();
        let err = State::open(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot open state file {}: the file is empty (0 bytes): it was truncated, or it is not a state file this exporter wrote. If it is corrupt, move it away (or start once with --state.reset, which does that): the exporter then starts afresh and counts again the results still inside each tenant's lookback window",
                path.display()
            )
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    }

    /// See: #13. Flipped bytes anywhere in the file: open either reads the state or stops
    /// with the documented message; it never panics and never forgets silently.
    #[test]
    fn flipped_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        filled(&path);
        let good = std::fs::read(&path).unwrap();
        let mut refused = 0;
        let step = (good.len() / 41).max(1);
        for at in (0..good.len()).step_by(step) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, &bad).unwrap();
            match State::open(Some(&path)) {
                Ok(s) => assert!(
                    s.done_len() == 200 || s.done_len() == 0,
                    "byte {at}: partly read state ({} results)",
                    s.done_len()
                ),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with(&format!("cannot open state file {}: ", path.display())),
                        "byte {at}: {e}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "no flip was noticed in {} bytes", good.len());
    }

    /// A redb backend over a file whose writes fail like a full disk while `full` is set.
    #[derive(Debug)]
    struct FlakyDisk {
        inner: redb::backends::FileBackend,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FlakyDisk {
        fn check(&self) -> Result<(), std::io::Error> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            } else {
                Ok(())
            }
        }
    }

    impl redb::StorageBackend for FlakyDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> Result<(), std::io::Error> {
            self.inner.close()
        }
    }

    /// See: #13. After a write error (ENOSPC) every later write used to fail until a restart;
    /// now the file is reopened and the write succeeds as soon as the disk has room again.
    #[test]
    fn recovers_when_the_disk_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opener: Opener = {
            let (path, full) = (path.clone(), full.clone());
            Arc::new(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| e.to_string())?;
                let inner = redb::backends::FileBackend::new(file).map_err(|e| e.to_string())?;
                redb::Database::builder()
                    .create_with_backend(FlakyDisk {
                        inner,
                        full: full.clone(),
                    })
                    .map_err(|e| e.to_string())
            })
        };
        let mut s = State::open_with(&path, opener).unwrap();
        let errors = Counter::default();
        s.count_write_errors_in(errors.clone());
        assert!(s.mark_done(rkey("before", 0)).unwrap());
        full.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            let e = s.mark_done(rkey("during", 0)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("state file {}: ", path.display())),
                "{e}"
            );
            assert!(!s.is_done(&rkey("during", 0)), "not done unless committed");
        }
        assert!(errors.get() >= 3, "{}", errors.get());
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(s.mark_done(rkey("during", 0)).unwrap());
        assert!(s.mark_done(rkey("after", 0)).unwrap());
        drop(s);
        let s = State::open(Some(&path)).unwrap();
        for k in ["before", "during", "after"] {
            assert!(s.is_done(&rkey(k, 0)), "{k}");
        }
    }

    #[test]
    fn reset_moves_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 4, 5, 6).unwrap();
        assert_eq!(reset(&path, at).unwrap(), None);
        filled(&path);
        let aside = reset(&path, at).unwrap().unwrap();
        assert_eq!(aside, dir.path().join("state.redb.reset-20261128T040506Z"));
        assert!(!path.exists() && aside.exists());
        assert_eq!(State::open(Some(&path)).unwrap().done_len(), 0);
        assert_eq!(State::open(Some(&aside)).unwrap().done_len(), 200);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = State::open(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "state file {} was written by a newer version of the exporter (state schema {}, this version reads {SCHEMA}): run that version or newer, or move the file away",
                path.display(),
                SCHEMA + 1
            )
        );
    }
}
