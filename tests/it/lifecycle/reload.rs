//! Configuration reload, as blackbox_exporter does it: `POST /-/reload` and SIGHUP read the
//! file again; a bad file is refused with its error, the old configuration stays in force and
//! `mde_exporter_config_last_reload_successful` drops to 0; a good one is applied at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::app;
use mde_liveresponse_exporter::config::Config;
use mde_sim::SimConfig;

fn scenario(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 4,
        actions: 12,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_refuses_a_bad_file_and_applies_a_good_one() {
    let (sim_a, addr_a) = start_sim(scenario(81)).await;
    let (sim_b, addr_b) = start_sim(scenario(82)).await;
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("config.yml");
    let one = format!(
        "poll_interval: 200ms\ntenants:\n{}",
        tenant_yaml("alpha", &sim_a, addr_a)
    );
    std::fs::write(&path, &one).unwrap();
    let file = path.clone();
    let loader: app::Loader = Arc::new(move || Config::load(&file));
    let exporter = start_exporter_with_loader(Config::load(&path).unwrap(), loader).await;
    let a = exporter.addr;
    all_final(&sim_a).await;
    eventually("alpha counted", || async move {
        sum(
            &scrape(a).await,
            "mde_liveresponse_script_runs_total",
            &[("tenant", "alpha")],
        ) > 0.0
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(&m, "mde_exporter_config_last_reload_successful", &[]),
        1.0
    );

    // A bad file: refused with its error, the old configuration keeps polling.
    std::fs::write(&path, format!("{one}    colud: gcc\n")).unwrap();
    let (status, body) = post_reload(a).await;
    assert_eq!(status, 500);
    assert_eq!(
        body.trim(),
        format!(
            "failed to reload config: config file {}: tenants[0]: unknown field `colud`, expected one of `name`, `tenant_id`, `client_id`, `client_secret`, `client_secret_file`, `auth`, `cloud`, `region`, `api_url`, `login_url`, `audience`, `lookback`, `requestor`, `machine_ids`, `action_ids`, `scripts`, `quota`, `machine_tags`, `machine_info_interval`, `max_tags_per_machine`, `max_tag_length`, `discovery`, `script_metrics` at line 9 column 5",
            path.display()
        )
    );
    let m = scrape(a).await;
    assert_eq!(
        sum(&m, "mde_exporter_config_last_reload_successful", &[]),
        0.0
    );
    let polls_before = sum(
        &m,
        "mde_exporter_poll_duration_seconds",
        &[("tenant", "alpha")],
    );
    eventually("alpha still polled", || async move {
        sum(
            &scrape(a).await,
            "mde_exporter_poll_duration_seconds",
            &[("tenant", "alpha")],
        ) > polls_before
    })
    .await;

    // A good file with a second tenant: applied, both are polled, alpha's counts go on.
    let alpha_runs = sum(
        &scrape(a).await,
        "mde_liveresponse_script_runs_total",
        &[("tenant", "alpha")],
    );
    std::fs::write(
        &path,
        format!("{one}{}", tenant_yaml("beta", &sim_b, addr_b)),
    )
    .unwrap();
    let (status, body) = post_reload(a).await;
    assert_eq!((status, body.trim()), (200, "configuration reloaded"));
    all_final(&sim_b).await;
    let want_b = sim_b.truth().runs_by_script();
    eventually("beta counted", || {
        let want_b = want_b.clone();
        async move {
            by_label(
                &scrape(a).await,
                "mde_liveresponse_script_runs_total",
                "script",
                &[("tenant", "beta")],
            ) == want_b
        }
    })
    .await;
    let m = scrape(a).await;
    assert_eq!(
        sum(&m, "mde_exporter_config_last_reload_successful", &[]),
        1.0
    );
    // Nothing of alpha was counted again after the reload.
    assert_eq!(
        sum(
            &m,
            "mde_liveresponse_script_runs_total",
            &[("tenant", "alpha")]
        ),
        alpha_runs
    );
    let (_, _, page) = get(a, "/", None).await;
    assert!(page.contains("<h2>Tenant beta</h2>") && page.contains("<h2>Tenant alpha</h2>"));
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let (sim_a, addr_a) = start_sim(scenario(83)).await;
    let (sim_b, addr_b) = start_sim(scenario(84)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    let one = format!(
        "poll_interval: 200ms\ntenants:\n{}",
        tenant_yaml("alpha", &sim_a, addr_a)
    );
    std::fs::write(&path, &one).unwrap();
    let mut exporter = Binary::on_config(&path, &[], &[]);
    let a = exporter.addr;
    std::fs::write(
        &path,
        format!("{one}{}", tenant_yaml("beta", &sim_b, addr_b)),
    )
    .unwrap();
    let pid = exporter.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually("beta polled after SIGHUP", || async move {
        sum(
            &scrape(a).await,
            "mde_exporter_poll_success",
            &[("tenant", "beta")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        tokio::task::block_in_place(|| exporter.terminate()),
        Some(0)
    );
    assert!(
        exporter
            .logs()
            .iter()
            .any(|l| l.contains("configuration reloaded"))
    );
}

/// The metric names with a sample whose `tenant` label is `tenant`.
fn families_of(m: &Samples, tenant: &str) -> std::collections::BTreeSet<String> {
    m.iter()
        .filter(|((_, labels), _)| labels.get("tenant").map(String::as_str) == Some(tenant))
        .map(|((name, _), _)| name.clone())
        .collect()
}

// See: #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_tenant_removes_every_series_of_it() {
    let (sim_a, addr_a) = start_sim(scenario(85)).await;
    let (sim_b, addr_b) = start_sim(scenario(86)).await;
    // Beta is throttled once and answers a 500 once: its 429 and error series exist too.
    sim_b
        .faults()
        .throttle_next("get_result_download_link", 1, Some(1));
    sim_b.faults().fail_next("get_machine_action", 500, 1);
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("config.yml");
    let one = format!(
        "poll_interval: 200ms\ntenants:\n{}",
        tenant_yaml("alpha", &sim_a, addr_a)
    );
    std::fs::write(
        &path,
        format!("{one}{}", tenant_yaml("beta", &sim_b, addr_b)),
    )
    .unwrap();
    let file = path.clone();
    let loader: app::Loader = Arc::new(move || Config::load(&file));
    let exporter = start_exporter_with_loader(Config::load(&path).unwrap(), loader).await;
    let a = exporter.addr;
    all_final(&sim_a).await;
    all_final(&sim_b).await;
    let want_a = sim_a.truth().runs_by_script();
    let want_b = sim_b.truth().runs_by_script();
    eventually("both tenants counted", || {
        let (want_a, want_b) = (want_a.clone(), want_b.clone());
        async move {
            let m = scrape(a).await;
            let runs = |t| {
                by_label(
                    &m,
                    "mde_liveresponse_script_runs_total",
                    "script",
                    &[("tenant", t)],
                )
            };
            runs("alpha") == want_a
                && runs("beta") == want_b
                && sum(&m, "mde_api_throttled_total", &[("tenant", "beta")]) > 0.0
        }
    })
    .await;
    let before = scrape(a).await;
    let beta_families = families_of(&before, "beta");
    // Beta's series are in every group: results, per-machine, poll, API, quota, token.
    for family in [
        "mde_liveresponse_script_runs_total",
        "mde_liveresponse_script_exit_code",
        "mde_liveresponse_actions_total",
        "mde_exporter_poll_success",
        "mde_exporter_poll_duration_seconds_count",
        "mde_api_requests_total",
        "mde_api_request_duration_seconds_count",
        "mde_api_throttled_total",
        "mde_api_retry_after_seconds",
        "mde_api_quota_used",
        "mde_exporter_token_success",
    ] {
        assert!(
            beta_families.contains(family),
            "{family}: {beta_families:?}"
        );
    }

    // Reload without beta.
    std::fs::write(&path, &one).unwrap();
    let (status, body) = post_reload(a).await;
    assert_eq!((status, body.trim()), (200, "configuration reloaded"));
    let after = scrape(a).await;
    assert_eq!(
        families_of(&after, "beta"),
        std::collections::BTreeSet::new(),
        "beta's series left after the reload"
    );
    // The raw body too, in every format's words (histogram buckets, `_created`).
    let (_, _, text) = get(a, "/metrics", None).await;
    assert!(!text.contains("tenant=\"beta\""), "{text}");
    // Alpha's go on unchanged: every family it had, the same counts.
    let alpha_after = families_of(&after, "alpha");
    for family in families_of(&before, "alpha") {
        assert!(alpha_after.contains(&family), "alpha lost {family}");
    }
    assert_eq!(
        by_label(
            &after,
            "mde_liveresponse_script_runs_total",
            "script",
            &[("tenant", "alpha")]
        ),
        want_a
    );
    assert!(
        sum(&after, "mde_api_requests_total", &[("tenant", "alpha")])
            >= sum(&before, "mde_api_requests_total", &[("tenant", "alpha")])
    );
    exporter.shutdown().await.unwrap();
}
