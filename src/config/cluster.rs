//! The `cluster:` section (#31): run as one member of a cluster of exporters that share the
//! tenants and their state through PostgreSQL.
//!
//! Owns the section as written and validated: the database URL (`postgres_url`, `${VAR}`
//! expanded, or `postgres_url_file`) kept as a [`PostgresUrl`] that never shows its password,
//! its `sslmode` and `sslrootcert` (libpq's names and meanings), `lease_duration` and the
//! member name. Does not own connecting (`crate::cluster::connect`), leases or the schema
//! (`crate::cluster`), nor the flags that conflict with it (`crate::app::cli`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{Invalid, check_range};
use super::env::{expand, expand_secret};

/// Bounds of `lease_duration`: under 3 s a member renews so often the database is the load;
/// over 10 min a lost member's tenants stay dark too long.
pub const LEASE_DURATION: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(600));

/// The longest member name (a DNS name, such as a pod name, fits).
const MAX_MEMBER: usize = 253;

/// How the connection is encrypted, as libpq's `sslmode` says (`allow` is read as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP (a loopback test server).
    Disable,
    /// TLS if the server offers it, the certificate not checked (libpq's default).
    Prefer,
    /// TLS, the certificate checked only when `sslrootcert` is given (as libpq).
    Require,
    /// TLS, the certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain and the host name checked (Azure Database for PostgreSQL).
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// A PostgreSQL URL (`postgres://user:password@host:port/db?sslmode=...`). Its `Debug` and
/// `Display` show it with the password replaced: it reaches no log line, error or page.
#[derive(Clone, PartialEq)]
pub struct PostgresUrl {
    /// The URL without the `ssl*` parameters this exporter handles itself.
    url: url::Url,
    pub sslmode: SslMode,
    /// `sslrootcert`: a PEM file of CA certificates, or `system` for the system's roots.
    pub sslrootcert: Option<String>,
}

impl PostgresUrl {
    /// Parse and check a URL. Errors never quote it (it may hold a password).
    pub fn parse(text: &str) -> Result<PostgresUrl, String> {
        let mut url = url::Url::parse(text.trim()).map_err(|e| {
            format!("not a URL ({e}; the value is not shown: it may hold a password)")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the scheme must be postgres:// or postgresql:// (got {}://)",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host".into());
        }
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    sslmode = SslMode::parse(&v).ok_or_else(|| {
                        format!(
                            "sslmode {v:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        )
                    })?
                }
                "sslrootcert" => sslrootcert = Some(v.into_owned()),
                "sslcert" | "sslkey" | "sslcrl" | "sslpassword" => {
                    return Err(format!(
                        "{k} is not supported (client certificates are not; use a password)"
                    ));
                }
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && sslrootcert.is_none() {
            return Err(format!(
                "sslmode {} needs sslrootcert (a PEM file of CA certificates, or sslrootcert=system for the system's roots)",
                if sslmode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ));
        }
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        Ok(PostgresUrl {
            url,
            sslmode,
            sslrootcert,
        })
    }

    /// The URL to connect with (password included, `ssl*` parameters removed).
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> String {
        format!(
            "{}:{}{}",
            self.url.host_str().unwrap_or_default(),
            self.url.port().unwrap_or(5432),
            self.url.path()
        )
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("REDACTED"));
        }
        shown.set_query(None);
        write!(f, "{shown}")
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// This host's name: the default member name (and OTLP's `service.instance.id`).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default)]
    postgres_url: Option<String>,
    #[serde(default)]
    postgres_url_file: Option<PathBuf>,
    #[serde(default = "default_lease_duration", with = "humantime_serde")]
    lease_duration: Duration,
    #[serde(default)]
    member: Option<String>,
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(30)
}

/// The validated section.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub postgres_url: PostgresUrl,
    /// How long a tenant's lease (and a member's heartbeat) lasts without renewal.
    pub lease_duration: Duration,
    /// This member's name, unique in the cluster (default: the host name).
    pub member: String,
}

impl RawCluster {
    /// Check the section; `hostname` is the default member name; `dir` resolves a relative
    /// `postgres_url_file`.
    pub(super) fn validate(
        self,
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        hostname: &dyn Fn() -> String,
    ) -> Result<ClusterConfig, Invalid> {
        check_range(self.lease_duration, LEASE_DURATION)
            .map_err(|m| Invalid::new("lease_duration", m))?;
        let text = match (self.postgres_url, self.postgres_url_file) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "postgres_url",
                    "give postgres_url or postgres_url_file, not both",
                ));
            }
            (None, None) => {
                return Err(Invalid::new(
                    "postgres_url",
                    "required (or postgres_url_file): the PostgreSQL database the members share",
                ));
            }
            (Some(url), None) => {
                expand_secret(&url, env).map_err(|m| Invalid::new("postgres_url", m))?
            }
            (None, Some(file)) => {
                let file = expand(&file.to_string_lossy(), env)
                    .map_err(|m| Invalid::new("postgres_url_file", m))?;
                let path = dir.join(file);
                let bytes = super::sign_in_file::read(&path).map_err(|e| {
                    Invalid::new(
                        "postgres_url_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                super::text::decode(&bytes)
                    .map_err(|e| {
                        Invalid::new(
                            "postgres_url_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
        };
        let postgres_url =
            PostgresUrl::parse(&text).map_err(|m| Invalid::new("postgres_url", m))?;
        let member = match self.member {
            Some(m) => expand(&m, env).map_err(|e| Invalid::new("member", e))?,
            None => hostname(),
        };
        if member.is_empty()
            || member.len() > MAX_MEMBER
            || member.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Invalid::new(
                "member",
                format!(
                    "must be 1 to {MAX_MEMBER} characters without spaces or control characters (got {member:?})"
                ),
            ));
        }
        Ok(ClusterConfig {
            postgres_url,
            lease_duration: self.lease_duration,
            member,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawCluster {
        serde_norway::from_str(yaml).unwrap()
    }

    fn check(yaml: &str) -> Result<ClusterConfig, Invalid> {
        raw(yaml).validate(
            Path::new("/etc"),
            &|v| (v == "PG_URL").then(|| "postgres://u:pw@db:5433/mde?sslmode=require".into()),
            &|| "host-a".into(),
        )
    }

    #[test]
    fn defaults_and_expansion() {
        let c = check("postgres_url: ${PG_URL}").unwrap();
        assert_eq!(c.lease_duration, Duration::from_secs(30));
        assert_eq!(c.member, "host-a");
        assert_eq!(c.postgres_url.sslmode, SslMode::Require);
        assert_eq!(c.postgres_url.target(), "db:5433/mde");
        assert_eq!(c.postgres_url.expose(), "postgres://u:pw@db:5433/mde");
    }

    #[test]
    fn the_password_is_never_shown() {
        let c = check("postgres_url: ${PG_URL}").unwrap();
        let shown = format!("{} {:?} {c:?}", c.postgres_url, c.postgres_url);
        assert!(!shown.contains("pw"), "{shown}");
        assert!(
            shown.contains("postgres://u:REDACTED@db:5433/mde"),
            "{shown}"
        );
        let e = PostgresUrl::parse("postgres://u:se cret@[bad").unwrap_err();
        assert!(!e.contains("se cret"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = check("postgres_url: mysql://x/y").unwrap_err();
        assert_eq!(e.key, "postgres_url");
        assert_eq!(
            e.message,
            "the scheme must be postgres:// or postgresql:// (got mysql://)"
        );
        let e = check("postgres_url: postgres://db/x?sslmode=verify-full").unwrap_err();
        assert_eq!(
            e.message,
            "sslmode verify-full needs sslrootcert (a PEM file of CA certificates, or sslrootcert=system for the system's roots)"
        );
        let e = check("postgres_url: postgres://db/x?sslmode=strict").unwrap_err();
        assert_eq!(
            e.message,
            "sslmode \"strict\" is not one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        let e = check("lease_duration: 30s").unwrap_err();
        assert_eq!(e.key, "postgres_url");
        let e = check("postgres_url: postgres://db/x\nlease_duration: 1s").unwrap_err();
        assert_eq!(e.key, "lease_duration");
        let e = check("postgres_url: postgres://db/x\nmember: 'a b'").unwrap_err();
        assert_eq!(e.key, "member");
        let e = check("postgres_url: ${NOPE}").unwrap_err();
        assert_eq!(e.message, "environment variable NOPE is not set");
    }

    #[test]
    fn verify_full_keeps_its_root() {
        let c = check(
            "postgres_url: postgres://db/x?sslmode=verify-full&sslrootcert=/ca.pem&application_name=e",
        )
        .unwrap();
        assert_eq!(c.postgres_url.sslmode, SslMode::VerifyFull);
        assert_eq!(c.postgres_url.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(
            c.postgres_url.expose(),
            "postgres://db/x?application_name=e"
        );
    }
}
