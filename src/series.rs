//! The per-machine series: `mde_liveresponse_script_{exit_code,errors_present,last_run_timestamp_seconds}`
//! and `mde_liveresponse_script_not_run` per (tenant, machine, script), and the per-tenant
//! series started at 0.
//!
//! Owns deciding them from a run, restoring them from the state after a start, expiring them
//! (`series_ttl` by each tenant's API time, then the oldest beyond `max_series`, counted in
//! `mde_exporter_series_evicted_total`), and which label values a tenant's series start at 0
//! for (endpoints, reasons, final statuses). Does not own what is remembered (the state
//! decides which run is the latest and removes what expires), when expiry runs (`shared`'s
//! housekeeping) nor the metric definitions and their writing (`metrics`' recording methods).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics::{MachineScriptLabels, Metrics, ScriptSeries, TenantSeries};
use crate::state::{LastRun, SeriesKey, State};

/// `reason` of `mde_exporter_series_evicted_total`: no run within `series_ttl`.
const EVICTED_TTL: &str = "ttl";
/// `reason` of `mde_exporter_series_evicted_total`: the oldest beyond `max_series`.
const EVICTED_MAX: &str = "max_series";

fn labels((tenant, machine, script): SeriesKey) -> MachineScriptLabels {
    MachineScriptLabels {
        tenant,
        machine,
        script,
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Set the gauges of one series from its latest run.
pub fn set(m: &Metrics, labels: &MachineScriptLabels, run: &LastRun) {
    m.set_script_series(
        labels,
        ScriptSeries {
            exit_code: run.exit_code,
            errors_present: run.errors_present,
            end_time: run.end_time.timestamp_millis() as f64 / 1000.0,
        },
    );
}

/// Set the per-machine gauges from the state (after a restart they come back).
///
/// Only for the tenants `configured` now: a tenant moved to another shard (or removed)
/// keeps its runs in this state file, and exposing them here would show its per-machine
/// series twice across shards, frozen in one. See: #11
pub fn restore(m: &Metrics, state: &Mutex<State>, configured: impl Fn(&str) -> bool) {
    let runs: Vec<_> = lock(state)
        .last_runs()
        .iter()
        .filter(|((tenant, _, _), _)| configured(tenant))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, run) in runs {
        set(m, &labels(key), &run);
    }
}

/// Remove the series past `ttl` or over `max` from the state and the metrics: the not-run
/// series first, then the run series, each eviction counted by its reason. The TTL is judged
/// per tenant at `now_of(tenant)`, the API's time (see `crate::clock`); a tenant without one
/// (its local clock disagrees with the API's) keeps its series past the TTL. See: #24 item 7
pub fn expire(
    m: &Metrics,
    state: &Mutex<State>,
    ttl: Duration,
    max: usize,
    now_of: &dyn Fn(&str) -> Option<DateTime<Utc>>,
) {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let cutoff = |tenant: &str| {
        now_of(tenant).map(|now| {
            now.checked_sub_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        })
    };
    expire_not_run(m, state, &cutoff, max);
    // Which series are past the TTL is known before they go; the rest of what `expire`
    // removes was evicted by `max_series`.
    let expired = {
        let mut s = lock(state);
        let stale: std::collections::BTreeSet<_> = s
            .last_runs()
            .iter()
            .filter(|(k, r)| cutoff(&k.0).is_some_and(|c| r.end_time < c))
            .map(|(k, _)| k.clone())
            .collect();
        s.expire(&cutoff, max).map(|removed| (stale, removed))
    };
    let (stale, removed) = match expired {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot expire per-machine series");
            return;
        }
    };
    if removed.len() > stale.len() {
        tracing::warn!(
            evicted = removed.len() - stale.len(),
            max_series = max,
            "per-machine series over max_series: the oldest were removed"
        );
    }
    for key in removed {
        let why = if stale.contains(&key) {
            EVICTED_TTL
        } else {
            EVICTED_MAX
        };
        m.evict_script_series(&labels(key), why);
    }
}

/// `mde_liveresponse_script_not_run` series go with the same TTL and cap as the other
/// per-machine series. (Each poll of every tenant used to sort every tenant's attempts to
/// find them. See: #11)
fn expire_not_run(m: &Metrics, state: &Mutex<State>, cutoff: crate::state::Cutoff<'_>, max: usize) {
    let removed = lock(state).expire_attempts(cutoff, max);
    match removed {
        Ok(removed) => {
            for key in removed {
                m.remove_script_not_run(&labels(key));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot expire not-run series"),
    }
}

/// Start at 0 every series of tenant `t` whose labels are known from the configuration, so
/// that dashboards and `rate()` see 0 instead of "No data" until the first event: per API
/// endpoint (throttled, Retry-After, request durations), per known reason (fetch failures,
/// evicted series), per final action status, and the per-tenant counters (polls, files,
/// bytes, invalid actions, pending results). Values already there are kept, so a reload can
/// call it again. (Also used by the render benchmark, to measure the series a tenant has.)
pub fn init_tenant_series(m: &Metrics, t: &str) {
    use crate::mde::ErrorKind;
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
    let endpoints: Vec<&str> = Endpoint::ALL.iter().map(|ep| ep.as_str()).collect();
    let reasons: Vec<&str> = REASONS.iter().map(|r| r.as_str()).collect();
    m.init_tenant_series(
        t,
        &TenantSeries {
            endpoints: &endpoints,
            download: crate::mde::DOWNLOAD,
            fetch_failures: &reasons,
            evicted: &[EVICTED_TTL, EVICTED_MAX],
            final_statuses: &["Succeeded", "Failed", "TimeOut", "Cancelled"],
        },
    );
}
