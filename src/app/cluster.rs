//! Wiring a cluster member (#31): opening the cluster's database at start (retrying until it
//! answers, naming the server), the state over it, the lease loop, and one task per
//! configured tenant that runs the tenant's collector while this member owns it.
//!
//! Owns what happens to a tenant when ownership changes hands here: taken, its state and
//! quota windows read by the lease loop are taken in and its series restored before its
//! collector starts; lost or given up, its collector is stopped first, then its per-machine
//! series, machine context and script-output sets leave /metrics and its entries leave
//! memory. Does not own the tenant's tasks across reloads (`fleet`), the leases
//! (`crate::cluster`), polling (`poll`), nor the exactly-once rules (`record`).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::store::{Fence, PgStore};
use futures_util::future::{FusedFuture, FutureExt};

use crate::cluster::{Holding, Membership, Ownership, Sources, Taken};
use crate::config::{ClusterConfig, Config};
use crate::metrics::Metrics;
use crate::poll::collector::TenantCollector;
use crate::poll::machines::MachineRefresh;
use crate::record::state::State;
use crate::shared::{Current, Shared, SharedFeed, shared_now};

/// Connect to the cluster's database, create or migrate its tables, and return an empty
/// state over it and this member's ownership. A database that does not answer is tried
/// again (every attempt logged, naming the server, never the password) until it does; one
/// that answers but cannot be used (a newer schema, another application's) stops the start.
/// The error is the message of `app::Error::Cluster`.
pub(super) async fn open(config: &ClusterConfig) -> Result<(State, Arc<Ownership>), String> {
    let mut wait = Duration::from_secs(1);
    let client = loop {
        match crate::cluster::connect::connect(&config.postgres_url).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot reach the cluster database; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    crate::cluster::schema::migrate(&client)
        .await
        .map_err(|e| format!("{}: {e}", config.postgres_url.target()))?;
    let fence = Arc::new(Fence::new(crate::cluster::incarnation()));
    let store = PgStore::start(config.postgres_url.clone(), fence.clone())
        .map_err(|e| format!("cannot start the store's thread: {e}"))?;
    tracing::info!(
        member = %config.member,
        database = %config.postgres_url.target(),
        lease_duration_s = config.lease_duration.as_secs_f64(),
        "cluster member: tenants are shared with the other members through the database"
    );
    Ok((
        State::over(store),
        Arc::new(Ownership::new(
            config.member.clone(),
            config.lease_duration,
            fence,
        )),
    ))
}

/// `--state.import FILE`: copy a state file into the cluster's database, once, at start.
pub async fn import(config: &ClusterConfig, path: &std::path::Path) -> anyhow::Result<()> {
    let state = State::open(Some(path))?;
    let mut client = crate::cluster::connect::connect(&config.postgres_url).await?;
    crate::cluster::schema::migrate(&client).await?;
    let done = crate::cluster::import::import(&mut client, &state.into_loaded())
        .await
        .map_err(|e| anyhow::anyhow!("--state.import {}: {e}", path.display()))?;
    tracing::info!(file = %path.display(), tenants = done.tenants, rows_added = done.rows, "--state.import: the state file was copied into the cluster database (entries already there kept)");
    Ok(())
}

/// Start the lease loop; its task ends (leases released) when `stop` turns true.
pub(super) fn spawn_membership(
    config: &Config,
    cluster: &ClusterConfig,
    ownership: Arc<Ownership>,
    metrics: Arc<Metrics>,
    current: Current,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // Counted rows are kept twice the longest lookback and a day: discovery lists nothing
    // older, and a clock off by hours still finds them.
    let lookback = config
        .tenants
        .iter()
        .map(|t| t.selectors.lookback)
        .max()
        .unwrap_or(Duration::from_secs(86_400));
    let keep_counted = lookback * 2 + Duration::from_secs(86_400);
    let configured = {
        let current = current.clone();
        Box::new(move || shared_now(&current).quotas.keys().cloned().collect())
    };
    let quota_of = |current: Current| {
        move |t: &str| {
            let shared = shared_now(&current);
            let q = shared.quotas.get(t)?;
            let mut q = q.lock().unwrap_or_else(PoisonError::into_inner);
            Some(q.snapshot(
                tokio::time::Instant::now(),
                chrono::Utc::now().timestamp_millis(),
            ))
        }
    };
    ownership.set_quota_source(Box::new(quota_of(current.clone())));
    let quota = Box::new(quota_of(current));
    let sources = Sources {
        configured,
        quota,
        keep_counted,
    };
    let membership = Membership::new(cluster.clone(), ownership, metrics, sources);
    tokio::spawn(membership.run(stop))
}

/// The life of one tenant on this member (its one task, started by `fleet`): wait until
/// owned, take its state in, poll until it is lost (or its local lease runs out), clean up,
/// and wait again. At `stop` (shutdown, or a reload that stops or restarts this tenant) it
/// returns at once, leaving what is held as it is, and gives its machine-context refresh
/// back (see `fleet::Collectors::retire`). The configuration in force is taken from `feed`
/// (a reload that keeps the tenant does not stop it, #34).
pub(super) async fn slot(
    tenant: crate::config::Tenant,
    client: crate::api::Client,
    mut feed: SharedFeed,
    ownership: Arc<Ownership>,
    mut stop: watch::Receiver<bool>,
) -> Option<MachineRefresh> {
    let name = tenant.name.clone();
    let mut changes = ownership.subscribe();
    loop {
        let epoch = loop {
            if *stop.borrow() {
                return None;
            }
            if let Some((epoch, _)) = ownership
                .owned_epoch(&name)
                .filter(|_| ownership.owns(&name))
            {
                break epoch;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        };
        let shared = feed.borrow_and_update().clone();
        if let Some(taken) = ownership.take_loaded(&name) {
            adopt(&shared, &name, taken);
        }
        let (quit, quit_rx) = watch::channel(false);
        let collector = TenantCollector::new(tenant.clone(), client.sibling(), shared.clone())
            .following(feed.clone());
        let refresh =
            MachineRefresh::new(&tenant, client.sibling(), shared.clone()).following(feed.clone());
        drop(shared);
        // The collector returns by itself after a poll once the tenant is no longer served.
        let collector_run = collector.run(quit_rx.clone()).fuse();
        let refresh_run = refresh.run(quit_rx).fuse();
        tokio::pin!(collector_run);
        tokio::pin!(refresh_run);
        // Biased: woken after a freeze (SIGSTOP) past its lease, the loss is seen before the
        // collector runs another step, so a member that lost a tenant sends nothing for it.
        let change = tokio::select! {
            biased;
            c = until_change(&ownership, &name, epoch, &mut changes) => c,
            _ = stop.changed() => return given_back(&quit, refresh_run.as_mut()).await,
            _ = &mut collector_run => ended(&ownership, &name, epoch),
            _ = &mut refresh_run => ended(&ownership, &name, epoch),
        };
        if change == Change::Releasing && !collector_run.is_terminated() {
            // Given up: the collector finishes the result it is fetching (its commit is
            // still fenced by this member's lease) and fetches nothing more, within a grace.
            let grace = ownership.grace();
            tokio::select! {
                _ = tokio::time::timeout(grace, &mut collector_run) => {}
                _ = stop.changed() => return given_back(&quit, refresh_run.as_mut()).await,
            }
        }
        // The collector's future is dropped: nothing more of it runs. The machine context
        // leaves /metrics with the tenant (and is read again when polling goes on).
        if let Some(refresh) = given_back(&quit, refresh_run.as_mut()).await {
            refresh.retire();
        }
        if change == Change::Paused {
            // Still owned, the database away: poll again once it answers, from the state
            // held (nothing was dropped).
            continue;
        }
        let shared = feed.borrow().clone();
        forget(&shared, &name);
        if change == Change::Releasing {
            ownership.ack_release(&name, epoch);
        }
    }
}

/// Stop a slot's machine-context refresh (`quit`) and take it back, unless it ended already.
async fn given_back(
    quit: &watch::Sender<bool>,
    refresh: std::pin::Pin<&mut futures_util::future::Fuse<impl Future<Output = MachineRefresh>>>,
) -> Option<MachineRefresh> {
    let _ = quit.send(true);
    if refresh.is_terminated() {
        return None;
    }
    Some(refresh.await)
}

/// How a tenant's ownership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Expired or taken over: stop at once.
    Lost,
    /// Being given up: finish the current step, then stop.
    Releasing,
    /// Still owned, but the collector stopped (the database is away).
    Paused,
}

/// Why the collector of the tenant held at `epoch` ended by itself.
fn ended(ownership: &Ownership, name: &str, epoch: i64) -> Change {
    match ownership.holding(name) {
        Holding::Owned(e, _) if e == epoch => Change::Paused,
        Holding::Releasing(e) if e == epoch => Change::Releasing,
        _ => Change::Lost,
    }
}

/// Wait until the tenant held at `epoch` is no longer simply owned.
async fn until_change(
    ownership: &Ownership,
    name: &str,
    epoch: i64,
    changes: &mut watch::Receiver<u64>,
) -> Change {
    loop {
        match ownership.holding(name) {
            Holding::Owned(e, deadline) if e == epoch => {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            Holding::Releasing(e) if e == epoch => return Change::Releasing,
            _ => return Change::Lost,
        }
    }
}

/// Take in a tenant this member now owns: its state, its quota windows, its series.
fn adopt(shared: &Shared, tenant: &str, taken: Taken) {
    shared.with_state(|s| s.adopt(tenant, taken.loaded));
    if let (Some(h), Some(q)) = (taken.quota, shared.quotas.get(tenant)) {
        let (now, wall) = (
            tokio::time::Instant::now(),
            chrono::Utc::now().timestamp_millis(),
        );
        let mut q = q.lock().unwrap_or_else(PoisonError::into_inner);
        q.seed(&h.snapshot, now, wall);
        if let Some(round) = h.unknown_round {
            q.pad_unknown_round(&h.snapshot, h.saved_ms, round, now, wall);
        }
    }
    shared.start_tenant_series(tenant);
    crate::record::series::restore(
        &shared.metrics,
        &shared.state,
        |t| t == tenant,
        &shared.settings.transcript_log,
    );
    crate::record::outcome::restore_script_sets(&shared.state, &shared.metrics, |t, script| {
        t == tenant && shared.reads_script(t, script)
    });
    shared.restrict_excerpts();
}

/// Let go of a tenant this member no longer owns: its series leave /metrics, its entries
/// leave memory (they stay in the database for the next owner), its status entry goes.
fn forget(shared: &Shared, tenant: &str) {
    crate::record::series::drop_unserved(&shared.metrics, &shared.state, |t| t != tenant);
    // Every other series with its `tenant` label, all families (#32).
    shared.metrics.forget_tenant(tenant);
    shared.with_state(|s| s.forget(tenant));
    shared
        .status
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(tenant);
    tracing::info!(
        tenant,
        "tenant no longer owned here: its series left /metrics"
    );
}
