//! The web configuration file: exporter-toolkit's schema, read strictly, validated into a
//! [`WebConfig`].
//!
//! Owns [`WebConfig`] and the checks that do not need TLS (headers allow-list, bcrypt hashes),
//! and re-exports [`Error`]. Does not own the raw serde schema (see `raw`), the error type and
//! its messages (see `error`), building the rustls configuration (see [`crate::tls`], called
//! from here so a bad `tls_server_config` fails at load) nor using any of it on a request (see
//! [`crate::guard`] and [`crate::serve`](mod@crate::serve)).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use tokio_rustls::rustls::ServerConfig;

pub use crate::error::Error;
use crate::error::{Ctx, io_message};
use crate::raw::RawFile;
use crate::tls::build_tls;

/// A validated web configuration: TLS material loaded and checked, users' hashes checked.
pub struct WebConfig {
    /// The file it came from, for log lines.
    path: PathBuf,
    /// `None` serves plain HTTP (no `tls_server_config`, or one with nothing set, as in Go).
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// User name → bcrypt hash. Empty disables basic auth.
    pub(crate) users: BTreeMap<String, String>,
    /// Extra headers set on every response, including 401s.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`: (interval, burst) for one server-wide token bucket.
    pub(crate) rate_limit: Option<(Duration, u32)>,
}

impl fmt::Debug for WebConfig {
    // Hand-written so password hashes never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl WebConfig {
    /// Read and validate a web config file; relative paths in it resolve against its directory.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            message: io_message(&source),
            source,
        })?;
        WebConfig::parse(&text, path)
    }

    /// Validate web config text. `path` is used in messages and to resolve relative file names
    /// (against its parent directory); it is not read.
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, Error> {
        let ctx = Ctx { path };
        // An empty file (or one with only comments) is a valid "no TLS, no auth" config.
        let raw: Option<RawFile> = serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let raw = raw.unwrap_or_default();
        let rate_limit = match raw.rate_limit {
            Some(r) => r.validate(&ctx)?,
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let tls = match raw.tls_server_config {
            Some(t) => build_tls(t, dir, &ctx)?,
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            // `http2` is accepted so toolkit files load, and has no effect: only HTTP/1.1 is
            // compiled into hyper here, and TLS advertises only `http/1.1` in ALPN.
            let _http2_is_ignored = http.http2;
            for (name, value) in http.headers.unwrap_or_default() {
                headers.push(check_header(&name, &value, &ctx)?);
            }
        }
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_bcrypt_hash(hash)
                .map_err(|m| ctx.invalid(format!("basic_auth_users.{user}"), m))?;
        }
        Ok(WebConfig {
            path: path.to_path_buf(),
            tls,
            users,
            headers,
            rate_limit,
        })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rustls server configuration, when TLS is configured.
    pub fn tls_config(&self) -> Option<&Arc<ServerConfig>> {
        self.tls.as_ref()
    }

    /// Whether requests must carry basic-auth credentials.
    pub fn basic_auth_enabled(&self) -> bool {
        !self.users.is_empty()
    }
}

/// exporter-toolkit allows only these headers, and for two of them only these values; kept the
/// same so a file accepted there means the same here.
fn check_header(name: &str, value: &str, ctx: &Ctx) -> Result<(HeaderName, HeaderValue), Error> {
    const ALLOWED: &[(&str, &[&str])] = &[
        ("Strict-Transport-Security", &[]),
        ("X-Content-Type-Options", &["nosniff"]),
        ("X-Frame-Options", &["deny", "sameorigin"]),
        ("X-XSS-Protection", &[]),
        ("Content-Security-Policy", &[]),
    ];
    let key = format!("http_server_config.headers.{name}");
    let Some((_, values)) = ALLOWED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) else {
        return Err(ctx.invalid(
            key,
            "this header can not be configured (allowed: Strict-Transport-Security, \
             X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)",
        ));
    };
    if !values.is_empty() && !values.contains(&value) {
        return Err(ctx.invalid(
            key,
            format!("invalid value {value:?}, expected one of {values:?}"),
        ));
    }
    let header_name = HeaderName::try_from(name).map_err(|e| ctx.invalid(&key, e.to_string()))?;
    let header_value =
        HeaderValue::try_from(value).map_err(|e| ctx.invalid(&key, e.to_string()))?;
    Ok((header_name, header_value))
}

/// What exporter-toolkit checks at load (`bcrypt.Cost`): the hash parses and its cost is valid.
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e: bcrypt::BcryptError| format!("not a bcrypt hash: {e}"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("not a bcrypt hash: cost {cost} is outside 4..=31"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::err;

    #[test]
    fn empty_or_comment_only_file_means_plain_http_without_auth() {
        for text in ["", "# nothing\n", "{}"] {
            let web = WebConfig::parse(text, Path::new("/x/web.yml")).unwrap();
            assert!(web.tls_config().is_none(), "{text:?}");
            assert!(!web.basic_auth_enabled(), "{text:?}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_eq!(
            err("tls_server_config:\n  cert_fil: a\n"),
            "web config file /x/web.yml: tls_server_config: unknown field `cert_fil`, expected \
             one of `cert`, `key`, `client_ca`, `cert_file`, `key_file`, `client_auth_type`, \
             `client_ca_file`, `cipher_suites`, `curve_preferences`, `min_version`, \
             `max_version`, `prefer_server_cipher_suites`, `client_allowed_sans` at line 2 column 3"
        );
        assert_eq!(
            err("basic_auth:\n  a: b\n"),
            "web config file /x/web.yml: unknown field `basic_auth`, expected one of \
             `tls_server_config`, `http_server_config`, `rate_limit`, `basic_auth_users`"
        );
    }

    #[test]
    fn headers_follow_exporter_toolkit_allow_list() {
        let web = WebConfig::parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert_eq!(web.headers.len(), 2);
        assert_eq!(
            err("http_server_config:\n  headers:\n    X-Powered-By: me\n"),
            "web config file /x/web.yml: http_server_config.headers.X-Powered-By: this header \
             can not be configured (allowed: Strict-Transport-Security, X-Content-Type-Options, \
             X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"
        );
        assert_eq!(
            err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n"),
            "web config file /x/web.yml: http_server_config.headers.X-Frame-Options: invalid \
             value \"allow\", expected one of [\"deny\", \"sameorigin\"]"
        );
    }

    #[test]
    fn rate_limit_is_parsed_like_go() {
        let web = WebConfig::parse(
            "rate_limit:\n  burst: 5\n  interval: 1m30s\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert_eq!(web.rate_limit, Some((Duration::from_secs(90), 5)));
        let off = WebConfig::parse("rate_limit:\n  burst: 5\n", Path::new("/x/web.yml")).unwrap();
        assert_eq!(off.rate_limit, None);
        assert_eq!(
            err("rate_limit:\n  interval: 1s\n"),
            "web config file /x/web.yml: rate_limit.burst: must be at least 1 when \
             rate_limit.interval is set"
        );
    }

    #[test]
    fn bcrypt_hashes_are_checked_at_load() {
        assert_eq!(
            err("basic_auth_users:\n  alice: secret\n"),
            "web config file /x/web.yml: basic_auth_users.alice: not a bcrypt hash: Invalid \
             hash: the hash format is malformed; expected 60 ASCII bytes"
        );
        let web = WebConfig::parse(
            "basic_auth_users:\n  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert!(web.basic_auth_enabled());
        assert!(
            !format!("{web:?}").contains("$2y$"),
            "Debug must not show hashes"
        );
    }

    #[test]
    fn cannot_read_the_web_config_itself() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read web config file /nonexistent/web.yml: No such file or directory"
        );
    }
}
