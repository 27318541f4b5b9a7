//! Where a tenant's API, login and audience are: cloud and region → URLs, and the URL rules.
//!
//! Owns what the `cloud`, `region`, `api_url`, `login_url` and `audience` keys of a tenant
//! mean and their checks (with the AKS `AZURE_AUTHORITY_HOST` for workload identity), the
//! rule that plain http is for loopback hosts only (see [`super::loopback`]), and the
//! [`Cloud`] and [`Region`] types
//! with the table of the Microsoft clouds' hosts and the regional API hosts. Does not own the
//! keys as written (`tenant`'s `RawTenant`, which hands them over as `UrlKeys`), how a tenant
//! signs in (`auth`), nor the proxy (`proxy`).

use serde::Deserialize;
use url::Url;

use super::auth::AuthMethod;
use super::check::Invalid;

/// Which Microsoft cloud a tenant lives in; decides the default API, login and audience URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    #[default]
    Commercial,
    Gcc,
    GccHigh,
    Dod,
}

impl Cloud {
    /// The token audience the cloud's API expects.
    pub fn audience(self) -> &'static str {
        self.urls().2
    }

    /// (API base, login authority, token audience), from the table in the API notes.
    pub(super) fn urls(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Cloud::Commercial => (
                "https://api.securitycenter.microsoft.com",
                "https://login.microsoftonline.com",
                "https://api.securitycenter.microsoft.com",
            ),
            Cloud::Gcc => (
                "https://api-gcc.securitycenter.microsoft.us",
                "https://login.microsoftonline.com",
                "https://api-gcc.securitycenter.microsoft.us",
            ),
            Cloud::GccHigh | Cloud::Dod => (
                "https://api-gov.securitycenter.microsoft.us",
                "https://login.microsoftonline.us",
                "https://api-gov.securitycenter.microsoft.us",
            ),
        }
    }
}

/// The regional hosts of `api.security.microsoft.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Us,
    Eu,
    Uk,
    Au,
    Swa,
    Ina,
    /// Listed by the newer Learn pages (2026-01); the token audience stays the legacy one. See: #20
    Aea,
}

impl Region {
    /// e.g. `https://eu.api.security.microsoft.com`.
    pub fn api_url(self) -> &'static str {
        match self {
            Region::Us => "https://us.api.security.microsoft.com",
            Region::Eu => "https://eu.api.security.microsoft.com",
            Region::Uk => "https://uk.api.security.microsoft.com",
            Region::Au => "https://au.api.security.microsoft.com",
            Region::Swa => "https://swa.api.security.microsoft.com",
            Region::Ina => "https://ina.api.security.microsoft.com",
            Region::Aea => "https://aea.api.security.microsoft.com",
        }
    }
}

/// A tenant's URL keys as written (the tenant holds them beside its other keys).
pub(super) struct UrlKeys<'a> {
    pub cloud: Cloud,
    pub region: Option<Region>,
    pub api_url: Option<&'a str>,
    pub login_url: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// A tenant's validated URLs.
pub(super) struct Endpoints {
    pub api_url: Url,
    pub login_url: Url,
    pub audience: String,
}

/// The API base, login authority and audience of a tenant signing in with `method`; the
/// error's key is the tenant's key at fault.
pub(super) fn endpoints(
    t: UrlKeys<'_>,
    method: AuthMethod,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoints, Invalid> {
    let (mut api_default, mut login_default, audience_default) = t.cloud.urls();
    if let Some(region) = t.region {
        if t.cloud != Cloud::Commercial {
            return Err(Invalid::new(
                "region",
                "regional hosts exist only in the commercial cloud",
            ));
        }
        if t.api_url.is_some() {
            return Err(Invalid::new(
                "region",
                "set either region or api_url, not both",
            ));
        }
        api_default = region.api_url();
    }
    // AKS workload identity names the authority it federates with.
    let authority = env("AZURE_AUTHORITY_HOST");
    if method == AuthMethod::WorkloadIdentity
        && let Some(a) = authority.as_deref().filter(|a| !a.is_empty())
    {
        login_default = a;
    }
    let api_url =
        parse_url(t.api_url.unwrap_or(api_default)).map_err(|m| Invalid::new("api_url", m))?;
    let login_url = parse_url(t.login_url.unwrap_or(login_default))
        .map_err(|m| Invalid::new("login_url", m))?;
    let audience = t.audience.unwrap_or(audience_default).to_string();
    Ok(Endpoints {
        api_url,
        login_url,
        audience,
    })
}

/// Accept https anywhere, and plain http only for loopback hosts (tests, the simulator).
fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            if !super::loopback::is_loopback(&url) {
                return Err(format!(
                    "{s:?}: plain http is only allowed for loopback hosts; use https"
                ));
            }
        }
        other => return Err(format!("{s:?}: unsupported scheme {other:?}")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?}: must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};

    #[test]
    fn gcc_high_uses_the_gov_hosts() {
        let c = parse(&format!("{GOOD}    cloud: gcc-high\n")).unwrap();
        assert_eq!(
            c.tenants[0].api_url.as_str(),
            "https://api-gov.securitycenter.microsoft.us/"
        );
        assert!(
            c.tenants[0]
                .token_url()
                .starts_with("https://login.microsoftonline.us/")
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let ok = parse(&format!("{GOOD}    api_url: http://127.0.0.1:9000\n"));
        assert!(ok.is_ok());
    }

    // See: #10
    #[test]
    fn region_picks_the_regional_host() {
        let c = parse(&format!("{GOOD}    region: eu\n")).unwrap();
        assert_eq!(
            c.tenants[0].api_url.as_str(),
            "https://eu.api.security.microsoft.com/"
        );
        // The audience stays the one the API expects.
        assert_eq!(
            c.tenants[0].scope(),
            "https://api.securitycenter.microsoft.com/.default"
        );
    }

    // See: #20 (item 6): `aea`, listed by the newer Learn pages, with the legacy audience.
    #[test]
    fn region_aea_is_a_regional_host_with_the_legacy_audience() {
        let c = parse(&format!("{GOOD}    region: aea\n")).unwrap();
        assert_eq!(
            c.tenants[0].api_url.as_str(),
            "https://aea.api.security.microsoft.com/"
        );
        assert_eq!(
            c.tenants[0].scope(),
            "https://api.securitycenter.microsoft.com/.default"
        );
    }

    #[test]
    fn url_errors_name_the_key() {
        assert_errors(&[
            (
                format!("{GOOD}    api_url: http://example.com\n"),
                "config file cfg.yml: tenants[0].api_url: \"http://example.com\": plain http is only allowed for loopback hosts; use https",
            ),
            (
                format!("{GOOD}    region: eu\n    cloud: gcc\n"),
                "config file cfg.yml: tenants[0].region: regional hosts exist only in the commercial cloud",
            ),
            (
                format!("{GOOD}    region: eu\n    api_url: https://x.example\n"),
                "config file cfg.yml: tenants[0].region: set either region or api_url, not both",
            ),
            (
                format!("{GOOD}    login_url: ftp://login.example\n"),
                "config file cfg.yml: tenants[0].login_url: \"ftp://login.example\": unsupported scheme \"ftp\"",
            ),
            (
                format!("{GOOD}    api_url: https://api.example/?q=1\n"),
                "config file cfg.yml: tenants[0].api_url: \"https://api.example/?q=1\": must not have a query or fragment",
            ),
        ]);
    }
}
