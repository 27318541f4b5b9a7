//! OAuth2 client-credentials tokens for one tenant, cached and renewed before expiry.
//!
//! The flow itself is the `oauth2` crate's; this module owns the cache, the renewal margin,
//! the adapter from `oauth2`'s HTTP interface to our reqwest client, and the `token` endpoint
//! metrics. It never logs or returns the secret or the token in an error.

use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Tenant;
use crate::metrics::{Metrics, RequestLabels, endpoint, tenant};

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

#[derive(Clone)]
struct Cached {
    token: String,
    renew_at: Instant,
}

/// A bearer token source for one tenant.
pub struct TokenSource {
    oauth: Oauth,
    scope: String,
    token_url: String,
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
        let url = TokenUrl::new(token_url.clone()).map_err(|e| TokenError {
            url: token_url.clone(),
            message: e.to_string(),
        })?;
        let oauth = BasicClient::new(ClientId::new(t.client_id.clone()))
            .set_client_secret(ClientSecret::new(t.client_secret.expose().to_string()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(url);
        Ok(TokenSource {
            oauth,
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
        self.metrics
            .token_success
            .get_or_create(&tenant(&self.tenant))
            .set(i64::from(ok));
        let fresh = result?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forget the cached token (after a 401): the next call asks for a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
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
        let send = OauthHttp {
            http: self.http.clone(),
            metrics: self.metrics.clone(),
            tenant: self.tenant.clone(),
        };
        let started = Instant::now();
        let resp = self
            .oauth
            .exchange_client_credentials()
            .add_scope(Scope::new(self.scope.clone()))
            .request_async(&send)
            .await
            .map_err(|e| TokenError {
                url: self.token_url.clone(),
                message: describe(&e),
            })?;
        let lifetime = resp.expires_in().unwrap_or(Duration::from_secs(3599));
        // Renew with a margin: 5 minutes, or a tenth of short lifetimes (simulator, tests).
        let margin = Duration::from_secs(300).min(lifetime / 10);
        Ok(Cached {
            token: resp.access_token().secret().clone(),
            renew_at: started + lifetime.saturating_sub(margin),
        })
    }
}

/// Our reqwest client behind `oauth2`'s HTTP interface, metering the `token` endpoint.
struct OauthHttp {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    tenant: String,
}

impl<'c> oauth2::AsyncHttpClient<'c> for OauthHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let started = Instant::now();
            let result = send_oauth(&self.http, req).await;
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            self.metrics
                .api_requests
                .get_or_create(&RequestLabels {
                    tenant: self.tenant.clone(),
                    endpoint: "token".into(),
                    code,
                })
                .inc_by(1, None, None);
            self.metrics
                .api_duration
                .get_or_create(&endpoint(&self.tenant, "token"))
                .observe(started.elapsed().as_secs_f64(), None, None);
            result
        })
    }
}

async fn send_oauth(http: &reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpError> {
    let req = reqwest::Request::try_from(req).map_err(|e| HttpError(e.to_string()))?;
    let resp = http
        .execute(req)
        .await
        .map_err(|e| HttpError(super::error_chain(&e.without_url())))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    // Token answers are small; refuse to buffer anything absurd.
    let body = super::read_capped(resp, 1024 * 1024)
        .await
        .map_err(|e| HttpError(e.to_string()))?;
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
