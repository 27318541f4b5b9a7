//! Failure signatures (#36) against the simulator's failing fleet: the same error on many
//! machines, in each machine's own paths, numbers and names, is one signature counting them
//! all; two errors are two; unique garbage stays within the top K plus `other`; the signature
//! page lists the machines; a restart keeps the counts (they come from the state).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use mde_sim::{FAILING_SCRIPT, Failing, FailingErrors, SimConfig, failing_device};

const FAMILY: &str = "mde_liveresponse_script_failure_signatures";

fn scenario(seed: u64, machines: usize, errors: FailingErrors) -> SimConfig {
    SimConfig {
        seed,
        machines: 3,
        actions: 8,
        finish_within: Duration::from_millis(300),
        failing: Failing { machines, errors },
        ..SimConfig::default()
    }
}

/// The failing script's signature series: (signature, template) → machines. (The test parser
/// cuts a label value at its first comma: whole templates are read from the raw body.)
fn signatures(m: &Samples) -> BTreeMap<(String, String), f64> {
    m.iter()
        .filter(|((n, l), _)| {
            n == FAMILY
                && l.get("tenant").map(String::as_str) == Some("sim")
                && l.get("script").map(String::as_str) == Some(FAILING_SCRIPT)
        })
        .map(|((_, l), v)| ((l["signature"].clone(), l["template"].clone()), *v))
        .collect()
}

async fn json(a: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, _, body) = get(a, path, Some("application/json")).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// See: #36
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_error_on_50_machines_is_one_signature_listed_and_kept_across_a_restart() {
    let (sim, addr) = start_sim(scenario(3601, 50, FailingErrors::Same)).await;
    no_action_in_flight(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let yaml = config_yaml(
        &sim,
        addr,
        sim.credentials().2,
        "",
        &format!("state_path: {}\n", state.display()),
    );
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    let m = settled(&sim, a).await;
    let found = signatures(&m);
    assert_eq!(found.len(), 1, "{found:?}");
    let ((id, _), machines) = found.iter().next().unwrap();
    assert_eq!(*machines, 50.0, "{found:?}");
    let page = format!(
        "/signatures?tenant=sim&script={}&signature={id}",
        q(FAILING_SCRIPT)
    );
    let v = json(a, &page).await;
    let template = v["template"].as_str().unwrap().to_string();
    let (_, _, body) = get(a, "/metrics", None).await;
    assert!(
        body.contains(&format!(
            "{FAMILY}{{tenant=\"sim\",script=\"{FAILING_SCRIPT}\",signature=\"{id}\",template=\"{template}\"}} 50\n"
        )),
        "{body}"
    );
    assert!(
        template.starts_with(
            "Set-ItemProperty : Requested registry access is not allowed on <host> for <path> (user <user>, attempt <n> of <n>, <hex>, <n>)."
        ) && template.contains("[System.Security.SecurityException,")
            && template.ends_with("(PermissionDenied, SecurityException)"),
        "{template}"
    );
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_script_failure_signatures_folded",
            &[("script", FAILING_SCRIPT)]
        ),
        0.0
    );

    // The signature page lists the 50 machines, each linked to its transcript.
    assert_eq!(v["machines"], 50);
    let listed: Vec<String> = v["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["machine"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..50).map(failing_device).collect();
    want.sort();
    assert_eq!(listed, want);
    let first = &v["listed"][0]["transcript_url"];
    assert_eq!(
        first,
        &format!(
            "/transcripts?tenant=sim&machine={}&script={}",
            q(&want[0]),
            q(FAILING_SCRIPT)
        )
    );
    // Each run's transcript page links to the signature's page.
    let t = json(a, first.as_str().unwrap()).await;
    assert_eq!(t["signature"]["id"], id.as_str());
    assert_eq!(t["signature"]["url"], page.as_str());
    let (status, _, html) = get(a, &page, None).await;
    assert_eq!(status, 200);
    assert!(html.contains("why it fails on 50 machine(s)"), "{html}");
    assert!(html.contains("&lt;host&gt;"), "escaped: {html}");
    let (status, _, _) = get(
        a,
        &format!(
            "/signatures?tenant=sim&script={}&signature=0",
            q(FAILING_SCRIPT)
        ),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A restart: the runs are done, nothing is fetched again, the counts come from the state.
    exporter.shutdown().await.unwrap();
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    eventually("a poll in the second life", || async move {
        polls(&scrape(a).await) >= 2.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(signatures(&m), found);
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_script_runs_total",
            &[("script", FAILING_SCRIPT)]
        ),
        0.0,
        "nothing fetched again"
    );
    assert_eq!(json(a, &page).await["machines"], 50);
    exporter.shutdown().await.unwrap();
}

// See: #36
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_errors_are_two_signatures() {
    let (sim, addr) = start_sim(scenario(3602, 50, FailingErrors::Two)).await;
    no_action_in_flight(&sim).await;
    let exporter = start_exporter_on(&sim, addr).await;
    let m = settled(&sim, exporter.addr).await;
    let found = signatures(&m);
    let counts: Vec<f64> = found.values().copied().collect();
    assert_eq!(counts, vec![25.0, 25.0], "{found:?}");
    let (_, _, body) = get(exporter.addr, "/metrics", None).await;
    assert!(
        body.contains("template=\"New-PSSession : [<host>] Connecting to remote server <host> failed with the following error message : WinRM cannot complete the operation within <n> ms (<n>, session <guid>). [WinRMOperationTimeout,PSSessionOpenFailed] (OpenError, PSRemotingTransportException)\"} 25\n"),
        "{body}"
    );
    exporter.shutdown().await.unwrap();
}

// See: #36
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_garbage_stays_within_k_plus_other() {
    let (sim, addr) = start_sim(scenario(3603, 40, FailingErrors::Garbage)).await;
    no_action_in_flight(&sim).await;
    let exporter = start_exporter_with(&sim, addr, "", "failure_signatures_top_k: 5\n").await;
    let a = exporter.addr;
    let m = settled(&sim, a).await;
    let found = signatures(&m);
    assert_eq!(found.len(), 6, "five and other: {found:?}");
    assert_eq!(found.values().sum::<f64>(), 40.0);
    assert_eq!(found[&("other".to_string(), "other".to_string())], 35.0);
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_script_failure_signatures_folded",
            &[("script", FAILING_SCRIPT)]
        ),
        35.0
    );
    // `other` lists the machines beyond the top five.
    let v = json(
        a,
        &format!(
            "/signatures?tenant=sim&script={}&signature=other",
            q(FAILING_SCRIPT)
        ),
    )
    .await;
    assert_eq!(v["machines"], 35);
    exporter.shutdown().await.unwrap();
}
