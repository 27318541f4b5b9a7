//! The state file between processes (#24): `--state.reset` and a second exporter on a file
//! a live one holds, with two real processes.

use crate::common::{Binary, closed_port_config, run_to_end};

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
    let config = closed_port_config(dir.path(), "");
    let state = dir.path().join("state.redb");
    let mut first = Binary::on_state(&config, &state, &[], &[]);
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
    let mut after = Binary::on_state(&config, &state, &["--state.reset"], &[]);
    assert_eq!(after.terminate(), Some(0));
    assert!(
        files_in(dir.path())
            .iter()
            .any(|n| n.starts_with("state.redb.reset-")),
        "{:?}",
        files_in(dir.path())
    );
}
