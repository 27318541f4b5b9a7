//! The state file, the embedded implementation of the state's [`Storage`]: its redb tables
//! and their encoding, the schema number and the migration of older files, opening (with an
//! integrity check, refusing an empty, corrupt or newer file) and reading it into a
//! [`Loaded`], durable write transactions that reopen the file after a write error, and
//! `--state.reset`.
//!
//! Owns the on-disk format (table names, keys as JSON arrays, values as JSON) and how a
//! [`Write`] reaches the disk. Does not own what is written when (the exactly-once rules of
//! `state`), the records written (`state::model`), nor the vocabulary of writes
//! (`state::storage`).
//! Tables are only ever added: an older file opens, and only the schema number is rewritten.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::lock;
use super::model::{Attempt, LastRun, ResultKey, SeriesKey, TenantIdentity, Tracked};
use super::storage::{Loaded, PerMachine, Storage, StoreError, Write};

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
/// Schema 3 (#20): the newest attempt that ran per series, key as `last_runs`, JSON [`Attempt`].
const RAN: TableDefinition<&str, &[u8]> = TableDefinition::new("script_ran");
/// Script output as metrics (#21): the current set per series, opaque bytes (the set's own
/// JSON, see `script_metrics::store`), written with the transcript that gave it. Added
/// without a schema change: an older version ignores it.
const SCRIPT_SETS: TableDefinition<&str, &[u8]> = TableDefinition::new("script_metric_sets");
/// #24: per tenant, whose history its entries are, JSON [`TenantIdentity`]. Added without a
/// schema change (an older version ignores it); a file without it adopts the identity
/// configured at its next start.
const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_identity");
/// The layout of the state file this version writes and reads. 1 → 2 (#9) and 2 → 3 (#20)
/// only add tables, so an older file is migrated by creating them and writing the new number.
pub const SCHEMA: u64 = 3;

/// How the state file is opened, and opened again after a write error: from its path; tests
/// plug in a storage backend that fails like a full disk.
pub type Opener = Arc<dyn Fn() -> Result<redb::Database, String> + Send + Sync>;

pub(super) struct Store {
    /// `None` only between closing and reopening after a write error.
    db: Option<redb::Database>,
    path: PathBuf,
    opener: Opener,
    /// A write failed and the file has not been reopened since: the next write reopens first.
    /// (After an I/O error redb refuses every later write until the database is reopened.)
    broken: bool,
    /// `mde_exporter_state_write_errors_total`.
    write_errors: Counter,
    /// The file as the last commit left it (its length and inode), when the path is a file:
    /// a file shorter than that, or another file, was truncated or replaced under the
    /// running exporter (#32 item 10).
    file: Option<FileMark>,
    /// That was seen (and logged): nothing more is written to the file.
    lost: bool,
}

/// A state file's length and identity after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileMark {
    len: u64,
    ino: u64,
}

impl FileMark {
    fn of(path: &Path) -> Option<FileMark> {
        let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let ino = 0;
        Some(FileMark { len: m.len(), ino })
    }
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
        self.check_file()?;
        let written = self.write_inner(f);
        if written.is_ok() {
            self.file = FileMark::of(&self.path);
        }
        written
    }

    /// The file is still the one the last commit left, at least as long (#32 item 10). A file
    /// truncated or replaced under the running exporter is not written to: a write would
    /// leave pages after a hole, or reopening would start an empty file silently, and the next
    /// start would refuse it or forget. Each refused write counts in
    /// `mde_exporter_state_write_errors_total` (so `MdeExporterStateWriteFailing` fires), and
    /// the first is logged as an error.
    fn check_file(&mut self) -> Result<(), StoreError> {
        let Some(mark) = self.file else {
            return Ok(());
        };
        let now = FileMark::of(&self.path);
        let problem = match now {
            None => "is gone".to_string(),
            Some(n) if n.ino != mark.ino => "was replaced by another file".to_string(),
            Some(n) if n.len < mark.len => format!(
                "was truncated ({} bytes, {} after the exporter's last write)",
                n.len, mark.len
            ),
            Some(_) => return Ok(()),
        };
        self.write_errors.inc();
        let message = format!(
            "the state file {problem} under the running exporter: nothing more is written to it; the counts held in memory are served until a restart, which needs the file moved away (or --state.reset)"
        );
        if !self.lost {
            self.lost = true;
            tracing::error!(path = %self.path.display(), "{message}");
        }
        Err(self.err(message))
    }

    fn write_inner<R>(
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

/// A write encoded for the file: a key in one table, inserted with its value or removed.
enum Encoded {
    Flag(TableDefinition<'static, &'static str, u8>, String),
    Time(TableDefinition<'static, &'static str, i64>, String, i64),
    Json(
        TableDefinition<'static, &'static str, &'static [u8]>,
        String,
        Vec<u8>,
    ),
    RemoveTime(TableDefinition<'static, &'static str, i64>, String),
    RemoveJson(
        TableDefinition<'static, &'static str, &'static [u8]>,
        String,
    ),
}

impl Encoded {
    /// The name of the table it goes to: consecutive writes to one table share one opening of
    /// it in a transaction.
    fn table(&self) -> &str {
        match self {
            Encoded::Flag(t, _) => t.name(),
            Encoded::Time(t, _, _) | Encoded::RemoveTime(t, _) => t.name(),
            Encoded::Json(t, _, _) | Encoded::RemoveJson(t, _) => t.name(),
        }
    }
}

/// Apply a run of writes to one table (`run` is not empty and shares one [`Encoded::table`]),
/// opening it once.
fn apply_run(txn: &redb::WriteTransaction, run: &[Encoded]) -> Result<(), redb::Error> {
    match &run[0] {
        Encoded::Flag(t, _) => {
            let mut table = txn.open_table(*t)?;
            for e in run {
                if let Encoded::Flag(_, k) = e {
                    table.insert(k.as_str(), 1u8)?;
                }
            }
        }
        Encoded::Time(t, _, _) | Encoded::RemoveTime(t, _) => {
            let mut table = txn.open_table(*t)?;
            for e in run {
                match e {
                    Encoded::Time(_, k, v) => {
                        table.insert(k.as_str(), *v)?;
                    }
                    Encoded::RemoveTime(_, k) => {
                        table.remove(k.as_str())?;
                    }
                    _ => {}
                }
            }
        }
        Encoded::Json(t, _, _) | Encoded::RemoveJson(t, _) => {
            let mut table = txn.open_table(*t)?;
            for e in run {
                match e {
                    Encoded::Json(_, k, v) => {
                        table.insert(k.as_str(), v.as_slice())?;
                    }
                    Encoded::RemoveJson(_, k) => {
                        table.remove(k.as_str())?;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// A record as the file keeps it: its JSON.
    fn json<T: serde::Serialize>(&self, v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| self.err(e))
    }

    fn encode(&self, w: &Write<'_>) -> Result<Vec<Encoded>, StoreError> {
        Ok(match *w {
            Write::Done(k) => vec![Encoded::Flag(DONE, done_key(k))],
            Write::Run(s, run) => vec![Encoded::Json(RUNS, series_key(s), self.json(run)?)],
            Write::ScriptSet(s, set) => {
                vec![Encoded::Json(SCRIPT_SETS, series_key(s), set.to_vec())]
            }
            Write::ActionSeen { tenant, action_id } => {
                vec![Encoded::Flag(ACTIONS, action_key(tenant, action_id))]
            }
            Write::Discovered { tenant, at_ms } => {
                vec![Encoded::Time(DISCOVERY, tenant.into(), at_ms)]
            }
            Write::Watermark { tenant, at_ms } => {
                vec![Encoded::Time(WATERMARKS, tenant.into(), at_ms)]
            }
            Write::Reconciled { tenant, at_ms } => {
                vec![Encoded::Time(RECONCILED, tenant.into(), at_ms)]
            }
            Write::Track {
                tenant,
                action_id,
                tracked,
            } => {
                vec![Encoded::Json(
                    TRACKED,
                    action_key(tenant, action_id),
                    self.json(tracked)?,
                )]
            }
            Write::Untrack { tenant, action_id } => {
                vec![Encoded::RemoveJson(TRACKED, action_key(tenant, action_id))]
            }
            Write::NotRun(k) => vec![Encoded::Flag(NOT_RUN, done_key(k))],
            Write::Attempt(s, a) => vec![Encoded::Json(ATTEMPTS, series_key(s), self.json(a)?)],
            Write::Ran(s, a) => vec![Encoded::Json(RAN, series_key(s), self.json(a)?)],
            Write::Identity { tenant, identity } => {
                vec![Encoded::Json(
                    IDENTITIES,
                    tenant.into(),
                    self.json(identity)?,
                )]
            }
            Write::ForgetDiscovery { tenant } => vec![
                Encoded::RemoveTime(DISCOVERY, tenant.into()),
                Encoded::RemoveTime(WATERMARKS, tenant.into()),
                Encoded::RemoveTime(RECONCILED, tenant.into()),
            ],
            Write::Remove(kind, s) => {
                let table = match kind {
                    PerMachine::Runs => RUNS,
                    PerMachine::Attempts => ATTEMPTS,
                    PerMachine::Ran => RAN,
                    PerMachine::ScriptSets => SCRIPT_SETS,
                };
                vec![Encoded::RemoveJson(table, series_key(s))]
            }
        })
    }
}

impl Storage for Store {
    fn apply(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(writes.len());
        for w in writes {
            encoded.extend(self.encode(w)?);
        }
        // In the order given (a later write of a key wins), each run of writes to one table
        // opening it once: expiring 10,000 series is one opening, not 10,000.
        self.write(|txn| {
            for run in encoded.chunk_by(|a, b| a.table() == b.table()) {
                apply_run(txn, run)?;
            }
            Ok(())
        })
    }

    fn count_write_errors_in(&mut self, counter: Counter) {
        self.write_errors = counter;
    }
}

/// Open (or create) the state file at `path` and read it.
///
/// A file that exists but is empty (truncated to 0 bytes) or corrupt is refused with a message
/// naming it: starting afresh silently would count again every result still in the lookback
/// window. `--state.reset` (see [`reset`]) is for operators who mean that.
pub(super) fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "the file is empty (0 bytes): it was truncated, or it is not a state file this exporter wrote".into(),
            });
    }
    let owned = path.to_path_buf();
    open_with(path, Arc::new(move || open_file(&owned)))
}

/// Open through `opener` (also used to reopen after a write error) and read the file; `path`
/// names the file in messages.
pub(super) fn open_with(path: &Path, opener: Opener) -> Result<(Store, Loaded), StoreError> {
    let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let db = opener().map_err(|e| match lock::held_by(path) {
        // The open failed because another process holds the file: say so, and not that it
        // may be corrupt (whose advice, a reset, would be wrong here).
        Some(holder) => StoreError::Locked {
            path: path.to_path_buf(),
            holder,
        },
        None => open_err(&e),
    })?;
    let mut store = Store {
        db: Some(db),
        path: path.to_path_buf(),
        opener,
        broken: false,
        write_errors: Counter::default(),
        file: None,
        lost: false,
    };
    // Make sure every table exists and the schema is one we understand.
    let found = store
        .write(|txn| {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value());
            // New file, or an older schema this version migrates (1 → 2 → 3 add tables).
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
            txn.open_table(RAN)?;
            txn.open_table(SCRIPT_SETS)?;
            txn.open_table(IDENTITIES)?;
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
            reads: SCHEMA,
        });
    }
    let mut state = Loaded::default();
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
        for entry in read.open_table(RAN)?.iter()? {
            let (k, v) = entry?;
            if let (Ok(key), Ok(a)) = (
                serde_json::from_str::<SeriesKey>(k.value()),
                serde_json::from_slice::<Attempt>(v.value()),
            ) {
                state.ran.insert(key, a);
            }
        }
        for entry in read.open_table(SCRIPT_SETS)?.iter()? {
            let (k, v) = entry?;
            if let Ok(key) = serde_json::from_str::<SeriesKey>(k.value()) {
                state.script_sets.insert(key, v.value().to_vec());
            }
        }
        for entry in read.open_table(IDENTITIES)?.iter()? {
            let (k, v) = entry?;
            if let Ok(id) = serde_json::from_slice::<TenantIdentity>(v.value()) {
                state.identities.insert(k.value().to_string(), id);
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
    Ok((store, state))
}

/// `--state.reset`: move the state file aside (renamed with the time, in the same
/// directory) so that the exporter starts afresh. Returns where it went, or `None` when there
/// was no file. Results still in each tenant's lookback window are then counted again.
///
/// The file's lock is taken first and held while it is moved: a file another process (a live
/// exporter) holds is refused, naming that process, and left where it is. See: #24
pub fn reset(path: &Path, now: DateTime<Utc>) -> Result<Option<PathBuf>, StoreError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let _locked = match lock::lock(path) {
        Ok(Ok(file)) => file,
        Ok(Err(holder)) => {
            return Err(StoreError::ResetLocked {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                message: format!("--state.reset cannot lock it: {e}"),
            });
        }
    };
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
mod tests;
