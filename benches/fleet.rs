//! Fleet benchmark (not a test), issue #20: one script run fleet-wide with 0, 400, 2,000 and
//! 10,000 actions Pending on offline devices, under the real quota (100/min, 1500/h), with
//! discovery as before #20 and as now.
//!
//! Each run puts the simulator's fleet scenario (every tenth device comes online during the
//! run) plus 60 ordinary actions, most finishing during the run, in front of the exporter
//! (in process, `app::start`). Time is scaled by `BENCH_SCALE` (10: a quota hour lasts six
//! minutes) for the simulator, the quota windows, `poll_interval` and `min_interval` alike;
//! the figures are given in API time (measured × scale). Reported: list calls per poll and
//! per hour, the 429s, and the latency from the moment an action is final (the simulator's
//! ground truth) to the first result-link call for it, p50 and p99 over every result of an
//! action that became final during the run.
//!
//! "Before" is the pre-#20 discovery as the exporter can still run it: the simulator refuses
//! the status filter, so every action in flight is read by id (20 a call), and
//! `min_interval: 60s` fixes the cadence at `poll_interval`. "After" is the default.
//!
//! Caveat of scaling: the exporter's and the simulator's own work (rendering and parsing a
//! page of every action in flight, each poll) is not scaled, so its share of the latency is
//! `BENCH_SCALE` times too large: 50 ms of real time is 3 s of API time at 60. `poll, real ms`
//! gives the mean real time of a poll (from `mde_exporter_poll_duration_seconds`), the part
//! the scale multiplies; choose a scale at which that part stays small (#33:
//! docs/benchmarks.md says which and why).
//!
//! The latency is given for two kinds of actions apart (#33): those created inside the
//! incremental listing's window (within `discovery.overlap` of the newest action, so that
//! listing shows them final), and older ones, the fleet pattern: an action queued hours ago
//! that turns final when its device comes online, which only the in-flight listing follows.
//! `get by id/h` counts the calls to `GET /api/machineactions/{id}` (their own quota).
//!
//! `cargo bench --bench fleet` (or `benches/scripts/discovery.sh --fleet`); `BENCH_FLEET=0,400`,
//! `BENCH_HOURS=1` (API hours per run, default 0.5), `BENCH_SCALE=60` (default 10: #33),
//! `BENCH_BEFORE=0` (leave out the pre-#20 runs) and `BENCH_SEEDS=3` (that many scenarios per
//! row, from different seeds: the latencies pooled, each run's median shown for the spread)
//! change the runs.
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
    // Half an API hour at scale 10 (3 minutes a run): the scale at which a poll's own real
    // time counts little beside the cadence (#33, docs/benchmarks.md).
    let hours: f64 = env_or("BENCH_HOURS", 0.5);
    let scale: f64 = env_or("BENCH_SCALE", 10.0);
    let with_before = env_or("BENCH_BEFORE", 1) == 1;
    let seeds: u64 = env_or("BENCH_SEEDS", 1).max(1);
    let mut rows = Vec::new();
    for fleet in fleets {
        for before in [true, false] {
            if before && !with_before {
                continue;
            }
            let mut runs = Vec::new();
            for seed in 0..seeds {
                runs.push(one_run(fleet, before, hours, scale, seed).await);
            }
            rows.push(row(fleet, before, hours, &runs));
        }
    }
    println!(
        "| in flight | discovery | list calls/poll | list calls/h | get by id/h | polls/h | poll, real ms | 429s | final → link p50 / p99 / max: all | created in the window | older (fleet pattern) | p50 of each run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// What one run measured.
struct Run {
    list: f64,
    get: f64,
    polls: f64,
    /// Real seconds spent in polls (not scaled).
    poll_secs: f64,
    throttled: u64,
    /// Final → first result-link latencies in API seconds: every result, those of actions
    /// created in the window, the older ones.
    all: Vec<f64>,
    inside: Vec<f64>,
    older: Vec<f64>,
}

/// One table row over the runs of one configuration (`BENCH_SEEDS` scenarios): calls per API
/// hour, the latencies pooled, the real time a poll took on average (the part of the
/// latency the scale multiplies), and each run's own median (the spread).
fn row(fleet: usize, before: bool, hours: f64, runs: &[Run]) -> String {
    let n = runs.len() as f64;
    let sum = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>();
    let (list, get, polls) = (sum(&|r| r.list), sum(&|r| r.get), sum(&|r| r.polls));
    let poll_ms = 1000.0 * sum(&|r| r.poll_secs) / polls.max(1.0);
    let throttled: u64 = runs.iter().map(|r| r.throttled).sum();
    let pool = |f: &dyn Fn(&Run) -> &Vec<f64>| -> Vec<f64> {
        runs.iter().flat_map(|r| f(r).iter().copied()).collect()
    };
    let each: Vec<String> = runs
        .iter()
        .map(|r| {
            let mut v = r.all.clone();
            median(&mut v).map_or("-".into(), |m| format!("{m:.1}"))
        })
        .collect();
    format!(
        "| {fleet} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {poll_ms:.1} | {throttled} | {} | {} | {} | {} s |",
        if before {
            "before #20 (id batches, fixed 60 s)"
        } else {
            "now"
        },
        list / polls.max(1.0),
        list / hours / n,
        get / hours / n,
        polls / hours / n,
        summary(&mut pool(&|r| &r.all)),
        summary(&mut pool(&|r| &r.inside)),
        summary(&mut pool(&|r| &r.older)),
        each.join(", "),
    )
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

async fn one_run(fleet: usize, before: bool, hours: f64, scale: f64, seed: u64) -> Run {
    let sim = Simulator::new(
        SimConfig {
            seed: 2020 + fleet as u64 + 7919 * seed,
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
    let text = exporter.shared().metrics.encode(false).unwrap();
    let polls = metric(&text, "mde_exporter_poll_duration_seconds_count");
    let poll_secs = metric(&text, "mde_exporter_poll_duration_seconds_sum");
    let stats = sim.stats();
    exporter.shutdown().await.unwrap();
    server.abort();
    let list = stats
        .requests
        .get("list_machine_actions")
        .copied()
        .unwrap_or(0) as f64;
    let get = stats
        .requests
        .get("get_machine_action")
        .copied()
        .unwrap_or(0) as f64;
    let throttled: u64 = stats.throttled.values().sum();
    // The incremental listing reaches back `discovery.overlap` (5 minutes) before the newest
    // action listed; the scenario creates none during the run, so that is a fixed line.
    let created: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        sim.live_response_actions().into_iter().collect();
    let window_start =
        created.values().max().copied().unwrap_or_default() - chrono::Duration::minutes(5);
    let (mut all, mut inside, mut older) = (Vec::new(), Vec::new(), Vec::new());
    for ((id, _), at) in &stats.first_link {
        let Some(f) = sim.final_after(id).filter(|f| !f.is_zero()) else {
            continue;
        };
        let latency = at.saturating_sub(f).as_secs_f64() * scale;
        all.push(latency);
        match created.get(id) {
            Some(c) if *c >= window_start => inside.push(latency),
            _ => older.push(latency),
        }
    }
    Run {
        list,
        get,
        polls,
        poll_secs,
        throttled,
        all,
        inside,
        older,
    }
}

/// `p50 / p99 / max (n)` of latencies in seconds, or `-` when there are none.
fn summary(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{:.1} / {:.1} / {:.1} s ({})",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        v.len()
    )
}

/// The value of the first sample of `name` (`mde_exporter_poll_duration_seconds_count`: the
/// polls done), or 0.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
