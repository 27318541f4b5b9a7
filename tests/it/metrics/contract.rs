//! The metrics contract, tested three ways: a golden list of families (HELP/TYPE lines),
//! `promtool check metrics` as an independent parser, and content negotiation.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

const GOLDEN: &str = "tests/fixtures/metrics-families.txt";

/// Every family named in the contract (issue #2), in the Prometheus text exposition.
const DOCUMENTED: &[&str] = &[
    "mde_liveresponse_script_runs_total",
    "mde_liveresponse_script_failures_total",
    "mde_liveresponse_script_errors_total",
    "mde_liveresponse_script_exit_code",
    "mde_liveresponse_script_errors_present",
    "mde_liveresponse_script_last_run_timestamp_seconds",
    "mde_liveresponse_commands_total",
    "mde_liveresponse_actions_total",
    "mde_liveresponse_result_fetch_failures_total",
    "mde_api_requests_total",
    "mde_api_request_duration_seconds",
    "mde_api_throttled_total",
    "mde_api_quota_limit",
    "mde_api_quota_used",
    "mde_api_quota_remaining",
    "mde_exporter_build_info",
    "mde_exporter_poll_success",
    "mde_exporter_last_poll_success_timestamp_seconds",
    "mde_exporter_poll_duration_seconds",
    // See: #12
    "mde_exporter_series_evicted_total",
    // See: #36
    "mde_liveresponse_script_failure_signatures",
    "mde_liveresponse_script_failure_signatures_folded",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    // See: #10
    "mde_machine_info",
    "mde_machine_tag",
    "mde_exporter_permission_missing",
    // See: #21: the fixed families of script output as metrics, and one a script printed.
    "mde_script_metrics_lines_invalid_total",
    "mde_script_metrics_dropped_total",
    "mde_script_metrics_last_transcript_timestamp_seconds",
    // See: #32 item 1 (at 0 from a rule's first set on).
    "mde_script_metrics_parse_abandoned_total",
    "mde_script_bitlocker_protection_on",
    // See: #23
    "mde_exporter_otlp_metrics_exports_total",
];

/// See: #21. Rules over the simulator's scripts that print findings (text and JSON), one
/// whose transcripts have a line that starts like a sample and does not parse
/// (`Collected 42 items`), and a `max_series` below what one script prints, so that every
/// `mde_script_metrics_*` family has samples.
const SCRIPT_RULES: &str = "script_metrics:
  - script: check-bitlocker.ps1
    format: prometheus
    max_series: 2
  - script: get-av-status.ps1
    format: json
    metrics:
      - name: av_enabled
        path: antivirus_enabled
        help: 1 if Microsoft Defender Antivirus is enabled
  - script: collect-triage.ps1
    format: prometheus
";

async fn populated_exporter() -> (mde_liveresponse_exporter::app::Handle, mde_sim::Simulator) {
    let (sim, addr) = start_sim(SimConfig {
        seed: 21,
        machines: 5,
        actions: 30,
        finish_within: Duration::from_millis(300),
        script_metrics: true,
        // See: #24: scripts that did not run, for both not-run families.
        not_run: 4,
        ..SimConfig::default()
    })
    .await;
    sim.faults()
        .throttle_next("list_machine_actions", 1, Some(1));
    // See: #20 — an endpoint that announces its end, for mde_api_endpoint_deprecation_notices_total.
    sim.faults()
        .announce("/api/machines", "Deprecation", "@1767225600");
    // See: #10 — every tag allowed, so that the machine context families are populated.
    let mut exporter =
        start_exporter_with(&sim, addr, "    machine_tags: ['.*']\n", SCRIPT_RULES).await;
    // See: #23 — pushing over OTLP (to nowhere: no export is due within the test) serves
    // mde_exporter_otlp_metrics_exports_total.
    exporter
        .push_metrics(
            mde_liveresponse_exporter::otlp_metrics::PushConfig::resolve(
                &Default::default(),
                &|name| match name {
                    "OTEL_METRICS_EXPORTER" => Some("otlp".into()),
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => {
                        Some("http://127.0.0.1:9/v1/metrics".into())
                    }
                    _ => None,
                },
            )
            .unwrap()
            .unwrap(),
        )
        .unwrap();
    let a = exporter.addr;
    eventually("transcripts and a throttle", || async move {
        let m = scrape(a).await;
        sum(&m, "mde_liveresponse_script_runs_total", &[]) > 0.0
            && sum(&m, "mde_liveresponse_result_fetch_failures_total", &[]) > 0.0
            && sum(&m, "mde_api_throttled_total", &[]) > 0.0
            && sum(&m, "mde_machine_info", &[]) > 0.0
            && sum(&m, "mde_machine_tag", &[]) > 0.0
            && sum(&m, "mde_api_endpoint_deprecation_notices_total", &[]) > 0.0
            && sum(&m, "mde_script_metrics_lines_invalid_total", &[]) > 0.0
            && sum(&m, "mde_script_metrics_dropped_total", &[]) > 0.0
            && sum(&m, "mde_script_av_enabled", &[]) > 0.0
            && sum(&m, "mde_liveresponse_script_not_run_current", &[]) > 0.0
    })
    .await;
    (exporter, sim)
}

fn families(text: &str) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# HELP") || l.starts_with("# TYPE"))
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_match_the_golden_file_and_the_contract() {
    let (exporter, _sim) = populated_exporter().await;
    let (status, ct, text) = get(exporter.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let got = families(&text);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let want = std::fs::read_to_string(GOLDEN).unwrap();
    assert_eq!(
        got, want,
        "families changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    );
    for name in DOCUMENTED {
        let sample = text.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("{name}_bucket{{"))
                || l.starts_with(&format!("{name} "))
        });
        assert!(sample, "no sample of {name}");
    }
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    if !have_promtool() {
        return;
    }
    let (exporter, _sim) = populated_exporter().await;
    let (_, _, text) = get(exporter.addr, "/metrics", None).await;
    promtool_check(&text);
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_when_asked_and_landing_pages() {
    let (exporter, _sim) = populated_exporter().await;
    let (status, ct, text) = get(
        exporter.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE mde_liveresponse_script_runs counter"));
    // See: #24 item 10: one family to a name (a counter's family drops `_total` here, so the
    // old not-run gauge is left out: its series are under `_current`).
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(names.insert(name), "{line}: a second family of that name");
    }
    assert!(text.contains("# TYPE mde_liveresponse_script_not_run counter"));
    assert!(text.contains("# TYPE mde_liveresponse_script_not_run_current gauge"));
    if have_promtool() {
        // promtool reads the 0.0.4 text format and stops at OpenMetrics-only syntax (the
        // `unknown` type of script output), but a second HELP or TYPE line for one name,
        // what strict parsers refuse, it reports first.
        let report = promtool_report(&text);
        assert!(
            !report.contains("second HELP line") && !report.contains("second TYPE line"),
            "promtool: {report}"
        );
    }
    let (status, _, body) = get(exporter.addr, "/-/healthy", None).await;
    assert_eq!((status, body.as_str()), (200, "Healthy\n"));
    let (status, _, page) = get(exporter.addr, "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<h2>Tenant sim</h2>"), "{page}");
    assert!(page.contains("href=\"/metrics\""));
    exporter.shutdown().await.unwrap();
}

/// `promtool check metrics` on `text`: no error and no lint finding.
fn promtool_check(text: &str) {
    let (ok, report) = promtool_run(text);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
}

/// What `promtool check metrics` says of `text`.
fn promtool_report(text: &str) -> String {
    promtool_run(text).1
}

/// `promtool check metrics` on `text`: (exit status success, stdout and stderr).
fn promtool_run(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// Whether promtool is here; in CI it must be.
fn have_promtool() -> bool {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI"
        );
        eprintln!("SKIP: promtool not installed (scripts/test.sh installs it)");
        return false;
    };
    out.status.success()
}

// See: #11. A large body is encoded family by family on two threads and sent as one chunked
// body: over HTTP it is still one valid exposition, each family once, in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_sent_in_chunks_is_one_valid_exposition() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let exporter = start_exporter_on(&sim, addr).await;
    let shared = exporter.shared();
    for i in 0..6000 {
        let labels = mde_liveresponse_exporter::metrics::MachineScriptLabels {
            tenant: "synthetic".into(),
            machine: format!("machine-{i}.contoso.example").into(),
            script: "collect.ps1".into(),
        };
        shared.metrics.results.set_script_series(
            &labels,
            mde_liveresponse_exporter::metrics::ScriptSeries {
                exit_code: 1,
                errors_present: false,
                end_time: 1_764_299_000.0,
            },
        );
        shared.metrics.results.set_script_not_run(&labels, true);
    }
    assert!(shared.metrics.encode_chunks(false).unwrap().len() == 1);
    assert!(
        shared.metrics.encode_chunks(false).unwrap().len() > 2,
        "not encoded family by family"
    );
    let (status, _, text) = get(exporter.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    for family in [
        "mde_liveresponse_script_exit_code",
        "mde_liveresponse_script_not_run",
    ] {
        assert_eq!(text.matches(&format!("# TYPE {family} gauge\n")).count(), 1);
        let samples = parse_samples(&text);
        assert_eq!(sum(&samples, family, &[("tenant", "synthetic")]), 6000.0);
    }
    assert!(text.contains("# TYPE mde_exporter_build_info gauge"));
    if have_promtool() {
        promtool_check(&text);
    }
    let (_, _, om) = get(
        exporter.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await;
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.ends_with("# EOF\n"));
    exporter.shutdown().await.unwrap();
}
