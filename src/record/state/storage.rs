//! The storage boundary of the state: what a store holds ([`Loaded`], read once when it is
//! opened) and the writes the exactly-once rules commit ([`Write`]), applied by a [`Storage`]
//! all or nothing, durably, before anything is counted.
//!
//! Owns the vocabulary between the rules and their storage: one [`Write`] per kind of entry,
//! storage-neutral (records, not bytes or tables), and the storage's error ([`StoreError`]). Does not own the rules (when a write is
//! made: `state`), the records (`state::model`), nor any on-disk or in-database form: the redb
//! file is one implementation (`state::redb_file`); another store is one more implementation
//! of [`Storage`], and no rule is written twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;

use super::lock::Holder;
use super::model::{Attempt, LastRun, ResultKey, SeriesKey, TenantIdentity, Tracked};

/// A problem of the state's storage; every message names the file (or store) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open state file {path}: {message}. If it is corrupt, move it away (or start once with --state.reset, which does that): the exporter then starts afresh and counts again the results still inside each tenant's lookback window"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "state file {path} was written by a newer version of the exporter (state schema {found}, this version reads {reads}): run that version or newer, or move the file away"
    )]
    Newer {
        path: PathBuf,
        found: u64,
        reads: u64,
    },
    #[error("state file {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Another process (an exporter) has the file open. Not corruption: moving the file away
    /// or `--state.reset` would make this process count again what the other one counts.
    #[error(
        "state file {path} is in use by another process {holder}: another exporter is running with it. Each exporter (each replica, each shard) needs a state file of its own: stop the other process, or give this one another --state.path. Do not move the file away or use --state.reset for this: both exporters would then count the same results"
    )]
    Locked { path: PathBuf, holder: Holder },
    /// `--state.reset` on a file another process holds.
    #[error(
        "--state.reset refused: state file {path} is in use by another process {holder}. Stop that exporter first: resetting under it would leave it writing to the moved file while this one counts its results again"
    )]
    ResetLocked { path: PathBuf, holder: Holder },
    /// Cluster mode (#31): this member no longer holds the lease of `tenant` (it expired or
    /// another member took it over), so its write is refused and nothing is counted.
    #[error(
        "tenant {tenant}: this member no longer holds the tenant's lease (it expired or another member took it over); the write was refused and nothing was counted"
    )]
    Fenced { tenant: String },
    /// Cluster mode (#31): the database did not take the write (it is away, or refused).
    #[error("cluster database {target}: {message}")]
    Database { target: String, message: String },
}

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

impl Write<'_> {
    /// The tenant the write belongs to (a cluster fences each write by its tenant's lease).
    pub fn tenant(&self) -> &str {
        match *self {
            Write::Done(k) | Write::NotRun(k) => &k.tenant,
            Write::Run(s, _)
            | Write::ScriptSet(s, _)
            | Write::Attempt(s, _)
            | Write::Ran(s, _)
            | Write::Remove(_, s) => &s.0,
            Write::ActionSeen { tenant, .. }
            | Write::Discovered { tenant, .. }
            | Write::Watermark { tenant, .. }
            | Write::Reconciled { tenant, .. }
            | Write::Track { tenant, .. }
            | Write::Untrack { tenant, .. }
            | Write::Identity { tenant, .. }
            | Write::ForgetDiscovery { tenant } => tenant,
        }
    }
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
