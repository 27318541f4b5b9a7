//! Wiring: from a validated [`Config`] to running collectors and an HTTP server, and the
//! built-in demo (the simulator in-process, with a config pointing at it).
//!
//! Owns start-up order and shutdown. Does not own any policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::collector::{Settings, Shared, TenantCollector};
use crate::config::{Config, QuotaConfig, Secret, Selectors, Tenant};
use crate::mde::Client;
use crate::metrics::Metrics;
use crate::quota::Quota;
use crate::sim::{SimConfig, Simulator};
use crate::state::State;

/// A start-up problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("tenant {tenant}: {source}")]
    Client {
        tenant: String,
        #[source]
        source: crate::mde::Error,
    },
    #[error("cannot serve HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    State(#[from] crate::state::StoreError),
}

/// A running exporter.
pub struct Handle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Handle {
    /// Stop polling, stop serving, and wait for both.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        match self.server.await {
            Ok(r) => r.map_err(Error::Serve),
            Err(e) => Err(Error::Serve(std::io::Error::other(e))),
        }
    }
}

pub fn http_client(timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .user_agent(concat!(
            "mde-liveresponse-exporter/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Http(e.to_string()))
}

/// Start collectors for every tenant and the HTTP server on `listener` (plain HTTP).
pub async fn start(
    config: Config,
    listener: TcpListener,
    telemetry_path: &str,
) -> Result<Handle, Error> {
    start_with(config, listener, telemetry_path, None).await
}

/// Like [`start`], with an optional `--web.config.file` (TLS, mutual TLS, basic auth).
pub async fn start_with(
    config: Config,
    listener: TcpListener,
    telemetry_path: &str,
    web: Option<Arc<crate::web::WebConfig>>,
) -> Result<Handle, Error> {
    let metrics = Arc::new(Metrics::new());
    metrics.config_reload_success.set(1);
    let http = http_client(config.request_timeout)?;
    let mut quotas = BTreeMap::new();
    let mut clients = Vec::new();
    for t in &config.tenants {
        let quota = Arc::new(Mutex::new(Quota::new(&t.quota)));
        quotas.insert(t.name.clone(), quota.clone());
        let client = Client::new(t, http.clone(), quota, metrics.clone()).map_err(|source| {
            Error::Client {
                tenant: t.name.clone(),
                source,
            }
        })?;
        clients.push((t.clone(), client));
    }
    let shared = Arc::new(Shared {
        metrics,
        state: Mutex::new(State::open(config.state_path.as_deref())?),
        status: RwLock::new(BTreeMap::new()),
        quotas,
        settings: Settings::from_config(&config),
        trace_url: config.otel.trace_url.clone(),
    });
    shared.restore_series();
    shared.refresh();
    let (tx, rx) = watch::channel(false);
    let tasks = clients
        .into_iter()
        .map(|(t, client)| {
            let collector = TenantCollector::new(t, client, shared.clone());
            tokio::spawn(collector.run(rx.clone()))
        })
        .collect();
    let addr = listener.local_addr()?;
    let router = crate::server::app(shared.clone(), telemetry_path);
    let mut stop = rx;
    let server = tokio::spawn(async move {
        crate::web::serve(listener, router, web, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    });
    tracing::info!(%addr, tenants = config.tenants.len(), "exporter listening");
    Ok(Handle {
        addr,
        shared,
        shutdown: tx,
        tasks,
        server,
    })
}

/// Options of the built-in demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// 60 makes a minute last a second, for the simulator and our quota alike.
    pub time_scale: f64,
    pub seed: u64,
    pub actions: usize,
    /// Another client spends the same quota, so that 429s happen.
    pub noisy_neighbour: bool,
}

/// Start the simulator on a loopback port and return it with a config that points at it.
pub async fn start_demo(opts: &DemoOptions) -> Result<(Simulator, Config, JoinHandle<()>), Error> {
    let scale = opts.time_scale.max(0.001);
    let sim_cfg = SimConfig {
        seed: opts.seed,
        actions: opts.actions,
        ..SimConfig::default()
    }
    .time_scaled(scale);
    let sim = Simulator::new(sim_cfg);
    if opts.noisy_neighbour {
        // Half the per-minute budget of each endpoint goes to "someone else".
        sim.faults().noisy_neighbour(sim.config().per_minute / 2);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = {
        let sim = sim.clone();
        tokio::spawn(async move {
            if let Err(e) = sim.serve(listener, std::future::pending()).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        })
    };
    let base = format!("http://{addr}");
    let url = |s: &str| url::Url::parse(s).map_err(|e| Error::Http(e.to_string()));
    let (tenant_id, client_id, secret) = sim.credentials();
    let config = Config {
        poll_interval: Duration::from_secs(5)
            .div_f64(scale.max(1.0))
            .max(Duration::from_millis(200)),
        state_path: None,
        max_transcript_bytes: 16 * 1024 * 1024,
        series_ttl: Duration::from_secs(24 * 3600),
        max_series: 10_000,
        request_timeout: Duration::from_secs(30),
        otel: Default::default(),
        transcript_log: Default::default(),
        tenants: vec![Tenant {
            name: "demo".into(),
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            client_secret: Secret::new(secret),
            api_url: url(&base)?,
            login_url: url(&base)?,
            audience: "https://api.securitycenter.microsoft.com".into(),
            selectors: Selectors {
                lookback: Duration::from_secs(24 * 3600),
                ..Selectors::default()
            },
            quota: QuotaConfig::default().time_scaled(scale),
        }],
    };
    Ok((sim, config, task))
}
