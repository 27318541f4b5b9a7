//! The client span of one HTTP exchange (OpenTelemetry semantic conventions for HTTP
//! clients) and what its answer or failure records on it: API calls, result downloads and
//! token requests all make and fill their spans here, so that they record alike.
//!
//! Owns the span's attributes (`url.template`, `url.full` without a signature, `error.type`
//! from a status or a transport error). Does not own sending the request (`send`,
//! `download`, `auth`) nor the metrics of the exchange (`send::observe`, `auth`).

use reqwest::StatusCode;
use tracing::field::Empty;
use url::Url;

use super::http::error_chain;

/// Record on an [`http_span`] what an exchange's head gave: the status code, and
/// `error.type` with the span's error status when it failed (a 4xx or 5xx, or no answer).
/// Returns the `code` label of the request metrics (the status, or `error`) and the exchange,
/// its error stripped of the URL (whose query may hold a signature). Shared by the API calls,
/// result downloads and token requests, so that they record alike.
pub(super) fn record_exchange(
    span: &tracing::Span,
    sent: reqwest::Result<reqwest::Response>,
    ep: &str,
    shown: &str,
) -> (String, reqwest::Result<reqwest::Response>) {
    match sent {
        Ok(r) => {
            let status = r.status();
            span.record("http.response.status_code", status.as_u16());
            if let Some(error_type) = status_error_type(status) {
                span.record("error.type", error_type.as_str());
                crate::telemetry::record_error(span, &format!("HTTP {}", status.as_u16()));
            }
            (status.as_u16().to_string(), Ok(r))
        }
        Err(e) => {
            span.record("error.type", transport_error_type(&e));
            let e = e.without_url();
            crate::telemetry::record_error(
                span,
                &format!("{ep}: request to {shown} failed: {}", error_chain(&e)),
            );
            ("error".to_string(), Err(e))
        }
    }
}

/// The `error.type` of an answer (OpenTelemetry HTTP client conventions): its status code,
/// for 4xx and 5xx; `None` for an answer that is no error.
pub(super) fn status_error_type(status: StatusCode) -> Option<String> {
    (status.is_client_error() || status.is_server_error()).then(|| status.as_u16().to_string())
}

/// The `error.type` of a request that got no answer: `timeout`, `connect` (no connection,
/// including name resolution and TLS) or `io` (the connection broke), low-cardinality
/// classes as the conventions ask.
pub(super) fn transport_error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    }
}

/// A client span with the OpenTelemetry HTTP semantic conventions. `url.full` never holds
/// a signature or token; `url.template` (`template`) holds no id either. `error.type` is
/// filled in when the exchange fails ([`status_error_type`], [`transport_error_type`]).
pub(super) fn http_span(
    method: &'static str,
    ep: &'static str,
    url: &Url,
    shown: &str,
    template: &str,
    action: Option<(&str, Option<u32>)>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {ep}"),
        otel.kind = "client",
        http.request.method = method,
        url.full = %shown,
        url.template = template,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        http.response.status_code = Empty,
        error.type = Empty,
        mde.endpoint = ep,
        mde.action_id = Empty,
        mde.command_index = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some((id, index)) = action {
        span.record("mde.action_id", id);
        if let Some(i) = index {
            span.record("mde.command_index", i);
        }
    }
    crate::telemetry::record_ids(&span);
    span
}
