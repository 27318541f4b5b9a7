//! The checks every call goes through before it is answered, in the order the real services
//! apply them: count → injected delay → injected failure or 429 → bearer (401/403) → the
//! caller's quota windows → injected malformed body.
//!
//! Owns that order and the bodies of injected failures. Does not own the bodies' shapes
//! (`respond`), the window arithmetic (`throttle`) or what a handler answers once admitted.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::time::Instant;

use super::Simulator;
use super::endpoints::{DOWNLOAD, TOKEN};
use super::respond::{AUTH_FAILED, api_error, blob_error, json_response, quota_error, token_error};
use super::throttle::Throttle;

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
