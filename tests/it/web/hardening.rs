//! Hardening against hostile networks, outages and bad days, end to end: the simulator gives
//! the hostile answers (looping nextLinks, poisoned list items, redirects and links to other
//! hosts, outages; 429 storms are in `quota`) and the exporter must lose nothing, count
//! nothing twice, block nobody, and say what is wrong in `mde_exporter_poll_success` and its
//! status page.
//! See: #13

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::app::{self, Handle};
use mde_sim::{SimConfig, Simulator};

pub(crate) fn scenario(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 5,
        actions: 16,
        finish_within: Duration::from_millis(300),
        // Short windows: after a 429 our budget adapts within seconds, not a minute.
        minute: Duration::from_secs(2),
        hour: Duration::from_secs(120),
        per_hour: 10_000,
        ..SimConfig::default()
    }
}

pub(crate) async fn exporter_for(sim: &Simulator, addr: SocketAddr, extra_global: &str) -> Handle {
    all_final(sim).await;
    start_exporter_with(sim, addr, "", extra_global).await
}

pub(crate) fn runs_match_truth(sim: &Simulator, m: &Samples) {
    let truth = sim.truth();
    assert_eq!(
        by_label(m, "mde_liveresponse_script_runs_total", "script", &[]),
        truth.runs_by_script()
    );
    assert_eq!(
        sum(m, "mde_liveresponse_files_total", &[]),
        truth.files.len() as f64
    );
}

pub(crate) fn last_error(h: &Handle) -> String {
    h.shared()
        .status_snapshot()
        .get("sim")
        .and_then(|s| s.last_error.clone())
        .unwrap_or_default()
}

/// Issue item 2: one poisoned item no longer blocks the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_list_items_are_skipped_and_counted() {
    let (sim, addr) = start_sim(scenario(131)).await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    sim.faults().list_items(vec![
        b"{\"id\":\"utf8\",\"type\":\"LiveResponse\",\"status\":\"Succeeded\",\"requestor\":\"\xff\xfe\"}"
            .to_vec(),
        br#"{"id":"surrogate","type":"LiveResponse","status":"Succeeded","requestor":"\udc00"}"#
            .to_vec(),
        format!(r#"{{"id":"deep","type":"LiveResponse","status":"Succeeded","commands":[{{"index":0,"commandStatus":"Completed","command":{{"type":"RunScript"}},"errors":{deep}}}]}}"#)
            .into_bytes(),
        // #24 item 9: poison in a field the exporter does not read is poison all the same.
        br#"{"id":"comment","type":"LiveResponse","status":"Succeeded","requestorComment":"\ud800"}"#
            .to_vec(),
        format!(r#"{{"id":"deep-comment","type":"LiveResponse","status":"Succeeded","requestorComment":{deep}}}"#)
            .into_bytes(),
    ]);
    let exporter = exporter_for(&sim, addr, "").await;
    let m = settled(&sim, exporter.addr).await;
    runs_match_truth(&sim, &m);
    let invalid = sum(&m, "mde_liveresponse_invalid_actions_total", &[]);
    assert!(
        invalid >= 5.0 && invalid % 5.0 == 0.0,
        "five per list page: {invalid}"
    );
    exporter.shutdown().await.unwrap();
}

/// A listing fault (`fault(true)` on, `fault(false)` off) fails the poll naming `reason`,
/// within `calls_per_poll` list calls a poll instead of a quota's worth (or 200 pages); once
/// the fault ends everything is counted.
async fn a_listing_fault_fails_the_poll(
    sim: Simulator,
    addr: SocketAddr,
    fault: impl Fn(&Simulator, bool),
    reason: &str,
    calls_per_poll: f64,
) {
    fault(&sim, true);
    let exporter = exporter_for(&sim, addr, "").await;
    let a = exporter.addr;
    eventually("a failed poll", || async move {
        let m = scrape(a).await;
        sum(&m, "mde_exporter_poll_duration_seconds", &[]) >= 3.0
            && sum(&m, "mde_exporter_poll_success", &[]) == 0.0
    })
    .await;
    let err = last_error(&exporter);
    assert!(err.contains(reason), "{err}");
    let m = scrape(a).await;
    let polls = sum(&m, "mde_exporter_poll_duration_seconds", &[]);
    let lists = sim.stats().requests["list_machine_actions"] as f64;
    assert!(
        lists <= calls_per_poll * (polls + 1.0),
        "{lists} list calls in {polls} polls"
    );
    fault(&sim, false);
    let m = settled(&sim, a).await;
    runs_match_truth(&sim, &m);
    exporter.shutdown().await.unwrap();
}

/// Issue item 5: a nextLink that loops fails the poll with its reason, after one repeat,
/// instead of spending the quota and looking healthy: two list calls per poll (the page, and
/// its repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_next_link_fails_the_poll() {
    let (sim, addr) = start_sim(scenario(132)).await;
    a_listing_fault_fails_the_poll(
        sim,
        addr,
        |sim, on| sim.faults().loop_next_link(on),
        "repeats a page already read in this listing: the listing loops",
        2.0,
    )
    .await;
}

/// An API that ignores `$skip` serves the same full page under new URLs: no URL repeats, so
/// the loop check never fired and up to 200 copies of the page piled up. The repeated page
/// fails the poll with its reason after one repeat: at most two listings a poll (what is new,
/// what is in flight), each stopped at its first repeated page. See: #32 item 6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_ignores_skip_fails_the_poll_after_one_repeat() {
    let (sim, addr) = start_sim(SimConfig {
        page_size: 5,
        ..scenario(133)
    })
    .await;
    a_listing_fault_fails_the_poll(
        sim,
        addr,
        |sim, on| sim.faults().ignore_skip(on),
        "holds the same items as a page already read in this listing",
        4.0,
    )
    .await;
}

/// Issue item 3: an outage of the result link endpoint and of blob storage, longer than five
/// tries per result, loses nothing: results back off and are fetched once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_no_result() {
    let (sim, addr) = start_sim(scenario(134)).await;
    let truth = sim.truth();
    let results = (truth.transcripts.len() + truth.files.len()) as u32;
    let f = sim.faults();
    // Six failures in a row for each result: the old policy gave up after five.
    f.fail_next("get_result_download_link", 503, 5 * results);
    f.fail_next("download", 500, results);
    let exporter = exporter_for(&sim, addr, "").await;
    let m = settled(&sim, exporter.addr).await;
    runs_match_truth(&sim, &m);
    let malformed = truth.transcripts.iter().filter(|t| t.malformed).count() as f64;
    assert_eq!(
        sum(&m, "mde_liveresponse_result_fetch_failures_total", &[]),
        malformed,
        "only the malformed transcripts are given up"
    );
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "get_result_download_link"), ("code", "503")]
        ) >= 5.0 * f64::from(results)
    );
    exporter.shutdown().await.unwrap();
}

/// Issue item 7: a result link on another host is never fetched; it is given up as
/// `untrusted_link`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_another_host_are_not_fetched() {
    let (sim, addr) = start_sim(scenario(135)).await;
    // The same simulator under another host name: if the exporter followed the link, the
    // request would arrive, with that Host.
    let foreign = format!("localhost:{}", addr.port());
    sim.faults().link_base(Some(&format!("http://{foreign}")));
    let exporter = exporter_for(&sim, addr, "").await;
    let m = settled(&sim, exporter.addr).await;
    let truth = sim.truth();
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_result_fetch_failures_total",
            &[("reason", "untrusted_link")]
        ),
        (truth.transcripts.len() + truth.files.len()) as f64
    );
    assert_eq!(sum(&m, "mde_liveresponse_script_runs_total", &[]), 0.0);
    let stats = sim.stats();
    assert_eq!(stats.hosts.get(&foreign), None, "{:?}", stats.hosts);
    assert_eq!(stats.requests.get("download"), None);
    exporter.shutdown().await.unwrap();
}

/// Issue item 7: redirects to another host are not followed (API calls and downloads), and
/// no request ever carries a Referer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_host_are_refused() {
    let (sim, addr) = start_sim(scenario(136)).await;
    let foreign = format!("localhost:{}", addr.port());
    let f = sim.faults();
    f.redirect_next("/api/machineactions", &format!("http://{foreign}"), 1);
    f.redirect_next("/blob/", &format!("http://{foreign}"), 2);
    let exporter = exporter_for(&sim, addr, "").await;
    let m = settled(&sim, exporter.addr).await;
    let redirected = sum(
        &m,
        "mde_liveresponse_result_fetch_failures_total",
        &[("reason", "untrusted_link")],
    );
    assert_eq!(redirected, 2.0, "the two redirected downloads are given up");
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "list_machine_actions"), ("code", "302")]
        ) >= 1.0
    );
    let stats = sim.stats();
    assert_eq!(stats.hosts.get(&foreign), None, "{:?}", stats.hosts);
    assert_eq!(stats.with_referer, 0);
    exporter.shutdown().await.unwrap();
}

/// Issue item 9: `POST /-/reload` is off without `--web.enable-lifecycle`; with it,
/// concurrent reloads share one reload instead of costing a token request each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_opt_in_and_coalesced() {
    let (sim, addr) = start_sim(scenario(137)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    let secret = sim.credentials().2.to_string();
    std::fs::write(&path, config_yaml(&sim, addr, &secret, "", "")).unwrap();
    let file = path.clone();
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = loads.clone();
    let loader: app::Loader = std::sync::Arc::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        mde_liveresponse_exporter::config::Config::load(&file)
    });
    let config = mde_liveresponse_exporter::config::Config::load(&path).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let off = app::start_with_lifecycle(
        config.clone(),
        listener,
        "/metrics",
        None,
        Some(loader.clone()),
        false,
    )
    .await
    .unwrap();
    let (status, body) = post_reload(off.addr).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "Lifecycle API is not enabled: start with --web.enable-lifecycle (SIGHUP reloads without it)\n"
    );
    assert_eq!(off.reload().await, Ok(()), "SIGHUP's path still reloads");
    off.shutdown().await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let on = app::start_with_lifecycle(config, listener, "/metrics", None, Some(loader), true)
        .await
        .unwrap();
    let a = on.addr;
    eventually("a first poll", || async move {
        sum(&scrape(a).await, "mde_exporter_token_success", &[]) == 1.0
    })
    .await;
    let tokens_before = sim.stats().requests["token"];
    let loads_before = loads.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let replies =
        futures_util::future::join_all((0..60).map(|_| async move { post_reload(a).await })).await;
    let took = started.elapsed();
    assert!(replies.iter().all(|(s, _)| *s == 200), "{replies:?}");
    // Reloads start at most once a second and every request waiting shares the next one:
    // however the 60 requests were spread in time, they cost at most one reload per second
    // of the burst (plus the one already running), not one each.
    let reloads = loads.load(std::sync::atomic::Ordering::SeqCst) - loads_before;
    assert!(
        reloads as u64 <= took.as_secs() + 2,
        "60 concurrent reloads made {reloads} reloads in {took:?}"
    );
    assert!(reloads < 60);
    eventually("the reloaded collectors polled", || async move {
        sum(&scrape(a).await, "mde_exporter_token_success", &[]) == 1.0
    })
    .await;
    // Each reload starts the collectors again: one token request each.
    let tokens = sim.stats().requests["token"] - tokens_before;
    assert!(
        tokens <= reloads as u64,
        "{reloads} reloads cost {tokens} token requests"
    );
    on.shutdown().await.unwrap();
}

/// Issue item 9: a poll interval that overflows a timer fails `--config.check`.
#[test]
fn an_overflowing_poll_interval_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_port_config(dir.path(), "poll_interval: 10000000000000000000s\n");
    let out = Command::new(BIN)
        .args(["--config.check", "--config.file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "config file {}: poll_interval: must be at most 1d (got 10000000000000000000s)",
            path.display()
        )
    );
}

/// Issue item 8: a state file truncated to 0 bytes stops start-up (exit 1, the file named),
/// it is not a silent fresh start; `--state.reset` moves it aside and starts.
#[test]
fn an_empty_state_file_stops_start_up_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let config = closed_port_config(dir.path(), "");
    let state = dir.path().join("state.redb");
    std::fs::write(&state, b"").unwrap();
    let (code, stderr) = run_to_end(&config, &state, &[]);
    assert_eq!(code, Some(1), "not a panic (101)");
    assert!(
        stderr.contains(&format!(
            "mde-liveresponse-exporter: cannot open state file {}: the file is empty (0 bytes)",
            state.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let mut b = Binary::on_state(&config, &state, &["--state.reset"], &[]);
    assert_eq!(b.terminate(), Some(0));
    let logs = b.logs().join("\n");
    assert!(
        logs.contains("--state.reset: the state file was moved aside"),
        "{logs}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.redb.reset-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        std::fs::metadata(&state).unwrap().len() > 0,
        "a new state file"
    );
}

/// The HTTP server's limits are visible on `/metrics`: a client that connects and sends
/// nothing is an open connection, counted beside the scrape that reads the gauge. See: #13
#[tokio::test]
async fn http_connections_are_exposed_as_metrics() {
    let (sim, addr) = start_sim(scenario(13)).await;
    let exporter = exporter_for(&sim, addr, "").await;
    let silent = tokio::net::TcpStream::connect(exporter.addr)
        .await
        .expect("connect");
    eventually("the silent connection is counted as open", || async {
        let m = scrape(exporter.addr).await;
        // The silent connection plus the scrape's own.
        sum(&m, "mde_exporter_http_connections_open", &[]) >= 2.0
            && m.keys().any(|(n, l)| {
                n == "mde_exporter_http_connections_closed_total"
                    && l.get("reason").map(String::as_str) == Some("rejected")
            })
    })
    .await;
    drop(silent);
    exporter.shutdown().await.expect("shutdown");
}

/// See: #32 item 8. An action from another machine id that reports a machine's
/// `computerDnsName`: its script ran, later than the real machine's attempt that did not.
/// Keyed by the DNS name, its run overwrote the real machine's series (`script_not_run` 0: a
/// machine whose script never ran shown as fine). Keyed by the machine id behind the name,
/// the real machine's series keeps its value, and the other machine's run has a series of its
/// own, labelled with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_reporting_another_machines_name_does_not_overwrite_its_series() {
    let (sim, addr) = start_sim(SimConfig {
        not_run: 8,
        ..scenario(328)
    })
    .await;
    no_action_in_flight(&sim).await;
    let truth = sim.truth();
    let (machine, script) = truth
        .not_run
        .iter()
        .map(|n| (n.machine.clone(), n.script.clone()))
        .find(|(machine, script)| {
            !truth
                .transcripts
                .iter()
                .any(|t| &t.machine == machine && &t.script == script)
        })
        .expect("a script that never ran on a machine");
    let impostor = "0000000000000000000000000000000000000bad";
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    sim.faults().list_items(vec![
        format!(
            r#"{{"id":"impostor","type":"LiveResponse","status":"Succeeded","machineId":"{impostor}","computerDnsName":"{machine}","creationDateTimeUtc":"{now}","lastUpdateDateTimeUtc":"{now}","commands":[{{"index":0,"commandStatus":"Completed","command":{{"type":"RunScript","params":[{{"key":"ScriptName","value":"{script}"}}]}},"errors":[]}}]}}"#
        )
        .into_bytes(),
    ]);
    let exporter = start_exporter_with(&sim, addr, "", "").await;
    let a = exporter.addr;
    let (m2, s2) = (machine.clone(), script.clone());
    eventually("the machine's series, three polls on", || {
        let (machine, script) = (m2.clone(), s2.clone());
        async move {
            let m = scrape(a).await;
            polls(&m) >= 3.0
                && m.keys().any(|(n, l)| {
                    n == "mde_liveresponse_script_not_run"
                        && l.get("machine") == Some(&machine)
                        && l.get("script") == Some(&script)
                })
        }
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_script_not_run",
            &[("machine", &machine), ("script", &script)],
        ),
        1.0,
        "the real machine's script never ran"
    );
    // The other machine's action was read and counted: its run did not reach this series.
    assert!(
        exporter
            .shared()
            .with_state(|s| s.action_seen("sim", "impostor"))
    );
    exporter.shutdown().await.unwrap();
}
