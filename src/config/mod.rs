//! Configuration: the YAML file (`--config.file`) read, expanded and validated into a
//! [`Config`] the rest of the exporter can trust.
//!
//! Each section is one struct in its own module, beside its tests, which serde reads with
//! the section's defaults (unknown keys are errors) and whose `validate` checks it in place:
//! `quota`, `discovery`, `output` (`otel:` and `transcript_log:`), `script_metrics` (a rule).
//! Where the validated value is shaped differently from what is written, the module holds
//! both side by side: `tenant` (a `RawTenant` resolved into a [`Tenant`], with its own keys
//! and defaults, and `tenant_defaults:`), `tenant_files` (the `tenant_files:` blocks and reading
//! one tenant file), `auth` (the `auth:` block and the sign-in file reads), `cloud` (cloud and
//! region → URLs) and `proxy` (`proxy_url` or the environment).
//!
//! Owns the file itself: its top-level keys as written (`RawFile`, with their defaults,
//! including [`DEFAULT_MAX_REQUESTS_IN_FLIGHT`]) put together into a [`Config`], the error
//! type naming the file and the key, and the order the sections are checked in. Beside it:
//! `check` (the file-level keys' checks and the checks every section shares), [`limits`]
//! (the bounds of the duration and size keys), `env` (`${VAR}` expansion). Does not own the
//! command line (`crate::app::cli`), reloading (`crate::app`), getting tokens
//! (`crate::api::auth`) nor the tenant → shard mapping (`shard`, used by [`Config::shard`]).
//!
//! It is the ground floor: it imports no module of this crate outside `config`; its leaves
//! are the pure `credential` (a client certificate, to refuse a wrong or expired one at
//! load), `sign_in_file` (the 1 MiB cap of the sign-in files it reads), `shard`, and
//! `metric_name` (what a valid metric name is and the default caps on a script sample,
//! which `crate::script_metrics::parse` imports from here).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod auth;
mod check;
mod cloud;
mod cluster;
pub mod credential;
mod discovery;
mod env;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod limits;
mod loopback;
pub mod metric_name;
mod output;
mod proxy;
mod quota;
mod script_metrics;
mod self_monitoring;
pub mod shard;
pub mod sign_in_file;
mod tenant;
pub mod tenant_files;
pub mod text;

pub use self::auth::{Auth, AuthMethod, IMDS_TOKEN_URL, PasswordFileError, Pkcs12Password, Secret};
pub use self::cloud::{Cloud, Region};
pub use self::cluster::{ClusterConfig, LEASE_DURATION, PostgresUrl, SslMode, hostname};
pub use self::discovery::{DiscoveryConfig, MAX_DISCOVERY_BATCH};
pub use self::loopback::is_loopback;
pub use self::output::{Compression, OtelConfig, Protocol, RedactMode, Redaction};
pub use self::proxy::ProxyConfig;
pub use self::quota::{QuotaConfig, QuotaScope};
pub use self::script_metrics::{
    Format as ScriptFormat, JsonMetric, RESERVED_PREFIXES, ScriptMetrics, ScriptRule, is_reserved,
};
pub use self::self_monitoring::SelfMonitoring;
pub use self::tenant::{MachineContext, Selectors, Tenant};
pub use self::tenant_files::{FileBlock, FileError, FileTenants, Refused, TenantSources};
pub use crate::config::shard::shard_of;

use self::check::{Invalid, check_range};
use self::tenant::RawTenant;

/// The host suffixes result links are trusted from when `trusted_result_hosts` is not set:
/// the blob storage of each Microsoft cloud and Azure Storage's DNS-zone endpoints
/// (`<account>.z<NN>.blob.storage.azure.net`). See: #32 item 14
pub const DEFAULT_TRUSTED_RESULT_HOSTS: &[&str] = &[
    ".blob.core.windows.net",
    ".blob.core.usgovcloudapi.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.storage.azure.net",
];

/// Requests in flight across all tenants when the configuration does not say.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// The file as written: its scalar keys with their defaults, the sections that read and
/// check themselves, and the two that need the environment and the file's place to resolve
/// (`proxy_url`, `tenants`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
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
    /// Failure signatures shown per script before the rest go into `other` (#36).
    #[serde(default = "default_failure_signatures_top_k")]
    pub failure_signatures_top_k: usize,
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
    /// How long reading one transcript's output under a rule may take, off the async
    /// workers, before it is abandoned (#32 item 1).
    #[serde(
        default = "script_metrics::default_parse_timeout",
        with = "humantime_serde"
    )]
    pub script_metrics_parse_timeout: Duration,
    /// A cluster of exporters on PostgreSQL (#31).
    #[serde(default)]
    pub cluster: Option<cluster::RawCluster>,
    /// Host suffixes result links may point to (#32 item 14).
    #[serde(default)]
    pub trusted_result_hosts: Option<Vec<String>>,
    /// The exporter's own per-tenant series (#34).
    #[serde(default)]
    pub self_monitoring: SelfMonitoring,
    /// Keys every tenant entry inherits unless it sets them (#34).
    #[serde(default)]
    pub tenant_defaults: Option<RawTenant>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// Files of tenant entries, read again as they change (#34).
    #[serde(default)]
    pub tenant_files: Vec<tenant_files::RawBlock>,
}

impl RawFile {
    /// The file-level scalar keys' checks, in the order a reader meets the errors (the
    /// sections check themselves).
    fn validate(&self) -> Result<(), Invalid> {
        let raw = self;
        let ranged = |key: &str, v, range| check_range(v, range).map_err(|m| Invalid::new(key, m));
        ranged("poll_interval", raw.poll_interval, limits::POLL_INTERVAL)?;
        ranged(
            "request_timeout",
            raw.request_timeout,
            limits::REQUEST_TIMEOUT,
        )?;
        ranged("series_ttl", raw.series_ttl, limits::SERIES_TTL)?;
        ranged("max_clock_skew", raw.max_clock_skew, limits::MAX_CLOCK_SKEW)?;
        ranged(
            "script_metrics_parse_timeout",
            raw.script_metrics_parse_timeout,
            script_metrics::PARSE_TIMEOUT,
        )?;
        if raw.max_transcript_bytes == 0 {
            return Err(Invalid::new(
                "max_transcript_bytes",
                "must be greater than 0",
            ));
        }
        if raw.max_transcript_bytes > limits::MAX_TRANSCRIPT_BYTES {
            return Err(Invalid::new(
                "max_transcript_bytes",
                format!(
                    "must be at most {} (1 GiB; got {})",
                    limits::MAX_TRANSCRIPT_BYTES,
                    raw.max_transcript_bytes
                ),
            ));
        }
        if raw.max_series == 0 {
            return Err(Invalid::new("max_series", "must be greater than 0"));
        }
        let (lo, hi) = limits::FAILURE_SIGNATURES_TOP_K;
        if !(lo..=hi).contains(&raw.failure_signatures_top_k) {
            return Err(Invalid::new(
                "failure_signatures_top_k",
                format!(
                    "must be between {lo} and {hi} (got {})",
                    raw.failure_signatures_top_k
                ),
            ));
        }
        let (lo, hi) = limits::MAX_REQUESTS_IN_FLIGHT;
        if !(lo..=hi).contains(&raw.max_requests_in_flight) {
            return Err(Invalid::new(
                "max_requests_in_flight",
                format!(
                    "must be between {lo} and {hi} (got {})",
                    raw.max_requests_in_flight
                ),
            ));
        }
        Ok(())
    }
}

/// A configuration problem. The message always names the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown/mistyped keys.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is present but not acceptable.
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub poll_interval: Duration,
    pub state_path: Option<PathBuf>,
    pub max_transcript_bytes: u64,
    /// Per-machine series disappear this long after the run they describe.
    pub series_ttl: Duration,
    /// At most this many per-machine series per metric; the oldest go first.
    pub max_series: usize,
    /// How far the local clock may be from the API's (its answers' `Date`) before in-flight
    /// actions are no longer abandoned and per-machine series no longer expire by time.
    pub max_clock_skew: Duration,
    pub request_timeout: Duration,
    /// API calls and result downloads in flight at once, across all tenants.
    pub max_requests_in_flight: usize,
    /// Per script, the failure signatures shown by their own series; the rest are one
    /// `other` series (#36).
    pub failure_signatures_top_k: usize,
    /// Tracing export; unset keys fall back to the standard `OTEL_*` variables.
    pub otel: OtelConfig,
    /// How transcript text appears in logs.
    pub transcript_log: Redaction,
    /// The outbound proxy of every request (token, API, result download), if any.
    pub proxy: Option<ProxyConfig>,
    /// Script output as metrics (#21): the rules and each tenant's narrowing.
    pub script_metrics: ScriptMetrics,
    /// This exporter as a member of a cluster on PostgreSQL (#31); `None`: one process.
    pub cluster: Option<ClusterConfig>,
    /// Host suffixes result links are trusted from ([`DEFAULT_TRUSTED_RESULT_HOSTS`] unless
    /// configured).
    pub trusted_result_hosts: Vec<String>,
    /// Whether idle tenants' self-monitoring series start at 0 (#34).
    pub self_monitoring: SelfMonitoring,
    pub tenants: Vec<Tenant>,
    /// Tenants refused alone: their sign-in cannot be resolved (#34). `--config.check`
    /// fails on them; serving goes on with the others.
    pub refused: Vec<Refused>,
    /// `tenant_files:` and what reading them needs (the defaults); the tenants they bring
    /// are put in `tenants` by [`tenant_files::combine`] (#34).
    pub tenant_files: TenantSources,
}

impl Default for Config {
    /// The defaults of the file's keys, with no tenant (the demo builds on this).
    fn default() -> Self {
        Config {
            poll_interval: default_poll_interval(),
            state_path: None,
            max_transcript_bytes: default_max_transcript_bytes(),
            series_ttl: default_series_ttl(),
            max_series: default_max_series(),
            max_clock_skew: default_max_clock_skew(),
            request_timeout: default_request_timeout(),
            max_requests_in_flight: default_max_requests_in_flight(),
            failure_signatures_top_k: default_failure_signatures_top_k(),
            otel: OtelConfig::default(),
            transcript_log: Redaction::default(),
            proxy: None,
            script_metrics: ScriptMetrics::default(),
            cluster: None,
            trusted_result_hosts: default_trusted_result_hosts(),
            self_monitoring: SelfMonitoring::default(),
            tenants: Vec::new(),
            refused: Vec::new(),
            tenant_files: TenantSources::default(),
        }
    }
}

fn default_trusted_result_hosts() -> Vec<String> {
    DEFAULT_TRUSTED_RESULT_HOSTS
        .iter()
        .map(|h| h.to_string())
        .collect()
}

/// `trusted_result_hosts`: each a host suffix starting with a dot, of at least two DNS labels
/// (`.blob.example.net`, not `.net`), lower-cased.
fn check_trusted_hosts(list: Vec<String>) -> Result<Vec<String>, Invalid> {
    if list.is_empty() {
        return Err(Invalid::new(
            "trusted_result_hosts",
            "must list at least one host suffix (leave the key out for the built-in list)",
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.trim().to_ascii_lowercase();
            let labels: Vec<&str> = h.strip_prefix('.').unwrap_or("").split('.').collect();
            let valid = h.starts_with('.')
                && labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if valid {
                Ok(h)
            } else {
                Err(Invalid::new(
                    format!("trusted_result_hosts[{i}]"),
                    format!(
                        "{h:?} is not a host suffix: start it with a dot and give at least two DNS labels, like \".blob.core.windows.net\""
                    ),
                ))
            }
        })
        .collect()
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_max_transcript_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_series_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_max_series() -> usize {
    10_000
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_requests_in_flight() -> usize {
    DEFAULT_MAX_REQUESTS_IN_FLIGHT
}
fn default_failure_signatures_top_k() -> usize {
    10
}

impl Config {
    /// Read, expand and validate a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = text::decode(&bytes).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::parse(text, path, &|name| std::env::var(name).ok())
    }

    /// Parse from text; `env` resolves `${VAR}` (a parameter so tests need no process env).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let raw: RawFile = serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::validate(raw, path, env).map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })
    }

    /// The raw file's sections, each checked by its own module, in the order of the file.
    fn validate(
        raw: RawFile,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Invalid> {
        raw.validate()?;
        let mut transcript_log = raw.transcript_log;
        transcript_log
            .validate()
            .map_err(|e| e.under("transcript_log."))?;
        let proxy = proxy::resolve(raw.proxy_url.as_deref(), env)?;
        script_metrics::validate(&raw.script_metrics)?;
        let cluster = match raw.cluster {
            None => None,
            Some(c) => {
                if raw.state_path.is_some() {
                    return Err(Invalid::new(
                        "state_path",
                        "not used with cluster: the members keep the state in the cluster's database (to bring a state file into it, start once with --state.import FILE)",
                    ));
                }
                let dir = path.parent().unwrap_or(Path::new("."));
                Some(
                    c.validate(dir, env, &hostname)
                        .map_err(|e| e.under("cluster."))?,
                )
            }
        };
        let trusted_result_hosts = match raw.trusted_result_hosts {
            None => default_trusted_result_hosts(),
            Some(list) => check_trusted_hosts(list)?,
        };
        let rules = raw.script_metrics;
        let mut narrowed = std::collections::BTreeMap::new();
        if let Some(d) = &raw.tenant_defaults {
            d.check_defaults()?;
        }
        let mut blocks = Vec::with_capacity(raw.tenant_files.len());
        for (i, b) in raw.tenant_files.into_iter().enumerate() {
            blocks.push(
                b.validate(path)
                    .map_err(|e| e.under(&format!("tenant_files[{i}].")))?,
            );
        }
        if raw.tenants.is_empty() && blocks.is_empty() {
            return Err(Invalid::new("tenants", "at least one tenant is required"));
        }
        let cx = tenant::Context {
            defaults: raw.tenant_defaults.as_ref(),
            poll_interval: raw.poll_interval,
            rules: &rules,
            path,
            env,
        };
        let mut names = BTreeSet::new();
        let mut tenants = Vec::with_capacity(raw.tenants.len());
        let mut refused = Vec::new();
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let at = format!("tenants[{i}].");
            let name = t.name.clone();
            if !name.trim().is_empty() && !names.insert(name.clone()) {
                return Err(Invalid::new(
                    format!("{at}name"),
                    format!("duplicate tenant name {name:?}"),
                ));
            }
            match tenant::entry(t, &at, &cx)? {
                tenant::Entry::Served(t, kept) => {
                    if let Some(kept) = kept {
                        narrowed.insert(name, kept);
                    }
                    tenants.push(*t);
                }
                tenant::Entry::Refused(e) => {
                    refused.push(Refused::new("config file", path, &name, e));
                }
            }
        }
        let tenant_files = TenantSources {
            blocks,
            defaults: raw.tenant_defaults,
            poll_interval: raw.poll_interval,
            rules: rules.clone(),
        };
        Ok(Config {
            poll_interval: raw.poll_interval,
            state_path: raw.state_path,
            max_transcript_bytes: raw.max_transcript_bytes,
            series_ttl: raw.series_ttl,
            max_series: raw.max_series,
            max_clock_skew: raw.max_clock_skew,
            request_timeout: raw.request_timeout,
            max_requests_in_flight: raw.max_requests_in_flight,
            failure_signatures_top_k: raw.failure_signatures_top_k,
            otel: raw.otel,
            transcript_log,
            proxy,
            script_metrics: ScriptMetrics {
                rules,
                narrowed,
                parse_timeout: raw.script_metrics_parse_timeout,
            },
            cluster,
            trusted_result_hosts,
            self_monitoring: raw.self_monitoring,
            tenants,
            refused,
            tenant_files,
        })
    }

    /// This configuration, or the first tenant it refused as the error: what `--config.check`
    /// and the tests of messages want (serving goes on with the other tenants).
    pub fn strict(self) -> Result<Config, Error> {
        match self.refused.first() {
            None => Ok(self),
            Some(r) => Err(Error::Invalid {
                path: r.file.clone(),
                key: r.key.clone(),
                message: r.message.clone(),
            }),
        }
    }

    /// Keep only the tenants of one shard (rendezvous hashing, see [`shard_of`]).
    pub fn shard(mut self, index: u32, count: u32) -> Config {
        self.tenants.retain(|t| shard_of(&t.name, count) == index);
        self.refused.retain(|r| shard_of(&r.tenant, count) == index);
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    #[test]
    fn defaults_follow_the_documented_limits() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.series_ttl, Duration::from_secs(86400));
        assert_eq!(c.max_series, 10_000);
        assert_eq!(c.max_clock_skew, Duration::from_secs(300));
        assert_eq!(Config::default().max_clock_skew, c.max_clock_skew);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.max_transcript_bytes, 16 * 1024 * 1024);
        assert_eq!(c.max_requests_in_flight, DEFAULT_MAX_REQUESTS_IN_FLIGHT);
        let d = Config::default();
        assert_eq!(
            (d.poll_interval, d.series_ttl, d.max_series),
            (c.poll_interval, c.series_ttl, c.max_series)
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{GOOD}    colud: gcc\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config file cfg.yml: tenants[0]: unknown field `colud`"),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_the_key() {
        assert_errors(&[
            (
                format!(
                    "{GOOD}  - name: contoso\n    tenant_id: t\n    client_id: c\n    client_secret: x\n"
                ),
                "config file cfg.yml: tenants[1].name: duplicate tenant name \"contoso\"",
            ),
            (
                "tenants: []\n".to_string(),
                "config file cfg.yml: tenants: at least one tenant is required",
            ),
            (
                format!("max_series: 0\n{GOOD}"),
                "config file cfg.yml: max_series: must be greater than 0",
            ),
            // See: #36
            (
                format!("failure_signatures_top_k: 0\n{GOOD}"),
                "config file cfg.yml: failure_signatures_top_k: must be between 1 and 100 (got 0)",
            ),
            (
                format!("failure_signatures_top_k: 101\n{GOOD}"),
                "config file cfg.yml: failure_signatures_top_k: must be between 1 and 100 (got 101)",
            ),
        ]);
    }

    #[test]
    fn shard_keeps_the_tenants_of_one_shard() {
        let text = format!(
            "{GOOD}  - name: fabrikam\n    tenant_id: t\n    client_id: c\n    client_secret: x\n"
        );
        let names = |index| {
            parse(&text)
                .unwrap()
                .shard(index, 2)
                .tenants
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        };
        let (a, b) = (names(0), names(1));
        assert_eq!(a.len() + b.len(), 2, "{a:?} {b:?}");
        for n in a {
            assert_eq!(shard_of(&n, 2), 0);
        }
    }

    /// The hosts result links are trusted from: the built-in list with Azure Storage's
    /// DNS-zone endpoints, or the configured one, each checked. See: #32 item 14
    #[test]
    fn trusted_result_hosts_default_and_configured() {
        let c = parse(GOOD).unwrap();
        assert!(
            c.trusted_result_hosts
                .contains(&".blob.storage.azure.net".to_string())
        );
        assert!(
            c.trusted_result_hosts
                .contains(&".blob.core.windows.net".to_string())
        );
        let c = parse(&format!(
            "trusted_result_hosts: ['.BLOB.example-sovereign.cloud']\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.trusted_result_hosts, [".blob.example-sovereign.cloud"]);
        assert_errors(&[
            (
                format!("trusted_result_hosts: []\n{GOOD}"),
                "config file cfg.yml: trusted_result_hosts: must list at least one host suffix (leave the key out for the built-in list)",
            ),
            (
                format!("trusted_result_hosts: ['.net']\n{GOOD}"),
                "config file cfg.yml: trusted_result_hosts[0]: \".net\" is not a host suffix: start it with a dot and give at least two DNS labels, like \".blob.core.windows.net\"",
            ),
            (
                format!(
                    "trusted_result_hosts: ['.blob.core.windows.net', 'evil.example/x']\n{GOOD}"
                ),
                "config file cfg.yml: trusted_result_hosts[1]: \"evil.example/x\" is not a host suffix: start it with a dot and give at least two DNS labels, like \".blob.core.windows.net\"",
            ),
        ]);
    }

    /// See: #34. `config.yml` and a `client_secret_file` saved with a byte order mark
    /// (Notepad, Windows PowerShell 5.1's `Out-File -Encoding utf8`) are read without it; a
    /// file in UTF-16 or with bytes that are not UTF-8 is refused saying so and where.
    #[test]
    fn files_saved_by_windows_tools_are_read_or_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, secret) = (dir.path().join("config.yml"), dir.path().join("secret"));
        std::fs::write(&secret, b"\xEF\xBB\xBFs3cret\r\n").unwrap();
        let tenant = "tenants:\n  - name: a\n    tenant_id: t\n    client_id: c\n    client_secret_file: secret\n";
        std::fs::write(&cfg, format!("\u{FEFF}{tenant}")).unwrap();
        let c = Config::load(&cfg).unwrap();
        assert!(matches!(&c.tenants[0].auth, Auth::ClientSecret(s) if s.expose() == "s3cret"));
        for (bytes, want) in [
            (
                b"poll_interval: 60s\ntenants: [] \xFF\n".to_vec(),
                "line 2: not UTF-8 text: byte 0xFF at column 13",
            ),
            (
                b"\xFF\xFEt\x00".to_vec(),
                "UTF-16 text (the file begins with a UTF-16 byte order mark, as Windows \
                 PowerShell 5.1's `>` and `Out-File` write): save it as UTF-8",
            ),
        ] {
            std::fs::write(&cfg, bytes).unwrap();
            let err = Config::load(&cfg).unwrap_err().to_string();
            assert_eq!(err, format!("config file {}: {want}", cfg.display()));
        }
        std::fs::write(&cfg, tenant).unwrap();
        std::fs::write(&secret, b"s3\xE9cret\n").unwrap();
        // A secret that cannot be read refuses its tenant alone.
        let c = Config::load(&cfg).unwrap();
        assert_eq!(c.refused[0].key, "tenants[0].client_secret_file");
        assert_eq!(
            c.refused[0].message,
            format!(
                "cannot read {}: line 1: not UTF-8 text: byte 0xE9 at column 3",
                secret.display()
            )
        );
    }
}
