//! Script output from a compromised machine, end to end (#32): one tenant's hostile
//! transcripts under a JSON rule are read off the async workers within their time bound and
//! cost that tenant only those transcripts' sets; the other tenant is collected all the same.
//! (That another tenant's reading runs while a stuck one holds its slot is tested on the pool
//! itself, `script_metrics::pool`, where a reading can be held stuck at will.)

use crate::common::*;
use mde_sim::{BlobFault, SimConfig, Simulator};

/// The results of `tenant` accounted for: transcripts counted, results given up, files sized.
fn done(m: &Samples, tenant: &str) -> f64 {
    let t = [("tenant", tenant)];
    sum(m, "mde_liveresponse_script_runs_total", &t)
        + sum(m, "mde_liveresponse_result_fetch_failures_total", &t)
        + sum(m, "mde_liveresponse_files_total", &t)
}

fn wanted(sim: &Simulator) -> f64 {
    let truth = sim.truth();
    (truth.transcripts.len() + truth.files.len()) as f64
}

/// See: #32 item 1. Every transcript of tenant `hostile` prints 64 lines that open a JSON
/// object never closed, then 16 KiB of an array (the review's transcript, smaller; with 14 MB
/// it cost 23 CPU-seconds inline on the collector's worker, and the other tenant's polls
/// stopped for 26 s). Under a JSON rule with a
/// bound far below what reading one costs, each such reading is abandoned, counted in
/// `mde_script_metrics_parse_abandoned_total` and gives no set, and the poll goes on: every
/// result of both tenants is accounted for, both polls succeed. Before, nothing bounded the
/// reading in time and the family did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_transcript_is_abandoned_at_its_bound_and_the_polls_go_on() {
    let base = SimConfig {
        script_metrics: true,
        finish_within: std::time::Duration::from_secs(5),
        ..SimConfig::default()
    };
    let (hostile, hostile_addr) = start_sim(SimConfig {
        seed: 3201,
        ..base.clone()
    })
    .await;
    let (other, other_addr) = start_sim(SimConfig {
        seed: 3202,
        client_secret: "other-secret".into(),
        ..base
    })
    .await;
    let mut printed = "{\"a\":[\n".repeat(64);
    printed.push_str(&"1,".repeat(8 << 10));
    hostile
        .faults()
        .blob_fault(BlobFault::Printed(printed.into()), 100_000);
    let config = format!(
        "poll_interval: 200ms\nscript_metrics_parse_timeout: 1ms\n{}tenants:\n{}{}",
        mde_sim::script_metrics_rules(),
        tenant_yaml("hostile", &hostile, hostile_addr),
        tenant_yaml("other", &other, other_addr),
    );
    let exporter = start_exporter(parse_config(&config)).await;
    let a = exporter.addr;
    let (want_hostile, want_other) = (wanted(&hostile), wanted(&other));
    eventually(
        "both tenants' results accounted for, both polls healthy",
        || async move {
            let m = scrape(a).await;
            done(&m, "hostile") >= want_hostile
                && done(&m, "other") >= want_other
                && sum(&m, "mde_exporter_poll_success", &[]) == 2.0
        },
    )
    .await;
    let m = scrape(a).await;
    // Every reading of the hostile tenant under the JSON rule was abandoned, each transcript
    // counted once as retrieved all the same. (The text-format rule reads the same bytes as
    // noise, fast enough that some of its readings end within the bound.)
    let of = [("tenant", "hostile"), ("script", mde_sim::JSON_SCRIPT)];
    let runs = sum(&m, "mde_liveresponse_script_runs_total", &of);
    assert!(runs > 0.0);
    let abandoned = sum(&m, "mde_script_metrics_parse_abandoned_total", &of);
    assert_eq!(abandoned, runs, "each hostile reading");
    // No set from an abandoned reading.
    let sets = sum(
        &m,
        "mde_script_metrics_last_transcript_timestamp_seconds",
        &of,
    );
    assert_eq!(sets, 0.0);
    // (The other tenant's readings have the same 1ms bound, and whether a small one ends
    // within it depends on the machine's load: they are not asserted on.)
    exporter.shutdown().await.unwrap();
}
