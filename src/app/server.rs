//! The exporter's own HTTP server: `/metrics`, `/-/healthy`, `/-/ready` and a landing page.
//!
//! Owns content negotiation (Prometheus text by default, OpenMetrics with exemplars when the
//! scraper's `Accept` asks for it, Prometheus protobuf with native histograms when it prefers
//! that), the routes and the headers every answer carries, and what the landing page shows.
//! Never calls the MDE API. Does not own sharing rendered bodies and the cap on what
//! unfinished responses hold (`render`), nor the send timeout or connection limits
//! (`exporter_web`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
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

/// The one HTML escape (control characters shown as U+FFFD); this page's attributes are all
/// double-quoted, so its apostrophes stay as they are.
fn esc(s: &str) -> String {
    crate::app::web::html_text(s)
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

/// The discovery line of a tenant (#20): the last poll's outcome, re-reads waiting, the
/// in-flight listing's fallback, and the next poll's interval with its reason.
fn discovery_line(page: &mut String, d: &crate::shared::DiscoveryStatus) {
    if d.outcome.is_empty() && d.interval.is_none() {
        return;
    }
    let _ = write!(
        page,
        "<p class=\"discovery\">Discovery: <span class=\"{}\">{}</span> · re-reads waiting: {}",
        if d.rereads_pending == 0 { "ok" } else { "fail" },
        esc(if d.outcome.is_empty() {
            "not run yet"
        } else {
            &d.outcome
        }),
        d.rereads_pending
    );
    if d.in_flight_filter == Some(false) {
        page.push_str(" · <span class=\"fail\">in-flight status filter refused by the API (400): actions in flight are read by id</span>");
    }
    if let Some(i) = d.interval {
        let _ = write!(
            page,
            " · next poll in {:.1} s ({})",
            i.as_secs_f64(),
            esc(&d.interval_reason)
        );
    }
    page.push_str("</p>");
}

/// The tenant files (each with its tenants, or why its latest read was not used) and the
/// tenants refused alone, when there are any (#34).
fn tenant_sources(page: &mut String, st: &crate::metrics::exporter::TenantSourcesStatus) {
    if !st.files.is_empty() {
        page.push_str("<section id=\"tenant-files\"><h2>Tenant files</h2><table class=\"tenant-files\"><tr><th>File</th><th>Tenants</th><th>Latest read</th></tr>");
        for f in &st.files {
            let (class, read) = match &f.error {
                None => ("ok", "used".to_string()),
                Some(e) => ("fail", format!("not used, last good tenants kept: {e}")),
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&f.file),
                f.tenants,
                esc(&read)
            );
        }
        page.push_str("</table></section>");
    }
    if !st.refused.is_empty() {
        page.push_str("<section id=\"tenants-refused\"><h2>Tenants refused</h2><p>Their sign-in cannot be resolved; the other tenants are served.</p><table><tr><th>Tenant</th><th>Why</th></tr>");
        for (tenant, why) in &st.refused {
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"fail\"><code>{}</code></td></tr>",
                esc(tenant),
                esc(why)
            );
        }
        page.push_str("</table></section>");
    }
}

/// A cluster member's view (#31): the database, the live members and who owns each tenant.
fn cluster_section(page: &mut String, v: &crate::cluster::ClusterView) {
    let (class, db) = if v.store_up {
        ("ok", "reachable".to_string())
    } else {
        (
            "fail",
            format!(
                "unreachable: polling stops when the leases run out ({})",
                v.last_error.as_deref().unwrap_or("no round yet")
            ),
        )
    };
    let _ = write!(
        page,
        "<section id=\"cluster\"><h2>Cluster</h2><p>This member: <b>{}</b> · database: <span class=\"{class}\">{}</span> · live members: {}</p>",
        esc(&v.member),
        esc(&db),
        esc(&v.live.join(", "))
    );
    page.push_str("<table class=\"ownership\"><tr><th>Tenant</th><th>Owner</th><th>Epoch</th><th>Lease</th></tr>");
    for l in &v.leases {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&l.tenant),
            esc(&l.owner),
            l.epoch,
            if l.valid { "ok" } else { "fail" },
            if l.valid {
                "held"
            } else {
                "expired or released"
            }
        );
    }
    page.push_str("</table></section>");
}

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
    tenant_sources(&mut page, &shared.metrics.exporter.tenant_sources());
    if let Some(o) = &shared.ownership {
        cluster_section(&mut page, &o.view());
    }
    // In a cluster, the tenants this member owns (the others are on their owner's page).
    let shown = |t: &String| shared.ownership.as_ref().is_none_or(|o| o.owns(t));
    for tenant in quotas
        .keys()
        .chain(status.keys().filter(|k| !quotas.contains_key(*k)))
        .filter(|t| shown(t))
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
        discovery_line(&mut page, &st.discovery);
        if !st.missing_permissions.is_empty() {
            let _ = write!(
                page,
                "<p class=\"fail\">Missing application permission: <code>{}</code> (grant Machine.Read.All or Machine.ReadWrite.All of WindowsDefenderATP, with admin consent)</p>",
                esc(&st.missing_permissions.join(", "))
            );
        }
        let notices = shared.metrics.api.deprecation_notices(tenant);
        if !notices.is_empty() {
            page.push_str("<h3>Endpoint deprecation notices</h3><p class=\"fail\">The MDE API announces the end of an endpoint the exporter uses (see the runbook, MdeApiEndpointDeprecated).</p><table class=\"notices\"><tr><th>Endpoint</th><th>Reason</th><th>Answers</th><th>Latest</th></tr>");
            for (endpoint, reason, count, detail) in &notices {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(endpoint),
                    esc(reason),
                    count,
                    esc(detail)
                );
            }
            page.push_str("</table>");
        }
        page.push_str("<h3>API quota</h3><table class=\"quota\"><tr><th>Endpoint</th><th>Window</th><th>Limit</th><th>In force</th><th>Used</th><th>Left</th></tr>");
        for w in quotas.get(tenant).map(Vec::as_slice).unwrap_or_default() {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.endpoint, w.window, w.limit, w.effective, w.used, w.remaining
            );
        }
        page.push_str("</table><h3>Recent transcripts</h3><table class=\"transcripts\"><tr><th>Script</th><th>Machine</th><th>Exit code</th><th>Errors</th><th>Ended</th><th>Action</th><th>Trace</th><th>Transcript</th></tr>");
        for r in &st.recent {
            // The latest transcript of the machine and script, from the state file (#22).
            let transcript = crate::app::web::link(&format!(
                "/transcripts?tenant={}&machine={}&script={}",
                crate::app::web::query_value(tenant),
                crate::app::web::query_value(&r.machine),
                crate::app::web::query_value(&r.script)
            ));
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td><a href=\"{}\">latest</a></td></tr>",
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
                trace_cell(trace_url, r.trace_id.as_deref()),
                esc(&transcript)
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

    // See: #20 items 1, 2 and 5
    #[test]
    fn the_discovery_line_shows_outcome_waits_fallback_and_cadence() {
        let mut page = String::new();
        discovery_line(&mut page, &crate::shared::DiscoveryStatus::default());
        assert_eq!(page, "", "nothing before the first poll");
        let d = crate::shared::DiscoveryStatus {
            outcome: "cut short by quota (quota): 12 followed actions wait to be read again at the next poll".into(),
            rereads_pending: 12,
            in_flight_filter: Some(false),
            interval: Some(std::time::Duration::from_millis(9600)),
            interval_reason: "the last poll's list calls spread over list_budget_share of the hour budget; last poll: 2 list calls".into(),
        };
        discovery_line(&mut page, &d);
        assert_eq!(
            page,
            "<p class=\"discovery\">Discovery: <span class=\"fail\">cut short by quota (quota): 12 followed actions wait to be read again at the next poll</span> · re-reads waiting: 12 · <span class=\"fail\">in-flight status filter refused by the API (400): actions in flight are read by id</span> · next poll in 9.6 s (the last poll's list calls spread over list_budget_share of the hour budget; last poll: 2 list calls)</p>"
        );
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
