//! `GET /transcripts?tenant=T&machine=M&script=S[&action=ID&index=N]`: the latest transcript
//! of that machine and script, as HTML (default) or JSON (`Accept: application/json`), from
//! the excerpts kept in the state (never an MDE API call; they survive restarts).
//!
//! Owns the page, its JSON and its 404 reasons; the run's failure signature links to its page
//! (`signatures`, #36). Transcript text is attacker-influenced (a
//! script prints what it likes): every value on the page is HTML-escaped, the page forbids
//! scripts and everything but inline style (`Content-Security-Policy`), and no text becomes a
//! link. Does not own what an excerpt holds (`excerpt`: the `transcript_log` policy, bounded)
//! or keeping it (`state`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{html, link, not_found, query_value};
use crate::shared::{Current, shared_now};

/// The `/transcripts` route, with its own state so the server mounts it with one line.
pub fn route<S: Clone + Send + Sync + 'static>(current: Current) -> MethodRouter<S> {
    get(page).with_state(current)
}

/// What the page shows: the JSON fields, and the HTML's rows.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub tenant: String,
    pub machine: String,
    pub script: String,
    pub action_id: String,
    pub index: u32,
    pub exit_code: i64,
    pub errors_present: bool,
    pub completed_at: DateTime<Utc>,
    pub retrieved_at: DateTime<Utc>,
    /// The `transcript_log.output` mode the excerpt was kept under.
    pub redaction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// Why the run failed (#36), with the page of the machines that fail the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<ShownSignature>,
    /// This page, under `--web.external-url` when set.
    pub url: String,
}

/// A run's failure signature as the page shows it.
#[derive(Debug, Serialize)]
pub struct ShownSignature {
    pub id: String,
    /// Empty when the `transcript_log` policy withholds it.
    pub template: String,
    /// The signature's page (`/signatures`).
    pub url: String,
}

async fn page(
    State(current): State<Current>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let param = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(tenant), Some(machine), Some(script)) =
        (param("tenant"), param("machine"), param("script"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "tenant, machine and script are required: /transcripts?tenant=T&machine=M&script=S\n",
        )
            .into_response();
    };
    let index = match param("index").map(str::parse::<u32>) {
        Some(Ok(i)) => Some(i),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "index must be a number\n").into_response();
        }
        None => None,
    };
    let shared = shared_now(&current);
    // Served (configured, and owned in a cluster), as /signatures asks: not "has a status
    // entry", which a tenant gets only at its first poll, so a transcript kept in the state
    // file was "unknown" for the first moments after a start.
    if !shared.serves(tenant) {
        return not_found(format!(
            "unknown tenant {tenant:?}: no tenant of that name is served here"
        ));
    }
    let key = (tenant.to_string(), machine.to_string(), script.to_string());
    let Some(run) = shared.with_state(|s| s.last_run(&key).cloned()) else {
        return not_found(format!(
            "no transcript of {script:?} on {machine:?} (tenant {tenant:?}) is kept: never retrieved, or expired (no run within series_ttl) or evicted (max_series)"
        ));
    };
    let Some(excerpt) = run.excerpt else {
        return not_found(format!(
            "the latest run of {script:?} on {machine:?} (tenant {tenant:?}, action {}) was retrieved before this exporter kept transcripts; the next run will show",
            run.action_id
        ));
    };
    if param("action").is_some_and(|a| a != run.action_id)
        || index.is_some_and(|i| i != excerpt.index)
    {
        return not_found(format!(
            "action {:?} index {} of {script:?} on {machine:?} is not retained: only the latest run per machine and script is kept (action {}, index {})",
            param("action").unwrap_or(&run.action_id),
            index.unwrap_or(excerpt.index),
            run.action_id,
            excerpt.index
        ));
    }
    let url = link(&format!(
        "/transcripts?tenant={}&machine={}&script={}&action={}&index={}",
        query_value(tenant),
        query_value(machine),
        query_value(script),
        query_value(&run.action_id),
        excerpt.index
    ));
    let signature = run.signature.map(|sig| {
        let sig = sig.redacted(&shared.settings.transcript_log);
        ShownSignature {
            url: super::signatures::url(tenant, script, &sig.id),
            id: sig.id,
            template: sig.template,
        }
    });
    let shown = Shown {
        tenant: key.0,
        machine: key.1,
        script: key.2,
        action_id: run.action_id,
        index: excerpt.index,
        exit_code: run.exit_code,
        errors_present: run.errors_present,
        completed_at: run.end_time,
        retrieved_at: excerpt.retrieved_at,
        redaction: excerpt.redaction,
        output: excerpt.output,
        errors: excerpt.errors,
        signature,
        url,
    };
    if super::wants_json(&headers) {
        return axum::Json(shown).into_response();
    }
    super::html_response(render(&shown))
}

/// The HTML page: every value escaped, text in `<pre>`.
pub fn render(s: &Shown) -> String {
    let text = |t: &Option<String>| match t {
        Some(t) => format!("<pre>{}</pre>", html(t)),
        None => format!(
            "<p><em>dropped by the redaction policy ({})</em></p>",
            html(&s.redaction)
        ),
    };
    let time = |t: &DateTime<Utc>| html(&t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let status = if s.exit_code == 0 { "ok" } else { "fail" };
    let signature = match &s.signature {
        None => "none (the run did not fail)".to_string(),
        Some(sig) => format!(
            "<a href=\"{url}\"><code>{id}</code></a> {template}",
            url = html(&sig.url),
            id = html(&sig.id),
            template = html(&sig.template),
        ),
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{script} on {machine}</title>\
<style>body{{font-family:sans-serif;margin:1.5em;max-width:80em}}th,td{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
table{{border-collapse:collapse}}pre{{background:#f6f6f6;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}}.fail{{color:#b00020;font-weight:bold}}</style></head>\n\
<body><h1>{script} on {machine}</h1>\n<table>\n\
<tr><th>tenant</th><td>{tenant}</td></tr>\n<tr><th>machine</th><td>{machine}</td></tr>\n\
<tr><th>script</th><td>{script}</td></tr>\n<tr><th>action</th><td><code>{action}</code> index {index}</td></tr>\n\
<tr><th>exit code</th><td class=\"{status}\">{exit}</td></tr>\n<tr><th>errors present</th><td>{errors_present}</td></tr>\n\
<tr><th>completed</th><td>{completed}</td></tr>\n<tr><th>retrieved</th><td>{retrieved}</td></tr>\n\
<tr><th>redaction</th><td>transcript_log.output: {redaction}</td></tr>\n\
<tr><th>failure signature</th><td>{signature}</td></tr>\n</table>\n\
<h2>script_output</h2>\n{output}\n<h2>script_errors</h2>\n{errors}\n\
<p><a href=\"{url}\">link to this transcript</a></p>\n</body></html>\n",
        tenant = html(&s.tenant),
        machine = html(&s.machine),
        script = html(&s.script),
        action = html(&s.action_id),
        index = s.index,
        exit = s.exit_code,
        errors_present = s.errors_present,
        completed = time(&s.completed_at),
        retrieved = time(&s.retrieved_at),
        redaction = html(&s.redaction),
        output = text(&s.output),
        errors = text(&s.errors),
        url = html(&s.url),
        signature = signature,
    )
}
