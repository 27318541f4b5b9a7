//! How a tenant signs in: the `auth:` block (or the older tenant-level `client_secret` keys)
//! resolved into an [`Auth`], with the tenant and client ids.
//!
//! Owns the sign-in methods and their keys (the `auth:` block as written, `RawAuth`; the
//! tenant-level `tenant_id`, `client_id` and secret keys are written in `tenant`'s
//! `RawTenant`, which hands them over as `SignInKeys`), the AKS `AZURE_*` fallbacks of
//! workload identity, the file reads done at load (`client_secret_file`, and the certificate
//! and PKCS#12 files, checked in `certificate` through the pure `crate::config::credential`
//! so that a wrong or expired one is refused at load; each within the 1 MiB cap of sign-in
//! files, the federated token file's size checked too), paths relative to the config file,
//! and the secret types that never print themselves (with [`PasswordFileError`], a PKCS#12
//! password file that cannot be read); the [`AuthMethod`] type and which keys each method
//! reads. Does not own getting tokens (`crate::api::auth`), which reads the
//! certificate, password and token files again for every token.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::check::{Invalid, is_safe_id};
use super::env::{expand, expand_secret};

mod certificate;

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

/// The Azure instance metadata service's token endpoint (managed identity).
pub const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// A validated sign-in method. Files are named, not read: the token source reads them again
/// for every token request (the federated token file: when it changed), so rotated
/// certificates and projected tokens are picked up.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    ClientSecret(Secret),
    /// A PEM certificate, and its PEM key (`None`: in the certificate file).
    Certificate {
        certificate_file: PathBuf,
        key_file: Option<PathBuf>,
    },
    /// A PKCS#12 (`.pfx`) file holding the certificate and its key (`method: certificate`
    /// with `pkcs12_file`); the file, and a password file, are read for every token request.
    CertificatePkcs12 {
        pkcs12_file: PathBuf,
        password: Pkcs12Password,
    },
    /// A federated token file (AKS workload identity), read again when it changed.
    WorkloadIdentity {
        token_file: PathBuf,
    },
    /// The instance metadata endpoint; `client_id` picks a user-assigned identity.
    ManagedIdentity {
        client_id: Option<String>,
        endpoint: Url,
    },
}

impl Auth {
    pub fn method(&self) -> AuthMethod {
        match self {
            Auth::ClientSecret(_) => AuthMethod::ClientSecret,
            Auth::Certificate { .. } | Auth::CertificatePkcs12 { .. } => AuthMethod::Certificate,
            Auth::WorkloadIdentity { .. } => AuthMethod::WorkloadIdentity,
            Auth::ManagedIdentity { .. } => AuthMethod::ManagedIdentity,
        }
    }
}

/// A client secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is sent to the token endpoint.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the password of a PKCS#12 file comes from. Debug never shows a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Pkcs12Password {
    /// No password key: the empty password (Windows exports allow it).
    Empty,
    /// `pkcs12_password:` (after `${VAR}` expansion).
    Value(Secret),
    /// `pkcs12_password_file:`, read for every token request (trailing newline dropped), so
    /// a rotated file and its new password are picked up together.
    File(PathBuf),
}

impl Pkcs12Password {
    /// The password now; an error names the password file when it cannot be read.
    pub fn resolve(&self) -> Result<Secret, PasswordFileError> {
        match self {
            Pkcs12Password::Empty => Ok(Secret(String::new())),
            Pkcs12Password::Value(s) => Ok(s.clone()),
            Pkcs12Password::File(file) => read_text(file)
                .map(|text| Secret(text.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|error| PasswordFileError {
                    file: file.clone(),
                    error,
                }),
        }
    }
}

/// The password file of a PKCS#12 file could not be read (or is over the cap of sign-in
/// files). The cause is in the message, not chained as `source`.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {error}", file.display())]
pub struct PasswordFileError {
    pub file: PathBuf,
    pub error: std::io::Error,
}

/// A small text file (a secret or a password), within the cap of sign-in files; a UTF-8 byte
/// order mark is not part of it (see [`crate::config::text`]).
fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = crate::config::sign_in_file::read(path)?;
    crate::config::text::decode(&bytes)
        .map(str::to_string)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// A tenant's sign-in, resolved.
pub(super) struct SignIn {
    pub tenant_id: String,
    pub client_id: String,
    pub auth: Auth,
}

/// A tenant's sign-in keys as written (the tenant holds them beside its other keys).
pub(super) struct SignInKeys<'a> {
    pub tenant_id: &'a Option<String>,
    pub client_id: &'a Option<String>,
    pub client_secret: &'a Option<String>,
    pub client_secret_file: &'a Option<PathBuf>,
    pub auth: &'a Option<RawAuth>,
}

/// The tenant id, client id and sign-in method of a raw tenant; the error's key is under
/// the tenant. The old tenant-level `client_secret`/`client_secret_file` keys are
/// `method: client_secret` and keep their old error texts.
pub(super) fn resolve(
    t: SignInKeys<'_>,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SignIn, Invalid> {
    let (raw, prefix) = auth_block(&t)?;
    let cx = Cx {
        method: raw.method,
        prefix,
        config_file: path,
        env,
    };
    cx.refuse_other_methods_keys(&raw)?;
    let tenant_id = cx.id("tenant_id", t.tenant_id, "AZURE_TENANT_ID")?;
    let client_id = cx.id("client_id", t.client_id, "AZURE_CLIENT_ID")?;
    let auth = match raw.method {
        AuthMethod::ClientSecret => cx.client_secret(&raw)?,
        AuthMethod::Certificate => cx.certificate(&raw)?,
        AuthMethod::WorkloadIdentity => cx.workload_identity(&raw)?,
        AuthMethod::ManagedIdentity => cx.managed_identity(&raw)?,
    };
    for (field, v) in [("tenant_id", &tenant_id), ("client_id", &client_id)] {
        if v.contains('/') || v.contains('?') || v.contains('#') {
            return Err(Invalid::new(field, "must not contain '/', '?' or '#'"));
        }
    }
    Ok(SignIn {
        tenant_id,
        client_id,
        auth,
    })
}

/// The `auth:` block, or the tenant-level secret keys read as `method: client_secret`; with
/// the prefix of the block's keys (`auth.` or none).
fn auth_block(t: &SignInKeys<'_>) -> Result<(RawAuth, &'static str), Invalid> {
    let legacy = t.client_secret.is_some() || t.client_secret_file.is_some();
    match t.auth {
        Some(_) if legacy => Err(Invalid::new(
            "client_secret",
            "set the secret inside auth: or at the tenant, not both",
        )),
        Some(a) => Ok((a.clone(), "auth.")),
        None => Ok((
            RawAuth {
                method: AuthMethod::ClientSecret,
                client_secret: t.client_secret.clone(),
                client_secret_file: t.client_secret_file.clone(),
                certificate_file: None,
                key_file: None,
                pkcs12_file: None,
                pkcs12_password: None,
                pkcs12_password_file: None,
                token_file: None,
                client_id: None,
                endpoint: None,
            },
            "",
        )),
    }
}

/// What every method's resolution needs.
struct Cx<'a> {
    method: AuthMethod,
    /// Before the keys of the block: `auth.` or none (the tenant-level secret keys).
    prefix: &'static str,
    config_file: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Cx<'_> {
    /// A complaint about a key of the block.
    fn invalid(&self, field: &str, message: impl Into<String>) -> Invalid {
        Invalid::new(format!("{}{field}", self.prefix), message)
    }

    /// Relative paths are relative to the config file, not the working dir.
    fn relative(&self, file: &Path) -> PathBuf {
        match self.config_file.parent() {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.to_path_buf(),
        }
    }

    /// Keys of another method are mistakes, not silently ignored settings.
    fn refuse_other_methods_keys(&self, raw: &RawAuth) -> Result<(), Invalid> {
        let present = [
            ("client_secret", raw.client_secret.is_some()),
            ("client_secret_file", raw.client_secret_file.is_some()),
            ("certificate_file", raw.certificate_file.is_some()),
            ("key_file", raw.key_file.is_some()),
            ("pkcs12_file", raw.pkcs12_file.is_some()),
            ("pkcs12_password", raw.pkcs12_password.is_some()),
            ("pkcs12_password_file", raw.pkcs12_password_file.is_some()),
            ("token_file", raw.token_file.is_some()),
            ("client_id", raw.client_id.is_some()),
            ("endpoint", raw.endpoint.is_some()),
        ];
        let used = self.method.keys();
        match present.iter().find(|(f, set)| *set && !used.contains(f)) {
            Some((field, _)) => Err(self.invalid(
                field,
                format!("not used by method {}", self.method.as_str()),
            )),
            None => Ok(()),
        }
    }

    /// `tenant_id` or `client_id` of the tenant: the key, else the AKS variable (workload
    /// identity), else empty (managed identity), else an error.
    fn id(&self, field: &str, value: &Option<String>, azure_var: &str) -> Result<String, Invalid> {
        let method = self.method;
        let value = match value {
            Some(v) => expand(v, self.env).map_err(|m| Invalid::new(field, m))?,
            None => match method {
                AuthMethod::WorkloadIdentity => (self.env)(azure_var).ok_or_else(|| {
                    Invalid::new(field, format!("not set, and {azure_var} is not set"))
                })?,
                AuthMethod::ManagedIdentity => String::new(),
                _ => {
                    return Err(Invalid::new(
                        field,
                        format!("required for method {}", method.as_str()),
                    ));
                }
            },
        };
        if value.trim().is_empty() && method != AuthMethod::ManagedIdentity {
            return Err(Invalid::new(field, "must not be empty"));
        }
        Ok(value)
    }

    /// `client_secret` (expanded) or `client_secret_file` (read now), trailing newline dropped.
    fn client_secret(&self, raw: &RawAuth) -> Result<Auth, Invalid> {
        let secret = match (&raw.client_secret, &raw.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "client_secret",
                    "set either client_secret or client_secret_file, not both",
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    "client_secret",
                    "one of client_secret or client_secret_file is required",
                ));
            }
            (Some(s), None) => {
                expand_secret(s, self.env).map_err(|m| self.invalid("client_secret", m))?
            }
            (None, Some(file)) => {
                let file = self.relative(file);
                read_text(&file).map_err(|e| {
                    self.invalid(
                        "client_secret_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
            }
        }
        .trim_end_matches(['\r', '\n'])
        .to_string();
        if secret.is_empty() {
            return Err(self.invalid("client_secret", "the client secret is empty"));
        }
        Ok(Auth::ClientSecret(Secret(secret)))
    }

    /// `token_file`, else `AZURE_FEDERATED_TOKEN_FILE`; the file must exist now.
    fn workload_identity(&self, raw: &RawAuth) -> Result<Auth, Invalid> {
        let file = match &raw.token_file {
            Some(f) => expand(f, self.env).map_err(|m| self.invalid("token_file", m))?,
            None => (self.env)("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
                self.invalid(
                    "token_file",
                    "not set, and AZURE_FEDERATED_TOKEN_FILE is not set",
                )
            })?,
        };
        let token_file = self.relative(Path::new(&file));
        // Looked at, not read: the token source reads it (and it may not hold a token yet).
        let checked = std::fs::metadata(&token_file)
            .and_then(|m| crate::config::sign_in_file::check_size(m.len()));
        if let Err(e) = checked {
            return Err(self.invalid(
                "token_file",
                format!("cannot read {}: {e}", token_file.display()),
            ));
        }
        Ok(Auth::WorkloadIdentity { token_file })
    }

    /// The metadata endpoint (default [`IMDS_TOKEN_URL`]) and a user-assigned identity's id.
    fn managed_identity(&self, raw: &RawAuth) -> Result<Auth, Invalid> {
        let endpoint = parse_metadata_url(raw.endpoint.as_deref().unwrap_or(IMDS_TOKEN_URL))
            .map_err(|m| self.invalid("endpoint", m))?;
        let client_id = match &raw.client_id {
            Some(c) => {
                let c = expand(c, self.env).map_err(|m| self.invalid("client_id", m))?;
                if !is_safe_id(&c) {
                    return Err(
                        self.invalid("client_id", format!("{c:?} is not a valid client id"))
                    );
                }
                Some(c)
            }
            None => None,
        };
        Ok(Auth::ManagedIdentity {
            client_id,
            endpoint,
        })
    }
}

/// The metadata endpoint is plain http on a link-local address (or loopback in tests).
fn parse_metadata_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    let local = super::loopback::is_loopback(&url)
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_link_local());
    if !(url.scheme() == "https" || (url.scheme() == "http" && local)) {
        return Err(format!(
            "{s:?}: plain http is only allowed for link-local and loopback hosts"
        ));
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
    use super::*;

    #[test]
    fn client_secret_from_the_key() {
        let t = &parse(GOOD).unwrap().tenants[0];
        assert_eq!(t.auth, Auth::ClientSecret(Secret::new("s3cret")));
        assert_eq!(format!("{:?}", t.auth), "ClientSecret(Secret(<redacted>))");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = GOOD.replace(
            "client_secret: ${MDE_SECRET}",
            &format!("client_secret_file: {}", f.display()),
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.tenants[0].auth,
            Auth::ClientSecret(Secret::new("from-file"))
        );
    }

    // See: #10
    #[test]
    fn auth_block_methods() {
        let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n";
        let c = parse(&format!(
            "{base}      method: client_secret\n      client_secret: ${{MDE_SECRET}}\n"
        ))
        .unwrap();
        assert_eq!(c.tenants[0].auth, Auth::ClientSecret(Secret::new("s3cret")));
        let c = parse(&format!(
            "{base}      method: managed_identity\n      client_id: 2222-aaaa\n"
        ))
        .unwrap();
        assert_eq!(
            c.tenants[0].auth,
            Auth::ManagedIdentity {
                client_id: Some("2222-aaaa".into()),
                endpoint: Url::parse(IMDS_TOKEN_URL).unwrap(),
            }
        );
        // Managed identity needs neither tenant_id nor client_id.
        let c =
            parse("tenants:\n  - name: t\n    auth:\n      method: managed_identity\n").unwrap();
        assert_eq!(c.tenants[0].tenant_id, "");
    }

    // See: #10
    #[test]
    fn auth_errors_name_the_key() {
        let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n";
        assert_errors(&[
            (
                GOOD.replace("    client_secret: ${MDE_SECRET}\n", ""),
                "config file cfg.yml: tenants[0].client_secret: one of client_secret or client_secret_file is required",
            ),
            (
                format!("{base}      method: managed_identity\n      key_file: k.pem\n"),
                "config file cfg.yml: tenants[0].auth.key_file: not used by method managed_identity",
            ),
            (
                format!("{base}      method: certificate\n"),
                "config file cfg.yml: tenants[0].auth.certificate_file: required for method certificate (or pkcs12_file)",
            ),
            (
                format!("{base}      method: workload_identity\n"),
                "config file cfg.yml: tenants[0].auth.token_file: not set, and AZURE_FEDERATED_TOKEN_FILE is not set",
            ),
            (
                format!(
                    "{base}      method: managed_identity\n      endpoint: http://imds.example.com/token\n"
                ),
                "config file cfg.yml: tenants[0].auth.endpoint: \"http://imds.example.com/token\": plain http is only allowed for link-local and loopback hosts",
            ),
            (
                format!("{base}      method: client_secret\n      client_secret: x\n")
                    .replace("    auth:", "    client_secret: y\n    auth:"),
                "config file cfg.yml: tenants[0].client_secret: set the secret inside auth: or at the tenant, not both",
            ),
            (
                "tenants:\n  - name: t\n    client_id: cid\n    client_secret: x\n".to_string(),
                "config file cfg.yml: tenants[0].tenant_id: required for method client_secret",
            ),
            (
                GOOD.replace("client_id: app", "client_id: a/b"),
                "config file cfg.yml: tenants[0].client_id: must not contain '/', '?' or '#'",
            ),
            (
                format!("{base}      method: managed_identity\n      client_id: \"x y\"\n"),
                "config file cfg.yml: tenants[0].auth.client_id: \"x y\" is not a valid client id",
            ),
        ]);
        let err = parse(&format!("{base}      method: kerberos\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "config file cfg.yml: tenants[0].auth.method: unknown variant `kerberos`"
            ),
            "{err}"
        );
    }

    // See: #24 (item 3). Sign-in files over 1 MiB are refused at load, naming the file.
    #[test]
    fn issue_24_sign_in_files_over_1_mib_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let big = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![b'a'; 2 << 20]).unwrap();
            path
        };
        let (token, secret, pem, pfx, pw) = (
            big("token"),
            big("secret"),
            big("cert.pem"),
            big("app.pfx"),
            big("pw.txt"),
        );
        let too_large = |p: &Path| {
            format!(
                "cannot read {}: too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
                p.display()
            )
        };
        let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n";
        let cases = [
            (
                format!(
                    "{base}      method: workload_identity\n      token_file: {}\n",
                    token.display()
                ),
                format!(
                    "config file cfg.yml: tenants[0].auth.token_file: {}",
                    too_large(&token)
                ),
            ),
            (
                GOOD.replace(
                    "client_secret: ${MDE_SECRET}",
                    &format!("client_secret_file: {}", secret.display()),
                ),
                format!(
                    "config file cfg.yml: tenants[0].client_secret_file: {}",
                    too_large(&secret)
                ),
            ),
            (
                format!(
                    "{base}      method: certificate\n      certificate_file: {}\n",
                    pem.display()
                ),
                format!(
                    "config file cfg.yml: tenants[0].auth.certificate_file: {}",
                    too_large(&pem)
                ),
            ),
            (
                format!(
                    "{base}      method: certificate\n      pkcs12_file: {}\n",
                    pfx.display()
                ),
                format!(
                    "config file cfg.yml: tenants[0].auth.pkcs12_file: {}",
                    too_large(&pfx)
                ),
            ),
            (
                format!(
                    "{base}      method: certificate\n      pkcs12_file: {}\n      pkcs12_password_file: {}\n",
                    pfx.display(),
                    pw.display()
                ),
                format!(
                    "config file cfg.yml: tenants[0].auth.pkcs12_password_file: {}",
                    too_large(&pw)
                ),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(&text).unwrap_err().to_string(), want, "{text}");
        }
    }
}
