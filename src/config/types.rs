//! The value types of the config file's sections that its schema (`raw`) holds as they are:
//! the sign-in method, the cloud and region, and a `script_metrics:` rule as written, with their
//! defaults and what each value means (a cloud's URLs, a region's host, a method's keys).
//!
//! Owns these types, their serde form and their defaults. Does not own checking them nor the
//! sections around them (`auth`, `cloud`), nor the schema
//! (`raw`).

use serde::Deserialize;

/// How a tenant signs in: the `auth:` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecret,
    Certificate,
    WorkloadIdentity,
    ManagedIdentity,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecret => "client_secret",
            AuthMethod::Certificate => "certificate",
            AuthMethod::WorkloadIdentity => "workload_identity",
            AuthMethod::ManagedIdentity => "managed_identity",
        }
    }

    /// The keys of the `auth:` block this method reads; any other key set is a mistake.
    pub(super) fn keys(self) -> &'static [&'static str] {
        match self {
            AuthMethod::ClientSecret => &["client_secret", "client_secret_file"],
            AuthMethod::Certificate => &[
                "certificate_file",
                "key_file",
                "pkcs12_file",
                "pkcs12_password",
                "pkcs12_password_file",
            ],
            AuthMethod::WorkloadIdentity => &["token_file"],
            AuthMethod::ManagedIdentity => &["client_id", "endpoint"],
        }
    }
}

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
