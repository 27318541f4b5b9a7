//! The file's schema as serde reads it, before any check: every key, its type and its default.
//!
//! Owns the raw structs (`deny_unknown_fields` on each, so a misspelt key is an error naming
//! it) and the defaults of the keys. Does not own the section types it holds as they are
//! (`types`), nor what a value may be: each section's own module turns its raw form into a
//! validated one (`tenant`, `auth`, `cloud`, `discovery`, `quota`, `output`, `proxy`, `check`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::output::{OtelConfig, Redaction};
use super::quota::QuotaConfig;
use super::script_metrics::ScriptRule;

use super::auth::AuthMethod;
use super::cloud::{Cloud, Region};
use super::discovery::DiscoveryConfig;

/// Requests in flight across all tenants when the configuration does not say.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(default)]
    pub state_path: Option<PathBuf>,
    #[serde(default = "default_max_transcript_bytes")]
    pub max_transcript_bytes: u64,
    #[serde(default = "default_series_ttl", with = "humantime_serde")]
    pub series_ttl: Duration,
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// How far the local clock may be from the API's before nothing is abandoned or expired
    /// by time (#24 item 7).
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_requests_in_flight")]
    pub max_requests_in_flight: usize,
    #[serde(default)]
    pub otel: OtelConfig,
    #[serde(default)]
    pub transcript_log: Redaction,
    /// Outbound proxy for token, API and download requests; default `HTTPS_PROXY`.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Script output as metrics (#21).
    #[serde(default)]
    pub script_metrics: Vec<ScriptRule>,
    pub tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub name: String,
    /// Required except for workload identity (`AZURE_TENANT_ID`) and managed identity.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Required except for workload identity (`AZURE_CLIENT_ID`) and managed identity.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The pre-`auth:` form of `method: client_secret`; still accepted.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub cloud: Cloud,
    /// A regional host of `api.security.microsoft.com` (commercial cloud only).
    #[serde(default)]
    pub region: Option<Region>,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub login_url: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_lookback", with = "humantime_serde")]
    pub lookback: Duration,
    #[serde(default)]
    pub requestor: Option<String>,
    #[serde(default)]
    pub machine_ids: Vec<String>,
    #[serde(default)]
    pub action_ids: Vec<String>,
    #[serde(default)]
    pub scripts: Vec<String>,
    #[serde(default)]
    pub quota: QuotaConfig,
    /// Regexes over machine tags; a matching tag becomes an `mde_machine_tag` series.
    #[serde(default)]
    pub machine_tags: Vec<String>,
    /// How often machine context is read again with `GET /api/machines`.
    #[serde(default = "default_machine_info_interval", with = "humantime_serde")]
    pub machine_info_interval: Duration,
    /// Most `mde_machine_tag` series one machine shows (#24).
    #[serde(default = "default_max_tags_per_machine")]
    pub max_tags_per_machine: usize,
    /// Longest tag (in characters) that becomes a label value; longer ones are dropped (#24).
    #[serde(default = "default_max_tag_length")]
    pub max_tag_length: usize,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// The top-level script_metrics rules this tenant keeps (by script); all when absent.
    #[serde(default)]
    pub script_metrics: Option<Vec<String>>,
}

/// The `auth:` block of a tenant, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub method: AuthMethod,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub pkcs12_file: Option<PathBuf>,
    #[serde(default)]
    pub pkcs12_password: Option<String>,
    #[serde(default)]
    pub pkcs12_password_file: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
}

pub(super) fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_max_transcript_bytes() -> u64 {
    16 * 1024 * 1024
}
pub(super) fn default_series_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
pub(super) fn default_max_clock_skew() -> Duration {
    Duration::from_secs(300)
}
pub(super) fn default_max_series() -> usize {
    10_000
}
pub(super) fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_max_requests_in_flight() -> usize {
    DEFAULT_MAX_REQUESTS_IN_FLIGHT
}
pub(super) fn default_machine_info_interval() -> Duration {
    Duration::from_secs(3600)
}
pub(super) fn default_max_tags_per_machine() -> usize {
    20
}
pub(super) fn default_max_tag_length() -> usize {
    128
}
pub(super) fn default_lookback() -> Duration {
    Duration::from_secs(24 * 3600)
}
