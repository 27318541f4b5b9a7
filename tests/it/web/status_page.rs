//! The status page as a person sees it: headless Chromium loads `/` and the rendered DOM shows,
//! per tenant, the quota in both windows, the last poll, recent transcripts and errors.
//! See: #4

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_quota_polls_transcripts_and_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI"
        );
        eprintln!("SKIP: chromium not installed (scripts/test.sh installs it)");
        return;
    };
    let (sim, addr) = start_sim(SimConfig {
        seed: 4,
        machines: 4,
        actions: 20,
        finish_within: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let exporter = start_exporter_on(&sim, addr).await;
    let a = exporter.addr;
    eventually("transcripts and a failure", || async move {
        let m = scrape(a).await;
        sum(&m, "mde_liveresponse_script_runs_total", &[]) > 0.0
            && sum(&m, "mde_liveresponse_result_fetch_failures_total", &[]) > 0.0
    })
    .await;
    let truth = sim.truth();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{a}/");
    let out = tokio::task::spawn_blocking({
        let browser = browser.to_string();
        let profile = profile.path().to_path_buf();
        move || {
            Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=2000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(["--dump-dom", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<h1>MDE Live Response Exporter</h1>"), "{dom}");
    assert!(dom.contains("<h2>Tenant sim</h2>"), "{dom}");
    assert!(dom.contains("<span class=\"ok\">succeeded</span>"), "{dom}");
    // Both quota windows of every endpoint, with the configured limits.
    for ep in [
        "list_machine_actions",
        "get_machine_action",
        "get_result_download_link",
    ] {
        assert!(
            dom.contains(&format!(
                "<tr><td>{ep}</td><td>1m</td><td>100</td><td>100</td>"
            )),
            "{ep} 1m: {dom}"
        );
        assert!(
            dom.contains(&format!("<tr><td>{ep}</td><td>1h</td><td>1500</td>")),
            "{ep} 1h: {dom}"
        );
    }
    // A recent transcript row names a real script and machine of the scenario.
    let shown = truth
        .transcripts
        .iter()
        .filter(|t| !t.malformed)
        .any(|t| dom.contains(&format!("<td>{}</td><td>{}</td>", t.script, t.machine)));
    assert!(shown, "{dom}");
    // The malformed transcript shows up as a recent error.
    assert!(dom.contains("(malformed)"), "{dom}");
    exporter.shutdown().await.unwrap();
}
