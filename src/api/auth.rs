//! Tokens for one tenant, by the tenant's sign-in method, cached and renewed before expiry.
//!
//! Methods: a client secret, a certificate (a signed client assertion; its PEM or PKCS#12
//! files, and a PKCS#12 password file, read again for every request), AKS workload identity
//! (the federated token file as the client assertion, read again when it changed) and
//! managed identity (the instance metadata endpoint). The client-credentials flow itself is
//! the `oauth2` crate's and the assertion is `certificate`'s; this module owns the cache, the
//! renewal margin, the adapter from `oauth2`'s HTTP interface to our reqwest client, the
//! metadata request, the change detection of the federated token file, and the `token`
//! endpoint metrics (one per request, whatever the method). Every sign-in file it reads is
//! within the 1 MiB cap of `sign_in_file`.
//! It never logs or returns a secret, an assertion or a token in an error. Does not own the
//! signing credential (`config::credential`), the sign-in settings (`config::auth`) nor
//! sending API calls with the token (`send`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::span::{http_span, record_exchange};

use crate::config::{Auth, Pkcs12Password, Tenant};
use crate::metrics::Metrics;

type Oauth =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why no token could be had. The message is the identity provider's, which names the
/// problem (e.g. `AADSTS7000215: Invalid client secret provided`) but never the secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token request to {url} failed: {message}")]
pub struct TokenError {
    pub url: String,
    pub message: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // See: #10
    #[test]
    fn roles_are_read_and_either_read_permission_satisfies() {
        use base64::Engine as _;
        let jwt = |claims: &str| {
            format!(
                "eyJhbGciOiJSUzI1NiJ9.{}.sig",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
            )
        };
        let roles = token_roles(&jwt(r#"{"roles":["Machine.ReadWrite.All"]}"#)).unwrap();
        assert!(missing_permissions(&roles).is_empty());
        let roles = token_roles(&jwt(r#"{"roles":["Machine.LiveResponse"]}"#)).unwrap();
        assert_eq!(missing_permissions(&roles), vec!["Machine.Read.All"]);
        let roles = token_roles(&jwt(r#"{"aud":"x"}"#)).unwrap();
        assert_eq!(missing_permissions(&roles), vec!["Machine.Read.All"]);
        assert_eq!(token_roles("opaque-token"), None);
    }

    // See: #24 (item 3). A 300 MB token file was read on every token and sent whole.
    #[test]
    fn issue_24_the_token_file_is_capped_and_read_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("azure-identity-token");
        std::fs::write(&file, "token-1\n").unwrap();
        let token = FederatedToken::new(file.clone());
        assert_eq!(token.read().unwrap(), "token-1");
        // Same length, same modification time: the file is not read again.
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, "token-2\n").unwrap();
        let set_modified = |t| {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        set_modified(modified);
        assert_eq!(token.read().unwrap(), "token-1");
        // Changed: read again.
        set_modified(modified + Duration::from_secs(1));
        assert_eq!(token.read().unwrap(), "token-2");
        // Over 1 MiB: refused, naming the file and the limit.
        std::fs::write(&file, vec![b'a'; 2 << 20]).unwrap();
        assert_eq!(
            token.read().unwrap_err(),
            format!(
                "cannot read federated token file {}: too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
                file.display()
            )
        );
        // Empty, and gone: named as before.
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(
            token.read().unwrap_err(),
            format!("federated token file {} is empty", file.display())
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            token.read().unwrap_err(),
            format!(
                "cannot read federated token file {}: No such file or directory (os error 2)",
                file.display()
            )
        );
    }

    /// See: #34. A tenant's token source holds no `oauth2` client (728 bytes) between the
    /// token requests it makes about once an hour.
    #[test]
    fn a_token_source_holds_no_oauth_client() {
        assert!(
            size_of::<TokenSource>() < size_of::<Oauth>(),
            "{} bytes",
            size_of::<TokenSource>()
        );
    }
}

#[derive(Clone)]
struct Cached {
    token: String,
    renew_at: Instant,
}

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What is sent to prove who we are, besides the client id.
enum Credential {
    /// Set on the `oauth2` client of each request.
    Secret(crate::config::Secret),
    /// A client assertion signed with the certificate's key; files read per request.
    Certificate {
        certificate_file: PathBuf,
        key_file: Option<PathBuf>,
    },
    /// The same, from a PKCS#12 file; the file and a password file read per request.
    Pkcs12 {
        pkcs12_file: PathBuf,
        password: Pkcs12Password,
    },
    /// The federated token file is the client assertion.
    Federated(FederatedToken),
    /// `GET {endpoint}?api-version=2018-02-01&resource=…[&client_id=…]`, `Metadata: true`.
    Metadata {
        endpoint: url::Url,
        client_id: Option<String>,
        resource: String,
    },
}

/// The federated token file of workload identity, read again only when it changed.
///
/// Kubernetes rotates a projected token by swapping the file (a new inode, a new modification
/// time), so (device, inode, length, modification time) tells a new token from the one read
/// before without reading it; a file over the sign-in file cap (1 MiB) is refused unread.
/// The reads are synchronous, like the certificate files': a `stat` per token request and a
/// read of at most 1 MiB when the file changed, once an hour or so.
struct FederatedToken {
    file: PathBuf,
    /// The stamp of the file last read, and the token it held.
    last: std::sync::Mutex<Option<(FileStamp, String)>>,
}

/// What tells one version of a file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        FileStamp {
            dev,
            ino,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

impl FederatedToken {
    fn new(file: PathBuf) -> FederatedToken {
        FederatedToken {
            file,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The token in the file, trimmed; an error names the file.
    fn read(&self) -> Result<String, String> {
        let file = &self.file;
        let cannot =
            |e: std::io::Error| format!("cannot read federated token file {}: {e}", file.display());
        let meta = std::fs::metadata(file).map_err(cannot)?;
        let stamp = FileStamp::of(&meta);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, token)) = last.as_ref()
            && *seen == stamp
        {
            return Ok(token.clone());
        }
        crate::config::sign_in_file::check_size(meta.len()).map_err(cannot)?;
        let bytes = crate::config::sign_in_file::read(file).map_err(cannot)?;
        let text = crate::config::text::decode(&bytes).map_err(|e| {
            cannot(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        let text = text.trim();
        if text.is_empty() {
            *last = None;
            return Err(format!("federated token file {} is empty", file.display()));
        }
        *last = Some((stamp, text.to_string()));
        Ok(text.to_string())
    }
}

/// The application permissions the exporter needs, each satisfied by any of its roles. The
/// documentation is inconsistent (the current pages list only `Machine.ReadWrite.All` for the
/// result link, older ones `Machine.Read.All` too), so either is accepted.
/// `Machine.LiveResponse` is not needed: it starts sessions, it does not read results.
pub const REQUIRED_PERMISSIONS: &[(&str, &[&str])] = &[(
    "Machine.Read.All",
    &["Machine.Read.All", "Machine.ReadWrite.All"],
)];

/// The `roles` claim of a JWT access token, without checking the signature (the API does
/// that; we only want to say early what is missing). `None` when the token is not a JWT.
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims
            .get("roles")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The required permissions none of whose roles is in `roles`.
pub fn missing_permissions(roles: &[String]) -> Vec<String> {
    REQUIRED_PERMISSIONS
        .iter()
        .filter(|(_, any)| !any.iter().any(|a| roles.iter().any(|r| r == a)))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// A bearer token source for one tenant.
pub struct TokenSource {
    /// Permissions the latest token lacks; `None` until a JWT token was seen.
    missing: std::sync::Mutex<Option<Vec<String>>>,
    credential: Credential,
    client_id: String,
    scope: String,
    token_url: String,
    /// The token endpoint's `url.template`: its path with the tenant id as `{tenant}`.
    token_template: String,
    http: reqwest::Client,
    tenant: String,
    metrics: Arc<Metrics>,
    cached: Mutex<Option<Cached>>,
}

/// The error type our HTTP adapter hands to `oauth2`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl TokenSource {
    pub fn new(
        t: &Tenant,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TokenError> {
        let token_url = t.token_url();
        // Checked now; the client is made for each request (see `oauth`).
        TokenUrl::new(token_url.clone()).map_err(|e| TokenError {
            url: token_url.clone(),
            message: e.to_string(),
        })?;
        let credential = match &t.auth {
            Auth::ClientSecret(secret) => Credential::Secret(secret.clone()),
            Auth::Certificate {
                certificate_file,
                key_file,
            } => Credential::Certificate {
                certificate_file: certificate_file.clone(),
                key_file: key_file.clone(),
            },
            Auth::CertificatePkcs12 {
                pkcs12_file,
                password,
            } => Credential::Pkcs12 {
                pkcs12_file: pkcs12_file.clone(),
                password: password.clone(),
            },
            Auth::WorkloadIdentity { token_file } => {
                Credential::Federated(FederatedToken::new(token_file.clone()))
            }
            Auth::ManagedIdentity {
                client_id,
                endpoint,
            } => Credential::Metadata {
                endpoint: endpoint.clone(),
                client_id: client_id.clone(),
                // IMDS speaks v1: a resource, not a scope.
                resource: t.audience.trim_end_matches('/').to_string(),
            },
        };
        let token_url = match &credential {
            Credential::Metadata { endpoint, .. } => endpoint.to_string(),
            _ => token_url,
        };
        let token_template = format!(
            "{}/{{tenant}}/oauth2/v2.0/token",
            t.login_url.path().trim_end_matches('/')
        );
        Ok(TokenSource {
            token_template,
            missing: std::sync::Mutex::new(None),
            credential,
            client_id: t.client_id.clone(),
            scope: t.scope(),
            token_url,
            http,
            tenant: t.name.clone(),
            metrics,
            cached: Mutex::new(None),
        })
    }

    /// A valid token, from the cache or freshly requested.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let result = self.request().await;
        let ok = result.is_ok();
        self.metrics.api.record_token(&self.tenant, ok);
        let fresh = result?;
        let token = fresh.token.clone();
        self.note_roles(&token);
        *cached = Some(fresh);
        Ok(token)
    }

    /// What the `roles` claim of the latest token lacks (`None`: no JWT seen yet).
    pub fn missing_permissions(&self) -> Option<Vec<String>> {
        self.missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn note_roles(&self, token: &str) {
        let Some(roles) = token_roles(token) else {
            return;
        };
        let missing = missing_permissions(&roles);
        for (name, _) in REQUIRED_PERMISSIONS {
            self.metrics.api.set_permission_missing(
                &self.tenant,
                name,
                missing.iter().any(|m| m == name),
            );
        }
        if !missing.is_empty() {
            tracing::warn!(tenant = %self.tenant, missing = ?missing, roles = ?roles, "the token lacks application permissions the exporter needs");
        }
        *self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(missing);
    }

    /// Forget `rejected` (a token the API answered 401 to): the next call asks for a new
    /// one. A token another task already renewed meanwhile is kept, so two callers that both
    /// saw the old token refused cause one token request, not two.
    pub async fn invalidate(&self, rejected: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == rejected) {
            *cached = None;
        }
    }

    /// Whether a token is held now (for readiness).
    pub async fn has_token(&self) -> bool {
        self.cached.lock().await.is_some()
    }

    #[tracing::instrument(name = "token", skip(self), fields(tenant = %self.tenant, url.full = %self.token_url, trace_id = tracing::field::Empty, span_id = tracing::field::Empty))]
    async fn request(&self) -> Result<Cached, TokenError> {
        let span = tracing::Span::current();
        crate::telemetry::record_ids(&span);
        let result = self.request_inner().await;
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, &e.message);
        }
        result
    }

    async fn request_inner(&self) -> Result<Cached, TokenError> {
        let started = Instant::now();
        let fail = |message: String| TokenError {
            url: self.token_url.clone(),
            message,
        };
        let assertion = match &self.credential {
            Credential::Secret(_) => None,
            Credential::Certificate {
                certificate_file,
                key_file,
            } => {
                let cert = crate::config::credential::Certificate::load(
                    certificate_file,
                    key_file.as_deref(),
                )
                .map_err(|e| fail(e.to_string()))?;
                Some(
                    cert.assertion(&self.client_id, &self.token_url, unix_now())
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            Credential::Pkcs12 {
                pkcs12_file,
                password,
            } => {
                let password = password.resolve().map_err(|e| fail(e.to_string()))?;
                let cert = crate::config::credential::Certificate::load_pkcs12(
                    pkcs12_file,
                    password.expose(),
                )
                .map_err(|e| fail(e.to_string()))?;
                Some(
                    cert.assertion(&self.client_id, &self.token_url, unix_now())
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            Credential::Federated(token) => Some(token.read().map_err(fail)?),
            Credential::Metadata {
                endpoint,
                client_id,
                resource,
            } => {
                let (token, lifetime) = self
                    .metadata_token(endpoint, client_id.as_deref(), resource)
                    .await
                    .map_err(fail)?;
                return Ok(cached(token, started, lifetime));
            }
        };
        let send = OauthHttp {
            http: self.http.clone(),
            metrics: self.metrics.clone(),
            tenant: self.tenant.clone(),
            template: self.token_template.clone(),
        };
        let oauth = self.oauth().map_err(fail)?;
        let mut exchange = oauth
            .exchange_client_credentials()
            .add_scope(Scope::new(self.scope.clone()));
        if let Some(assertion) = assertion {
            exchange = exchange
                .add_extra_param("client_assertion_type", JWT_BEARER)
                .add_extra_param("client_assertion", assertion);
        }
        let resp = exchange
            .request_async(&send)
            .await
            .map_err(|e| fail(describe(&e)))?;
        let lifetime = resp.expires_in().unwrap_or(Duration::from_secs(3599));
        Ok(cached(
            resp.access_token().secret().clone(),
            started,
            lifetime,
        ))
    }

    /// The `oauth2` client of one token request. Made for it, not held: it took 728 bytes of
    /// every tenant (and its copies of the URL, the client id and the secret) for a request
    /// made about once an hour. See: #34
    fn oauth(&self) -> Result<Oauth, String> {
        let url = TokenUrl::new(self.token_url.clone()).map_err(|e| e.to_string())?;
        let oauth = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(url);
        Ok(match &self.credential {
            Credential::Secret(secret) => {
                oauth.set_client_secret(ClientSecret::new(secret.expose().to_string()))
            }
            _ => oauth,
        })
    }

    /// A token from the instance metadata endpoint (Azure IMDS answers v1 shapes: strings).
    async fn metadata_token(
        &self,
        endpoint: &url::Url,
        client_id: Option<&str>,
        resource: &str,
    ) -> Result<(String, Duration), String> {
        let mut url = endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", "2018-02-01")
            .append_pair("resource", resource);
        if let Some(id) = client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        let shown = super::model::redact_url(&url);
        let span = http_span("GET", "token", &url, &shown, endpoint.path(), None);
        let started = Instant::now();
        let result = self
            .http
            .get(url)
            .header("Metadata", "true")
            .send()
            .instrument(span.clone())
            .await;
        let (code, result) = record_exchange(&span, result, "token", &shown);
        meter(&self.metrics, &self.tenant, started, code);
        let resp = result.map_err(|e| format!("request failed: {}", super::error_chain(&e)))?;
        let status = resp.status();
        let body = super::read_capped(resp, 1024 * 1024)
            .await
            .map_err(|e| body_failed(&span, e))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("unreadable metadata answer (HTTP {status}): {e}"))?;
        if !status.is_success() {
            let error = json["error"].as_str().unwrap_or("error");
            let description = json["error_description"].as_str().unwrap_or_default();
            return Err(format!("HTTP {}: {error}: {description}", status.as_u16()));
        }
        let Some(token) = json["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err("metadata answer has no access_token".into());
        };
        // IMDS sends numbers as strings ("3599"); accept either.
        let lifetime = match &json["expires_in"] {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            v => v.as_u64(),
        }
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3599));
        Ok((token.to_string(), lifetime))
    }
}

/// Seconds since the epoch, for assertion claims.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A token asked for at `started` and valid for `lifetime`.
fn cached(token: String, started: Instant, lifetime: Duration) -> Cached {
    // Renew with a margin: 5 minutes, or a tenth of short lifetimes (simulator, tests).
    let margin = Duration::from_secs(300).min(lifetime / 10);
    Cached {
        token,
        renew_at: started + lifetime.saturating_sub(margin),
    }
}

/// One request to the `token` endpoint (whatever the method), in the API metrics.
fn meter(metrics: &Metrics, tenant: &str, started: Instant, code: String) {
    metrics
        .api
        .record_request(tenant, "token", code, started.elapsed(), None);
}

/// Our reqwest client behind `oauth2`'s HTTP interface, metering the `token` endpoint.
struct OauthHttp {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    tenant: String,
    /// The `url.template` of the request's span.
    template: String,
}

impl<'c> oauth2::AsyncHttpClient<'c> for OauthHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let req = reqwest::Request::try_from(req).map_err(|e| HttpError(e.to_string()))?;
            // A client span like an API call's (#32): the URL holds the tenant id, no secret
            // (the secret or assertion goes in the body).
            let shown = super::model::redact_url(req.url());
            let span = http_span("POST", "token", req.url(), &shown, &self.template, None);
            let started = Instant::now();
            let result = self.http.execute(req).instrument(span.clone()).await;
            let (code, result) = record_exchange(&span, result, "token", &shown);
            meter(&self.metrics, &self.tenant, started, code);
            let resp = result.map_err(|e| HttpError(super::error_chain(&e)))?;
            read_oauth(resp, &span).await
        })
    }
}

async fn read_oauth(
    resp: reqwest::Response,
    span: &tracing::Span,
) -> Result<HttpResponse, HttpError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    // Token answers are small; refuse to buffer anything absurd.
    let body = super::read_capped(resp, 1024 * 1024)
        .await
        .map_err(|e| HttpError(body_failed(span, e)))?;
    let mut out = http::Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    out.body(body.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}

fn describe<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let mut s = r.error().to_string();
            if let Some(d) = r.error_description() {
                // AAD descriptions carry trace ids on extra lines; the first line says it all.
                s.push_str(": ");
                s.push_str(d.lines().next().unwrap_or_default());
            }
            s
        }
        RequestTokenError::Request(e) => format!("request failed: {e}"),
        RequestTokenError::Parse(e, _) => format!("unreadable token response: {e}"),
        RequestTokenError::Other(s) => s.clone(),
    }
}

/// A token answer whose head was fine and whose body was not: the exchange failed (its
/// span's `error.type`); the message for the error.
fn body_failed(span: &tracing::Span, e: super::http::ReadError) -> String {
    span.record("error.type", e.error_type());
    crate::telemetry::record_error(span, &e.to_string());
    e.to_string()
}
