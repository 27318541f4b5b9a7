//! Tenant files in a cluster (#34 with #31): two real members on one PostgreSQL database read
//! the same `tenant_files:`. A tenant a file adds is polled by exactly one member, a file
//! that breaks keeps its tenants on whichever member has them, and a tenant a file removes
//! leaves both members, with its series.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mde_sim::{SimConfig, Simulator};

use super::{no_series_of_lost_tenants, owners};
use crate::common::{Binary, scrape, start_sim, sum, tenant_files_dir};

const LEASE: Duration = Duration::from_secs(3);

/// A tenant file entry for the simulator at `addr` (the defaults give the rest).
fn entry(name: &str, (sim, addr): &(Simulator, SocketAddr)) -> String {
    let (tenant_id, client_id, secret) = sim.credentials();
    format!(
        "- name: {name}\n  tenant_id: {tenant_id}\n  client_id: {client_id}\n  client_secret: {secret}\n  api_url: http://{addr}\n  login_url: http://{addr}\n"
    )
}

/// Wait until the tenants served over `members` are `want` (each by one member: `owners`
/// asserts it at every step).
async fn until_served(members: &[(&str, SocketAddr)], want: &[&str], what: &str) {
    let started = Instant::now();
    loop {
        let o = owners(members).await;
        if o.keys().map(String::as_str).eq(want.iter().copied()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: after 30 s {o:?} are served, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What each member says of the tenant file `file`: (loaded successfully, its tenants).
async fn file_status(addr: SocketAddr, file: &str) -> (f64, f64) {
    let samples = scrape(addr).await;
    (
        sum(
            &samples,
            "mde_exporter_tenant_file_last_load_successful",
            &[("file", file)],
        ),
        sum(
            &samples,
            "mde_exporter_tenant_file_tenants",
            &[("file", file)],
        ),
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join("customers").join(file), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_34_tenant_files_in_a_cluster() {
    let Some(vars) = super::server() else { return };
    let url = super::database(&vars, "mde_cluster_tenant_files").await;
    let mut sims = Vec::new();
    for i in 0..3 {
        sims.push(
            start_sim(SimConfig {
                seed: 34 + i,
                actions: 6,
                machines: 4,
                ..SimConfig::default()
            })
            .await,
        );
    }
    let (dir, config) = tenant_files_dir(&format!(
        "poll_interval: 500ms\ncluster:\n  postgres_url: {url}\n  lease_duration: {}s\n  member: ${{MEMBER}}\ntenant_defaults:\n  lookback: 48h\ntenants: []\ntenant_files:\n  - files: [customers/*.yml]\n    refresh_interval: 1s\n",
        LEASE.as_secs()
    ));
    write(
        dir.path(),
        "eu.yml",
        &format!("{}{}", entry("t0", &sims[0]), entry("t1", &sims[1])),
    );
    let start = |member: &str| Binary::on_config(&config, &[], &[("MEMBER", member)]);
    let (a, b) = (start("a"), start("b"));
    let members = [("a", a.addr), ("b", b.addr)];
    until_served(&members, &["t0", "t1"], "at start").await;

    // A file added: its tenant is taken by one member, and both count three configured.
    write(dir.path(), "us.yml", &entry("t2", &sims[2]));
    until_served(&members, &["t0", "t1", "t2"], "a file added").await;
    for (_, m) in members {
        let samples = scrape(m).await;
        assert_eq!(
            sum(&samples, "mde_exporter_cluster_tenants_configured", &[]),
            3.0
        );
    }

    // A file broken: both members keep its last good tenants and say so; all three tenants
    // stay served, each by one member.
    write(dir.path(), "eu.yml", "- name: t0\n  lookback: nope\n");
    let eu = dir.path().join("customers/eu.yml").display().to_string();
    let started = Instant::now();
    for (name, m) in members {
        loop {
            if file_status(m, &eu).await == (0.0, 2.0) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} does not report the broken file"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    until_served(&members, &["t0", "t1", "t2"], "a file broken").await;

    // A file removed: its tenant leaves both members, with every series of it.
    std::fs::remove_file(dir.path().join("customers/us.yml")).unwrap();
    until_served(&members, &["t0", "t1"], "a file removed").await;
    for (name, m) in members {
        no_series_of_lost_tenants(name, m).await;
        let samples = scrape(m).await;
        assert!(
            !samples
                .keys()
                .any(|(_, labels)| labels.get("tenant").is_some_and(|t| t == "t2")),
            "{name} still shows series of t2"
        );
    }
}
