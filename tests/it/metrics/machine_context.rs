//! Machine context for routing alerts: `mde_machine_info` for exactly the machines with
//! per-machine series, with the device group, OS and health the simulator's `/api/machines`
//! serves; `mde_machine_tag` only for allow-listed tags; the calls under their own quota
//! endpoint (`list_machines`). See: #10

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_info_and_allowed_tags_for_watched_machines() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 111,
        machines: 8,
        actions: 24,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let base = config_yaml(&sim, addr, "sim-client-secret", "", "");
    // The same tenant twice: one with an allow-list, one without.
    let text = format!(
        "{base}    machine_tags: ['pci', 'tier.*']\n{}",
        base.split_once("tenants:\n")
            .unwrap()
            .1
            .replace("name: sim", "name: plain")
    );
    let exporter = start_exporter(parse_config(&text)).await;
    let at = exporter.addr;
    all_final(&sim).await;
    let truth: BTreeMap<String, mde_sim::TruthMachine> = sim
        .machines()
        .into_iter()
        .map(|m| (m.computer_dns_name.clone(), m))
        .collect();

    eventually(
        "machine info for every machine with series",
        || async move {
            let m = scrape(at).await;
            let watched: BTreeSet<String> = by_label(
                &m,
                "mde_liveresponse_script_last_run_timestamp_seconds",
                "machine",
                &[("tenant", "sim")],
            )
            .into_keys()
            .collect();
            let info: BTreeSet<String> =
                by_label(&m, "mde_machine_info", "machine", &[("tenant", "sim")])
                    .into_keys()
                    .collect();
            // The tenants' first refreshes are spread over the poll interval (#11): wait for
            // the second one's too.
            let plain = by_label(&m, "mde_machine_info", "machine", &[("tenant", "plain")]);
            !watched.is_empty() && watched == info && !plain.is_empty()
        },
    )
    .await;
    let m = scrape(at).await;
    let info: Vec<&BTreeMap<String, String>> = m
        .keys()
        .filter(|(n, _)| n == "mde_machine_info")
        .map(|(_, labels)| labels)
        .collect();
    // One series per (tenant, machine), so a group_left join never meets two.
    let keys: BTreeSet<(String, String)> = info
        .iter()
        .map(|l| (l["tenant"].clone(), l["machine"].clone()))
        .collect();
    assert_eq!(keys.len(), info.len());
    assert!(keys.iter().any(|(t, _)| t == "plain"));
    for l in &info {
        let t = &truth[&l["machine"]];
        assert_eq!(l["machine_id"], t.id);
        assert_eq!(l["rbac_group"], t.rbac_group_name);
        assert_eq!(l["os_platform"], t.os_platform);
        assert_eq!(l["health_status"], t.health_status);
    }
    // Tags: only allowed ones, only for the tenant that allows them.
    let tags: BTreeSet<(String, String, String)> = m
        .keys()
        .filter(|(n, _)| n == "mde_machine_tag")
        .map(|(_, l)| (l["tenant"].clone(), l["machine"].clone(), l["tag"].clone()))
        .collect();
    let want: BTreeSet<(String, String, String)> = keys
        .iter()
        .filter(|(tenant, _)| tenant == "sim")
        .flat_map(|(_, machine)| {
            truth[machine]
                .machine_tags
                .iter()
                .filter(|t| *t == "pci" || t.starts_with("tier"))
                .map(|t| ("sim".to_string(), machine.clone(), t.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!want.is_empty(), "the scenario has allowed tags");
    assert_eq!(tags, want);
    // Its own quota endpoint, in every quota metric.
    assert!(sum(&m, "mde_api_quota_limit", &[("endpoint", "list_machines")]) > 0.0);
    let calls = sim
        .stats()
        .requests
        .get("list_machines")
        .copied()
        .unwrap_or(0);
    assert!(calls > 0);
    exporter.shutdown().await.unwrap();
}

/// See: #24 item 4. 26 machines, each with thousands of tags that the allow-list lets through
/// (`.*`), some of 5,000 characters: before, every one was a series (52,104 series, a 4.4 MB
/// body, 0 evictions). Now a machine shows at most `max_tags_per_machine` tags of at most
/// `max_tag_length` characters, the tags take only what `max_series` leaves of the
/// per-machine script series, and what was left out is counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_tags_are_bounded_and_what_is_dropped_is_counted() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 2424,
        machines: 26,
        actions: 150,
        finish_within: Duration::from_millis(200),
        // Room for every result at once: the test is about tags, not the quota.
        per_minute: 1000,
        per_hour: 10_000,
        ..SimConfig::default()
    })
    .await;
    let mut flood: Vec<String> = (0..2000).map(|i| format!("bulk-{i:04}")).collect();
    flood.extend((0..5).map(|i| format!("long-{i}-{}", "x".repeat(5000))));
    sim.faults().machine_tags(flood);
    const MAX_SERIES: usize = 300;
    let text = config_yaml(
        &sim,
        addr,
        "sim-client-secret",
        "    machine_tags: ['.*']\n    machine_info_interval: 1s\n",
        &format!("max_series: {MAX_SERIES}\n"),
    );
    let exporter = start_exporter(parse_config(&text)).await;
    let at = exporter.addr;
    all_final(&sim).await;
    settled(&sim, at).await;
    let machines = sim.machines().len();
    assert_eq!(machines, 26);
    eventually("machine context of every watched machine", || async move {
        let m = scrape(at).await;
        let watched = by_label(
            &m,
            "mde_liveresponse_script_last_run_timestamp_seconds",
            "machine",
            &[],
        );
        let info = by_label(&m, "mde_machine_info", "machine", &[]);
        watched.len() + 2 >= machines && info.len() == watched.len()
    })
    .await;
    let (_, _, body) = get(at, "/metrics", None).await;
    let m = parse_samples(&body);
    let per_machine = by_label(&m, "mde_machine_tag", "machine", &[]);
    assert!(!per_machine.is_empty());
    assert!(per_machine.values().all(|n| *n <= 20), "{per_machine:?}");
    // Truncated tags would collide into one label value; long tags are dropped whole.
    assert!(!body.contains("long-"), "a long tag was exposed");
    assert!(body.len() < 512 * 1024, "{} bytes", body.len());
    // The tags take what max_series leaves of the script series: each machine's share is
    // checked when it is read again (every machine_info_interval).
    eventually("within max_series, every reason counted", || async move {
        let m = scrape(at).await;
        let scripts = m
            .keys()
            .filter(|(n, _)| n == "mde_liveresponse_script_exit_code")
            .count();
        let tags = m.keys().filter(|(n, _)| n == "mde_machine_tag").count();
        let dropped = |why: &str| sum(&m, "mde_machine_tags_dropped_total", &[("reason", why)]);
        tags > 0
            && scripts + tags <= MAX_SERIES
            && dropped("too_long") > 0.0
            && dropped("per_machine") > 0.0
            && dropped("max_series") > 0.0
    })
    .await;
    exporter.shutdown().await.unwrap();
}
