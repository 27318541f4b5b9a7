//! What the exporter remembers between polls: results already counted, final actions already
//! counted, and the latest run per (tenant, machine, script) behind the per-machine gauges.
//!
//! Owns the exactly-once bookkeeping and the expiry/cap of per-machine series. With a
//! `state_path` every change is committed to an embedded redb file before it is counted, so a
//! restart (even `kill -9`) neither counts a result twice nor loses the per-machine gauges.
//! Without one it lives in memory only.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DONE: TableDefinition<&str, u8> = TableDefinition::new("done");
const ACTIONS: TableDefinition<&str, u8> = TableDefinition::new("actions_seen");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("last_runs");
const DISCOVERY: TableDefinition<&str, i64> = TableDefinition::new("discovery");
/// The layout of the state file this version writes and reads.
pub const SCHEMA: u64 = 1;

/// A state file problem; every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open state file {path}: {message}. If it is corrupt, move it away: the exporter then starts afresh and reads again the results still inside each tenant's lookback window"
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
}

/// (tenant, machine, script).
pub type SeriesKey = (String, String, String);

#[derive(Debug, Default)]
pub struct State {
    done: HashSet<ResultKey>,
    actions_seen: HashSet<(String, String)>,
    last_runs: BTreeMap<SeriesKey, LastRun>,
    /// Per tenant: when discovery last completed (Unix ms), so that after a long outage the
    /// next discovery looks back far enough to miss no finished command.
    discovered: BTreeMap<String, i64>,
    /// The file behind it, if any.
    store: Option<Store>,
}

#[derive(Debug)]
struct Store {
    db: redb::Database,
    path: PathBuf,
}

fn done_key(k: &ResultKey) -> String {
    // JSON keeps the parts apart whatever characters they hold.
    serde_json::json!([k.tenant, k.action_id, k.index]).to_string()
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

    /// Run `f` in one write transaction, committed durably before returning.
    fn write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let r = f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(r)
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
    pub fn open(path: Option<&Path>) -> Result<State, StoreError> {
        let Some(path) = path else {
            return Ok(State::default());
        };
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = redb::Database::create(path).map_err(|e| open_err(&e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        // Make sure every table exists and the schema is one we understand.
        let found = store
            .write(|txn| {
                let mut meta = txn.open_table(META)?;
                let found = meta.get("schema")?.map(|v| v.value());
                if found.is_none() {
                    meta.insert("schema", SCHEMA)?;
                }
                txn.open_table(DONE)?;
                txn.open_table(ACTIONS)?;
                txn.open_table(RUNS)?;
                txn.open_table(DISCOVERY)?;
                Ok(found)
            })
            .map_err(|e| open_err(&e))?;
        if let Some(found) = found.filter(|f| *f > SCHEMA) {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found,
            });
        }
        let mut state = State::default();
        let read = store.db.begin_read().map_err(|e| open_err(&e))?;
        let mut load = || -> Result<(), redb::Error> {
            for entry in read.open_table(DONE)?.iter()? {
                let (k, _) = entry?;
                if let Ok((tenant, action_id, index)) =
                    serde_json::from_str::<(String, String, u32)>(k.value())
                {
                    state.done.insert(ResultKey {
                        tenant,
                        action_id,
                        index,
                    });
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
        };
        load().map_err(|e| open_err(&e))?;
        drop(read);
        state.store = Some(store);
        Ok(state)
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
        if let Some(store) = &self.store {
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
        if let Some(store) = &self.store {
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
        if let Some(store) = &self.store {
            store.write(|txn| {
                txn.open_table(ACTIONS)?
                    .insert(action_key(tenant, action_id).as_str(), 1u8)?;
                Ok(())
            })?;
        }
        Ok(self.actions_seen.insert(pair))
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
        let mut removed: Vec<SeriesKey> = self
            .last_runs
            .iter()
            .filter(|(_, r)| r.end_time < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        let remaining = self.last_runs.len() - removed.len();
        if remaining > max {
            let mut by_age: Vec<(DateTime<Utc>, SeriesKey)> = self
                .last_runs
                .iter()
                .filter(|(_, r)| r.end_time >= cutoff)
                .map(|(k, r)| (r.end_time, k.clone()))
                .collect();
            by_age.sort();
            removed.extend(by_age.into_iter().take(remaining - max).map(|(_, k)| k));
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        if let Some(store) = &self.store {
            store.write(|txn| {
                let mut runs = txn.open_table(RUNS)?;
                for k in &removed {
                    runs.remove(series_key(k).as_str())?;
                }
                Ok(())
            })?;
        }
        for k in &removed {
            self.last_runs.remove(k);
        }
        Ok(removed)
    }
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
                "state file {} was written by a newer version of the exporter (state schema 2, this version reads 1): run that version or newer, or move the file away",
                path.display()
            )
        );
    }
}
