//! The top-level `script_metrics:` section (#21): which scripts' output becomes metrics, in
//! which format, under which names and bounds; and a tenant's own `script_metrics:` list of
//! script names, which narrows the rules to those scripts.
//!
//! Owns the section whole: a rule's one struct as serde reads it (unknown keys are errors),
//! its defaults (prefix `mde_script_`, `max_series` 500 per transcript, `max_total_series`
//! 50,000 per rule, `max_bytes` 256 KiB per transcript, `max_total_bytes` 32 MiB per rule,
//! `ttl` 7 days, the caps on one sample `max_name_length` 128,
//! `max_label_length` 1024, `max_labels` 16, the last four from `metric_name`) and its checks;
//! the top-level `script_metrics_parse_timeout` (default 5s, #32 item 1). Its checks:
//! names that are not valid metric names, or could shadow the exporter's own families, are
//! refused. Does not own what a valid metric name is (`metric_name`) nor reading the output
//! (`crate::script_metrics`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::check::{Invalid, check_range};
use super::metric_name::{
    DEFAULT_MAX_LABEL_LENGTH, DEFAULT_MAX_LABELS, DEFAULT_MAX_NAME_LENGTH, DEFAULT_MAX_SERIES,
    is_metric_name,
};

/// Name prefixes of the exporter's own families: no rule may produce a name under one.
pub const RESERVED_PREFIXES: &[&str] = &[
    "mde_liveresponse_",
    "mde_exporter_",
    "mde_api_",
    "mde_machine_",
    "mde_script_metrics_",
    "process_",
];

/// Most series one transcript may give, whatever `max_series` says.
const MAX_SERIES_CAP: usize = 100_000;
/// Most series one rule may hold, whatever `max_total_series` says.
const MAX_TOTAL_CAP: usize = 1_000_000;
/// Most bytes one transcript, and one rule, may hold, whatever `max_bytes` and
/// `max_total_bytes` say.
const MAX_BYTES_CAP: usize = 64 * 1024 * 1024;
const MAX_TOTAL_BYTES_CAP: usize = 1024 * 1024 * 1024;
/// Longest names, label values and most labels a rule may allow.
const MAX_NAME_CAP: usize = 1024;
const MAX_LABEL_CAP: usize = 65_536;
const MAX_LABELS_CAP: usize = 64;

/// How a script prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Sample lines in the Prometheus text format, anywhere in `script_output`.
    Prometheus,
    /// One JSON object, read at the paths of the rule's `metrics`.
    Json,
}

/// One `metrics:` entry of a `format: json` rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMetric {
    /// The sample name; the family is the rule's prefix + this.
    pub name: String,
    /// Dotted path to a number or a boolean (1/0) in the object.
    pub path: String,
    #[serde(default)]
    pub help: Option<String>,
}

/// One rule of the `script_metrics:` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRule {
    /// The transcript's exact `script_name`.
    pub script: String,
    pub format: Format,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    #[serde(default = "default_max_total_series")]
    pub max_total_series: usize,
    /// Most bytes of sample lines one transcript may give (#32 item 5).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Most bytes of sample lines one rule may hold, all machines (#32 item 5).
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: usize,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Longest metric name (before the prefix) and label name, in bytes.
    #[serde(default = "default_max_name_length")]
    pub max_name_length: usize,
    /// Longest label value, in bytes.
    #[serde(default = "default_max_label_length")]
    pub max_label_length: usize,
    /// Most labels of a sample's own.
    #[serde(default = "default_max_labels")]
    pub max_labels: usize,
    /// `format: json` only.
    #[serde(default)]
    pub metrics: Vec<JsonMetric>,
}

fn default_prefix() -> String {
    "mde_script_".into()
}
fn default_max_series() -> usize {
    DEFAULT_MAX_SERIES
}
fn default_max_total_series() -> usize {
    50_000
}
fn default_max_bytes() -> usize {
    256 * 1024
}
fn default_max_total_bytes() -> usize {
    32 * 1024 * 1024
}
// The caps on one sample, shared with `script_metrics::parse::Limits::default()`
// (`metric_name`).
fn default_max_name_length() -> usize {
    DEFAULT_MAX_NAME_LENGTH
}
fn default_max_label_length() -> usize {
    DEFAULT_MAX_LABEL_LENGTH
}
fn default_max_labels() -> usize {
    DEFAULT_MAX_LABELS
}
fn default_ttl() -> Duration {
    Duration::from_secs(7 * 86_400)
}

/// The rules in force and what each tenant narrowed them to.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptMetrics {
    pub rules: Vec<ScriptRule>,
    /// Tenants with their own `script_metrics:` list: the scripts they keep.
    pub narrowed: BTreeMap<String, BTreeSet<String>>,
    /// How long reading one transcript's output may take, waiting for a parse slot included
    /// (the top-level `script_metrics_parse_timeout`, default 5s); past it the reading is
    /// abandoned and that transcript gives no set (#32 item 1).
    pub parse_timeout: Duration,
}

impl Default for ScriptMetrics {
    fn default() -> Self {
        ScriptMetrics {
            rules: Vec::new(),
            narrowed: BTreeMap::new(),
            parse_timeout: default_parse_timeout(),
        }
    }
}

/// The range of `script_metrics_parse_timeout`.
pub(super) const PARSE_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(60));

pub(super) fn default_parse_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ScriptRule {
    /// A rule for `script` in `format`, every other key at its default (the demo's rules).
    pub fn new(script: &str, format: Format, metrics: Vec<JsonMetric>) -> ScriptRule {
        ScriptRule {
            script: script.to_string(),
            format,
            prefix: default_prefix(),
            max_series: default_max_series(),
            max_total_series: default_max_total_series(),
            max_bytes: default_max_bytes(),
            max_total_bytes: default_max_total_bytes(),
            ttl: default_ttl(),
            max_name_length: default_max_name_length(),
            max_label_length: default_max_label_length(),
            max_labels: default_max_labels(),
            metrics,
        }
    }
}

impl ScriptMetrics {
    /// The rule for `script` on `tenant`, if its output is read.
    pub fn rule_for(&self, tenant: &str, script: &str) -> Option<&ScriptRule> {
        if let Some(kept) = self.narrowed.get(tenant)
            && !kept.contains(script)
        {
            return None;
        }
        self.rules.iter().find(|r| r.script == script)
    }
}

/// Whether `name` lies under one of the exporter's own prefixes.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The top-level rules, checked; the key is `script_metrics[i].…`.
pub(super) fn validate(rules: &[ScriptRule]) -> Result<(), Invalid> {
    let mut scripts = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("script_metrics[{i}].");
        r.validate(&mut scripts).map_err(|e| e.under(&at))?;
    }
    Ok(())
}

/// A tenant's own list: names of top-level rules; the key is `script_metrics[j]`.
pub(super) fn narrow(list: &[String], rules: &[ScriptRule]) -> Result<BTreeSet<String>, Invalid> {
    let mut kept = BTreeSet::new();
    for (j, s) in list.iter().enumerate() {
        if !rules.iter().any(|r| &r.script == s) {
            return Err(Invalid::new(
                format!("script_metrics[{j}]"),
                format!("no top-level script_metrics rule for {s:?}"),
            ));
        }
        kept.insert(s.clone());
    }
    Ok(kept)
}

impl ScriptRule {
    /// The rule's checks; `scripts` holds the scripts of the rules before it (one rule a
    /// script). The error's key is the key under the rule.
    fn validate(&self, scripts: &mut BTreeSet<String>) -> Result<(), Invalid> {
        if self.script.trim().is_empty() {
            return Err(Invalid::new("script", "must not be empty"));
        }
        if !scripts.insert(self.script.clone()) {
            return Err(Invalid::new(
                "script",
                format!("duplicate rule for {:?}", self.script),
            ));
        }
        check_prefix(&self.prefix)?;
        if self.max_series == 0 || self.max_series > MAX_SERIES_CAP {
            return Err(Invalid::new(
                "max_series",
                format!("must be between 1 and {MAX_SERIES_CAP}"),
            ));
        }
        if self.max_total_series == 0 || self.max_total_series > MAX_TOTAL_CAP {
            return Err(Invalid::new(
                "max_total_series",
                format!("must be between 1 and {MAX_TOTAL_CAP}"),
            ));
        }
        for (key, value, cap) in [
            ("max_bytes", self.max_bytes, MAX_BYTES_CAP),
            ("max_total_bytes", self.max_total_bytes, MAX_TOTAL_BYTES_CAP),
            ("max_name_length", self.max_name_length, MAX_NAME_CAP),
            ("max_label_length", self.max_label_length, MAX_LABEL_CAP),
            ("max_labels", self.max_labels, MAX_LABELS_CAP),
        ] {
            if value == 0 || value > cap {
                return Err(Invalid::new(key, format!("must be between 1 and {cap}")));
            }
        }
        check_range(
            self.ttl,
            (Duration::from_secs(60), Duration::from_secs(366 * 86_400)),
        )
        .map_err(|m| Invalid::new("ttl", m))?;
        match self.format {
            Format::Prometheus if !self.metrics.is_empty() => {
                return Err(Invalid::new(
                    "metrics",
                    "only for format: json (format: prometheus reads the names the script prints)",
                ));
            }
            Format::Json if self.metrics.is_empty() => {
                return Err(Invalid::new(
                    "metrics",
                    "format: json needs at least one metric (name and path)",
                ));
            }
            _ => {}
        }
        let mut names = BTreeSet::new();
        for (k, m) in self.metrics.iter().enumerate() {
            let at = format!("metrics[{k}].");
            let full = format!("{}{}", self.prefix, m.name);
            if m.name.is_empty() || !is_metric_name(&full) {
                return Err(Invalid::new(
                    format!("{at}name"),
                    format!("{full:?} is not a valid metric name"),
                ));
            }
            if is_reserved(&full) {
                return Err(Invalid::new(
                    format!("{at}name"),
                    format!(
                        "{full:?} could shadow the exporter's own families ({})",
                        RESERVED_PREFIXES.join(", ")
                    ),
                ));
            }
            if !names.insert(m.name.clone()) {
                return Err(Invalid::new(
                    format!("{at}name"),
                    format!("duplicate metric {:?}", m.name),
                ));
            }
            if m.path.is_empty() || m.path.split('.').any(str::is_empty) {
                return Err(Invalid::new(
                    format!("{at}path"),
                    format!(
                        "{:?} is not a dotted path (keys or indexes joined by '.')",
                        m.path
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A prefix must start a valid metric name, and no name under it may fall under one of the
/// exporter's own prefixes (`mde_` would allow `mde_liveresponse_…`). The default
/// `mde_script_` is allowed although `mde_script_metrics_` lies under it: a sample named
/// `metrics_…` is dropped when it is read (reason `reserved_name`).
fn check_prefix(prefix: &str) -> Result<(), Invalid> {
    let shown = RESERVED_PREFIXES.join(", ");
    if prefix.is_empty() || !is_metric_name(prefix) {
        return Err(Invalid::new(
            "prefix",
            format!("{prefix:?} is not a valid metric name prefix"),
        ));
    }
    let shadows = RESERVED_PREFIXES
        .iter()
        .any(|r| prefix.starts_with(r) || (r.starts_with(prefix) && *r != "mde_script_metrics_"));
    if shadows {
        return Err(Invalid::new(
            "prefix",
            format!("{prefix:?} could shadow the exporter's own families ({shown})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    const RULES: &str = "
script_metrics:
  - script: compliance-check.ps1
    format: prometheus
  - script: inventory.ps1
    format: json
    prefix: fleet_
    max_series: 20
    ttl: 1d
    metrics:
      - name: inventory_disk_free_gb
        path: disk.free_gb
        help: Free disk space reported by inventory.ps1
      - name: inventory_patches_missing
        path: patches_missing
";

    #[test]
    fn rules_with_their_defaults_and_a_tenant_narrowing_them() {
        let text = format!("{RULES}{GOOD}    script_metrics: [inventory.ps1]\n");
        let c = parse(&text).unwrap();
        let s = &c.script_metrics;
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.parse_timeout, Duration::from_secs(5));
        let set = parse(&format!("script_metrics_parse_timeout: 250ms\n{text}")).unwrap();
        assert_eq!(set.script_metrics.parse_timeout, Duration::from_millis(250));
        let first = &s.rules[0];
        assert_eq!(
            (
                first.prefix.as_str(),
                first.max_series,
                first.max_total_series,
                first.ttl
            ),
            ("mde_script_", 500, 50_000, Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            (
                first.max_name_length,
                first.max_label_length,
                first.max_labels
            ),
            (128, 1024, 16)
        );
        assert_eq!(
            ScriptRule::new("compliance-check.ps1", Format::Prometheus, Vec::new()),
            *first
        );
        assert_eq!(s.rules[1].metrics[0].path, "disk.free_gb");
        assert_eq!(s.rules[1].ttl, Duration::from_secs(86_400));
        assert!(s.rule_for("contoso", "compliance-check.ps1").is_none());
        assert!(s.rule_for("contoso", "inventory.ps1").is_some());
        assert!(s.rule_for("other", "compliance-check.ps1").is_some());
        assert!(s.rule_for("other", "unknown.ps1").is_none());
        // No section: no rules.
        assert!(parse(GOOD).unwrap().script_metrics.rules.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let rule = |body: &str| format!("script_metrics:\n  - script: a.ps1\n{body}{GOOD}");
        assert_errors(&[
            (
                rule("    format: prometheus\n    prefix: mde_liveresponse_x_\n"),
                "config file cfg.yml: script_metrics[0].prefix: \"mde_liveresponse_x_\" could shadow the exporter's own families (mde_liveresponse_, mde_exporter_, mde_api_, mde_machine_, mde_script_metrics_, process_)",
            ),
            (
                rule("    format: prometheus\n    prefix: mde_\n"),
                "config file cfg.yml: script_metrics[0].prefix: \"mde_\" could shadow the exporter's own families (mde_liveresponse_, mde_exporter_, mde_api_, mde_machine_, mde_script_metrics_, process_)",
            ),
            (
                rule("    format: prometheus\n    prefix: 1x_\n"),
                "config file cfg.yml: script_metrics[0].prefix: \"1x_\" is not a valid metric name prefix",
            ),
            (
                rule(
                    "    format: json\n    metrics:\n      - name: metrics_lines_invalid_total\n        path: a\n",
                ),
                "config file cfg.yml: script_metrics[0].metrics[0].name: \"mde_script_metrics_lines_invalid_total\" could shadow the exporter's own families (mde_liveresponse_, mde_exporter_, mde_api_, mde_machine_, mde_script_metrics_, process_)",
            ),
            (
                rule("    format: json\n    metrics:\n      - name: disk-free\n        path: a\n"),
                "config file cfg.yml: script_metrics[0].metrics[0].name: \"mde_script_disk-free\" is not a valid metric name",
            ),
            (
                rule("    format: json\n    metrics:\n      - name: a\n        path: a..b\n"),
                "config file cfg.yml: script_metrics[0].metrics[0].path: \"a..b\" is not a dotted path (keys or indexes joined by '.')",
            ),
            (
                rule(
                    "    format: json\n    metrics:\n      - name: a\n        path: a\n      - name: a\n        path: b\n",
                ),
                "config file cfg.yml: script_metrics[0].metrics[1].name: duplicate metric \"a\"",
            ),
            (
                rule("    format: json\n"),
                "config file cfg.yml: script_metrics[0].metrics: format: json needs at least one metric (name and path)",
            ),
            (
                rule("    format: prometheus\n    metrics:\n      - name: a\n        path: a\n"),
                "config file cfg.yml: script_metrics[0].metrics: only for format: json (format: prometheus reads the names the script prints)",
            ),
            (
                rule("    format: prometheus\n    max_series: 0\n"),
                "config file cfg.yml: script_metrics[0].max_series: must be between 1 and 100000",
            ),
            (
                rule("    format: prometheus\n    max_name_length: 0\n"),
                "config file cfg.yml: script_metrics[0].max_name_length: must be between 1 and 1024",
            ),
            (
                rule("    format: prometheus\n    max_label_length: 65537\n"),
                "config file cfg.yml: script_metrics[0].max_label_length: must be between 1 and 65536",
            ),
            (
                rule("    format: prometheus\n    max_bytes: 0\n"),
                "config file cfg.yml: script_metrics[0].max_bytes: must be between 1 and 67108864",
            ),
            (
                rule("    format: prometheus\n    max_total_bytes: 1073741825\n"),
                "config file cfg.yml: script_metrics[0].max_total_bytes: must be between 1 and 1073741824",
            ),
            (
                rule("    format: prometheus\n    max_labels: 65\n"),
                "config file cfg.yml: script_metrics[0].max_labels: must be between 1 and 64",
            ),
            (
                rule("    format: prometheus\n    ttl: 1s\n"),
                "config file cfg.yml: script_metrics[0].ttl: must be at least 1m",
            ),
            (
                format!(
                    "script_metrics:\n  - script: a.ps1\n    format: prometheus\n  - script: a.ps1\n    format: prometheus\n{GOOD}"
                ),
                "config file cfg.yml: script_metrics[1].script: duplicate rule for \"a.ps1\"",
            ),
            (
                format!("script_metrics:\n  - script: ' '\n    format: prometheus\n{GOOD}"),
                "config file cfg.yml: script_metrics[0].script: must not be empty",
            ),
            (
                format!("{GOOD}    script_metrics: [b.ps1]\n"),
                "config file cfg.yml: tenants[0].script_metrics[0]: no top-level script_metrics rule for \"b.ps1\"",
            ),
        ]);
    }
}
