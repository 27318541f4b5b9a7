//! `GET /signatures?tenant=T&script=S&signature=ID`: the machines whose latest run of a script
//! fails with one failure signature (#36), as HTML (default) or JSON (`Accept:
//! application/json`), each linked to its transcript page; `signature=other` lists those
//! whose signature is beyond the top `failure_signatures_top_k` of the script. Read from the
//! runs kept in the state (never an MDE API call; they survive restarts).
//!
//! Owns the page, its JSON, its bound ([`MAX_LISTED`] machines, the rest counted) and its 404
//! reasons. The template is shown as the `transcript_log` policy in force lets it out (its
//! `scrub` patterns applied; none under `hash` or `drop`), every value HTML-escaped, the page
//! forbids scripts, and no text becomes a link. Does not own the signature (`record::
//! signature`), the counts (`metrics::signatures`) nor keeping the runs (`state`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{html, link, not_found, query_value};
use crate::metrics::signatures::OTHER;
use crate::shared::{Current, shared_now};

/// The most machines one page lists; the rest are counted.
pub const MAX_LISTED: usize = 500;

/// The `/signatures` route, with its own state so the server mounts it with one line.
pub fn route<S: Clone + Send + Sync + 'static>(current: Current) -> MethodRouter<S> {
    get(page).with_state(current)
}

/// The page of a signature of `tenant`'s `script` (under `--web.external-url` when set).
pub fn url(tenant: &str, script: &str, signature: &str) -> String {
    link(&format!(
        "/signatures?tenant={}&script={}&signature={}",
        query_value(tenant),
        query_value(script),
        query_value(signature)
    ))
}

/// One machine with the signature.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub machine: String,
    pub exit_code: i64,
    pub completed_at: DateTime<Utc>,
    pub transcript_url: String,
}

/// What the page shows: the JSON fields, and the HTML's rows.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub tenant: String,
    pub script: String,
    pub signature: String,
    /// Empty when the policy withholds it, and for `other` (many templates).
    pub template: String,
    /// Machines with it, listed or not.
    pub machines: usize,
    /// The first [`MAX_LISTED`] by name.
    pub listed: Vec<Machine>,
    /// This page, under `--web.external-url` when set.
    pub url: String,
}

async fn page(
    State(current): State<Current>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let param = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(tenant), Some(script), Some(signature)) =
        (param("tenant"), param("script"), param("signature"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "tenant, script and signature are required: /signatures?tenant=T&script=S&signature=ID\n",
        )
            .into_response();
    };
    let shared = shared_now(&current);
    if !shared.serves(tenant) {
        return not_found(format!(
            "unknown tenant {tenant:?}: no tenant of that name is served here"
        ));
    }
    // `other`: every signature but the top K shown by their own series.
    let top: Vec<String> = if signature == OTHER {
        shared
            .metrics
            .results
            .signatures()
            .top(tenant, script)
            .top
            .into_iter()
            .map(|r| r.signature)
            .collect()
    } else {
        Vec::new()
    };
    let policy = &shared.settings.transcript_log;
    let (machines, template, mut listed) = shared.with_state(|s| {
        let mut machines = 0;
        let mut template = None;
        let mut listed = Vec::new();
        for ((t, m, sc), run) in s.last_runs() {
            let Some(sig) = &run.signature else { continue };
            let hit = if signature == OTHER {
                !top.contains(&sig.id)
            } else {
                sig.id == signature
            };
            if t != tenant || sc != script || !hit {
                continue;
            }
            machines += 1;
            if template.is_none() && signature != OTHER {
                template = Some(sig.redacted(policy).template);
            }
            listed.push((m.to_string(), run.exit_code, run.end_time));
        }
        (machines, template.unwrap_or_default(), listed)
    });
    if machines == 0 {
        return not_found(format!(
            "no machine's latest run of {script:?} (tenant {tenant:?}) fails with signature {signature:?} now: it may have succeeded since, or its series expired"
        ));
    }
    listed.sort();
    listed.truncate(MAX_LISTED);
    let listed = listed
        .into_iter()
        .map(|(machine, exit_code, completed_at)| Machine {
            transcript_url: link(&format!(
                "/transcripts?tenant={}&machine={}&script={}",
                query_value(tenant),
                query_value(&machine),
                query_value(script)
            )),
            machine,
            exit_code,
            completed_at,
        })
        .collect();
    let shown = Shown {
        tenant: tenant.to_string(),
        script: script.to_string(),
        signature: signature.to_string(),
        template,
        machines,
        listed,
        url: url(tenant, script, signature),
    };
    if super::wants_json(&headers) {
        return axum::Json(shown).into_response();
    }
    super::html_response(render(&shown))
}

/// The HTML page: every value escaped.
pub fn render(s: &Shown) -> String {
    let mut rows = String::new();
    for m in &s.listed {
        let status = if m.exit_code == 0 { "ok" } else { "fail" };
        rows.push_str(&format!(
            "<tr><td>{machine}</td><td class=\"{status}\">{exit}</td><td>{completed}</td><td><a href=\"{url}\">transcript</a></td></tr>\n",
            machine = html(&m.machine),
            exit = m.exit_code,
            completed = html(&m.completed_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            url = html(&m.transcript_url),
        ));
    }
    let more = s.machines.saturating_sub(s.listed.len());
    let more = if more > 0 {
        format!("<p>and {more} more machines, not listed</p>\n")
    } else {
        String::new()
    };
    let template = if s.signature == OTHER {
        "<p><em>the signatures beyond the top failure_signatures_top_k of this script</em></p>"
            .to_string()
    } else if s.template.is_empty() {
        "<p><em>withheld by the redaction policy (transcript_log.output)</em></p>".to_string()
    } else {
        format!("<pre>{}</pre>", html(&s.template))
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{script}: signature {signature}</title>\
<style>body{{font-family:sans-serif;margin:1.5em;max-width:80em}}th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
table{{border-collapse:collapse}}pre{{background:#f6f6f6;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}}.fail{{color:#b00020;font-weight:bold}}</style></head>\n\
<body><h1>{script}: why it fails on {machines} machine(s)</h1>\n\
<p>tenant {tenant}, signature <code>{signature}</code></p>\n{template}\n\
<table>\n<tr><th>machine</th><th>exit code</th><th>completed</th><th>latest run</th></tr>\n{rows}</table>\n{more}\
<p><a href=\"{url}\">link to this page</a></p>\n</body></html>\n",
        tenant = html(&s.tenant),
        script = html(&s.script),
        signature = html(&s.signature),
        machines = s.machines,
        url = html(&s.url),
    )
}
