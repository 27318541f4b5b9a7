//! `/metrics` render benchmark (not a test): how long encoding the metric families takes,
//! in this process, with no HTTP and no collection running, for a registry holding the
//! series N tenants really have.
//!
//! Each tenant gets what `Shared::init_series` pre-creates (`shared::init_tenant_series`: per
//! endpoint: throttled, retry-after and the request-duration histogram; the fetch-failure,
//! eviction and action counters; the poll-duration histogram), what a poll sets (poll, token and permission
//! gauges, request counters), its quota (the four `mde_api_quota_*` families are computed
//! from the windows as they are encoded), and 10 machines running 2 scripts (the per-machine
//! gauges, `mde_machine_info`). That is about 190 series a tenant, close to what the scale
//! benchmark counts against the simulator. For each size (`BENCH_SERIES`, default
//! `20000,50000,100000`) it prints the series count, the body size, and the p50/p99/max of
//! `BENCH_RUNS` (default 50) encodings in the Prometheus text format and in OpenMetrics, as
//! `/metrics` makes them (`Metrics::encode_chunks`: two threads for a large body).
//! `BENCH_THREADS=1` times the encoding on one thread, for comparison. "CPU ms" is the
//! process's CPU time per text encoding, all threads together.
//! `BENCH_SCRIPT_MACHINES=10000` adds script output as metrics (#21): that many machines of
//! one tenant, each with a set of `BENCH_SCRIPT_SAMPLES` (default 20) samples, 20 families of
//! one sample with a label of its own (10,000 x 20 = 200,000 `mde_script_*` series, the
//! target of #21: at most 30 ms, RSS at most 128 MiB), on top of the `BENCH_SERIES` size.
//! `BENCH_PROTOBUF=1` times the Prometheus protobuf format as well.
//! `BENCH_OTLP=1` times instead the build of one OTLP metrics push (`otlp_metrics::built`:
//! wall time, CPU time all threads together, and the peak RSS above what the series hold).
//! Run it with `cargo bench --bench render`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mde_liveresponse_exporter::config::QuotaConfig;
use mde_liveresponse_exporter::metrics::{
    MachineInfoLabels, MachineScriptLabels, Metrics, ScriptSeries,
};
use mde_liveresponse_exporter::quota::{Endpoint, Quota};
use mde_liveresponse_exporter::shared::init_tenant_series;

mod common;

use common::{env_list, env_or};

/// Fill `m` with the series of one tenant; returns its quota.
fn one_tenant(m: &Metrics, t: &str, quota: &QuotaConfig) -> Arc<Mutex<Quota>> {
    let mut q = Quota::new(quota);
    let now = tokio::time::Instant::now();
    // What every configured tenant starts with, then what a few polls put in it.
    init_tenant_series(m, t);
    for ep in Endpoint::ALL {
        for _ in 0..3 {
            m.api.record_request(
                t,
                ep.as_str(),
                "200".into(),
                Duration::from_millis(120),
                None,
            );
        }
        let _ = q.try_acquire(ep, now);
    }
    m.api.record_request(
        t,
        "download",
        "200".into(),
        Duration::from_millis(300),
        None,
    );
    m.results.record_final_action(
        t,
        "Succeeded",
        std::iter::repeat_n(("RunScript", "Completed"), 10),
    );
    m.poll.record_poll(
        t,
        true,
        Duration::from_millis(800),
        1_764_300_000.25,
        0,
        None,
    );
    m.results.record_file(t, 123_456);
    m.api.record_transcript_bytes(t, 65_432);
    m.api.record_token(t, true);
    m.api.set_permission_missing(t, "Machine.Read.All", false);
    for script in ["Collect-Inventory.ps1", "Remediate-Service.ps1"] {
        // 5 runs: one failed and with errors.
        for run in 0..5 {
            m.results
                .record_transcript(t, script, i64::from(run == 0), run == 0, || None);
        }
        for i in 0..10 {
            let labels = MachineScriptLabels {
                tenant: t.into(),
                machine: format!("host-{i:03}.corp.contoso.com").into(),
                script: script.into(),
            };
            m.results.set_script_series(
                &labels,
                ScriptSeries {
                    exit_code: 0,
                    errors_present: false,
                    end_time: 1_764_299_000.0,
                },
            );
        }
    }
    for i in 0..10 {
        m.machines.expose_machine(
            &MachineInfoLabels {
                tenant: t.into(),
                machine: format!("host-{i:03}.corp.contoso.com").into(),
                machine_id: format!("{i:040x}").into(),
                rbac_group: "Tier 1 servers".into(),
                os_platform: "Windows11".into(),
                health_status: "Active".into(),
            },
            [],
        );
    }
    Arc::new(Mutex::new(q))
}

/// The script_metrics sets of `BENCH_SCRIPT_MACHINES` machines (none by default). See: #21
fn script_sets(m: &Metrics) {
    use mde_liveresponse_exporter::script_metrics::parse::Kind;
    use mde_liveresponse_exporter::script_metrics::store::{Family, Set};
    let machines: usize = env_or("BENCH_SCRIPT_MACHINES", 0);
    let samples: usize = env_or("BENCH_SCRIPT_SAMPLES", 20);
    let produced = chrono::DateTime::from_timestamp(1_764_299_000, 0).unwrap_or_default();
    for i in 0..machines {
        let families = (0..samples)
            .map(|f| Family {
                name: format!("mde_script_compliance_check_{f:02}"),
                kind: Kind::Gauge,
                help: Some("Printed by compliance-check.ps1".into()),
                samples: vec![(vec![("volume".into(), "C:".into())], (i % 7) as f64)],
            })
            .collect();
        m.script_metrics.restore(
            (
                "customer-0000".into(),
                format!("host-{i:05}.corp.contoso.com"),
                "compliance-check.ps1".into(),
            ),
            Set {
                produced,
                index: 0,
                ttl: Duration::from_secs(7 * 86_400),
                families,
            },
        );
    }
}

/// This process's resident set, in KiB (0 where `/proc` is not there).
fn rss_kib() -> u64 {
    common::status_kib("self", "VmRSS:").unwrap_or(0)
}

/// CPU time (user + system) of this process so far, all threads, from `/proc/self/stat`
/// (in clock ticks of 10 ms: enough over a few hundred encodings).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let sizes: Vec<usize> = env_list("BENCH_SERIES", "20000,50000,100000");
    let runs: usize = env_or("BENCH_RUNS", 50);
    // Each size in a process of its own, so that what its series hold is not hidden by memory
    // the allocator kept from the size before.
    if sizes.len() > 1 {
        let exe = std::env::current_exe().unwrap();
        for (i, size) in sizes.iter().enumerate() {
            let status = std::process::Command::new(&exe)
                .env("BENCH_SERIES", size.to_string())
                .env("BENCH_HEADER", if i == 0 { "1" } else { "0" })
                .status()
                .unwrap();
            assert!(status.success(), "size {size}: {status}");
        }
        return;
    }
    let header = std::env::var("BENCH_HEADER").map_or(true, |v| v == "1");
    // The quota gauges read tokio's clock; a runtime gives them one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let quota = QuotaConfig::default();
    let one_thread = env_or("BENCH_THREADS", 2) == 1;
    // Series of one tenant, to size each run.
    let per_tenant = {
        let m = Metrics::new();
        let base = series(&m.encode(false).unwrap());
        let q = one_tenant(&m, "probe", &quota);
        let names = "probe".to_string();
        m.api.set_quotas([(&names, &q)], Arc::new(|_: &str| true));
        series(&m.encode(false).unwrap()) - base
    };
    if header {
        println!(
            "{per_tenant} series a tenant; {runs} encodings per size; {}",
            if one_thread {
                "on one thread"
            } else {
                "as /metrics encodes them"
            }
        );
        println!(
            "{:>8} {:>8} {:>9} | {:>22} | {:>22} | {:>8} | memory",
            "tenants", "series", "body", "text p50/p99/max", "OpenMetrics p50/p99/max", "CPU ms"
        );
    }
    for want in sizes {
        let n = want.div_ceil(per_tenant);
        let rss_before = rss_kib();
        let m = Metrics::new();
        let names: Vec<String> = (0..n).map(|i| format!("customer-{i:04}")).collect();
        let quotas: HashMap<&String, Arc<Mutex<Quota>>> = names
            .iter()
            .map(|t| (t, one_tenant(&m, t, &quota)))
            .collect();
        m.api.set_quotas(
            quotas.iter().map(|(t, q)| (*t, q)),
            Arc::new(|_: &str| true),
        );
        script_sets(&m);
        // What holding these series costs (the registry and the quotas), before any encoding.
        let held = rss_kib().saturating_sub(rss_before);
        if env_or("BENCH_OTLP", 0) == 1 {
            otlp(&m, runs, n, held);
            continue;
        }
        let mut line = String::new();
        let mut body_len = 0;
        let mut count = 0;
        let mut cpu_ms = 0.0;
        for om in [false, true] {
            let mut times = Vec::with_capacity(runs);
            let cpu0 = cpu_seconds();
            for _ in 0..runs {
                // What `/metrics` does: one chunk, or two encoded side by side for a large
                // body (sent one after the other, never joined).
                let t = Instant::now();
                let chunks = if one_thread {
                    m.encode_on_one_thread(om).unwrap()
                } else {
                    m.encode_chunks(om).unwrap()
                };
                times.push(t.elapsed());
                if !om {
                    body_len = chunks.iter().map(|c| c.len()).sum();
                    count = chunks
                        .iter()
                        .map(|c| series(std::str::from_utf8(c).unwrap()))
                        .sum();
                }
                std::hint::black_box(chunks);
            }
            if !om {
                cpu_ms = 1000.0 * (cpu_seconds() - cpu0) / runs as f64;
            }
            line.push_str(&format!(
                " | {:>6.1?} {:>6.1?} {:>6.1?}",
                percentile(&mut times, 0.5),
                percentile(&mut times, 0.99),
                percentile(&mut times, 1.0)
            ));
        }
        // The process's peak RSS so far (VmHWM): the series held plus the bodies of a scrape,
        // the figure a memory limit has to allow (#21: at most 128 MiB with 200,000 script
        // series). Run one size at a time for it to be that size's.
        let peak = common::status_kib("self", "VmHWM:").unwrap_or(0);
        println!(
            "{n:>8} {count:>8} {:>7.1}MB{line} | {cpu_ms:>8.1} | {:>6.1} MiB held, {:.0} bytes a series, peak RSS {:.1} MiB",
            body_len as f64 / 1e6,
            held as f64 / 1024.0,
            held as f64 * 1024.0 / count.max(1) as f64,
            peak as f64 / 1024.0
        );
        // `BENCH_PROTOBUF=1`: the protobuf format too (one thread, as `/metrics` encodes it),
        // after the text formats so that the peak above is theirs.
        if env_or("BENCH_PROTOBUF", 0) == 1 {
            let mut times: Vec<Duration> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(m.encode_protobuf().unwrap());
                    t.elapsed()
                })
                .collect();
            println!(
                "{n:>8} {count:>8} protobuf p50/p99/max {:>6.1?} {:>6.1?} {:>6.1?}",
                percentile(&mut times, 0.5),
                percentile(&mut times, 0.99),
                percentile(&mut times, 1.0)
            );
        }
    }
}

/// `BENCH_OTLP=1`: `runs` builds of one push's OTLP metrics.
fn otlp(m: &Metrics, runs: usize, tenants: usize, held_kib: u64) {
    use mde_liveresponse_exporter::otlp_metrics::built;
    let rss_before = rss_kib();
    let mut times = Vec::with_capacity(runs);
    let mut points = 0;
    let cpu0 = cpu_seconds();
    for _ in 0..runs {
        let t = Instant::now();
        let metrics = built(m, 2, 1).unwrap();
        times.push(t.elapsed());
        points = metrics.len();
        std::hint::black_box(metrics);
    }
    let cpu_ms = 1000.0 * (cpu_seconds() - cpu0) / runs as f64;
    let peak = common::status_kib("self", "VmHWM:").unwrap_or(0);
    println!(
        "{tenants:>8} tenants, {:.1} MiB held: OTLP push: {points} metrics, p50/max {:>6.1?} {:>6.1?}, CPU {cpu_ms:.1} ms a push, peak RSS {:.1} MiB ({:.1} MiB above the series held)",
        held_kib as f64 / 1024.0,
        percentile(&mut times, 0.5),
        percentile(&mut times, 1.0),
        peak as f64 / 1024.0,
        peak.saturating_sub(rss_before) as f64 / 1024.0,
    );
}
