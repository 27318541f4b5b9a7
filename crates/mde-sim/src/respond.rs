//! The response shapes the real services answer with: the MDE error body
//! (`{"error":{...}}`), the quota gateway's 429, AAD's token error, Azure Storage's XML error,
//! plain JSON, and the base URL links are built from.
//!
//! Owns the bodies and headers of those answers. Does not own when they are sent (`gate` for the
//! checks every call goes through, the handlers for the rest).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::scenario;
use super::throttle::timespan;

/// The storage service's message for a refused signature or expiry.
pub(crate) const AUTH_FAILED: &str = "Server failed to authenticate the request. Make sure the value of \
                           Authorization header is formed correctly including the signature.";

pub(crate) fn correlation_id() -> String {
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
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "target": correlation_id()}
    });
    json_response(status, body.to_string())
}

/// The 429 of the quota gateway: code `"429"`, the window in .NET `TimeSpan` form.
pub(crate) fn quota_error(limit: u32, window: Duration, retry_after: Option<u64>) -> Response {
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

pub(crate) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// An Azure Storage error: XML body and `x-ms-error-code`.
pub(crate) fn blob_error(
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

pub(crate) fn blob_not_found(now: DateTime<Utc>) -> Response {
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

/// Links are built from the Host the client used, so they work on any bound port.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A 200 with bytes of a blob.
pub(crate) fn octets(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}
