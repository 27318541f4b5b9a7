//! The metrics contract: every family the exporter serves, with its name, help and labels.
//!
//! Names and labels here are a contract with dashboards, alerts and users: add, never rename.
//! Values come from background polls; a scrape only encodes (the quota gauges are read from
//! the local windows as it encodes), it never calls the MDE API. Does not own *when* values
//! change (collector, client).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format (0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Span batches the OTLP exporter could not deliver (collector down, refused...). Counted,
/// not logged: a collector outage must not flood the logs. Process-wide, because the span
/// pipeline is; `telemetry` increments it and every [`Metrics`] registers it.
pub static OTLP_EXPORT_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

const BACKGROUND: &str =
    "Updated by background polls, not at scrape time (the MDE API quota forbids polling on scrape)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    pub tenant: String,
    pub script: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineScriptLabels {
    pub tenant: String,
    pub machine: String,
    pub script: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub tenant: String,
    pub command: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub tenant: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub tenant: String,
    pub reason: String,
}

/// `mde_liveresponse_script_not_run_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotRunLabels {
    pub tenant: String,
    pub script: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: String,
    pub endpoint: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub tenant: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub tenant: String,
    pub endpoint: String,
    pub window: String,
}

/// `mde_machine_info`: machine context for routing alerts, from `GET /api/machines`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineInfoLabels {
    pub tenant: String,
    /// The `computerDnsName`, as in the per-machine script series.
    pub machine: String,
    pub machine_id: String,
    /// The device group (`rbacGroupName`).
    pub rbac_group: String,
    pub os_platform: String,
    pub health_status: String,
}

/// `mde_exporter_permission_missing`: an application permission the token lacks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    pub tenant: String,
    pub permission: String,
}

/// `mde_machine_tag`: one allowed machine tag.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineTagLabels {
    pub tenant: String,
    pub machine: String,
    pub tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub revision: String,
    pub rustc: String,
}

/// Exemplar labels: the trace that changed a counter or histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabel {
    pub trace_id: String,
}

pub type ExCounter = CounterWithExemplar<TraceLabel>;
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<HistogramWithExemplars<TraceLabel>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceLabel> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

const API_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const POLL_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub type ExHistogramFamily<L> = Family<L, HistogramWithExemplars<TraceLabel>, Buckets>;

/// Every metric the exporter serves.
pub struct Metrics {
    registry: Parts,
    pub script_runs: Family<ScriptLabels, ExCounter>,
    pub script_failures: Family<ScriptLabels, ExCounter>,
    pub script_errors: Family<ScriptLabels, ExCounter>,
    pub script_exit_code: Family<MachineScriptLabels, Gauge>,
    pub script_errors_present: Family<MachineScriptLabels, Gauge>,
    pub script_last_run: Family<MachineScriptLabels, FloatGauge>,
    pub commands: Family<CommandLabels, Counter>,
    pub actions: Family<StatusLabels, Counter>,
    pub fetch_failures: Family<ReasonLabels, ExCounter>,
    pub files: Family<TenantLabels, Counter>,
    pub file_bytes: Family<TenantLabels, Counter>,
    pub transcript_bytes: Family<TenantLabels, Counter>,
    pub pending_results: Family<TenantLabels, Gauge>,
    pub invalid_actions: Family<TenantLabels, Counter>,
    pub api_requests: Family<RequestLabels, ExCounter>,
    pub api_duration: ExHistogramFamily<EndpointLabels>,
    pub api_throttled: Family<EndpointLabels, Counter>,
    pub retry_after: Family<EndpointLabels, FloatGauge>,
    /// The quotas behind `mde_api_quota_*`, read at scrape time (see [`QuotaGauges`]).
    pub quota_gauges: Arc<QuotaGauges>,
    /// What the HTTP server's connection limits and bcrypt queue did; `app` hands it to
    /// `exporter_web::serve_with` and it is read at scrape time.
    pub http_stats: Arc<exporter_web::ServeStats>,
    pub build_info: Family<BuildLabels, Gauge>,
    pub poll_success: Family<TenantLabels, Gauge>,
    pub last_poll_success: Family<TenantLabels, FloatGauge>,
    pub poll_duration: ExHistogramFamily<TenantLabels>,
    pub token_success: Family<TenantLabels, Gauge>,
    pub config_reload_success: Gauge,
    pub config_reload_timestamp: FloatGauge,
    /// Per-machine series removed from /metrics and the state, by reason (`ttl`, `max_series`).
    pub series_evicted: Family<ReasonLabels, Counter>,
    pub machine_info: Family<MachineInfoLabels, Gauge>,
    pub machine_tag: Family<MachineTagLabels, Gauge>,
    pub permission_missing: Family<PermissionLabels, Gauge>,
    // Discovery, in flight and not-run (#9).
    pub actions_in_flight: Family<StatusLabels, Gauge>,
    pub in_flight_oldest: Family<TenantLabels, FloatGauge>,
    pub in_flight_abandoned: Family<TenantLabels, Counter>,
    pub discovery_missed: Family<TenantLabels, Counter>,
    pub script_not_run_total: Family<NotRunLabels, ExCounter>,
    pub script_not_run: Family<MachineScriptLabels, Gauge>,
    /// Writes to the state file that failed (each is retried once after reopening the file).
    pub state_write_errors: Counter,
    /// API calls and result downloads in flight across tenants, their cap
    /// (`max_requests_in_flight`) and the time requests waited for a slot (see `mde::http`).
    pub requests_in_flight: Gauge,
    pub requests_in_flight_limit: Gauge,
    pub request_slot_wait: Counter<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Parts::default();
        let m = Metrics {
            registry: Parts::default(),
            script_runs: Family::default(),
            script_failures: Family::default(),
            script_errors: Family::default(),
            script_exit_code: Family::default(),
            script_errors_present: Family::default(),
            script_last_run: Family::default(),
            commands: Family::default(),
            actions: Family::default(),
            fetch_failures: Family::default(),
            files: Family::default(),
            file_bytes: Family::default(),
            transcript_bytes: Family::default(),
            pending_results: Family::default(),
            invalid_actions: Family::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(Buckets(API_BUCKETS)),
            api_throttled: Family::default(),
            retry_after: Family::default(),
            quota_gauges: Arc::new(QuotaGauges::default()),
            http_stats: Arc::default(),
            build_info: Family::default(),
            poll_success: Family::default(),
            last_poll_success: Family::default(),
            poll_duration: Family::new_with_constructor(Buckets(POLL_BUCKETS)),
            token_success: Family::default(),
            config_reload_success: Gauge::default(),
            config_reload_timestamp: FloatGauge::default(),
            series_evicted: Family::default(),
            machine_info: Family::default(),
            machine_tag: Family::default(),
            permission_missing: Family::default(),
            actions_in_flight: Family::default(),
            in_flight_oldest: Family::default(),
            in_flight_abandoned: Family::default(),
            discovery_missed: Family::default(),
            script_not_run_total: Family::default(),
            script_not_run: Family::default(),
            state_write_errors: Counter::default(),
            requests_in_flight: Gauge::default(),
            requests_in_flight_limit: Gauge::default(),
            request_slot_wait: Counter::default(),
        };
        let bg = |s: &str| format!("{s} {BACKGROUND}");
        let r = &mut registry;
        r.register(
            "mde_liveresponse_script_runs",
            bg("RunScript transcripts retrieved, by script."),
            m.script_runs.clone(),
        );
        r.register(
            "mde_liveresponse_script_failures",
            bg("Retrieved transcripts whose exit_code was not 0, by script."),
            m.script_failures.clone(),
        );
        r.register(
            "mde_liveresponse_script_errors",
            bg("Retrieved transcripts with non-empty script_errors, by script."),
            m.script_errors.clone(),
        );
        r.register(
            "mde_liveresponse_script_exit_code",
            bg("Exit code of the latest run (by command endTime) of a script on a machine."),
            m.script_exit_code.clone(),
        );
        r.register(
            "mde_liveresponse_script_errors_present",
            bg("1 if the latest run of a script on a machine wrote to script_errors, else 0."),
            m.script_errors_present.clone(),
        );
        r.register(
            "mde_liveresponse_script_last_run_timestamp_seconds",
            bg("End time (Unix seconds) of the latest run of a script on a machine."),
            m.script_last_run.clone(),
        );
        r.register(
            "mde_liveresponse_commands",
            bg("Commands of final Live Response actions, by command type and commandStatus."),
            m.commands.clone(),
        );
        r.register(
            "mde_liveresponse_actions",
            bg("Final Live Response machine actions seen, by status."),
            m.actions.clone(),
        );
        r.register(
            "mde_liveresponse_result_fetch_failures",
            bg("Command results that could not be retrieved or read, by reason; given up, not retried."),
            m.fetch_failures.clone(),
        );
        r.register(
            "mde_liveresponse_files",
            bg("GetFile results whose size was recorded."),
            m.files.clone(),
        );
        r.register(
            "mde_liveresponse_file_bytes",
            bg("Compressed bytes of GetFile results (sized, not kept)."),
            m.file_bytes.clone(),
        );
        r.register(
            "mde_liveresponse_transcript_bytes",
            bg("Bytes of RunScript transcripts downloaded."),
            m.transcript_bytes.clone(),
        );
        r.register(
            "mde_liveresponse_pending_results",
            bg("Finished command results waiting to be retrieved (for example for API quota)."),
            m.pending_results.clone(),
        );
        r.register(
            "mde_liveresponse_invalid_actions",
            bg("Machine actions in API answers that could not be parsed and were skipped."),
            m.invalid_actions.clone(),
        );
        r.register(
            "mde_liveresponse_actions_in_flight",
            bg("Live Response actions not final yet (Pending, InProgress), by status."),
            m.actions_in_flight.clone(),
        );
        r.register(
            "mde_liveresponse_in_flight_oldest_creation_timestamp_seconds",
            bg("creationDateTimeUtc (Unix seconds) of the oldest Live Response action still in flight; absent when none is."),
            m.in_flight_oldest.clone(),
        );
        r.register(
            "mde_liveresponse_in_flight_abandoned",
            bg("Actions still not final past discovery.in_flight_horizon, no longer followed."),
            m.in_flight_abandoned.clone(),
        );
        r.register(
            "mde_liveresponse_discovery_missed",
            bg("Final actions the reconciliation sweep found that incremental discovery had missed (expected to stay 0)."),
            m.discovery_missed.clone(),
        );
        r.register(
            "mde_liveresponse_script_not_run",
            bg("RunScript commands of final actions that produced no transcript, by script and reason (command_failed, action_timeout, action_cancelled, action_failed)."),
            m.script_not_run_total.clone(),
        );
        r.register(
            "mde_liveresponse_script_not_run",
            bg("1 while the latest attempt (by the action's lastUpdateDateTimeUtc) of a script on a machine did not run, 0 once a later attempt ran."),
            m.script_not_run.clone(),
        );
        r.register(
            "mde_api_requests",
            bg("HTTP requests sent, by endpoint and status code (\"error\" when no answer came)."),
            m.api_requests.clone(),
        );
        r.register(
            "mde_api_request_duration_seconds",
            bg("Duration of HTTP requests, by endpoint."),
            m.api_duration.clone(),
        );
        r.register(
            "mde_api_throttled",
            bg("HTTP 429 answers, by endpoint."),
            m.api_throttled.clone(),
        );
        r.register(
            "mde_api_retry_after_seconds",
            bg("Retry-After of the latest 429 answer, by endpoint."),
            m.retry_after.clone(),
        );
        r.register_collector(Box::new(m.quota_gauges.clone()));
        r.register(
            "mde_exporter_build_info",
            "A metric with a constant '1' value labelled by version, revision and rustc",
            m.build_info.clone(),
        );
        r.register(
            "mde_exporter_poll_success",
            bg("1 if the latest poll of a tenant succeeded, else 0."),
            m.poll_success.clone(),
        );
        r.register(
            "mde_exporter_last_poll_success_timestamp_seconds",
            bg("Unix time of the latest successful poll of a tenant."),
            m.last_poll_success.clone(),
        );
        r.register(
            "mde_exporter_poll_duration_seconds",
            bg("Duration of polls, by tenant."),
            m.poll_duration.clone(),
        );
        r.register(
            "mde_machine_info",
            "Machine context, 1 for every machine with per-machine series: device group (rbac_group), OS platform and health status, read with GET /api/machines on its own slow schedule and quota budget (endpoint list_machines), never at scrape time. Join on tenant and machine to route alerts by device group",
            m.machine_info.clone(),
        );
        r.register(
            "mde_machine_tag",
            "1 for every machine tag allowed by the tenant's machine_tags regexes, on machines with per-machine series; no tag becomes a label without the allow-list",
            m.machine_tag.clone(),
        );
        r.register(
            "mde_exporter_permission_missing",
            "1 if the roles claim of the tenant's latest token lacks an application permission the exporter needs (Machine.Read.All, satisfied by Machine.ReadWrite.All too), else 0; read from each new token, no API call",
            m.permission_missing.clone(),
        );
        r.register(
            "mde_exporter_token_success",
            bg("1 if the latest OAuth2 token request of a tenant succeeded, else 0."),
            m.token_success.clone(),
        );
        r.register(
            "mde_exporter_config_last_reload_successful",
            "1 if the latest configuration load (start-up, SIGHUP or POST /-/reload) succeeded, else 0",
            m.config_reload_success.clone(),
        );
        r.register(
            "mde_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration load",
            m.config_reload_timestamp.clone(),
        );
        r.register(
            "mde_exporter_otlp_export_failures",
            "Span and log record batches that could not be exported over OTLP (counted instead of logged)",
            OTLP_EXPORT_FAILURES.clone(),
        );
        r.register(
            "mde_exporter_series_evicted",
            "Per-machine series (mde_liveresponse_script_exit_code and its siblings) removed, by reason: ttl (no run within series_ttl) or max_series (the oldest beyond the cap)",
            m.series_evicted.clone(),
        );
        r.register(
            "mde_exporter_state_write_errors",
            "Writes to the state file that failed (a full disk, an I/O error); after each the file is reopened and the write tried again, so polls recover when the disk does",
            m.state_write_errors.clone(),
        );
        r.register(
            "mde_exporter_requests_in_flight",
            "API calls and result downloads in flight now, across all tenants (token requests are not counted)",
            m.requests_in_flight.clone(),
        );
        r.register(
            "mde_exporter_requests_in_flight_limit",
            "The most API calls and result downloads in flight at once across all tenants (max_requests_in_flight)",
            m.requests_in_flight_limit.clone(),
        );
        r.register(
            "mde_exporter_request_slot_wait_seconds",
            "Time requests waited for a free slot under max_requests_in_flight, summed over requests; when it grows by about a second every second, the cap, not the API, sets the pace",
            m.request_slot_wait.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
        r.register_collector(Box::new(HttpCollector(m.http_stats.clone())));
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                revision: env!("MDE_EXPORTER_REVISION").to_string(),
                rustc: env!("MDE_EXPORTER_RUSTC_VERSION").to_string(),
            })
            .set(1);
        Metrics { registry, ..m }
    }

    /// Encode every family. OpenMetrics (with exemplars) when asked for, else Prometheus text.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        join(self.encode_chunks(openmetrics)?)
    }

    /// Encode every family, as chunks to be sent one after the other. A small body is one
    /// chunk. A large one is encoded by two threads (the caller's and one more), the families
    /// shared out between them by the sizes they had in the previous body (largest first, to
    /// whichever thread has less so far), each thread writing into one buffer of its own; the
    /// chunks are slices of the two buffers, one a family, in registration order, so the body
    /// is the one a single thread makes, never copied into one string (which would hold it
    /// twice). The largest family bounds the gain: it is encoded by one thread. Two threads
    /// halve the time to encode 50,000 series when a core is free. See: #11
    ///
    /// Each buffer is allocated once, at the size its families took last time plus an eighth:
    /// grown by doubling from 16 KiB, a 5 MB body (50,000 series) was reallocated nine times.
    /// A large body's buffers are at least [`MAPPED`], see there.
    pub fn encode_chunks(&self, openmetrics: bool) -> Result<Vec<Bytes>, std::fmt::Error> {
        self.encode_split(openmetrics, true)
    }

    /// As [`Metrics::encode_chunks`], on the caller's thread alone, into one chunk (for the
    /// render benchmark's comparison).
    pub fn encode_on_one_thread(&self, openmetrics: bool) -> Result<Vec<Bytes>, std::fmt::Error> {
        self.encode_split(openmetrics, false)
    }

    fn encode_split(
        &self,
        openmetrics: bool,
        two_threads: bool,
    ) -> Result<Vec<Bytes>, std::fmt::Error> {
        let parts = &self.registry;
        let n = parts.parts.len();
        let last: Vec<usize> = parts
            .last_len
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        let total: usize = last.iter().sum();
        // Encode `families` into one buffer; where each family landed in it.
        type Spans = Vec<(usize, std::ops::Range<usize>)>;
        let encode_run =
            |families: &[usize], eof: bool| -> Result<(Bytes, Spans), std::fmt::Error> {
                let expected: usize = families.iter().map(|&i| last[i]).sum();
                let mut room = (expected + expected / 8).max(16 * 1024);
                if total >= PARALLEL_FROM {
                    room = room.max(MAPPED);
                }
                let mut out = String::with_capacity(room);
                let mut spans = Vec::with_capacity(families.len());
                for &i in families {
                    let start = out.len();
                    if openmetrics {
                        text::encode_registry(&mut out, &parts.parts[i])?;
                    } else {
                        prometheus_text::encode(&mut out, &parts.parts[i])?;
                    }
                    parts.last_len[i].store(out.len() - start, Ordering::Relaxed);
                    spans.push((i, start..out.len()));
                }
                if eof {
                    text::encode_eof(&mut out)?;
                }
                Ok((Bytes::from(out), spans))
            };
        let chunks = if two_threads && total >= PARALLEL_FROM {
            let mut by_size: Vec<usize> = (0..n).collect();
            by_size.sort_by_key(|&i| std::cmp::Reverse(last[i]));
            let (mut first, mut second) = (Vec::new(), Vec::new());
            let (mut load_first, mut load_second) = (0, 0);
            for i in by_size {
                if load_first <= load_second {
                    first.push(i);
                    load_first += last[i];
                } else {
                    second.push(i);
                    load_second += last[i];
                }
            }
            // The quota gauges read tokio's clock: the other thread reads the same one.
            let runtime = tokio::runtime::Handle::try_current().ok();
            let (mine, theirs) = std::thread::scope(|scope| {
                let other = std::thread::Builder::new()
                    .name("metrics-encode".into())
                    .spawn_scoped(scope, || {
                        let _entered = runtime.as_ref().map(|r| r.enter());
                        encode_run(&second, false)
                    });
                let mine = encode_run(&first, false);
                let theirs = match other {
                    // A panic in the other thread is an encoder bug; it surfaces as an
                    // encoding error rather than taking the server down.
                    Ok(handle) => handle.join().map_err(|_| std::fmt::Error),
                    // No thread to be had (a process limit): this one does it all.
                    Err(_) => Ok(encode_run(&second, false)),
                };
                (mine, theirs)
            });
            let mut by_index: Vec<Bytes> = vec![Bytes::new(); n];
            for (buffer, spans) in [mine?, theirs??] {
                for (i, span) in spans {
                    by_index[i] = buffer.slice(span);
                }
            }
            by_index.retain(|c| !c.is_empty());
            if openmetrics {
                let mut eof = String::new();
                text::encode_eof(&mut eof)?;
                by_index.push(Bytes::from(eof));
            }
            by_index
        } else {
            let all: Vec<usize> = (0..n).collect();
            vec![encode_run(&all, openmetrics)?.0]
        };
        Ok(chunks)
    }
}

/// Chunks joined into one string.
fn join(chunks: Vec<Bytes>) -> Result<String, std::fmt::Error> {
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    String::from_utf8(out).map_err(|_| std::fmt::Error)
}

/// The least room a buffer of a large body gets: 32 MiB and a page. An allocation this
/// large is mapped fresh from the system by glibc's allocator (its mmap threshold never
/// exceeds 32 MiB on 64-bit systems; musl's is far lower) and given back to it when freed,
/// and only the pages written cost memory. A smaller buffer would come from the heap of the
/// thread that encoded it and stay there between scrapes: with 2,000 tenants, a 46 MB body
/// held for good (steady RSS 209 MiB instead of 158 MiB in `cargo bench --bench scale`).
const MAPPED: usize = 32 * 1024 * 1024 + 4096;

/// From this many bytes of body (as last encoded) on, `/metrics` is encoded by two threads.
/// About 5,000 series; below it a thread costs more than it saves.
const PARALLEL_FROM: usize = 512 * 1024;

/// The registry, one family (or collector) to a part, in the order they were registered, with
/// the size each took in the latest body; see [`Metrics::encode_chunks`].
#[derive(Default)]
struct Parts {
    parts: Vec<Registry>,
    last_len: Vec<AtomicUsize>,
}

impl Parts {
    fn register(
        &mut self,
        name: &str,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut r = Registry::default();
        r.register(name, help, metric);
        self.push(r);
    }

    fn register_collector(&mut self, collector: Box<dyn Collector>) {
        let mut r = Registry::default();
        r.register_collector(collector);
        self.push(r);
    }

    fn push(&mut self, r: Registry) {
        self.parts.push(r);
        self.last_len.push(AtomicUsize::new(0));
    }
}

/// The HTTP server's own limits at work (see `crates/exporter-web`): connections open, those
/// closed by a limit or timeout, and requests refused because too many unknown credentials
/// waited for bcrypt, and responses dropped because the client did not read them in time.
/// Read from the server's counters at scrape time. See: #13, #24
#[derive(Debug)]
struct HttpCollector(Arc<exporter_web::ServeStats>);

impl Collector for HttpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let open = ConstGauge::new(stats.open_connections() as i64);
        open.encode(encoder.encode_descriptor(
            "mde_exporter_http_connections_open",
            "Connections to the exporter's HTTP server open now",
            None,
            open.metric_type(),
        )?)?;
        let mut closed = encoder.encode_descriptor(
            "mde_exporter_http_connections_closed",
            "Connections the HTTP server closed because of a limit, by reason: rejected (no slot free at accept), evicted (an idle unauthenticated connection made room for a new one), timeout (TLS handshake, request head or idle keep-alive took too long)",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [
            ("rejected", stats.rejected_connections()),
            ("evicted", stats.evicted_connections()),
            ("timeout", stats.timed_out_connections()),
        ] {
            ConstCounter::new(value).encode(closed.encode_family(&[("reason", reason)])?)?;
        }
        let overloaded = ConstCounter::new(stats.auth_overloaded_requests());
        overloaded.encode(encoder.encode_descriptor(
            "mde_exporter_http_auth_overloaded",
            "Requests answered 429 at once because too many requests with unknown basic-auth credentials were already waiting for a bcrypt check",
            None,
            overloaded.metric_type(),
        )?)?;
        let unread = ConstCounter::new(stats.timed_out_responses());
        unread.encode(encoder.encode_descriptor(
            "mde_exporter_http_responses_timed_out",
            "Responses the HTTP server dropped, closing the connection, because the client did not read them within the send timeout (http_server_config.send_timeout in the web config file, default 30s)",
            None,
            unread.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The standard `process_*` metrics, read from `/proc/self` at scrape time (the names and
/// meanings of the Prometheus client libraries). On other systems, and for any value `/proc`
/// does not give, the family is left out rather than reported as 0.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for sample in process_samples() {
            match sample.value {
                ProcessValue::Counter(v) => {
                    let c = ConstCounter::new(v);
                    let e = encoder.encode_descriptor(
                        sample.name,
                        sample.help,
                        None,
                        c.metric_type(),
                    )?;
                    c.encode(e)?;
                }
                ProcessValue::Gauge(v) => {
                    let g = ConstGauge::new(v);
                    let e = encoder.encode_descriptor(
                        sample.name,
                        sample.help,
                        None,
                        g.metric_type(),
                    )?;
                    g.encode(e)?;
                }
            }
        }
        Ok(())
    }
}

enum ProcessValue {
    Counter(f64),
    Gauge(f64),
}

struct ProcessSample {
    name: &'static str,
    help: &'static str,
    value: ProcessValue,
}

#[cfg(target_os = "linux")]
fn process_samples() -> Vec<ProcessSample> {
    use procfs::process::{LimitValue, Process};
    let mut out = Vec::new();
    let Ok(me) = Process::myself() else {
        return out;
    };
    let mut push = |name, help, value| out.push(ProcessSample { name, help, value });
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        if ticks > 0.0 {
            push(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                ProcessValue::Counter((stat.utime + stat.stime) as f64 / ticks),
            );
            if let Ok(boot) = procfs::boot_time_secs() {
                push(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    ProcessValue::Gauge(boot as f64 + stat.starttime as f64 / ticks),
                );
            }
        }
        push(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            ProcessValue::Gauge(stat.vsize as f64),
        );
        push(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            ProcessValue::Gauge(stat.rss.saturating_mul(procfs::page_size()) as f64),
        );
    }
    if let Ok(n) = me.fd_count() {
        push(
            "process_open_fds",
            "Number of open file descriptors.",
            ProcessValue::Gauge(n as f64),
        );
    }
    if let Ok(limits) = me.limits()
        && let LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        push(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            ProcessValue::Gauge(max as f64),
        );
    }
    out
}

#[cfg(not(target_os = "linux"))]
fn process_samples() -> Vec<ProcessSample> {
    Vec::new()
}

/// The tenants' quotas, read when `/metrics` is encoded: `mde_api_quota_limit`, `_used`,
/// `_remaining` and `_effective_limit` are computed from the sliding windows at that moment
/// (the windows slide even when no poll runs) and never stored. Stored gauges had to be
/// refreshed by every scrape and after every poll of every tenant, which with N tenants cost
/// N × 24 label sets per scrape and N² per poll interval; now a scrape reads each window once
/// and a poll costs nothing here. See: #11
#[derive(Debug, Default)]
pub struct QuotaGauges {
    quotas: RwLock<Vec<(String, Arc<Mutex<crate::quota::Quota>>)>>,
}

impl QuotaGauges {
    /// The quotas of the configuration now in force (at start-up and after each reload).
    pub fn set<'a>(
        &self,
        quotas: impl IntoIterator<Item = (&'a String, &'a Arc<Mutex<crate::quota::Quota>>)>,
    ) {
        let list = quotas
            .into_iter()
            .map(|(t, q)| (t.clone(), q.clone()))
            .collect();
        *self.quotas.write().unwrap_or_else(PoisonError::into_inner) = list;
    }
}

/// (name, help, value of a window) of the four quota families, in encoding order.
type QuotaFamily = (
    &'static str,
    &'static str,
    fn(&crate::quota::WindowStatus) -> u32,
);

const QUOTA_FAMILIES: [QuotaFamily; 4] = [
    (
        "mde_api_quota_limit",
        "Calls allowed per window by the configured API quota, by endpoint and window (1m, 1h).",
        |w| w.limit,
    ),
    (
        "mde_api_quota_used",
        "Calls sent within the current sliding window, by endpoint and window (1m, 1h).",
        |w| w.used,
    ),
    (
        "mde_api_quota_remaining",
        "Calls still allowed within the current sliding window under the limit in force, by endpoint and window (1m, 1h).",
        |w| w.remaining,
    ),
    (
        "mde_api_quota_effective_limit",
        "Calls per window the exporter allows itself now: the configured limit, lowered after 429 answers (someone else spends the same quota) and raised back after quiet successes.",
        |w| w.effective,
    ),
];

impl Collector for QuotaGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = tokio::time::Instant::now();
        // One short lock per tenant, and none held while encoding: a poll is never blocked
        // by a scrape, nor a scrape by a poll for longer than one window update.
        let statuses: Vec<(String, Vec<crate::quota::WindowStatus>)> = {
            let quotas = self.quotas.read().unwrap_or_else(PoisonError::into_inner);
            quotas
                .iter()
                .map(|(t, q)| {
                    let status = q.lock().unwrap_or_else(PoisonError::into_inner).status(now);
                    (t.clone(), status)
                })
                .collect()
        };
        if statuses.is_empty() {
            return Ok(());
        }
        for (name, help, value) in QUOTA_FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (tenant, windows) in &statuses {
                for w in windows {
                    let labels = [
                        ("tenant", tenant.as_str()),
                        ("endpoint", w.endpoint),
                        ("window", w.window),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_gauge(&i64::from(value(w)))?;
                }
            }
        }
        Ok(())
    }
}

/// Label helpers so call sites stay short.
pub fn tenant(t: &str) -> TenantLabels {
    TenantLabels {
        tenant: t.to_string(),
    }
}

pub fn endpoint(t: &str, e: &str) -> EndpointLabels {
    EndpointLabels {
        tenant: t.to_string(),
        endpoint: e.to_string(),
    }
}

pub fn reason(t: &str, r: &str) -> ReasonLabels {
    ReasonLabels {
        tenant: t.to_string(),
        reason: r.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Enough series in two families far apart in the registry for a body over
    /// [`PARALLEL_FROM`].
    fn large() -> Metrics {
        let m = Metrics::new();
        for i in 0..4000 {
            let labels = MachineScriptLabels {
                tenant: format!("tenant-{}", i % 40),
                machine: format!("machine-{i}.contoso.example"),
                script: "collect-inventory.ps1".into(),
            };
            m.script_exit_code.get_or_create(&labels).set(i % 3);
            m.script_not_run.get_or_create(&labels).set(1);
        }
        m
    }

    /// The body without the `process_*` samples, which change between two encodings.
    fn steady(body: &str) -> String {
        body.lines()
            .filter(|l| !l.starts_with("process_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// See: #11. Once the previous body says it is large, the next is encoded in chunks on two
    /// threads; sent one after the other they are exactly the body one thread makes, in both
    /// formats, with OpenMetrics' `# EOF` once, at the end.
    #[test]
    fn a_large_body_in_chunks_is_the_same_body() {
        for openmetrics in [false, true] {
            let m = large();
            let one = m.encode_chunks(openmetrics).unwrap();
            let one: Vec<String> = one
                .into_iter()
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            assert_eq!(
                one.len(),
                1,
                "the first body has no previous size to split by"
            );
            assert!(one[0].len() > PARALLEL_FROM);
            let two = m.encode_chunks(openmetrics).unwrap();
            // A chunk per family that has series, in registration order.
            assert!(two.len() > 2, "{} chunks", two.len());
            assert!(two.iter().all(|c| !c.is_empty()));
            // (Not assert_eq: a failure would print megabytes.)
            let two = join(two).unwrap();
            assert!(
                steady(&two) == steady(&one[0]),
                "two chunks differ from one"
            );
            assert!(steady(&m.encode(openmetrics).unwrap()) == steady(&one[0]));
            assert_eq!(one[0].matches("# EOF").count(), usize::from(openmetrics));
        }
    }

    /// A small body stays one chunk, encoded on the caller's thread.
    #[test]
    fn a_small_body_is_one_chunk() {
        let m = Metrics::new();
        let first = m.encode(false).unwrap();
        let again = m.encode_chunks(false).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            steady(std::str::from_utf8(&again[0]).unwrap()),
            steady(&first)
        );
    }

    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        m.script_runs
            .get_or_create(&ScriptLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
            })
            .inc_by(2, None, None);
        m.api_duration
            .get_or_create(&endpoint("t", "download"))
            .observe(0.2, None, None);
        let text = m.encode(false).unwrap();
        assert!(
            text.contains("mde_liveresponse_script_runs_total{tenant=\"t\",script=\"a.ps1\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE mde_api_request_duration_seconds histogram"));
        assert!(text.contains("mde_exporter_build_info{version=\""));
        assert!(text.contains("background polls"));
        let om = m.encode(true).unwrap();
        assert!(om.ends_with("# EOF\n"));
    }

    // See: #12
    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_come_from_proc() {
        let text = Metrics::new().encode(false).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing: {text}"))
                .parse()
                .unwrap()
        };
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = chrono::Utc::now().timestamp() as f64;
        let start = value("process_start_time_seconds");
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn exemplars_only_in_openmetrics() {
        let m = Metrics::new();
        m.script_failures
            .get_or_create(&ScriptLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
            })
            .inc_by(
                1,
                Some(TraceLabel {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                }),
                None,
            );
        let om = m.encode(true).unwrap();
        assert!(
            om.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1"),
            "{om}"
        );
        let plain = m.encode(false).unwrap();
        assert!(!plain.contains("trace_id"), "{plain}");
    }

    // See: #9
    #[test]
    fn not_run_counter_and_gauge_keep_their_contract_names() {
        let m = Metrics::new();
        m.script_not_run_total
            .get_or_create(&NotRunLabels {
                tenant: "t".into(),
                script: "a.ps1".into(),
                reason: "action_timeout".into(),
            })
            .inc_by(1, None, None);
        m.script_not_run
            .get_or_create(&MachineScriptLabels {
                tenant: "t".into(),
                machine: "m".into(),
                script: "a.ps1".into(),
            })
            .set(1);
        for openmetrics in [false, true] {
            let text = m.encode(openmetrics).unwrap();
            assert!(
                text.contains(
                    "mde_liveresponse_script_not_run_total{tenant=\"t\",script=\"a.ps1\",reason=\"action_timeout\"} 1"
                ),
                "{text}"
            );
            assert!(
                text.contains(
                    "mde_liveresponse_script_not_run{tenant=\"t\",machine=\"m\",script=\"a.ps1\"} 1\n"
                ),
                "{text}"
            );
        }
    }
}
