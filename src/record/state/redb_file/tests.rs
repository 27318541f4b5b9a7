//! The state file across reopens, migration, corruption, a failing disk and `--state.reset`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::record::state::fixtures::{rkey, run, series};
use crate::record::state::*;
use chrono::TimeZone;

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
        s.expire(&|_| Some(Utc.timestamp_opt(50, 0).unwrap()), 10)
            .unwrap();
    }
    let s = State::open(Some(&path)).unwrap();
    assert!(s.is_done(&rkey("a", 1)) && s.is_done(&rkey("a", 2)) && s.is_done(&rkey("z", 0)));
    assert_eq!(s.done_len(), 3);
    assert!(s.action_seen("t", "a"));
    assert_eq!(
        s.last_discovery("t"),
        Some(Utc.timestamp_opt(1000, 0).unwrap())
    );
    assert_eq!(s.last_runs_len(), 1, "the expired series stays gone");
    assert_eq!(s.last_run(&series("m")).unwrap().exit_code, 3);
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
    assert!(s.attempt(&series("m")).unwrap().ran);
    assert_eq!(s.attempts_len(), 1);
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

/// See: #24 item 5. A file held open (here by this process, as a live exporter would) is not
/// moved by a reset, and a second open says it is in use instead of advising a reset.
#[test]
fn a_held_file_is_neither_reset_nor_called_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let held = State::open(Some(&path)).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 4, 5, 6).unwrap();
    let err = reset(&path, at).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "--state.reset refused: state file {} is in use by another process (pid unknown). Stop that exporter first: resetting under it would leave it writing to the moved file while this one counts its results again",
            path.display()
        )
    );
    assert!(path.exists(), "left where it is");
    let err = State::open(Some(&path)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "state file {} is in use by another process (pid unknown): another exporter is running with it. Each exporter (each replica, each shard) needs a state file of its own: stop the other process, or give this one another --state.path. Do not move the file away or use --state.reset for this: both exporters would then count the same results",
            path.display()
        )
    );
    drop(held);
    assert!(reset(&path, at).unwrap().is_some());
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

/// See: #32 item 10. The state file truncated under the running exporter: before, the writes
/// went on (pages after a hole) and nothing was noticed until the next start refused the
/// file. Now the next write is refused with a message naming the file and what happened, and
/// counted as a write error (the alert's counter); nothing more is written to it.
#[test]
fn a_file_truncated_under_the_running_exporter_is_noticed_at_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (mut store, _) = open(&path).unwrap();
    let errors = Counter::default();
    store.count_write_errors_in(errors.clone());
    let key = rkey("a", 1);
    store.apply(&[Write::Done(&key)]).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let key = rkey("a", 2);
    let err = store.apply(&[Write::Done(&key)]).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "the state file was truncated (0 bytes, {before} after the exporter's last write) under the running exporter"
        )),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(errors.get(), 1);
    // Refused again, counted again; the file is left as it is.
    assert!(store.apply(&[Write::Done(&key)]).is_err());
    assert_eq!(errors.get(), 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}
