//! Tenant-files benchmark (not a test, #34): the real exporter binary, in its own process,
//! serving N idle tenants from tenant files (one multi-tenant app: `tenant_defaults:` and files
//! of 100 `{name, tenant_id}` entries each).
//!
//! For each N (`BENCH_TENANTS`, default `2000,10000`) it prints: the time `--config.check`
//! takes (reading and validating the defaults and every file), the time from spawning the
//! exporter to its "exporter listening" line (start-up), its RSS once started and a few
//! seconds later (and per tenant), the `/metrics` series and bytes per tenant, the render time
//! of `/metrics` (p50, p99 of `BENCH_SCRAPES` scrapes, default 30), and the cost of a file
//! change with N tenants loaded: the time from writing one more entry into one file to the new
//! tenant on `/metrics` (which includes up to the 1 s `refresh_interval`), and the RSS after;
//! the reload's own time and what it kept and started go to stderr (`reload: took …`).
//!
//! Idle: every tenant points at a closed loopback port with a 1 h poll interval, so polls are
//! spread over the hour and the few that start fail at once; what is measured is what a
//! configured tenant costs between its polls. `BENCH_STATIC=1` writes the same tenants into
//! `tenants:` of config.yml instead (the path as it was before tenant files, for comparison);
//! `BENCH_EXPORTER` runs another build. Run it with `cargo bench --bench tenant_files`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{env_list, env_or};

const PER_FILE: usize = 100;

fn entry(i: usize, indent: &str) -> String {
    format!(
        "{indent}- name: customer-{i:05}\n{indent}  tenant_id: {i:08}-0000-4000-8000-000000000000\n"
    )
}

/// `dir/config.yml` and its tenant files (or its `tenants:`) for `n` tenants.
fn write_config(dir: &Path, n: usize, inline: bool) -> std::path::PathBuf {
    let defaults = "poll_interval: 1h\ntenant_defaults:\n  client_id: 66666666-7777-8888-9999-000000000000\n  client_secret: bench\n  api_url: http://127.0.0.1:9\n  login_url: http://127.0.0.1:9\n";
    let mut config = defaults.to_string();
    if inline {
        config.push_str("tenants:\n");
        for i in 0..n {
            config.push_str(&entry(i, "  "));
        }
    } else {
        config.push_str("tenant_files:\n  - files: [customers/*.yml]\n    refresh_interval: 1s\n");
        std::fs::create_dir_all(dir.join("customers")).unwrap();
        for f in 0..n.div_ceil(PER_FILE) {
            let text: String = (f * PER_FILE..((f + 1) * PER_FILE).min(n))
                .map(|i| entry(i, ""))
                .collect();
            std::fs::write(dir.join(format!("customers/group-{f:04}.yml")), text).unwrap();
        }
    }
    let path = dir.join("config.yml");
    std::fs::write(&path, config).unwrap();
    path
}

fn rss_kib(pid: u32) -> u64 {
    common::status_kib(&pid.to_string(), "VmRSS:").unwrap_or(0)
}

/// Start the exporter on `config`: the child, its address, and the time to "listening".
fn spawn(exporter: &str, config: &Path) -> (Child, SocketAddr, Duration) {
    let started = Instant::now();
    let mut child = Command::new(exporter)
        .args(["--config.file", config.to_str().unwrap()])
        .args([
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.level",
            "warn,mde_liveresponse_exporter=info",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["msg"] == "exporter listening" {
            addr = v["addr"].as_str().and_then(|a| a.parse().ok());
            break;
        }
    }
    let took = started.elapsed();
    // Keep draining stderr; say what each reload did and took (#34).
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["msg"] == "configuration reloaded" {
                eprintln!(
                    "reload: took {} s, kept {}, started {}, stopped {}",
                    v["took_s"], v["kept"], v["started"], v["stopped"]
                );
            }
        }
    });
    (child, addr.expect("the exporter did not start"), took)
}

fn scrape(addr: SocketAddr) -> (String, Duration) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let took = started.elapsed();
    let body = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (body, took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let exporter = std::env::var("BENCH_EXPORTER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mde-liveresponse-exporter").to_string());
    let inline = env_or("BENCH_STATIC", 0u8) == 1;
    let scrapes: usize = env_or("BENCH_SCRAPES", 30);
    println!(
        "tenants  source  check_s  start_s  rss_start_mib  rss_idle_mib  kib_per_tenant  series_per_tenant  bytes_per_tenant  render_p50_ms  render_p99_ms  change_applied_s  rss_after_change_mib"
    );
    for n in env_list::<usize>("BENCH_TENANTS", "2000,10000") {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), n, inline);
        let started = Instant::now();
        let check = Command::new(&exporter)
            .args(["--config.check", "--config.file", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let check_s = started.elapsed().as_secs_f64();
        let (mut child, addr, start) = spawn(&exporter, &config);
        let pid = child.id();
        let rss_start = rss_kib(pid);
        std::thread::sleep(Duration::from_secs(5));
        let rss_idle = rss_kib(pid);
        let mut times = Vec::new();
        let mut body = String::new();
        for _ in 0..scrapes {
            let (b, t) = scrape(addr);
            times.push(t);
            body = b;
        }
        times.sort();
        let series = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        let per_tenant_series = body
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("tenant=\""))
            .count();
        let per_tenant_bytes: usize = body
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("tenant=\""))
            .map(|l| l.len() + 1)
            .sum();
        // A file change: one more entry in one file (or in config.yml, with a SIGHUP).
        let new = n + 1;
        let changed = Instant::now();
        if inline {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(&entry(new, "  "));
            std::fs::write(&config, text).unwrap();
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
        } else {
            let file = dir.path().join("customers/group-0000.yml");
            let mut text = std::fs::read_to_string(&file).unwrap();
            text.push_str(&entry(new, ""));
            std::fs::write(&file, text).unwrap();
        }
        let want = format!("tenant=\"customer-{new:05}\"");
        while !scrape(addr).0.contains(&want) {
            assert!(
                changed.elapsed() < Duration::from_secs(300),
                "the change was not applied"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let change_s = changed.elapsed().as_secs_f64();
        let rss_after = rss_kib(pid);
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "{n:>7}  {:>6}  {check_s:>7.2}  {:>7.2}  {:>13.1}  {:>12.1}  {:>14.1}  {:>17.1}  {:>16.0}  {:>13.1}  {:>13.1}  {change_s:>16.2}  {:>20.1}",
            if inline { "static" } else { "files" },
            start.as_secs_f64(),
            rss_start as f64 / 1024.0,
            rss_idle as f64 / 1024.0,
            rss_idle as f64 / n as f64,
            per_tenant_series as f64 / n as f64,
            per_tenant_bytes as f64 / n as f64,
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
            rss_after as f64 / 1024.0,
        );
        let _ = series;
    }
}
