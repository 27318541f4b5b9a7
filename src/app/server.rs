//! The exporter's own HTTP server: `/metrics`, `/-/healthy`, `/-/ready` and a landing page.
//!
//! Owns content negotiation (Prometheus text by default, OpenMetrics with exemplars when the
//! scraper's `Accept` asks for it, Prometheus protobuf with native histograms when it prefers
//! that), the routes and the headers every answer carries. Never calls the MDE API. Does not
//! own what the landing page shows (`web::status`), sharing rendered bodies and the cap on
//! what unfinished responses hold (`render`), nor the send timeout or connection limits
//! (`exporter_web`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use crate::app::render::{MAX_HELD_RESPONSE_BYTES, Renders};
use crate::app::web::accepted;
use crate::metrics::Format;
use crate::shared::{Current, ReloadRequest, Shared, request_reload, shared_now};

#[derive(Clone)]
struct AppState {
    current: Current,
    telemetry_path: String,
    reload: Option<mpsc::Sender<ReloadRequest>>,
    renders: Arc<Renders>,
}

impl AppState {
    fn shared(&self) -> Arc<Shared> {
        shared_now(&self.current)
    }
}

/// The router; tests can drive it without a socket. `reload` enables `POST /-/reload`
/// (`--web.enable-lifecycle`); without it the route answers 403, as Prometheus does.
pub fn app(
    current: Current,
    telemetry_path: &str,
    reload: Option<mpsc::Sender<ReloadRequest>>,
) -> Router {
    let state = AppState {
        current,
        telemetry_path: telemetry_path.to_string(),
        reload,
        renders: Arc::new(Renders::new(MAX_HELD_RESPONSE_BYTES)),
    };
    Router::new()
        .route("/", get(landing))
        .route(telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config).put(reload_config))
        .route(
            "/probe",
            crate::app::web::probe::route(state.current.clone(), state.renders.clone()),
        )
        .route(
            "/transcripts",
            crate::app::web::transcripts::route(state.current.clone()),
        )
        .route(
            "/signatures",
            crate::app::web::signatures::route(state.current.clone()),
        )
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

/// Every answer (pages, text answers, the 404 of an unknown path) says what it is and what it
/// may load: `X-Content-Type-Options: nosniff`, and a Content-Security-Policy that allows
/// nothing but the pages' inline style, unless a handler set its own.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'",
        ));
    resp
}

/// `POST /-/reload`, like blackbox_exporter: 200 when the new configuration is in force,
/// 500 with the reason when it is not (the old one stays). Requests that arrive while a
/// reload runs share the next one (the supervisor coalesces them): a flood of reloads costs a
/// reload or two, not one token request and one list call each.
async fn reload_config(State(s): State<AppState>) -> Response {
    let Some(tx) = &s.reload else {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled: start with --web.enable-lifecycle (SIGHUP reloads without it)\n",
        )
            .into_response();
    };
    match request_reload(tx).await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

/// Whether the scraper prefers OpenMetrics (Prometheus sends it first in `Accept` when
/// exemplar storage or native histograms are on).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    accepted(headers).any(|(range, q)| {
        let media = range.split(';').next().unwrap_or_default();
        media == "application/openmetrics-text" && q != 0.0
    })
}

/// Whether the scraper prefers the Prometheus protobuf format (length-delimited
/// `io.prometheus.client.MetricFamily`, what Prometheus asks for with `PrometheusProto`
/// first in `scrape_protocols`): offered with a weight at least that of every text format.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    let (mut proto, mut text) = (0.0f32, 0.0f32);
    for (range, q) in accepted(headers) {
        if range.starts_with("application/vnd.google.protobuf;")
            && range.contains("proto=io.prometheus.client.metricfamily")
            && range.contains("encoding=delimited")
        {
            proto = proto.max(q);
        } else if range.starts_with("application/openmetrics-text")
            || range.starts_with("text/plain")
        {
            text = text.max(q);
        }
    }
    proto > 0.0 && proto >= text
}

/// The format for a scrape: protobuf when preferred, else OpenMetrics when asked for at all,
/// else Prometheus text.
fn negotiate(headers: &HeaderMap) -> Format {
    if wants_protobuf(headers) {
        Format::Protobuf
    } else if wants_openmetrics(headers) {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = negotiate(&headers);
    let shared = s.shared();
    match s.renders.body(&shared.metrics, format).await {
        Ok(held) => {
            let ct = format.content_type();
            // A large body comes in chunks, a family each, encoded on two threads; they are
            // sent one after the other rather than copied into one (which would hold the body
            // twice), and shared (`Bytes` clones) with every scrape sending the same render.
            let body = held.into_body();
            ([(header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.shared().ready() {
        (StatusCode::OK, "Ready\n").into_response()
    } else {
        let mut reason =
            "Not ready: waiting for a token and a first poll of every tenant\n".to_string();
        for line in s.shared().not_ready_reasons() {
            reason.push_str(&line);
            reason.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
    }
}

/// The status page: every tenant, or the one `?tenant=` names (`web::status`).
async fn landing(
    State(s): State<AppState>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let shared = s.shared();
    let (code, page) = crate::app::web::status::page(
        &shared,
        &s.telemetry_path,
        params.get("tenant").map(String::as_str),
    );
    (code, Html(page)).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!wants_openmetrics(&accept("text/plain;version=0.0.4")));
        assert!(wants_openmetrics(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text;q=0"
        )));
        // Media types are case-insensitive; any spelling of a zero weight refuses.
        assert!(wants_openmetrics(&accept(
            "Application/OpenMetrics-Text; version=1.0.0"
        )));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text; q=0.000"
        )));
    }

    // See: #23. What Prometheus 3 sends with PrometheusProto first in scrape_protocols gets
    // protobuf; its default list (OpenMetrics first) and Prometheus 2's keep their formats.
    #[test]
    fn protobuf_when_preferred() {
        let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
        assert_eq!(
            negotiate(&accept(&format!(
                "{proto};q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            ))),
            Format::Protobuf
        );
        assert_eq!(negotiate(&accept(proto)), Format::Protobuf);
        assert_eq!(
            negotiate(&accept(&format!(
                "application/openmetrics-text;version=1.0.0;q=0.5,{proto};q=0.4,text/plain;version=0.0.4;q=0.3"
            ))),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&accept(&format!("text/plain;version=0.0.4,{proto};q=0.5"))),
            Format::Text
        );
        // Another protobuf (the text form, or not delimited) is not ours.
        assert_eq!(
            negotiate(&accept(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
            )),
            Format::Text
        );
        assert_eq!(negotiate(&accept(&format!("{proto};q=0"))), Format::Text);
        assert_eq!(negotiate(&HeaderMap::new()), Format::Text);
    }
}
