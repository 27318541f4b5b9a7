//! One entry of `tenants:`: what to watch, and the validated [`Tenant`] the collectors use.
//!
//! Owns the tenant's own keys (`name`, `lookback`, `requestor`, the id lists, `scripts`,
//! `machine_tags`, `machine_info_interval`) and putting the tenant together from its
//! sections: sign-in (`auth`), URLs (`cloud`), `quota` and `discovery`, each of which checks
//! itself. Does not own the uniqueness of names across tenants (`mod`).

use std::path::Path;
use std::time::Duration;

use url::Url;

use super::auth::{self, Auth};
use super::check::{Invalid, check_range, is_safe_id};
use super::cloud;
use super::limits;
use super::raw::{RawTenant, default_lookback, default_machine_info_interval};
use super::types::{DiscoveryConfig, QuotaConfig};

/// What to watch in a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Selectors {
    /// How far back discovery looks (on `creationDateTimeUtc`).
    pub lookback: Duration,
    pub requestor: Option<String>,
    pub machine_ids: Vec<String>,
    /// Polled one by one with `GET /api/machineactions/{id}`, in addition to discovery.
    pub action_ids: Vec<String>,
    /// When non-empty, only these script names are retrieved.
    pub scripts: Vec<String>,
    /// How discovery finds actions: incremental watermark, in-flight horizon, sweeps.
    pub discovery: DiscoveryConfig,
}

impl Default for Selectors {
    /// The defaults of a tenant's keys in the file.
    fn default() -> Self {
        Selectors {
            lookback: default_lookback(),
            requestor: None,
            machine_ids: Vec::new(),
            action_ids: Vec::new(),
            scripts: Vec::new(),
            discovery: DiscoveryConfig::default(),
        }
    }
}

/// One validated tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The `tenant` label value.
    pub name: String,
    /// Empty only with managed identity, which needs neither.
    pub tenant_id: String,
    pub client_id: String,
    /// How to get a token.
    pub auth: Auth,
    /// API base, without a trailing slash, e.g. `https://api.securitycenter.microsoft.com`.
    pub api_url: Url,
    /// Login authority, e.g. `https://login.microsoftonline.com`.
    pub login_url: Url,
    /// Token audience; the scope sent is `{audience}/.default`.
    pub audience: String,
    pub selectors: Selectors,
    pub quota: QuotaConfig,
    /// The machine-context refresh: which tags become labels, and how often.
    pub machine_context: MachineContext,
}

/// What the slow `GET /api/machines` refresh reads and exposes for a tenant.
#[derive(Debug, Clone)]
pub struct MachineContext {
    /// Tags matching one of these (anchored) regexes become `mde_machine_tag` series; none
    /// by default, so no tag becomes a label unless asked for.
    pub tags: Vec<regex::Regex>,
    /// Every machine with per-machine series is read again this often (default 1 h);
    /// machines new to the exporter are read at the next poll interval.
    pub interval: Duration,
}

impl Default for MachineContext {
    fn default() -> Self {
        MachineContext {
            tags: Vec::new(),
            interval: default_machine_info_interval(),
        }
    }
}

impl Tenant {
    /// `{login_url}/{tenant_id}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_url.as_str().trim_end_matches('/'),
            self.tenant_id
        )
    }
    pub fn scope(&self) -> String {
        format!("{}/.default", self.audience.trim_end_matches('/'))
    }
}

impl RawTenant {
    /// The name must not be blank (checked before the rest, and before names are compared).
    pub(super) fn check_name(&self) -> Result<(), Invalid> {
        if self.name.trim().is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        Ok(())
    }

    /// The validated tenant; the error's key is under the tenant (`lookback`, `auth.key_file`).
    /// `path` is the config file (relative file names are relative to it).
    pub(super) fn validate(
        self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        poll_interval: Duration,
    ) -> Result<Tenant, Invalid> {
        let t = self;
        let sign_in = auth::resolve(&t, path, env)?;
        let urls = cloud::endpoints(&t, sign_in.auth.method(), env)?;
        t.quota.check()?;
        if t.lookback.is_zero() {
            return Err(Invalid::new("lookback", "must be greater than 0"));
        }
        let discovery = t
            .discovery
            .validate(poll_interval)
            .map_err(|e| e.under("discovery."))?;
        check_range(t.lookback, (Duration::ZERO, limits::LOOKBACK_MAX))
            .map_err(|m| Invalid::new("lookback", m))?;
        for (field, values) in [
            ("machine_ids", &t.machine_ids),
            ("action_ids", &t.action_ids),
        ] {
            if let Some(bad) = values.iter().find(|v| !is_safe_id(v)) {
                return Err(Invalid::new(
                    field,
                    format!("{bad:?} is not a valid id (letters, digits, '-', '.' only)"),
                ));
            }
        }
        let machine_context = machine_context(&t.machine_tags, t.machine_info_interval)?;
        Ok(Tenant {
            name: t.name,
            tenant_id: sign_in.tenant_id,
            client_id: sign_in.client_id,
            auth: sign_in.auth,
            api_url: urls.api_url,
            login_url: urls.login_url,
            audience: urls.audience,
            selectors: Selectors {
                lookback: t.lookback,
                requestor: t.requestor,
                machine_ids: t.machine_ids,
                action_ids: t.action_ids,
                scripts: t.scripts,
                discovery,
            },
            quota: t.quota,
            machine_context,
        })
    }
}

/// `machine_tags` (anchored regexes) and `machine_info_interval`.
fn machine_context(patterns: &[String], interval: Duration) -> Result<MachineContext, Invalid> {
    let mut tags = Vec::with_capacity(patterns.len());
    for (j, pattern) in patterns.iter().enumerate() {
        // Anchored: `pci` allows the tag "pci", not "not-pci-scope".
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Invalid::new(
                format!("machine_tags[{j}]"),
                format!("invalid regular expression: {e}"),
            )
        })?;
        tags.push(re);
    }
    if interval < Duration::from_secs(1) {
        return Err(Invalid::new("machine_info_interval", "must be at least 1s"));
    }
    Ok(MachineContext { tags, interval })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    #[test]
    fn defaults_follow_the_documented_limits() {
        let c = parse(GOOD).unwrap();
        let t = &c.tenants[0];
        assert_eq!(t.selectors.lookback, Duration::from_secs(86400));
        assert_eq!(t.selectors, Selectors::default());
        assert_eq!(
            t.token_url(),
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
        );
        assert_eq!(
            t.scope(),
            "https://api.securitycenter.microsoft.com/.default"
        );
    }

    // See: #10
    #[test]
    fn machine_tags_are_anchored_regexes() {
        let c = parse(&format!(
            "{GOOD}    machine_tags: ['pci|tier0', 'team-.*']\n    machine_info_interval: 30m\n"
        ))
        .unwrap();
        let mc = &c.tenants[0].machine_context;
        assert_eq!(mc.interval, Duration::from_secs(1800));
        let allowed = |tag: &str| mc.tags.iter().any(|r| r.is_match(tag));
        assert!(allowed("pci") && allowed("team-red"));
        assert!(!allowed("not-pci-scope"));
        assert!(
            parse(GOOD).unwrap().tenants[0]
                .machine_context
                .tags
                .is_empty()
        );
        let err = parse(&format!("{GOOD}    machine_tags: ['(']\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "config file cfg.yml: tenants[0].machine_tags[0]: invalid regular expression: "
            ),
            "{err}"
        );
    }

    #[test]
    fn tenant_errors_name_the_key() {
        assert_errors(&[
            (
                format!("{GOOD}    action_ids: [\"a' or 1 eq 1\"]\n"),
                "config file cfg.yml: tenants[0].action_ids: \"a' or 1 eq 1\" is not a valid id (letters, digits, '-', '.' only)",
            ),
            (
                format!("{GOOD}    lookback: 0s\n"),
                "config file cfg.yml: tenants[0].lookback: must be greater than 0",
            ),
            (
                format!("{GOOD}    machine_info_interval: 10ms\n"),
                "config file cfg.yml: tenants[0].machine_info_interval: must be at least 1s",
            ),
            (
                GOOD.replace("name: contoso", "name: ' '"),
                "config file cfg.yml: tenants[0].name: must not be empty",
            ),
        ]);
    }
}
