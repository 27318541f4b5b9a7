//! The per-machine series: `mde_liveresponse_script_{exit_code,errors_present,last_run_timestamp_seconds}`
//! and `mde_liveresponse_script_not_run` per (tenant, machine, script), and the per-tenant
//! series started at 0.
//!
//! Owns deciding them from a run, restoring them from the state after a start, dropping those
//! of tenants not served here (another shard's, or removed by a reload), expiring them
//! (`series_ttl` by each tenant's API time, then the oldest beyond `max_series`, counted in
//! `mde_exporter_series_evicted_total`), and which label values a tenant's series start at 0
//! for (endpoints, reasons, final statuses). Does not own what is remembered (the state
//! decides which run is the latest and removes what expires), when expiry runs (`shared`'s
//! housekeeping) nor the metric definitions and their writing (`metrics`' recording methods).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics::{MachineScriptLabels, Metrics, ScriptSeries, TenantSeries};
use crate::record::state::{LastRun, SeriesKey, State};

/// `reason` of `mde_exporter_series_evicted_total`: no run within `series_ttl`.
const EVICTED_TTL: &str = "ttl";
/// `reason` of `mde_exporter_series_evicted_total`: the oldest beyond `max_series`.
const EVICTED_MAX: &str = "max_series";

/// A series' key, owned.
fn owned((tenant, machine, script): (&str, &str, &str)) -> SeriesKey {
    (tenant.into(), machine.into(), script.into())
}

fn labels((tenant, machine, script): SeriesKey) -> MachineScriptLabels {
    MachineScriptLabels {
        tenant: tenant.into(),
        machine: machine.into(),
        script: script.into(),
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Set the gauges of one series from its latest run, and count its failure signature (#36).
pub fn set(m: &Metrics, labels: &MachineScriptLabels, run: &LastRun) {
    m.results.set_script_series(
        labels,
        ScriptSeries {
            exit_code: run.exit_code,
            errors_present: run.errors_present,
            end_time: run.end_time.timestamp_millis() as f64 / 1000.0,
        },
    );
    let signature = run.signature.as_ref();
    m.results.set_script_signature(
        labels,
        signature.map(|s| (s.id.as_str(), s.template.as_str())),
    );
}

/// Set the per-machine gauges from the state (after a restart they come back), with the
/// failure signatures as `policy` lets them out now (a stricter one than when they were kept
/// reaches them).
///
/// Only for the tenants `configured` now: a tenant moved to another shard (or removed)
/// keeps its runs in this state file, and exposing them here would show its per-machine
/// series twice across shards, frozen in one. See: #11
pub fn restore(
    m: &Metrics,
    state: &Mutex<State>,
    configured: impl Fn(&str) -> bool,
    policy: &crate::config::Redaction,
) {
    let runs: Vec<_> = lock(state)
        .last_runs()
        .filter(|((tenant, _, _), _)| configured(tenant))
        .map(|(k, v)| (owned(k), v.clone()))
        .collect();
    for (key, mut run) in runs {
        run.signature = run.signature.map(|s| s.redacted(policy));
        set(m, &labels(key), &run);
    }
}

/// Remove from /metrics the per-machine series (script gauges and not-run gauges) the state
/// holds for tenants not `served` now: a tenant moved to another shard or removed by a reload
/// kept them until `series_ttl` (#24). Not counted as evictions; the state keeps its entries
/// (they expire with `series_ttl`). Returns how many (tenant, machine, script) were removed.
pub fn drop_unserved(m: &Metrics, state: &Mutex<State>, served: impl Fn(&str) -> bool) -> usize {
    let (runs, attempts): (Vec<SeriesKey>, Vec<SeriesKey>) = {
        let s = lock(state);
        (
            s.last_runs()
                .filter(|((tenant, _, _), _)| !served(tenant))
                .map(|(k, _)| owned(k))
                .collect(),
            s.attempt_series(|tenant| !served(tenant)),
        )
    };
    let n = runs.len();
    for key in runs {
        m.results.remove_script_series(&labels(key));
    }
    for key in attempts {
        m.results.remove_script_not_run(&labels(key));
    }
    n
}

/// Remove the series past `ttl` or over `max` from the state and the metrics: the not-run
/// series first, then the run series, each eviction counted by its reason (a tenant not
/// `served` now is not counted: its series were not shown here, see [`drop_unserved`]). The
/// TTL is judged per tenant at `now_of(tenant)`, the API's time (see `crate::api::clock`); a tenant
/// without one (its local clock disagrees with the API's) keeps its series past the TTL. See:
/// #24 item 7
pub fn expire(
    m: &Metrics,
    state: &Mutex<State>,
    ttl: Duration,
    max: usize,
    now_of: &dyn Fn(&str) -> Option<DateTime<Utc>>,
    served: impl Fn(&str) -> bool,
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
            .filter(|(k, r)| cutoff(k.0).is_some_and(|c| r.end_time < c))
            .map(|(k, _)| owned(k))
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
        if !served(&key.0) {
            m.results.remove_script_series(&labels(key));
            continue;
        }
        let why = if stale.contains(&key) {
            EVICTED_TTL
        } else {
            EVICTED_MAX
        };
        m.results.evict_script_series(&labels(key), why);
    }
}

/// `mde_liveresponse_script_not_run` series go with the same TTL and cap as the other
/// per-machine series. (Each poll of every tenant used to sort every tenant's attempts to
/// find them. See: #11)
fn expire_not_run(
    m: &Metrics,
    state: &Mutex<State>,
    cutoff: crate::record::state::Cutoff<'_>,
    max: usize,
) {
    let removed = lock(state).expire_attempts(cutoff, max);
    match removed {
        Ok(removed) => {
            for key in removed {
                m.results.remove_script_not_run(&labels(key));
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
    use crate::api::ErrorKind;
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
            download: crate::api::DOWNLOAD,
            fetch_failures: &reasons,
            evicted: &[EVICTED_TTL, EVICTED_MAX],
            final_statuses: &["Succeeded", "Failed", "TimeOut", "Cancelled"],
        },
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::state::{LastRun, ResultKey};

    /// See: #24 item 10. Series of a tenant not served here are removed, never counted in
    /// `mde_exporter_series_evicted_total` (a series for a tenant this process does not
    /// serve); the served tenant's expiry is counted as before.
    #[test]
    fn unserved_tenants_are_dropped_not_counted() {
        let m = Metrics::new();
        let state = Mutex::new(State::open(None).unwrap());
        let old = Utc::now() - chrono::Duration::days(3);
        for tenant in ["here", "gone"] {
            let key: SeriesKey = (tenant.into(), "host-1".into(), "a.ps1".into());
            let run = LastRun {
                end_time: old,
                exit_code: 1,
                errors_present: false,
                action_id: format!("{tenant}-1"),
                excerpt: None,
                signature: None,
            };
            lock(&state)
                .commit_result(
                    ResultKey {
                        tenant: tenant.into(),
                        action_id: run.action_id.clone(),
                        index: 0,
                    },
                    Some((key.clone(), run.clone())),
                )
                .unwrap();
            set(&m, &labels(key), &run);
        }
        let served = |t: &str| t == "here";
        assert_eq!(drop_unserved(&m, &state, served), 1);
        let text = m.encode(false).unwrap();
        assert!(!text.contains("tenant=\"gone\""), "{text}");
        assert!(text.contains("mde_liveresponse_script_exit_code{tenant=\"here\""));
        expire(
            &m,
            &state,
            Duration::from_secs(3600),
            100,
            &|_| Some(Utc::now()),
            served,
        );
        let text = m.encode(false).unwrap();
        assert!(
            text.contains("mde_exporter_series_evicted_total{tenant=\"here\",reason=\"ttl\"} 1"),
            "{text}"
        );
        assert!(!text.contains("tenant=\"gone\""), "{text}");
        assert!(lock(&state).last_runs_len() == 0);
    }
}
