//! The label sets of the metric families, short constructors for the common ones, and the
//! label values a tenant's series are started at 0 for ([`TenantSeries`]).
//!
//! Owns the label names (a contract: add, never rename). Does not own the families (the
//! groups), nor which endpoints, reasons and statuses exist (`series` lists them from `api`
//! and `quota`).

use prometheus_client::encoding::EncodeLabelSet;

pub use super::shared_text::LabelValue;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    pub tenant: LabelValue,
    pub script: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineScriptLabels {
    pub tenant: LabelValue,
    pub machine: LabelValue,
    pub script: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub tenant: LabelValue,
    pub command: LabelValue,
    pub status: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CadenceLabels {
    pub tenant: LabelValue,
    pub cadence: LabelValue,
    pub reason: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub tenant: LabelValue,
    pub status: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub tenant: LabelValue,
    pub reason: LabelValue,
}

/// `mde_liveresponse_script_not_run_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotRunLabels {
    pub tenant: LabelValue,
    pub script: LabelValue,
    pub reason: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: LabelValue,
    pub endpoint: LabelValue,
    pub code: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub tenant: LabelValue,
    pub endpoint: LabelValue,
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
    pub tenant: LabelValue,
    pub endpoint: LabelValue,
    pub reason: LabelValue,
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
    pub tenant: LabelValue,
    /// The `computerDnsName`, as in the per-machine script series.
    pub machine: LabelValue,
    pub machine_id: LabelValue,
    /// The device group (`rbacGroupName`).
    pub rbac_group: LabelValue,
    pub os_platform: LabelValue,
    pub health_status: LabelValue,
}

/// `mde_exporter_permission_missing`: an application permission the token lacks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    pub tenant: LabelValue,
    pub permission: LabelValue,
}

/// `mde_machine_tag`: one allowed machine tag.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineTagLabels {
    pub tenant: LabelValue,
    pub machine: LabelValue,
    pub tag: LabelValue,
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
    TenantLabels { tenant: t.into() }
}

pub fn endpoint(t: &str, e: &str) -> EndpointLabels {
    EndpointLabels {
        tenant: t.into(),
        endpoint: e.into(),
    }
}

pub fn reason(t: &str, r: &str) -> ReasonLabels {
    ReasonLabels {
        tenant: t.into(),
        reason: r.into(),
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
