//! The simulated tenant: machines and machine actions generated deterministically from the
//! seed, each with its final outcome fixed up front (statuses, commands, transcripts, GetFile
//! blobs), and the JSON view of an action as the API serves it at a given moment (Pending →
//! InProgress → final on the simulator clock).
//!
//! Owns what exists and what it looks like; does not own HTTP, quota or faults (see `gate`, `respond` and the handlers).

use std::io::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::SimConfig;
use super::filter::{Field, Record};

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

/// A command result stored in the fake blob container.
#[derive(Debug, Clone)]
pub enum Blob {
    /// A RunScript transcript, served uncompressed.
    Transcript {
        bytes: Vec<u8>,
        script: String,
        exit_code: i64,
        errors_present: bool,
        /// The bytes are not valid transcript JSON.
        malformed: bool,
    },
    /// A GetFile result: one gzip stream.
    File { gz: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct SimCommand {
    pub index: u32,
    pub kind: &'static str,
    pub params: Vec<(&'static str, String)>,
    /// `commandStatus` once the action is final (`Created` before).
    pub status: &'static str,
    pub errors: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Last path segment of the blob (`{index}-{hex}`); results exist only when Completed.
    pub blob_name: String,
    pub blob: Option<Blob>,
}

#[derive(Debug, Clone)]
pub struct SimAction {
    pub id: String,
    pub kind: &'static str,
    pub requestor: &'static str,
    pub comment: &'static str,
    pub machine_id: String,
    pub dns: String,
    pub scope: Option<&'static str>,
    pub created: DateTime<Utc>,
    /// Wall time it turned InProgress.
    pub started: DateTime<Utc>,
    /// Wall time it became final.
    pub finished: DateTime<Utc>,
    /// Simulator-clock offset at which it turns InProgress (zero: already at start).
    pub started_after: Duration,
    /// Simulator-clock offset at which it becomes final (zero: already final at start).
    pub final_after: Duration,
    /// The final status.
    pub status: &'static str,
    pub commands: Vec<SimCommand>,
}

impl SimAction {
    pub fn is_final_at(&self, elapsed: Duration) -> bool {
        elapsed >= self.final_after
    }

    pub fn is_live_response(&self) -> bool {
        self.kind == "LiveResponse"
    }

    pub fn status_at(&self, elapsed: Duration) -> &'static str {
        if self.is_final_at(elapsed) {
            self.status
        } else if elapsed >= self.started_after {
            "InProgress"
        } else {
            "Pending"
        }
    }

    /// The entity as served at `elapsed` on the simulator clock.
    pub fn view(&self, elapsed: Duration, context: Option<String>) -> ActionJson<'_> {
        let status = self.status_at(elapsed);
        let is_final = self.is_final_at(elapsed);
        let last_update = match status {
            "Pending" => self.created,
            "InProgress" => self.started,
            _ => self.finished,
        };
        let cancelled = status == "Cancelled";
        ActionJson {
            context,
            id: &self.id,
            kind: self.kind,
            title: None,
            requestor: self.requestor,
            requestor_comment: self.comment,
            status,
            machine_id: &self.machine_id,
            computer_dns_name: &self.dns,
            creation_date_time_utc: iso(self.created),
            last_update_date_time_utc: iso(last_update),
            cancellation_requestor: cancelled.then_some("analyst@contoso.com"),
            cancellation_comment: cancelled.then_some("No longer needed"),
            cancellation_date_time_utc: cancelled.then(|| iso(self.finished)),
            error_h_result: 0,
            scope: self.scope,
            external_id: None,
            request_source: "PublicApi",
            related_file_info: None,
            commands: self
                .commands
                .iter()
                .map(|c| CommandJson {
                    index: c.index,
                    start_time: c.start.filter(|_| is_final).map(iso),
                    end_time: c.end.filter(|_| is_final).map(iso),
                    command_status: if is_final { c.status } else { "Created" },
                    errors: if is_final { &c.errors } else { &[] },
                    command: CommandSpecJson {
                        kind: c.kind,
                        params: c
                            .params
                            .iter()
                            .map(|(k, v)| ParamJson { key: k, value: v })
                            .collect(),
                    },
                })
                .collect(),
            troubleshoot_info: None,
            created: self.created,
        }
    }
}

/// A machine action in the live API's field order (see the spec's field table).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionJson<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub title: Option<&'a str>,
    pub requestor: &'a str,
    pub requestor_comment: &'a str,
    pub status: &'a str,
    pub machine_id: &'a str,
    pub computer_dns_name: &'a str,
    pub creation_date_time_utc: String,
    pub last_update_date_time_utc: String,
    pub cancellation_requestor: Option<&'a str>,
    pub cancellation_comment: Option<&'a str>,
    pub cancellation_date_time_utc: Option<String>,
    pub error_h_result: i64,
    pub scope: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub request_source: &'a str,
    pub related_file_info: Option<()>,
    pub commands: Vec<CommandJson<'a>>,
    pub troubleshoot_info: Option<()>,
    /// For `$filter`/`$orderby`; not serialized (the string above is).
    #[serde(skip)]
    pub created: DateTime<Utc>,
}

impl Record for ActionJson<'_> {
    fn text(&self, field: Field) -> &str {
        match field {
            Field::Id => self.id,
            Field::Status => self.status,
            Field::MachineId => self.machine_id,
            Field::Type => self.kind,
            Field::Requestor => self.requestor,
            Field::CreationDateTimeUtc => "",
        }
    }
    fn created(&self) -> DateTime<Utc> {
        self.created
    }
}

/// What `$filter` sees of an action at a moment, without rendering the whole entity.
pub struct Head<'a> {
    a: &'a SimAction,
    status: &'static str,
}

impl<'a> Head<'a> {
    pub fn new(a: &'a SimAction, elapsed: Duration) -> Self {
        Head {
            a,
            status: a.status_at(elapsed),
        }
    }
}

impl Record for Head<'_> {
    fn text(&self, field: Field) -> &str {
        match field {
            Field::Id => &self.a.id,
            Field::Status => self.status,
            Field::MachineId => &self.a.machine_id,
            Field::Type => self.a.kind,
            Field::Requestor => self.a.requestor,
            Field::CreationDateTimeUtc => "",
        }
    }
    fn created(&self) -> DateTime<Utc> {
        self.a.created
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandJson<'a> {
    pub index: u32,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub command_status: &'a str,
    pub errors: &'a [String],
    pub command: CommandSpecJson<'a>,
}

#[derive(Debug, Serialize)]
pub struct CommandSpecJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub params: Vec<ParamJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ParamJson<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// ISO 8601 with seven fractional digits and `Z`, as the API writes it.
pub fn iso(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

pub fn guid(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

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

fn transcript(rng: &mut StdRng, script: &str, dns: &str) -> Blob {
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
    let mut output = format!(
        "Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced \
         Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{}.txt\n",
        guid(rng).to_uppercase()
    );
    output.push_str(&format!("Running {script} on {dns}\n"));
    match script {
        "check-bitlocker.ps1" => output.push_str("MountPoint : C:\nProtectionStatus : On\n"),
        "get-av-status.ps1" => output.push_str("AMRunningMode : Normal\nAntivirusEnabled : True\n"),
        _ => output.push_str(&format!("Collected {} items\n", rng.random_range(1..500))),
    }
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
                    Some(transcript(&mut rng, &script, &dns))
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
                        Some(transcript(rng, &script, &dns))
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

/// A gzip stream of `mib` MiB of zeros, a few KiB per MiB on the wire, built without
/// compressing all of it: a sync-flushed deflate block of 1 MiB of zeros whose back-references
/// stay inside the (all-zero) window can be repeated as often as wanted.
pub fn gzip_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut c = Compress::new(Compression::best(), false);
    let mut block = |input: &[u8], flush: FlushCompress| -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        let before = c.total_in();
        let mut fed = 0;
        loop {
            out.reserve(64 * 1024);
            let _ = c.compress_vec(&input[fed..], &mut out, flush);
            fed = usize::try_from(c.total_in() - before).unwrap_or(input.len());
            // Done once all input is in and the flush left spare room in the buffer.
            if fed >= input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    };
    let first = block(&zeros, FlushCompress::Sync);
    let repeat = block(&zeros, FlushCompress::Sync);
    let end = block(&[], FlushCompress::Finish);
    let mut crc_mib = Crc::new();
    crc_mib.update(&zeros);
    let mut crc = Crc::new();
    let mut body = Vec::with_capacity(first.len() + repeat.len() * mib + end.len() + 18);
    body.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    if mib > 0 {
        body.extend_from_slice(&first);
        crc.combine(&crc_mib);
    }
    for _ in 1..mib {
        body.extend_from_slice(&repeat);
        crc.combine(&crc_mib);
    }
    body.extend_from_slice(&end);
    body.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    body.extend_from_slice(&(crc.amount().to_le_bytes()));
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Read as _;

    use super::*;

    fn anchor() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00.1234567Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_same_seed_gives_the_same_tenant() {
        let a = generate(&SimConfig::default(), anchor());
        let b = generate(&SimConfig::default(), anchor());
        let ids = |v: &[SimAction]| {
            v.iter()
                .map(|a| (a.id.clone(), a.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        let c = generate(
            &SimConfig {
                seed: 43,
                ..SimConfig::default()
            },
            anchor(),
        );
        assert_ne!(ids(&a), ids(&c));
    }

    #[test]
    fn the_default_scenario_has_every_status_and_command_shape() {
        let cfg = SimConfig::default();
        let actions = generate(&cfg, anchor());
        assert_eq!(actions.iter().filter(|a| a.is_live_response()).count(), 80);
        assert_eq!(actions.len(), 88);
        let at_start: BTreeSet<&str> = actions
            .iter()
            .map(|a| a.status_at(Duration::ZERO))
            .collect();
        let all = [
            "Cancelled",
            "Failed",
            "InProgress",
            "Pending",
            "Succeeded",
            "TimeOut",
        ];
        assert_eq!(at_start, all.into_iter().collect());
        let kinds: BTreeSet<&str> = actions
            .iter()
            .flat_map(|a| a.commands.iter().map(|c| c.kind))
            .collect();
        assert_eq!(
            kinds,
            ["GetFile", "PutFile", "RunScript"].into_iter().collect()
        );
        let scripts: BTreeSet<String> = actions
            .iter()
            .flat_map(|a| a.commands.iter())
            .filter_map(|c| match &c.blob {
                Some(Blob::Transcript { script, .. }) => Some(script.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(scripts.len(), SCRIPTS.len(), "{scripts:?}");
        assert!(
            actions
                .iter()
                .any(|a| a.commands.iter().filter(|c| c.kind == "RunScript").count() > 1)
        );
        // After `finish_within`, everything is final.
        assert!(actions.iter().all(|a| a.is_final_at(cfg.finish_within)));
        assert!(actions.windows(2).all(|w| w[0].created <= w[1].created));
    }

    #[test]
    fn command_states_follow_the_action_outcome() {
        for a in generate(
            &SimConfig {
                actions: 300,
                ..SimConfig::default()
            },
            anchor(),
        ) {
            let order: Vec<u8> = a
                .commands
                .iter()
                .map(|c| match c.kind {
                    "PutFile" => 0,
                    "RunScript" => 1,
                    _ => 2,
                })
                .collect();
            assert!(order.is_sorted(), "documented command order");
            let st: Vec<&str> = a.commands.iter().map(|c| c.status).collect();
            match a.status {
                "Succeeded" => assert!(st.iter().all(|s| *s == "Completed")),
                "Failed" if a.is_live_response() => {
                    let f = st.iter().position(|s| *s == "Failed").unwrap();
                    assert!(st[..f].iter().all(|s| *s == "Completed"));
                    assert!(st[f + 1..].iter().all(|s| *s == "Created"));
                    assert!(!a.commands[f].errors.is_empty());
                }
                _ => assert!(!st.contains(&"Failed")),
            }
            for c in &a.commands {
                assert_eq!(
                    c.blob.is_some(),
                    c.status == "Completed" && c.kind != "PutFile"
                );
                if let (Some(s), Some(e)) = (c.start, c.end) {
                    assert!(a.created <= s && s < e && e <= a.finished, "{a:?}");
                }
                if let Some(Blob::Transcript {
                    bytes,
                    malformed,
                    exit_code,
                    ..
                }) = &c.blob
                {
                    let parsed = serde_json::from_slice::<serde_json::Value>(bytes);
                    assert_eq!(parsed.is_err(), *malformed);
                    if let Ok(v) = parsed {
                        assert_eq!(v["exit_code"], *exit_code);
                        assert!(
                            v["script_output"].as_str().unwrap().starts_with(
                                "Transcript started, output file is C:\\ProgramData\\"
                            )
                        );
                    }
                }
            }
        }
    }

    // See: #9
    #[test]
    fn queued_and_not_run_shapes_are_added_without_changing_the_rest() {
        let base = generate(&SimConfig::default(), anchor());
        let cfg = SimConfig {
            queued_for_days: 4,
            not_run: 8,
            ..SimConfig::default()
        };
        let more = generate(&cfg, anchor());
        assert_eq!(more.len(), base.len() + 12);
        for a in &base {
            assert!(
                more.iter().any(|b| b.id == a.id),
                "the seed's scenario is kept"
            );
        }
        let queued: Vec<&SimAction> = more
            .iter()
            .filter(|a| anchor() - a.created > chrono::Duration::days(1))
            .collect();
        assert_eq!(queued.len(), 4);
        for a in &queued {
            assert_eq!(a.status_at(Duration::ZERO), "Pending");
            assert!(a.is_final_at(cfg.finish_within));
        }
        assert!(queued.iter().any(|a| a.status == "TimeOut"));
        let failed_before_running = more
            .iter()
            .flat_map(|a| a.commands.iter())
            .filter(|c| c.kind == "RunScript" && c.status == "Failed" && c.start.is_none())
            .count();
        assert_eq!(failed_before_running, 2);
    }

    #[test]
    fn the_entity_keeps_the_api_field_order() {
        let actions = generate(&SimConfig::default(), anchor());
        let text =
            serde_json::to_string(&actions[0].view(Duration::ZERO, Some("ctx".into()))).unwrap();
        let fields = [
            "@odata.context",
            "id",
            "type",
            "title",
            "requestor",
            "requestorComment",
            "status",
            "machineId",
            "computerDnsName",
            "creationDateTimeUtc",
            "lastUpdateDateTimeUtc",
            "cancellationRequestor",
            "cancellationComment",
            "cancellationDateTimeUtc",
            "errorHResult",
            "scope",
            "externalId",
            "requestSource",
            "relatedFileInfo",
            "commands",
            "troubleshootInfo",
        ];
        let pos: Vec<usize> = fields
            .iter()
            .map(|f| {
                text.find(&format!("\"{f}\":"))
                    .unwrap_or_else(|| panic!("{f} in {text}"))
            })
            .collect();
        assert!(pos.is_sorted(), "{text}");
        assert!(!text.contains("\"created\""));
        assert_eq!(iso(anchor()), "2026-01-01T12:00:00.1234567Z");
    }

    #[test]
    fn the_gzip_bomb_is_small_and_inflates_to_what_it_claims() {
        let bomb = gzip_bomb(8);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bomb[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 8 << 20);
        assert!(out.iter().all(|b| *b == 0));
    }
}
