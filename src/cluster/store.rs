//! The state of a cluster's tenants in PostgreSQL: the second implementation of the state's
//! [`Storage`] (the redb file is the first), with the same exactly-once rules, every batch
//! fenced by the writer's lease.
//!
//! Owns how a [`Write`] reaches the database (rows of the `mde_` tables, the values the same
//! JSON the state file keeps), the fence (each batch's tenants must still be leased to this
//! member, at the epoch it took them with, checked in the batch's own transaction with the
//! lease rows locked, so a deposed member's late write commits nothing), reading one tenant's
//! entries back ([`load_tenant`]) and the thread the writes run on. Does not own the rules
//! (`record::state`), the leases themselves (`lease`), nor the schema (`schema`).
//!
//! The rules call [`Storage::apply`] synchronously, under the state's lock, as they do for the
//! state file (whose commit waits for the disk): a batch is handed to a thread of its own,
//! which owns one connection, and the caller waits for its answer (at most [`JOB_TIMEOUT`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::PostgresUrl;
use crate::record::state::{
    Attempt, LastRun, Loaded, PerMachine, ResultKey, Storage, StoreError, TenantIdentity, Tracked,
    Write,
};

/// How long a batch may take, connecting included, before the caller is told it failed.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// The leases this member holds: per tenant, the epoch it took it with. The lease loop keeps
/// it; every write is checked against it in the database.
pub struct Fence {
    /// This process's incarnation: the `holder` of its leases.
    pub holder: i64,
    epochs: Mutex<HashMap<String, i64>>,
    /// The database took the last write and the last lease round: while it does not, the
    /// collectors fetch nothing (what they fetched could not be committed, and would be asked
    /// for again).
    store_ok: std::sync::atomic::AtomicBool,
    /// A tenant's quota windows, written with each of its state batches, so a takeover knows
    /// every call sent up to the last commit (set once the configuration is in force).
    quota: std::sync::OnceLock<QuotaSource>,
}

/// A tenant's quota windows as [`crate::quota::Quota::snapshot`] writes them (`None`: not
/// configured here).
pub type QuotaSource = Box<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("holder", &self.holder)
            .field("epochs", &self.epochs)
            .field("store_ok", &self.store_ok)
            .finish_non_exhaustive()
    }
}

impl Fence {
    pub fn new(holder: i64) -> Fence {
        Fence {
            holder,
            epochs: Mutex::new(HashMap::new()),
            store_ok: std::sync::atomic::AtomicBool::new(true),
            quota: std::sync::OnceLock::new(),
        }
    }
    /// Where the quota windows written with each batch come from (once).
    pub fn set_quota_source(&self, source: QuotaSource) {
        let _ = self.quota.set(source);
    }
    /// Whether the database took the last write and lease round.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Record whether the database answered; returns whether that changed.
    pub fn set_store_ok(&self, ok: bool) -> bool {
        self.store_ok.swap(ok, std::sync::atomic::Ordering::Relaxed) != ok
    }
    pub fn hold(&self, tenant: &str, epoch: i64) {
        self.lock().insert(tenant.to_string(), epoch);
    }
    pub fn drop_tenant(&self, tenant: &str) {
        self.lock().remove(tenant);
    }
    pub fn epoch(&self, tenant: &str) -> Option<i64> {
        self.lock().get(tenant).copied()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.epochs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Kinds of `mde_counted` rows.
pub(super) const DONE: i16 = 0;
pub(super) const NOT_RUN: i16 = 1;
pub(super) const ACTION_SEEN: i16 = 2;

/// Kinds of `mde_series` rows.
pub(super) const RUN: i16 = 0;
pub(super) const ATTEMPT: i16 = 1;
pub(super) const RAN: i16 = 2;
pub(super) const SCRIPT_SET: i16 = 3;

fn series_kind(kind: PerMachine) -> i16 {
    match kind {
        PerMachine::Runs => RUN,
        PerMachine::Attempts => ATTEMPT,
        PerMachine::Ran => RAN,
        PerMachine::ScriptSets => SCRIPT_SET,
    }
}

/// One write, owned, as its statement's parameters.
#[derive(Debug)]
enum Op {
    Counted(String, i16, String, i32),
    Time(String, &'static str, i64),
    ForgetTimes(String),
    Track(String, String, Option<Vec<u8>>),
    Series(String, i16, String, String, Option<Vec<u8>>),
    Identity(String, Vec<u8>),
    Quota(String, Vec<u8>),
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

fn index(i: u32) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

fn op(w: &Write<'_>) -> Result<Op, String> {
    let s = |k: &(String, String, String), kind: PerMachine, v: Option<Vec<u8>>| {
        Op::Series(k.0.clone(), series_kind(kind), k.1.clone(), k.2.clone(), v)
    };
    Ok(match *w {
        Write::Done(k) => Op::Counted(k.tenant.clone(), DONE, k.action_id.clone(), index(k.index)),
        Write::NotRun(k) => Op::Counted(
            k.tenant.clone(),
            NOT_RUN,
            k.action_id.clone(),
            index(k.index),
        ),
        Write::ActionSeen { tenant, action_id } => {
            Op::Counted(tenant.into(), ACTION_SEEN, action_id.into(), 0)
        }
        Write::Run(k, run) => s(k, PerMachine::Runs, Some(json(run)?)),
        Write::ScriptSet(k, set) => s(k, PerMachine::ScriptSets, Some(set.to_vec())),
        Write::Attempt(k, a) => s(k, PerMachine::Attempts, Some(json(a)?)),
        Write::Ran(k, a) => s(k, PerMachine::Ran, Some(json(a)?)),
        Write::Remove(kind, k) => s(k, kind, None),
        Write::Discovered { tenant, at_ms } => Op::Time(tenant.into(), "discovered", at_ms),
        Write::Watermark { tenant, at_ms } => Op::Time(tenant.into(), "watermark", at_ms),
        Write::Reconciled { tenant, at_ms } => Op::Time(tenant.into(), "reconciled", at_ms),
        Write::ForgetDiscovery { tenant } => Op::ForgetTimes(tenant.into()),
        Write::Track {
            tenant,
            action_id,
            tracked,
        } => Op::Track(tenant.into(), action_id.into(), Some(json(tracked)?)),
        Write::Untrack { tenant, action_id } => Op::Track(tenant.into(), action_id.into(), None),
        Write::Identity { tenant, identity } => Op::Identity(tenant.into(), json(identity)?),
    })
}

/// Run one op in `tx`.
async fn execute(
    tx: &tokio_postgres::Transaction<'_>,
    op: &Op,
) -> Result<u64, tokio_postgres::Error> {
    match op {
        Op::Counted(t, kind, id, idx) => {
            tx.execute(
                "INSERT INTO mde_counted (tenant, kind, action_id, idx) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[t, kind, id, idx],
            )
            .await
        }
        Op::Time(t, kind, at) => {
            tx.execute(
                "INSERT INTO mde_tenant_time (tenant, kind, at_ms) VALUES ($1, $2, $3) ON CONFLICT (tenant, kind) DO UPDATE SET at_ms = EXCLUDED.at_ms",
                &[t, kind, at],
            )
            .await
        }
        Op::ForgetTimes(t) => {
            tx.execute("DELETE FROM mde_tenant_time WHERE tenant = $1", &[t])
                .await
        }
        Op::Track(t, id, Some(v)) => {
            tx.execute(
                "INSERT INTO mde_tracked (tenant, action_id, value) VALUES ($1, $2, $3) ON CONFLICT (tenant, action_id) DO UPDATE SET value = EXCLUDED.value",
                &[t, id, v],
            )
            .await
        }
        Op::Track(t, id, None) => {
            tx.execute(
                "DELETE FROM mde_tracked WHERE tenant = $1 AND action_id = $2",
                &[t, id],
            )
            .await
        }
        Op::Series(t, kind, m, s, Some(v)) => {
            tx.execute(
                "INSERT INTO mde_series (tenant, kind, machine, script, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, kind, machine, script) DO UPDATE SET value = EXCLUDED.value",
                &[t, kind, m, s, v],
            )
            .await
        }
        Op::Series(t, kind, m, s, None) => {
            tx.execute(
                "DELETE FROM mde_series WHERE tenant = $1 AND kind = $2 AND machine = $3 AND script = $4",
                &[t, kind, m, s],
            )
            .await
        }
        Op::Quota(t, v) => {
            tx.execute(
                "INSERT INTO mde_quota (tenant, value, saved_at) VALUES ($1, $2, now()) ON CONFLICT (tenant) DO UPDATE SET value = EXCLUDED.value, saved_at = now()",
                &[t, v],
            )
            .await
        }
        Op::Identity(t, v) => {
            tx.execute(
                "INSERT INTO mde_identity (tenant, value) VALUES ($1, $2) ON CONFLICT (tenant) DO UPDATE SET value = EXCLUDED.value",
                &[t, v],
            )
            .await
        }
    }
}

/// Why a batch failed in the thread.
enum Failed {
    Fenced(String),
    Database(String),
}

/// Apply `ops` in one transaction after checking the fence: each tenant of `fenced` must be
/// leased to `holder` at its epoch and not expired (the database's clock), the lease rows
/// locked until the commit, so a takeover waits for this batch or this batch sees it.
async fn apply_batch(
    client: &mut Client,
    holder: i64,
    fenced: &[(String, i64)],
    ops: &[Op],
) -> Result<(), Failed> {
    let db = |e: tokio_postgres::Error| Failed::Database(e.to_string());
    let tx = client.transaction().await.map_err(db)?;
    let tenants: Vec<&str> = fenced.iter().map(|(t, _)| t.as_str()).collect();
    let epochs: Vec<i64> = fenced.iter().map(|(_, e)| *e).collect();
    let held = tx
        .query(
            "SELECT l.tenant FROM mde_lease l
             WHERE l.holder = $1 AND l.expires_at > now()
               AND (l.tenant, l.epoch) IN (SELECT * FROM unnest($2::text[], $3::bigint[]))
             FOR SHARE OF l",
            &[&holder, &tenants, &epochs],
        )
        .await
        .map_err(db)?;
    if held.len() != fenced.len() {
        let held: HashSet<String> = held.iter().map(|r| r.get::<_, String>(0)).collect();
        let lost = tenants
            .iter()
            .find(|t| !held.contains(**t))
            .map_or_else(String::new, |t| t.to_string());
        return Err(Failed::Fenced(lost));
    }
    // Sent one after the other without waiting (tokio-postgres pipelines the statements of
    // one connection), answered in order.
    futures_util::future::try_join_all(ops.iter().map(|op| execute(&tx, op)))
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// A batch for the thread, and where its answer goes.
struct Job {
    fenced: Vec<(String, i64)>,
    ops: Vec<Op>,
    reply: std::sync::mpsc::SyncSender<Result<(), Failed>>,
}

/// The cluster's store: a handle to the thread that writes.
pub struct PgStore {
    jobs: mpsc::UnboundedSender<Job>,
    fence: Arc<Fence>,
    target: String,
    write_errors: Counter,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Start the writing thread (it connects at its first batch, and again after an error).
    pub fn start(url: PostgresUrl, fence: Arc<Fence>) -> std::io::Result<PgStore> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let holder = fence.holder;
        let target = url.target();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("cluster-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut client: Option<Client> = None;
                    while let Some(job) = rx.recv().await {
                        let run = async {
                            if client.as_ref().is_none_or(Client::is_closed) {
                                client = Some(
                                    super::connect::connect(&url)
                                        .await
                                        .map_err(|e| Failed::Database(e.message))?,
                                );
                            }
                            match client.as_mut() {
                                Some(c) => apply_batch(c, holder, &job.fenced, &job.ops).await,
                                None => Err(Failed::Database("not connected".into())),
                            }
                        };
                        let result =
                            tokio::time::timeout(JOB_TIMEOUT, run)
                                .await
                                .unwrap_or_else(|_| {
                                    Err(Failed::Database(format!(
                                        "no answer within {JOB_TIMEOUT:?}"
                                    )))
                                });
                        if matches!(result, Err(Failed::Database(_))) {
                            // Connect again for the next batch.
                            client = None;
                        }
                        let _ = job.reply.send(result);
                    }
                });
            })?;
        Ok(PgStore {
            jobs,
            fence,
            target,
            write_errors: Counter::default(),
        })
    }

    fn database(&self, message: String) -> StoreError {
        StoreError::Database {
            target: self.target.clone(),
            message,
        }
    }
}

impl Storage for PgStore {
    fn apply(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut fenced: Vec<(String, i64)> = Vec::new();
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            let tenant = w.tenant();
            if !fenced.iter().any(|(t, _)| t == tenant) {
                match self.fence.epoch(tenant) {
                    Some(epoch) => fenced.push((tenant.to_string(), epoch)),
                    None => {
                        return Err(StoreError::Fenced {
                            tenant: tenant.to_string(),
                        });
                    }
                }
            }
            ops.push(op(w).map_err(|m| self.database(m))?);
        }
        // The quota windows of each tenant written, as of now: every call sent up to this
        // commit is known to the next owner.
        if let Some(source) = self.fence.quota.get() {
            for (t, _) in &fenced {
                if let Some(snapshot) = source(t) {
                    ops.push(Op::Quota(t.clone(), snapshot));
                }
            }
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self.jobs.send(Job { fenced, ops, reply }).is_err() {
            self.write_errors.inc();
            return Err(self.database("the store's thread ended".into()));
        }
        let result = answer
            .recv_timeout(JOB_TIMEOUT + Duration::from_secs(1))
            .unwrap_or_else(|_| Err(Failed::Database("no answer from the store's thread".into())));
        match result {
            Ok(()) => Ok(()),
            Err(Failed::Fenced(tenant)) => Err(StoreError::Fenced { tenant }),
            Err(Failed::Database(m)) => {
                self.write_errors.inc();
                self.fence.set_store_ok(false);
                Err(self.database(m))
            }
        }
    }

    fn count_write_errors_in(&mut self, counter: Counter) {
        self.write_errors = counter;
    }
}

/// Read every entry of `tenant` (after this member took its lease).
pub async fn load_tenant(client: &Client, tenant: &str) -> Result<Loaded, tokio_postgres::Error> {
    let mut l = Loaded::default();
    for row in client
        .query(
            "SELECT kind, action_id, idx FROM mde_counted WHERE tenant = $1",
            &[&tenant],
        )
        .await?
    {
        let (kind, action_id, idx): (i16, String, i32) = (row.get(0), row.get(1), row.get(2));
        let key = || ResultKey {
            tenant: tenant.to_string(),
            action_id: action_id.clone(),
            index: u32::try_from(idx).unwrap_or(0),
        };
        match kind {
            DONE => {
                l.done.insert(key());
            }
            NOT_RUN => {
                l.not_run.insert(key());
            }
            ACTION_SEEN => {
                l.actions_seen
                    .insert((tenant.to_string(), action_id.clone()));
            }
            _ => {}
        }
    }
    for row in client
        .query(
            "SELECT kind, at_ms FROM mde_tenant_time WHERE tenant = $1",
            &[&tenant],
        )
        .await?
    {
        let (kind, at): (String, i64) = (row.get(0), row.get(1));
        let map = match kind.as_str() {
            "discovered" => &mut l.discovered,
            "watermark" => &mut l.watermarks,
            "reconciled" => &mut l.reconciled,
            _ => continue,
        };
        map.insert(tenant.to_string(), at);
    }
    for row in client
        .query(
            "SELECT action_id, value FROM mde_tracked WHERE tenant = $1",
            &[&tenant],
        )
        .await?
    {
        let (id, v): (String, Vec<u8>) = (row.get(0), row.get(1));
        if let Ok(t) = serde_json::from_slice::<Tracked>(&v) {
            l.tracked.insert((tenant.to_string(), id), t);
        }
    }
    for row in client
        .query(
            "SELECT kind, machine, script, value FROM mde_series WHERE tenant = $1",
            &[&tenant],
        )
        .await?
    {
        let (kind, machine, script, v): (i16, String, String, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let key = (tenant.to_string(), machine, script);
        match kind {
            RUN => {
                if let Ok(r) = serde_json::from_slice::<LastRun>(&v) {
                    l.last_runs.insert(key, r);
                }
            }
            ATTEMPT | RAN => {
                if let Ok(a) = serde_json::from_slice::<Attempt>(&v) {
                    let map: &mut BTreeMap<_, _> = if kind == ATTEMPT {
                        &mut l.attempts
                    } else {
                        &mut l.ran
                    };
                    map.insert(key, a);
                }
            }
            SCRIPT_SET => {
                l.script_sets.insert(key, v);
            }
            _ => {}
        }
    }
    if let Some(row) = client
        .query_opt(
            "SELECT value FROM mde_identity WHERE tenant = $1",
            &[&tenant],
        )
        .await?
    {
        let v: Vec<u8> = row.get(0);
        if let Ok(id) = serde_json::from_slice::<TenantIdentity>(&v) {
            l.identities.insert(tenant.to_string(), id);
        }
    }
    Ok(l)
}
