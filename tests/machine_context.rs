//! Machine context for routing alerts: `mde_machine_info` for exactly the machines with
//! per-machine series, with the device group, OS and health the simulator's `/api/machines`
//! serves; `mde_machine_tag` only for allow-listed tags; the calls under their own quota
//! endpoint (`list_machines`). See: #10
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
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
