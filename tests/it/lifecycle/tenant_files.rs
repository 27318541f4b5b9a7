//! Tenant files while the binary runs (#34): a file added, changed, broken (its last good
//! tenants kept, the others untouched), fixed and removed, each seen on /metrics within the
//! refresh interval and without a SIGHUP; a tenant whose secret cannot be resolved beside
//! healthy ones; a name served from another file refused; a change that touches one tenant
//! leaves the others' collectors running; a tenant refused for a missing secret file starts
//! once the file is there.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

/// Whether `tenant` is polled, successfully, now.
fn served(m: &Samples, tenant: &str) -> bool {
    sum(m, "mde_exporter_poll_success", &[("tenant", tenant)]) == 1.0
}

/// Whether `tenant` is configured now: its quota windows are on /metrics (read at scrape
/// time from the configuration in force; a poll's own families keep a removed tenant's last
/// values, as a reload does today).
fn listed(m: &Samples, tenant: &str) -> bool {
    m.keys().any(|(n, labels)| {
        n == "mde_api_quota_limit" && labels.get("tenant").map(String::as_str) == Some(tenant)
    })
}

fn last_load(m: &Samples, file: &Path) -> Option<f64> {
    let file = file.to_str().unwrap();
    m.iter()
        .find(|((n, labels), _)| {
            n == "mde_exporter_tenant_file_last_load_successful"
                && labels.get("file").map(String::as_str) == Some(file)
        })
        .map(|(_, v)| *v)
}

// See: #34
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_files_are_applied_while_running() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 34,
        machines: 2,
        actions: 4,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let (tenant_id, client_id, secret) = sim.credentials();
    // One multi-tenant app: the defaults, and files of `{name, tenant_id}`.
    let (dir, config) = tenant_files_dir(&format!(
        "poll_interval: 200ms\ntenant_defaults:\n  client_id: {client_id}\n  client_secret: ${{SIM_SECRET}}\n  api_url: http://{addr}\n  login_url: http://{addr}\ntenant_files:\n  - files: [customers/*.yml, customers/*.json]\n    refresh_interval: 1s\n"
    ));
    let entry = |name: &str| format!("- name: {name}\n  tenant_id: {tenant_id}\n");
    let a_yml = dir.path().join("customers/a.yml");
    let b_json = dir.path().join("customers/b.json");
    let mut exporter = Binary::on_config(&config, &[], &[("SIM_SECRET", secret)]);
    let a = exporter.addr;

    // Added.
    std::fs::write(&a_yml, entry("alpha")).unwrap();
    eventually("alpha polled from a new file", || async {
        let m = scrape(a).await;
        served(&m, "alpha") && last_load(&m, &a_yml) == Some(1.0)
    })
    .await;

    // Changed: a second tenant, and a JSON file with a healthy tenant beside one whose secret
    // cannot be resolved.
    std::fs::write(&a_yml, format!("{}{}", entry("alpha"), entry("beta"))).unwrap();
    std::fs::write(
        &b_json,
        format!(
            r#"[{{"name": "gamma", "tenant_id": "{tenant_id}"}}, {{"name": "delta", "tenant_id": "{tenant_id}", "client_secret": "${{NOT_SET_34}}"}}]"#
        ),
    )
    .unwrap();
    eventually("beta and gamma polled, delta refused alone", || async {
        let m = scrape(a).await;
        served(&m, "alpha")
            && served(&m, "beta")
            && served(&m, "gamma")
            && !listed(&m, "delta")
            && sum(&m, "mde_exporter_tenants_refused", &[]) == 1.0
    })
    .await;

    // Broken: a.yml keeps alpha and beta; the other file and the reload family are untouched.
    std::fs::write(
        &a_yml,
        format!(
            "{}- name: epsilon\n  tenant_id: {tenant_id}\n  lookback: 0s\n",
            entry("alpha")
        ),
    )
    .unwrap();
    eventually("a.yml reported broken", || async {
        last_load(&scrape(a).await, &a_yml) == Some(0.0)
    })
    .await;
    let before = scrape(a).await;
    let polls_of = |m: &Samples, t: &str| {
        sum(
            m,
            "mde_exporter_poll_duration_seconds_count",
            &[("tenant", t)],
        )
    };
    eventually(
        "alpha and beta still polled from the last good a.yml",
        || {
            let (before, b_json) = (&before, &b_json);
            async move {
                let m = scrape(a).await;
                ["alpha", "beta", "gamma"]
                    .iter()
                    .all(|t| served(&m, t) && polls_of(&m, t) > polls_of(before, t))
                    && last_load(&m, b_json) == Some(1.0)
                    && sum(&m, "mde_exporter_config_last_reload_successful", &[]) == 1.0
            }
        },
    )
    .await;
    let (_, _, page) = get(a, "/", None).await;
    assert!(page.contains("Tenant files"), "{page}");
    assert!(
        page.contains("[1].lookback: must be greater than 0"),
        "{page}"
    );

    // A name served from a.yml brought by another file: that file is refused.
    let c_yml = dir.path().join("customers/c.yml");
    std::fs::write(&c_yml, entry("alpha")).unwrap();
    eventually("c.yml refused for its duplicate name", || async {
        last_load(&scrape(a).await, &c_yml) == Some(0.0)
    })
    .await;
    std::fs::remove_file(&c_yml).unwrap();

    // Fixed, without beta: beta's series go.
    std::fs::write(&a_yml, format!("{}{}", entry("alpha"), entry("epsilon"))).unwrap();
    eventually("a.yml fixed: epsilon in, beta out", || async {
        let m = scrape(a).await;
        last_load(&m, &a_yml) == Some(1.0)
            && served(&m, "epsilon")
            && !listed(&m, "beta")
            && last_load(&m, &c_yml).is_none()
    })
    .await;

    // Removed.
    std::fs::remove_file(&a_yml).unwrap();
    eventually("a.yml removed: its tenants and its series go", || async {
        let m = scrape(a).await;
        !listed(&m, "alpha")
            && !listed(&m, "epsilon")
            && served(&m, "gamma")
            && last_load(&m, &a_yml).is_none()
    })
    .await;

    assert_eq!(
        tokio::task::block_in_place(|| exporter.terminate()),
        Some(0)
    );
    let logs = exporter.logs();
    let broken = logs
        .iter()
        .find(|l| l.contains("tenant file not used"))
        .expect("a log line for the broken file");
    let v: serde_json::Value = serde_json::from_str(broken).unwrap();
    assert_eq!(v["file"], a_yml.to_str().unwrap());
    assert_eq!(v["line"], 3);
    assert_eq!(v["key"], "[1].lookback");
    assert!(
        logs.iter()
            .any(|l| l.contains("tenant refused") && l.contains("delta"))
    );
    assert!(!logs.iter().any(|l| l.contains("SIGHUP")));
}

/// The calls `sim` received to `endpoint` so far.
fn calls(sim: &mde_sim::Simulator, endpoint: &str) -> u64 {
    sim.stats().requests.get(endpoint).copied().unwrap_or(0)
}

// See: #34. A file change is applied without touching the other tenants' state: with a and b
// from one file, only b's entry changes (its API moves to another simulator). a's collector
// goes on: it polls its simulator again and signs in no more (a collector started again asks
// for a token: its token cache is its own); b's change applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_restarts_only_the_tenants_it_touches() {
    let cfg = || SimConfig {
        seed: 34,
        machines: 2,
        actions: 4,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let (sim_a, addr_a) = start_sim(cfg()).await;
    let (sim_b, addr_b) = start_sim(cfg()).await;
    let (sim_c, addr_c) = start_sim(cfg()).await;
    let (tenant_id, client_id, secret) = sim_a.credentials();
    let (dir, config) = tenant_files_dir(&format!(
        "poll_interval: 200ms\ntenant_defaults:\n  client_id: {client_id}\n  client_secret: ${{SIM_SECRET}}\ntenant_files:\n  - files: [customers/*.yml]\n    refresh_interval: 1s\n"
    ));
    let entry = |name: &str, addr: std::net::SocketAddr| {
        format!(
            "- name: {name}\n  tenant_id: {tenant_id}\n  api_url: http://{addr}\n  login_url: http://{addr}\n"
        )
    };
    let file = dir.path().join("customers/group.yml");
    std::fs::write(&file, entry("a", addr_a) + &entry("b", addr_b)).unwrap();
    let mut exporter = Binary::on_config(&config, &[], &[("SIM_SECRET", secret)]);
    let addr = exporter.addr;
    eventually("a and b polled", || async {
        let m = scrape(addr).await;
        served(&m, "a")
            && served(&m, "b")
            && calls(&sim_a, "list_machine_actions") > 0
            && calls(&sim_b, "list_machine_actions") > 0
    })
    .await;
    let tokens_a = calls(&sim_a, "token");
    assert_eq!(tokens_a, 1, "a signs in once");

    // Only b changes.
    std::fs::write(&file, entry("a", addr_a) + &entry("b", addr_c)).unwrap();
    eventually("b polls its new API", || async {
        served(&scrape(addr).await, "b") && calls(&sim_c, "list_machine_actions") > 0
    })
    .await;
    let lists_a = calls(&sim_a, "list_machine_actions");
    eventually("a polled again after the change", || async {
        calls(&sim_a, "list_machine_actions") >= lists_a + 3
    })
    .await;
    assert_eq!(
        calls(&sim_a, "token"),
        tokens_a,
        "a's collector was started again (it signed in again)"
    );
    assert_eq!(calls(&sim_c, "token"), 1);

    assert_eq!(
        tokio::task::block_in_place(|| exporter.terminate()),
        Some(0)
    );
    let reloaded: Vec<serde_json::Value> = exporter
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "configuration reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    let r = &reloaded[0];
    assert_eq!(
        (&r["kept"], &r["started"], &r["stopped"], &r["running"]),
        (&1.into(), &1.into(), &1.into(), &2.into()),
        "{r}"
    );
}

// See: #34. A tenant refused because its secret file is missing starts once the file is
// there, without a change to the file that names it and without a SIGHUP: an entry of a
// tenant file at its next read, an entry of config.yml (its text unchanged) as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tenant_starts_once_its_secret_file_is_there() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 34,
        machines: 2,
        actions: 2,
        ..SimConfig::default()
    })
    .await;
    let (tenant_id, client_id, secret) = sim.credentials();
    let (dir, config) = tenant_files_dir(&format!(
        "poll_interval: 200ms\ntenant_defaults:\n  client_id: {client_id}\n  api_url: http://{addr}\n  login_url: http://{addr}\ntenants:\n  - name: own\n    tenant_id: {tenant_id}\n    client_secret_file: own.secret\ntenant_files:\n  - files: [customers/*.yml]\n    refresh_interval: 1s\n"
    ));
    std::fs::write(
        dir.path().join("customers/a.yml"),
        format!("- name: filed\n  tenant_id: {tenant_id}\n  client_secret_file: filed.secret\n"),
    )
    .unwrap();
    let mut exporter = Binary::on_config(&config, &[], &[]);
    let a = exporter.addr;
    eventually("both refused", || async {
        sum(&scrape(a).await, "mde_exporter_tenants_refused", &[]) == 2.0
    })
    .await;

    // Relative to the tenant file that names it.
    std::fs::write(
        dir.path().join("customers/filed.secret"),
        format!("{secret}\n"),
    )
    .unwrap();
    eventually("the tenant file's entry polled", || async {
        let m = scrape(a).await;
        served(&m, "filed") && sum(&m, "mde_exporter_tenants_refused", &[]) == 1.0
    })
    .await;

    std::fs::write(dir.path().join("own.secret"), format!("{secret}\n")).unwrap();
    eventually("config.yml's entry polled", || async {
        let m = scrape(a).await;
        served(&m, "own")
            && served(&m, "filed")
            && sum(&m, "mde_exporter_tenants_refused", &[]) == 0.0
    })
    .await;
    assert_eq!(
        tokio::task::block_in_place(|| exporter.terminate()),
        Some(0)
    );
    let logs = exporter.logs();
    assert!(logs.iter().any(|l| l.contains(
        "a tenant refused in the configuration file can be signed in now: configuration reloaded"
    )));
}
