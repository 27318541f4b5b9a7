//! Fleet benchmark (not a test), issue #20: one script run fleet-wide with 0, 400, 2,000 and
//! 10,000 actions Pending on offline devices, under the real quota (100/min, 1500/h), with
//! discovery as before #20 and as now.
//!
//! Each run puts the simulator's fleet scenario (every tenth device comes online during the
//! run) plus 60 ordinary actions, most finishing during the run, in front of the exporter
//! (in process, `app::start`). Time is scaled by `BENCH_SCALE` (60: a quota hour lasts a
//! minute) for the simulator, the quota windows, `poll_interval` and `min_interval` alike;
//! the figures are given in API time (measured × scale). Reported: list calls per poll and
//! per hour, the 429s, and the latency from the moment an action is final (the simulator's
//! ground truth) to the first result-link call for it, p50 and p99 over every result of an
//! action that became final during the run.
//!
//! "Before" is the pre-#20 discovery as the exporter can still run it: the simulator refuses
//! the status filter, so every action in flight is read by id (20 a call), and
//! `min_interval: 60s` fixes the cadence at `poll_interval`. "After" is the default.
//!
//! Caveat of scaling: the exporter's own work (parsing a 10,000-action page) is not scaled,
//! so at 10,000 in flight its share of the latency is `BENCH_SCALE` times too large.
//!
//! `cargo bench --bench fleet` (or `benches/scripts/discovery.sh --fleet`); `BENCH_FLEET=0,400`,
//! `BENCH_HOURS=1` (API hours per run) and `BENCH_SCALE=60` change the runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mde_liveresponse_exporter::app;
use mde_liveresponse_exporter::config::Config;
use mde_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

mod common;

use common::{env_list, env_or};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let fleets: Vec<usize> = env_list("BENCH_FLEET", "0,400,2000,10000");
    let hours: f64 = env_or("BENCH_HOURS", 1.0);
    let scale: f64 = env_or("BENCH_SCALE", 60.0);
    let mut rows = Vec::new();
    for fleet in fleets {
        for before in [true, false] {
            rows.push(one_run(fleet, before, hours, scale).await);
        }
    }
    println!(
        "| in flight | discovery | list calls/poll | list calls/h | polls/h | 429s | final → link p50 | p99 | results |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

async fn one_run(fleet: usize, before: bool, hours: f64, scale: f64) -> String {
    let sim = Simulator::new(
        SimConfig {
            seed: 2020 + fleet as u64,
            machines: 40,
            actions: 60,
            fleet,
            page_size: 10_000,
            // API time: the ordinary actions and every tenth device finish within 40 minutes.
            finish_within: Duration::from_secs(40 * 60),
            history: Duration::from_secs(6 * 3600),
            ..SimConfig::default()
        }
        .time_scaled(scale),
    );
    if before {
        sim.faults().refuse_in_flight_filter(true);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = sim.clone();
    let server = tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    let (tenant_id, client_id, secret) = sim.credentials();
    let q = sim.config();
    let poll = Duration::from_secs(60).div_f64(scale);
    let min = if before {
        poll
    } else {
        Duration::from_secs(5).div_f64(scale)
    };
    let yaml = format!(
        "poll_interval: {}us\ntenants:\n  - name: fleet\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    discovery:\n      min_interval: {}us\n    quota:\n      per_minute: {}\n      per_hour: {}\n      minute: {}us\n      hour: {}us\n",
        poll.as_micros(),
        min.as_micros(),
        q.per_minute,
        q.per_hour,
        q.minute.as_micros(),
        q.hour.as_micros(),
    );
    let config = Config::parse(&yaml, Path::new("fleet.yml"), &|_| None).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter = app::start(config, l, "/metrics").await.unwrap();
    let run = Duration::from_secs_f64(3600.0 * hours / scale);
    tokio::time::sleep(run).await;
    let polls = polls(&exporter.shared().metrics.encode(false).unwrap());
    let stats = sim.stats();
    exporter.shutdown().await.unwrap();
    server.abort();
    let list = stats
        .requests
        .get("list_machine_actions")
        .copied()
        .unwrap_or(0) as f64;
    let throttled: u64 = stats.throttled.values().sum();
    let mut latencies: Vec<f64> = stats
        .first_link
        .iter()
        .filter_map(|((id, _), at)| {
            let f = sim.final_after(id)?;
            (!f.is_zero()).then(|| at.saturating_sub(f).as_secs_f64() * scale)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() - 1) as f64 * p).round() as usize]
    };
    format!(
        "| {fleet} | {} | {:.1} | {:.0} | {:.0} | {throttled} | {:.1} s | {:.1} s | {} |",
        if before {
            "before #20 (id batches, fixed 60 s)"
        } else {
            "now (in-flight listing, cadence)"
        },
        list / polls.max(1.0),
        list / hours,
        polls / hours,
        pct(0.5),
        pct(0.99),
        latencies.len(),
    )
}

/// Polls done, from `mde_exporter_poll_duration_seconds_count`.
fn polls(text: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with("mde_exporter_poll_duration_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
