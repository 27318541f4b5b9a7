//! Quota benchmark (not a test): the simulator with scaled windows and a backlog of about
//! 5,000 finished commands, drained by the real exporter under its quota governor.
//!
//! Prints results per result-link call, 429s received, the achieved rate as a fraction of the
//! quota, time from a result being available to its metric, and peak RSS. Run it with
//! `cargo bench --bench quota` (or `benches/scripts/quota.sh`); `BENCH_ACTIONS` and `BENCH_SCALE`
//! change the backlog and the time scale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use mde_liveresponse_exporter::app;
use mde_liveresponse_exporter::config::Config;
use mde_liveresponse_exporter::record::state::ResultKey;
use mde_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

mod common;

use common::{env_or, peak_rss_kib};

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    // A minute lasts 1/scale of itself: 60 → 1 s minutes and 60 s hours.
    // 120: a minute lasts 0.5 s and an hour 30 s, so ~5,000 results take about 100 s.
    let scale: f64 = env_or("BENCH_SCALE", 120.0);
    let actions: usize = env_or("BENCH_ACTIONS", 3900);
    let sim_cfg = SimConfig {
        seed: 2026,
        machines: 200,
        actions,
        finish_within: Duration::ZERO,
        ..SimConfig::default()
    }
    .time_scaled(scale);
    let sim = Simulator::new(sim_cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    let truth = sim.truth();
    let results: Vec<(String, u32)> = truth
        .transcripts
        .iter()
        .map(|t| (t.action_id.clone(), t.index))
        .chain(truth.files.iter().map(|f| (f.action_id.clone(), f.index)))
        .collect();
    let q = sim.config();
    let (tenant_id, client_id, secret) = sim.credentials();
    let yaml = format!(
        "poll_interval: {}ms\ntenants:\n  - name: bench\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    quota:\n      per_minute: {}\n      per_hour: {}\n      minute: {}us\n      hour: {}us\n",
        (q.minute.as_millis() / 4).max(100),
        q.per_minute,
        q.per_hour,
        q.minute.as_micros(),
        q.hour.as_micros(),
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).unwrap();
    println!(
        "backlog: {} finished results ({} transcripts, {} files) from {actions} actions; quota {} per {:?} and {} per {:?}",
        results.len(),
        truth.transcripts.len(),
        truth.files.len(),
        q.per_minute,
        q.minute,
        q.per_hour,
        q.hour
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let started_wall = Utc::now();
    let handle = app::start(config, listener, "/metrics").await.unwrap();
    let mut done_at: BTreeMap<(String, u32), Duration> = BTreeMap::new();
    let deadline = started + Duration::from_secs(600);
    while done_at.len() < results.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = started.elapsed();
        handle.shared().with_state(|st| {
            for (id, idx) in &results {
                let key = ResultKey {
                    tenant: "bench".into(),
                    action_id: id.clone(),
                    index: *idx,
                };
                if !done_at.contains_key(&(id.clone(), *idx)) && st.is_done(&key) {
                    done_at.insert((id.clone(), *idx), now);
                }
            }
        });
    }
    let elapsed = started.elapsed();
    let stats = sim.stats();
    handle.shutdown().await.unwrap();

    let link_calls = stats
        .requests
        .get("get_result_download_link")
        .copied()
        .unwrap_or(0);
    let throttled: u64 = stats.throttled.values().sum();
    let done = done_at.len();
    // While backlogged, the binding limit is the hour window: what fraction of it we used.
    let hours = elapsed.as_secs_f64() / q.hour.as_secs_f64();
    let minutes = elapsed.as_secs_f64() / q.minute.as_secs_f64();
    // The most a client could send in `elapsed` under both sliding windows.
    let allowed = (f64::from(q.per_hour) * hours.ceil())
        .min(f64::from(q.per_minute) * minutes.ceil())
        .max(1.0);
    // Utilisation while backlogged: each link call fetches one result (retries reuse the
    // link), so the results done in each long window are its calls. Only the windows that
    // ended with results still waiting count: in the last one demand, not quota, decides.
    let mut per_window: BTreeMap<u64, u64> = BTreeMap::new();
    for t in done_at.values() {
        *per_window
            .entry((t.as_secs_f64() / q.hour.as_secs_f64()) as u64)
            .or_insert(0) += 1;
    }
    let mut backlogged = Vec::new();
    let mut cumulative = 0u64;
    for (w, n) in &per_window {
        cumulative += n;
        if cumulative < results.len() as u64 {
            backlogged.push((*w, *n));
        }
    }
    let used_while_backlogged: u64 = backlogged.iter().map(|(_, n)| n).sum();
    let utilisation =
        used_while_backlogged as f64 / (f64::from(q.per_hour) * backlogged.len().max(1) as f64);
    let mut latencies: Vec<Duration> = done_at.values().copied().collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!("results counted:            {done} of {}", results.len());
    println!("elapsed:                    {elapsed:.2?} (started {started_wall})");
    println!(
        "results per result-link call: {:.3} ({done} / {link_calls})",
        done as f64 / link_calls.max(1) as f64
    );
    println!("429s received:              {throttled}");
    println!(
        "achieved rate:              {:.1}% of the quota while backlogged ({used_while_backlogged} calls in {} full long windows of {}); {link_calls} calls in all where {allowed:.0} were allowed by the end",
        100.0 * utilisation,
        backlogged.len(),
        q.per_hour
    );
    println!(
        "available → metric:         p50 {:.2?}, p99 {:.2?}, max {:.2?} (the backlog is available at start)",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS (simulator + exporter in one process): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}
