//! `mde-liveresponse-exporter transcript`: the real binary against the simulator prints a
//! RunScript result and a GetFile result's size as the API serves them, and names each
//! problem: an unknown tenant or action, an index out of range, a PutFile index, a command
//! that did not complete. See: #12

use std::process::Command;
use std::time::Duration;

use crate::common::{BIN, all_final, config_yaml, start_sim};
use mde_sim::SimConfig;

/// Run `transcript` with `args`; (exit code, stdout, stderr).
fn transcript(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("transcript")
        .arg("--config.file")
        .arg(config)
        .args(["--log.level", "warn"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The last line of stderr: the error as `main` prints it (`mde-liveresponse-exporter: …`).
fn error_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_prints_results_and_names_each_problem() {
    let (sim, addr) = start_sim(SimConfig {
        seed: 7,
        machines: 5,
        actions: 30,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    all_final(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    let secret = sim.credentials().2.to_string();
    std::fs::write(&path, config_yaml(&sim, addr, &secret, "", "")).unwrap();
    let truth = sim.truth();

    // A RunScript result: the fields as the API serves them.
    let t = truth
        .transcripts
        .iter()
        .find(|t| !t.malformed)
        .expect("a readable transcript");
    let index = t.index.to_string();
    let (code, out, err) = tokio::task::block_in_place(|| {
        transcript(&path, &["--tenant", "sim", &t.action_id, "--index", &index])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("action {} (", t.action_id)), "{out}");
    assert!(
        out.contains(&format!("script_name: {}\n", t.script)),
        "{out}"
    );
    assert!(
        out.contains(&format!("exit_code: {}\n", t.exit_code)),
        "{out}"
    );
    assert!(out.contains("script_output:\n"), "{out}");
    assert!(out.contains("script_errors:\n"), "{out}");

    // A GetFile result: its compressed size, not its bytes.
    let f = truth.files.first().expect("a GetFile result");
    let index = f.index.to_string();
    let (code, out, err) = tokio::task::block_in_place(|| {
        transcript(&path, &["--tenant", "sim", &f.action_id, "--index", &index])
    });
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("size: {} bytes", f.compressed_bytes)),
        "{out}"
    );

    // Unknown tenant, unknown action.
    let (code, _, err) =
        tokio::task::block_in_place(|| transcript(&path, &["--tenant", "nope", &t.action_id]));
    assert_eq!(code, 1);
    assert_eq!(
        error_line(&err),
        "mde-liveresponse-exporter: no tenant named \"nope\" in the configuration (tenants: sim)"
    );
    let missing = "00000000-0000-0000-0000-000000000000";
    let (code, _, err) =
        tokio::task::block_in_place(|| transcript(&path, &["--tenant", "sim", missing]));
    assert_eq!(code, 1);
    assert_eq!(
        error_line(&err),
        format!(
            "mde-liveresponse-exporter: tenant sim: action {missing} does not exist (the API answered 404)"
        )
    );

    // An index past the last command.
    let a = truth.actions.iter().find(|a| a.id == t.action_id).unwrap();
    let n = a.commands.len();
    let (code, _, err) = tokio::task::block_in_place(|| {
        transcript(
            &path,
            &["--tenant", "sim", &a.id, "--index", &n.to_string()],
        )
    });
    assert_eq!(code, 1);
    assert_eq!(
        error_line(&err),
        format!(
            "mde-liveresponse-exporter: action {} has {n} command(s) (index 0 to {}); --index {n} is out of range",
            a.id,
            n - 1
        )
    );

    // A PutFile command has no result.
    if let Some((a, i)) = truth.actions.iter().find_map(|a| {
        a.commands
            .iter()
            .position(|(kind, _)| kind == "PutFile")
            .map(|i| (a, i))
    }) {
        let (code, _, err) = tokio::task::block_in_place(|| {
            transcript(
                &path,
                &["--tenant", "sim", &a.id, "--index", &i.to_string()],
            )
        });
        assert_eq!(code, 1);
        assert_eq!(
            error_line(&err),
            format!(
                "mde-liveresponse-exporter: action {} index {i} is a PutFile command, which has no result",
                a.id
            )
        );
    } else {
        panic!("the scenario has no PutFile command");
    }

    // A command that never completed (a later command of a Failed action stays Created).
    let (a, i, status) = truth
        .actions
        .iter()
        .find_map(|a| {
            a.commands
                .iter()
                .enumerate()
                .find_map(|(i, (kind, status))| {
                    (status != "Completed" && (kind == "RunScript" || kind == "GetFile"))
                        .then(|| (a, i, status.clone()))
                })
        })
        .expect("a command that did not complete");
    let (code, _, err) = tokio::task::block_in_place(|| {
        transcript(
            &path,
            &["--tenant", "sim", &a.id, "--index", &i.to_string()],
        )
    });
    assert_eq!(code, 1);
    assert_eq!(
        error_line(&err),
        format!(
            "mde-liveresponse-exporter: action {} index {i}: the {} command is {status} (action {}); its result can be read once the command is Completed",
            a.id, a.commands[i].0, a.status
        )
    );

    // Without --index: every command, each with its result or why it has none.
    let (code, out, err) =
        tokio::task::block_in_place(|| transcript(&path, &["--tenant", "sim", &a.id]));
    // A result that cannot be read (the scenario has malformed transcripts) is shown as an
    // error among the others, and the exit status says so.
    let unreadable = out.matches("\nerror: ").count();
    if unreadable == 0 {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(code, 1);
        assert_eq!(
            error_line(&err),
            format!(
                "mde-liveresponse-exporter: {unreadable} result(s) could not be read (see above)"
            )
        );
    }
    assert_eq!(
        out.matches("\n--- index ").count(),
        a.commands.len(),
        "{out}"
    );
    assert!(out.contains("no result: the command is"), "{out}");
}

#[test]
fn transcript_needs_a_config_file() {
    let out = Command::new(BIN)
        .args(["transcript", "--tenant", "x", "some-id"])
        .env_remove("MDE_EXPORTER_CONFIG_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "mde-liveresponse-exporter: transcript needs --config.file (the tenants and their credentials)"
    );
}
