//! The label sets of the metric families, short constructors for the common ones, and the
//! label values a tenant's series are started at 0 for ([`TenantSeries`]).
//!
//! Owns the label names (a contract: add, never rename). Does not own the families (the
//! groups), nor which endpoints, reasons and statuses exist (`series` lists them from `api`
//! and `quota`).

use prometheus_client::encoding::EncodeLabelSet;

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
pub struct CadenceLabels {
    pub tenant: String,
    pub cadence: String,
    pub reason: String,
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

/// `mde_exporter_otlp_metrics_exports_total`'s labels: `success` or `failure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExportResultLabels {
    pub result: String,
}

/// `mde_exporter_shard_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub index: String,
    pub count: String,
}

/// `mde_api_endpoint_deprecation_notices_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct NoticeLabels {
    pub tenant: String,
    pub endpoint: String,
    pub reason: String,
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

/// The label values a tenant's zero-valued series are started for
/// (`Metrics::init_tenant_series`): each group starts those of its own families.
#[derive(Clone, Copy, Debug)]
pub struct TenantSeries<'a> {
    /// Every quota endpoint (`mde_api_throttled`, `_retry_after_seconds`, request durations).
    pub endpoints: &'a [&'a str],
    /// The download endpoint (request durations only).
    pub download: &'a str,
    /// Every reason of `mde_liveresponse_fetch_failures_total`.
    pub fetch_failures: &'a [&'a str],
    /// Every reason of `mde_exporter_series_evicted_total`.
    pub evicted: &'a [&'a str],
    /// Every final action status (`mde_liveresponse_actions_total`).
    pub final_statuses: &'a [&'a str],
}
