//! Faults, one test each, against the simulator: every test ends with the exporter healthy
//! (its last poll succeeded) and every result counted exactly once (or, where retrying cannot
//! help, given up once with its reason). See: #3

use std::time::Duration;

use crate::common::*;
use mde_sim::{BlobFault, SimConfig, Simulator};

pub(crate) fn scenario(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 6,
        actions: 24,
        finish_within: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

/// Run the exporter against `sim` until every result is accounted for and a poll succeeded
/// after that; return the final metrics.
pub(crate) async fn run_to_the_end(
    sim: &Simulator,
    addr: std::net::SocketAddr,
    extra_global: &str,
) -> Samples {
    all_final(sim).await;
    let exporter = start_exporter_with(sim, addr, "", extra_global).await;
    let a = exporter.addr;
    settled(sim, a).await;
    // One more poll: nothing may change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = scrape(a).await;
    let (status, _, _) = get(a, "/-/ready", None).await;
    assert_eq!(status, 200, "healthy and ready at the end");
    exporter.shutdown().await.unwrap();
    m
}

/// The counts match the scenario: runs per script, and failures only for malformed ones.
pub(crate) fn assert_exactly_once(sim: &Simulator, m: &Samples) {
    let truth = sim.truth();
    assert_eq!(
        by_label(m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert_eq!(
        by_label(m, "mde_liveresponse_script_failures_total", "script", &[]),
        truth.failures_by_script()
    );
    let malformed = truth.transcripts.iter().filter(|t| t.malformed).count() as f64;
    assert_eq!(
        sum(m, "mde_liveresponse_result_fetch_failures_total", &[]),
        malformed
    );
    assert_eq!(
        sum(m, "mde_liveresponse_files_total", &[]),
        truth.files.len() as f64
    );
    let stats = sim.stats();
    for t in truth.transcripts.iter().filter(|t| !t.malformed) {
        assert_eq!(
            stats.downloads.get(&(t.action_id.clone(), t.index)),
            Some(&1),
            "{t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_401_5xx_and_slow() {
    let (sim, addr) = start_sim(scenario(101)).await;
    let f = sim.faults();
    f.fail_next("token", 401, 1);
    f.fail_next("token", 503, 2);
    f.delay("token", Duration::from_millis(300));
    let m = run_to_the_end(&sim, addr, "").await;
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "token"), ("code", "503")]
        ) >= 1.0
    );
    assert_eq!(sum(&m, "mde_exporter_token_success", &[]), 1.0);
    assert_exactly_once(&sim, &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_5xx_and_timeouts() {
    let (sim, addr) = start_sim(scenario(102)).await;
    let f = sim.faults();
    f.fail_next("list_machine_actions", 500, 2);
    f.fail_next("get_result_download_link", 503, 3);
    f.fail_next("download", 500, 2);
    let m = run_to_the_end(&sim, addr, "").await;
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "get_result_download_link"), ("code", "503")]
        ) >= 1.0
    );
    assert_exactly_once(&sim, &m);

    // A request slower than the timeout is a transport error, retried later.
    let (sim, addr) = start_sim(scenario(103)).await;
    sim.faults()
        .delay("get_result_download_link", Duration::from_secs(2));
    let s2 = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        s2.faults()
            .delay("get_result_download_link", Duration::ZERO);
    });
    let m = run_to_the_end(&sim, addr, "request_timeout: 500ms\n").await;
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "get_result_download_link"), ("code", "error")]
        ) >= 1.0
    );
    assert_exactly_once(&sim, &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_downloads_heal_on_retry() {
    let (sim, addr) = start_sim(scenario(106)).await;
    let f = sim.faults();
    f.blob_fault(BlobFault::NotFound, 1);
    f.blob_fault(BlobFault::Truncated, 2);
    f.blob_fault(BlobFault::Garbage, 1);
    let m = run_to_the_end(&sim, addr, "").await;
    assert_exactly_once(&sim, &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_are_minted_again() {
    let (sim, addr) = start_sim(scenario(107)).await;
    sim.faults().expire_links(true);
    let s2 = sim.clone();
    tokio::spawn(async move {
        // Links are minted expired until a download has been refused for it; later ones are
        // good.
        while s2.stats().expired_downloads == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s2.faults().expire_links(false);
    });
    let m = run_to_the_end(&sim, addr, "").await;
    let truth = sim.truth();
    let runs: u64 = truth.runs_by_script().values().sum();
    let counted = sum(&m, "mde_liveresponse_script_runs_total", &[]) as u64;
    let expired = sum(
        &m,
        "mde_liveresponse_result_fetch_failures_total",
        &[("reason", "expired_link")],
    ) as u64;
    // Every transcript is counted, or (if both its tries came in the expired moment) given
    // up as expired_link; never both, never twice.
    assert_eq!(counted + expired, runs);
    assert!(sim.stats().expired_downloads >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_transcripts_and_gzip_bombs_stay_bounded() {
    let (sim, addr) = start_sim(scenario(108)).await;
    // Every download is 8 MiB: transcripts beyond the 64 KiB cap are cut and counted as
    // too_large; GetFile results are only sized, never read, whatever they inflate to.
    sim.faults()
        .blob_fault(BlobFault::Huge(8 * 1024 * 1024), 10_000);
    let m = run_to_the_end(&sim, addr, "max_transcript_bytes: 65536\n").await;
    let truth = sim.truth();
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_result_fetch_failures_total",
            &[("reason", "too_large")]
        ),
        truth.transcripts.len() as f64
    );
    assert_eq!(sum(&m, "mde_liveresponse_script_runs_total", &[]), 0.0);
    // Streamed and cut at the cap: far fewer bytes were read than were offered.
    assert_eq!(sum(&m, "mde_liveresponse_transcript_bytes_total", &[]), 0.0);

    let (sim, addr) = start_sim(scenario(109)).await;
    sim.faults().blob_fault(BlobFault::GzipBomb, 10_000);
    let m = run_to_the_end(&sim, addr, "").await;
    assert_eq!(
        sum(&m, "mde_liveresponse_files_total", &[]),
        sim.truth().files.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_api_answers_fail_a_poll_not_the_exporter() {
    let (sim, addr) = start_sim(scenario(110)).await;
    sim.faults().malformed_api("list_machine_actions", 2);
    sim.faults().malformed_api("get_result_download_link", 1);
    let m = run_to_the_end(&sim, addr, "").await;
    let truth = sim.truth();
    // The link that came back broken is one failed try; the retry counts it.
    let mut want = truth.runs_by_script();
    want.retain(|_, v| *v > 0);
    assert_eq!(
        by_label(&m, "mde_liveresponse_script_runs_total", "script", &[]),
        want
    );
}
