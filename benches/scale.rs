//! Scale benchmark (not a test): the real exporter binary, in its own process, against the
//! multi-tenant simulator (in this process) with N tenants, each with its own credentials,
//! 10 Live Response actions, its own quota, and 60 s polls.
//!
//! For each N (`BENCH_TENANTS`, default `1,100,500,2000`) it prints the exporter's RSS before
//! its first poll, while draining and in steady state (and the peak, `VmHWM`), the CPU it
//! spends per tenant and poll, the time to drain every finished result, `/metrics` render
//! time (steady, and the worst while collectors are busy) and the series count. Time is
//! scaled by `BENCH_SCALE` (default 10: a 60 s poll lasts 6 s) for every clock together:
//! the poll interval, both quota windows (ours and the simulator's), token and link
//! lifetimes. CPU is reported per poll cycle, which the time scale does not change, and as
//! a share of one core at unscaled 60 s polls. `BENCH_EXPORTER` runs another build of the
//! exporter (the figures "before" in the README come from the binary of the starting commit).
//! `discovery.min_interval` is scaled too, and the list calls a tenant makes per minute in
//! steady state are printed (#33: a quiet tenant lists about once a `poll_interval`).
//! `BENCH_SCRIPT_METRICS=1` has two of the simulator's scripts print findings and the
//! exporter read them with `script_metrics:` rules (#21), and counts their series.
//! `BENCH_TENANT_FILES=1` puts the tenants in tenant files of 100 entries under one
//! `tenant_defaults:` block (#34) instead of `tenants:`. `BENCH_SERIES_AT_ZERO=0` sets
//! `self_monitoring: {tenant_series_at_zero: false}` (#34): no per-tenant series at 0.
//! Run it with `cargo bench --bench scale` or `benches/scripts/scale.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mde_sim::SimConfig;
use mde_sim::multi::MultiSim;
use tokio::net::TcpListener;

mod common;

use common::{env_list, env_or};

/// A field of `/proc/<pid>/status` in KiB (0 when absent).
fn status_kib(pid: u32, name: &str) -> u64 {
    common::status_kib(&pid.to_string(), name).unwrap_or(0)
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"))
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // `rest` starts at field 3 (state): utime is field 14 → index 11, stime → 12.
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Sum of every sample of `name` (all label sets) whose labels contain `filter`.
fn sum(body: &str, name: &str, filter: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
                && l.contains(filter)
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// `GET /api/machineactions` calls the exporter made so far, over all tenants.
fn list_calls(body: &str) -> f64 {
    sum(
        body,
        "mde_api_requests_total",
        "endpoint=\"list_machine_actions\"",
    )
}

struct Scrape {
    took: Duration,
    body: String,
}

async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Option<Scrape> {
    let t = Instant::now();
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    let body = resp.text().await.ok()?;
    Some(Scrape {
        took: t.elapsed(),
        body,
    })
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let scale: f64 = env_or("BENCH_SCALE", 10.0);
    let steady_polls: u32 = env_or("BENCH_STEADY_POLLS", 5);
    let actions: usize = env_or("BENCH_ACTIONS", 10);
    let tenants: Vec<usize> = env_list("BENCH_TENANTS", "1,100,500,2000");
    let exporter = std::env::var("BENCH_EXPORTER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mde-liveresponse-exporter").to_string());
    let poll = Duration::from_secs(60).div_f64(scale);
    println!(
        "exporter {exporter}\ntime scale {scale}: 60 s polls last {poll:?}; {actions} actions per tenant; steady state over {steady_polls} polls"
    );
    println!(
        "{:>6} | {:>9} {:>9} {:>9} {:>9} | {:>12} {:>10} | {:>8} | {:>9} {:>9} {:>9} | {:>7}",
        "N",
        "RSS start",
        "drain",
        "steady",
        "peak",
        "CPU ms/poll",
        "%core@60s",
        "drain s",
        "scrape p50",
        "p99",
        "busy max",
        "series"
    );
    for n in tenants {
        one(n, scale, poll, steady_polls, actions, &exporter).await;
    }
}

/// Whether the tenants come from tenant files (`BENCH_TENANT_FILES=1`, #34): one
/// `tenant_defaults:` block and files of 100 `{name, tenant_id, client_id, client_secret}`.
fn tenant_files() -> bool {
    env_or("BENCH_TENANT_FILES", 0) == 1
}

/// Whether the scripts print findings and the exporter reads them (`BENCH_SCRIPT_METRICS=1`).
fn script_metrics() -> bool {
    env_or("BENCH_SCRIPT_METRICS", 0) == 1
}

async fn one(n: usize, scale: f64, poll: Duration, steady_polls: u32, actions: usize, exe: &str) {
    let base = SimConfig {
        seed: 11,
        machines: 10,
        actions,
        // Every action is final at start: the backlog to drain is known.
        finish_within: Duration::ZERO,
        // `BENCH_SCRIPT_METRICS=1`: two of the library's scripts print findings (#21).
        script_metrics: script_metrics(),
        ..SimConfig::default()
    }
    .time_scaled(scale);
    let multi = MultiSim::new(&base, n);
    let summary = multi.summary();
    let want = (summary.transcripts + summary.files) as f64;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = listener.local_addr().unwrap();
    let (stop_sim, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(multi.clone().serve(listener, async move {
        let _ = stopped.await;
    }));

    let dir = tempfile::tempdir().unwrap();
    // `discovery.min_interval` (5 s) scaled like `poll_interval`, as every other clock (#33):
    // unscaled it would be 5 of the 6 seconds of a scaled minute.
    let min_interval = Duration::from_secs(5).div_f64(scale);
    let mut yaml = format!(
        "poll_interval: {}ms\nstate_path: {}\n{}",
        poll.as_millis(),
        dir.path().join("state.redb").display(),
        if script_metrics() {
            mde_sim::script_metrics_rules()
        } else {
            String::new()
        },
    );
    if env_or("BENCH_SERIES_AT_ZERO", 1) == 0 {
        yaml.push_str("self_monitoring:\n  tenant_series_at_zero: false\n");
    }
    // Every tenant has the simulator's quota and the scaled minimum interval.
    let q = multi.tenants()[0].config().clone();
    let common = format!(
        "api_url: http://{sim_addr}\nlogin_url: http://{sim_addr}\ndiscovery:\n  min_interval: {}us\nquota:\n  per_minute: {}\n  per_hour: {}\n  minute: {}us\n  hour: {}us\n",
        min_interval.as_micros(),
        q.per_minute,
        q.per_hour,
        q.minute.as_micros(),
        q.hour.as_micros(),
    );
    let indent =
        |text: &str, by: &str| -> String { text.lines().map(|l| format!("{by}{l}\n")).collect() };
    let entry = |i: usize, sim: &mde_sim::Simulator| {
        let (tenant_id, client_id, secret) = sim.credentials();
        format!(
            "- name: customer-{i:04}\n  tenant_id: {tenant_id}\n  client_id: {client_id}\n  client_secret: {secret}\n"
        )
    };
    if tenant_files() {
        // #34: one `tenant_defaults:` block and files of 100 entries, as an MSSP would.
        yaml.push_str(&format!(
            "tenant_defaults:\n{}tenant_files:\n  - files: [customers/*.yml]\n    refresh_interval: 5m\n",
            indent(&common, "  ")
        ));
        std::fs::create_dir(dir.path().join("customers")).unwrap();
        for (f, group) in multi.tenants().chunks(100).enumerate() {
            let text: String = group
                .iter()
                .enumerate()
                .map(|(j, sim)| entry(f * 100 + j, sim))
                .collect();
            std::fs::write(dir.path().join(format!("customers/group-{f:04}.yml")), text).unwrap();
        }
    } else {
        yaml.push_str("tenants:\n");
        for (i, sim) in multi.tenants().iter().enumerate() {
            yaml.push_str(&indent(&(entry(i, sim) + &indent(&common, "  ")), "  "));
        }
    }
    let config = dir.path().join("config.yml");
    std::fs::File::create(&config)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .unwrap();
    // A free port for the exporter.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let log = std::fs::File::create(dir.path().join("exporter.log")).unwrap();
    let started = Instant::now();
    let child = Command::new(exe)
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            &addr.to_string(),
            "--log.level",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut exporter = Exporter { child, addr };
    let pid = exporter.child.id();
    let http = reqwest::Client::new();

    // Up, before the first poll has finished: the first answer of /-/healthy.
    let mut rss_start = 0;
    for _ in 0..3000 {
        if let Ok(r) = http
            .get(format!("http://{}/-/healthy", exporter.addr))
            .send()
            .await
            && r.status().is_success()
        {
            rss_start = rss_kib(pid).0;
            break;
        }
        if let Ok(Some(status)) = exporter.child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("exporter.log")).unwrap_or_default();
            panic!(
                "exporter exited {status}: {}",
                &log[log.len().saturating_sub(2000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Drain: every finished result counted (malformed transcripts count as fetch failures).
    let mut busy: Vec<Duration> = Vec::new();
    let mut rss_drain = 0;
    let drained = loop {
        let Some(s) = scrape(&http, exporter.addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        busy.push(s.took);
        rss_drain = rss_drain.max(rss_kib(pid).0);
        let got = sum(&s.body, "mde_liveresponse_script_runs_total", "")
            + sum(&s.body, "mde_liveresponse_files_total", "")
            + sum(
                &s.body,
                "mde_liveresponse_result_fetch_failures_total",
                "reason=\"malformed\"",
            );
        if got >= want {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            println!("N={n}: not drained after 900 s: {got} of {want}");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Steady state: `BENCH_SETTLE_POLLS` (2) more polls to settle (a quiet tenant backs off
    // from `min_interval` to `poll_interval` in 5 + 10 + 20 + 40 s), then `steady_polls` polls.
    let settle: u32 = env_or("BENCH_SETTLE_POLLS", 2);
    tokio::time::sleep(poll * settle).await;
    let list0 = match scrape(&http, exporter.addr).await {
        Some(s) => list_calls(&s.body),
        None => 0.0,
    };
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut rss_steady = 0;
    // What the steady RSS is made of: anonymous (heap, stacks) and file-backed (the
    // executable's code and data that were touched).
    let mut anon_file = (0, 0);
    let mut times = Vec::new();
    let mut last = String::new();
    while t0.elapsed() < poll * steady_polls {
        tokio::time::sleep(poll / 4).await;
        let rss = rss_kib(pid).0;
        if rss >= rss_steady {
            rss_steady = rss;
            anon_file = (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"));
        }
        if let Some(s) = scrape(&http, exporter.addr).await {
            times.push(s.took);
            last = s.body;
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    // List calls a tenant makes in a (scaled) minute of steady state.
    let lists_per_minute =
        (list_calls(&last) - list0) / n as f64 / (wall.as_secs_f64() / poll.as_secs_f64());
    // Scrapes cost CPU too; they are part of steady state (Prometheus scrapes).
    let polls_done = wall.as_secs_f64() / poll.as_secs_f64();
    let cpu_per_poll_ms = 1000.0 * cpu / polls_done;
    let core_at_60s = 100.0 * cpu / polls_done / 60.0;
    let (_, peak) = rss_kib(pid);
    let script_series = last
        .lines()
        .filter(|l| l.starts_with("mde_script_") && !l.starts_with("mde_script_metrics_"))
        .count();
    // `+ 0.0` turns the -0.0 of an empty float sum into 0.
    let throttled = sum(&last, "mde_api_throttled_total", "") + 0.0;
    println!(
        "{:>6} | {:>7.1}Mi {:>7.1}Mi {:>7.1}Mi {:>7.1}Mi | {:>12.1} {:>9.3}% | {:>8} | {:>9.2?} {:>9.2?} {:>9.2?} | {:>7}",
        n,
        mib(rss_start),
        mib(rss_drain),
        mib(rss_steady),
        mib(peak),
        cpu_per_poll_ms,
        core_at_60s,
        drained.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        percentile(&mut busy, 1.0),
        series(&last),
    );
    println!(
        "       {} results ({} transcripts, {} malformed, {} files) in {} final actions; {throttled} × 429; CPU per tenant and poll {:.3} ms; {lists_per_minute:.2} list calls per tenant and minute; steady RSS {:.1} MiB anonymous + {:.1} MiB file-backed; {script_series} script-output series",
        want,
        summary.transcripts,
        summary.malformed,
        summary.files,
        summary.actions,
        cpu_per_poll_ms / n as f64,
        mib(anon_file.0),
        mib(anon_file.1),
    );
    let _ = exporter.child.kill();
    let _ = exporter.child.wait();
    drop(exporter);
    let _ = stop_sim.send(());
    let _ = server.await;
}
