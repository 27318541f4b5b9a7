//! A forward jump of the exporter's wall clock (#24 item 7), under libfaketime (Debian
//! `faketime`): the real binary against the simulator, the simulator on real time, the
//! exporter's clock moved 8 days ahead while it runs and then back. Nothing in flight is
//! abandoned, no per-machine series expires, the in-flight gauge stays right and
//! `mde_exporter_clock_skew_seconds` shows the jump.
//!
//! How libfaketime is used: `LD_PRELOAD` of `libfaketime.so.1` with `FAKETIME_TIMESTAMP_FILE`
//! (the offset, re-read on every call with `FAKETIME_NO_CACHE=1`, so the test moves the clock
//! of the running process) and `FAKETIME_DONT_FAKE_MONOTONIC=1`: a real wall-clock jump does
//! not move `CLOCK_MONOTONIC`, which tokio's timers and `Instant` read; without it the monotonic
//! clock jumps with the offset too, and the exporter polled no more after the jump. On a machine
//! without libfaketime the test says so and passes without running.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{
    Binary, Samples, config_dir, eventually, polls, results_done, scrape, start_sim, sum,
};
use mde_sim::SimConfig;

/// libfaketime's preload library: `LIBFAKETIME`, else where Debian's `faketime` puts it.
fn libfaketime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIBFAKETIME") {
        return Some(PathBuf::from(p));
    }
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    let mut candidates: Vec<PathBuf> = dirs
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .collect();
    candidates.push(PathBuf::from("/usr/lib/faketime/libfaketime.so.1"));
    candidates.into_iter().find(|p| p.is_file())
}

fn series(m: &Samples) -> usize {
    m.keys()
        .filter(|(n, _)| n == "mde_liveresponse_script_exit_code")
        .count()
}

/// Wait for `n` more polls.
async fn more_polls(a: std::net::SocketAddr, n: f64) {
    let p = polls(&scrape(a).await);
    eventually(
        "more polls",
        || async move { polls(&scrape(a).await) >= p + n },
    )
    .await;
}

// See: #24 item 7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jumped_eight_days_ahead_abandons_and_expires_nothing() {
    let Some(lib) = libfaketime() else {
        eprintln!(
            "SKIPPED clock_jump: libfaketime not found (apt-get install faketime, or set LIBFAKETIME to libfaketime.so.1)"
        );
        return;
    };
    let (sim, addr) = start_sim(SimConfig {
        seed: 2407,
        machines: 8,
        actions: 30,
        // Queued one to three days ago and still Pending for the whole test.
        queued_for_days: 6,
        finish_within: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let (dir, config, state) = config_dir(&sim, addr);
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let (lib_s, offset_s) = (lib.display().to_string(), offset.display().to_string());
    let bin = tokio::task::spawn_blocking(move || {
        let env = [
            ("LD_PRELOAD", lib_s.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", offset_s.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        Binary::on_state(&config, &state, &[], &env)
    })
    .await
    .unwrap();
    let a = bin.addr;
    let in_flight = sim.in_flight().len() as f64;
    assert!(in_flight >= 6.0, "{in_flight} actions in flight");
    let truth = sim.truth();
    let want = (truth.transcripts.len() + truth.files.len()) as f64;
    eventually(
        "every final result counted, the in-flight ones followed",
        || async move {
            let m = scrape(a).await;
            results_done(&m) >= want
                && sum(&m, "mde_liveresponse_actions_in_flight", &[]) == in_flight
        },
    )
    .await;
    let before = scrape(a).await;
    let n_series = series(&before);
    assert!(n_series > 0);

    // Eight days ahead, for a few polls.
    std::fs::write(&offset, "+8d\n").unwrap();
    more_polls(a, 5.0).await;
    let m = scrape(a).await;
    assert_eq!(
        sum(&m, "mde_liveresponse_in_flight_abandoned_total", &[]),
        0.0,
        "in-flight actions abandoned by a local clock 8 days ahead"
    );
    assert_eq!(
        sum(
            &m,
            "mde_exporter_series_evicted_total",
            &[("reason", "ttl")]
        ),
        0.0,
        "per-machine series expired by a local clock 8 days ahead"
    );
    assert_eq!(series(&m), n_series);
    assert_eq!(
        sum(&m, "mde_liveresponse_actions_in_flight", &[]),
        in_flight
    );
    let skew = sum(&m, "mde_exporter_clock_skew_seconds", &[("tenant", "sim")]);
    let eight_days = 8.0 * 86400.0;
    assert!(
        (skew - eight_days).abs() < 60.0,
        "skew {skew} s, want about {eight_days}"
    );

    // Back to the real time: the skew goes, and nothing was lost.
    std::fs::write(&offset, "+0\n").unwrap();
    more_polls(a, 3.0).await;
    let m = scrape(a).await;
    let skew = sum(&m, "mde_exporter_clock_skew_seconds", &[("tenant", "sim")]);
    assert!(skew.abs() < 60.0, "skew {skew} s after the clock came back");
    assert_eq!(
        sum(&m, "mde_liveresponse_in_flight_abandoned_total", &[]),
        0.0
    );
    assert_eq!(series(&m), n_series);
    assert_eq!(
        sum(&m, "mde_liveresponse_actions_in_flight", &[]),
        in_flight
    );
    drop(bin);
}
