//! A faithful MDE Live Response API simulator: token endpoints (v1, v2), machine actions
//! (list with OData `$filter`/`$top`/`$skip`/nextLink, get), result download links, SAS blob
//! storage with expiry, per-endpoint sliding-window throttling with the `"429"` body, and
//! fault injection. Driven by a seeded scenario, on a `tokio::time` clock so tests can pause.
//!
//! Owns the fake API only; the exporter never depends on it except in `--demo` and tests.

// Handlers short-circuit with the `Response` to send; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod filter;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Scenario and behaviour of the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub machines: usize,
    /// Live Response actions (about 10% more non-Live-Response actions are added).
    pub actions: usize,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Per endpoint and client, in `minute`.
    pub per_minute: u32,
    /// Per endpoint and client, in `hour`.
    pub per_hour: u32,
    pub minute: Duration,
    pub hour: Duration,
    pub link_ttl: Duration,
    pub token_ttl: Duration,
    /// Server page size when `$top` is absent or larger.
    pub page_size: usize,
    /// Actions not final at start become final within this horizon.
    pub finish_within: Duration,
    /// Creation times of already-final actions spread over this past.
    pub history: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            machines: 25,
            actions: 80,
            tenant_id: "00000000-0000-4000-8000-000000005e70".into(),
            client_id: "11111111-1111-4111-8111-111111111111".into(),
            client_secret: "sim-client-secret".into(),
            per_minute: 100,
            per_hour: 1500,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
            link_ttl: Duration::from_secs(30 * 60),
            token_ttl: Duration::from_secs(3599),
            page_size: 100,
            finish_within: Duration::from_secs(60),
            history: Duration::from_secs(12 * 3600),
        }
    }
}

impl SimConfig {
    /// Divide every duration that drives behaviour by `factor` (60: a minute lasts 1 s).
    pub fn time_scaled(mut self, factor: f64) -> Self {
        let f = factor.max(0.001);
        self.minute = self.minute.div_f64(f);
        self.hour = self.hour.div_f64(f);
        self.link_ttl = self.link_ttl.div_f64(f);
        self.token_ttl = self.token_ttl.div_f64(f);
        self.finish_within = self.finish_within.div_f64(f);
        self
    }
}

/// What a download can be made to return instead of the blob.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobFault {
    NotFound,
    /// A `Content-Length` larger than the bytes sent, then the connection ends.
    Truncated,
    /// 200 with bytes that are no transcript.
    Garbage,
    /// 200 with this many bytes of valid-looking transcript.
    Huge(usize),
    /// A small gzip stream that inflates to a gigabyte.
    GzipBomb,
}

#[derive(Debug, Clone)]
enum Blob {
    Transcript { bytes: Vec<u8> },
    File { gz: Vec<u8> },
}

#[derive(Debug, Clone)]
struct SimCommand {
    index: u32,
    kind: &'static str,
    params: Vec<(&'static str, String)>,
    /// Status once the action is final.
    status: &'static str,
    errors: Vec<String>,
    end: Option<DateTime<Utc>>,
    blob: Option<Blob>,
    script: Option<String>,
    exit_code: i64,
    errors_present: bool,
    malformed: bool,
}

#[derive(Debug, Clone)]
struct SimAction {
    id: String,
    kind: &'static str,
    requestor: &'static str,
    machine_id: String,
    dns: String,
    created: DateTime<Utc>,
    finished: DateTime<Utc>,
    /// Sim time after start when the action becomes final (zero: final from the start).
    final_after: Duration,
    status: &'static str,
    commands: Vec<SimCommand>,
}

/// Ground truth of what is final now.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub actions: Vec<TruthAction>,
    pub transcripts: Vec<TruthTranscript>,
    pub files: Vec<TruthFile>,
}

#[derive(Debug, Clone)]
pub struct TruthAction {
    pub id: String,
    pub machine_id: String,
    pub computer_dns_name: String,
    pub status: String,
    pub requestor: String,
    pub commands: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct TruthTranscript {
    pub action_id: String,
    pub index: u32,
    pub machine: String,
    pub script: String,
    pub exit_code: i64,
    pub errors_present: bool,
    pub end_time: DateTime<Utc>,
    pub malformed: bool,
}

#[derive(Debug, Clone)]
pub struct TruthFile {
    pub action_id: String,
    pub index: u32,
    pub compressed_bytes: u64,
}

impl Truth {
    pub fn runs_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|_| true)
    }
    pub fn failures_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|t| t.exit_code != 0)
    }
    pub fn errors_by_script(&self) -> BTreeMap<String, u64> {
        self.count(|t| t.errors_present)
    }
    fn count(&self, f: impl Fn(&TruthTranscript) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.transcripts.iter().filter(|t| !t.malformed && f(t)) {
            *out.entry(t.script.clone()).or_insert(0) += 1;
        }
        out
    }
    pub fn last_by_machine_script(&self) -> BTreeMap<(String, String), TruthTranscript> {
        let mut out: BTreeMap<(String, String), TruthTranscript> = BTreeMap::new();
        for t in self.transcripts.iter().filter(|t| !t.malformed) {
            let key = (t.machine.clone(), t.script.clone());
            if out.get(&key).is_none_or(|e| e.end_time <= t.end_time) {
                out.insert(key, t.clone());
            }
        }
        out
    }
    pub fn actions_by_status(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in &self.actions {
            *out.entry(a.status.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// What was called so far.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: BTreeMap<String, u64>,
    pub throttled: BTreeMap<String, u64>,
    pub link_requests: BTreeMap<(String, u32), u64>,
    pub downloads: BTreeMap<(String, u32), u64>,
    pub expired_downloads: u64,
}

#[derive(Debug, Default)]
struct FaultState {
    fail_next: HashMap<String, VecDeque<u16>>,
    throttle_next: HashMap<String, VecDeque<Option<u64>>>,
    expire_links: bool,
    delay: HashMap<String, Duration>,
    blob: VecDeque<BlobFault>,
    malformed_api: HashMap<String, u32>,
}

#[derive(Debug, Default)]
struct Mutable {
    tokens: HashMap<String, Instant>,
    windows: HashMap<String, (VecDeque<Instant>, VecDeque<Instant>)>,
    stats: Stats,
    faults: FaultState,
}

struct Inner {
    cfg: SimConfig,
    start: Instant,
    anchor: DateTime<Utc>,
    actions: Vec<SimAction>,
    signing_key: String,
    state: Mutex<Mutable>,
}

/// The simulator; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

/// A handle to inject faults at runtime.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

const SCRIPTS: &[&str] = &[
    "collect-triage.ps1",
    "check-bitlocker.ps1",
    "get-av-status.ps1",
    "hunt-persistence.ps1",
    "restart-sensor.ps1",
    "legacy-inventory.ps1",
];
const MALFORMED_SCRIPT: &str = "legacy-inventory.ps1";
const REQUESTORS: &[&str] = &["prom-mde-exporter", "soc-automation", "analyst@contoso.com"];
const QUOTA_ENDPOINTS: &[&str] = &[
    "list_machine_actions",
    "get_machine_action",
    "get_result_download_link",
];

fn guid(rng: &mut StdRng) -> String {
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

fn iso(t: DateTime<Utc>) -> String {
    // The API writes 7 fractional digits.
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    format!("{base}.{:07}Z", t.timestamp_subsec_nanos() / 100)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn scenario(cfg: &SimConfig, anchor: DateTime<Utc>) -> Vec<SimAction> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let machines: Vec<(String, String)> = (0..cfg.machines.max(1))
        .map(|i| {
            let id: String = (0..40)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect();
            let dns = if i % 3 == 2 {
                format!("srv-sql-{:02}.contoso.com", i + 1)
            } else {
                format!("ws-eng-{:03}.contoso.com", i + 1)
            };
            (id, dns)
        })
        .collect();
    let history_ms = cfg.history.as_millis().max(1) as i64;
    let extra = cfg.actions / 10;
    let mut actions = Vec::with_capacity(cfg.actions + extra);
    for n in 0..cfg.actions + extra {
        let (machine_id, dns) = machines[rng.random_range(0..machines.len())].clone();
        let id = guid(&mut rng);
        let requestor = REQUESTORS[rng.random_range(0..REQUESTORS.len())];
        let live = n < cfg.actions;
        // Roughly: 60% succeeded, 14% failed, 6% timeout, 5% cancelled, 15% still running.
        let roll = rng.random_range(0..100);
        let (status, running) = match roll {
            0..60 => ("Succeeded", false),
            60..74 => ("Failed", false),
            74..80 => ("TimeOut", false),
            80..85 => ("Cancelled", false),
            85..93 => ("Succeeded", true),
            _ => ("Failed", true),
        };
        let (created, finished, final_after) = if running {
            let after = cfg.finish_within.mul_f64(rng.random_range(0.05..1.0));
            let created =
                anchor - chrono::Duration::milliseconds(rng.random_range(1_000..1_800_000));
            let finished = anchor + chrono::Duration::from_std(after).unwrap_or_default();
            (created, finished, after)
        } else {
            let created = anchor
                - chrono::Duration::milliseconds(
                    rng.random_range(600_000..history_ms.max(600_001)),
                );
            let finished =
                created + chrono::Duration::milliseconds(rng.random_range(20_000..580_000));
            (created, finished, Duration::ZERO)
        };
        let mut commands = Vec::new();
        if live {
            let puts = rng.random_range(0..2);
            let runs = rng.random_range(if puts == 0 { 1 } else { 0 }..3);
            let gets = rng.random_range(0..2);
            for _ in 0..puts {
                commands.push(("PutFile", vec![("FileName", "helper.ps1".to_string())]));
            }
            for _ in 0..runs.max(if puts + gets == 0 { 1 } else { 0 }) {
                let script = SCRIPTS[rng.random_range(0..SCRIPTS.len())].to_string();
                commands.push((
                    "RunScript",
                    vec![("ScriptName", script), ("Args", "-Quick".into())],
                ));
            }
            for _ in 0..gets {
                commands.push((
                    "GetFile",
                    vec![("Path", "C:\\Windows\\Temp\\triage.zip".to_string())],
                ));
            }
        }
        let ncmd = commands.len();
        // Which command fails (Failed actions), or where a timeout/cancel stopped.
        let stop_at = if ncmd == 0 {
            0
        } else {
            rng.random_range(0..ncmd)
        };
        let mut cmds = Vec::with_capacity(ncmd);
        for (i, (kind, params)) in commands.into_iter().enumerate() {
            let cstatus = match status {
                "Succeeded" => "Completed",
                "Failed" if i < stop_at => "Completed",
                "Failed" if i == stop_at => "Failed",
                "TimeOut" | "Cancelled" if i < stop_at => "Completed",
                _ => "Created",
            };
            let end = (cstatus != "Created").then(|| {
                finished - chrono::Duration::seconds(2 * (ncmd - i) as i64)
                    + chrono::Duration::milliseconds(rng.random_range(0..900))
            });
            let errors = if cstatus == "Failed" {
                vec![format!(
                    "{kind} failed: the device returned error 0x8007{:04x}",
                    rng.random_range(0..0xffffu32)
                )]
            } else {
                Vec::new()
            };
            let mut c = SimCommand {
                index: i as u32,
                kind,
                params: params.clone(),
                status: cstatus,
                errors,
                end,
                blob: None,
                script: None,
                exit_code: 0,
                errors_present: false,
                malformed: false,
            };
            if cstatus == "Completed" {
                match kind {
                    "RunScript" => {
                        let script = params[0].1.clone();
                        let exit_code = match rng.random_range(0..10) {
                            0..7 => 0,
                            7 => 1,
                            8 => 2,
                            _ => 5,
                        };
                        let errors = if rng.random_range(0..5) == 0
                            || (exit_code != 0 && rng.random_bool(0.5))
                        {
                            format!(
                                "Write-Error: {script} could not read HKLM\\SOFTWARE\\Contoso (Access denied)\r\n"
                            )
                        } else {
                            String::new()
                        };
                        let mut output = format!(
                            "Transcript started, output file is C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Temp\\PSScriptOutputs\\PSScript_Transcript_{}.txt\r\nRunning {script} on {dns}\r\n",
                            guid(&mut rng)
                        );
                        if rng.random_range(0..4) == 0 {
                            output.push_str("Résumé: café 日本語 \u{0}binary\u{0} tail\r\n");
                        }
                        let malformed = script == MALFORMED_SCRIPT;
                        let bytes = if malformed {
                            format!("{{\"script_name\":\"{script}\",\"exit_code\":{exit_code},\"script_output\":\"Transcript started, out").into_bytes()
                        } else {
                            serde_json::json!({"script_name": script, "exit_code": exit_code, "script_output": output, "script_errors": errors})
                                .to_string()
                                .into_bytes()
                        };
                        c.script = Some(script);
                        c.exit_code = exit_code;
                        c.errors_present = !errors.trim().is_empty();
                        c.malformed = malformed;
                        c.blob = Some(Blob::Transcript { bytes });
                    }
                    "GetFile" => {
                        let size = rng.random_range(200..20_000);
                        let data: Vec<u8> =
                            (0..size).map(|_| rng.random_range(b'a'..=b'z')).collect();
                        c.blob = Some(Blob::File { gz: gzip(&data) });
                    }
                    _ => {}
                }
            }
            cmds.push(c);
        }
        actions.push(SimAction {
            id,
            kind: if live {
                "LiveResponse"
            } else if n % 2 == 0 {
                "Isolate"
            } else {
                "RunAntiVirusScan"
            },
            requestor,
            machine_id,
            dns,
            created,
            finished,
            final_after,
            status,
            commands: cmds,
        });
    }
    actions.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    actions
}

/// The JSON shape of a machine action, in the live API's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionJson<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    title: Option<&'a str>,
    requestor: &'a str,
    requestor_comment: &'a str,
    status: &'a str,
    machine_id: &'a str,
    computer_dns_name: &'a str,
    creation_date_time_utc: String,
    last_update_date_time_utc: String,
    cancellation_requestor: Option<&'a str>,
    cancellation_comment: Option<&'a str>,
    cancellation_date_time_utc: Option<String>,
    error_h_result: i64,
    scope: Option<&'a str>,
    external_id: Option<&'a str>,
    request_source: &'a str,
    related_file_info: Option<()>,
    commands: Vec<CommandJson<'a>>,
    troubleshoot_info: Option<()>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommandJson<'a> {
    index: u32,
    start_time: Option<String>,
    end_time: Option<String>,
    command_status: &'a str,
    errors: &'a [String],
    command: CommandSpecJson<'a>,
}

#[derive(Serialize)]
struct CommandSpecJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    params: Vec<ParamJson<'a>>,
}

#[derive(Serialize)]
struct ParamJson<'a> {
    key: &'a str,
    value: &'a str,
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let target = uuid_like();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({"error": {"code": code, "message": message, "target": target}})
            .to_string(),
    )
        .into_response()
}

fn uuid_like() -> String {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    guid(&mut rng)
}

fn blob_error(status: StatusCode, code: &str, message: &str, detail: Option<String>) -> Response {
    let now = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    let detail = detail
        .map(|d| format!("<AuthenticationErrorDetail>{d}</AuthenticationErrorDetail>"))
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{}\nTime:{now}</Message>{detail}</Error>",
        uuid_like()
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "application/xml"),
            (header::HeaderName::from_static("x-ms-error-code"), code),
        ],
        body,
    )
        .into_response()
}

fn hhmmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Simulator {
        let anchor = Utc::now();
        let actions = scenario(&cfg, anchor);
        let signing_key = format!("sim-signing-key-{}", cfg.seed);
        Simulator {
            inner: Arc::new(Inner {
                cfg,
                start: Instant::now(),
                anchor,
                actions,
                signing_key,
                state: Mutex::new(Mutable::default()),
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// (tenant id, client id, client secret).
    pub fn credentials(&self) -> (&str, &str, &str) {
        let c = &self.inner.cfg;
        (&c.tenant_id, &c.client_id, &c.client_secret)
    }

    pub fn faults(&self) -> Faults {
        Faults {
            inner: self.inner.clone(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    pub fn truth(&self) -> Truth {
        let elapsed = self.inner.start.elapsed();
        let mut truth = Truth::default();
        for a in self
            .inner
            .actions
            .iter()
            .filter(|a| a.kind == "LiveResponse" && a.final_after <= elapsed)
        {
            truth.actions.push(TruthAction {
                id: a.id.clone(),
                machine_id: a.machine_id.clone(),
                computer_dns_name: a.dns.clone(),
                status: a.status.to_string(),
                requestor: a.requestor.to_string(),
                commands: a
                    .commands
                    .iter()
                    .map(|c| (c.kind.to_string(), c.status.to_string()))
                    .collect(),
            });
            for c in a.commands.iter().filter(|c| c.status == "Completed") {
                match &c.blob {
                    Some(Blob::Transcript { .. }) => truth.transcripts.push(TruthTranscript {
                        action_id: a.id.clone(),
                        index: c.index,
                        machine: a.dns.clone(),
                        script: c.script.clone().unwrap_or_default(),
                        exit_code: c.exit_code,
                        errors_present: c.errors_present,
                        end_time: c.end.unwrap_or(a.finished),
                        malformed: c.malformed,
                    }),
                    Some(Blob::File { gz }) => truth.files.push(TruthFile {
                        action_id: a.id.clone(),
                        index: c.index,
                        compressed_bytes: gz.len() as u64,
                    }),
                    None => {}
                }
            }
        }
        truth
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/token", post(token_v1))
            .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
            .route("/api/machineactions", get(list_actions))
            .route("/api/v1.0/machineactions", get(list_actions))
            .route("/api/machineactions/{id}", get(get_action))
            .route("/api/v1.0/machineactions/{id}", get(get_action))
            .route("/api/machineactions/{id}/{op}", get(action_op))
            .route("/api/v1.0/machineactions/{id}/{op}", get(action_op))
            .route("/blob/{*path}", get(blob))
            .with_state(self.clone())
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    fn now_wall(&self) -> DateTime<Utc> {
        self.inner.anchor + chrono::Duration::from_std(self.elapsed()).unwrap_or_default()
    }

    fn action_json(&self, a: &SimAction, context: Option<String>) -> serde_json::Value {
        let is_final = a.final_after <= self.elapsed();
        let status = if is_final {
            a.status
        } else if self.elapsed() >= a.final_after / 2 {
            "InProgress"
        } else {
            "Pending"
        };
        let last_update = if is_final {
            a.finished
        } else {
            a.created
                .max(self.now_wall() - chrono::Duration::seconds(1))
        };
        let commands = a
            .commands
            .iter()
            .map(|c| {
                let cstatus = if is_final { c.status } else { "Created" };
                let end = if is_final { c.end } else { None };
                CommandJson {
                    index: c.index,
                    start_time: end.map(|e| iso(e - chrono::Duration::seconds(3))),
                    end_time: end.map(iso),
                    command_status: cstatus,
                    errors: if is_final { &c.errors } else { &[] },
                    command: CommandSpecJson {
                        kind: c.kind,
                        params: c
                            .params
                            .iter()
                            .map(|(k, v)| ParamJson { key: k, value: v })
                            .collect(),
                    },
                }
            })
            .collect();
        let cancelled = is_final && a.status == "Cancelled";
        serde_json::to_value(ActionJson {
            context,
            id: &a.id,
            kind: a.kind,
            title: None,
            requestor: a.requestor,
            requestor_comment: "collect triage",
            status,
            machine_id: &a.machine_id,
            computer_dns_name: &a.dns,
            creation_date_time_utc: iso(a.created),
            last_update_date_time_utc: iso(last_update),
            cancellation_requestor: cancelled.then_some("analyst@contoso.com"),
            cancellation_comment: cancelled.then_some("no longer needed"),
            cancellation_date_time_utc: cancelled.then(|| iso(a.finished)),
            error_h_result: 0,
            scope: None,
            external_id: None,
            request_source: "PublicApi",
            related_file_info: None,
            commands,
            troubleshoot_info: None,
        })
        .unwrap_or_default()
    }

    fn sign(&self, path: &str, se: &str) -> String {
        use base64::Engine as _;
        let digest = Sha256::digest(format!("{}{path}{se}", self.inner.signing_key).as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Faults {
    fn with(&self, f: impl FnOnce(&mut FaultState)) {
        f(&mut self.inner.lock().faults);
    }
    /// The next `n` requests to `endpoint` answer `status` with that endpoint's error body.
    pub fn fail_next(&self, endpoint: &str, status: u16, n: u32) {
        self.with(|f| {
            f.fail_next
                .entry(endpoint.into())
                .or_default()
                .extend(std::iter::repeat_n(status, n as usize))
        });
    }
    /// The next `n` requests to `endpoint` get 429, with `Retry-After` when `Some`.
    pub fn throttle_next(&self, endpoint: &str, n: u32, retry_after: Option<u64>) {
        self.with(|f| {
            f.throttle_next
                .entry(endpoint.into())
                .or_default()
                .extend(std::iter::repeat_n(retry_after, n as usize))
        });
    }
    /// Another client of the same app registration spends `n` calls of `endpoint`'s windows.
    pub fn spend_quota(&self, endpoint: &str, n: u32) {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let w = st.windows.entry(endpoint.into()).or_default();
        for _ in 0..n {
            w.0.push_back(now);
            w.1.push_back(now);
        }
    }
    /// A background neighbour spends `calls_per_minute` of every quota'd endpoint.
    pub fn noisy_neighbour(&self, calls_per_minute: u32) {
        if calls_per_minute == 0 {
            return;
        }
        let me = self.clone();
        let every = self.inner.cfg.minute / calls_per_minute;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            loop {
                tick.tick().await;
                if Arc::strong_count(&me.inner) <= 1 {
                    return;
                }
                for ep in QUOTA_ENDPOINTS {
                    me.spend_quota(ep, 1);
                }
            }
        });
    }
    pub fn expire_links(&self, on: bool) {
        self.with(|f| f.expire_links = on);
    }
    pub fn delay(&self, endpoint: &str, d: Duration) {
        self.with(|f| {
            f.delay.insert(endpoint.into(), d);
        });
    }
    /// Every token issued so far becomes invalid.
    pub fn revoke_tokens(&self) {
        self.inner.lock().tokens.clear();
    }
    pub fn blob_fault(&self, kind: BlobFault, n: u32) {
        self.with(|f| f.blob.extend(std::iter::repeat_n(kind, n as usize)));
    }
    /// The next `n` answers of `endpoint` are 200 with broken JSON.
    pub fn malformed_api(&self, endpoint: &str, n: u32) {
        self.with(|f| *f.malformed_api.entry(endpoint.into()).or_default() += n);
    }
}

/// Count the request, apply delay and injected failures. `Err` is the response to send.
async fn intake(sim: &Simulator, endpoint: &str) -> Result<(), Response> {
    let delay = {
        let mut st = sim.inner.lock();
        *st.stats.requests.entry(endpoint.into()).or_insert(0) += 1;
        st.faults.delay.get(endpoint).copied().unwrap_or_default()
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = sim.inner.lock();
    if let Some(status) = st
        .faults
        .fail_next
        .get_mut(endpoint)
        .and_then(VecDeque::pop_front)
    {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(match endpoint {
            "token" => (
                code,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": "temporarily_unavailable", "error_description": format!("AADSTS90033: A transient error has occurred (injected {status}).")}).to_string(),
            )
                .into_response(),
            "download" => blob_error(code, "InternalError", "Server encountered an internal error (injected).", None),
            _ => api_error(code, if status >= 500 { "InternalServerError" } else { "BadRequest" }, "injected failure"),
        });
    }
    if let Some(ra) = st
        .faults
        .throttle_next
        .get_mut(endpoint)
        .and_then(VecDeque::pop_front)
    {
        *st.stats.throttled.entry(endpoint.into()).or_insert(0) += 1;
        let mut resp = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            "API calls quota exceeded! maximum allowed 100 per 00:01:00",
        );
        if let Some(secs) = ra {
            if let Ok(v) = secs.to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return Err(resp);
    }
    Ok(())
}

fn malformed(sim: &Simulator, endpoint: &str) -> Option<Response> {
    let mut st = sim.inner.lock();
    let n = st.faults.malformed_api.get_mut(endpoint)?;
    if *n == 0 {
        return None;
    }
    *n -= 1;
    Some(
        (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"value\": [{\"id\": \"x\", \"status\"",
        )
            .into_response(),
    )
}

/// Bearer check and the per-endpoint sliding windows.
fn admit(sim: &Simulator, headers: &HeaderMap, endpoint: &str) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let now = Instant::now();
    let cfg = &sim.inner.cfg;
    let mut st = sim.inner.lock();
    match st.tokens.get(token) {
        Some(exp) if *exp > now => {}
        _ => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Authorization token is missing, expired or invalid",
            ));
        }
    }
    let (minute, hour) = st.windows.entry(endpoint.into()).or_default();
    for (w, len) in [(&mut *minute, cfg.minute), (&mut *hour, cfg.hour)] {
        while w
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= len)
        {
            w.pop_front();
        }
    }
    let over = |w: &VecDeque<Instant>, limit: u32, len: Duration| -> Option<Duration> {
        if w.len() < limit as usize {
            return None;
        }
        let idx = w.len() - limit as usize;
        Some((w[idx] + len).saturating_duration_since(now))
    };
    let verdict = over(minute, cfg.per_minute, cfg.minute)
        .map(|d| (d, cfg.per_minute, cfg.minute))
        .or_else(|| over(hour, cfg.per_hour, cfg.hour).map(|d| (d, cfg.per_hour, cfg.hour)));
    if let Some((wait, limit, len)) = verdict {
        *st.stats.throttled.entry(endpoint.into()).or_insert(0) += 1;
        let mut resp = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            &format!(
                "API calls quota exceeded! maximum allowed {limit} per {}",
                hhmmss(len)
            ),
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = secs.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(resp);
    }
    minute.push_back(now);
    hour.push_back(now);
    Ok(())
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let code: u32 = description
        .strip_prefix("AADSTS")
        .and_then(|r| r.split(':').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({
            "error": error,
            "error_description": format!("{description}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}", uuid_like(), uuid_like(), Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)),
            "error_codes": [code],
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "trace_id": uuid_like(),
            "correlation_id": uuid_like(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })
        .to_string(),
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Shared checks of both token endpoints; returns the lifetime of the new token.
async fn issue_token(
    sim: &Simulator,
    tenant: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, Duration), Response> {
    intake(sim, "token").await?;
    let cfg = &sim.inner.cfg;
    if tenant != cfg.tenant_id {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        ));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        ));
    }
    let (id, secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(i), Some(s)) => (i.clone(), s.clone()),
        _ => basic_credentials(headers).unwrap_or_default(),
    };
    if id != cfg.client_id {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{id}' was not found in the directory."
            ),
        ));
    }
    if secret != cfg.client_secret {
        return Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{id}'."
            ),
        ));
    }
    let token = format!("sim.{}", uuid_like().replace('-', ""));
    sim.inner
        .lock()
        .tokens
        .insert(token.clone(), Instant::now() + cfg.token_ttl);
    Ok((token, cfg.token_ttl))
}

async fn token_v1(
    State(sim): State<Simulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let resource = form.get("resource").cloned().unwrap_or_default();
    match issue_token(&sim, &tenant, &headers, &form).await {
        Ok((token, ttl)) => {
            let now = sim.now_wall().timestamp();
            let secs = ttl.as_secs();
            axum::Json(serde_json::json!({
                "token_type": "Bearer", "expires_in": secs.to_string(), "ext_expires_in": secs.to_string(),
                "expires_on": (now + secs as i64).to_string(), "not_before": now.to_string(),
                "resource": resource, "access_token": token,
            }))
            .into_response()
        }
        Err(r) => r,
    }
}

async fn token_v2(
    State(sim): State<Simulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    match issue_token(&sim, &tenant, &headers, &form).await {
        Ok((token, ttl)) => axum::Json(serde_json::json!({
            "token_type": "Bearer", "expires_in": ttl.as_secs(), "ext_expires_in": ttl.as_secs(), "access_token": token,
        }))
        .into_response(),
        Err(r) => r,
    }
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn list_actions(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    const EP: &str = "list_machine_actions";
    if let Err(r) = intake(&sim, EP).await {
        return r;
    }
    if let Err(r) = admit(&sim, &headers, EP) {
        return r;
    }
    if let Some(r) = malformed(&sim, EP) {
        return r;
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let filter = match param("$filter").map(|f| filter::parse(&f)).transpose() {
        Ok(f) => f,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "ODataError", &e),
    };
    let top = match param("$top").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(t)) if t <= 10_000 => Some(t),
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "ODataError",
                "The limit of '10000' for Top query has been exceeded.",
            );
        }
    };
    let skip = param("$skip")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let desc = param("$orderby").is_some_and(|o| o.trim().ends_with("desc"));
    let count = param("$count").is_some_and(|c| c == "true");
    let mut matching: Vec<serde_json::Value> = sim
        .inner
        .actions
        .iter()
        .map(|a| sim.action_json(a, None))
        .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v)))
        .collect();
    if desc {
        matching.reverse();
    }
    let total = matching.len();
    let page = top
        .unwrap_or(usize::MAX)
        .min(sim.inner.cfg.page_size.max(1));
    let wanted_end = top.map_or(total, |t| (skip + t).min(total));
    let end = (skip + page).min(wanted_end);
    let value: Vec<serde_json::Value> = matching
        .into_iter()
        .skip(skip)
        .take(end.saturating_sub(skip))
        .collect();
    let base = base_url(&headers);
    let mut body =
        serde_json::json!({"@odata.context": format!("{base}/api/$metadata#MachineActions")});
    if count {
        body["@odata.count"] = total.into();
    }
    body["value"] = value.into();
    if end < wanted_end {
        let mut next =
            url::Url::parse(&format!("{base}/api/machineactions")).unwrap_or_else(|_| {
                url::Url::parse("http://localhost/api/machineactions")
                    .unwrap_or_else(|_| unreachable!())
            });
        {
            let mut q = next.query_pairs_mut();
            for (k, v) in &params {
                if k != "$skip" && k != "$top" {
                    q.append_pair(k, v);
                }
            }
            if let Some(t) = top {
                q.append_pair("$top", &(t - (end - skip)).to_string());
            }
            q.append_pair("$skip", &end.to_string());
        }
        body["@odata.nextLink"] = next.to_string().into();
    }
    axum::Json(body).into_response()
}

fn find<'a>(sim: &'a Simulator, id: &str) -> Option<&'a SimAction> {
    sim.inner.actions.iter().find(|a| a.id == id)
}

async fn get_action(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    const EP: &str = "get_machine_action";
    if let Err(r) = intake(&sim, EP).await {
        return r;
    }
    if let Err(r) = admit(&sim, &headers, EP) {
        return r;
    }
    if let Some(r) = malformed(&sim, EP) {
        return r;
    }
    match find(&sim, &id) {
        Some(a) => {
            let ctx = format!(
                "{}/api/$metadata#MachineActions/$entity",
                base_url(&headers)
            );
            axum::Json(sim.action_json(a, Some(ctx))).into_response()
        }
        None => api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Machine action {id} was not found"),
        ),
    }
}

async fn action_op(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path((id, op)): Path<(String, String)>,
) -> Response {
    const EP: &str = "get_result_download_link";
    let Some(index) = op
        .strip_prefix("GetLiveResponseResultDownloadLink(index=")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("No route for {op}"),
        );
    };
    if let Err(r) = intake(&sim, EP).await {
        return r;
    }
    if let Err(r) = admit(&sim, &headers, EP) {
        return r;
    }
    if let Some(r) = malformed(&sim, EP) {
        return r;
    }
    let not_found = || {
        api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("No result for action {id} index {index}"),
        )
    };
    let Some(a) = find(&sim, &id) else {
        return not_found();
    };
    if a.final_after > sim.elapsed() {
        return not_found();
    }
    let Some(c) = a.commands.iter().find(|c| c.index == index) else {
        return not_found();
    };
    if c.status != "Completed" || c.blob.is_none() {
        return not_found();
    }
    let expired = {
        let mut st = sim.inner.lock();
        *st.stats
            .link_requests
            .entry((id.clone(), index))
            .or_insert(0) += 1;
        st.faults.expire_links
    };
    let expiry = if expired {
        sim.now_wall() - chrono::Duration::seconds(1)
    } else {
        sim.now_wall() + chrono::Duration::from_std(sim.inner.cfg.link_ttl).unwrap_or_default()
    };
    let se = expiry.to_rfc3339_opts(SecondsFormat::Secs, true);
    let hex: String = Sha256::digest(format!("{id}{index}").as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path =
        format!("/blob/investigation-actions-data/{id}/CustomPlaybookCommandOutput/{index}-{hex}");
    let sig = sim.sign(&path, &se);
    let mut link = url::Url::parse(&format!("{}{path}", base_url(&headers)))
        .unwrap_or_else(|_| unreachable!());
    link.query_pairs_mut()
        .append_pair("se", &se)
        .append_pair("sp", "r")
        .append_pair("sv", "2019-07-07")
        .append_pair("sr", "b")
        .append_pair("sig", &sig);
    let ctx = format!("{}/api/$metadata#Edm.String", base_url(&headers));
    axum::Json(serde_json::json!({"@odata.context": ctx, "value": link.to_string()}))
        .into_response()
}

async fn blob(
    State(sim): State<Simulator>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    const EP: &str = "download";
    if let Err(r) = intake(&sim, EP).await {
        return r;
    }
    let full = format!("/blob/{path}");
    let se = q.get("se").cloned().unwrap_or_default();
    let sig_ok = q.get("sig").is_some_and(|s| *s == sim.sign(&full, &se));
    if !sig_ok {
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some("Signature did not match.".into()),
        );
    }
    let expiry = DateTime::parse_from_rfc3339(&se).map(|d| d.with_timezone(&Utc));
    let now = sim.now_wall();
    if expiry.as_ref().map_or(true, |e| *e <= now) {
        sim.inner.lock().stats.expired_downloads += 1;
        let fmt = |t: DateTime<Utc>| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let detail = format!(
            "Signed expiry time [{}] must be after signed start time [{}]",
            expiry.map(fmt).unwrap_or_default(),
            fmt(now)
        );
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some(detail),
        );
    }
    // investigation-actions-data/{id}/CustomPlaybookCommandOutput/{index}-{hex}
    let parts: Vec<&str> = path.split('/').collect();
    let found = (parts.len() == 4)
        .then(|| {
            (
                parts[1],
                parts[3]
                    .split('-')
                    .next()
                    .and_then(|i| i.parse::<u32>().ok()),
            )
        })
        .and_then(|(id, idx)| Some((find(&sim, id)?, idx?)))
        .and_then(|(a, idx)| {
            a.commands
                .iter()
                .find(|c| c.index == idx)
                .and_then(|c| c.blob.clone().map(|b| (a.id.clone(), idx, b)))
        });
    let Some((id, index, blob)) = found else {
        return blob_error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
            None,
        );
    };
    let fault = sim.inner.lock().faults.blob.pop_front();
    match fault {
        Some(BlobFault::NotFound) => {
            return blob_error(
                StatusCode::NOT_FOUND,
                "BlobNotFound",
                "The specified blob does not exist.",
                None,
            );
        }
        Some(BlobFault::Garbage) => {
            return (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                vec![0xde_u8, 0xad, 0xbe, 0xef, 0x00, 0xff],
            )
                .into_response();
        }
        Some(BlobFault::Truncated) => {
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"script_name\":\"x\"")),
                Err(std::io::Error::other("connection reset")),
            ]);
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_LENGTH,
                header::HeaderValue::from_static("4096"),
            );
            return resp;
        }
        Some(BlobFault::Huge(n)) => {
            let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
            let chunks = n.div_ceil(chunk.len());
            let stream = futures_util::stream::iter(
                (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            return Response::new(Body::from_stream(stream));
        }
        Some(BlobFault::GzipBomb) => {
            let zeros = vec![0u8; 1024 * 1024];
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            for _ in 0..64 {
                let _ = enc.write_all(&zeros);
            }
            return (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                enc.finish().unwrap_or_default(),
            )
                .into_response();
        }
        None => {}
    }
    *sim.inner
        .lock()
        .stats
        .downloads
        .entry((id, index))
        .or_insert(0) += 1;
    match blob {
        Blob::Transcript { bytes } => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Blob::File { gz } => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], gz).into_response()
        }
    }
}
