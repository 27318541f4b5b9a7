//! The running tasks of the tenants in force, one entry per tenant, so that a reload (a
//! tenant file that changed, SIGHUP) starts, stops and restarts only the tenants it touches
//! (#34): the others keep their collector, with its state in memory (a first discovery in
//! progress, the cadence, the results waiting), their token, quota windows and API clock, and
//! their series.
//!
//! Owns which tenants a reload keeps running ([`kept`]: an entry that compares equal, under
//! the same settings a tenant's tasks take when they start), each tenant's tasks and their
//! stop (a collector and a machine-context refresh; in a cluster the tenant's slot,
//! `cluster::launch`), handing the kept tasks the configuration put in force
//! ([`Collectors::follow`]; they take it between two polls), a retired tenant's machine
//! context leaving /metrics, and the spread of first polls over the interval. Does not own
//! what a configuration needs built (`app::prepare`), polling (`poll`), nor ownership in a
//! cluster (`cluster`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Tenant};
use crate::poll::collector::TenantCollector;
use crate::poll::machines::MachineRefresh;
use crate::shared::Shared;

/// One API client per tenant to start.
pub(super) type TenantClients = Vec<(Tenant, crate::api::Client)>;

/// A tenant's task: the machine-context refresh gives itself back when stopped (the
/// collector, and a refresh stopped before it ran, give nothing).
pub(super) type TenantTask = JoinHandle<Option<MachineRefresh>>;

/// The tasks of every tenant in force.
pub(super) struct Collectors {
    /// The configuration in force, for the tasks a reload keeps.
    feed: watch::Sender<Arc<Shared>>,
    running: BTreeMap<String, Running>,
}

/// One tenant's tasks.
struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<TenantTask>,
}

/// The tenants of `new` whose tasks running for `old` can go on: those whose entry is the
/// same, when the settings every tenant's tasks took at start are the same too (else every
/// tenant starts again, as a reload always did before #34).
pub(super) fn kept(old: &Config, new: &Config) -> BTreeSet<String> {
    if !same_start(old, new) {
        return BTreeSet::new();
    }
    let before: HashMap<&str, &Tenant> = old.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    new.tenants
        .iter()
        .filter(|t| before.get(t.name.as_str()).is_some_and(|o| *o == *t))
        .map(|t| t.name.clone())
        .collect()
}

/// Whether the settings a tenant's tasks take when they start, and keep, are the same: the
/// poll interval (the machine-context schedule), and the HTTP client's (timeout, proxy, slots,
/// trusted result hosts). The others are read from the configuration in force at each use.
pub(super) fn same_start(a: &Config, b: &Config) -> bool {
    a.poll_interval == b.poll_interval
        && a.request_timeout == b.request_timeout
        && a.max_requests_in_flight == b.max_requests_in_flight
        && a.proxy == b.proxy
        && a.trusted_result_hosts == b.trusted_result_hosts
}

impl Collectors {
    /// No tenant yet; `shared` is the configuration in force.
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        Collectors {
            feed: watch::Sender::new(shared.clone()),
            running: BTreeMap::new(),
        }
    }

    /// Tenants with tasks now.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// `shared` is in force: the tasks kept take it between two polls.
    pub(super) fn follow(&self, shared: &Arc<Shared>) {
        self.feed.send_replace(shared.clone());
    }

    /// Start the tasks of `clients` (in a cluster one slot per tenant that polls while this
    /// member owns it), their first polls spread evenly over the poll interval (tenant `i` of
    /// `n` started now starts `i/n` of an interval late). All tenants polled at the same
    /// instant made every poll a burst of `n` concurrent requests, connections and answers in
    /// memory, and the process kept the peak; spread out, a few are in flight at any moment.
    /// The cost: the last tenant's first poll comes up to one interval after start
    /// (`/-/ready` waits for it). See: #11
    pub(super) fn launch(&mut self, shared: &Arc<Shared>, clients: TenantClients) {
        let n = clients.len().max(1) as u32;
        let interval = shared.settings.poll_interval;
        for (i, (t, client)) in clients.into_iter().enumerate() {
            let (stop, rx) = watch::channel(false);
            let name = t.name.clone();
            let tasks = match &shared.ownership {
                Some(o) => vec![tokio::spawn(super::cluster::slot(
                    t,
                    client,
                    self.feed.subscribe(),
                    o.clone(),
                    rx,
                ))],
                None => {
                    let offset = interval / n * i as u32;
                    let refresh = MachineRefresh::new(&t, client.sibling(), shared.clone())
                        .following(self.feed.subscribe());
                    let collector = TenantCollector::new(t, client, shared.clone())
                        .following(self.feed.subscribe());
                    // Each future held once (see `after`).
                    let collect =
                        after(offset, stop.subscribe(), collector.run(rx.clone())).map(|_| None);
                    vec![
                        tokio::spawn(after(offset, stop.subscribe(), refresh.run(rx))),
                        tokio::spawn(collect),
                    ]
                }
            };
            if let Some(old) = self.running.insert(name, Running { stop, tasks }) {
                // Never: a tenant is retired before it starts again.
                let _ = old.stop.send(true);
            }
        }
    }

    /// Stop the tasks of every tenant not in `keep` and wait for them; what their
    /// machine-context refreshes exposed leaves /metrics. The names stopped.
    pub(super) async fn retire(&mut self, keep: &BTreeSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|t| !keep.contains(*t))
            .cloned()
            .collect();
        let stopping: Vec<Running> = gone.iter().filter_map(|t| self.running.remove(t)).collect();
        for r in &stopping {
            let _ = r.stop.send(true);
        }
        for r in stopping {
            for t in r.tasks {
                if let Ok(Some(refresh)) = t.await {
                    refresh.retire();
                }
            }
        }
        gone
    }

    /// Stop every task and wait for them (shutdown: what they exposed stays).
    pub(super) async fn stop(self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for r in self.running.into_values() {
            for t in r.tasks {
                let _ = t.await;
            }
        }
    }
}

/// Run `task` once `offset` has passed, unless `stop` turns true (or is dropped) first.
///
/// Combinators, not an `async fn`: an `async fn` holds its argument and the future it awaits
/// apart, twice the task's size for the tenant's whole life (a task is mostly waiting). The
/// wait is boxed: inline, its timer and its watch on `stop` kept their room in the task for
/// the tenant's life, long after the wait was over (#34); boxed, the room goes with it.
pub(super) fn after<F: std::future::Future>(
    offset: Duration,
    mut stop: watch::Receiver<bool>,
    task: F,
) -> impl std::future::Future<Output = Option<F::Output>> {
    let wait = Box::pin(async move {
        tokio::select! {
            _ = tokio::time::sleep(offset) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    });
    wait.then(move |go| OptionFuture::from(go.then_some(task)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::fixtures::parse;

    /// Every tenant has two tasks for as long as it is configured; between polls (where,
    /// with polls spread over the interval, nearly every tenant is) they must not keep room
    /// for the deepest poll. Measured before the fix: 11.3 KiB and 6.5 KiB a tenant.
    // See: #11
    #[tokio::test]
    async fn tenant_tasks_are_small_between_polls() {
        let config = Config {
            tenants: vec![crate::config::fixtures::tenant("t")],
            ..Config::default()
        };
        let (_metrics, shared, clients) = super::super::prepared(&config);
        let (_stop, rx) = watch::channel(false);
        for (t, client) in clients {
            let mut probe = TenantCollector::new(t.clone(), client.sibling(), shared.clone());
            let mut refresh_probe =
                crate::poll::machines::MachineRefresh::new(&t, client.sibling(), shared.clone());
            let one_poll = size_of_val(&probe.poll_once());
            let one_refresh = size_of_val(&refresh_probe.refresh_once());
            let refresh =
                crate::poll::machines::MachineRefresh::new(&t, client.sibling(), shared.clone());
            let run_alone = size_of_val(
                &TenantCollector::new(t.clone(), client.sibling(), shared.clone()).run(rx.clone()),
            );
            let refresh_run =
                crate::poll::machines::MachineRefresh::new(&t, client.sibling(), shared.clone())
                    .run(rx.clone());
            let collector = TenantCollector::new(t, client, shared.clone());
            let poll = after(Duration::ZERO, rx.clone(), collector.run(rx.clone()));
            let machines = after(Duration::ZERO, rx.clone(), refresh.run(rx.clone()));
            let (poll, machines) = (size_of_val(&poll), size_of_val(&machines));
            // Room for the collector (or refresh) itself, once, its timer and the select
            // between it, the configuration feed and shutdown: a poll (or refresh) future kept
            // inline would not fit (in a release build it is about 10 KiB, in a debug build
            // about 3 KiB on top of the rest), nor would the collector (1.2 KiB) or the
            // refresh (0.5 KiB) held twice, as an `async fn run` held them (3.1 and 1.6 KiB a
            // task in a debug build before, 1.6 and 0.8 KiB now). #34
            let poll_room = size_of::<TenantCollector>() + 768;
            let machines_room = size_of::<crate::poll::machines::MachineRefresh>() + 448;
            assert!(
                poll <= poll_room,
                "collector task holds {poll} bytes (one poll: {one_poll})"
            );
            assert!(
                machines <= machines_room,
                "machine-context task holds {machines} bytes (one refresh: {one_refresh})"
            );
            // The delayed start holds the collector's run once, and its timer only while it
            // waits (boxed): an `async fn` around it held the run twice (7.6 KiB, 4.1 KiB now
            // in a debug build), and the timer inline kept 320 bytes for good. #34
            assert!(
                poll <= run_alone + 64,
                "collector task holds {poll} bytes, its run alone {run_alone}"
            );
            assert!(
                machines <= size_of_val(&refresh_run) + 64,
                "machine-context task holds {machines} bytes, its run alone {}",
                size_of_val(&refresh_run)
            );
        }
    }

    fn config(tenants: &str, extra: &str) -> Config {
        parse(&format!(
            "{extra}tenant_defaults:\n  client_id: app\n  client_secret: s\ntenants:\n{tenants}"
        ))
        .unwrap()
    }

    const AB: &str =
        "  - name: a\n    tenant_id: t1\n  - name: b\n    tenant_id: t2\n    lookback: 2h\n";

    /// See: #34. A reload keeps the tenants whose entry means the same; one changed, added or
    /// removed is not kept; a setting every tenant's tasks took at start restarts them all.
    #[test]
    fn a_reload_keeps_the_tenants_it_does_not_touch() {
        let old = config(AB, "");
        let same = config(AB, "");
        assert_eq!(kept(&old, &same), ["a", "b"].map(String::from).into());
        let b_changed = config(
            "  - name: a\n    tenant_id: t1\n  - name: b\n    tenant_id: t2\n    lookback: 3h\n",
            "",
        );
        assert_eq!(kept(&old, &b_changed), ["a"].map(String::from).into());
        let b_gone_c_new = config(
            "  - name: a\n    tenant_id: t1\n  - name: c\n    tenant_id: t3\n",
            "",
        );
        assert_eq!(kept(&old, &b_gone_c_new), ["a"].map(String::from).into());
        // A rotated secret is a change (a secret does not show in Debug, it compares).
        let rotated = config(
            "  - name: a\n    tenant_id: t1\n    client_secret: s2\n  - name: b\n    tenant_id: t2\n    lookback: 2h\n",
            "",
        );
        assert_eq!(kept(&old, &rotated), ["b"].map(String::from).into());
        // Other machine tags are a change (regexes compare as written).
        let tagged = config(
            "  - name: a\n    tenant_id: t1\n    machine_tags: ['^prod']\n  - name: b\n    tenant_id: t2\n    lookback: 2h\n",
            "",
        );
        assert_eq!(kept(&old, &tagged), ["b"].map(String::from).into());
        assert_eq!(
            kept(&tagged, &tagged.clone()),
            ["a", "b"].map(String::from).into()
        );
        // The HTTP client's settings restart every tenant; the series TTL is read at each use.
        assert!(kept(&old, &config(AB, "request_timeout: 7s\n")).is_empty());
        assert!(kept(&old, &config(AB, "poll_interval: 7s\n")).is_empty());
        assert_eq!(kept(&old, &config(AB, "series_ttl: 7h\n")).len(), 2);
    }
}
