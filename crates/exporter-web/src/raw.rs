//! The web config file's raw serde schema (exporter-toolkit's `web.Config`), read strictly:
//! unknown keys are errors, and an empty string is unset as in Go.
//!
//! Owns the raw types and the one check a raw section makes of itself (`rate_limit`). Does not
//! own turning them into a [`crate::WebConfig`] (see [`crate::config`], [`crate::tls`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Ctx, Error};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub(crate) tls_server_config: Option<RawTls>,
    #[serde(default)]
    pub(crate) http_server_config: Option<RawHttp>,
    #[serde(default)]
    pub(crate) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(crate) basic_auth_users: Option<BTreeMap<String, String>>,
}

/// Go treats an empty string as unset; so do we (`Option<String>` + [`set`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) client_ca: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) client_auth_type: Option<String>,
    pub(crate) client_ca_file: Option<String>,
    pub(crate) cipher_suites: Option<Vec<String>>,
    pub(crate) curve_preferences: Option<Vec<String>>,
    pub(crate) min_version: Option<String>,
    pub(crate) max_version: Option<String>,
    pub(crate) prefer_server_cipher_suites: Option<bool>,
    pub(crate) client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) burst: Option<u32>,
    /// Go duration syntax ("1s", "500ms", "1m30s"); humantime reads those.
    #[serde(default, with = "humantime_serde")]
    pub(crate) interval: Option<Duration>,
}

impl RawRateLimit {
    /// An unset or zero interval disables limiting, as in Go.
    pub(crate) fn validate(self, ctx: &Ctx) -> Result<Option<(Duration, u32)>, Error> {
        let Some(interval) = self.interval.filter(|i| !i.is_zero()) else {
            return Ok(None);
        };
        match self.burst {
            // Go would build a limiter that refuses every request; say so instead.
            None | Some(0) => Err(ctx.invalid(
                "rate_limit.burst",
                "must be at least 1 when rate_limit.interval is set",
            )),
            Some(burst) => Ok(Some((interval, burst))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) http2: Option<bool>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
}

/// `Some` only for a non-empty string.
pub(crate) fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}
