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
