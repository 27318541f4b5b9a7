//! One entry of `tenants:`: what to watch, and the validated [`Tenant`] the collectors use.
//!
//! Owns the tenant as written (`RawTenant`: every key of a tenant, with its defaults, unknown
//! keys being errors), the tenant's own keys' checks (`name`, `lookback`, `requestor`, the id
//! lists, `scripts`, `machine_tags`, `machine_info_interval`, `max_tags_per_machine`,
//! `max_tag_length`) and putting the tenant together from its sections: sign-in (`auth`),
//! URLs (`cloud`), `quota` and `discovery`, each of which checks itself; the inheritance of
//! `tenant_defaults:` and resolving one entry wherever it is written ([`entry`]: a complaint
//! about an inherited key named under `tenant_defaults.`, a sign-in that cannot be resolved
//! refusing that entry alone). Does not own the uniqueness of names across tenants (`mod`,
//! `tenant_files`, `crate::app::tenant_files`) nor the narrowing of the `script_metrics:`
//! rules by the tenant's list (`script_metrics`, which [`entry`] calls).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::auth::{self, Auth, RawAuth};
use super::check::{Invalid, check_range, is_safe_id};
use super::cloud::{self, Cloud, Region};
use super::discovery::DiscoveryConfig;
use super::limits;
use super::quota::QuotaConfig;
use super::script_metrics::ScriptRule;

/// One entry of `tenants:` (or of a tenant file) as written, or the `tenant_defaults:` block;
/// [`entry`] resolves it into a [`Tenant`]. A key left out is `None` here, so that an entry
/// can inherit it from `tenant_defaults:` (#34); its default comes at validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    /// Required of a tenant (checked by [`RawTenant::check_name`]); refused in the defaults.
    #[serde(default)]
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
    pub cloud: Option<Cloud>,
    /// A regional host of `api.security.microsoft.com` (commercial cloud only).
    #[serde(default)]
    pub region: Option<Region>,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub login_url: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lookback: Option<Duration>,
    #[serde(default)]
    pub requestor: Option<String>,
    #[serde(default)]
    pub machine_ids: Option<Vec<String>>,
    #[serde(default)]
    pub action_ids: Option<Vec<String>>,
    #[serde(default)]
    pub scripts: Option<Vec<String>>,
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Regexes over machine tags; a matching tag becomes an `mde_machine_tag` series.
    #[serde(default)]
    pub machine_tags: Option<Vec<String>>,
    /// How often machine context is read again with `GET /api/machines`.
    #[serde(default, with = "humantime_serde")]
    pub machine_info_interval: Option<Duration>,
    /// Most `mde_machine_tag` series one machine shows (#24).
    #[serde(default)]
    pub max_tags_per_machine: Option<usize>,
    /// Longest tag (in characters) that becomes a label value; longer ones are dropped (#24).
    #[serde(default)]
    pub max_tag_length: Option<usize>,
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// The top-level script_metrics rules this tenant keeps (by script); all when absent.
    #[serde(default)]
    pub script_metrics: Option<Vec<String>>,
}

fn default_machine_info_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_tags_per_machine() -> usize {
    20
}
fn default_max_tag_length() -> usize {
    128
}
fn default_lookback() -> Duration {
    Duration::from_secs(24 * 3600)
}

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

/// One validated tenant. Two compare equal when they mean the same: a reload keeps the
/// collector of a tenant whose entry compares equal (#34).
#[derive(Debug, Clone, PartialEq)]
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
    /// Most tags one machine shows (default 20): of its allowed tags, the first in
    /// alphabetical order. (#24)
    pub max_tags: usize,
    /// Longest tag, in characters, that becomes a label value (default 128); a longer tag is
    /// dropped whole, never cut (two cut tags could become one label value). (#24)
    pub max_tag_length: usize,
}

impl PartialEq for MachineContext {
    /// The tag regexes compare as written.
    fn eq(&self, other: &Self) -> bool {
        self.interval == other.interval
            && self.max_tags == other.max_tags
            && self.max_tag_length == other.max_tag_length
            && self.tags.len() == other.tags.len()
            && self
                .tags
                .iter()
                .zip(&other.tags)
                .all(|(a, b)| a.as_str() == b.as_str())
    }
}

/// The highest `max_tags_per_machine`.
pub const MAX_TAGS_PER_MACHINE_CAP: usize = 1000;
/// The highest `max_tag_length`, as `script_metrics`' `max_label_length`.
pub const MAX_TAG_LENGTH_CAP: usize = 1024;

impl Default for MachineContext {
    fn default() -> Self {
        MachineContext {
            tags: Vec::new(),
            interval: default_machine_info_interval(),
            max_tags: default_max_tags_per_machine(),
            max_tag_length: default_max_tag_length(),
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
        let mut t = self;
        let keys = auth::SignInKeys {
            tenant_id: &t.tenant_id,
            client_id: &t.client_id,
            client_secret: &t.client_secret,
            client_secret_file: &t.client_secret_file,
            auth: &t.auth,
        };
        let sign_in = auth::resolve(keys, path, env).map_err(Invalid::sign_in)?;
        let keys = cloud::UrlKeys {
            cloud: t.cloud.unwrap_or_default(),
            region: t.region,
            api_url: t.api_url.as_deref(),
            login_url: t.login_url.as_deref(),
            audience: t.audience.as_deref(),
        };
        let urls = cloud::endpoints(keys, sign_in.auth.method(), env)?;
        let quota = t.quota.take().unwrap_or_default();
        quota.validate()?;
        let lookback = t.lookback.unwrap_or_else(default_lookback);
        if lookback.is_zero() {
            return Err(Invalid::new("lookback", "must be greater than 0"));
        }
        let mut discovery = t.discovery.take().unwrap_or_default();
        discovery
            .validate(poll_interval)
            .map_err(|e| e.under("discovery."))?;
        check_range(lookback, (Duration::ZERO, limits::LOOKBACK_MAX))
            .map_err(|m| Invalid::new("lookback", m))?;
        let machine_ids = t.machine_ids.take().unwrap_or_default();
        let action_ids = t.action_ids.take().unwrap_or_default();
        for (field, values) in [("machine_ids", &machine_ids), ("action_ids", &action_ids)] {
            if let Some(bad) = values.iter().find(|v| !is_safe_id(v)) {
                return Err(Invalid::new(
                    field,
                    format!("{bad:?} is not a valid id (letters, digits, '-', '.' only)"),
                ));
            }
        }
        let machine_context = machine_context(&t)?;
        Ok(Tenant {
            name: t.name,
            tenant_id: sign_in.tenant_id,
            client_id: sign_in.client_id,
            auth: sign_in.auth,
            api_url: urls.api_url,
            login_url: urls.login_url,
            audience: urls.audience,
            selectors: Selectors {
                lookback,
                requestor: t.requestor,
                machine_ids,
                action_ids,
                scripts: t.scripts.unwrap_or_default(),
                discovery,
            },
            quota,
            machine_context,
        })
    }
}

/// What resolving one tenant entry gives: a tenant to serve (with its narrowing of the
/// `script_metrics:` rules, when it has one), or a tenant refused alone because its sign-in
/// cannot be resolved (the complaint, its key absolute). See: #34
pub(super) enum Entry {
    Served(Box<Tenant>, Option<BTreeSet<String>>),
    Refused(Invalid),
}

/// What every tenant entry is resolved with, wherever it is written.
pub(super) struct Context<'a> {
    /// `tenant_defaults:`, when the file has it.
    pub defaults: Option<&'a RawTenant>,
    pub poll_interval: Duration,
    /// The top-level `script_metrics:` rules a tenant's list narrows.
    pub rules: &'a [ScriptRule],
    /// The file the entry is written in: relative file names are relative to it.
    pub path: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Resolve the entry `raw` written at `at` (`tenants[3].`, `[3].`): its name checked, the keys
/// it leaves out taken from the defaults, then validated. A complaint about a key the entry
/// inherited names the key under `tenant_defaults.` and the entry that inherited it; one
/// about a sign-in that cannot be resolved refuses this entry alone ([`Entry::Refused`]).
pub(super) fn entry(raw: RawTenant, at: &str, cx: &Context<'_>) -> Result<Entry, Invalid> {
    raw.check_name().map_err(|e| e.under(at))?;
    let (mut t, inherited) = match cx.defaults {
        Some(d) => raw.inherit(d),
        None => (raw, Vec::new()),
    };
    let name = t.name.clone();
    let place = |e: Invalid| -> Invalid {
        let head = e.key.split(['.', '[']).next().unwrap_or_default();
        if inherited.contains(&head) {
            let by = at.trim_end_matches('.');
            Invalid {
                key: format!("tenant_defaults.{}", e.key),
                message: format!("{} (inherited by {by}, {name:?})", e.message),
                unresolved: e.unresolved,
            }
        } else {
            e.under(at)
        }
    };
    let narrowed = match t.script_metrics.take() {
        Some(list) => Some(super::script_metrics::narrow(&list, cx.rules).map_err(&place)?),
        None => None,
    };
    match t.validate(cx.path, cx.env, cx.poll_interval) {
        Ok(tenant) => Ok(Entry::Served(Box::new(tenant), narrowed)),
        Err(e) => match place(e) {
            e if e.unresolved => Ok(Entry::Refused(e)),
            e => Err(e),
        },
    }
}

impl RawTenant {
    /// The defaults block's own check: `name` is each tenant's, never a default.
    pub(super) fn check_defaults(&self) -> Result<(), Invalid> {
        if !self.name.is_empty() {
            return Err(Invalid::new(
                "tenant_defaults.name",
                "each tenant sets its own name; it cannot be a default",
            ));
        }
        Ok(())
    }

    /// This entry with every key it leaves out taken from `d`, and the keys taken. The
    /// sign-in method goes as a whole: an entry that sets any of `client_secret`,
    /// `client_secret_file` or `auth` inherits none of them (a tenant with its own secret
    /// must not also get the defaults' certificate). Every other key goes alone, a block
    /// (`quota:`, `discovery:`) as a whole: a tenant's `quota:` replaces the defaults'.
    fn inherit(self, d: &RawTenant) -> (RawTenant, Vec<&'static str>) {
        let mut t = self;
        let mut taken = Vec::new();
        macro_rules! inherit {
            ($($field:ident),*) => {$(
                if t.$field.is_none() && d.$field.is_some() {
                    t.$field = d.$field.clone();
                    taken.push(stringify!($field));
                }
            )*};
        }
        let own_method =
            t.client_secret.is_some() || t.client_secret_file.is_some() || t.auth.is_some();
        if !own_method {
            inherit!(client_secret, client_secret_file, auth);
        }
        inherit!(
            tenant_id,
            client_id,
            cloud,
            region,
            api_url,
            login_url,
            audience,
            lookback,
            requestor,
            machine_ids,
            action_ids,
            scripts,
            quota,
            machine_tags,
            machine_info_interval,
            max_tags_per_machine,
            max_tag_length,
            discovery,
            script_metrics
        );
        (t, taken)
    }
}

/// `machine_tags` (anchored regexes), `machine_info_interval` and the tag caps.
fn machine_context(t: &RawTenant) -> Result<MachineContext, Invalid> {
    let patterns = t.machine_tags.as_deref().unwrap_or_default();
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
    let interval = t
        .machine_info_interval
        .unwrap_or_else(default_machine_info_interval);
    let max_tags = t
        .max_tags_per_machine
        .unwrap_or_else(default_max_tags_per_machine);
    let max_tag_length = t.max_tag_length.unwrap_or_else(default_max_tag_length);
    if interval < Duration::from_secs(1) {
        return Err(Invalid::new("machine_info_interval", "must be at least 1s"));
    }
    for (key, value, cap) in [
        ("max_tags_per_machine", max_tags, MAX_TAGS_PER_MACHINE_CAP),
        ("max_tag_length", max_tag_length, MAX_TAG_LENGTH_CAP),
    ] {
        if value == 0 || value > cap {
            return Err(Invalid::new(key, format!("must be between 1 and {cap}")));
        }
    }
    Ok(MachineContext {
        tags,
        interval,
        max_tags,
        max_tag_length,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::Config;
    use super::super::fixtures::{GOOD, assert_errors, env, parse};
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
        // See: #24: the caps' defaults.
        assert_eq!((mc.max_tags, mc.max_tag_length), (20, 128));
        let set = parse(&format!(
            "{GOOD}    max_tags_per_machine: 5\n    max_tag_length: 64\n"
        ))
        .unwrap();
        let set = &set.tenants[0].machine_context;
        assert_eq!((set.max_tags, set.max_tag_length), (5, 64));
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
            // See: #24
            (
                format!("{GOOD}    max_tags_per_machine: 0\n"),
                "config file cfg.yml: tenants[0].max_tags_per_machine: must be between 1 and 1000",
            ),
            (
                format!("{GOOD}    max_tags_per_machine: 1001\n"),
                "config file cfg.yml: tenants[0].max_tags_per_machine: must be between 1 and 1000",
            ),
            (
                format!("{GOOD}    max_tag_length: 0\n"),
                "config file cfg.yml: tenants[0].max_tag_length: must be between 1 and 1024",
            ),
            (
                format!("{GOOD}    max_tag_length: 2000\n"),
                "config file cfg.yml: tenants[0].max_tag_length: must be between 1 and 1024",
            ),
            (
                GOOD.replace("name: contoso", "name: ' '"),
                "config file cfg.yml: tenants[0].name: must not be empty",
            ),
        ]);
    }

    /// See: #34. One multi-tenant app: one block of defaults, and entries of a name and a
    /// tenant id; an entry's own key wins, a block goes whole, and a sign-in method of the
    /// entry's own takes none of the defaults'.
    #[test]
    fn defaults_are_inherited_and_overridden() {
        let c = parse(
            "
tenant_defaults:
  client_id: mssp-app
  client_secret: ${MDE_SECRET}
  cloud: gcc
  lookback: 2h
  quota:
    per_minute: 5
tenants:
  - name: a
    tenant_id: t1
  - name: b
    tenant_id: t2
    lookback: 3h
    cloud: commercial
    quota:
      per_hour: 50
  - name: c
    auth:
      method: managed_identity
",
        )
        .unwrap();
        let [a, b, m] = &c.tenants[..] else {
            panic!("{:?}", c.tenants)
        };
        assert_eq!(
            (a.client_id.as_str(), a.tenant_id.as_str()),
            ("mssp-app", "t1")
        );
        assert!(matches!(&a.auth, Auth::ClientSecret(s) if s.expose() == "s3cret"));
        assert_eq!(a.selectors.lookback, Duration::from_secs(7200));
        assert_eq!(
            a.api_url.as_str(),
            "https://api-gcc.securitycenter.microsoft.us/"
        );
        assert_eq!(a.quota.per_minute, 5);
        assert_eq!(b.selectors.lookback, Duration::from_secs(3 * 3600));
        assert_eq!(
            b.api_url.as_str(),
            "https://api.securitycenter.microsoft.com/"
        );
        // The tenant's quota block replaces the defaults' whole.
        assert_eq!(b.quota.per_hour, 50);
        assert_eq!(b.quota.per_minute, QuotaConfig::default().per_minute);
        assert!(matches!(m.auth, Auth::ManagedIdentity { .. }));
        assert_eq!(m.client_id, "mssp-app");
    }

    /// See: #34. The defaults' own errors, and an inherited key's, name `tenant_defaults.`.
    #[test]
    fn defaults_errors_name_the_defaults() {
        let defaults = |block: &str| {
            format!(
                "tenant_defaults:\n  client_id: app\n{block}tenants:\n  - name: a\n    tenant_id: t\n    client_secret: x\n"
            )
        };
        assert_errors(&[
            (
                defaults("  name: everyone\n"),
                "config file cfg.yml: tenant_defaults.name: each tenant sets its own name; it cannot be a default",
            ),
            (
                defaults("  lookback: 0s\n"),
                "config file cfg.yml: tenant_defaults.lookback: must be greater than 0 (inherited by tenants[0], \"a\")",
            ),
            (
                defaults("  quota:\n    hour: 8days\n"),
                "config file cfg.yml: tenant_defaults.quota.hour: must be at most 7d (got 8d) (inherited by tenants[0], \"a\")",
            ),
            (
                defaults("  client_secret_file: /nonexistent/secret\n")
                    .replace("    client_secret: x\n", ""),
                "config file cfg.yml: tenant_defaults.client_secret_file: cannot read /nonexistent/secret: No such file or directory (os error 2) (inherited by tenants[0], \"a\")",
            ),
        ]);
        let e = parse(&defaults("  colud: gcc\n")).unwrap_err().to_string();
        assert!(
            e.starts_with("config file cfg.yml: tenant_defaults: unknown field `colud`"),
            "{e}"
        );
    }

    /// See: #34. A tenant whose secret's variable is not set is refused alone: the others are
    /// served, `--config.check` (`strict`) gives its message.
    #[test]
    fn an_unresolvable_secret_refuses_that_tenant_alone() {
        let text = format!(
            "{GOOD}  - name: broken\n    tenant_id: t\n    client_id: c\n    client_secret: ${{NOT_SET}}\n  - name: also\n    tenant_id: t\n    client_id: c\n    client_secret: x\n"
        );
        let c = Config::parse(&text, Path::new("cfg.yml"), &env).unwrap();
        let names: Vec<&str> = c.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["contoso", "also"]);
        assert_eq!(c.refused.len(), 1);
        assert_eq!(c.refused[0].tenant, "broken");
        let want = "config file cfg.yml: tenants[1].client_secret: environment variable NOT_SET is not set";
        assert_eq!(c.refused[0].to_string(), want);
        assert_eq!(c.strict().unwrap_err().to_string(), want);
        // A mistake of the file's, not the environment's, still refuses the whole file.
        let e = parse(&format!("{GOOD}    client_secret_file: s.txt\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config file cfg.yml: tenants[0].client_secret: set either client_secret or client_secret_file, not both"
        );
    }
}
