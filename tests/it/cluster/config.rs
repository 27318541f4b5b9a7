//! The `cluster:` section at the edges: `--config.check` validates it without connecting and
//! never shows the password; the schema is created once and a database of something else is
//! refused; `--state.import` copies a state file once (idempotent). See: #31

use std::process::Command;

use crate::common::BIN;

fn write(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  postgres_url: {url}\n  member: m1\ntenants:\n  - name: t\n    tenant_id: 00000000-0000-0000-0000-000000000001\n    client_id: 00000000-0000-0000-0000-000000000002\n    client_secret: s\n    api_url: http://127.0.0.1:9\n    login_url: http://127.0.0.1:9\n"
        ),
    )
    .unwrap();
    config
}

/// The check reads the section without connecting (the host does not exist) and the password
/// appears in no output.
#[test]
fn issue_31_config_check_does_not_connect_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "postgres://mde:hunter2@db.invalid:5432/mde?sslmode=require",
    );
    let out = Command::new(BIN)
        .args(["--config.check", "--config.file", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // A wrong sslmode is named.
    let config = write(dir.path(), "postgres://mde:hunter2@db/mde?sslmode=maybe");
    let out = Command::new(BIN)
        .args(["--config.check", "--config.file", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cluster.postgres_url: sslmode \"maybe\" is not one of"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // And static shards are refused beside it.
    let config = write(dir.path(), "postgres://mde:hunter2@db/mde");
    let out = Command::new(BIN)
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--shard.index",
            "0",
            "--shard.count",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--shard.index and --shard.count are not used with cluster"),
        "{err}"
    );
}

/// A start that cannot reach the database says so, naming the server and not the password,
/// and keeps trying.
#[test]
fn issue_31_an_unreachable_database_is_named_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "postgres://mde:hunter2@127.0.0.1:9/mde?sslmode=disable",
    );
    let mut child = Command::new(BIN)
        .args([
            "--config.file",
            config.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.matches("cannot reach the cluster database").count() >= 2,
        "{err}"
    );
    assert!(err.contains("127.0.0.1:9/mde"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// The schema is the exporter's: a database whose mde_schema belongs to something else is
/// refused with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_31_a_database_of_something_else_is_refused() {
    let Some(vars) = super::server() else { return };
    let url = super::database(&vars, "mde_cluster_foreign").await;
    let c = super::client(&url).await;
    c.batch_execute("CREATE TABLE mde_schema (id integer PRIMARY KEY, app text NOT NULL, version integer NOT NULL); INSERT INTO mde_schema VALUES (1, 'someone-else', 1)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "--config.file",
                config.to_str().unwrap(),
                "--web.listen-address",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("belongs to \"someone-else\""), "{err}");
}

/// `--state.import`: the state of one process moves into the cluster's database, and the
/// member that takes the tenant asks for no result again; importing twice adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_31_state_import_recounts_nothing() {
    use crate::common::{Binary, config_dir, eventually, results_done, scrape, start_sim};
    let Some(vars) = super::server() else { return };
    let url = super::database(&vars, "mde_cluster_import").await;
    let (sim, addr) = start_sim(mde_sim::SimConfig {
        actions: 12,
        ..mde_sim::SimConfig::default()
    })
    .await;
    let (dir, config, state) = config_dir(&sim, addr);
    // One process counts everything into its state file.
    let truth = sim.truth();
    let want = (truth.transcripts.len() + truth.files.len()) as f64;
    let (config2, state2) = (config.clone(), state.clone());
    let mut one =
        tokio::task::spawn_blocking(move || Binary::on_state(&config2, &state2, &[], &[]))
            .await
            .unwrap();
    let a = one.addr;
    eventually(
        "every result counted by the single process",
        || async move { results_done(&scrape(a).await) >= want },
    )
    .await;
    assert_eq!(one.terminate(), Some(0));
    let asked: u64 = sim.stats().link_requests.values().sum();
    // The same tenant as a cluster member, importing the file.
    let text = std::fs::read_to_string(&config).unwrap();
    let cluster = dir.path().join("cluster.yml");
    std::fs::write(
        &cluster,
        format!("cluster:\n  postgres_url: {url}\n  lease_duration: 3s\n  member: m1\n{text}"),
    )
    .unwrap();
    for _ in 0..2 {
        let (cluster, state) = (cluster.clone(), state.clone());
        let mut member = tokio::task::spawn_blocking(move || {
            Binary::on_config(&cluster, &["--state.import", state.to_str().unwrap()], &[])
        })
        .await
        .unwrap();
        let m = member.addr;
        eventually("the member polls the tenant", || async move {
            crate::common::sum(&scrape(m).await, "mde_exporter_poll_success", &[]) == 1.0
        })
        .await;
        // A few polls: nothing is asked for again.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(member.terminate(), Some(0));
        let logs = member.logs().join("\n");
        assert!(logs.contains("--state.import"), "{logs}");
    }
    let after: u64 = sim.stats().link_requests.values().sum();
    assert_eq!(after, asked, "results asked for again after the import");
    let db = super::client(&url).await;
    let counted: i64 = db
        .query_one("SELECT count(*) FROM mde_counted WHERE kind = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        counted as f64 >= want,
        "{counted} counted rows imported, {want} results"
    );
    // A database whose entries of the tenant were recorded for another tenant: refused whole.
    db.execute(
        "UPDATE mde_identity SET value = $1",
        &[&br#"{"tenant_id":"another","api_url":"http://elsewhere/"}"#.to_vec()],
    )
    .await
    .unwrap();
    let before: i64 = db
        .query_one("SELECT count(*) FROM mde_counted", &[])
        .await
        .unwrap()
        .get(0);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "--config.file",
                cluster.to_str().unwrap(),
                "--web.listen-address",
                "127.0.0.1:0",
                "--state.import",
                state.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the cluster's for another tenant_id or api_url: nothing was imported"),
        "{err}"
    );
    let after: i64 = db
        .query_one("SELECT count(*) FROM mde_counted", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
}
