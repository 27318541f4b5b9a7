//! Shared test helpers: a simulator and an exporter on 127.0.0.1:0, configurations pointing
//! at the simulator, scraping and reading metrics with an independent parser
//! (`prometheus-parse`), waiting for a condition, and OTLP attributes. The real binary as a
//! process is [`binary`]; a strict reader of the bodies served is [`exposition`]. What one
//! subject alone needs stays in its own file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mde_liveresponse_exporter::app::{self, Handle};
use mde_liveresponse_exporter::config::Config;
use mde_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

mod binary;
pub mod exposition;

pub use binary::*;

pub async fn start_sim(cfg: SimConfig) -> (Simulator, SocketAddr) {
    let sim = Simulator::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    (sim, addr)
}

/// A config file text for one tenant pointing at the simulator.
pub fn config_yaml(
    sim: &Simulator,
    addr: SocketAddr,
    secret: &str,
    extra_tenant: &str,
    extra_global: &str,
) -> String {
    let (tenant_id, client_id, _) = sim.credentials();
    let q = sim.config();
    format!(
        "poll_interval: 200ms\n{extra_global}tenants:\n  - name: sim\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    quota:\n      per_minute: {}\n      per_hour: {}\n      minute: {}ms\n      hour: {}ms\n{extra_tenant}",
        q.per_minute,
        q.per_hour,
        q.minute.as_millis(),
        q.hour.as_millis(),
    )
}

/// One tenant's entry under `tenants:`, named `name`, pointing at the simulator with its
/// credentials.
pub fn tenant_yaml(name: &str, sim: &Simulator, addr: SocketAddr) -> String {
    let (tenant_id, client_id, secret) = sim.credentials();
    format!(
        "  - name: {name}\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n"
    )
}

pub fn parse_config(text: &str) -> Config {
    Config::parse(text, Path::new("test.yml"), &|_| None).unwrap()
}

pub async fn start_exporter(config: Config) -> Handle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    app::start(config, listener, "/metrics").await.unwrap()
}

/// An exporter on the simulator at `addr` with its credentials and nothing more configured.
/// Start the exporter on 127.0.0.1:0 with `loader` serving reloads (SIGHUP, `POST /-/reload`).
pub async fn start_exporter_with_loader(config: Config, loader: app::Loader) -> Handle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    app::start_with(config, listener, "/metrics", None, Some(loader))
        .await
        .unwrap()
}

/// A temporary directory holding `config.yml` (one tenant pointing at the simulator, with its
/// secret) and the path `state.redb` for the binary's state: (dir, config, state).
pub fn config_dir(
    sim: &Simulator,
    addr: SocketAddr,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let state = dir.path().join("state.redb");
    let secret = sim.credentials().2.to_string();
    std::fs::write(&config, config_yaml(sim, addr, &secret, "", "")).unwrap();
    (dir, config, state)
}

/// A temporary directory holding `config.yml` with `text` and an empty `customers/` for
/// tenant files: (dir, config).
pub fn tenant_files_dir(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("customers")).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// The results accounted for: transcripts counted, results given up, files sized. A scenario
/// is done when this reaches its truth's transcripts and files.
pub fn results_done(m: &Samples) -> f64 {
    sum(m, "mde_liveresponse_script_runs_total", &[])
        + sum(m, "mde_liveresponse_result_fetch_failures_total", &[])
        + sum(m, "mde_liveresponse_files_total", &[])
}

/// Wait until every result of the scenario is counted (or given up) and a poll succeeded;
/// then scrape once more.
pub async fn settled(sim: &Simulator, a: SocketAddr) -> Samples {
    let truth = sim.truth();
    let want = (truth.transcripts.len() + truth.files.len()) as f64;
    eventually(
        "every result accounted for and a healthy poll",
        || async move {
            let m = scrape(a).await;
            results_done(&m) >= want && sum(&m, "mde_exporter_poll_success", &[]) == 1.0
        },
    )
    .await;
    scrape(a).await
}

pub async fn start_exporter_on(sim: &Simulator, addr: SocketAddr) -> Handle {
    start_exporter(parse_config(&config_yaml(
        sim,
        addr,
        sim.credentials().2,
        "",
        "",
    )))
    .await
}

/// An exporter on the simulator at `addr` with its credentials, [`config_yaml`]'s
/// `extra_tenant` and `extra_global`.
pub async fn start_exporter_with(
    sim: &Simulator,
    addr: SocketAddr,
    extra_tenant: &str,
    extra_global: &str,
) -> Handle {
    let secret = sim.credentials().2.to_string();
    start_exporter(parse_config(&config_yaml(
        sim,
        addr,
        &secret,
        extra_tenant,
        extra_global,
    )))
    .await
}

/// `POST /-/reload`: (status, body).
pub async fn post_reload(addr: SocketAddr) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/-/reload"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

pub async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("http://{addr}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ct, resp.text().await.unwrap())
}

/// Parsed samples: (name, sorted labels) → value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub fn parse_samples(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = Samples::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            // Histograms: keep the count under <name>_count, which the parser folds away.
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert((s.metric, labels), value);
    }
    out
}

pub async fn scrape(addr: SocketAddr) -> Samples {
    let (status, _, body) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200);
    parse_samples(&body)
}

/// Polls finished, successful or not: the count of the poll duration histogram.
pub fn polls(m: &Samples) -> f64 {
    sum(m, "mde_exporter_poll_duration_seconds", &[])
}

/// Sum of a metric's samples whose labels include all of `filter`, keyed by `by`.
pub fn by_label(
    samples: &Samples,
    name: &str,
    by: &str,
    filter: &[(&str, &str)],
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((n, labels), v) in samples {
        if n != name
            || !filter
                .iter()
                .all(|(k, val)| labels.get(*k).map(String::as_str) == Some(*val))
        {
            continue;
        }
        if let Some(key) = labels.get(by) {
            *out.entry(key.clone()).or_insert(0) += *v as u64;
        }
    }
    out.retain(|_, v| *v > 0);
    out
}

pub fn sum(samples: &Samples, name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name
                && filter
                    .iter()
                    .all(|(k, val)| labels.get(*k).map(String::as_str) == Some(*val))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// Poll `check` until it holds; bounded so a broken exporter fails instead of hanging.
/// This is a wait for a condition, not a timing assertion.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Wait until the simulator has no action Pending or InProgress, the extra in-flight ones
/// included (which [`all_final`] does not count).
pub async fn no_action_in_flight(sim: &Simulator) {
    let s = sim.clone();
    eventually("every simulated action is final", || {
        let s = s.clone();
        async move { s.in_flight().is_empty() }
    })
    .await;
}

/// Wait until every Live Response action of the scenario is final.
pub async fn all_final(sim: &Simulator) {
    let want = sim.config().actions;
    let s = sim.clone();
    eventually("every simulated action is final", || {
        let s = s.clone();
        async move { s.truth().actions.len() == want }
    })
    .await;
}

/// Calls to `list_machine_actions` the simulator answered so far.
pub fn list_calls(sim: &Simulator) -> u64 {
    sim.stats()
        .requests
        .get("list_machine_actions")
        .copied()
        .unwrap_or(0)
}

/// The plain value of an OTLP attribute as the fake collector keeps it (the protobuf `Debug`
/// form, e.g. `Some(AnyValue { value: Some(StringValue("demo")) })`); a string may hold
/// parentheses: it ends at its closing quote.
pub fn otlp_attribute(attributes: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let raw = attributes.get(key)?;
    if let Some(rest) = raw.split("StringValue(\"").nth(1) {
        return Some(rest.rsplit_once("\")").map_or(rest, |(s, _)| s).to_string());
    }
    for kind in ["StringValue(", "IntValue(", "BoolValue(", "DoubleValue("] {
        if let Some(rest) = raw.split(kind).nth(1) {
            let inner = rest.split(')').next().unwrap_or_default();
            return Some(inner.trim_matches('"').to_string());
        }
    }
    Some(raw.clone())
}

/// The plain value of an exported span's attribute ([`otlp_attribute`]).
pub fn span_attr(s: &fake_opentelemetry_collector::ExportedSpan, key: &str) -> Option<String> {
    otlp_attribute(&s.attributes, key)
}

/// The environment that sends a process's spans and logs over OTLP/gRPC to `endpoint` (a fake
/// collector), exported every 200 ms.
pub fn otlp_grpc_env(endpoint: &str) -> [(&str, &str); 5] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "mde-lr-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
    ]
}
