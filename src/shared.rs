//! What the collectors and the HTTP server share: the configuration in force ([`Current`],
//! swapped whole on a reload), the metrics, the state, the quotas, the collectors' settings,
//! and what the status page and readiness know of each tenant.
//!
//! Owns these shared structures, the per-tenant status (recent transcripts and errors),
//! readiness and its reasons, reading the quota windows for the status page and poll logs,
//! when per-machine series are checked for expiry (housekeeping) and by which time (each
//! tenant's API clock, see `api::clock`, with the skew gauges), and the hand-over of a
//! reload request from the server to the supervisor, with its outcome's error
//! ([`ReloadError`]), and how the tasks of a tenant a reload keeps take the new `Shared`
//! ([`SharedFeed`]). Does not own polling (the collector),
//! the per-machine series themselves (`series`), the quota gauges (read at scrape time by
//! `metrics`), routes (the server) or start-up and reloads themselves (the app).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::SharedQuota;
use crate::api::clock::ApiClock;
use crate::config::Config;
use crate::metrics::Metrics;
pub use crate::record::series::init_tenant_series;
use crate::record::state::State;

/// At most how often per-machine series are checked for expiry (see [`Shared::housekeeping`]).
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// How many recent transcripts (and errors) the landing page shows per tenant.
const RECENT: usize = 20;

/// A reload request and where its outcome goes.
pub type ReloadRequest = oneshot::Sender<Result<(), ReloadError>>;

/// Why a reload did not put a new configuration in force (the old one stays). One outcome
/// answers every request that shared the reload, so it is `Clone`: the causes are kept as
/// their messages (the text `POST /-/reload` answers and the log line shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("the exporter is shutting down")]
    ShuttingDown,
    /// Demo mode: there is no file to read again.
    #[error("no --config.file to reload (demo mode)")]
    NoConfigFile,
    /// The configuration did not load (the loader's error).
    #[error("{0}")]
    Load(String),
    /// The new configuration could not be put in force (the start-up error's message).
    #[error("{0}")]
    Apply(String),
}

/// The configuration in force: swapped whole on a successful reload, so a handler always
/// sees one consistent set of tenants, quotas and settings.
pub type Current = Arc<RwLock<Arc<Shared>>>;

/// The `Shared` in force now.
pub fn shared_now(c: &Current) -> Arc<Shared> {
    c.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Where a tenant's tasks kept across a reload take the configuration put in force (#34):
/// the supervisor sends each new `Shared`, and a task takes it between two polls.
pub type SharedFeed = watch::Receiver<Arc<Shared>>;

/// Wait until `feed` has a configuration newer than the one taken; never, without a feed (or
/// once its sender is gone).
pub async fn next_shared(feed: &mut Option<SharedFeed>) {
    match feed {
        Some(f) => {
            if f.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The configuration `feed` has, when newer than the one taken (marked taken).
pub fn newer_shared(feed: &mut Option<SharedFeed>) -> Option<Arc<Shared>> {
    let f = feed.as_mut()?;
    f.has_changed()
        .unwrap_or(false)
        .then(|| f.borrow_and_update().clone())
}

/// Ask the supervisor for a reload and wait for its outcome.
pub async fn request_reload(tx: &mpsc::Sender<ReloadRequest>) -> Result<(), ReloadError> {
    let (reply, outcome) = oneshot::channel();
    tx.send(reply)
        .await
        .map_err(|_| ReloadError::ShuttingDown)?;
    outcome.await.map_err(|_| ReloadError::ShuttingDown)?
}

pub use crate::record::outcome::RecentTranscript;

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
    /// Application permissions the token's `roles` claim lacks (see `api::auth`).
    pub missing_permissions: Vec<String>,
    pub pending: usize,
    pub recent: VecDeque<RecentTranscript>,
    pub recent_errors: VecDeque<RecentError>,
    /// How discovery went at the last poll and when the next one is (#20).
    pub discovery: DiscoveryStatus,
}

/// What the status page shows of a tenant's discovery (#20).
#[derive(Debug, Clone, Default)]
pub struct DiscoveryStatus {
    /// The last poll's discovery outcome: `complete`, or why it ended early.
    pub outcome: String,
    /// Followed actions a poll cut short did not read again; the next poll reads them first.
    pub rereads_pending: usize,
    /// `Some(false)` once the API refused the status-filtered in-flight listing (400).
    pub in_flight_filter: Option<bool>,
    /// The time until the next poll, and why the cadence chose it.
    pub interval: Option<Duration>,
    pub interval_reason: String,
}

impl TenantStatus {
    pub(crate) fn push_recent(&mut self, transcript: RecentTranscript) {
        push_newest(&mut self.recent, transcript);
    }

    pub(crate) fn push_error(&mut self, message: String) {
        let error = RecentError {
            at: Utc::now(),
            message,
            trace_id: crate::telemetry::current_trace_label().map(|t| t.trace_id),
        };
        push_newest(&mut self.recent_errors, error);
    }
}

/// Put `item` first in `recent`, which keeps the newest [`RECENT`], in the room they take: a
/// `VecDeque` doubles as it grows (16 places of 140 bytes for a tenant's 10 transcripts, 32
/// for 20), and this one is kept for the tenant's life. A push is rare (a transcript, an
/// error), so growing one place at a time costs nothing that shows. See: #34
fn push_newest<T>(recent: &mut VecDeque<T>, item: T) {
    if recent.len() >= RECENT {
        recent.truncate(RECENT - 1);
    } else {
        recent.reserve_exact(1);
    }
    recent.push_front(item);
}

/// The settings every tenant's collector shares, taken from the configuration: the poll
/// interval, the transcript cap, the per-machine series TTL and cap, and transcript logging.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub poll_interval: Duration,
    pub max_transcript_bytes: u64,
    pub series_ttl: Duration,
    pub max_series: usize,
    /// How far the local clock may be from the API's before time-based decisions are refused.
    pub max_clock_skew: Duration,
    pub transcript_log: crate::config::Redaction,
    /// Which scripts' output becomes metrics (#21).
    pub script_metrics: crate::config::ScriptMetrics,
    /// Failure signatures per script with a series of their own (#36).
    pub failure_signatures_top_k: usize,
    /// Whether a tenant's self-monitoring series start at 0 (`self_monitoring:`, #34).
    pub tenant_series_at_zero: bool,
}

impl CollectorSettings {
    pub fn from_config(c: &Config) -> Self {
        CollectorSettings {
            poll_interval: c.poll_interval,
            max_transcript_bytes: c.max_transcript_bytes,
            series_ttl: c.series_ttl,
            max_series: c.max_series,
            max_clock_skew: c.max_clock_skew,
            transcript_log: c.transcript_log.clone(),
            script_metrics: c.script_metrics.clone(),
            failure_signatures_top_k: c.failure_signatures_top_k,
            tenant_series_at_zero: c.self_monitoring.tenant_series_at_zero,
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
    /// Each tenant's view of the API's clock (its client reads answers into it; kept across
    /// reloads for a tenant whose API did not change).
    pub clocks: BTreeMap<String, ApiClock>,
    pub settings: CollectorSettings,
    /// Trace UI link template for the landing page (`{trace_id}` is replaced).
    pub trace_url: Option<String>,
    /// When per-machine series were last checked for expiry.
    pub last_expiry: Mutex<Option<Instant>>,
    /// In a cluster (#31): the tenants this member owns now; a tenant configured but owned
    /// by another member is not served here.
    pub ownership: Option<Arc<crate::cluster::Ownership>>,
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
        let now_of = self.api_times();
        let now_of = |t: &str| now_of.get(t).copied().unwrap_or_else(|| Some(Utc::now()));
        crate::record::series::expire(
            &self.metrics,
            &self.state,
            self.settings.series_ttl,
            self.settings.max_series,
            &now_of,
            |t| self.serves(t),
        );
        // Script-output sets past their rule's ttl (#21), from /metrics and the state file.
        let expired = self.metrics.script_metrics.expire(&now_of);
        if let Err(e) = self.with_state(|s| s.remove_script_sets(&expired)) {
            tracing::error!(error = %e, "cannot expire script_metrics sets");
        }
    }

    /// Each configured tenant's time to judge expiry by: the API's, or `None` when its clock
    /// refuses (see [`crate::api::clock::ApiClock::decide`]); the skew gauges of the tenants
    /// served here follow (refreshed, never created: a `Shared` a reload replaced runs this
    /// too while a poll that took it ends, after a removed tenant's series went). A tenant not
    /// configured here has no API clock in this process: its entries of the state file expire
    /// by the local clock, as they always did. See: #24 item 7, #32
    fn api_times(&self) -> BTreeMap<String, Option<DateTime<Utc>>> {
        let (local, at) = (Utc::now(), Instant::now());
        self.clocks
            .iter()
            .map(|(t, clock)| {
                if let Some(skew) = clock.skew(local, at)
                    && self.serves(t)
                {
                    self.metrics
                        .exporter
                        .refresh_clock_skew(t, skew.num_milliseconds() as f64 / 1000.0);
                }
                let v = clock.decide(t, local, at, self.settings.max_clock_skew);
                (t.clone(), v.time())
            })
            .collect()
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

    /// Hold the kept transcript excerpts to the `transcript_log` policy in force (at start and
    /// after each reload): a stricter policy reaches what the state already holds.
    pub fn restrict_excerpts(&self) {
        let policy = &self.settings.transcript_log;
        match self.with_state(|s| s.restrict_excerpts(policy)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                excerpts = n,
                "kept transcript excerpts held to the transcript_log policy in force"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot hold the kept transcript excerpts to the transcript_log policy")
            }
        }
    }

    /// Set the per-machine gauges from the state, for the tenants configured now (see
    /// [`crate::record::series::restore`]).
    pub fn restore_series(&self) {
        crate::record::series::restore(
            &self.metrics,
            &self.state,
            |t| self.serves(t),
            &self.settings.transcript_log,
        );
    }

    /// Remove from /metrics the per-machine series of tenants not configured now (see
    /// [`crate::record::series::drop_unserved`]), every other series of those tenants (see
    /// [`crate::metrics::Metrics::forget_tenant`]) and the script-output sets of tenants or
    /// rules not configured now; after each reload (at start they are not restored).
    pub fn drop_unserved_series(&self) {
        let n =
            crate::record::series::drop_unserved(&self.metrics, &self.state, |t| self.serves(t));
        if n > 0 {
            tracing::info!(
                series = n,
                "per-machine series of tenants not served here removed from /metrics"
            );
        }
        // Every other series of a tenant not served now, in every family with a `tenant`
        // label: counters, poll and discovery gauges, request histograms (#32).
        for tenant in self.metrics.tenants_shown() {
            if !self.serves(&tenant) {
                let series = self.metrics.forget_tenant(&tenant);
                tracing::info!(
                    tenant,
                    series,
                    "series of a tenant not served here removed from /metrics"
                );
            }
        }
        // And the script-output sets of a tenant or a rule the configuration left out (#21).
        let sets = self
            .metrics
            .script_metrics
            .retain(&|tenant, script| self.reads_script(tenant, script));
        if sets > 0 {
            tracing::info!(
                sets,
                "script_metrics sets of tenants or rules not configured now removed from /metrics"
            );
        }
    }

    /// Whether this process reads `script`'s output as metrics for `tenant`: a tenant served
    /// here, with a `script_metrics` rule for the script (#21).
    pub fn reads_script(&self, tenant: &str, script: &str) -> bool {
        self.serves(tenant)
            && self
                .settings
                .script_metrics
                .rule_for(tenant, script)
                .is_some()
    }

    /// Start at 0 the series of every tenant configured now (see [`init_tenant_series`]).
    /// Called when a configuration is prepared, so a reload adds its new tenants.
    pub fn init_series(&self) {
        self.metrics
            .results
            .signatures()
            .set_top_k(self.settings.failure_signatures_top_k);
        for t in self.quotas.keys() {
            self.start_tenant_series(t);
        }
    }

    /// Start at 0 the series of tenant `t` (see [`init_tenant_series`]), unless
    /// `self_monitoring.tenant_series_at_zero` is false: its series then appear with their
    /// first event (#34).
    pub fn start_tenant_series(&self, t: &str) {
        if self.settings.tenant_series_at_zero {
            init_tenant_series(&self.metrics, t);
        }
    }

    /// Whether `tenant` is served here: configured in this configuration (and, with static
    /// shards, on this shard; in a cluster, owned by this member now). Its entries in the
    /// state, its series and its script sets are shown only then.
    pub fn serves(&self, tenant: &str) -> bool {
        self.quotas.contains_key(tenant) && self.ownership.as_ref().is_none_or(|o| o.owns(tenant))
    }

    /// Whether a configured tenant is polled here now, as a scrape asks it (the quota gauges):
    /// every tenant, or in a cluster those this member owns.
    pub fn served(&self) -> crate::metrics::Served {
        let ownership = self.ownership.clone();
        Arc::new(move |t: &str| ownership.as_ref().is_none_or(|o| o.owns(t)))
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn update_status(&self, tenant: &str, f: impl FnOnce(&mut TenantStatus)) {
        let mut map = self.status.write().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(tenant.to_string()).or_default());
    }

    /// Every tenant holds a token with the permissions it needs and has finished one poll
    /// (in a cluster: every tenant this member owns; ready once it reaches the database).
    pub fn ready(&self) -> bool {
        let map = self.status.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = &self.ownership {
            return o.view().store_up
                && self.quotas.keys().filter(|t| o.owns(t)).all(|t| {
                    map.get(t).is_some_and(|s| {
                        s.has_token && s.polls > 0 && s.missing_permissions.is_empty()
                    })
                });
        }
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
            .filter(|(t, s)| self.serves(t) && !s.missing_permissions.is_empty())
            .map(|(t, s)| {
                format!(
                    "tenant {t}: the token lacks the application permission {} (Machine.Read.All or Machine.ReadWrite.All on WindowsDefenderATP, with admin consent)",
                    s.missing_permissions.join(", ")
                )
            })
            .collect()
    }

    /// One tenant's status now (the default before its first poll).
    pub fn tenant_status(&self, tenant: &str) -> TenantStatus {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    pub fn status_snapshot(&self) -> BTreeMap<String, TenantStatus> {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See: #34. The recent transcripts and errors of a tenant take the room they hold, at
    /// most [`RECENT`], newest first.
    #[test]
    fn the_recent_lists_take_the_room_they_hold() {
        let mut status = TenantStatus::default();
        for i in 0..10 {
            status.push_error(format!("e{i}"));
        }
        assert_eq!(status.recent_errors.len(), 10);
        assert_eq!(status.recent_errors.capacity(), 10);
        for i in 10..45 {
            status.push_error(format!("e{i}"));
        }
        assert_eq!(status.recent_errors.len(), RECENT);
        assert_eq!(status.recent_errors.capacity(), RECENT);
        let kept: Vec<&str> = status
            .recent_errors
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        let newest: Vec<String> = (25..45).rev().map(|i| format!("e{i}")).collect();
        assert_eq!(kept, newest);
        // A transcript shown holds its texts without spare capacity: 96 bytes, not 128.
        assert!(size_of::<RecentTranscript>() <= 96);
    }
}
