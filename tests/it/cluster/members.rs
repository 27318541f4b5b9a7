//! Three real exporter processes, one PostgreSQL database and a simulator per tenant, with
//! results finishing during the run: members killed (-9), stopped with SIGTERM, frozen with
//! SIGSTOP past their lease, added and removed, and the database restarted. Across all of it
//! every result link is asked for once (but for one a member may have been fetching when it
//! was killed or frozen), every transcript is logged once over all members' logs, every
//! result is counted, nothing is throttled, and no tenant is polled by two members. See: #31

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mde_sim::{SimConfig, Simulator};

use super::{no_series_of_lost_tenants, owners, served};
use crate::common::{Binary, get, scrape, start_sim, sum};

const TENANTS: usize = 6;
const LEASE: Duration = Duration::from_secs(3);

fn tenant_entry(name: &str, sim: &Simulator, addr: SocketAddr) -> String {
    let (tenant_id, client_id, secret) = sim.credentials();
    let q = sim.config();
    format!(
        "  - name: {name}\n    tenant_id: {tenant_id}\n    client_id: {client_id}\n    client_secret: {secret}\n    api_url: http://{addr}\n    login_url: http://{addr}\n    quota:\n      per_minute: {}\n      per_hour: {}\n",
        q.per_minute, q.per_hour
    )
}

/// Wait (checking ownership at every step) until every tenant is served by one of `members`.
async fn all_served(members: &[(&str, SocketAddr)], within: Duration) -> BTreeMap<String, String> {
    let started = Instant::now();
    loop {
        let o = owners(members).await;
        if o.len() == TENANTS {
            return o;
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} only {o:?} are served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start(config: &Path, member: &str) -> Binary {
    Binary::on_config(config, &[], &[("MEMBER", member)])
}

async fn spawn(config: &Path, member: &str) -> Binary {
    let (config, member) = (config.to_path_buf(), member.to_string());
    tokio::task::spawn_blocking(move || start(&config, &member))
        .await
        .unwrap()
}

fn signal(b: &Binary, sig: &str) {
    std::process::Command::new("kill")
        .args([sig, &b.child.id().to_string()])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_31_members_die_and_nothing_is_lost_or_counted_twice() {
    let Some(vars) = super::server() else { return };
    let url = super::database(&vars, "mde_cluster_members").await;
    let mut sims = Vec::new();
    let mut text = format!(
        "poll_interval: 500ms\ncluster:\n  postgres_url: {url}\n  lease_duration: {}s\n  member: ${{MEMBER}}\ntenants:\n",
        LEASE.as_secs()
    );
    for i in 0..TENANTS {
        let (sim, addr) = start_sim(SimConfig {
            seed: 31 + i as u64,
            actions: 40,
            machines: 8,
            // Results keep finishing through the run (which lasts longer: every action is
            // final by the time the results are checked).
            finish_within: Duration::from_secs(30),
            history: Duration::from_secs(600),
            ..SimConfig::default()
        })
        .await;
        text.push_str(&tenant_entry(&format!("tenant-{i}"), &sim, addr));
        sims.push(sim);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, text).unwrap();

    let mut logs: Vec<String> = Vec::new();
    let mut a = spawn(&config, "a").await;
    let mut b = spawn(&config, "b").await;
    let c = spawn(&config, "c").await;
    let first = all_served(
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        Duration::from_secs(30),
    )
    .await;
    // Rendezvous spreads six tenants over three members (all three have some, almost surely;
    // what matters is that each is served once).
    eprintln!("ownership at start: {first:?}");
    // Each member says what it owns; together they own every configured tenant, and the
    // status page shows the ownership table.
    let mut owned = 0.0;
    for m in [&a, &b, &c] {
        let samples = scrape(m.addr).await;
        owned += sum(&samples, "mde_exporter_cluster_tenants_owned", &[]);
        assert_eq!(sum(&samples, "mde_exporter_cluster_store_up", &[]), 1.0);
        assert_eq!(
            sum(&samples, "mde_exporter_cluster_tenants_configured", &[]),
            TENANTS as f64
        );
    }
    assert_eq!(owned, TENANTS as f64);
    let (code, _, page) = get(c.addr, "/", None).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<h2>Cluster</h2>") && page.contains("tenant-0"),
        "{page}"
    );

    // kill -9: a's tenants go to b and c once its lease runs out.
    let a_had = served(a.addr).await.len();
    a.kill();
    let a_logs = a.logs();
    if let Ok(dir) = std::env::var("CLUSTER_TEST_LOGS") {
        std::fs::write(format!("{dir}/a.log"), a_logs.join("\n")).unwrap();
    }
    logs.extend(a_logs);
    let after_kill = all_served(&[("b", b.addr), ("c", c.addr)], Duration::from_secs(30)).await;
    assert!(after_kill.values().all(|m| m != "a"));

    // Scale 2 -> 3: d joins and takes its share.
    let d = spawn(&config, "d").await;
    let with_d = all_served(
        &[("b", b.addr), ("c", c.addr), ("d", d.addr)],
        Duration::from_secs(30),
    )
    .await;
    eprintln!("with d: {with_d:?}");
    // b and c lost what d took: nothing of those tenants stays on their /metrics.
    for (name, addr) in [("b", b.addr), ("c", c.addr), ("d", d.addr)] {
        no_series_of_lost_tenants(name, addr).await;
    }

    // SIGTERM: b gives its tenants up at once (3 -> 2).
    assert_eq!(b.terminate(), Some(0), "a member stops cleanly on SIGTERM");
    logs.extend(b.logs());
    all_served(&[("c", c.addr), ("d", d.addr)], Duration::from_secs(30)).await;

    // SIGSTOP past the lease: d takes c's tenants; c, woken, stops serving them.
    let c_had: BTreeSet<String> = served(c.addr).await;
    signal(&c, "-STOP");
    tokio::time::sleep(LEASE * 3).await;
    let mut during = BTreeSet::new();
    for _ in 0..150 {
        during = served(d.addr).await;
        if during.len() == TENANTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        during.len(),
        TENANTS,
        "d serves every tenant while c is frozen"
    );
    signal(&c, "-CONT");
    // Once c has run its lease round it serves none of what it lost until it takes it again
    // with a new epoch; at every check no tenant is served twice.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        owners(&[("c", c.addr), ("d", d.addr)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "c had {c_had:?}; now {:?}",
        owners(&[("c", c.addr), ("d", d.addr)]).await
    );
    // c, woken, let go of what d took while it was frozen: all of its series.
    no_series_of_lost_tenants("c", c.addr).await;

    // The database restarts under the members (pg_virtualenv's cluster "regress").
    let version = std::env::var("PGVERSION").unwrap_or_else(|_| "15".into());
    let restart = std::process::Command::new("pg_ctlcluster")
        .args([&version, "regress", "restart"])
        .status();
    let restarted = matches!(&restart, Ok(s) if s.success());
    match restart {
        Ok(s) if s.success() => tokio::time::sleep(LEASE).await,
        other => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "CI=true but the database could not be restarted: {other:?}"
            );
            eprintln!(
                "SKIPPED the database restart: pg_ctlcluster {version} regress restart: {other:?}"
            );
        }
    }
    all_served(&[("c", c.addr), ("d", d.addr)], Duration::from_secs(60)).await;

    // Every result counted: each simulator has had each of its results asked for.
    let mut members = vec![c, d];
    let started = Instant::now();
    let db = super::client(&url).await;
    loop {
        let results: i64 = sims
            .iter()
            .map(|sim| {
                let truth = sim.truth();
                (truth.transcripts.len() + truth.files.len()) as i64
            })
            .sum();
        // Counted (committed, so logged) by some member, as the database says.
        let counted: i64 = db
            .query_one("SELECT count(*) FROM mde_counted WHERE kind = 0", &[])
            .await
            .unwrap()
            .get(0);
        if counted >= results {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not every result was fetched"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for m in &mut members {
        assert_eq!(m.terminate(), Some(0));
        logs.extend(m.logs());
    }
    // Results given up (the simulator serves some unreadable transcripts on purpose) are
    // tried again by design, in one process too: their links are not checked here.
    let mut given_up = std::collections::BTreeSet::new();
    for line in &logs {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && v["msg"] == "giving up on a command result"
        {
            given_up.insert((
                v["tenant"].as_str().unwrap_or_default().to_string(),
                v["action_id"].as_str().unwrap_or_default().to_string(),
                v["index"].to_string().trim_matches('"').to_string(),
            ));
        }
    }
    // Every other link once (one fetch a member was killed, frozen or cut off in may be
    // repeated), and no 429.
    let mut repeated = 0;
    let mut throttled = 0;
    for (i, sim) in sims.iter().enumerate() {
        let stats = sim.stats();
        // The quota windows are saved every lease round and at each hand-over, and a
        // takeover from a member that died counts its unknown last round at its pace; a
        // member that sped up in its last round can still cause one 429, which the next
        // owner obeys.
        throttled += stats.throttled.values().sum::<u64>();
        let tenant = format!("tenant-{i}");
        for ((action, index), n) in &stats.link_requests {
            if given_up.contains(&(tenant.clone(), action.clone(), index.to_string())) {
                continue;
            }
            assert!(*n <= 2, "{tenant} {action} {index} asked for {n} times");
            repeated += n - 1;
        }
    }
    // At most one repeated link per tenant a member lost abruptly (killed, frozen, or every
    // tenant when the database restarted): the fetch it was in, whose commit is fenced. A
    // tenant handed over (scaling, SIGTERM) finishes its fetch first: none.
    let handovers: i64 = db
        .query_one(
            "SELECT COALESCE(SUM(epoch - 1), 0)::bigint FROM mde_lease",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("{repeated} links asked twice over {handovers} hand-overs; {throttled} throttled");
    let abrupt = a_had + c_had.len() + if restarted { TENANTS } else { 0 };
    assert!(
        repeated <= abrupt as u64,
        "{repeated} result links asked for twice, {abrupt} tenants lost abruptly"
    );
    // Known gap (docs/cluster.md, the #31 note): the takeover pads the dead member's unknown
    // last round with its pace, an estimate: a member killed or frozen in a burst can leave
    // its next owner one 429 (obeyed). At most one per member lost abruptly (the kill, the
    // freeze, the database restart); 0-3 were seen.
    let lost_abruptly = 2 + u64::from(restarted);
    assert!(
        throttled <= lost_abruptly,
        "{throttled} calls throttled, {lost_abruptly} members lost abruptly"
    );
    // Every transcript logged once, summed over every member's log.
    let mut events: BTreeMap<(String, String, String), u32> = BTreeMap::new();
    for line in &logs {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // Each result is either logged as retrieved or given up (the simulator serves some
        // unreadable transcripts on purpose), once.
        if v["msg"] == "transcript retrieved" || v["msg"] == "giving up on a command result" {
            let key = (
                v["tenant"].as_str().unwrap_or_default().to_string(),
                v["action_id"].as_str().unwrap_or_default().to_string(),
                // The flat JSON line may carry numbers as text: compare as written.
                v["index"].to_string().trim_matches('"').to_string(),
            );
            *events.entry(key).or_default() += 1;
        }
    }
    assert!(
        sims.iter().all(|s| s.in_flight().is_empty()),
        "every action is final by now"
    );
    let transcripts: usize = sims.iter().map(|s| s.truth().transcripts.len()).sum();
    for (i, sim) in sims.iter().enumerate() {
        let tenant = format!("tenant-{i}");
        let missing: Vec<_> = sim
            .truth()
            .transcripts
            .iter()
            .filter(|t| {
                !events.contains_key(&(tenant.clone(), t.action_id.clone(), t.index.to_string()))
            })
            .map(|t| (t.action_id.clone(), t.index))
            .collect();
        assert!(
            missing.is_empty(),
            "{tenant}: {} transcripts never logged: {missing:?}",
            missing.len()
        );
    }
    let files: usize = sims.iter().map(|s| s.truth().files.len()).sum();
    assert!(
        events.len() >= transcripts && events.len() <= transcripts + files,
        "{} results logged, {transcripts} transcripts and {files} files",
        events.len()
    );
    let twice: Vec<_> = events.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "logged more than once: {twice:?}");
}
