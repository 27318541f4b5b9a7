//! The status page (`GET /`): the tenant files and tenants refused, a cluster member's view,
//! and per tenant its last poll, discovery, quota windows, recent transcripts and errors.
//! Plain server-rendered HTML, like blackbox_exporter's debug pages.
//!
//! Owns what the page shows and how it scales: with up to [`DETAIL_UP_TO`] tenants served
//! here every tenant has its section; with more, one row each (failing first) links to the
//! tenant's own section at `/?tenant=<name>`, so that 10,000 tenants make a page of one table
//! instead of tens of megabytes. Does not own the route, its headers (`server`), nor what the
//! tenants' status holds (`shared`).

use std::fmt::Write as _;

use axum::http::StatusCode;

use crate::shared::{Shared, TenantStatus};

/// Tenants served here up to which the page has every tenant's section.
pub const DETAIL_UP_TO: usize = 20;

/// Characters of a tenant's latest error in its row of the summary.
const ERROR_IN_ROW: usize = 160;

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

/// The page: every tenant's section, or one row each beyond [`DETAIL_UP_TO`] tenants, or the
/// section of the tenant `only` names (404 when it is not served here).
pub fn page(shared: &Shared, telemetry_path: &str, only: Option<&str>) -> (StatusCode, String) {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>MDE Live Response Exporter</title><style>{STYLE}</style></head><body>\
         <h1>MDE Live Response Exporter</h1><p>Version {}. <a href=\"{}\">Metrics</a> · <a href=\"/-/healthy\">Health</a> · <a href=\"/-/ready\">Readiness</a></p>",
        env!("CARGO_PKG_VERSION"),
        esc(telemetry_path)
    );
    // In a cluster, the tenants this member owns (the others are on their owner's page).
    let tenants = served(shared);
    let mut code = StatusCode::OK;
    match only {
        Some(t) if tenants.iter().any(|s| s == t) => {
            let _ = write!(
                page,
                "<p><a href=\"{}\">All tenants</a></p>",
                esc(&crate::app::web::link("/"))
            );
            section(&mut page, shared, t);
        }
        Some(t) => {
            code = StatusCode::NOT_FOUND;
            let _ = write!(
                page,
                "<p class=\"fail\">No tenant <code>{}</code> is served here.</p><p><a href=\"{}\">All tenants</a></p>",
                esc(t),
                esc(&crate::app::web::link("/"))
            );
        }
        None => {
            if shared.quotas.is_empty() && tenants.is_empty() {
                page.push_str("<p>No tenant is configured.</p>");
            } else if tenants.is_empty() {
                page.push_str("<p>This member polls no tenant now (see the cluster section).</p>");
            }
            tenant_sources(&mut page, &shared.metrics.exporter.tenant_sources());
            if let Some(o) = &shared.ownership {
                cluster_section(&mut page, &o.view());
            }
            if tenants.len() <= DETAIL_UP_TO {
                for t in &tenants {
                    section(&mut page, shared, t);
                }
            } else {
                summary(&mut page, shared, &tenants);
            }
        }
    }
    page.push_str("</body></html>");
    (code, page)
}

/// The tenants this page is about, by name: those with a quota (every configured tenant), then
/// any other with a status; in a cluster, those this member owns.
fn served(shared: &Shared) -> Vec<String> {
    let status = shared
        .status
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let here = shared.served();
    shared
        .quotas
        .keys()
        .chain(status.keys().filter(|k| !shared.quotas.contains_key(*k)))
        .filter(|t| here(t))
        .cloned()
        .collect()
}

/// One row a tenant, those whose last poll failed first, then those not polled yet, each
/// linking to its section.
fn summary(page: &mut String, shared: &Shared, tenants: &[String]) {
    let status = shared
        .status
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let none = TenantStatus::default();
    let mut rows: Vec<(u8, &String, &TenantStatus)> = tenants
        .iter()
        .map(|t| {
            let st = status.get(t).unwrap_or(&none);
            let rank = match (st.polls, st.last_poll_ok) {
                (0, _) => 1,
                (_, false) => 0,
                (_, true) => 2,
            };
            (rank, t, st)
        })
        .collect();
    rows.sort_by_key(|(rank, _, _)| *rank);
    let count = |r: u8| rows.iter().filter(|(rank, _, _)| *rank == r).count();
    let _ = write!(
        page,
        "<section id=\"tenants\"><h2>Tenants</h2><p>{} tenants: <span class=\"fail\">{}</span> failed at their last poll, {} not polled yet, <span class=\"ok\">{}</span> succeeded. One row each, failing first; a tenant's quota, transcripts and errors are on its own page.</p>\
         <table class=\"tenants\"><tr><th>Tenant</th><th>Polls</th><th>Last poll</th><th>Result</th><th>Results waiting for quota</th><th>Recent errors</th><th>Latest error</th></tr>",
        rows.len(),
        count(0),
        count(1),
        count(2)
    );
    for (rank, t, st) in &rows {
        let link = crate::app::web::link(&format!("/?tenant={}", crate::app::web::query_value(t)));
        let latest = st
            .recent_errors
            .front()
            .map(|e| shortened(&e.message, ERROR_IN_ROW))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&link),
            esc(t),
            st.polls,
            st.last_poll_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "never".into()),
            if *rank == 0 { "fail" } else { "ok" },
            match rank {
                0 => "failed",
                1 => "",
                _ => "succeeded",
            },
            st.pending,
            st.recent_errors.len(),
            esc(&latest)
        );
    }
    page.push_str("</table></section>");
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or_default()),
        None => text.to_string(),
    }
}

/// One tenant's section: the last poll, discovery, permissions, deprecation notices, quota
/// windows, recent transcripts and errors.
fn section(page: &mut String, shared: &Shared, tenant: &str) {
    let st = shared.tenant_status(tenant);
    let quota = shared.quota_status_of(tenant).unwrap_or_default();
    let trace_url = shared.trace_url.as_deref();
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
    discovery_line(page, &st.discovery);
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
    for w in &quota {
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
        page.push_str("<table class=\"errors\"><tr><th>When</th><th>Error</th><th>Trace</th></tr>");
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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

    fn config(n: usize) -> crate::config::Config {
        crate::config::Config {
            tenants: (0..n)
                .map(|i| crate::config::fixtures::tenant(&format!("t{i:02}")))
                .collect(),
            ..crate::config::Config::default()
        }
    }

    fn polled(shared: &Shared, tenant: &str, ok: bool, error: Option<&str>) {
        shared.update_status(tenant, |s| {
            s.polls += 1;
            s.last_poll_ok = ok;
            if let Some(e) = error {
                s.push_error(e.to_string());
            }
        });
    }

    /// See: #34. Up to [`DETAIL_UP_TO`] tenants, every tenant has its section, as before.
    #[tokio::test]
    async fn a_few_tenants_have_their_sections() {
        let (_, shared, _) = crate::app::prepared(&config(DETAIL_UP_TO));
        let (code, page) = page(&shared, "/metrics", None);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(page.matches("<section id=\"tenant-t").count(), DETAIL_UP_TO);
        assert!(page.contains("<h2>Tenant t19</h2>") && !page.contains("<h2>Tenants</h2>"));
    }

    /// See: #34. Past [`DETAIL_UP_TO`] tenants, one row each, failing first with their latest
    /// error (cut, escaped), linking to the tenant's own section at `/?tenant=`; a tenant not
    /// served here is a 404 that says so.
    #[tokio::test]
    async fn many_tenants_are_one_row_each_failing_first() {
        let (_, shared, _) = crate::app::prepared(&config(25));
        for i in 0..25 {
            polled(&shared, &format!("t{i:02}"), true, None);
        }
        let long = format!("token request failed: <{}>", "x".repeat(300));
        polled(&shared, "t17", false, Some(&long));
        let (code, page) = page(&shared, "/metrics", None);
        assert_eq!(code, StatusCode::OK);
        assert!(
            !page.contains("<section id=\"tenant-t"),
            "no tenant's section"
        );
        assert!(page.contains(
            "<p>25 tenants: <span class=\"fail\">1</span> failed at their last poll, 0 not polled yet, <span class=\"ok\">24</span> succeeded."
        ));
        let rows: Vec<&str> = page.split("<tr><td><a href=\"").skip(1).collect();
        assert_eq!(rows.len(), 25);
        assert!(
            rows[0].starts_with("/?tenant=t17\">t17</a></td><td>2</td>"),
            "{}",
            rows[0]
        );
        assert!(rows[0].contains("<td class=\"fail\">failed</td><td>0</td><td>1</td><td><code>token request failed: &lt;xxx"));
        assert!(rows[0].contains("x…</code>"), "cut at 160 characters");
        assert!(rows[1].starts_with("/?tenant=t00\">"), "then by name");

        let (code, one) = page_of(&shared, "t17");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(one.matches("<section id=\"tenant-").count(), 1);
        assert!(one.contains("<h2>Tenant t17</h2>") && one.contains("<h3>API quota</h3>"));
        assert!(one.contains(&esc(&long)), "the whole error on its page");
        let (code, none) = page_of(&shared, "nope<b>");
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(none.contains("No tenant <code>nope&lt;b&gt;</code> is served here."));
    }

    fn page_of(shared: &Shared, tenant: &str) -> (StatusCode, String) {
        page(shared, "/metrics", Some(tenant))
    }
}
