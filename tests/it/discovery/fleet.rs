//! Discovery at fleet scale: what is in flight comes in one listing, and only what changed is
//! read by id. See: #20
//!
//! The collector of one tenant is driven poll by poll against the simulator's fleet scenario
//! (one script on many devices, most offline), and the simulator counts the list calls of
//! each poll. The simulator clock is moved forward between polls, so which actions change is
//! decided by the scenario, not by how fast the test runs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::common::{list_calls, start_sim, tenant_yaml};
use mde_liveresponse_exporter::api::Client;
use mde_liveresponse_exporter::config::Config;
use mde_liveresponse_exporter::metrics::Metrics;
use mde_liveresponse_exporter::poll::collector::TenantCollector;
use mde_liveresponse_exporter::quota::Quota;
use mde_liveresponse_exporter::record::state::State;
use mde_liveresponse_exporter::shared::{CollectorSettings, Shared};
use mde_sim::{SimConfig, Simulator};

const FLEET: usize = 400;

/// A fleet of 400 devices, every tenth coming online within the first 10 simulated minutes;
/// the rest stay Pending for the whole test. Quota as documented (100/min, 1500/h); pages of
/// 10,000, as the API serves `$top=10000`.
async fn fleet_sim() -> (Simulator, std::net::SocketAddr) {
    start_sim(SimConfig {
        seed: 2020,
        machines: 4,
        actions: 6,
        fleet: FLEET,
        page_size: 10_000,
        finish_within: Duration::from_secs(600),
        ..SimConfig::default()
    })
    .await
}

/// A collector of one tenant on the simulator, and what it shares with the status page.
fn collector(sim: &Simulator, addr: std::net::SocketAddr) -> (TenantCollector, Arc<Shared>) {
    collector_with(sim, addr, "poll_interval: 60s\n", "")
}

/// A collector of one tenant named `fleet` on the simulator, with `global` keys at the top of
/// its configuration and `tenant` keys (indented by four) in the tenant's entry.
pub(crate) fn collector_with(
    sim: &Simulator,
    addr: std::net::SocketAddr,
    global: &str,
    tenant: &str,
) -> (TenantCollector, Arc<Shared>) {
    let yaml = format!(
        "{global}tenants:\n{}{tenant}",
        tenant_yaml("fleet", sim, addr)
    );
    let config = Config::parse(&yaml, Path::new("fleet.yml"), &|_| None).unwrap();
    let tenant = config.tenants[0].clone();
    let metrics = Arc::new(Metrics::new());
    let quota = Arc::new(Mutex::new(Quota::new(&tenant.quota)));
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        state: Arc::new(Mutex::new(State::default())),
        status: Arc::new(RwLock::new(Default::default())),
        quotas: [("fleet".to_string(), quota.clone())].into(),
        clocks: Default::default(),
        settings: CollectorSettings::from_config(&config),
        trace_url: None,
        last_expiry: Mutex::new(None),
        ownership: None,
    });
    let http = mde_liveresponse_exporter::api::Http::new(
        mde_liveresponse_exporter::app::http_client(Duration::from_secs(30)).unwrap(),
        mde_liveresponse_exporter::api::http::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        &metrics,
    );
    let client = Client::new(&tenant, http, quota, metrics).unwrap();
    (TenantCollector::new(tenant, client, shared.clone()), shared)
}

/// One poll; the list calls it made.
async fn poll(c: &mut TenantCollector, sim: &Simulator) -> u64 {
    let before = list_calls(sim);
    c.poll_once().await.unwrap();
    list_calls(sim) - before
}

fn in_flight_ids(sim: &Simulator) -> HashSet<String> {
    sim.in_flight().into_iter().map(|(id, _, _)| id).collect()
}

/// The metrics text of the collector's registry.
fn scrape(shared: &Shared) -> String {
    shared.metrics.encode(false).unwrap()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Succeeded actions as counted (`mde_liveresponse_actions_total`, 0 when not there yet) and
/// as the simulator's ground truth has them.
fn succeeded(text: &str, sim: &Simulator) -> (f64, u64) {
    let counted = value(
        text,
        "mde_liveresponse_actions_total{tenant=\"fleet\",status=\"Succeeded\"}",
    )
    .unwrap_or(0.0);
    let truth = sim.truth().actions_by_status().get("Succeeded").copied();
    (counted, truth.unwrap_or(0))
}

/// See: #20 item 1. Before, every poll read each of the 400 actions in flight by id, 20 a
/// call: 1 + 20 = 21 list calls a poll whatever changed. Now a poll lists what is in flight
/// in the same listing as what is new (one status-filtered listing) and reads by id only the
/// followed actions missing from it (they became final): 1 listing + ceil(changed / 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_400_in_flight_a_poll_costs_one_listing_and_a_batch_per_20_changed() {
    let (sim, addr) = fleet_sim().await;
    let (mut c, shared) = collector(&sim, addr);
    assert!(in_flight_ids(&sim).len() >= FLEET);
    // The first start: the in-flight set, then the window.
    let first = poll(&mut c, &sim).await;
    assert_eq!(first, 2);
    // Nothing changed: one listing of what is new and what is in flight.
    assert_eq!(poll(&mut c, &sim).await, 1);
    let mut counted = 0;
    for _ in 0..4 {
        let before = in_flight_ids(&sim);
        sim.advance(Duration::from_secs(150));
        let changed = before.difference(&in_flight_ids(&sim)).count();
        let calls = poll(&mut c, &sim).await;
        assert!(
            (1..=1 + changed.div_ceil(20) as u64).contains(&calls),
            "{calls} list calls for {changed} changed"
        );
        counted += changed;
    }
    // About a tenth of the fleet came online and ran its script; every one is counted.
    assert!(counted >= FLEET / 20, "{counted}");
    let text = scrape(&shared);
    let (counted, truth) = succeeded(&text, &sim);
    assert_eq!(counted, truth as f64);
    let pending = value(
        &text,
        "mde_liveresponse_actions_in_flight{tenant=\"fleet\",status=\"Pending\"}",
    )
    .unwrap();
    assert_eq!(pending, in_flight_ids(&sim).len() as f64);
    assert_eq!(
        value(
            &text,
            "mde_liveresponse_discovery_in_flight_filter_supported{tenant=\"fleet\"}"
        ),
        Some(1.0)
    );
    let status = shared.status_snapshot();
    let d = &status["fleet"].discovery;
    assert_eq!(d.outcome, "complete");
    assert_eq!(d.in_flight_filter, Some(true));
}

/// See: #20 item 1. An API that refuses the status filter (400) gets today's batches: the
/// first start lists the whole horizon instead, later polls read every action in flight by
/// id; the refusal shows in a gauge and on the status page, and nothing is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_filter_falls_back_to_id_batches() {
    let (sim, addr) = fleet_sim().await;
    sim.faults().refuse_in_flight_filter(true);
    let (mut c, shared) = collector(&sim, addr);
    // The refused listing, the horizon whatever the status, the window.
    assert_eq!(poll(&mut c, &sim).await, 3);
    let followed = in_flight_ids(&sim).len();
    // The listing, and every action in flight it did not return (all but the few created in
    // its last minutes) by id, 20 a call: never the filter again.
    let calls = poll(&mut c, &sim).await;
    assert!(
        (1 + (followed / 2).div_ceil(20) as u64..=1 + followed.div_ceil(20) as u64)
            .contains(&calls),
        "{calls} list calls for {followed} in flight"
    );
    sim.advance(Duration::from_secs(600));
    poll(&mut c, &sim).await;
    let text = scrape(&shared);
    assert_eq!(
        value(
            &text,
            "mde_liveresponse_discovery_in_flight_filter_supported{tenant=\"fleet\"}"
        ),
        Some(0.0)
    );
    let (counted, truth) = succeeded(&text, &sim);
    assert_eq!(counted, truth as f64);
    assert_eq!(
        shared.status_snapshot()["fleet"].discovery.in_flight_filter,
        Some(false)
    );
}

/// See: #20. An API that accepts the status filter but not nested in an `or` of dates gets
/// what is new and what is in flight in two listings: the refusal is asked once, nothing is
/// missed, the status filter still counts as supported, and two listings a poll spread over
/// half the budget give a poll every 9.6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_combined_listing_falls_back_to_two_listings() {
    let (sim, addr) = fleet_sim().await;
    sim.faults().refuse_combined_filter(true);
    let (mut c, shared) = collector(&sim, addr);
    // The first start (in flight, then the window) never combines.
    assert_eq!(poll(&mut c, &sim).await, 2);
    // The refused combined listing, then the window and the in-flight set apart.
    assert_eq!(poll(&mut c, &sim).await, 3);
    // Not asked again.
    assert_eq!(poll(&mut c, &sim).await, 2);
    let text = scrape(&shared);
    assert_eq!(
        value(
            &text,
            "mde_liveresponse_discovery_interval_seconds{tenant=\"fleet\"}"
        ),
        Some(9.6)
    );
    for _ in 0..3 {
        sim.advance(Duration::from_secs(200));
        poll(&mut c, &sim).await;
    }
    let text = scrape(&shared);
    assert_eq!(
        value(
            &text,
            "mde_liveresponse_discovery_in_flight_filter_supported{tenant=\"fleet\"}"
        ),
        Some(1.0)
    );
    let (counted, truth) = succeeded(&text, &sim);
    assert!(truth > 0);
    assert_eq!(counted, truth as f64);
    assert_eq!(
        value(
            &text,
            "mde_liveresponse_actions_in_flight{tenant=\"fleet\",status=\"Pending\"}"
        ),
        Some(in_flight_ids(&sim).len() as f64)
    );
}

/// See: #20 item 5. The cadence spends half the list budget: one listing a poll (1,500 calls
/// an hour, half of it) would allow a poll every 4.8 s, so `min_interval` (5 s) holds; a quiet tenant (nothing in flight, nothing
/// new) backs off, doubling towards `poll_interval`. The interval and its reason show in a
/// gauge and on the status page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cadence_follows_the_list_budget_and_a_quiet_tenant_backs_off() {
    let (sim, addr) = fleet_sim().await;
    let (mut c, shared) = collector(&sim, addr);
    let interval = |shared: &Shared| {
        value(
            &scrape(shared),
            "mde_liveresponse_discovery_interval_seconds{tenant=\"fleet\"}",
        )
        .unwrap()
    };
    poll(&mut c, &sim).await;
    assert_eq!(poll(&mut c, &sim).await, 1);
    assert_eq!(interval(&shared), 5.0);
    let reason = shared.status_snapshot()["fleet"]
        .discovery
        .interval_reason
        .clone();
    assert!(
        reason.starts_with("fast (") && reason.contains(" actions in flight): min_interval: the list budget allows more; last poll: 1 list call"),
        "{reason}"
    );
    // The cadence and why, as a metric too (#33): one series, the current one.
    let cadence = |shared: &Shared| -> Vec<String> {
        scrape(shared)
            .lines()
            .filter(|l| l.starts_with("mde_liveresponse_discovery_cadence{"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        cadence(&shared),
        [
            "mde_liveresponse_discovery_cadence{tenant=\"fleet\",cadence=\"fast\",reason=\"in_flight\"} 1"
        ]
    );

    // Nothing in flight: a tenant whose actions are all final.
    let (quiet, addr) = start_sim(SimConfig {
        seed: 2021,
        machines: 3,
        actions: 5,
        finish_within: Duration::ZERO,
        page_size: 10_000,
        ..SimConfig::default()
    })
    .await;
    let (mut c, shared) = collector(&quiet, addr);
    // The first start found everything new; then one call a poll, quiet: 10 s, 20 s, 40 s,
    // then poll_interval.
    poll(&mut c, &quiet).await;
    let mut seen = Vec::new();
    let mut cadences = Vec::new();
    for _ in 0..4 {
        assert_eq!(poll(&mut c, &quiet).await, 1);
        seen.push(interval(&shared));
        cadences.push(cadence(&shared));
    }
    assert_eq!(seen, [10.0, 20.0, 40.0, 60.0]);
    let series = |c: &str| {
        vec![format!(
            "mde_liveresponse_discovery_cadence{{tenant=\"fleet\",cadence=\"{c}\",reason=\"quiet\"}} 1"
        )]
    };
    assert_eq!(cadences[0], series("backing_off"));
    assert_eq!(cadences[3], series("poll_interval"));
    let reason = shared.status_snapshot()["fleet"]
        .discovery
        .interval_reason
        .clone();
    assert_eq!(
        reason,
        "poll_interval (quiet for 4 polls: nothing in flight, nothing new): poll_interval, the upper bound; last poll: 1 list call"
    );
}

/// See: #33. A followed action that leaves the in-flight listing (it became final) is read
/// on the get-by-id endpoint, whose budget discovery otherwise leaves unused, and its
/// results are fetched in the same poll: the poll costs one list call, not a listing and a
/// batch, so the cadence stays at 5 s while results finish instead of 9.6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_action_turning_final_is_read_by_id_and_fetched_in_the_same_poll() {
    let (sim, addr) = fleet_sim().await;
    let (mut c, shared) = collector(&sim, addr);
    poll(&mut c, &sim).await;
    assert_eq!(poll(&mut c, &sim).await, 1);
    let gets = |sim: &Simulator| {
        sim.stats()
            .requests
            .get("get_machine_action")
            .copied()
            .unwrap_or(0)
    };
    // The listing of what is new reaches back `discovery.overlap` (5 minutes) before the
    // newest action; what is older only the in-flight part of the listing follows.
    let created: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        sim.live_response_actions().into_iter().collect();
    let window = *created.values().max().unwrap() - chrono::Duration::minutes(5);
    let mut turned_final = 0;
    for _ in 0..40 {
        let before = in_flight_ids(&sim);
        // A few seconds at a time: a handful of the fleet turns final between two polls.
        sim.advance(Duration::from_secs(15));
        let changed: Vec<String> = before.difference(&in_flight_ids(&sim)).cloned().collect();
        if changed.is_empty() || changed.len() > 20 {
            poll(&mut c, &sim).await;
            continue;
        }
        let gets_before = gets(&sim);
        assert_eq!(poll(&mut c, &sim).await, 1, "{} changed", changed.len());
        let older = changed.iter().filter(|id| created[*id] < window).count();
        assert_eq!(gets(&sim) - gets_before, older as u64);
        // Their results were asked for in that poll.
        let links = sim.stats().link_requests;
        let fleet_done: Vec<&String> = changed
            .iter()
            .filter(|id| {
                sim.truth()
                    .actions
                    .iter()
                    .any(|a| &a.id == *id && a.status == "Succeeded")
            })
            .collect();
        for id in &fleet_done {
            assert!(
                links.keys().any(|(a, _)| a == *id),
                "no result link asked for {id} in the poll that found it final"
            );
        }
        turned_final += older;
        assert_eq!(
            value(
                &scrape(&shared),
                "mde_liveresponse_discovery_interval_seconds{tenant=\"fleet\"}"
            ),
            Some(5.0)
        );
    }
    assert!(turned_final > 0);
    let (counted, truth) = succeeded(&scrape(&shared), &sim);
    assert_eq!(counted, truth as f64);
}
