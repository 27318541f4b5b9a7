//! A member's life in the cluster: heartbeats, taking and renewing the leases rendezvous
//! hashing gives it, giving up the others, and what this process believes it owns
//! ([`Ownership`]), which the collectors and the per-tenant series follow.
//!
//! Owns the lease loop (every third of `lease_duration`, each round bounded by a timeout):
//! heartbeat, renew, [`lease::plan`], release, acquire (reading the tenant's state and quota
//! windows for the new owner), saving the owned tenants' quota windows, pruning old counted
//! rows, the cluster metrics, and the release of every lease at shutdown. Does not own the
//! SQL (`lease`, `store`), nor starting or stopping a tenant's collector, which a task per
//! tenant does when [`Ownership`] changes (`crate::app::cluster`).
//!
//! What a member believes it owns expires by itself: a lease counts locally until the instant
//! the round that took or renewed it started plus nine tenths of `lease_duration` (monotonic
//! time, which runs on while a process is stopped), so a member that cannot renew (the
//! database away, or the process stopped) stops polling before its lease can pass to another.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::lease::{self, LeaseRow};
use super::store::{Fence, load_tenant};
use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::metrics::cluster::Transition;
use crate::record::state::Loaded;

/// A tenant this member holds.
#[derive(Debug)]
struct Held {
    epoch: i64,
    /// Until when it counts locally.
    deadline: Instant,
    /// What the new owner read of it, until the tenant's task takes it in.
    taken: Option<Taken>,
    /// Being given up since then: not polled any more, the lease kept until the tenant's task
    /// has finished its current step (`acked`) or a grace has passed.
    releasing: Option<Instant>,
    acked: bool,
}

/// What the new owner read of a tenant when it took its lease.
#[derive(Debug)]
pub struct Taken {
    pub loaded: Loaded,
    /// The quota windows its last owner saved, if any.
    pub quota: Option<QuotaHandover>,
}

/// A tenant's quota windows as its last owner saved them.
#[derive(Debug)]
pub struct QuotaHandover {
    pub snapshot: Vec<u8>,
    /// When they were saved (Unix ms, the database's clock).
    pub saved_ms: i64,
    /// Its last owner died (the lease expired, not released): the sends of at most this
    /// long after the save are unknown.
    pub unknown_round: Option<Duration>,
}

/// What a tenant's task sees of its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Owned at this epoch until the deadline.
    Owned(i64, Instant),
    /// Being given up (at this epoch): finish the current step, then stop.
    Releasing(i64),
    /// Not held.
    None,
}

/// What the status page shows of the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub member: String,
    pub live: Vec<String>,
    pub leases: Vec<LeaseRow>,
    pub store_up: bool,
    pub last_error: Option<String>,
}

/// What this process owns now; shared by the lease loop, the tenants' tasks and `Shared`.
#[derive(Debug)]
pub struct Ownership {
    pub member: String,
    lease: Duration,
    fence: Arc<Fence>,
    held: Mutex<HashMap<String, Held>>,
    view: RwLock<ClusterView>,
    /// Bumped at every change of what is held.
    changed: watch::Sender<u64>,
    /// Shutting down: take no tenant any more.
    leaving: std::sync::atomic::AtomicBool,
}

impl Ownership {
    pub fn new(member: String, lease: Duration, fence: Arc<Fence>) -> Ownership {
        Ownership {
            lease,
            view: RwLock::new(ClusterView {
                member: member.clone(),
                ..ClusterView::default()
            }),
            member,
            fence,
            held: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            leaving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The epoch `tenant` is held at, while its lease counts locally and it is not being
    /// given up.
    pub fn owned_epoch(&self, tenant: &str) -> Option<(i64, Instant)> {
        match self.holding(tenant) {
            Holding::Owned(e, d) => Some((e, d)),
            _ => None,
        }
    }

    /// How `tenant` is held now.
    pub fn holding(&self, tenant: &str) -> Holding {
        match self.lock().get(tenant) {
            Some(h) if h.deadline <= Instant::now() => Holding::None,
            Some(h) if h.releasing.is_some() => Holding::Releasing(h.epoch),
            Some(h) => Holding::Owned(h.epoch, h.deadline),
            None => Holding::None,
        }
    }

    /// How long a tenant's task may take to finish its current step when the tenant is given
    /// up (one lease round).
    pub fn grace(&self) -> Duration {
        Membership::tick(self.lease)
    }

    /// Shutdown: give every tenant up the way a hand-over does (each task finishes the
    /// result it is fetching, then stops), waiting at most `grace`; the lease loop releases
    /// the leases when it ends. So a SIGTERM makes the next owners ask for no link again.
    pub async fn stop_all(&self, grace: Duration) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let held: Vec<String> = self.held_names().into_iter().collect();
        for t in &held {
            self.begin_release(t);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            let pending = self
                .lock()
                .values()
                .any(|h| h.releasing.is_some() && !h.acked);
            if !pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where the quota windows written with each state batch come from (see `store::Fence`).
    pub fn set_quota_source(&self, source: QuotaSource) {
        self.fence.set_quota_source(source);
    }

    /// The tenant's task has stopped the tenant it is giving up (at `epoch`).
    pub fn ack_release(&self, tenant: &str, epoch: i64) {
        if let Some(h) = self.lock().get_mut(tenant).filter(|h| h.epoch == epoch) {
            h.acked = true;
        }
    }

    fn begin_release(&self, tenant: &str) {
        if let Some(h) = self
            .lock()
            .get_mut(tenant)
            .filter(|h| h.releasing.is_none())
        {
            h.releasing = Some(Instant::now());
        }
        self.bump();
    }

    /// Tenants being given up whose task has stopped, or whose grace has passed.
    fn ready_to_release(&self, grace: Duration) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| {
                h.releasing
                    .is_some_and(|at| h.acked || at.elapsed() >= grace)
            })
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether this member polls `tenant` now: owned, and the database answering (a result
    /// fetched while it does not could not be committed, and would be asked for again).
    pub fn owns(&self, tenant: &str) -> bool {
        self.fence.store_ok() && self.owned_epoch(tenant).is_some()
    }

    /// What the new owner read of `tenant` (its state and quota windows), once.
    pub fn take_loaded(&self, tenant: &str) -> Option<Taken> {
        self.lock().get_mut(tenant).and_then(|h| h.taken.take())
    }

    /// Told of every change of what is held.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn view(&self) -> ClusterView {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn held_names(&self) -> BTreeSet<String> {
        self.lock().keys().cloned().collect()
    }

    fn insert(&self, tenant: &str, held: Held) {
        self.fence.hold(tenant, held.epoch);
        self.lock().insert(tenant.to_string(), held);
        self.bump();
    }

    fn renewed(&self, tenant: &str, deadline: Instant) {
        if let Some(h) = self.lock().get_mut(tenant) {
            h.deadline = deadline;
        }
    }

    /// Stop holding `tenant`: its writes are refused from now on, and its task stops it.
    fn remove(&self, tenant: &str) {
        self.fence.drop_tenant(tenant);
        self.lock().remove(tenant);
        self.bump();
    }

    /// Tenants whose local deadline passed: dropped (lost).
    fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let gone: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &gone {
            self.remove(t);
        }
        gone
    }
}

pub use super::store::QuotaSource;

/// How a member learns what it needs from the rest of the process.
pub struct Sources {
    /// The tenants configured now (a reload changes them).
    pub configured: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// A tenant's quota windows to save (`None`: not configured here).
    pub quota: QuotaSource,
    /// How long counted results are kept: discovery lists nothing older.
    pub keep_counted: Duration,
}

/// The lease loop of this member.
pub struct Membership {
    config: ClusterConfig,
    ownership: Arc<Ownership>,
    metrics: Arc<Metrics>,
    sources: Sources,
    client: Option<Client>,
    /// Hash of the quota windows last saved, per tenant.
    saved_quota: HashMap<String, u64>,
    last_prune: Option<Instant>,
    store_up: Option<bool>,
}

/// How often counted rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Membership {
    pub fn new(
        config: ClusterConfig,
        ownership: Arc<Ownership>,
        metrics: Arc<Metrics>,
        sources: Sources,
    ) -> Membership {
        metrics.cluster.init(&config.member);
        Membership {
            config,
            ownership,
            metrics,
            sources,
            client: None,
            saved_quota: HashMap::new(),
            last_prune: None,
            store_up: None,
        }
    }

    /// The time between rounds: a third of the lease.
    pub fn tick(lease: Duration) -> Duration {
        (lease / 3).max(Duration::from_millis(500))
    }

    fn me(&self) -> &str {
        &self.config.member
    }

    /// Run rounds until `stop`, then give up every lease and leave.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let tick = Self::tick(self.config.lease_duration);
        loop {
            let round = tokio::time::timeout(tick.max(Duration::from_secs(2)), self.round()).await;
            let outcome = match round {
                Ok(r) => r,
                Err(_) => Err(format!("the database did not answer within {tick:?}")),
            };
            self.after_round(outcome);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.leave().await;
    }

    fn after_round(&mut self, outcome: Result<(), String>) {
        let up = outcome.is_ok();
        if let Err(e) = &outcome {
            self.client = None;
            if self.store_up != Some(false) {
                tracing::error!(member = %self.me(), error = %e, "cluster database unreachable: this member stops polling its tenants when their leases run out, and resumes when it is back");
            }
        } else if self.store_up == Some(false) {
            tracing::info!(member = %self.me(), "cluster database reachable again");
        }
        self.store_up = Some(up);
        if self.ownership.fence.set_store_ok(up) {
            self.ownership.bump();
        }
        for t in self.ownership.expire() {
            tracing::warn!(member = %self.me(), tenant = %t, "tenant lease ran out before it could be renewed: this member stops polling it");
            self.metrics
                .cluster
                .transition(self.me(), Transition::Lost, 1);
        }
        let owned = self.ownership.held_names().len();
        let mut view = self
            .ownership
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        view.store_up = up;
        view.last_error = outcome.err();
        let live = view.live.len();
        drop(view);
        let configured = (self.sources.configured)().len();
        self.metrics
            .cluster
            .record(&self.config.member, live, configured, owned, up);
    }

    async fn client(&mut self) -> Result<&Client, String> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let c = super::connect::connect(&self.config.postgres_url)
                .await
                .map_err(|e| e.to_string())?;
            self.client = Some(c);
        }
        self.client
            .as_ref()
            .ok_or_else(|| "not connected".to_string())
    }

    /// One round: heartbeat, renew, plan, release, acquire, save quotas, prune.
    async fn round(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let lease_d = self.config.lease_duration;
        let deadline = started + lease_d * 9 / 10;
        let me = self.config.member.clone();
        let holder = self.ownership.fence.holder;
        let target = self.config.postgres_url.target();
        let db = |e: tokio_postgres::Error| format!("cluster database {target}: {e}");
        // Taken for the round, put back when it succeeds (a failed round connects again).
        self.client().await?;
        let client = self
            .client
            .take()
            .ok_or_else(|| "not connected".to_string())?;
        let c = &client;
        if !lease::heartbeat(c, &me, holder, lease_d)
            .await
            .map_err(db)?
        {
            return Err(format!(
                "another live member is named {me:?}: members of one cluster need distinct names (cluster.member); this one takes no tenant"
            ));
        }
        let live = lease::live_members(c, lease_d).await.map_err(db)?;
        let held: Vec<String> = self.ownership.held_names().into_iter().collect();
        let renewed = lease::renew(c, holder, &held, lease_d).await.map_err(db)?;
        let mut late = 0;
        let mut kept = BTreeSet::new();
        for (t, epoch, was_late) in &renewed {
            if self
                .ownership
                .owned_epoch(t)
                .is_some_and(|(e, _)| e == *epoch)
            {
                self.ownership.renewed(t, deadline);
                kept.insert(t.clone());
                late += u64::from(*was_late);
            }
        }
        let mut lost = 0;
        for t in held.iter().filter(|t| !kept.contains(*t)) {
            tracing::warn!(member = %me, tenant = %t, "tenant lease lost (taken over by another member): this member stops polling it");
            self.ownership.remove(t);
            lost += 1;
        }
        let leases = lease::leases(c).await.map_err(db)?;
        let configured = (self.sources.configured)();
        let plan = lease::plan(&me, &configured, &live, &kept, &leases);
        // Giving a tenant up: first its task stops polling, finishing the result it is
        // fetching (its commit is still fenced by this lease); then, at the next round (or
        // once the grace of a round has passed), the quota windows as the stop left them are
        // saved and the lease released. Nothing is polled here once another may take it,
        // the next owner asks for no link again, and it spends only what is left.
        for t in &plan.release {
            self.ownership.begin_release(t);
        }
        let ready = self.ownership.ready_to_release(Self::tick(lease_d));
        hand_over(c, &self.ownership, &self.sources.quota, &ready)
            .await
            .map_err(db)?;
        for t in &ready {
            self.saved_quota.remove(t);
        }
        let mut acquired = 0;
        let mut taken_over = 0;
        let leaving = self
            .ownership
            .leaving
            .load(std::sync::atomic::Ordering::Relaxed);
        for t in plan.acquire.iter().filter(|_| !leaving) {
            let Some((epoch, died)) = lease::acquire(c, t, &me, holder, lease_d)
                .await
                .map_err(db)?
            else {
                continue;
            };
            let loaded = load_tenant(c, t).await.map_err(db)?;
            let quota = lease::load_quota(c, t)
                .await
                .map_err(db)?
                .map(|(snapshot, saved_ms)| QuotaHandover {
                    snapshot,
                    saved_ms,
                    unknown_round: died.then(|| Self::tick(lease_d)),
                });
            self.ownership.insert(
                t,
                Held {
                    epoch,
                    deadline,
                    taken: Some(Taken { loaded, quota }),
                    releasing: None,
                    acked: false,
                },
            );
            acquired += 1;
            taken_over += u64::from(died);
        }
        // The quota windows of the tenants held, when a call was sent since last saved (old
        // sends leaving the windows are no reason to write), sent together.
        let mut changed = Vec::new();
        let mut current = Vec::new();
        for t in self.ownership.held_names() {
            if let Some(value) = (self.sources.quota)(&t) {
                let sum = crate::quota::fingerprint(&value);
                if self.saved_quota.get(&t) != Some(&sum) {
                    changed.push((t, value, sum));
                } else {
                    current.push(t);
                }
            }
        }
        // Unchanged ones are current as of this round, in one statement.
        lease::touch_quota(c, holder, &current).await.map_err(db)?;
        let (saves, sums): (Vec<_>, Vec<_>) = changed
            .into_iter()
            .map(|(t, value, sum)| ((t.clone(), value), (t, sum)))
            .unzip();
        lease::save_quotas(c, holder, &saves).await.map_err(db)?;
        self.saved_quota.extend(sums);
        if self.last_prune.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
            let owned: Vec<String> = self.ownership.held_names().into_iter().collect();
            let n = lease::prune(c, &owned, self.sources.keep_counted)
                .await
                .map_err(db)?;
            if n > 0 {
                tracing::info!(
                    rows = n,
                    "cluster database: counted results older than the lookback window pruned"
                );
            }
            self.last_prune = Some(Instant::now());
        }
        let m = &self.metrics.cluster;
        m.transition(&me, Transition::Acquired, acquired);
        m.transition(&me, Transition::TakenOver, taken_over);
        m.transition(&me, Transition::RenewedLate, late);
        m.transition(&me, Transition::Lost, lost);
        m.transition(&me, Transition::Released, ready.len() as u64);
        if acquired + lost > 0 || !ready.is_empty() {
            tracing::info!(
                member = %me,
                acquired,
                released = ready.len(),
                lost,
                owned = self.ownership.held_names().len(),
                live = live.len(),
                "cluster leases changed"
            );
        }
        let leases: Vec<LeaseRow> = leases.into_values().collect();
        let mut view = self
            .ownership
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        view.live = live;
        view.leases = leases;
        drop(view);
        self.client = Some(client);
        Ok(())
    }

    /// Shutdown: stop every tenant, give up its lease and leave, so the others take over
    /// at their next round instead of waiting out the lease.
    async fn leave(mut self) {
        let held: Vec<String> = self.ownership.held_names().into_iter().collect();
        let me = self.config.member.clone();
        let holder = self.ownership.fence.holder;
        let released = async {
            self.client().await?;
            let c = self.client.as_ref().ok_or("not connected")?;
            hand_over(c, &self.ownership, &self.sources.quota, &held)
                .await
                .map_err(|e| e.to_string())?;
            lease::leave(c, &me, holder)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), released).await {
            Ok(Ok(_)) => {
                self.metrics
                    .cluster
                    .transition(&me, Transition::Released, held.len() as u64);
                tracing::info!(member = %me, released = held.len(), "left the cluster: leases released");
            }
            Ok(Err(e)) => {
                tracing::warn!(member = %me, error = %e, "could not release the leases at shutdown: the other members take the tenants once they expire")
            }
            Err(_) => {
                tracing::warn!(member = %me, "could not release the leases at shutdown in time: the other members take the tenants once they expire")
            }
        }
    }
}

/// Give `tenants` up: stop holding them here (their writes are refused from now on), save
/// their quota windows as the stop left them, and release their leases, so the next owners
/// take them at once and spend only what is left. A round's hand-overs and shutdown share it.
async fn hand_over(
    c: &Client,
    ownership: &Ownership,
    quota: &super::store::QuotaSource,
    tenants: &[String],
) -> Result<(), tokio_postgres::Error> {
    let mut quotas = Vec::with_capacity(tenants.len());
    for t in tenants {
        ownership.remove(t);
        if let Some(q) = quota(t) {
            quotas.push((t.clone(), q));
        }
    }
    lease::save_quotas(c, ownership.fence.holder, &quotas).await?;
    lease::release(c, ownership.fence.holder, tenants).await?;
    Ok(())
}
