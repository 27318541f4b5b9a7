//! What the collectors and the HTTP server share: the configuration in force, the metrics,
//! the state file, the quotas, and what the status page knows of each tenant.
//!
//! Owns the shared structures and the local bookkeeping done on them (quota gauges that slide
//! with time, per-machine series restored from and expired in the state, readiness), and the
//! hand-over of a reload request from the server to the supervisor. Does not own polling (the
//! collector), routes (the server) or start-up and reloads themselves (the app).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::Config;
use crate::mde::SharedQuota;
use crate::metrics::{MachineScriptLabels, Metrics};
use crate::state::{LastRun, State};

/// `reason` of `mde_exporter_series_evicted_total`: no run within `series_ttl`.
const EVICTED_TTL: &str = "ttl";
/// `reason` of `mde_exporter_series_evicted_total`: the oldest beyond `max_series`.
const EVICTED_MAX: &str = "max_series";
/// At most how often per-machine series are checked for expiry (see [`Shared::housekeeping`]).
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// How many recent transcripts (and errors) the landing page shows per tenant.
const RECENT: usize = 20;

/// A reload request and where its outcome goes.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// The configuration in force: swapped whole on a successful reload, so a handler always
/// sees one consistent set of tenants, quotas and settings.
pub type Current = Arc<RwLock<Arc<Shared>>>;

/// The `Shared` in force now.
pub fn shared_now(c: &Current) -> Arc<Shared> {
    c.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Ask the supervisor for a reload and wait for its outcome.
pub async fn request_reload(tx: &mpsc::Sender<ReloadRequest>) -> Result<(), String> {
    let (reply, outcome) = oneshot::channel();
    tx.send(reply)
        .await
        .map_err(|_| "the exporter is shutting down".to_string())?;
    outcome
        .await
        .map_err(|_| "the exporter is shutting down".to_string())?
}

/// A transcript as shown on the landing page.
#[derive(Debug, Clone)]
pub struct RecentTranscript {
    pub action_id: String,
    pub index: u32,
    pub machine: String,
    pub script: String,
    pub exit_code: i64,
    pub errors_present: bool,
    pub end_time: Option<DateTime<Utc>>,
    /// The trace that retrieved it, when tracing is on.
    pub trace_id: Option<String>,
}

/// A problem shown on the landing page.
#[derive(Debug, Clone)]
pub struct RecentError {
    pub at: DateTime<Utc>,
    pub message: String,
    pub trace_id: Option<String>,
}

/// What the landing page and readiness know of a tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantStatus {
    pub polls: u64,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_poll_ok: bool,
    pub last_error: Option<String>,
    pub has_token: bool,
    /// Application permissions the token's `roles` claim lacks (see `mde::auth`).
    pub missing_permissions: Vec<String>,
    pub pending: usize,
    pub recent: VecDeque<RecentTranscript>,
    pub recent_errors: VecDeque<RecentError>,
}

impl TenantStatus {
    pub(crate) fn push_recent(&mut self, transcript: RecentTranscript) {
        self.recent.push_front(transcript);
        self.recent.truncate(RECENT);
    }

    pub(crate) fn push_error(&mut self, message: String) {
        self.recent_errors.push_front(RecentError {
            at: Utc::now(),
            message,
            trace_id: crate::telemetry::current_trace_label().map(|t| t.trace_id),
        });
        self.recent_errors.truncate(RECENT);
    }
}

/// Settings every tenant's collector shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    pub max_transcript_bytes: u64,
    pub series_ttl: Duration,
    pub max_series: usize,
    pub transcript_log: crate::config::Redaction,
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        Settings {
            poll_interval: c.poll_interval,
            max_transcript_bytes: c.max_transcript_bytes,
            series_ttl: c.series_ttl,
            max_series: c.max_series,
            transcript_log: c.transcript_log.clone(),
        }
    }
}

/// State shared by all collectors and the HTTP server.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// Kept across configuration reloads.
    pub state: Arc<Mutex<State>>,
    /// Kept across configuration reloads.
    pub status: Arc<RwLock<BTreeMap<String, TenantStatus>>>,
    pub quotas: BTreeMap<String, SharedQuota>,
    pub settings: Settings,
    /// Trace UI link template for the landing page (`{trace_id}` is replaced).
    pub trace_url: Option<String>,
    /// When per-machine series were last checked for expiry.
    pub last_expiry: Mutex<Option<Instant>>,
}

impl Shared {
    /// The collectors' bookkeeping after each poll: per-machine series past `series_ttl` or
    /// over `max_series` removed from the state and the metrics. The walk over every series
    /// runs at most once per `EXPIRY_EVERY` (or poll interval, if shorter) whichever tenant
    /// calls it: with N tenants it used to run N times per poll interval. (The quota gauges
    /// are read at scrape time, see `metrics::QuotaGauges`.) See: #11
    pub fn housekeeping(&self) {
        let now = Instant::now();
        let every = EXPIRY_EVERY.min(self.settings.poll_interval);
        {
            let mut last = self
                .last_expiry
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| now.saturating_duration_since(t) < every) {
                return;
            }
            *last = Some(now);
        }
        self.expire_series();
    }

    /// `mde_liveresponse_script_not_run` series go with the same TTL and cap as the other
    /// per-machine series. (Each poll of every tenant used to sort every tenant's attempts to
    /// find them. See: #11)
    fn expire_not_run(&self, cutoff: DateTime<Utc>) {
        match self.with_state(|s| s.expire_attempts(cutoff, self.settings.max_series)) {
            Ok(removed) => {
                for (tenant, machine, script) in removed {
                    self.metrics.script_not_run.remove(&MachineScriptLabels {
                        tenant,
                        machine,
                        script,
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot expire not-run series"),
        }
    }

    /// The quota windows of one tenant, now (`None` for a tenant not configured). A poll asks
    /// for its own tenant's only: asking for every tenant's made each poll cost as much as
    /// the number of tenants. See: #11
    pub fn quota_status_of(&self, tenant: &str) -> Option<Vec<crate::quota::WindowStatus>> {
        let q = self.quotas.get(tenant)?;
        let status = q
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status(Instant::now());
        Some(status)
    }

    /// The quota windows of every tenant, now.
    pub fn quota_status(&self) -> BTreeMap<String, Vec<crate::quota::WindowStatus>> {
        let now = Instant::now();
        self.quotas
            .iter()
            .map(|(t, q)| {
                let status = q.lock().unwrap_or_else(PoisonError::into_inner).status(now);
                (t.clone(), status)
            })
            .collect()
    }

    /// Set the per-machine gauges from the state (after a restart they come back).
    ///
    /// Only for the tenants configured now: a tenant moved to another shard (or removed)
    /// keeps its runs in this state file, and exposing them here would show its per-machine
    /// series twice across shards, frozen in one. See: #11
    pub fn restore_series(&self) {
        let runs: Vec<_> = self.with_state(|s| {
            s.last_runs()
                .iter()
                .filter(|((tenant, _, _), _)| self.quotas.contains_key(tenant))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        for ((tenant, machine, script), run) in runs {
            self.set_series(
                MachineScriptLabels {
                    tenant,
                    machine,
                    script,
                },
                &run,
            );
        }
    }

    pub(crate) fn set_series(&self, labels: MachineScriptLabels, run: &LastRun) {
        let m = &self.metrics;
        m.script_exit_code.get_or_create(&labels).set(run.exit_code);
        m.script_errors_present
            .get_or_create(&labels)
            .set(i64::from(run.errors_present));
        m.script_last_run
            .get_or_create(&labels)
            .set(run.end_time.timestamp_millis() as f64 / 1000.0);
    }

    /// Start at 0 every series whose labels are known from the configuration, so that
    /// dashboards and `rate()` see 0 instead of "No data" until the first event: per tenant
    /// and API endpoint (throttled, Retry-After, request durations), per tenant and known
    /// reason (fetch failures, evicted series), per tenant and final action status, and the
    /// per-tenant counters (polls, files, bytes, invalid actions, pending results). Called
    /// when a configuration is prepared, so a reload adds its new tenants; values already
    /// there are kept.
    pub fn init_series(&self) {
        for t in self.quotas.keys() {
            init_tenant_series(&self.metrics, t);
        }
    }

    fn expire_series(&self) {
        let ttl =
            chrono::Duration::from_std(self.settings.series_ttl).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.expire_not_run(cutoff);
        // Which series are past the TTL is known before they go; the rest of what `expire`
        // removes was evicted by `max_series`.
        let expired = self.with_state(|s| {
            let stale: std::collections::BTreeSet<_> = s
                .last_runs()
                .iter()
                .filter(|(_, r)| r.end_time < cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            s.expire(cutoff, self.settings.max_series)
                .map(|removed| (stale, removed))
        });
        let (stale, removed) = match expired {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot expire per-machine series");
                return;
            }
        };
        for key in &removed {
            let why = if stale.contains(key) {
                EVICTED_TTL
            } else {
                EVICTED_MAX
            };
            self.metrics
                .series_evicted
                .get_or_create(&crate::metrics::reason(&key.0, why))
                .inc();
        }
        if removed.len() > stale.len() {
            tracing::warn!(
                evicted = removed.len() - stale.len(),
                max_series = self.settings.max_series,
                "per-machine series over max_series: the oldest were removed"
            );
        }
        for (tenant, machine, script) in removed {
            let labels = MachineScriptLabels {
                tenant,
                machine,
                script,
            };
            self.metrics.script_exit_code.remove(&labels);
            self.metrics.script_errors_present.remove(&labels);
            self.metrics.script_last_run.remove(&labels);
        }
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn update_status(&self, tenant: &str, f: impl FnOnce(&mut TenantStatus)) {
        let mut map = self.status.write().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(tenant.to_string()).or_default());
    }

    /// Every tenant holds a token with the permissions it needs and has finished one poll.
    pub fn ready(&self) -> bool {
        let map = self.status.read().unwrap_or_else(PoisonError::into_inner);
        !self.quotas.is_empty()
            && self.quotas.keys().all(|t| {
                map.get(t)
                    .is_some_and(|s| s.has_token && s.polls > 0 && s.missing_permissions.is_empty())
            })
    }

    /// Why `ready` is false, beyond waiting: one line per tenant whose token lacks
    /// permissions.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let map = self.status.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(t, s)| self.quotas.contains_key(*t) && !s.missing_permissions.is_empty())
            .map(|(t, s)| {
                format!(
                    "tenant {t}: the token lacks the application permission {} (Machine.Read.All or Machine.ReadWrite.All on WindowsDefenderATP, with admin consent)",
                    s.missing_permissions.join(", ")
                )
            })
            .collect()
    }

    pub fn status_snapshot(&self) -> BTreeMap<String, TenantStatus> {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The series of one tenant that [`Shared::init_series`] starts at 0 (also used by the render
/// benchmark, to measure the series a tenant really has).
pub fn init_tenant_series(m: &Metrics, t: &str) {
    use crate::mde::ErrorKind;
    use crate::metrics::{StatusLabels, endpoint, reason, tenant};
    use crate::quota::Endpoint;
    // Every reason a result can be given up for (quota and 429s only pause fetching).
    const REASONS: [ErrorKind; 10] = [
        ErrorKind::Token,
        ErrorKind::NotFound,
        ErrorKind::Forbidden,
        ErrorKind::ExpiredLink,
        ErrorKind::HttpError,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::Malformed,
        ErrorKind::TooLarge,
        ErrorKind::UntrustedLink,
    ];
    const FINAL: [&str; 4] = ["Succeeded", "Failed", "TimeOut", "Cancelled"];
    for ep in Endpoint::ALL {
        let labels = endpoint(t, ep.as_str());
        let _ = m.api_throttled.get_or_create(&labels);
        let _ = m.retry_after.get_or_create(&labels);
        let _ = m.api_duration.get_or_create(&labels);
    }
    let _ = m
        .api_duration
        .get_or_create(&endpoint(t, crate::mde::DOWNLOAD));
    for r in REASONS {
        let _ = m.fetch_failures.get_or_create(&reason(t, r.as_str()));
    }
    for r in [EVICTED_TTL, EVICTED_MAX] {
        let _ = m.series_evicted.get_or_create(&reason(t, r));
    }
    for status in FINAL {
        let _ = m.actions.get_or_create(&StatusLabels {
            tenant: t.to_string(),
            status: status.to_string(),
        });
    }
    let labels = tenant(t);
    let _ = m.poll_duration.get_or_create(&labels);
    let _ = m.files.get_or_create(&labels);
    let _ = m.file_bytes.get_or_create(&labels);
    let _ = m.transcript_bytes.get_or_create(&labels);
    let _ = m.invalid_actions.get_or_create(&labels);
    let _ = m.pending_results.get_or_create(&labels);
}
