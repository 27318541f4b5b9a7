//! The families computed when `/metrics` is encoded, never stored: the `process_*`
//! families (from `/proc/self`), the HTTP server's limits at work, and the API quota windows.
//!
//! Owns reading those sources at scrape time. Does not own the sources (`quota`,
//! `exporter_web`), the groups that register the collectors (`api` the quotas, `exporter` the
//! process and the HTTP server) nor the encoding (`encode`).

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The HTTP server's own limits at work (see `crates/exporter-web`): connections open, those
/// closed by a limit or timeout, and requests refused because too many unknown credentials
/// waited for bcrypt, and responses dropped because the client did not read them in time.
/// Read from the server's counters at scrape time. See: #13, #24
#[derive(Debug)]
pub(super) struct HttpCollector(pub(super) Arc<exporter_web::ServeStats>);

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
pub(super) struct ProcessCollector;

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
pub struct QuotaGauges {
    quotas: RwLock<Vec<(String, crate::quota::SharedQuota)>>,
    /// Whether a tenant's windows are shown now: in a cluster, only the tenants this member
    /// polls (every member holds every configured tenant's windows, and a sum over members
    /// counted each tenant once per member: #31).
    served: RwLock<Served>,
}

/// Whether a tenant is served here now (asked at each scrape).
pub type Served = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for QuotaGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .quotas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("QuotaGauges").field("tenants", &n).finish()
    }
}

impl Default for QuotaGauges {
    fn default() -> Self {
        QuotaGauges {
            quotas: RwLock::default(),
            served: RwLock::new(std::sync::Arc::new(|_: &str| true)),
        }
    }
}

impl QuotaGauges {
    /// The quotas of the configuration now in force (at start-up and after each reload), shown
    /// for the tenants `served` says are served here when a scrape asks.
    pub fn set<'a>(
        &self,
        quotas: impl IntoIterator<Item = (&'a String, &'a crate::quota::SharedQuota)>,
        served: Served,
    ) {
        let list = quotas
            .into_iter()
            .map(|(t, q)| (t.clone(), q.clone()))
            .collect();
        *self.quotas.write().unwrap_or_else(PoisonError::into_inner) = list;
        *self.served.write().unwrap_or_else(PoisonError::into_inner) = served;
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
            let served = self
                .served
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let quotas = self.quotas.read().unwrap_or_else(PoisonError::into_inner);
            quotas
                .iter()
                .filter(|(t, _)| served(t))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::Metrics;

    /// In a cluster a member shows the quota windows of the tenants it polls, not of every
    /// tenant configured: a sum over members counted each tenant once per member. See: #31
    #[test]
    fn quota_gauges_show_the_tenants_served_here() {
        let m = Metrics::new();
        let quota = || crate::quota::Quota::shared(&crate::config::QuotaConfig::default());
        let (a, b) = ("a".to_string(), "b".to_string());
        let (qa, qb) = (quota(), quota());
        let shown = |m: &Metrics| -> Vec<String> {
            let mut t: Vec<String> = m
                .encode(false)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("mde_api_quota_limit{"))
                .filter_map(|l| l.split("tenant=\"").nth(1))
                .filter_map(|l| l.split('"').next())
                .map(str::to_string)
                .collect();
            t.dedup();
            t
        };
        m.api
            .set_quotas([(&a, &qa), (&b, &qb)], std::sync::Arc::new(|_: &str| true));
        assert_eq!(shown(&m), ["a", "b"]);
        m.api.set_quotas(
            [(&a, &qa), (&b, &qb)],
            std::sync::Arc::new(|t: &str| t == "b"),
        );
        assert_eq!(shown(&m), ["b"]);
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
}
