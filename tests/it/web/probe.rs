//! `GET /probe?target=<tenant>` (#22 item 3): one tenant's cached series, never an API call,
//! 404 naming an unknown target.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use mde_sim::{SimConfig, Simulator};

fn scenario(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 6,
        actions: 12,
        finish_within: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

fn requests(sim: &Simulator) -> u64 {
    sim.stats().requests.values().sum()
}

/// The series (name and labels) of `samples` whose `tenant` is `t`.
fn series_of(samples: &Samples, t: &str) -> BTreeSet<String> {
    samples
        .keys()
        .filter(|(_, l)| l.get("tenant").map(String::as_str) == Some(t))
        .map(|(n, l)| format!("{n}{l:?}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_one_tenants_cached_series_and_404_for_an_unknown_target() {
    // See: #22. Once both tenants are counted, a reload sets the poll interval to an hour:
    // after the reload's first poll nothing may call the simulators, so any request the
    // probes caused would show in their counts.
    let (sim_a, addr_a) = start_sim(scenario(221)).await;
    let (sim_b, addr_b) = start_sim(SimConfig {
        client_secret: "beta-secret".into(),
        ..scenario(222)
    })
    .await;
    all_final(&sim_a).await;
    all_final(&sim_b).await;
    let tenants = format!(
        "tenants:\n{}{}",
        tenant_yaml("alpha", &sim_a, addr_a),
        tenant_yaml("beta", &sim_b, addr_b)
    );
    let slow = parse_config(&format!("poll_interval: 1h\n{tenants}"));
    let loader: mde_liveresponse_exporter::app::Loader =
        std::sync::Arc::new(move || Ok(slow.clone()));
    let fast = parse_config(&format!("poll_interval: 200ms\n{tenants}"));
    let exporter = start_exporter_with_loader(fast, loader).await;
    let a = exporter.addr;
    let (want_a, want_b) = (
        sim_a.truth().runs_by_script(),
        sim_b.truth().runs_by_script(),
    );
    eventually("both tenants' first poll counted", || {
        let (want_a, want_b) = (want_a.clone(), want_b.clone());
        async move {
            let m = scrape(a).await;
            let runs = |t: &str| {
                by_label(
                    &m,
                    "mde_liveresponse_script_runs_total",
                    "script",
                    &[("tenant", t)],
                )
            };
            runs("alpha") == want_a
                && runs("beta") == want_b
                && sum(&m, "mde_exporter_poll_success", &[]) == 2.0
        }
    })
    .await;
    exporter.reload().await.unwrap();
    let mut calls = (requests(&sim_a), requests(&sim_b));
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (requests(&sim_a), requests(&sim_b));
        if now == calls {
            break;
        }
        calls = now;
    }
    let all = scrape(a).await;

    for (t, want) in [("alpha", &want_a), ("beta", &want_b)] {
        let (status, ct, body) = get(a, &format!("/probe?target={t}"), None).await;
        assert_eq!(status, 200, "{body}");
        assert!(ct.starts_with("text/plain"), "{ct}");
        let probe = parse_samples(&body);
        assert!(!probe.is_empty());
        // Only that tenant's series: every sample carries its tenant label (but the build
        // info, by which the dashboards find the exporter's jobs)...
        for (name, labels) in probe.keys() {
            if name != "mde_exporter_build_info" {
                let tenant = labels.get("tenant").map(String::as_str);
                assert_eq!(tenant, Some(t), "{name}{labels:?}");
            }
        }
        assert_eq!(sum(&probe, "mde_exporter_build_info", &[]), 1.0);
        assert_eq!(sum(&probe, "process_open_fds", &[]), 0.0);
        // ...and all of them, as /metrics has them.
        assert_eq!(series_of(&probe, t), series_of(&all, t));
        assert_eq!(
            &by_label(&probe, "mde_liveresponse_script_runs_total", "script", &[]),
            want
        );
        // The families keep their metadata, so the exposition parses with its types.
        assert!(
            body.contains("# TYPE mde_exporter_poll_success gauge"),
            "{body}"
        );
    }

    let (status, _, body) = get(a, "/probe?target=gamma", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "unknown target \"gamma\": no tenant of that name is served here (a tenant's `name:` in the configuration, on this shard)\n"
    );
    let (status, _, body) = get(a, "/probe", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "missing target parameter: /probe?target=<tenant name>\n"
    );

    // Never an API call: the simulators saw nothing since the first poll.
    for _ in 0..10 {
        get(a, "/probe?target=alpha", None).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((requests(&sim_a), requests(&sim_b)), calls);
    exporter.shutdown().await.unwrap();
}
