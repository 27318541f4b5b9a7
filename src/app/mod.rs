//! Wiring: from a validated [`Config`] to running collectors and an HTTP server; reloads;
//! the built-in demo (`demo`: the simulator in-process, with a config pointing at it); and
//! the binary's run ([`run`]: runtime size, `--config.check`, serving until a signal).
//!
//! Owns start-up order, reloads and shutdown, and what a reload carries over of a tenant it
//! keeps (its quota windows while its quota settings are the same, its API clock while its API
//! is; [`carried`]; a tenant whose entry did not change keeps its running tasks too, see
//! `fleet`). Does not own the flags (`cli`), the HTTP client (`api::http`), the tenants'
//! tasks (`fleet`), the restore of per-machine series and script-output sets (`record`), nor
//! any policy of polling.

pub mod cli;
pub mod cluster;
mod demo;
mod fleet;
pub mod render;
pub mod run;
pub mod server;
pub mod tenant_files;
pub mod transcript_command;
pub mod web;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{Client, Http};
pub use crate::app::cli::{DemoOptions, Loader};
use crate::config::{Config, Tenant};
use crate::metrics::Metrics;
use crate::quota::{Quota, SharedQuota};
use crate::record::state::State;
use crate::shared::{
    CollectorSettings, Current, ReloadError, ReloadRequest, Shared, TenantStatus, request_reload,
    shared_now,
};
pub use demo::start_demo;
use fleet::{Collectors, TenantClients};

/// A start-up problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    HttpClient(#[from] crate::api::http::BuildError),
    #[error("tenant {tenant}: {source}")]
    Client {
        tenant: String,
        #[source]
        source: crate::api::Error,
    },
    #[error("cannot serve HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    State(#[from] crate::record::state::StoreError),
    #[error("cluster database {0}")]
    Cluster(String),
}

/// A running exporter.
pub struct Handle {
    pub addr: SocketAddr,
    current: Current,
    reload: mpsc::Sender<ReloadRequest>,
    shutdown: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    /// A cluster member's lease loop (it releases the leases when it ends).
    membership: Option<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// The OTLP metrics push, when on: its stop and its task (see [`Handle::push_metrics`]).
    pusher: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Handle {
    /// The configuration in force and everything the collectors share.
    pub fn shared(&self) -> Arc<Shared> {
        shared_now(&self.current)
    }

    /// Read the configuration again and apply it; on failure the old one stays in force.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        request_reload(&self.reload).await
    }

    /// Push the metrics over OTLP as `cfg` says, as well as serving them, until shutdown;
    /// `service.instance.id` defaults to this host's name and the listening port. A second
    /// call replaces the first push.
    pub fn push_metrics(
        &mut self,
        cfg: crate::otlp_metrics::PushConfig,
    ) -> Result<(), crate::otlp_metrics::Error> {
        let (stop, rx) = watch::channel(false);
        let instance = format!("{}:{}", crate::otlp_metrics::hostname(), self.addr.port());
        let metrics = shared_now(&self.current).metrics.clone();
        let task = crate::otlp_metrics::spawn(metrics, cfg, &instance, rx)?;
        if let Some((old, _)) = self.pusher.replace((stop, task)) {
            let _ = old.send(true);
        }
        Ok(())
    }

    /// Stop polling, stop serving, and wait for both; then push the metrics one last time
    /// (when pushing), with the values the collectors left.
    pub async fn shutdown(self) -> Result<(), Error> {
        // A cluster member first lets each tenant finish the result it is fetching (at most
        // one lease round, and 5 s), so the next owners ask for no link again (#31).
        if let Some(o) = shared_now(&self.current).ownership.clone() {
            o.stop_all(o.grace().min(Duration::from_secs(5))).await;
        }
        let _ = self.shutdown.send(true);
        let _ = self.supervisor.await;
        if let Some(m) = self.membership {
            let _ = m.await;
        }
        let served = match self.server.await {
            Ok(r) => r.map_err(Error::Serve),
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        };
        if let Some((stop, task)) = self.pusher {
            let _ = stop.send(true);
            let _ = task.await;
        }
        served
    }
}

/// The shared HTTP client, as built by [`crate::api::http`] (kept here for callers that
/// start from `app`).
pub use crate::api::http::{client as http_client, client_with_proxy as http_client_with_proxy};

/// Now, as Unix seconds (the unit of the `_timestamp_seconds` families).
fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// Start collectors for every tenant and the HTTP server on `listener` (plain HTTP).
pub async fn start(
    config: Config,
    listener: TcpListener,
    telemetry_path: &str,
) -> Result<Handle, Error> {
    start_with(config, listener, telemetry_path, None, None).await
}

/// What a reload carries over from the configuration in force.
struct Previous<'a> {
    shared: &'a Shared,
    /// The previous configuration's tenants by name (looked up once per tenant: a scan of
    /// the list for each was quadratic, seconds at 10,000 tenants).
    tenants: HashMap<&'a str, &'a Tenant>,
    /// The tenants whose tasks go on (`fleet::kept`): no client is built for them.
    kept: &'a BTreeSet<String>,
    /// The HTTP client and its slots, when the new configuration's settings of it are the
    /// same: the kept tasks' clients and the new ones then share one limit of requests in
    /// flight.
    http: Option<Http>,
}

/// What the previous configuration's `Shared` holds for tenant `t` (`held`), when that
/// configuration had `t` too and `same` holds for its entry of `t`.
fn carried<'a, T: Clone + 'a>(
    previous: Option<&Previous<'a>>,
    t: &Tenant,
    same: impl Fn(&Tenant) -> bool,
    held: impl FnOnce(&'a Shared) -> Option<&'a T>,
) -> Option<T> {
    let p = previous?;
    let kept = p.tenants.get(t.name.as_str()).is_some_and(|o| same(o));
    kept.then(|| held(p.shared).cloned()).flatten()
}

/// Build what a configuration needs: a quota per tenant, and a client for each tenant whose
/// tasks start (every tenant but those `previous` keeps running). Quotas of tenants kept
/// with the same quota settings carry their windows over, so a reload never resets what was
/// already spent. Nothing runs yet. Also gives the HTTP client the clients use.
fn prepare(
    config: &Config,
    metrics: &Arc<Metrics>,
    state: Arc<Mutex<State>>,
    status: Arc<RwLock<BTreeMap<String, TenantStatus>>>,
    previous: Option<Previous<'_>>,
    ownership: Option<Arc<crate::cluster::Ownership>>,
) -> Result<(Arc<Shared>, TenantClients, Http), Error> {
    let http = match previous.as_ref().and_then(|p| p.http.clone()) {
        Some(http) => http,
        None => Http::new(
            crate::api::http::client_with_pool(
                config.request_timeout,
                config.proxy.as_ref(),
                config.max_requests_in_flight,
            )?,
            config.max_requests_in_flight,
            metrics,
        ),
    };
    let previous = previous.as_ref();
    let mut quotas = BTreeMap::new();
    let mut clocks = BTreeMap::new();
    let mut clients = Vec::new();
    let trusted_hosts = crate::api::trusted_hosts(&config.trusted_result_hosts);
    for t in &config.tenants {
        let kept = carried(
            previous,
            t,
            |o| o.quota == t.quota,
            |s| s.quotas.get(&t.name),
        );
        let quota: SharedQuota = kept.unwrap_or_else(|| Quota::shared(&t.quota));
        quotas.insert(t.name.clone(), quota.clone());
        if previous.is_some_and(|p| p.kept.contains(&t.name)) {
            // Its tasks go on with their client, quota and clock (an entry kept has the
            // same quota settings and API, so both were carried above and below).
            let clock = carried(
                previous,
                t,
                |o| o.api_url == t.api_url,
                |s| s.clocks.get(&t.name),
            );
            clocks.insert(t.name.clone(), clock.unwrap_or_default());
            continue;
        }
        let client = Client::new(t, http.clone(), quota, metrics.clone())
            .map_err(|source| Error::Client {
                tenant: t.name.clone(),
                source,
            })?
            .with_trusted_hosts(&trusted_hosts);
        // The API's clock carries over while the tenant's API is the same (#24 item 7).
        let clock = carried(
            previous,
            t,
            |o| o.api_url == t.api_url,
            |s| s.clocks.get(&t.name),
        );
        let client = match clock {
            Some(c) => client.with_clock(c),
            None => client,
        };
        clocks.insert(t.name.clone(), client.clock().clone());
        clients.push((t.clone(), client));
    }
    {
        // Tenants no longer configured leave the status page.
        let mut st = status.write().unwrap_or_else(PoisonError::into_inner);
        st.retain(|name, _| quotas.contains_key(name));
    }
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        state,
        status,
        quotas,
        clocks,
        settings: CollectorSettings::from_config(config),
        trace_url: config.otel.trace_url.clone(),
        last_expiry: Mutex::new(None),
        ownership,
    });
    // The series of the tenants that start (those kept have theirs); in a cluster a
    // tenant's series start when this member takes it.
    shared
        .metrics
        .results
        .signatures()
        .set_top_k(shared.settings.failure_signatures_top_k);
    if shared.ownership.is_none() {
        for (t, _) in &clients {
            shared.start_tenant_series(&t.name);
        }
    }
    Ok((shared, clients, http))
}

/// Like [`start`], with an optional `--web.config.file` (TLS, mutual TLS, basic auth) and a
/// loader for reloads (SIGHUP, `POST /-/reload`); without a loader a reload is refused.
/// `POST /-/reload` is served (as with `--web.enable-lifecycle`).
pub async fn start_with(
    config: Config,
    listener: TcpListener,
    telemetry_path: &str,
    web: Option<Arc<exporter_web::WebConfig>>,
    loader: Option<Loader>,
) -> Result<Handle, Error> {
    start_with_lifecycle(config, listener, telemetry_path, web, loader, true).await
}

/// Requests for a reload that may wait while one runs; they then share the next reload.
const RELOAD_QUEUE: usize = 256;
/// Reloads start at most this often; requests in between share the next one.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Like [`start_with`]; `enable_lifecycle` (`--web.enable-lifecycle`) decides whether
/// `POST /-/reload` is served. [`Handle::reload`] (SIGHUP) works either way.
pub async fn start_with_lifecycle(
    config: Config,
    listener: TcpListener,
    telemetry_path: &str,
    web: Option<Arc<exporter_web::WebConfig>>,
    loader: Option<Loader>,
    enable_lifecycle: bool,
) -> Result<Handle, Error> {
    let metrics = Arc::new(Metrics::new());
    let http_stats = metrics.exporter.http_stats();
    let (mut state, ownership) = match &config.cluster {
        None => (State::open(config.state_path.as_deref())?, None),
        Some(c) => {
            let (state, ownership) = cluster::open(c).await.map_err(Error::Cluster)?;
            (state, Some(ownership))
        }
    };
    state.count_write_errors_in(metrics.exporter.state_write_errors());
    let state = Arc::new(Mutex::new(state));
    let status = Arc::new(RwLock::new(BTreeMap::new()));
    let (shared, clients, http) = prepare(
        &config,
        &metrics,
        state.clone(),
        status.clone(),
        None,
        ownership.clone(),
    )?;
    metrics.exporter.record_config_load(true, unix_now());
    shared.restrict_excerpts();
    shared.restore_series();
    crate::record::outcome::restore_script_sets(
        &shared.state,
        &shared.metrics,
        |tenant, script| shared.reads_script(tenant, script),
    );
    shared.housekeeping();
    metrics.api.set_quotas(&shared.quotas, shared.served());
    let mut collectors = Collectors::new(&shared);
    collectors.launch(&shared, clients);
    let current: Current = Arc::new(RwLock::new(shared));
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(RELOAD_QUEUE);
    let (shutdown, rx) = watch::channel(false);
    let membership = match (&config.cluster, &ownership) {
        (Some(c), Some(o)) => Some(cluster::spawn_membership(
            &config,
            c,
            o.clone(),
            metrics.clone(),
            current.clone(),
            rx.clone(),
        )),
        _ => None,
    };

    // The supervisor owns the collectors: it swaps them on a reload and stops them at the end.
    let supervisor = {
        let current = current.clone();
        let mut stop = rx.clone();
        tokio::spawn(async move {
            let mut collectors = collectors;
            let mut config = config;
            let mut http = http;
            let mut last_reload: Option<tokio::time::Instant> = None;
            loop {
                let request = tokio::select! {
                    r = reload_rx.recv() => r,
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(reply) = request else { break };
                // At most one reload per MIN_RELOAD_INTERVAL: requests that arrive meanwhile
                // wait and share the next one, so a flood costs one reload (one token request
                // and one list call per tenant) a second, however it is spread.
                if let Some(last) = last_reload {
                    tokio::select! {
                        _ = tokio::time::sleep_until(last + MIN_RELOAD_INTERVAL) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                // Every request already waiting shares this reload: it starts after each of
                // them arrived, so each sees the file as it is now.
                let mut replies = vec![reply];
                while let Ok(more) = reload_rx.try_recv() {
                    replies.push(more);
                }
                let began = tokio::time::Instant::now();
                last_reload = Some(began);
                let outcome = match &loader {
                    None => Err(ReloadError::NoConfigFile),
                    Some(load) => match load() {
                        Err(e) => Err(ReloadError::Load(e.to_string())),
                        Ok(new) => {
                            let old = shared_now(&current);
                            // Only the tenants the change touches start or stop (#34).
                            let kept = fleet::kept(&config, &new);
                            let previous = Previous {
                                shared: &old,
                                tenants: config
                                    .tenants
                                    .iter()
                                    .map(|t| (t.name.as_str(), t))
                                    .collect(),
                                kept: &kept,
                                http: fleet::same_start(&config, &new).then(|| http.clone()),
                            };
                            match prepare(
                                &new,
                                &metrics,
                                state.clone(),
                                status.clone(),
                                Some(previous),
                                old.ownership.clone(),
                            ) {
                                Err(e) => Err(ReloadError::Apply(e.to_string())),
                                Ok((shared, clients, new_http)) => {
                                    let stopped = collectors.retire(&kept).await;
                                    // A tenant the new configuration leaves out: its series
                                    // go now, not at series_ttl (#24).
                                    shared.drop_unserved_series();
                                    shared.restrict_excerpts();
                                    shared.housekeeping();
                                    metrics.api.set_quotas(&shared.quotas, shared.served());
                                    collectors.follow(&shared);
                                    let started = clients.len();
                                    collectors.launch(&shared, clients);
                                    *current.write().unwrap_or_else(PoisonError::into_inner) =
                                        shared;
                                    tracing::info!(
                                        tenants = new.tenants.len(),
                                        kept = kept.len(),
                                        started,
                                        stopped = stopped.len(),
                                        running = collectors.len(),
                                        took_s = began.elapsed().as_secs_f64(),
                                        "configuration reloaded"
                                    );
                                    config = new;
                                    http = new_http;
                                    Ok(())
                                }
                            }
                        }
                    },
                };
                metrics
                    .exporter
                    .record_config_load(outcome.is_ok(), unix_now());
                match &outcome {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
                    }
                }
                if replies.len() > 1 {
                    tracing::info!(
                        requests = replies.len(),
                        "reload requests coalesced into one reload"
                    );
                }
                for reply in replies {
                    let _ = reply.send(outcome.clone());
                }
            }
            collectors.stop().await;
        })
    };

    let addr = listener.local_addr()?;
    let tls = web.as_ref().is_some_and(|w| w.tls_config().is_some());
    let router = crate::app::server::app(
        current.clone(),
        telemetry_path,
        enable_lifecycle.then(|| reload_tx.clone()),
    );
    let server = serve_on_own_thread(listener, router, web, rx, http_stats)?;
    // The one start-up line: what runs, where, for whom.
    let tenants: Vec<String> = shared_now(&current).quotas.keys().cloned().collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("MDE_EXPORTER_REVISION"),
        %addr,
        tls,
        tenants = tenants.join(","),
        tenant_count = tenants.len(),
        "exporter listening"
    );
    Ok(Handle {
        addr,
        current,
        reload: reload_tx,
        shutdown,
        supervisor,
        membership,
        server,
        pusher: None,
    })
}

/// Serve HTTP on a thread and runtime of its own, so that a scrape is never queued behind
/// collectors: a poll may block a worker thread (the state file's durable commit waits for
/// the disk), and with thousands of tenants on a few worker threads `/metrics` waited for
/// seconds. Encoding itself takes no lock a collector holds for long (families are read
/// under their own short locks; quota windows are read one tenant at a time). The server
/// stops when `stop` turns true or its sender is dropped. See: #11
fn serve_on_own_thread(
    listener: TcpListener,
    router: axum::Router,
    web: Option<Arc<exporter_web::WebConfig>>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<exporter_web::ServeStats>,
) -> Result<JoinHandle<std::io::Result<()>>, Error> {
    let listener = listener.into_std()?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        let mut options = exporter_web::ServeOptions::default();
                        options.stats = stats;
                        exporter_web::serve_with(
                            listener,
                            router,
                            web,
                            async move {
                                let _ = stop.wait_for(|s| *s).await;
                            },
                            options,
                        )
                        .await
                    })
                });
            let _ = done.send(result);
        })?;
    Ok(tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the HTTP server thread ended")))
    }))
}

/// The tenants of `config` prepared as a start prepares them, with the state in memory: for
/// the unit tests of `app`, `fleet` and the status page.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn prepared(config: &Config) -> (Arc<Metrics>, Arc<Shared>, fleet::TenantClients) {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(Mutex::new(State::open(None).unwrap()));
    let status = Arc::new(RwLock::new(BTreeMap::new()));
    let (shared, clients, _) = prepare(config, &metrics, state, status, None, None).unwrap();
    (metrics, shared, clients)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The not-run gauges expire with the other per-machine series, in the housekeeping that
    /// runs at most once a second whichever tenant polls (each poll of every tenant used to
    /// sort every tenant's attempts). See: #11
    #[tokio::test]
    async fn housekeeping_expires_old_not_run_series() {
        let config = Config {
            series_ttl: Duration::from_secs(3600),
            ..Config::default()
        };
        let (metrics, shared, _) = prepared(&config);
        let now = chrono::Utc::now();
        let labels = |machine: &str| crate::metrics::MachineScriptLabels {
            tenant: "t".into(),
            machine: machine.into(),
            script: "s.ps1".into(),
        };
        for (machine, age) in [("old", 7200), ("new", 60)] {
            let attempt = crate::record::state::Attempt {
                at: now - chrono::Duration::seconds(age),
                ran: false,
                action_id: machine.into(),
            };
            let series = ("t".to_string(), machine.to_string(), "s.ps1".to_string());
            let key = crate::record::state::ResultKey {
                tenant: "t".into(),
                action_id: machine.into(),
                index: 0,
            };
            shared
                .with_state(|s| s.commit_not_run(key, series, attempt))
                .unwrap();
            metrics.results.set_script_not_run(&labels(machine), true);
        }
        shared.housekeeping();
        assert!(
            metrics
                .results
                .script_not_run_value(&labels("old"))
                .is_none()
        );
        assert!(
            metrics
                .results
                .script_not_run_value(&labels("new"))
                .is_some()
        );
        assert_eq!(shared.with_state(|s| s.attempts_len()), 1);
    }

    /// A reload that removes a tenant takes its series out while the other tenants' polls
    /// still hold the `Shared` it replaced; that one's housekeeping refreshed every configured
    /// tenant's clock-skew gauge, and so brought the removed tenant's back (a cluster member's
    /// did the same for the tenants it no longer owns). It refreshes, never creates. See: #32
    #[tokio::test]
    async fn housekeeping_brings_back_no_series_of_a_forgotten_tenant() {
        let config = Config {
            tenants: vec![crate::config::fixtures::tenant("gone")],
            ..Config::default()
        };
        let (metrics, shared, _) = prepared(&config);
        let shown = |m: &Metrics| {
            m.encode(false)
                .unwrap()
                .lines()
                .any(|l| l.starts_with("mde_exporter_clock_skew_seconds{tenant=\"gone\"}"))
        };
        // The tenant's client read an answer's Date and wrote the gauge.
        let clock = &shared.clocks["gone"];
        assert!(clock.observe_header(
            Some(&httpdate::fmt_http_date(std::time::SystemTime::now())),
            tokio::time::Instant::now()
        ));
        metrics.exporter.record_clock_skew("gone", 0.0);
        shared.housekeeping();
        assert!(shown(&metrics));
        // The reload took the tenant's series out; the old `Shared` goes on.
        metrics.forget_tenant("gone");
        *shared
            .last_expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        shared.housekeeping();
        assert!(!shown(&metrics));
    }
}
