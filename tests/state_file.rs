//! The state file between processes (#24): `--state.reset` and a second exporter on a file
//! a live one holds, with two real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Binary;

const BIN: &str = env!("CARGO_BIN_EXE_mde-liveresponse-exporter");

/// One tenant on a closed port: the exporter starts, holds its state file and polls nothing.
fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    client_secret: s\n    api_url: http://127.0.0.1:9\n    login_url: http://127.0.0.1:9\n",
    )
    .unwrap();
    path
}

/// Run the exporter on `config` and `state` with `extra` flags until it exits (a refused start
/// does): its exit code and standard error.
fn run_to_end(
    config: &std::path::Path,
    state: &std::path::Path,
    extra: &[&str],
) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["--web.listen-address", "127.0.0.1:0", "--config.file"])
        .arg(config)
        .arg("--state.path")
        .arg(state)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Issue #24 item 5: `--state.reset` under a live exporter renamed the file the first one kept
/// writing to, and the second counted every result again. Now it takes the lock first and
/// refuses, naming the file and the process holding it; and a second exporter on a file in use
/// is told so, not advised to reset it.
#[test]
fn reset_refuses_a_state_file_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let state = dir.path().join("state.redb");
    let mut first = Binary::spawn(
        &[
            "--web.listen-address",
            "127.0.0.1:0",
            "--config.file",
            config.to_str().unwrap(),
            "--state.path",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let before = files_in(dir.path());
    let holder = format!("(pid {})", first.child.id());

    let (code, stderr) = run_to_end(&config, &state, &["--state.reset"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--state.reset refused: state file {} is in use by another process {holder}",
            state.display()
        )),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), before, "nothing moved aside");

    let (code, stderr) = run_to_end(&config, &state, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "state file {} is in use by another process {holder}",
            state.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("start once with --state.reset"),
        "a lock is not corruption: {stderr}"
    );

    // Once the first has stopped, the reset goes through.
    assert_eq!(first.terminate(), Some(0));
    let mut after = Binary::spawn(
        &[
            "--web.listen-address",
            "127.0.0.1:0",
            "--config.file",
            config.to_str().unwrap(),
            "--state.path",
            state.to_str().unwrap(),
            "--state.reset",
        ],
        &[],
    );
    assert_eq!(after.terminate(), Some(0));
    assert!(
        files_in(dir.path())
            .iter()
            .any(|n| n.starts_with("state.redb.reset-")),
        "{:?}",
        files_in(dir.path())
    );
}
