//! Sign-in, checked as the Microsoft identity platform checks it: the two AAD token endpoints
//! (v1 `/{tenant}/oauth2/token`, v2 `/{tenant}/oauth2/v2.0/token`) with a client secret (form or
//! HTTP Basic) or a client assertion (a JWT signed with a certificate registered on the app, or a
//! federated token the app was told to trust), and the managed-identity metadata endpoint.
//!
//! Owns the registrations ([`Identity`]: certificates, trusted federated tokens, managed
//! identities; [`CertificateError`], a certificate it refuses), the order of the assertion checks (registered thumbprint → signature →
//! certificate validity → `aud` → `iss`/`sub` → `nbf`/`exp` with AAD's 5-minute skew → unused
//! `jti`), the token endpoints' checks (tenant → grant type → v2 scope → client → secret or
//! assertion), issuing the bearer tokens the API accepts, and the IMDS answer. Does not own the
//! token error body (`respond`) or the call counting and injected faults (`gate`).
//!
//! The `AADSTS` numbers are those Microsoft documents for these failures where it does
//! (700027 signature and certificate, 700024 time range, 70021 federated record, 700016
//! unknown application); where it does not (audience, replayed `jti`) the simulator's choice
//! is marked below.

use std::collections::{HashMap, HashSet};

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use sha2::Digest as _;
use tokio::time::Instant;

use super::endpoints::TOKEN;
use super::gate::intake;
use super::respond::{base_url, correlation_id, json_ok, json_response, token_error};
use super::{Grant, Simulator};

/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew AAD tolerates on `nbf`/`exp`.
const SKEW_SECS: i64 = 300;

/// A certificate registered on the app registration.
#[derive(Debug, Clone)]
struct Registered {
    /// The public key (PKCS#1 DER) the assertion must verify against.
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// What the tenant trusts besides the client secret; set with [`Simulator::identity`].
#[derive(Debug, Default)]
pub(crate) struct IdentityState {
    /// By `x5t#S256` and by `x5t` (base64url thumbprints).
    certificates: HashMap<String, Registered>,
    federated: HashSet<String>,
    /// Client ids of user-assigned managed identities the metadata endpoint serves.
    managed: HashSet<String>,
    /// `jti`s already presented.
    used_jti: HashSet<String>,
}

/// Why [`Identity::register_certificate`] refused a PEM text.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("not a PEM certificate: {0}")]
    NotPem(x509_parser::nom::Err<x509_parser::error::PEMError>),
    #[error("not an X.509 certificate: {0}")]
    NotX509(x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// A handle to the app registration's credentials; cheap to clone.
#[derive(Clone)]
pub struct Identity {
    sim: Simulator,
}

impl Simulator {
    /// The app registration's certificates, trusted federated tokens and managed identities.
    pub fn identity(&self) -> Identity {
        Identity { sim: self.clone() }
    }
}

impl Identity {
    /// Upload a PEM certificate to the app registration (as the portal's "Certificates").
    /// Errors when the PEM holds no X.509 certificate.
    pub fn register_certificate(&self, pem: &str) -> Result<(), CertificateError> {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(CertificateError::NotPem)?;
        let der = &block.contents;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(CertificateError::NotX509)?;
        let reg = Registered {
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        };
        let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        let mut st = self.sim.inner.lock();
        st.identity
            .certificates
            .insert(b64(&sha2::Sha256::digest(der)), reg.clone());
        st.identity.certificates.insert(b64(&sha1_digest(der)), reg);
        Ok(())
    }

    /// Trust this exact federated token (what a federated identity credential on the app
    /// would accept from the cluster's issuer).
    pub fn trust_federated_token(&self, token: &str) {
        self.sim
            .inner
            .lock()
            .identity
            .federated
            .insert(token.trim().to_string());
    }

    /// Stop trusting a federated token (it expired or was rotated).
    pub fn distrust_federated_token(&self, token: &str) {
        self.sim
            .inner
            .lock()
            .identity
            .federated
            .remove(token.trim());
    }

    /// Serve tokens for a user-assigned managed identity with this client id.
    pub fn add_managed_identity(&self, client_id: &str) {
        self.sim
            .inner
            .lock()
            .identity
            .managed
            .insert(client_id.to_string());
    }
}

/// SHA-1, for the legacy `x5t` thumbprint only.
fn sha1_digest(der: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(der).to_vec()
}

#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    aud: String,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
}

fn invalid_client(aadsts: u32, description: &str) -> Response {
    token_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        aadsts,
        description,
    )
}

/// Check a client assertion for `client_id` at the token endpoint `audiences` (the URLs the
/// client could have addressed). `Ok` means the app proved who it is; `Err` is the answer.
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
pub(crate) fn check_assertion(
    sim: &Simulator,
    client_id: &str,
    assertion_type: Option<&str>,
    assertion: &str,
    audiences: &[String],
) -> Result<(), Response> {
    if assertion_type != Some(JWT_BEARER) {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            // The simulator's choice: AAD's text for a wrong assertion type is not documented.
            50027,
            "Invalid client_assertion_type; expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
        ));
    }
    if sim
        .inner
        .lock()
        .identity
        .federated
        .contains(assertion.trim())
    {
        return Ok(());
    }
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    let thumbprint = header.x5t_s256.clone().or(header.x5t.clone());
    let Some(thumbprint) = thumbprint else {
        // No certificate named: a federated token nobody trusts.
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            "No matching federated identity record found for presented assertion.",
        ));
    };
    let registered = sim
        .inner
        .lock()
        .identity
        .certificates
        .get(&thumbprint)
        .cloned();
    let Some(cert) = registered else {
        return Err(invalid_client(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"
            ),
        ));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = vec![Algorithm::RS256, Algorithm::PS256];
    // Times are checked below against the simulator's clock, with AAD's skew.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let key = DecodingKey::from_rsa_der(&cert.public_key);
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => {
            return Err(invalid_client(
                700027,
                "Client assertion failed signature validation.",
            ));
        }
    };
    let now = sim.now_wall().timestamp();
    if now > cert.not_after || now < cert.not_before {
        return Err(invalid_client(
            700027,
            "The certificate with identifier used to sign the client assertion is expired on application.",
        ));
    }
    if !audiences.contains(&claims.aud) {
        return Err(invalid_client(
            // The simulator's choice of number; AAD names the audience claim in its text.
            700021,
            &format!(
                "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials. Audience: '{}'",
                claims.aud
            ),
        ));
    }
    if claims.iss != client_id || claims.sub != client_id {
        return Err(invalid_client(
            700023,
            "Client assertion issuer and subject must be the client id of the application.",
        ));
    }
    let (Some(nbf), Some(exp)) = (claims.nbf, claims.exp) else {
        return Err(invalid_client(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    };
    if now + SKEW_SECS < nbf || now - SKEW_SECS > exp {
        return Err(invalid_client(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    if claims.jti.is_empty() || !sim.inner.lock().identity.used_jti.insert(claims.jti) {
        return Err(invalid_client(
            // The simulator's choice; AAD refuses replayed assertions but the code is not
            // documented.
            700025,
            "Client assertion contains a jti that was already used.",
        ));
    }
    Ok(())
}

/// `GET /metadata/identity/oauth2/token`: the Azure instance metadata service. Needs
/// `Metadata: true`, `api-version` and `resource`; `client_id` picks a user-assigned
/// identity (unknown ones: 400 "Identity not found"). Answers with strings, as IMDS does.
pub(crate) async fn metadata_token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = intake(&sim, TOKEN).await {
        return r;
    }
    let imds_error = |status: StatusCode, error: &str, description: &str| {
        json_response(
            status,
            serde_json::json!({"error": error, "error_description": description}).to_string(),
        )
    };
    if headers.get("Metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if !q.contains_key("api-version") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let cfg = &sim.inner.cfg;
    let identity = match q.get("client_id") {
        None => cfg.client_id.clone(),
        Some(id) if sim.inner.lock().identity.managed.contains(id) => id.clone(),
        Some(_) => {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            );
        }
    };
    let (token, ttl) = issue_grant(&sim, identity.clone());
    let now = sim.now_wall().timestamp();
    let secs = ttl.as_secs();
    json_ok(&serde_json::json!({
        "access_token": token,
        "client_id": identity,
        "expires_in": secs.to_string(),
        "expires_on": now.saturating_add_unsigned(secs).to_string(),
        "ext_expires_in": secs.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((decode(id), decode(secret)))
}

/// The checks both token endpoints share; returns the new token and its lifetime.
async fn issue_token(
    sim: &Simulator,
    tenant: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    v2: bool,
) -> Result<(String, Duration), Response> {
    intake(sim, TOKEN).await?;
    let cfg = &sim.inner.cfg;
    if tenant != cfg.tenant_id {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    if v2 && !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        ));
    }
    if form.contains_key("client_assertion") || form.contains_key("client_assertion_type") {
        // Certificate or federated credential: the client id is in the form.
        let id = form.get("client_id").cloned().unwrap_or_default();
        if id != cfg.client_id {
            return Err(unknown_app(&id, tenant));
        }
        let base = base_url(headers);
        let audiences = [
            format!("{base}/{tenant}/oauth2/v2.0/token"),
            format!("{base}/{tenant}/oauth2/token"),
        ];
        check_assertion(
            sim,
            &id,
            form.get("client_assertion_type").map(String::as_str),
            form.get("client_assertion")
                .map(String::as_str)
                .unwrap_or_default(),
            &audiences,
        )?;
        return Ok(issue_grant(sim, id));
    }
    let (id, secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(i), Some(s)) => (i.clone(), s.clone()),
        (form_id, _) => {
            let (basic_id, basic_secret) = basic_credentials(headers).unwrap_or_default();
            (form_id.cloned().unwrap_or(basic_id), basic_secret)
        }
    };
    if id != cfg.client_id {
        return Err(unknown_app(&id, tenant));
    }
    if secret != cfg.client_secret {
        return Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{id}'."
            ),
        ));
    }
    Ok(issue_grant(sim, id))
}

fn unknown_app(id: &str, tenant: &str) -> Response {
    token_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        &format!("Application with identifier '{id}' was not found in the directory '{tenant}'."),
    )
}

/// A new bearer token for `client_id` (whose quota windows it spends), and its lifetime.
pub(crate) fn issue_grant(sim: &Simulator, client_id: String) -> (String, Duration) {
    let cfg = &sim.inner.cfg;
    // A JWT in shape (header, claims, a random "signature"), so clients can read `roles`
    // as they do with real tokens; nothing checks the signature.
    let claims = serde_json::json!({
        "aud": "https://api.securitycenter.microsoft.com",
        "iss": format!("https://sts.windows.net/{}/", cfg.tenant_id),
        "appid": client_id,
        "tid": cfg.tenant_id,
        "roles": cfg.roles,
    });
    let token = {
        use base64::Engine as _;
        format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
            correlation_id().replace('-', "")
        )
    };
    let can_read = cfg
        .roles
        .iter()
        .any(|r| r == "Machine.Read.All" || r == "Machine.ReadWrite.All");
    sim.inner.lock().tokens.insert(
        token.clone(),
        Grant {
            client_id,
            expires: Instant::now() + cfg.token_ttl,
            can_read,
        },
    );
    (token, cfg.token_ttl)
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[derive(Serialize)]
struct TokenV1 {
    token_type: &'static str,
    expires_in: String,
    ext_expires_in: String,
    expires_on: String,
    not_before: String,
    resource: String,
    access_token: String,
}

#[derive(Serialize)]
struct TokenV2 {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
}

pub(crate) async fn token_v1(
    State(sim): State<Simulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    match issue_token(&sim, &tenant, &headers, &form, false).await {
        Ok((access_token, ttl)) => {
            let now = sim.now_wall().timestamp();
            let secs = ttl.as_secs();
            json_ok(&TokenV1 {
                token_type: "Bearer",
                expires_in: secs.to_string(),
                ext_expires_in: secs.to_string(),
                expires_on: (now.saturating_add_unsigned(secs)).to_string(),
                not_before: now.to_string(),
                resource: form.get("resource").cloned().unwrap_or_default(),
                access_token,
            })
        }
        Err(r) => r,
    }
}

pub(crate) async fn token_v2(
    State(sim): State<Simulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match issue_token(&sim, &tenant, &headers, &form(&body), true).await {
        Ok((access_token, ttl)) => json_ok(&TokenV2 {
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            ext_expires_in: ttl.as_secs(),
            access_token,
        }),
        Err(r) => r,
    }
}
