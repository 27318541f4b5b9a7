//! The exporter's own HTTP server: `/metrics`, `/-/healthy`, `/-/ready` and a landing page.
//!
//! Owns content negotiation (Prometheus text by default, OpenMetrics with exemplars when the
//! scraper's `Accept` asks for it) and what the landing page shows. Never calls the MDE API.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use crate::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::shared::{Current, ReloadRequest, Shared, request_reload, shared_now};

#[derive(Clone)]
struct AppState {
    current: Current,
    telemetry_path: String,
    reload: Option<mpsc::Sender<ReloadRequest>>,
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
    };
    Router::new()
        .route("/", get(landing))
        .route(telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config).put(reload_config))
        .route("/probe", crate::web::probe::route(state.current.clone()))
        .route(
            "/transcripts",
            crate::web::transcripts::route(state.current.clone()),
        )
        .with_state(state)
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
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let q_zero = params.any(|p| p == "q=0" || p == "q=0.0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let om = wants_openmetrics(&headers);
    match s.shared().metrics.encode_chunks(om) {
        Ok(mut chunks) => {
            let ct = if om {
                OPENMETRICS_CONTENT_TYPE
            } else {
                PROMETHEUS_CONTENT_TYPE
            };
            // A large body comes in chunks, a family each, encoded on two threads; they are
            // sent one after the other rather than copied into one (which would hold the body
            // twice).
            let body = if chunks.len() == 1 {
                axum::body::Body::from(chunks.remove(0))
            } else {
                axum::body::Body::from_stream(futures_util::stream::iter(
                    chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
                ))
            };
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn trace_cell(template: Option<&str>, trace_id: Option<&str>) -> String {
    match (template, trace_id) {
        (Some(t), Some(id)) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            esc(&t.replace("{trace_id}", id)),
            esc(id)
        ),
        (None, Some(id)) => format!("<code>{}</code>", esc(id)),
        _ => "–".to_string(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:80em}table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}.fail{color:#b00020;font-weight:bold}.ok{color:#1b5e20}";

/// The status page: per tenant, the quota, the last poll, recent transcripts and errors.
/// Plain server-rendered HTML, like blackbox_exporter's debug pages.
async fn landing(State(s): State<AppState>) -> Html<String> {
    let shared = s.shared();
    let status = shared.status_snapshot();
    let quotas = shared.quota_status();
    let trace_url = shared.trace_url.as_deref();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>MDE Live Response Exporter</title><style>{STYLE}</style></head><body>\
         <h1>MDE Live Response Exporter</h1><p>Version {}. <a href=\"{}\">Metrics</a> · <a href=\"/-/healthy\">Health</a> · <a href=\"/-/ready\">Readiness</a></p>",
        env!("CARGO_PKG_VERSION"),
        esc(&s.telemetry_path)
    );
    if status.is_empty() && quotas.is_empty() {
        page.push_str("<p>No tenant is configured.</p>");
    }
    for tenant in quotas
        .keys()
        .chain(status.keys().filter(|k| !quotas.contains_key(*k)))
    {
        let st = status.get(tenant).cloned().unwrap_or_default();
        let _ = write!(
            page,
            "<section id=\"tenant-{0}\"><h2>Tenant {0}</h2><p>Polls: {1} · last poll: {2} <span class=\"{3}\">{4}</span> · results waiting for quota: {5}</p>",
            esc(tenant),
            st.polls,
            st.last_poll_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "never".into()),
            if st.last_poll_ok { "ok" } else { "fail" },
            if st.polls == 0 {
                ""
            } else if st.last_poll_ok {
                "succeeded"
            } else {
                "failed"
            },
            st.pending
        );
        if let Some(e) = &st.last_error {
            let _ = write!(page, "<p>Last error: <code>{}</code></p>", esc(e));
        }
        if !st.missing_permissions.is_empty() {
            let _ = write!(
                page,
                "<p class=\"fail\">Missing application permission: <code>{}</code> (grant Machine.Read.All or Machine.ReadWrite.All of WindowsDefenderATP, with admin consent)</p>",
                esc(&st.missing_permissions.join(", "))
            );
        }
        page.push_str("<h3>API quota</h3><table class=\"quota\"><tr><th>Endpoint</th><th>Window</th><th>Limit</th><th>In force</th><th>Used</th><th>Left</th></tr>");
        for w in quotas.get(tenant).map(Vec::as_slice).unwrap_or_default() {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.endpoint, w.window, w.limit, w.effective, w.used, w.remaining
            );
        }
        page.push_str("</table><h3>Recent transcripts</h3><table class=\"transcripts\"><tr><th>Script</th><th>Machine</th><th>Exit code</th><th>Errors</th><th>Ended</th><th>Action</th><th>Trace</th></tr>");
        for r in &st.recent {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
                esc(&r.script),
                esc(&r.machine),
                if r.exit_code == 0 { "ok" } else { "fail" },
                r.exit_code,
                if r.errors_present { "yes" } else { "no" },
                r.end_time
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                esc(&r.action_id),
                r.index,
                trace_cell(trace_url, r.trace_id.as_deref())
            );
        }
        page.push_str("</table><h3>Recent errors</h3>");
        if st.recent_errors.is_empty() {
            page.push_str("<p>None.</p>");
        } else {
            page.push_str(
                "<table class=\"errors\"><tr><th>When</th><th>Error</th><th>Trace</th></tr>",
            );
            for e in &st.recent_errors {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    esc(&e.message),
                    trace_cell(trace_url, e.trace_id.as_deref())
                );
            }
            page.push_str("</table>");
        }
        page.push_str("</section>");
    }
    page.push_str("</body></html>");
    Html(page)
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
    }
}
