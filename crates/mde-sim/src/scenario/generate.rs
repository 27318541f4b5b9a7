//! The seeded draw of the tenant: machines, the plan of each action (final before start,
//! finishing later, never finishing), its commands, transcripts and GetFile blobs, and the extra
//! actions of the config (queued for days, RunScript commands that never ran).
//!
//! Owns the draw; the same seed gives the same tenant. Does not own the types (`model`) or their
//! encodings (`encode`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::encode::{guid, gzip, hex};
use super::model::{Blob, SimAction, SimCommand};
use super::printed::printed;
use crate::SimConfig;

/// The scripts of the tenant's Live Response library.
pub const SCRIPTS: &[&str] = &[
    "collect-triage.ps1",
    "check-bitlocker.ps1",
    "get-av-status.ps1",
    "hunt-persistence.ps1",
    "restart-sensor.ps1",
    "legacy-inventory.ps1",
];
/// Its transcripts are cut short: not valid JSON.
pub const MALFORMED_SCRIPT: &str = "legacy-inventory.ps1";
pub const REQUESTORS: &[&str] = &["prom-mde-exporter", "soc-automation", "analyst@contoso.com"];
const COMMENTS: &[&str] = &[
    "collect triage",
    "scheduled health check",
    "incident follow-up",
    "weekly compliance sweep",
];
const GET_PATHS: &[&str] = &[
    "C:\\Windows\\Temp\\triage.zip",
    "C:\\ProgramData\\Contoso\\inventory.csv",
    "C:\\Windows\\System32\\winevt\\Logs\\Security.evtx",
];
const PUT_FILES: &[&str] = &["helper-functions.ps1", "autoruns.exe", "yara-rules.zip"];

fn micros(d: Duration) -> chrono::Duration {
    chrono::Duration::microseconds(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The outcome drawn for one action.
#[derive(Clone, Copy)]
enum Plan {
    /// Final before the simulator starts.
    Done(&'static str),
    /// Becomes final (with this status) within `finish_within`; InProgress from the start
    /// when `started` is true, else Pending first.
    Running { status: &'static str, started: bool },
}

fn draw_plan(rng: &mut StdRng, n: usize) -> Plan {
    // The first six cover every status, so even small scenarios show them all.
    match n {
        0 => return Plan::Done("Succeeded"),
        1 => return Plan::Done("Failed"),
        2 => return Plan::Done("TimeOut"),
        3 => return Plan::Done("Cancelled"),
        4 => {
            return Plan::Running {
                status: "Succeeded",
                started: false,
            };
        }
        5 => {
            return Plan::Running {
                status: "Failed",
                started: true,
            };
        }
        _ => {}
    }
    match rng.random_range(0..100) {
        0..58 => Plan::Done("Succeeded"),
        58..70 => Plan::Done("Failed"),
        70..76 => Plan::Done("TimeOut"),
        76..81 => Plan::Done("Cancelled"),
        roll => {
            let started = rng.random_bool(0.5);
            let status = match roll {
                81..95 => "Succeeded",
                95..98 => "Failed",
                // Queued on an offline device until it expires.
                _ if !started => "TimeOut",
                _ => "Failed",
            };
            Plan::Running { status, started }
        }
    }
}

/// The commands of a Live Response action, in the documented order PutFile*, RunScript*,
/// GetFile*.
fn draw_commands(rng: &mut StdRng, n: usize) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let (puts, runs, gets) = if n == 0 {
        (1, 1, 1)
    } else {
        let puts = usize::from(rng.random_bool(0.3));
        let gets = usize::from(rng.random_bool(0.35));
        let runs = if gets > 0 && rng.random_bool(0.3) {
            0
        } else {
            match rng.random_range(0..10) {
                0..6 => 1,
                6..9 => 2,
                _ => 3,
            }
        };
        (puts, runs, gets)
    };
    let mut out = Vec::new();
    for _ in 0..puts {
        let file = PUT_FILES[rng.random_range(0..PUT_FILES.len())];
        out.push(("PutFile", vec![("FileName", file.to_string())]));
    }
    for _ in 0..runs {
        let script = SCRIPTS[rng.random_range(0..SCRIPTS.len())];
        let mut params = vec![("ScriptName", script.to_string())];
        match rng.random_range(0..3) {
            0 => params.push(("Args", "-Quick".to_string())),
            1 => params.push(("Args", "--noargs".to_string())),
            _ => {}
        }
        out.push(("RunScript", params));
    }
    for _ in 0..gets {
        let path = GET_PATHS[rng.random_range(0..GET_PATHS.len())];
        out.push(("GetFile", vec![("Path", path.to_string())]));
    }
    out
}

pub(super) fn transcript(rng: &mut StdRng, script: &str, dns: &str, script_metrics: bool) -> Blob {
    let exit_code: i64 = match rng.random_range(0..10) {
        0..7 => 0,
        7 => 1,
        8 => 2,
        _ => 5,
    };
    // Errors on stderr do not imply a non-zero exit code, nor the other way round.
    let errors = if rng.random_range(0..5) == 0 || (exit_code != 0 && rng.random_bool(0.5)) {
        format!(
            "{script} : Access to the registry key 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso' is denied.\r\n\
             At C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Downloads\\{script}:12 char:5\r\n"
        )
    } else {
        String::new()
    };
    let id = guid(rng).to_uppercase();
    let mut output = format!(
        "Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced \
         Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{id}.txt\n",
    );
    output.push_str(&format!("Running {script} on {dns}\n"));
    // The scripts of the script_metrics scenario report their findings (#21).
    let reported = script_metrics.then(|| printed(script, &id, dns)).flatten();
    let samples = if let Some((lines, samples)) = reported {
        output.push_str(&lines);
        samples
    } else {
        match script {
            "check-bitlocker.ps1" => output.push_str("MountPoint : C:\nProtectionStatus : On\n"),
            "get-av-status.ps1" => {
                output.push_str("AMRunningMode : Normal\nAntivirusEnabled : True\n")
            }
            _ => output.push_str(&format!("Collected {} items\n", rng.random_range(1..500))),
        }
        Vec::new()
    };
    if rng.random_range(0..4) == 0 {
        output.push_str("Résumé: café, 日本語のファイル名 \u{0}binary\u{0} tail\n");
    }
    output.push_str("Transcript ended.\n");
    let malformed = script == MALFORMED_SCRIPT;
    let bytes = if malformed {
        // An old script writes its own half-JSON and is killed mid-way.
        format!(
            "{{\"script_name\":\"{script}\",\"exit_code\":{exit_code},\"script_output\":\"Transcript started, out"
        )
        .into_bytes()
    } else {
        serde_json::json!({
            "script_name": script,
            "exit_code": exit_code,
            "script_output": output,
            "script_errors": errors,
        })
        .to_string()
        .into_bytes()
    };
    Blob::Transcript {
        bytes,
        script: script.to_string(),
        exit_code,
        errors_present: !errors.is_empty(),
        malformed,
        printed: if malformed { Vec::new() } else { samples },
    }
}

fn file_blob(rng: &mut StdRng) -> Blob {
    let rows = rng.random_range(5..400);
    let mut data = String::from("TimeCreated,Id,ProviderName,Message\n");
    for i in 0..rows {
        data.push_str(&format!(
            "2025-03-18T21:{:02}:{:02}Z,{},Microsoft-Windows-Security-Auditing,event {i} {}\n",
            i % 60,
            rng.random_range(0..60),
            rng.random_range(4600..4800),
            hex(rng, 16)
        ));
    }
    Blob::File {
        gz: gzip(data.as_bytes()),
    }
}

fn failure_message(kind: &str, params: &[(&'static str, String)]) -> String {
    let arg = params.first().map(|(_, v)| v.as_str()).unwrap_or_default();
    match kind {
        "PutFile" => format!("File '{arg}' was not found in the library"),
        "GetFile" => format!("Could not find file '{arg}'"),
        _ => format!("Script execution failed: {arg} terminated unexpectedly"),
    }
}

/// Every action of the scenario, ordered by creation time (then id).
pub fn generate(cfg: &SimConfig, anchor: DateTime<Utc>) -> Vec<SimAction> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut groups = [
        ("ws-eng", 0u32, 3usize),
        ("srv-sql", 0, 2),
        ("ws-fin", 0, 3),
    ];
    let machines: Vec<(String, String)> = (0..cfg.machines.max(1))
        .map(|i| {
            let g = &mut groups[if i % 4 == 1 {
                1
            } else if i % 4 == 3 {
                2
            } else {
                0
            }];
            g.1 += 1;
            let dns = format!("{}-{:0w$}.contoso.com", g.0, g.1, w = g.2);
            (hex(&mut rng, 40), dns)
        })
        .collect();
    let history_us = i64::try_from(cfg.history.as_micros())
        .unwrap_or(i64::MAX)
        .max(600_000_001);
    let finish_us = u64::try_from(cfg.finish_within.as_micros())
        .unwrap_or(u64::MAX)
        .max(20);
    let extra = cfg.actions / 10;
    let mut actions = Vec::with_capacity(cfg.actions + extra);
    for n in 0..cfg.actions + extra {
        let live = n < cfg.actions;
        let (machine_id, dns) = machines[rng.random_range(0..machines.len())].clone();
        let id = guid(&mut rng);
        let requestor = REQUESTORS[rng.random_range(0..REQUESTORS.len())];
        let plan = draw_plan(&mut rng, if live { n } else { usize::MAX });
        let (created, started, finished, started_after, final_after, status) = match plan {
            Plan::Done(status) => {
                let created = anchor
                    - chrono::Duration::microseconds(rng.random_range(600_000_000..history_us));
                let started = created
                    + chrono::Duration::microseconds(rng.random_range(1_000_000..30_000_000));
                let finished = started
                    + chrono::Duration::microseconds(rng.random_range(20_000_000..550_000_000));
                (
                    created,
                    started,
                    finished,
                    Duration::ZERO,
                    Duration::ZERO,
                    status,
                )
            }
            Plan::Running { status, started } => {
                // The two that show Pending and InProgress stay so for a while, so a client
                // that starts right away still sees them.
                let lowest = if n < 6 { finish_us / 2 } else { finish_us / 20 };
                let final_after = Duration::from_micros(rng.random_range(lowest..finish_us));
                let started_after = if started {
                    Duration::ZERO
                } else {
                    final_after.mul_f64(rng.random_range(if n < 6 { 0.5 } else { 0.2 }..0.8))
                };
                let started_after = Duration::from_micros(
                    u64::try_from(started_after.as_micros()).unwrap_or(u64::MAX),
                );
                let created = anchor
                    - chrono::Duration::microseconds(rng.random_range(10_000_000..1_800_000_000));
                let started_wall = if started {
                    created + chrono::Duration::microseconds(rng.random_range(1_000_000..5_000_000))
                } else {
                    anchor + micros(started_after)
                };
                (
                    created,
                    started_wall,
                    anchor + micros(final_after),
                    started_after,
                    final_after,
                    status,
                )
            }
        };
        let commands = if live {
            draw_commands(&mut rng, n)
        } else {
            Vec::new()
        };
        let ncmd = commands.len();
        // The command that failed, or where a timeout or cancellation stopped the action.
        let stop_at = if ncmd == 0 {
            0
        } else {
            rng.random_range(0..ncmd)
        };
        let span = (finished - started).num_microseconds().unwrap_or(0).max(1);
        let slot = span / i64::try_from(ncmd.max(1)).unwrap_or(1);
        let mut cmds = Vec::with_capacity(ncmd);
        for (i, (kind, params)) in commands.into_iter().enumerate() {
            let status = match status {
                "Succeeded" => "Completed",
                "Failed" if i < stop_at => "Completed",
                "Failed" if i == stop_at => "Failed",
                "TimeOut" | "Cancelled" if i < stop_at => "Completed",
                _ => "Created",
            };
            let (start, end) = if status == "Created" {
                (None, None)
            } else {
                let begin = started + chrono::Duration::microseconds(slot * i as i64);
                let len = rng.random_range(slot / 4..=slot * 9 / 10).max(1);
                (
                    Some(begin),
                    Some(begin + chrono::Duration::microseconds(len)),
                )
            };
            let errors = if status == "Failed" {
                vec![failure_message(kind, &params)]
            } else {
                Vec::new()
            };
            let blob = match (status, kind) {
                ("Completed", "RunScript") => {
                    let script = params.first().map(|(_, s)| s.clone()).unwrap_or_default();
                    Some(transcript(&mut rng, &script, &dns, cfg.script_metrics))
                }
                ("Completed", "GetFile") => Some(file_blob(&mut rng)),
                _ => None,
            };
            cmds.push(SimCommand {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                kind,
                params,
                status,
                errors,
                start,
                end,
                blob_name: format!("{i}-{}", hex(&mut rng, 32)),
                blob,
            });
        }
        let (kind, scope) = if live {
            ("LiveResponse", None)
        } else {
            match n % 4 {
                0 => (
                    "Isolate",
                    Some(if rng.random_bool(0.5) {
                        "Full"
                    } else {
                        "Selective"
                    }),
                ),
                1 => (
                    "RunAntiVirusScan",
                    Some(if rng.random_bool(0.7) {
                        "Quick"
                    } else {
                        "Full"
                    }),
                ),
                2 => ("CollectInvestigationPackage", None),
                _ => ("Unisolate", None),
            }
        };
        actions.push(SimAction {
            id,
            kind,
            requestor,
            comment: COMMENTS[rng.random_range(0..COMMENTS.len())],
            machine_id,
            dns,
            scope,
            created,
            started,
            finished,
            started_after,
            final_after,
            status,
            commands: cmds,
        });
    }
    // The #9 shapes come from an rng of their own, so that scenarios without them stay as
    // they were for a given seed.
    extra_actions(cfg, anchor, &machines, &mut actions);
    actions.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    actions
}

/// (type, params, final commandStatus) of one command of an extra action.
type CommandPlan = (&'static str, Vec<(&'static str, String)>, &'static str);

/// Actions queued for days, and RunScript commands that never ran (see [`SimConfig`]).
fn extra_actions(
    cfg: &SimConfig,
    anchor: DateTime<Utc>,
    machines: &[(String, String)],
    actions: &mut Vec<SimAction>,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x9_9999);
    let finish_us = u64::try_from(cfg.finish_within.as_micros())
        .unwrap_or(u64::MAX)
        .max(20);
    let day_us: i64 = 86_400_000_000;
    let mut push = |rng: &mut StdRng,
                    created: DateTime<Utc>,
                    final_after: Duration,
                    status: &'static str,
                    cmds: Vec<CommandPlan>| {
        let (machine_id, dns) = machines[rng.random_range(0..machines.len())].clone();
        let (started, finished, started_after) = if final_after.is_zero() {
            let started = created + chrono::Duration::seconds(5);
            (
                started,
                started + chrono::Duration::seconds(60),
                Duration::ZERO,
            )
        } else {
            let started_after = final_after / 2;
            (
                anchor + micros(started_after),
                anchor + micros(final_after),
                started_after,
            )
        };
        let n = cmds.len().max(1) as i64;
        let slot = ((finished - started).num_microseconds().unwrap_or(1) / n).max(1);
        let commands = cmds
            .into_iter()
            .enumerate()
            .map(|(i, (kind, params, status))| {
                let ran = status == "Completed";
                let begin = started + chrono::Duration::microseconds(slot * i as i64);
                let blob = match (ran, kind) {
                    (true, "RunScript") => {
                        let script = params.first().map(|(_, s)| s.clone()).unwrap_or_default();
                        Some(transcript(rng, &script, &dns, cfg.script_metrics))
                    }
                    (true, "GetFile") => Some(file_blob(rng)),
                    _ => None,
                };
                let errors = match (status, kind) {
                    ("Failed", "RunScript") => vec![format!(
                        "Script '{}' was not found in the library",
                        params.first().map(|(_, s)| s.as_str()).unwrap_or_default()
                    )],
                    ("Failed", _) => vec![failure_message(kind, &params)],
                    _ => Vec::new(),
                };
                SimCommand {
                    index: i as u32,
                    kind,
                    params,
                    status,
                    errors,
                    // A command that failed before running has no start.
                    start: ran.then_some(begin),
                    end: ran.then(|| begin + chrono::Duration::microseconds(slot / 2)),
                    blob_name: format!("{i}-{}", hex(rng, 32)),
                    blob,
                }
            })
            .collect();
        actions.push(SimAction {
            id: guid(rng),
            kind: "LiveResponse",
            requestor: REQUESTORS[0],
            comment: COMMENTS[0],
            machine_id,
            dns,
            scope: None,
            created,
            started,
            finished,
            started_after,
            final_after,
            status,
            commands,
        });
    };
    let script = |rng: &mut StdRng| SCRIPTS[rng.random_range(0..SCRIPTS.len() - 1)].to_string();
    for i in 0..cfg.queued_for_days {
        let created = anchor - chrono::Duration::microseconds(rng.random_range(day_us..3 * day_us));
        let final_after = Duration::from_micros(rng.random_range(finish_us / 4..finish_us));
        let timed_out = i % 4 == 3;
        let (status, cmd) = if timed_out {
            ("TimeOut", "Created")
        } else {
            ("Succeeded", "Completed")
        };
        let s = script(&mut rng);
        push(
            &mut rng,
            created,
            final_after,
            status,
            vec![("RunScript", vec![("ScriptName", s)], cmd)],
        );
    }
    for i in 0..cfg.not_run {
        let created =
            anchor - chrono::Duration::microseconds(rng.random_range(60_000_000..3_600_000_000));
        let final_after = if i % 2 == 1 {
            Duration::from_micros(rng.random_range(finish_us / 2..finish_us))
        } else {
            Duration::ZERO
        };
        let s = script(&mut rng);
        let run = |status| ("RunScript", vec![("ScriptName", s.clone())], status);
        let (status, cmds) = match i % 4 {
            0 => ("Failed", vec![run("Failed")]),
            1 => ("TimeOut", vec![run("Created")]),
            2 => ("Cancelled", vec![run("Created"), run("Created")]),
            _ => (
                "Failed",
                vec![
                    (
                        "PutFile",
                        vec![("FileName", PUT_FILES[0].to_string())],
                        "Failed",
                    ),
                    run("Created"),
                ],
            ),
        };
        push(&mut rng, created, final_after, status, cmds);
    }
}
