//! Sign-in without a client secret, checked as the Microsoft identity platform checks it:
//! client assertions (a JWT signed with a certificate registered on the app, or a federated
//! token the app was told to trust) and the managed-identity metadata endpoint.
//!
//! Owns the registrations ([`Identity`]: certificates, trusted federated tokens, managed
//! identities), the order of the assertion checks (registered thumbprint → signature →
//! certificate validity → `aud` → `iss`/`sub` → `nbf`/`exp` with AAD's 5-minute skew → unused
//! `jti`) and the IMDS answer. Does not own issuing the token, the token error body or the
//! call counting (`routes`).
//!
//! The `AADSTS` numbers are those Microsoft documents for these failures where it does
//! (700027 signature and certificate, 700024 time range, 70021 federated record, 700016
//! unknown application); where it does not (audience, replayed `jti`) the simulator's choice
//! is marked below.

use std::collections::{HashMap, HashSet};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::Digest as _;

use super::Simulator;
use super::routes::{TOKEN, intake, issue_grant, json_ok, json_response, token_error};

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
    pub fn register_certificate(&self, pem: &str) -> Result<(), String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let der = &block.contents;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
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
