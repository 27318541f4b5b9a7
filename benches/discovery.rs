//! Discovery benchmark (not a test), issue #9: the old full-window scan and incremental
//! discovery side by side against the simulator, at 1,000, 10,000 and 100,000 Live Response
//! actions a day (a 24 h history, `lookback: 24h`).
//!
//! For each rate the simulator runs in this process; each mode runs in a child process (this
//! binary again, `BENCH_CHILD=1`) so that its peak RSS is the exporter's alone. The child builds
//! one tenant collector whose state already holds every result and action as done (the steady
//! state of an exporter that has caught up), runs one warm-up poll (for incremental discovery,
//! the first-start listing), then `BENCH_POLLS` polls back to back. Reported per steady-state
//! poll: list calls and response bytes (counted by the simulator), poll duration (measured in
//! the child around `poll_once`), and the child's peak RSS (`VmHWM`, reset after the warm-up
//! poll; the warm-up's own peak is reported beside it).
//!
//! No clock is scaled: polls are driven directly, and the quota windows are the real ones
//! (100/min, 1500/h), which the runs stay under. The simulator serves pages of 10,000 actions,
//! as the API does with `$top=10000` (its default page size is not documented).
//!
//! `cargo bench --bench discovery` (or `benches/scripts/discovery.sh`); `BENCH_RATES=1000,10000` and
//! `BENCH_POLLS=5` change the runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mde_liveresponse_exporter::api::Client;
use mde_liveresponse_exporter::config::Config;
use mde_liveresponse_exporter::metrics::Metrics;
use mde_liveresponse_exporter::poll::collector::TenantCollector;
use mde_liveresponse_exporter::quota::Quota;
use mde_liveresponse_exporter::record::state::{ResultKey, State};
use mde_liveresponse_exporter::shared::{CollectorSettings, Shared};
use mde_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

mod common;

use common::{env_list, env_or};

/// Peak resident set in KiB (0 where `/proc` is not there).
fn peak_rss_kib() -> u64 {
    common::peak_rss_kib().unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("BENCH_CHILD").is_ok() {
        rt.block_on(child());
    } else {
        rt.block_on(parent());
    }
}

async fn parent() {
    let rates: Vec<usize> = env_list("BENCH_RATES", "1000,10000,100000");
    let polls: u32 = env_or("BENCH_POLLS", 5);
    let mut rows = Vec::new();
    for rate in rates {
        let sim = Simulator::new(SimConfig {
            seed: 909,
            machines: 2000,
            actions: rate,
            history: Duration::from_secs(24 * 3600),
            finish_within: Duration::ZERO,
            page_size: 10_000,
            ..SimConfig::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = sim.clone();
        let server = tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
        // What the child's state holds as done: every result and every final action.
        let truth = sim.truth();
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done.txt");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&done).unwrap());
        for t in &truth.transcripts {
            writeln!(f, "r {} {}", t.action_id, t.index).unwrap();
        }
        for t in &truth.files {
            writeln!(f, "r {} {}", t.action_id, t.index).unwrap();
        }
        for a in &truth.actions {
            writeln!(f, "a {}", a.id).unwrap();
        }
        f.flush().unwrap();
        drop(f);
        for incremental in [false, true] {
            let (tenant_id, client_id, secret) = sim.credentials();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env("BENCH_CHILD", "1")
                .env("BENCH_ADDR", addr.to_string())
                .env("BENCH_TENANT", tenant_id)
                .env("BENCH_CLIENT", client_id)
                .env("BENCH_SECRET", secret)
                .env("BENCH_DONE", &done)
                .env("BENCH_INCREMENTAL", incremental.to_string())
                .env("BENCH_POLLS", polls.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "warm", "child: {line}");
            let before = sim.stats();
            writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
            line.clear();
            out.read_line(&mut line).unwrap();
            let after = sim.stats();
            child.wait().unwrap();
            let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
            let calls = after
                .requests
                .get("list_machine_actions")
                .copied()
                .unwrap_or(0)
                - before
                    .requests
                    .get("list_machine_actions")
                    .copied()
                    .unwrap_or(0);
            let bytes = after
                .response_bytes
                .get("list_machine_actions")
                .copied()
                .unwrap_or(0)
                - before
                    .response_bytes
                    .get("list_machine_actions")
                    .copied()
                    .unwrap_or(0);
            let n = f64::from(polls);
            rows.push(format!(
                "| {rate} | {} | {:.1} | {:.0} KiB | {:.3} s | {:.3} s | {} MiB | {} MiB | {} |",
                if incremental {
                    "incremental"
                } else {
                    "full window (old)"
                },
                calls as f64 / n,
                bytes as f64 / n / 1024.0,
                r["mean_s"].as_f64().unwrap_or(0.0),
                r["max_s"].as_f64().unwrap_or(0.0),
                r["peak_rss_kib"].as_u64().unwrap_or(0) / 1024,
                r["warm_up_peak_rss_kib"].as_u64().unwrap_or(0) / 1024,
                r["ok"],
            ));
        }
        server.abort();
    }
    println!(
        "| actions/day | discovery | list calls/poll | bytes/poll | poll mean | poll max | peak RSS | warm-up peak RSS | polls ok |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

async fn child() {
    let addr: String = std::env::var("BENCH_ADDR").unwrap();
    let incremental: bool = env_or("BENCH_INCREMENTAL", true);
    let polls: u32 = env_or("BENCH_POLLS", 5);
    let yaml = format!(
        "poll_interval: 60s\ntenants:\n  - name: bench\n    tenant_id: {}\n    client_id: {}\n    client_secret: {}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    lookback: 24h\n    discovery:\n      incremental: {incremental}\n",
        std::env::var("BENCH_TENANT").unwrap(),
        std::env::var("BENCH_CLIENT").unwrap(),
        std::env::var("BENCH_SECRET").unwrap(),
    );
    let config = Config::parse(&yaml, Path::new("bench.yml"), &|_| None).unwrap();
    let tenant = config.tenants[0].clone();
    // The steady state: everything already counted (in memory; no fsync per key here).
    let mut state = State::default();
    let done = std::fs::read_to_string(std::env::var("BENCH_DONE").unwrap()).unwrap();
    for line in done.lines() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("r"), Some(id), Some(index)) => {
                state
                    .mark_done(ResultKey {
                        tenant: "bench".into(),
                        action_id: id.into(),
                        index: index.parse().unwrap(),
                    })
                    .unwrap();
            }
            (Some("a"), Some(id), None) => {
                state.mark_action_seen("bench", id).unwrap();
            }
            _ => {}
        }
    }
    let metrics = Arc::new(Metrics::new());
    let quota = Arc::new(Mutex::new(Quota::new(&tenant.quota)));
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        state: Arc::new(Mutex::new(state)),
        status: Arc::new(RwLock::new(Default::default())),
        quotas: [("bench".to_string(), quota.clone())].into(),
        clocks: Default::default(),
        settings: CollectorSettings::from_config(&config),
        trace_url: None,
        last_expiry: Mutex::new(None),
        ownership: None,
    });
    let http = mde_liveresponse_exporter::api::Http::new(
        mde_liveresponse_exporter::app::http_client(Duration::from_secs(120)).unwrap(),
        mde_liveresponse_exporter::api::http::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        &metrics,
    );
    let client = Client::new(&tenant, http, quota, metrics).unwrap();
    let mut collector = TenantCollector::new(tenant, client, shared);
    // Warm-up: the token, and for incremental discovery the first-start listing.
    collector.poll_once().await.unwrap();
    // Peak RSS from here on: writing 5 to clear_refs resets VmHWM (Linux), so the figure is
    // the steady state's, not the first-start listing's (reported separately).
    let warm_rss = peak_rss_kib();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    println!("warm");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mut durations = Vec::new();
    let mut ok = 0;
    for _ in 0..polls {
        let started = Instant::now();
        if collector.poll_once().await.is_ok() {
            ok += 1;
        }
        durations.push(started.elapsed().as_secs_f64());
    }
    let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    let max = durations.iter().copied().fold(0.0, f64::max);
    println!(
        "{}",
        serde_json::json!({
            "mean_s": mean,
            "max_s": max,
            "ok": ok,
            "peak_rss_kib": peak_rss_kib(),
            "warm_up_peak_rss_kib": warm_rss,
        })
    );
}
