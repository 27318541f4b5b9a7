//! Sharding over real processes: N exporters with `--shard.index`/`--shard.count` over one
//! config serve every tenant exactly once, and going from 3 to 4 shards moves at most a
//! third of the tenants (rendezvous hashing). See: #11

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::common::{
    Binary, config_yaml, eventually, parse_config, scrape, start_exporter, start_exporter_with,
    start_sim, sum, tenant_yaml,
};
use mde_sim::SimConfig;

/// Tenant names of the shared config; all point at the one simulator.
fn names() -> Vec<String> {
    (0..24).map(|i| format!("customer-{i:02}")).collect()
}

fn config_text(addr: SocketAddr, sim: &mde_sim::Simulator) -> String {
    let mut text = String::from("poll_interval: 200ms\ntenants:\n");
    for name in names() {
        text.push_str(&tenant_yaml(&name, sim, addr));
    }
    text
}

/// The tenants an exporter reports a finished poll for.
async fn served(addr: SocketAddr) -> BTreeSet<String> {
    let samples = scrape(addr).await;
    samples
        .keys()
        .filter(|(name, _)| name == "mde_exporter_poll_success")
        .filter_map(|(_, labels)| labels.get("tenant").cloned())
        .collect()
}

/// Run `count` exporters over `config` and return each tenant's shard, as their /metrics say.
async fn assignment(config: &std::path::Path, count: u32) -> BTreeMap<String, u32> {
    let config = config.to_path_buf();
    let mut shards: Vec<Binary> = Vec::new();
    for index in 0..count {
        let (index, count) = (index.to_string(), count.to_string());
        let config = config.clone();
        // Spawning blocks until the process logs its address; keep the runtime free.
        let bin = tokio::task::spawn_blocking(move || {
            Binary::on_config(
                &config,
                &["--shard.index", &index, "--shard.count", &count],
                &[],
            )
        })
        .await
        .unwrap();
        shards.push(bin);
    }
    let addrs: Vec<SocketAddr> = shards.iter().map(|b| b.addr).collect();
    let all: BTreeSet<String> = names().into_iter().collect();
    eventually("every tenant polled by some shard", || {
        let addrs = addrs.clone();
        let all = all.clone();
        async move {
            let mut seen = BTreeSet::new();
            for a in addrs {
                seen.extend(served(a).await);
            }
            seen == all
        }
    })
    .await;
    // #24 item 8: each process says which shard it is.
    for (index, addr) in addrs.iter().enumerate() {
        let m = scrape(*addr).await;
        assert_eq!(
            sum(
                &m,
                "mde_exporter_shard_info",
                &[("index", &index.to_string()), ("count", &count.to_string())]
            ),
            1.0,
            "shard {index} of {count}"
        );
        assert_eq!(sum(&m, "mde_exporter_shard_info", &[]), 1.0);
    }
    let mut owner: BTreeMap<String, u32> = BTreeMap::new();
    for (index, addr) in addrs.iter().enumerate() {
        for tenant in served(*addr).await {
            let previous = owner.insert(tenant.clone(), index as u32);
            assert_eq!(
                previous, None,
                "{tenant} is served by shards {previous:?} and {index} of {count}"
            );
        }
    }
    drop(shards);
    owner
}

// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_every_tenant_exactly_once_and_3_to_4_moves_at_most_a_third() {
    let (sim, addr) = start_sim(SimConfig {
        actions: 10,
        // All tenants share the simulator's one client: give it room for all of them.
        per_minute: 1_000_000,
        per_hour: 10_000_000,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, config_text(addr, &sim)).unwrap();

    let three = assignment(&config, 3).await;
    let four = assignment(&config, 4).await;
    assert_eq!(three.len(), names().len());
    assert_eq!(four.len(), names().len());
    for n in 3..=4 {
        let map = if n == 3 { &three } else { &four };
        let used: BTreeSet<u32> = map.values().copied().collect();
        assert_eq!(
            used.len(),
            n,
            "every one of {n} shards serves someone: {map:?}"
        );
    }
    let moved: Vec<&String> = three
        .keys()
        .filter(|t| three.get(*t) != four.get(*t))
        .collect();
    assert!(
        moved.len() * 3 <= names().len(),
        "3 → 4 shards moved {} of {}: {moved:?}",
        moved.len(),
        names().len()
    );
    // Rendezvous: a moved tenant goes to the new shard, never between old ones.
    for t in &moved {
        assert_eq!(four.get(*t), Some(&3), "{t} moved between old shards");
    }
}

/// A tenant moved to another shard leaves its runs in the old shard's state file; when that
/// shard restarts without it, the moved tenant's per-machine series must not come back there
/// (the new shard serves them: two copies, one frozen). The tenant still configured gets its
/// series back as before.
// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_a_restart_restores_only_the_tenants_it_serves() {
    use mde_liveresponse_exporter::record::state::{LastRun, ResultKey, State};
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let mut state = State::open(Some(&path)).unwrap();
        for tenant in ["sim", "moved"] {
            let run = LastRun {
                end_time: chrono::Utc::now(),
                exit_code: 3,
                errors_present: false,
                action_id: format!("{tenant}-action"),
                excerpt: None,
                signature: None,
            };
            let key = ResultKey {
                tenant: tenant.into(),
                action_id: run.action_id.clone(),
                index: 0,
            };
            let series = (
                tenant.to_string(),
                "host-1".to_string(),
                "a.ps1".to_string(),
            );
            state.commit_result(key, Some((series, run))).unwrap();
        }
    }
    let global = format!("state_path: {}\n", path.display());
    let handle = start_exporter_with(&sim, addr, "", &global).await;
    let samples = scrape(handle.addr).await;
    let exit = |tenant: &str| {
        samples
            .iter()
            .find(|((name, labels), _)| {
                name == "mde_liveresponse_script_exit_code"
                    && labels.get("tenant").map(String::as_str) == Some(tenant)
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(
        exit("sim"),
        Some(3.0),
        "the served tenant's series come back"
    );
    assert_eq!(exit("moved"), None, "the moved tenant's series stay gone");
}

/// Two tenants on the one simulator: `sim` and `moved` (the same credentials).
fn two_tenants(sim: &mde_sim::Simulator, addr: SocketAddr, global: &str) -> String {
    let secret = sim.credentials().2.to_string();
    let text = config_yaml(sim, addr, &secret, "", global);
    let tenant = text.split_once("tenants:\n").unwrap().1;
    format!("{text}{}", tenant.replace("name: sim", "name: moved"))
}

/// The per-machine families (script gauges, not-run gauges, script output) with a series
/// of `tenant`.
fn per_machine_of(samples: &crate::common::Samples, tenant: &str) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|((name, labels), _)| {
            labels.get("tenant").map(String::as_str) == Some(tenant)
                && labels.contains_key("machine")
                && (name.starts_with("mde_liveresponse_script_") || name.starts_with("mde_script_"))
        })
        .map(|((name, _), _)| name.clone())
        .collect()
}

/// See: #24 item 10. A tenant a reload leaves out (moved to another shard's configuration)
/// kept its per-machine series here until `series_ttl`, frozen beside the copy the other
/// shard serves; now they go with the reload, without counting as evictions. The tenant
/// kept keeps its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_drops_the_series_of_a_tenant_it_no_longer_serves() {
    use mde_liveresponse_exporter::{app, config::Config};
    use std::sync::Arc;
    let (sim, addr) = start_sim(SimConfig {
        seed: 2410,
        machines: 6,
        actions: 30,
        not_run: 4,
        finish_within: std::time::Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yml");
    std::fs::write(&file, two_tenants(&sim, addr, "")).unwrap();
    let path = file.clone();
    let loader: app::Loader = Arc::new(move || Config::load(&path));
    let exporter =
        crate::common::start_exporter_with_loader(Config::load(&file).unwrap(), loader).await;
    let a = exporter.addr;
    eventually("both tenants' per-machine series", || async move {
        let m = scrape(a).await;
        ["sim", "moved"].iter().all(|t| {
            let families = per_machine_of(&m, t);
            families.contains("mde_liveresponse_script_exit_code")
                && families.contains("mde_liveresponse_script_not_run_current")
        })
    })
    .await;
    let secret = sim.credentials().2.to_string();
    std::fs::write(&file, config_yaml(&sim, addr, &secret, "", "")).unwrap();
    exporter.reload().await.unwrap();
    let m = scrape(a).await;
    assert_eq!(per_machine_of(&m, "moved"), BTreeSet::new());
    assert!(per_machine_of(&m, "sim").contains("mde_liveresponse_script_exit_code"));
    assert_eq!(
        sum(
            &m,
            "mde_exporter_series_evicted_total",
            &[("tenant", "moved")]
        ),
        0.0
    );
    exporter.shutdown().await.unwrap();
}

/// See: #24 item 10. The script output sets (`mde_script_*`) the state file holds for a
/// tenant this process no longer serves stay out of /metrics after a restart, as the script
/// series do (#11): before, every set came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_script_output_only_for_the_tenants_it_serves() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 2411,
        machines: 5,
        actions: 30,
        script_metrics: true,
        finish_within: std::time::Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let global = format!(
        "state_path: {}\nscript_metrics:\n  - script: check-bitlocker.ps1\n    format: prometheus\n",
        dir.path().join("state.redb").display()
    );
    let has_output = |m: &crate::common::Samples, t: &str| {
        per_machine_of(m, t)
            .iter()
            .any(|f| f.starts_with("mde_script_"))
    };
    {
        let exporter = start_exporter(parse_config(&two_tenants(&sim, addr, &global))).await;
        let a = exporter.addr;
        crate::common::all_final(&sim).await;
        eventually("script output of both tenants", || async move {
            let m = scrape(a).await;
            has_output(&m, "sim") && has_output(&m, "moved")
        })
        .await;
        exporter.shutdown().await.unwrap();
    }
    let exporter = start_exporter_with(&sim, addr, "", &global).await;
    let m = scrape(exporter.addr).await;
    assert!(has_output(&m, "sim"), "the served tenant's sets come back");
    assert!(
        !has_output(&m, "moved"),
        "{:?}",
        per_machine_of(&m, "moved")
    );
    exporter.shutdown().await.unwrap();
}
