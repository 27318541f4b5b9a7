//! The storage boundary of the state: what a store holds ([`Loaded`], read once when it is
//! opened) and the writes the exactly-once rules commit ([`Write`]), applied by a [`Storage`]
//! all or nothing, durably, before anything is counted.
//!
//! Owns the vocabulary between the rules and their storage: one [`Write`] per kind of entry,
//! storage-neutral (records, not bytes or tables). Does not own the rules (when a write is
//! made: `state`), the records (`state::model`), nor any on-disk or in-database form: the redb
//! file is one implementation (`state::redb_file`); another store is one more implementation
//! of [`Storage`], and no rule is written twice.

use std::collections::{BTreeMap, HashSet};

use prometheus_client::metrics::counter::Counter;

use super::StoreError;
use super::model::{Attempt, LastRun, ResultKey, SeriesKey, TenantIdentity, Tracked};

/// One change to the stored state. A batch of them is one transaction.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// A result counted or given up.
    Done(&'a ResultKey),
    /// The latest run of a series.
    Run(&'a SeriesKey, &'a LastRun),
    /// The script-output set of a series: opaque bytes (the set's own JSON).
    ScriptSet(&'a SeriesKey, &'a [u8]),
    /// A final action counted.
    ActionSeen { tenant: &'a str, action_id: &'a str },
    /// When discovery last completed for a tenant (Unix ms).
    Discovered { tenant: &'a str, at_ms: i64 },
    /// The discovery watermark of a tenant (Unix ms).
    Watermark { tenant: &'a str, at_ms: i64 },
    /// The last reconciliation sweep of a tenant (Unix ms).
    Reconciled { tenant: &'a str, at_ms: i64 },
    /// An action followed by id.
    Track {
        tenant: &'a str,
        action_id: &'a str,
        tracked: &'a Tracked,
    },
    /// An action no longer followed.
    Untrack { tenant: &'a str, action_id: &'a str },
    /// A RunScript command counted as not run.
    NotRun(&'a ResultKey),
    /// The latest attempt of a series that had a not-run.
    Attempt(&'a SeriesKey, &'a Attempt),
    /// The newest attempt that ran, per series.
    Ran(&'a SeriesKey, &'a Attempt),
    /// Whose history a tenant's entries are.
    Identity {
        tenant: &'a str,
        identity: &'a TenantIdentity,
    },
    /// Forget a tenant's discovery times and watermark (its identity changed).
    ForgetDiscovery { tenant: &'a str },
    /// Remove a per-machine entry of one kind.
    Remove(PerMachine, &'a SeriesKey),
}

/// The kinds of per-machine entries that expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerMachine {
    Runs,
    Attempts,
    Ran,
    ScriptSets,
}

/// What a store holds, read into the indexes `state` keeps (its fields by the same names).
#[derive(Debug, Default)]
pub struct Loaded {
    pub done: HashSet<ResultKey>,
    pub actions_seen: HashSet<(String, String)>,
    pub last_runs: BTreeMap<SeriesKey, LastRun>,
    pub discovered: BTreeMap<String, i64>,
    pub watermarks: BTreeMap<String, i64>,
    pub reconciled: BTreeMap<String, i64>,
    pub tracked: BTreeMap<(String, String), Tracked>,
    pub not_run: HashSet<ResultKey>,
    pub attempts: BTreeMap<SeriesKey, Attempt>,
    pub ran: BTreeMap<SeriesKey, Attempt>,
    pub script_sets: BTreeMap<SeriesKey, Vec<u8>>,
    pub identities: BTreeMap<String, TenantIdentity>,
}

/// Where the state is kept. The rules call [`Storage::apply`] before they change their
/// indexes or count anything: an error means nothing of the batch was stored, and the caller
/// counts nothing.
pub trait Storage: std::fmt::Debug + Send {
    /// Store `writes` in one durable transaction, all or nothing. An empty batch stores
    /// nothing and succeeds.
    fn apply(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError>;

    /// Count failed writes in this counter (`mde_exporter_state_write_errors_total`).
    fn count_write_errors_in(&mut self, counter: Counter);
}
