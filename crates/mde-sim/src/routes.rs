//! The simulator's HTTP surface: the two AAD token endpoints, the machine-action API (list,
//! get, result download link) and the blob container, each with its faithful error bodies
//! (AAD JSON, MDE `{"error":{...}}`, Azure Storage XML).
//!
//! Owns request parsing, the order of checks (count → delay → injected faults → bearer →
//! quota → injected malformed body → answer) and response shapes. Does not own the scenario
//! (`scenario`), the window arithmetic (`throttle`) or `$filter` (`filter`).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Timelike as _, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::scenario::{self, ActionJson, Blob, SimAction};
use super::throttle::{Throttle, timespan};
use super::{BlobFault, Grant, Simulator, filter};

pub const TOKEN: &str = "token";
pub const LIST: &str = "list_machine_actions";
pub const GET: &str = "get_machine_action";
pub const LINK: &str = "get_result_download_link";
pub const DOWNLOAD: &str = "download";
/// The endpoints with a per-minute and per-hour quota.
pub const QUOTA_ENDPOINTS: [&str; 4] = [LIST, GET, LINK, super::machines::LIST_MACHINES];

const TOP_MAX: usize = 10_000;
const LINK_FN: &str = "GetLiveResponseResultDownloadLink";
const AUTH_FAILED: &str = "Server failed to authenticate the request. Make sure the value of \
                           Authorization header is formed correctly including the signature.";

pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/api/machineactions", get(list_actions))
        .route("/api/v1.0/machineactions", get(list_actions))
        .route("/api/machineactions/{id}", get(get_action))
        .route("/api/v1.0/machineactions/{id}", get(get_action))
        .route("/api/machineactions/{id}/{op}", get(action_function))
        .route("/api/v1.0/machineactions/{id}/{op}", get(action_function))
        .route("/blob/{*path}", get(blob))
        .route("/api/machines", get(super::machines::list_machines))
        .route("/api/v1.0/machines", get(super::machines::list_machines))
        .route(
            "/metadata/identity/oauth2/token",
            get(super::identity::metadata_token),
        )
        .layer(axum::middleware::from_fn_with_state(sim.clone(), hostile))
        .with_state(sim)
}

/// Before any route: note the Host and any Referer the request came with, and answer an
/// injected redirect (see [`super::Faults::redirect_next`]).
async fn hostile(
    State(sim): State<Simulator>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let redirect = {
        let mut st = sim.inner.lock();
        *st.stats.hosts.entry(host).or_insert(0) += 1;
        if req.headers().contains_key(header::REFERER) {
            st.stats.with_referer += 1;
        }
        let path = req.uri().path();
        st.faults
            .redirect
            .iter_mut()
            .find(|(prefix, _, n)| *n > 0 && path.starts_with(prefix.as_str()))
            .map(|(_, base, n)| {
                *n -= 1;
                format!("{base}{path_and_query}")
            })
    };
    match redirect {
        Some(location) => match HeaderValue::from_str(&location) {
            Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        None => next.run(req).await,
    }
}

fn correlation_id() -> String {
    scenario::guid(&mut rand::rng())
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) fn json_ok(body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_response(StatusCode::OK, text),
        Err(e) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            &e.to_string(),
        ),
    }
}

/// The MDE error body: `{"error":{"code":..,"message":..,"target":<guid>}}`.
pub fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "target": correlation_id()}
    });
    json_response(status, body.to_string())
}

/// The 429 of the quota gateway: code `"429"`, the window in .NET `TimeSpan` form.
fn quota_error(limit: u32, window: Duration, retry_after: Option<u64>) -> Response {
    let mut resp = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "429",
        &format!(
            "API calls quota exceeded! maximum allowed {limit} per {}",
            timespan(window)
        ),
    );
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// An Azure Storage error: XML body and `x-ms-error-code`.
fn blob_error(
    status: StatusCode,
    code: &'static str,
    message: &str,
    detail: Option<String>,
    now: DateTime<Utc>,
) -> Response {
    let detail = detail
        .map(|d| format!("<AuthenticationErrorDetail>{d}</AuthenticationErrorDetail>"))
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\n\
         RequestId:{}\nTime:{}</Message>{detail}</Error>",
        correlation_id(),
        now.to_rfc3339_opts(SecondsFormat::Micros, true)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "application/xml"),
            (HeaderName::from_static("x-ms-error-code"), code),
        ],
        body,
    )
        .into_response()
}

fn blob_not_found(now: DateTime<Utc>) -> Response {
    blob_error(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
        None,
        now,
    )
}

/// An AAD token error body; the `AADSTS` number goes into `error_codes` and `error_uri`.
pub(crate) fn token_error(
    status: StatusCode,
    error: &str,
    aadsts: u32,
    description: &str,
) -> Response {
    let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let (trace, correlation) = (correlation_id(), correlation_id());
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{aadsts}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}"
        ),
        "error_codes": [aadsts],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
    });
    json_response(status, body.to_string())
}

/// The body an injected `fail_next` status gets on `endpoint`.
fn injected_failure(sim: &Simulator, endpoint: &str, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match endpoint {
        TOKEN => {
            let (error, aadsts, text) = match status {
                400 => ("invalid_request", 900144, "The request is malformed."),
                401 => ("invalid_client", 7000215, "Invalid client secret provided."),
                429 => (
                    "temporarily_unavailable",
                    50196,
                    "The server terminated an operation because it encountered a client request loop.",
                ),
                _ => (
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.",
                ),
            };
            token_error(code, error, aadsts, text)
        }
        DOWNLOAD => {
            let (xcode, text) = match status {
                403 => ("AuthenticationFailed", AUTH_FAILED),
                404 => ("BlobNotFound", "The specified blob does not exist."),
                503 => (
                    "ServerBusy",
                    "The server is currently unable to receive requests. Please retry your request.",
                ),
                s if s >= 500 => (
                    "InternalError",
                    "The server encountered an internal error. Please retry the request.",
                ),
                _ => (
                    "InvalidQueryParameterValue",
                    "Value for one of the query parameters specified in the request URI is invalid.",
                ),
            };
            blob_error(code, xcode, text, None, sim.now_wall())
        }
        _ => {
            let (mcode, text) = match status {
                400 => ("BadRequest", "The request is invalid."),
                401 => (
                    "Unauthorized",
                    "Authorization has been denied for this request.",
                ),
                403 => (
                    "Forbidden",
                    "The application does not have any of the required application permissions (Machine.Read.All, Machine.ReadWrite.All) to access the resource.",
                ),
                404 => ("ResourceNotFound", "The requested resource was not found."),
                429 => {
                    let c = &sim.inner.cfg;
                    return quota_error(c.per_minute, c.minute, None);
                }
                503 => (
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ),
                s if s >= 500 => ("InternalServerError", "An unexpected error occurred."),
                _ => ("BadRequest", "The request is invalid."),
            };
            api_error(code, mcode, text)
        }
    }
}

/// Count the request, wait out an injected delay, and answer an injected failure or 429.
pub(crate) async fn intake(sim: &Simulator, endpoint: &'static str) -> Result<(), Response> {
    let delay = {
        let mut st = sim.inner.lock();
        *st.stats.requests.entry(endpoint.to_string()).or_insert(0) += 1;
        st.faults.delay.get(endpoint).copied().unwrap_or_default()
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = sim.inner.lock();
    if let Some(status) = st
        .faults
        .fail_next
        .get_mut(endpoint)
        .and_then(|q| q.pop_front())
    {
        if status == 429 {
            *st.stats.throttled.entry(endpoint.to_string()).or_insert(0) += 1;
        }
        drop(st);
        return Err(injected_failure(sim, endpoint, status));
    }
    if let Some(retry_after) = st
        .faults
        .throttle_next
        .get_mut(endpoint)
        .and_then(|q| q.pop_front())
    {
        *st.stats.throttled.entry(endpoint.to_string()).or_insert(0) += 1;
        let c = &sim.inner.cfg;
        return Err(quota_error(c.per_minute, c.minute, retry_after));
    }
    Ok(())
}

/// The bearer check, then the caller's quota windows for `endpoint`; `Some` is the refusal.
fn refusal(sim: &Simulator, headers: &HeaderMap, endpoint: &'static str) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let now = Instant::now();
    let cfg = &sim.inner.cfg;
    let mut st = sim.inner.lock();
    let client = match st.tokens.get(token) {
        Some(g) if g.expires > now && !g.can_read => {
            drop(st);
            return Some(api_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The application does not have any of the required application permissions (Machine.Read.All, Machine.ReadWrite.All) to access the resource.",
            ));
        }
        Some(g) if g.expires > now => g.client_id.clone(),
        _ => {
            drop(st);
            let mut resp = api_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Authorization has been denied for this request.",
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(resp);
        }
    };
    let verdict = st
        .throttles
        .entry((client, endpoint))
        .or_insert_with(|| Throttle::new(cfg.per_minute, cfg.minute, cfg.per_hour, cfg.hour))
        .try_acquire(now);
    if let Err(r) = verdict {
        *st.stats.throttled.entry(endpoint.to_string()).or_insert(0) += 1;
        return Some(quota_error(r.limit, r.window, Some(r.retry_after_secs())));
    }
    None
}

/// An injected 200 with a body that is not JSON.
fn malformed(sim: &Simulator, endpoint: &str) -> Option<Response> {
    let mut st = sim.inner.lock();
    let n = st.faults.malformed_api.get_mut(endpoint)?;
    if *n == 0 {
        return None;
    }
    *n -= 1;
    Some(json_response(
        StatusCode::OK,
        "{\"@odata.context\":\"x\",\"value\":[{\"id\":\"".to_string(),
    ))
}

/// All checks of an API call; `Err` is the answer to send instead.
pub(crate) async fn api_call(
    sim: &Simulator,
    headers: &HeaderMap,
    endpoint: &'static str,
) -> Result<(), Response> {
    intake(sim, endpoint).await?;
    match refusal(sim, headers, endpoint).or_else(|| malformed(sim, endpoint)) {
        Some(r) => Err(r),
        None => Ok(()),
    }
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
        super::identity::check_assertion(
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

async fn token_v1(
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

async fn token_v2(
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

/// Links are built from the Host the client used, so they work on any bound port.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

#[derive(Serialize)]
struct Page<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.count", skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
    value: Vec<ActionJson<'a>>,
}

fn odata_error(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "ODataError", message)
}

/// `$orderby`: only `creationDateTimeUtc` with an optional direction; true = descending.
fn order_desc(orderby: &str) -> Result<bool, String> {
    let mut words = orderby.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("creationDateTimeUtc"), None | Some("asc"), None) => Ok(false),
        (Some("creationDateTimeUtc"), Some("desc"), None) => Ok(true),
        _ => Err(format!(
            "The query specified in the URI is not valid. Order by '{orderby}' is not allowed."
        )),
    }
}

async fn list_actions(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = api_call(&sim, &headers, LIST).await {
        return r;
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let filter = match param("$filter").map(filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return odata_error(&e),
    };
    let top = match param("$top").map(str::parse::<usize>) {
        None => None,
        Some(Ok(t)) if t <= TOP_MAX => Some(t),
        Some(Ok(_)) => {
            return odata_error(&format!(
                "The limit of '{TOP_MAX}' for Top query has been exceeded. The value from the incoming request is '{}'.",
                param("$top").unwrap_or_default()
            ));
        }
        Some(Err(_)) => {
            return odata_error(&format!(
                "Invalid value '{}' for $top query option found.",
                param("$top").unwrap_or_default()
            ));
        }
    };
    let skip = match param("$skip").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            return odata_error(&format!(
                "Invalid value '{}' for $skip query option found.",
                param("$skip").unwrap_or_default()
            ));
        }
    };
    let desc = match param("$orderby").map(order_desc).transpose() {
        Ok(d) => d.unwrap_or(false),
        Err(e) => return odata_error(&e),
    };
    let count = match param("$count") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return odata_error(&format!(
                "Invalid value '{other}' for $count query option found."
            ));
        }
    };

    let elapsed = sim.elapsed();
    let hidden = sim.inner.lock().faults.hidden.clone();
    // The filter is evaluated on a cheap head of each action; only the page served is
    // rendered, so a 100,000-action history costs little per call.
    let mut matching: Vec<&scenario::SimAction> = sim
        .inner
        .actions
        .iter()
        .filter(|a| hidden.is_empty() || !hidden.contains(&a.id))
        .filter(|a| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(&scenario::Head::new(a, elapsed)))
        })
        .collect();
    if desc {
        matching.reverse();
    }
    let total = matching.len();
    // The client's page ($top) is served in server pages of at most `page_size`.
    let wanted_end = top.map_or(total, |t| skip.saturating_add(t)).min(total);
    let end = skip
        .saturating_add(sim.inner.cfg.page_size.max(1))
        .min(wanted_end);
    let value: Vec<ActionJson<'_>> = matching
        .into_iter()
        .skip(skip)
        .take(end.saturating_sub(skip))
        .map(|a| a.view(elapsed, None))
        .collect();
    let base = base_url(&headers);
    let (looping, items) = {
        let st = sim.inner.lock();
        (st.faults.loop_next_link, st.faults.list_items.clone())
    };
    let next_link = if looping {
        // Hostile: the next page is this page again.
        Some(format!("{base}{uri}"))
    } else {
        (end < wanted_end).then(|| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                if k != "$skip" && k != "$top" {
                    q.append_pair(k, v);
                }
            }
            if let Some(t) = top {
                q.append_pair("$top", &(t - (end - skip)).to_string());
            }
            q.append_pair("$skip", &end.to_string());
            format!("{base}{}?{}", uri.path(), q.finish())
        })
    };
    let served = value.len() as u64;
    let page = Page {
        context: format!("{base}/api/$metadata#MachineActions"),
        count: count.then_some(total),
        next_link,
        value,
    };
    let response = if items.is_empty() {
        json_ok(&page)
    } else {
        with_raw_items(&page, &items)
    };
    let bytes = http_body_len(&response);
    let mut st = sim.inner.lock();
    st.stats.list_items += served;
    *st.stats.response_bytes.entry(LIST.to_string()).or_insert(0) += bytes;
    response
}

/// The exact length of a body built in memory (0 for a streamed one).
fn http_body_len(r: &Response) -> u64 {
    use axum::body::HttpBody as _;
    r.body().size_hint().exact().unwrap_or(0)
}

/// The page as JSON with `items` (raw bytes, not necessarily UTF-8 or valid) spliced in
/// first in `value`.
fn with_raw_items(page: &Page<'_>, items: &[Vec<u8>]) -> Response {
    let Ok(text) = serde_json::to_vec(page) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    const VALUE: &[u8] = b"\"value\":[";
    let Some(at) = text.windows(VALUE.len()).position(|w| w == VALUE) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let at = at + VALUE.len();
    let mut body = text[..at].to_vec();
    for item in items {
        body.extend_from_slice(item);
        body.push(b',');
    }
    if text.get(at) == Some(&b']') {
        body.pop();
    }
    body.extend_from_slice(&text[at..]);
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn action_not_found(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("Machine action {id} was not found"),
    )
}

async fn get_action(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = api_call(&sim, &headers, GET).await {
        return r;
    }
    match sim.find(&id) {
        Some(a) => {
            let ctx = format!(
                "{}/api/$metadata#MachineActions/$entity",
                base_url(&headers)
            );
            json_ok(&a.view(sim.elapsed(), Some(ctx)))
        }
        None => action_not_found(&id),
    }
}

/// `index` from `GetLiveResponseResultDownloadLink(index=N)`; `None` if it is another
/// function, `Some(Err)` if the argument is bad.
fn link_index(op: &str) -> Option<Result<u32, String>> {
    let args = op.strip_prefix(LINK_FN)?;
    Some(
        args.strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.trim().strip_prefix("index"))
            .and_then(|r| r.trim_start().strip_prefix('='))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                format!(
                    "Bad Request - Error in query syntax: '{op}' needs one argument index=<int>."
                )
            }),
    )
}

async fn action_function(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path((id, op)): Path<(String, String)>,
) -> Response {
    let Some(index) = link_index(&op) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "No HTTP resource was found that matches the request URI 'machineactions/{id}/{op}'."
            ),
        );
    };
    if let Err(r) = api_call(&sim, &headers, LINK).await {
        return r;
    }
    let index = match index {
        Ok(i) => i,
        Err(e) => return odata_error(&e),
    };
    let Some(a) = sim.find(&id) else {
        return action_not_found(&id);
    };
    let no_result = || {
        api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("Live response result for action {id} and index {index} was not found"),
        )
    };
    if !a.is_final_at(sim.elapsed()) {
        return no_result();
    }
    let Some(c) = a
        .commands
        .iter()
        .find(|c| c.index == index && c.blob.is_some())
    else {
        return no_result();
    };
    let expired = {
        let mut st = sim.inner.lock();
        *st.stats
            .link_requests
            .entry((id.clone(), index))
            .or_insert(0) += 1;
        st.faults.expire_links
    };
    let now = sim.now_wall();
    let se = if expired {
        now.with_nanosecond(0).unwrap_or(now) - chrono::Duration::seconds(1)
    } else {
        // Whole seconds, rounded up, so a link never lives shorter than `link_ttl`.
        let t = now + chrono::Duration::from_std(sim.inner.cfg.link_ttl).unwrap_or_default();
        t.with_nanosecond(0).unwrap_or(t) + chrono::Duration::seconds(1)
    };
    let se = se.to_rfc3339_opts(SecondsFormat::Secs, true);
    let path = format!(
        "/blob/investigation-actions-data/{id}/CustomPlaybookCommandOutput/{}",
        c.blob_name
    );
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("se", &se)
        .append_pair("sp", "r")
        .append_pair("sv", "2019-07-07")
        .append_pair("sr", "b")
        .append_pair("sig", &sim.sign(&path, &se));
    let base = base_url(&headers);
    let link_base = sim
        .inner
        .lock()
        .faults
        .link_base
        .clone()
        .unwrap_or_else(|| base.clone());
    json_ok(&serde_json::json!({
        "@odata.context": format!("{base}/api/$metadata#Edm.String"),
        "value": format!("{link_base}{path}?{}", q.finish()),
    }))
}

/// The bomb is built once: 1 GiB of zeros in about 1 MiB.
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| scenario::gzip_bomb(1024))
}

/// `n` bytes (at least the JSON frame) of a syntactically valid transcript, streamed.
fn huge_transcript(n: usize) -> Response {
    const UNIT: &[u8] = b"Collected item\\n";
    const CHUNK: usize = 64 * 1024;
    let head = b"{\"script_name\":\"collect-triage.ps1\",\"exit_code\":0,\"script_output\":\"Transcript started, output file is C:\\\\ProgramData\\\\Microsoft\\\\Windows Defender Advanced Threat Protection\\\\Temp\\\\PSScriptOutputs\\\\PSScript_Transcript_0.txt\\n";
    let tail = b"\",\"script_errors\":\"\"}";
    let fill = n.saturating_sub(head.len() + tail.len());
    let units = fill / UNIT.len();
    let chunk = Bytes::from(UNIT.repeat(CHUNK / UNIT.len()));
    let mut parts = vec![Bytes::from_static(head)];
    let per_chunk = CHUNK / UNIT.len();
    parts.extend(std::iter::repeat_n(chunk, units / per_chunk));
    parts.push(Bytes::from(UNIT.repeat(units % per_chunk)));
    // Spaces are fine inside the string; they make the total exactly `n`.
    parts.push(Bytes::from(vec![b' '; fill % UNIT.len()]));
    parts.push(Bytes::from_static(tail));
    let total: usize = parts.iter().map(Bytes::len).sum();
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn octets(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn blob_fault_response(fault: BlobFault, now: DateTime<Utc>) -> Response {
    match fault {
        BlobFault::NotFound => blob_not_found(now),
        BlobFault::Garbage => octets(Bytes::from_static(b"\xde\xad\xbe\xef\x00\xffnot a result")),
        BlobFault::Truncated => {
            // Promise 4 KiB, send a few bytes, then (once they are surely on the wire) break
            // the connection.
            let stream = futures_util::stream::unfold(0u8, |step| async move {
                match step {
                    0 => Some((Ok(Bytes::from_static(b"{\"script_name\":\"x\"")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((
                            Err(std::io::Error::other("connection reset by simulator")),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
            resp
        }
        BlobFault::Huge(n) => huge_transcript(n),
        BlobFault::GzipBomb => octets(Bytes::from_static(gzip_bomb())),
    }
}

async fn blob(
    State(sim): State<Simulator>,
    Path(path): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = intake(&sim, DOWNLOAD).await {
        return r;
    }
    let now = sim.now_wall();
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let full = format!("/blob/{path}");
    let se = q.get("se").map(String::as_str).unwrap_or_default();
    let signed = q.get("sig").is_some_and(|s| *s == sim.sign(&full, se))
        && q.get("sp").is_some_and(|s| s == "r");
    let expiry = DateTime::parse_from_rfc3339(se)
        .ok()
        .map(|d| d.with_timezone(&Utc));
    let refusal = match expiry {
        _ if !signed => Some("Signature did not match. String to sign used was r\n\n".to_string()),
        Some(e) if e > now => None,
        // The storage service's wording when `se` is past and no `st` was signed.
        Some(e) => Some(format!(
            "Signed expiry time [{}] must be after signed start time [{}]",
            http_date(e),
            http_date(now)
        )),
        None => Some("se is mandatory. Cannot be empty".to_string()),
    };
    if let Some(detail) = refusal {
        sim.inner.lock().stats.expired_downloads += 1;
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            AUTH_FAILED,
            Some(detail),
            now,
        );
    }
    // investigation-actions-data/{id}/CustomPlaybookCommandOutput/{index}-{hex}
    let found = match path.split('/').collect::<Vec<_>>()[..] {
        [
            "investigation-actions-data",
            id,
            "CustomPlaybookCommandOutput",
            name,
        ] => sim
            .find(id)
            .filter(|a| a.is_final_at(sim.elapsed()))
            .and_then(|a| {
                a.commands
                    .iter()
                    .find(|c| c.blob_name == name)
                    .and_then(|c| Some((a, c.index, c.blob.as_ref()?)))
            }),
        _ => None,
    };
    let Some((action, index, blob)) = found else {
        return blob_not_found(now);
    };
    let fault = sim.inner.lock().faults.blob.pop_front();
    if let Some(fault) = fault {
        return blob_fault_response(fault, now);
    }
    *sim.inner
        .lock()
        .stats
        .downloads
        .entry((action.id.clone(), index))
        .or_insert(0) += 1;
    let bytes = match blob {
        Blob::Transcript { bytes, .. } => bytes,
        Blob::File { gz } => gz,
    };
    octets(Bytes::copy_from_slice(bytes))
}

impl Simulator {
    pub(super) fn find(&self, id: &str) -> Option<&SimAction> {
        self.inner
            .by_id
            .get(id)
            .and_then(|i| self.inner.actions.get(*i))
    }
}
