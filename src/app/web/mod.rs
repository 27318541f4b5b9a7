//! HTTP routes beyond `/metrics`, and the status page, one module each; `server` mounts them.
//!
//! Owns: [`status`] (`GET /`, the status page), [`probe`] (`GET /probe?target=<tenant>`, one tenant's cached series), [`transcripts`]
//! (`GET /transcripts`, the latest transcript of a machine and script), [`signatures`] (`GET
//! /signatures`, the machines whose latest run fails with a signature, #36) and the external URL
//! their links start with (`--web.external-url`), the reading of `Accept` they and `/metrics`
//! share ([`accepted`]), the headers of their HTML pages ([`html_response`]) and their 404 ([`not_found`]). Does not own
//! the router, content negotiation of `/metrics`, TLS or basic auth (`server`, and the
//! `exporter-web` crate around the whole router, so these routes sit behind the same TLS and
//! auth as `/metrics`).

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub mod probe;
pub mod signatures;
pub mod status;
pub mod transcripts;

/// The media ranges of `Accept` with their weights (`q`, 1 when not given), lower-cased and
/// without spaces: the one reading of the header for `/metrics` and `/transcripts`.
pub fn accepted(headers: &HeaderMap) -> impl Iterator<Item = (String, f32)> + '_ {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|part| {
            let q = part
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (part.to_ascii_lowercase().replace(' ', ""), q)
        })
}

/// A page as HTML that may load nothing but its inline style (the transcript and signature
/// pages).
pub fn html_response(page: String) -> Response {
    let mut resp = page.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A 404 whose body says which part of the request names nothing served here.
pub fn not_found(reason: String) -> Response {
    (axum::http::StatusCode::NOT_FOUND, format!("{reason}\n")).into_response()
}

/// Whether the client asked for JSON (`Accept: application/json`).
pub fn wants_json(headers: &HeaderMap) -> bool {
    accepted(headers).any(|(range, _)| range.split(';').next() == Some("application/json"))
}

/// `--web.external-url`, set once at start by `main` (a process serves one address).
static EXTERNAL_URL: OnceLock<Option<String>> = OnceLock::new();

/// Record `--web.external-url` (without its trailing `/`); the first call wins.
pub fn set_external_url(url: Option<String>) {
    let _ = EXTERNAL_URL.set(url);
}

/// A link to `path_and_query` (starting with `/`): under the external URL when one is set,
/// else relative to this server.
pub fn link(path_and_query: &str) -> String {
    match EXTERNAL_URL.get().and_then(Option::as_deref) {
        Some(base) => format!("{base}{path_and_query}"),
        None => path_and_query.to_string(),
    }
}

/// `s` percent-encoded for a query value.
pub fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `s` escaped for HTML text and attribute values. NUL and the other control characters HTML
/// does not allow (all but tab, line feed and carriage return) become U+FFFD: transcripts
/// hold them (PowerShell pads with `\u0000`).
pub fn html(s: &str) -> String {
    escape(s, true)
}

/// [`html`] for a page whose attributes are all double-quoted: the apostrophe stays as it is.
pub fn html_text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, apostrophe: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' if apostrophe => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{html, html_text};

    /// Transcripts hold NUL and other control characters (the API's own sample pads with
    /// `\u0000`): HTML allows none of them but tab and line breaks. See: #32 item 12
    #[test]
    fn control_characters_never_reach_a_page() {
        assert_eq!(
            html("a\0b\u{1}c\u{7f}\u{85}d"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}\u{FFFD}d"
        );
        assert_eq!(html("x\ty\r\nz"), "x\ty\r\nz");
        assert_eq!(html_text("it's\0<"), "it's\u{FFFD}&lt;");
        assert_eq!(
            html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
